# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of mpanel.cloudpods.pod_welcome_mail: the marker on the target through two shell commands,
the mail from the controller. No module run (a module run costs about 0.3 s)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import posixpath
import shlex
import smtplib
import ssl

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.action import ActionBase

from ansible_collections.mpanel.cloudpods.plugins.modules.pod_welcome_mail import (
    ARGUMENT_SPEC, build_message, send)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def _shell(self, command):
        return self._low_level_execute_command(command)

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        # the marker is a path on the target: no expansion on the controller
        spec = dict(ARGUMENT_SPEC, marker=dict(type='str', required=True))
        dummy, params = self.validate_argument_spec(argument_spec=spec)
        for key in ('marker_mode', 'marker_dir_mode'):
            try:
                int(params[key], 8)
            except ValueError:
                return dict(failed=True, msg='%s must be an octal mode such as 0640, got %r' % (key, params[key]))
        marker = params['marker']
        probe = self._shell('test -e %s' % shlex.quote(marker))
        if probe['rc'] not in (0, 1):
            return dict(failed=True, msg='could not look for the marker %s: %s' % (
                marker, to_text(probe.get('stderr', '')).strip()))
        existed = probe['rc'] == 0
        what = "'%s' to %s through %s:%s" % (params['subject'], ', '.join(params['to']), params['host'], params['port'])
        result = dict(changed=not existed, sent=not existed, marker_existed=existed)
        if self._task.diff:
            result['diff'] = dict(before_header=marker, after_header=marker,
                                  before='present\n' if existed else 'absent\n', after='present\n')
        if existed:
            result['msg'] = 'the welcome mail was sent already (%s exists)' % marker
            return result
        if self._task.check_mode:
            result['msg'] = 'would send %s' % what
            return result
        try:
            send(params, build_message(params))
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            return dict(failed=True, sent=False, marker_existed=False,
                        msg='could not send the welcome mail through %s:%s: %s'
                        % (params['host'], params['port'], to_native(exc)))
        directory = posixpath.dirname(marker) or '.'
        write = self._shell('set -e; if [ ! -d {d} ]; then mkdir -p {d}; chmod {dm} {d}; fi; : >> {m}; chmod {mm} {m}'.format(
            d=shlex.quote(directory), m=shlex.quote(marker),
            dm=params['marker_dir_mode'], mm=params['marker_mode']))
        if write['rc'] != 0:
            return dict(failed=True, changed=True, sent=True, marker_existed=False,
                        msg='the welcome mail was sent, but the marker %s could not be written: %s'
                        % (marker, to_text(write.get('stderr', '')).strip()))
        result['msg'] = 'sent %s' % what
        return result
