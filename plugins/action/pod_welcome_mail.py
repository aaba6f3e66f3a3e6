# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of mpanel.cloudpods.pod_welcome_mail (the module file is its documentation only).

The marker on the target through two shell commands, the mail from the controller. No module run
(a module run costs about 0.3 s). The SMTP password is used for the login only: no result carries
it. The helpers are in plugin_utils/welcome_mail.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import welcome_mail


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        dummy, params = self.validate_argument_spec(argument_spec=welcome_mail.ARGUMENT_SPEC)
        error = welcome_mail.mode_error(params) or welcome_mail.secret_error(params)
        if error:
            return dict(failed=True, msg=error)
        marker = params['marker']
        probe = self._low_level_execute_command(welcome_mail.probe_command(params))
        if probe['rc'] not in (0, 1):
            return dict(failed=True, msg='could not look for the marker %s: %s' % (
                marker, to_text(probe.get('stderr', '')).strip()))
        existed = probe['rc'] == 0
        result = dict(changed=not existed, sent=not existed, marker_existed=existed)
        if self._task.diff:
            result['diff'] = dict(before_header=marker, after_header=marker,
                                  before='present\n' if existed else 'absent\n', after='present\n')
        if existed:
            result['msg'] = 'the welcome mail was sent already (%s exists)' % marker
            return result
        if self._task.check_mode:
            result['msg'] = 'would send %s' % welcome_mail.describe(params)
            return result
        try:
            welcome_mail.send(params, welcome_mail.build_message(params))
        except welcome_mail.SEND_ERRORS as exc:
            return dict(failed=True, sent=False, marker_existed=False, msg=welcome_mail.send_error(params, exc))
        write = self._low_level_execute_command(welcome_mail.marker_command(params))
        if write['rc'] != 0:
            return dict(failed=True, changed=True, sent=True, marker_existed=False,
                        msg='the welcome mail was sent, but the marker %s could not be written: %s'
                        % (marker, to_text(write.get('stderr', '')).strip()))
        result['msg'] = 'sent %s' % welcome_mail.describe(params)
        return result
