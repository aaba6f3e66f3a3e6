# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of mpanel.cloudpods.pod_backup_schedule: the same decisions as the module (its plan()),
with the state read and the changes made by shell commands over the connection, so no module run
(a module run costs about 0.3 s): one command to look, one to change (only when something changes)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import shlex

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.mpanel.cloudpods.plugins.modules.pod_backup_schedule import ARGUMENT_SPEC, plan

PROBE = ('if [ -d {d} ]; then stat -c %a {d}; else echo -; fi; '
         'if [ -f {f} ]; then stat -c %a {f}; cat {f}; else echo -; fi')


def parse_probe(stdout):
    """'750\\n644\\n<content>' -> (dir mode or None, cron mode or None, content or None)."""
    dir_line, rest = stdout.split('\n', 1)
    cron_line, content = rest.split('\n', 1) if '\n' in rest else (rest, '')
    dir_mode = None if dir_line.strip() == '-' else int(dir_line.strip(), 8)
    if cron_line.strip() == '-':
        return dir_mode, None, None
    return dir_mode, int(cron_line.strip(), 8), content


def script(actions):
    """The shell commands doing ``actions`` (see the module's plan())."""
    quote = shlex.quote
    lines = ['set -e']
    for action in actions:
        if action[0] == 'mkdir':
            lines.append('mkdir -p %s; chmod %o %s' % (quote(action[1]), action[2], quote(action[1])))
        elif action[0] == 'chmod':
            lines.append('chmod %o %s' % (action[2], quote(action[1])))
        elif action[0] == 'remove':
            lines.append('rm -f %s' % quote(action[1]))
        elif action[0] == 'write':
            path, content, mode = action[1:]
            tmp = quote('%s.tmp%d' % (path, abs(hash(content)) % 100000))
            lines.append("printf '%%s' %s > %s; chmod %o %s; mv -f %s %s"
                         % (quote(content), tmp, mode, tmp, tmp, quote(path)))
    return '\n'.join(lines)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        # paths on the target: no expansion on the controller
        spec = dict(ARGUMENT_SPEC, cron_file=dict(type='str', required=True), backup_dir=dict(type='str'))
        dummy, params = self.validate_argument_spec(
            argument_spec=spec, required_if=[('state', 'present', ('content', 'backup_dir'))])
        for key in ('cron_mode', 'backup_dir_mode'):
            try:
                int(params[key], 8)
            except ValueError:
                return dict(failed=True, msg='%s must be an octal mode such as 0644, got %r' % (key, params[key]))
        probe = self._low_level_execute_command(PROBE.format(
            d=shlex.quote(params['backup_dir'] or '/nonexistent/'), f=shlex.quote(params['cron_file'])))
        if probe['rc'] != 0:
            return dict(failed=True, msg='could not look at %s: %s' % (
                params['cron_file'], to_text(probe.get('stderr', '')).strip()))
        try:
            dir_mode, cron_mode, content = parse_probe(to_text(probe['stdout']))
        except ValueError:
            return dict(failed=True, msg='unexpected answer looking at %s: %r' % (params['cron_file'], probe['stdout']))
        modes = {params['backup_dir']: dir_mode, params['cron_file']: cron_mode}
        changes, diff, actions = plan(
            params, read=lambda path: content, isdir=lambda path: dir_mode is not None, mode_of=modes.get)
        if actions and not self._task.check_mode:
            done = self._low_level_execute_command(script(actions))
            if done['rc'] != 0:
                return dict(failed=True, msg='could not change %s: %s' % (
                    params['cron_file'], to_text(done.get('stderr', '')).strip()))
        result = dict(changed=bool(changes), changes=changes, cron_file=params['cron_file'],
                      backup_dir=params['backup_dir'] or '')
        if self._task.diff:
            result['diff'] = diff
        return result
