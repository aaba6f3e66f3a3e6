# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mpanel.cloudpods.pods inventory plugin against the lab simulator, through real
ansible-inventory and ansible-playbook --limit runs."""

import json
import os
import subprocess
import time

import pytest

from playbooks import VENV_BIN, playbook_env, run_playbook  # pylint: disable=import-error
from podplays import assert_no_secret, new_pod, pods_named, remove_pod  # pylint: disable=import-error


@pytest.fixture(scope='module')
def two_pods(lab_env):
    """Two pod containers made as provision makes them (plan tag), one started, one left stopped."""
    names = [new_pod('inv'), new_pod('inv')]
    run = run_playbook([
        {'mpanel.cloudpods.pod_container': {'hostname': names[0], 'pod_id': names[0], 'state': 'started',
                                            'tags': ['cloud_pod_premium']}},
        {'mpanel.cloudpods.pod_container': {'hostname': names[1], 'pod_id': names[1], 'state': 'present',
                                            'tags': ['cloud_pod_student']}},
    ], env=lab_env)
    assert run.rc == 0, run.stdout[-3000:]
    yield names
    for name in names:
        remove_pod(lab_env, name)


@pytest.fixture
def inventory_file(tmp_path):
    path = tmp_path / 'lab.pods.yml'
    path.write_text('plugin: mpanel.cloudpods.pods\n')
    return str(path)


def plain(value):
    """ansible-inventory --list marks strings from inventory plugins as unsafe ({"__ansible_unsafe": ...})."""
    if isinstance(value, dict):
        if list(value) == ['__ansible_unsafe']:
            return value['__ansible_unsafe']
        return dict((k, plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def run_ansible(command, env, *args):
    # An inventory source that fails is an error here, not a warning and an empty inventory.
    env = dict(env, ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED='True')
    return subprocess.run([os.path.join(VENV_BIN, command)] + list(args), env=playbook_env(env),
                          capture_output=True, text=True, check=False, timeout=120)


def ansible(command, env, *args):
    result = run_ansible(command, env, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_no_secret(env, result.stdout, result.stderr)
    return result


def pod_hostvars_listed(env, inventory_file, names):
    hostvars = plain(json.loads(ansible('ansible-inventory', env, '-i', inventory_file, '--list').stdout))['_meta']['hostvars']
    return dict((name, hostvars[name]) for name in names)


def test_pods_are_hosts_with_vmid_node_ip_and_plan(lab_env, lab_control, two_pods, inventory_file):
    listing = plain(json.loads(ansible('ansible-inventory', lab_env, '-i', inventory_file, '--list').stdout))
    started, stopped = two_pods
    hostvars = listing['_meta']['hostvars']
    state = lab_control.state()['containers']
    [vmid] = pods_named(lab_control, started)
    assert hostvars[started]['vmid'] == vmid
    assert hostvars[started]['node'] == 'pve'
    assert hostvars[started]['ip'] == state[str(vmid)]['ip'] != ''
    assert hostvars[started]['plan'] == 'CLOUD_POD_PREMIUM'
    assert hostvars[started]['pod_id'] == started
    assert hostvars[stopped]['ip'] == '' and hostvars[stopped]['plan'] == 'CLOUD_POD_STUDENT'
    assert started in listing['cloudpods']['hosts'] and stopped in listing['cloudpods']['hosts']
    assert started in listing['cloud_pod_premium']['hosts']
    assert stopped in listing['status_stopped']['hosts']
    assert 'cloudpod-template' not in hostvars


def test_limit_targets_one_pod(lab_env, two_pods, inventory_file, tmp_path):
    started = two_pods[0]
    playbook = tmp_path / 'which.yml'
    playbook.write_text(json.dumps([{
        'name': 'which pods', 'hosts': 'cloudpods', 'gather_facts': False, 'connection': 'local',
        'tasks': [{'name': 'show', 'ansible.builtin.debug': {'msg': '{{ inventory_hostname }} {{ vmid }} {{ plan }}'}}],
    }]))
    env = dict(lab_env, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json')
    result = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory_file, str(playbook),
                             '--limit', started], env=playbook_env(env), capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index('{'):])
    assert list(report['stats']) == [started]


def run_restart(env, inventory_file, *args):
    return subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory_file,
                           'mpanel.cloudpods.restart'] + list(args),
                          env=playbook_env(dict(env, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json')),
                          capture_output=True, text=True, check=False, timeout=300)


def test_restart_with_limit_reboots_that_pod_only(lab_env, lab_control, two_pods, inventory_file):
    started, stopped = two_pods
    since = time.time()
    result = run_restart(lab_env, inventory_file, '--limit', started)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index('{'):])
    assert list(report['stats']) == [started] and report['stats'][started]['changed'] == 1
    [vmid] = pods_named(lab_control, started)
    writes = [r for r in lab_control.requests()
              if r['time'] >= since and r['method'] != 'GET' and '/lxc/%d/' % vmid in r['path']]
    assert [r['path'] for r in writes] == ['/nodes/pve/lxc/%d/status/reboot' % vmid]
    assert_no_secret(lab_env, result.stdout, result.stderr)


def test_restart_from_the_inventory_needs_a_limit(lab_env, lab_control, two_pods, inventory_file):
    since = time.time()
    result = run_restart(lab_env, inventory_file)
    assert result.returncode != 0
    assert '--limit <pod>' in result.stdout
    vmids = ['/lxc/%d/' % vmid for name in two_pods for vmid in pods_named(lab_control, name)]
    assert [r for r in lab_control.requests()
            if r['time'] >= since and r['method'] != 'GET' and any(v in r['path'] for v in vmids)] == []


def test_cache_answers_without_the_api(lab_env, two_pods, tmp_path):
    cache_dir = tmp_path / 'cache'
    inventory_file = tmp_path / 'cached.pods.yml'
    inventory_file.write_text('plugin: mpanel.cloudpods.pods\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n'
                              'cache_connection: %s\ncache_timeout: 600\n' % cache_dir)
    first = pod_hostvars_listed(lab_env, str(inventory_file), two_pods)
    assert [first[name]['pod_id'] for name in two_pods] == two_pods
    cached = ''.join(path.read_text() for path in cache_dir.iterdir())
    assert two_pods[0] in cached
    assert_no_secret(lab_env, cached)

    # With a wrong token every API call fails (401): the second run answers from the cache alone.
    locked_out = dict(lab_env, PROXMOX_API_TOKEN_SECRET='not-the-secret')
    assert pod_hostvars_listed(locked_out, str(inventory_file), two_pods) == first
    refreshed = run_ansible('ansible-inventory', locked_out, '-i', str(inventory_file), '--list', '--flush-cache')
    assert refreshed.returncode != 0, refreshed.stdout[-3000:]
    assert_no_secret(lab_env, refreshed.stdout, refreshed.stderr)


@pytest.fixture
def pod_with_template_text(lab_env, lab_control, tmp_path):
    """A pod whose description carries Jinja (in its free text and its cloudpods-domain line), as anyone
    allowed to edit the CT could write it; and the file the template would create if it were ever run."""
    name = new_pod('inv')
    run = run_playbook([{'mpanel.cloudpods.pod_container': {'hostname': name, 'pod_id': name, 'state': 'present',
                                                            'tags': ['cloud_pod_starter']}}], env=lab_env)
    assert run.rc == 0, run.stdout[-3000:]
    planted = tmp_path / 'evaluated'
    payload = "{{ lookup('pipe', 'touch %s') }}" % planted
    [vmid] = pods_named(lab_control, name)
    lab_control.set_container(vmid, description='Cloud Pod %s\ncloudpods-plan: CLOUD_POD_STARTER\n'
                                                'cloudpods-domain: %s\ncloudpods-pod: %s\n' % (payload, payload, name))
    yield name, payload, planted
    remove_pod(lab_env, name)


def test_template_text_from_the_container_is_never_evaluated(lab_env, pod_with_template_text, tmp_path):
    name, payload, planted = pod_with_template_text
    inventory_file = tmp_path / 'lab.pods.yml'
    inventory_file.write_text('plugin: mpanel.cloudpods.pods\ncompose:\n  pod_domain: pod_record.domain\n')
    playbook = tmp_path / 'use.yml'
    playbook.write_text(json.dumps([{
        'name': 'use the pod record', 'hosts': 'cloudpods', 'gather_facts': False, 'connection': 'local',
        'tasks': [
            {'name': 'record', 'ansible.builtin.debug': {'msg': '{{ pod_record.domain }}'}},
            {'name': 'hostvars', 'ansible.builtin.debug': {'msg': "{{ hostvars[inventory_hostname]['pod_record'] }}"}},
            {'name': 'composed', 'ansible.builtin.debug': {'msg': '{{ pod_domain }}'}},
            {'name': 'copied', 'ansible.builtin.set_fact': {'copied_domain': '{{ pod_record.domain }}'}},
            {'name': 'copy', 'ansible.builtin.debug': {'msg': '{{ copied_domain }}'}},
        ],
    }]))
    result = run_ansible('ansible-playbook', lab_env, '-i', str(inventory_file), str(playbook), '--limit', name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index('{'):])
    msgs = [task['hosts'][name]['msg'] for task in report['plays'][0]['tasks'] if 'msg' in task['hosts'][name]]
    assert msgs[0] == msgs[2] == msgs[3] == payload
    assert msgs[1]['domain'] == payload and msgs[1]['pod'] == name
    assert not planted.exists()
