# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's API modules run inside the controller's worker when their target is the controller.

Every API module (Proxmox, PowerDNS) runs on localhost. As a module, each run costs a new Python
process that imports ansible's module_utils, requests and proxmoxer again: about 0.8 s on a lab
machine, where the API calls themselves take a few tens of milliseconds. ``ModuleAction`` is the
action of such a module: on a local connection to the controller's own Python it calls the module's
``main()`` in the worker that runs the task, with ``ControllerModule`` standing in for AnsibleModule.
Otherwise (another connection or interpreter, become, async, a task environment) it runs the module
as ansible-core always does. The module code is the same either way.

``ControllerModule`` does what AnsibleModule does for these modules: it validates the arguments with
ansible-core's own validator (the same messages, env fallbacks and no_log values), and its
``exit_json``/``fail_json`` end the run with a result that has every no_log value removed and the
``invocation`` a module's result carries.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import sys
import warnings

from ansible.module_utils.common.arg_spec import ModuleArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase


class ModuleExit(BaseException):
    """End of an in-process module run (AnsibleModule exits with SystemExit: not an Exception either)."""

    def __init__(self, result):
        super(ModuleExit, self).__init__('module exited')
        self.result = result


class ControllerModule(object):
    """The part of AnsibleModule that the collection's API modules use, in the controller's process."""

    def __init__(self, task_args, name, check_mode=False, diff=False, argument_spec=None, supports_check_mode=False,
                 mutually_exclusive=None, required_together=None, required_one_of=None, required_if=None,
                 required_by=None):
        self._name = name
        self.check_mode = check_mode
        self._diff = diff
        self._warnings = []
        self.params = dict(task_args)
        self.no_log_values = set()
        validation = ModuleArgumentSpecValidator(argument_spec or {}, mutually_exclusive, required_together,
                                                 required_one_of, required_if, required_by).validate(self.params)
        self.params.update(validation.validated_parameters)
        self.no_log_values.update(validation._no_log_values)  # pylint: disable=protected-access
        if validation.error_messages:
            msg = validation.errors.msg
            if isinstance(validation.errors[0], UnsupportedError):
                msg = 'Unsupported parameters for (%s) module: %s' % (name, msg)
            self.fail_json(msg=msg)
        if check_mode and not supports_check_mode:
            self.exit_json(skipped=True, msg='remote module (%s) does not support check mode' % name)

    def warn(self, warning):
        self._warnings.append(warning)

    def _end(self, result):
        result.setdefault('invocation', {'module_args': self.params})
        if self._warnings:
            result['warnings'] = list(self._warnings)
        raise ModuleExit(remove_values(result, self.no_log_values))

    def exit_json(self, **result):
        self._end(result)

    def fail_json(self, msg, **result):
        result.update(failed=True, msg=msg)
        self._end(result)


def run_main(main, task_args, name, check_mode=False, diff=False):
    """The result of ``main(module_class)`` run in this process with ``task_args``.

    The arguments take the JSON round trip a module's arguments take (plain str, int, list, dict:
    nothing of the templating's types reaches the module code).
    """
    args = json.loads(json.dumps(task_args))

    def module_class(**kwargs):
        return ControllerModule(args, name, check_mode=check_mode, diff=diff, **kwargs)

    try:
        # A module's Python warnings (urllib3's, say) go to its stderr, which ansible-core drops
        # after a run that answered: the same here.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            main(module_class)
    except ModuleExit as done:
        return done.result
    return dict(failed=True, msg='module %s ended without a result' % name)


def same_python(interpreter):
    """Whether ``interpreter`` (a path or command name) is the Python running this controller."""
    if not interpreter or interpreter.startswith('auto'):
        return True
    path = interpreter if os.path.isabs(interpreter) else None
    if path is None:
        for directory in os.environ.get('PATH', '').split(os.pathsep):
            candidate = os.path.join(directory, interpreter)
            if os.path.isfile(candidate):
                path = candidate
                break
    if path is None:
        return False
    # The same environment: that file, or another python* of its directory (bin/python3 of a venv).
    path, running = os.path.normpath(path), os.path.normpath(sys.executable)
    return path == running or (
        os.path.dirname(path) == os.path.dirname(running) and os.path.basename(path).startswith('python'))


class ModuleAction(ActionBase):
    """Base of the action of an API module: subclasses set ``MODULE`` to the module's Python module."""

    TRANSFERS_FILES = False
    MODULE = None

    def module_only_reasons(self, task_vars):
        """Why this task must run as a module process (empty: it may run in this process)."""
        reasons = []
        if self._play_context.become:
            reasons.append('become')
        if self._task.async_val:
            reasons.append('async')
        if any(self._templar.template(entry) for entry in self._task.environment or []):
            reasons.append('environment')
        if self._connection.transport not in ('local', 'ansible.builtin.local'):
            reasons.append('connection')
        interpreter = task_vars.get('ansible_python_interpreter')
        if interpreter is not None:
            interpreter = self._templar.template(interpreter)
        if not same_python(interpreter):
            reasons.append('interpreter')
        return reasons

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ModuleAction, self).run(tmp, task_vars)
        if self.module_only_reasons(task_vars):
            result.update(self._execute_module(task_vars=task_vars))
            return result
        result.update(run_main(self.MODULE.main, self._task.args, self._task.action,
                               check_mode=bool(self._task.check_mode), diff=bool(self._task.diff)))
        return result
