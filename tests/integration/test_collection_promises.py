# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Promises of the collection held by a test against the lab, read from the simulator's request log.

- ``build_template`` when the template exists: nothing to do, ``changed=0``, and no write to
  Proxmox VE (the simulator, and the LXC lab whose template CT 9000 that playbook built).
- ``cloudpods_linked_clones=true`` clones with ``full=0`` (a linked clone); unset or false, ``full=1``.

Each test runs its playbook with a token of its own (the privileges of the lab's main token), so
the request log shows exactly that run's calls even when other tests use the lab at the same time.
"""

import os
import secrets

import pytest

from labcontrol import LabControl  # pylint: disable=import-error
from labenv import read_env as read_lab_env  # pylint: disable=import-error
from playbooks import run_playbook  # pylint: disable=import-error
from podplays import assert_ok, changed_count, new_pod, pods_named, remove_pod, run_pod_playbook  # pylint: disable=import-error
from realpods import ENV_LXC  # pylint: disable=import-error
from test_pvesim_api import Pve, expect_error  # pylint: disable=import-error

# The simulator's own stand-in OS template (tests/lab/pvesim/storage.py: VZTMPL).
SIM_OSTEMPLATE = 'local:vztmpl/ubuntu-22.04-standard_22.04-1_amd64.tar.zst'
TEMPLATE_CREATED_TASKS = ('Create the template CT from the OS template', 'Start the template CT',
                          'Stop the template CT', 'Convert it to a template (pct template)')


def own_token(env, control, name):
    """``env`` with a new token of the main token's privileges; (env, token id)."""
    [main] = [t for t in control.state()['tokens'] if t['token_id'] == env['PROXMOX_API_TOKEN_ID']]
    token_id, secret = 'promises@pve!%s-%s' % (name, secrets.token_hex(3)), secrets.token_hex(16)
    control.add_token(token_id, secret, acl=main['acl'])
    return dict(env, PROXMOX_API_TOKEN_ID=token_id, PROXMOX_API_TOKEN_SECRET=secret), token_id


def calls_of(control, token_id):
    return [r for r in control.requests() if r['token_id'] == token_id]


def writes(calls):
    return ['%s %s' % (r['method'], r['path']) for r in calls if r['method'] != 'GET']


def run_build_template(env, **extra_vars):
    return run_playbook(playbook=[{'import_playbook': 'mpanel.cloudpods.build_template'}], env=env,
                        extra_vars=extra_vars or None, timeout=300)


def ran_tasks(run):
    return [t['name'] for t in run.tasks]


def assert_nothing_to_do(run, control, token_id, template_vmid):
    assert run.rc == 0, 'build_template failed:\n%s\n%s' % (run.stdout[-4000:], run.stderr[-2000:])
    assert changed_count(run) == 0, run.report.get('stats')
    assert not set(TEMPLATE_CREATED_TASKS) & set(ran_tasks(run)), ran_tasks(run)
    calls = calls_of(control, token_id)
    # The run did reach Proxmox (it looked the template up), and changed nothing there.
    assert any(r['method'] == 'GET' and r['path'].endswith('/lxc/%s/config' % template_vmid) or
               r['path'] == '/cluster/resources' for r in calls), calls
    assert writes(calls) == []
    ct = control.state()['containers'][str(template_vmid)]
    assert ct['config']['template'] == 1 and ct['status'] == 'stopped'


@pytest.mark.parametrize('attempt', [1, 2])
def test_build_template_with_the_template_there_does_nothing(lab_env, lab_control, attempt):
    env, token_id = own_token(lab_env, lab_control, 'build%d' % attempt)
    template = lab_env['PROXMOX_CLOUDPOD_TEMPLATE_ID']
    before = lab_control.state()['containers'][template]['config']
    run = run_build_template(env)
    assert_nothing_to_do(run, lab_control, token_id, template)
    assert lab_control.state()['containers'][template]['config'] == before


@pytest.mark.skipif(not os.path.exists(ENV_LXC), reason='no real containers: the lab is up without --lxc')
def test_build_template_twice_on_the_real_lxc_lab_does_nothing():
    """CT 9000 of the LXC lab was built by this playbook (``lab up --lxc``): two more runs change nothing."""
    lxc_env = read_lab_env(ENV_LXC)
    control = LabControl.from_env(lxc_env)
    template = lxc_env['PROXMOX_CLOUDPOD_TEMPLATE_ID']
    before = control.state()['containers'][template]['config']
    for attempt in (1, 2):
        env, token_id = own_token(lxc_env, control, 'lxcbuild%d' % attempt)
        assert_nothing_to_do(run_build_template(env), control, token_id, template)
    assert control.state()['containers'][template]['config'] == before


def test_build_template_without_the_template_does_write(lab_env, lab_control, unused_vmid):
    """The counter-check of the tests above: when the template is missing, the same request log shows
    the run's writes (create, start). The install inside then cannot reach the host (pct over SSH to a
    closed port), and the run stops there: the half-built CT is not converted to a template."""
    env, token_id = own_token(dict(lab_env, CLOUDPODS_TEMPLATE_OSTEMPLATE=SIM_OSTEMPLATE,
                                   PROXMOX_CLOUDPOD_TEMPLATE_ID=str(unused_vmid)), lab_control, 'build-new')
    run = run_build_template(env, cloudpods_pct_host='127.0.0.1', cloudpods_pct_port=closed_port(),
                             cloudpods_pct_host_key_checking=False)
    assert run.rc != 0
    assert writes(calls_of(lab_control, token_id)) == [
        'POST /nodes/pve/lxc', 'POST /nodes/pve/lxc/%d/status/start' % unused_vmid]
    assert changed_count(run) >= 2
    ct = lab_control.state()['containers'][str(unused_vmid)]
    assert 'template' not in ct['config'] and ct['config']['hostname'] == 'cloudpod-template'


def closed_port():
    from labenv import free_port  # pylint: disable=import-error,import-outside-toplevel
    return free_port()


@pytest.fixture
def unused_vmid(lab_env):
    """A VMID no CT has (from /cluster/nextid); the CT made there is removed afterwards."""
    pve = Pve(lab_env)
    vmid = int(pve.get('/cluster/nextid'))
    yield vmid
    status = pve.call('GET', '/nodes/{node}/lxc/%d/status/current' % vmid)
    if status.status_code == 200:
        if status.json()['data']['status'] == 'running':
            pve.ok(pve.data('POST', '/nodes/{node}/lxc/%d/status/stop' % vmid))
        pve.ok(pve.data('DELETE', '/nodes/{node}/lxc/%d' % vmid))


# ---------------------------------------------------------------- linked clones

@pytest.mark.parametrize('linked, full', [(True, '0'), (False, '1'), (None, '1')])
def test_linked_clones_setting_decides_full(lab_env, lab_control, dirs, linked, full):
    env, token_id = own_token(lab_env, lab_control, 'clone')
    pod = new_pod('linked')
    extra = dict(pod=pod, plan='CLOUD_POD_STARTER', customer_email=pod + '@customer.test')
    if linked is not None:
        extra['cloudpods_linked_clones'] = linked
    try:
        assert_ok(run_pod_playbook('provision', env, dirs, **extra))
        [vmid] = pods_named(lab_control, pod)
        rootfs = lab_control.state()['containers'][str(vmid)]['config']['rootfs']
    finally:
        remove_pod(lab_env, pod)
    template = lab_env['PROXMOX_CLOUDPOD_TEMPLATE_ID']
    [clone] = [r for r in calls_of(lab_control, token_id)
               if r['method'] == 'POST' and r['path'] == '/nodes/pve/lxc/%s/clone' % template]
    assert clone['params']['full'] == full and clone['params']['newid'] == str(vmid), clone
    if full == '0':
        # PVE refuses 'storage' on a linked clone; the clone's disk is a child of the template's base volume
        assert 'storage' not in clone['params']
        assert rootfs.startswith('local-lvm:base-%s-disk-0/vm-%d-disk-0,' % (template, vmid)), rootfs
    else:
        assert clone['params']['storage'] == lab_env['PROXMOX_CLOUDPOD_STORAGE']
        assert rootfs.startswith('local-lvm:vm-%d-disk-0,' % vmid), rootfs


def test_simulator_refuses_a_full_clone_of_a_running_ct(lab_env, unused_vmid):
    """pve-container (stable-bookworm) src/PVE/API2/LXC.pm, clone_vm: a full clone of a running CT
    needs a snapshot."""
    pve = Pve(lab_env)
    pve.cloned(unused_vmid, full=1)
    pve.running(unused_vmid)
    expect_error(pve.call('POST', '/nodes/{node}/lxc/%d/clone' % unused_vmid, newid=unused_vmid + 1, full=1),
                 500, 'Cannot do full clones on a running container without snapshots')
