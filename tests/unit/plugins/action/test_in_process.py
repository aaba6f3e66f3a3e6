# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The API modules run inside the controller's worker (plugin_utils/in_process.py): the stand-in for
AnsibleModule gives the same validation messages and results, with no_log values removed; the actions
run the module as a process whenever only a process would honour the task (become, interpreter, ...);
and a real ansible-playbook run gives the same failure either way, starting no module process in-process."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import in_process

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')

SPEC = dict(name=dict(type='str', required=True), secret=dict(type='str', no_log=True),
            count=dict(type='int', default=3), state=dict(type='str', choices=['present', 'absent'], default='present'))


def echo_main(module_class=AnsibleModule):
    """A module that answers its parameters back (the secret too), warns once, and fails on count 0."""
    module = module_class(argument_spec=SPEC, supports_check_mode=True)
    module.warn('looked at %s' % module.params['name'])
    if module.params['count'] == 0:
        module.fail_json(msg='count 0 for %s with %s' % (module.params['name'], module.params['secret']))
    module.exit_json(changed=not module.check_mode, params=module.params, diff_mode=module._diff)


def test_a_run_gives_the_module_result_with_invocation_and_warnings():
    result = in_process.run_main(echo_main, dict(name='pod-a'), 'x.y.echo', diff=True)
    assert result['changed'] is True and result['diff_mode'] is True
    assert result['params'] == dict(name='pod-a', secret=None, count=3, state='present')
    assert result['invocation'] == dict(module_args=result['params'])
    assert result['warnings'] == ['looked at pod-a']


def test_check_mode_reaches_the_module():
    assert in_process.run_main(echo_main, dict(name='pod-a'), 'x.y.echo', check_mode=True)['changed'] is False


def test_no_log_values_never_come_back_even_in_a_failure():
    done = in_process.run_main(echo_main, dict(name='pod-a', secret='t0p-s3cret', count=0), 'x.y.echo')
    assert done['failed'] is True and done['msg'].startswith('count 0 for pod-a with ')
    assert 't0p-s3cret' not in json.dumps(done)


@pytest.mark.parametrize('args, message', [
    (dict(name='a', colour='red'), 'Unsupported parameters for (x.y.echo) module: colour. Supported parameters '
                                   'include: count, name, secret, state.'),
    (dict(), 'missing required arguments: name'),
    (dict(name='a', state='gone'), 'value of state must be one of: present, absent, got: gone'),
    (dict(name='a', count='many'), "argument 'count' is of type str and we were unable to convert to int: "),
])
def test_bad_arguments_fail_with_ansible_cores_own_message(args, message):
    done = in_process.run_main(echo_main, args, 'x.y.echo')
    assert done['failed'] is True and done['msg'].startswith(message)
    assert 'warnings' not in done  # the module code never ran


def test_the_arguments_are_plain_json_values():
    class Tagged(str):
        pass
    result = in_process.run_main(echo_main, dict(name=Tagged('pod-a')), 'x.y.echo')
    assert type(result['params']['name']) is str  # pylint: disable=unidiomatic-typecheck


def test_a_module_that_returns_without_exiting_is_a_failure():
    done = in_process.run_main(lambda module_class: None, {}, 'x.y.silent')
    assert done == dict(failed=True, msg='module x.y.silent ended without a result')


def test_same_python():
    assert in_process.same_python(None) and in_process.same_python('auto_silent')
    assert in_process.same_python(sys.executable)
    assert in_process.same_python(os.path.join(os.path.dirname(sys.executable), 'python3'))
    assert not in_process.same_python('/nonexistent/bin/python3')


class Task(object):
    def __init__(self, async_val=0, environment=None):
        self.async_val = async_val
        self.environment = environment or [{}]


class Connection(object):
    def __init__(self, transport):
        self.transport = transport


class PlayContext(object):
    def __init__(self, become=False):
        self.become = become


class Templar(object):
    @staticmethod
    def template(value):
        return value


@pytest.mark.parametrize('task, transport, become, task_vars, reasons', [
    (Task(), 'local', False, {}, []),
    (Task(), 'ansible.builtin.local', False, dict(ansible_python_interpreter=sys.executable), []),
    (Task(), 'ssh', False, {}, ['connection']),
    (Task(), 'local', True, {}, ['become']),
    (Task(async_val=30), 'local', False, {}, ['async']),
    (Task(environment=[{}, {'HTTPS_PROXY': 'http://127.0.0.1:3128'}]), 'local', False, {}, ['environment']),
    (Task(), 'local', False, dict(ansible_python_interpreter='/nonexistent/bin/python3'), ['interpreter']),
])
def test_what_only_a_module_process_honours(task, transport, become, task_vars, reasons):
    action = in_process.ModuleAction.__new__(in_process.ModuleAction)
    action._task, action._connection = task, Connection(transport)  # pylint: disable=protected-access
    action._play_context, action._templar = PlayContext(become), Templar()  # pylint: disable=protected-access
    assert action.module_only_reasons(task_vars) == reasons


def run_playbook(tmp_path, *options):
    """pod_container_info against a closed loopback port: the result and whether a module process ran."""
    home = tmp_path / 'home'
    home.mkdir(exist_ok=True)
    path = tmp_path / 'playbook.yml'
    path.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'mpanel.cloudpods.pod_container_info': {
            'hostname': 'pod-a', 'api_url': 'https://127.0.0.1:9/api2/json', 'api_timeout': 2,
            'api_token_id': 'mpanel-api@pve!mpanel-token', 'api_token_secret': 'n0t-th1s-s3cret'},
         'environment': '{{ task_environment | default({}) }}', 'ignore_errors': True}]}]))
    env = dict(os.environ, HOME=str(home), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               ANSIBLE_STDOUT_CALLBACK='ansible.posix.json', ANSIBLE_LOCALHOST_WARNING='False',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1',
               ANSIBLE_KEEP_REMOTE_FILES='1', ANSIBLE_REMOTE_TMP=str(home / 'remote'))
    for name in list(env):
        if name.startswith('PROXMOX_'):
            del env[name]
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(path)] + list(options),
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'n0t-th1s-s3cret' not in done.stdout + done.stderr
    result = json.loads(done.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']
    # With ANSIBLE_KEEP_REMOTE_FILES, a module run leaves its AnsiballZ wrapper in the remote tmp.
    return result, any(path.name.startswith('AnsiballZ_') for path in home.rglob('*'))


def test_in_a_playbook_the_same_failure_with_and_without_a_module_process(tmp_path):
    inside, module_process = run_playbook(tmp_path)
    assert not module_process
    # A task environment is honoured by a module process only: the same module, run as one.
    outside, module_process = run_playbook(tmp_path, '-e', '{"task_environment": {"CLOUDPODS_UNUSED": "1"}}')
    assert module_process
    assert inside['failed'] is True and inside['msg'] == outside['msg']
    assert 'pod-a' not in inside['msg'] and '127.0.0.1' in inside['msg']
