# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of mpanel.cloudpods.pod_converge (the module file is its documentation only).

Files, a command and more files inside the pod in ONE command over the task's connection: through
community.proxmox.proxmox_pct_remote that is one SSH session and one ``pct exec``, where the
template, copy and command modules cost about six each (temporary directory, transfer, chmod, run,
clean-up). The program that runs there is plugin_utils/pod_converge_program.py, sent with the
parameters as JSON on stdin; the command line itself is a constant.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import inspect
import json
import shlex

from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import pod_converge_program
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils.file_modes import octal_mode_error

FILE_SPEC = dict(
    dest=dict(type='str', required=True),
    content=dict(type='str', required=True),
    owner=dict(type='str', default='root'),
    group=dict(type='str', default='root'),
    mode=dict(type='str', default='0644'),
    force=dict(type='bool', default=True),
    changed_flag=dict(type='str'),
)

# Files after the command: no changed_flag (the command ran before them).
FILE_AFTER_SPEC = dict((key, value) for key, value in FILE_SPEC.items() if key != 'changed_flag')

ARGUMENT_SPEC = dict(
    files=dict(type='list', elements='dict', options=FILE_SPEC, default=[]),
    command=dict(type='list', elements='str', default=[]),
    check_flag=dict(type='str'),
    stdin=dict(type='str'),
    files_after=dict(type='list', elements='dict', options=FILE_AFTER_SPEC, default=[]),
    python=dict(type='str', default='/usr/bin/python3'),
    boot_timeout=dict(type='int', default=0),
)

# Reads the JSON document on stdin, runs the program it carries with the parameters it carries, prints
# the result as JSON. A constant: nothing of the task reaches this command line.
BOOTSTRAP = ('import json,sys\n'
             'd=json.load(sys.stdin)\n'
             'g={"__name__":"cloudpods_pod_converge"}\n'
             'exec(compile(d["program"],"pod_converge_program.py","exec"),g)\n'
             'sys.stdout.write(json.dumps(g["run"](d["params"])))\n')


def parameter_error(params):
    """A message for parameters the program would refuse, or None."""
    for key in ('files', 'files_after'):
        for index, spec in enumerate(params[key]):
            if not spec['dest'].startswith('/'):
                return '%s[%d].dest must be an absolute path (%r)' % (key, index, spec['dest'])
            error = octal_mode_error(spec, ('mode',), '0644')
            if error:
                return '%s[%d]: %s' % (key, index, error)
    if params['check_flag'] and not params['command']:
        return 'check_flag needs a command'
    if params['stdin'] is not None and not params['command']:
        return 'stdin needs a command'
    if params['boot_timeout'] < 0:
        return 'boot_timeout must be 0 (do not wait) or more seconds (%d)' % params['boot_timeout']
    if not params['python'].startswith('/'):
        return 'python must be an absolute path (%r)' % params['python']
    return None


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super(ActionModule, self).run(tmp, task_vars)
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        error = parameter_error(params)
        if error:
            return dict(failed=True, msg=error)
        document = dict(program=inspect.getsource(pod_converge_program),
                        params=dict(params, check_mode=bool(self._task.check_mode)))
        command = shlex.join([params['python'], '-c', BOOTSTRAP])
        # sudoable=False: no terminal is asked for, so stdin reaches the program byte for byte.
        res = self._low_level_execute_command(command, sudoable=False, in_data=to_bytes(json.dumps(document)))
        stdout = to_text(res.get('stdout', ''))
        try:
            result = json.loads(stdout)
        except ValueError:
            said = (to_text(res.get('stderr', '')).strip() or stdout.strip()).splitlines()[-5:]
            return dict(failed=True, rc=res.get('rc'),
                        msg='pod_converge did not run in the target (rc %s): %s' % (res.get('rc'), ' | '.join(said) or 'no output'))
        if not isinstance(result, dict):
            return dict(failed=True, msg='pod_converge: unexpected output %r' % stdout[:200])
        if not self._task.diff or not result.get('diff'):
            result.pop('diff', None)
        return result
