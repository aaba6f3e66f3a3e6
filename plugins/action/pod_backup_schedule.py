# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of mpanel.cloudpods.pod_backup_schedule (the module file is its documentation only).

The state is read and the changes made by shell commands over the connection, so no module run
(a module run costs about 0.3 s): one command to look, one to change (only when something changes).
The decisions are in plugin_utils/backup_schedule.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_schedule


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        dummy, params = self.validate_argument_spec(
            argument_spec=backup_schedule.ARGUMENT_SPEC, required_if=backup_schedule.REQUIRED_IF,
            required_together=backup_schedule.REQUIRED_TOGETHER)
        error = backup_schedule.mode_error(params)
        if error:
            return dict(failed=True, msg=error)
        probe = self._low_level_execute_command(backup_schedule.probe_command(params))
        if probe['rc'] != 0:
            return dict(failed=True, msg='could not look at %s: %s' % (
                params['cron_file'], to_text(probe.get('stderr', '')).strip()))
        try:
            stale, dir_mode, script, cron_mode, content = backup_schedule.parse_probe(to_text(probe['stdout']))
        except (ValueError, IndexError):
            return dict(failed=True, msg='unexpected answer looking at %s: %r' % (params['cron_file'], probe['stdout']))
        changes, diff, actions = backup_schedule.changes(params, dir_mode, cron_mode, content, stale, script)
        if actions and not self._task.check_mode:
            done = self._low_level_execute_command(backup_schedule.script(actions))
            if done['rc'] != 0:
                return dict(failed=True, msg='could not change %s: %s' % (
                    params['cron_file'], to_text(done.get('stderr', '')).strip()))
        result = dict(changed=bool(changes), changes=changes, cron_file=params['cron_file'],
                      backup_dir=params['backup_dir'] or '')
        if self._task.diff:
            result['diff'] = diff
        return result
