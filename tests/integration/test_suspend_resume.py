# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.suspend and mpanel.cloudpods.resume by hand (-e pod=) against the simulator lab:
the Proxmox API calls they make, check mode, and a second run that changes nothing."""

import time

import pytest

from podplays import (  # pylint: disable=import-error
    assert_ok, changed_count, container, new_pod, pods_named, remove_pod, run_pod_playbook)


@pytest.fixture
def pod(lab_env, dirs):
    """A provisioned Starter pod without a domain; removed afterwards."""
    name = new_pod('sus')
    assert_ok(run_pod_playbook('provision', lab_env, dirs, pod=name, plan='CLOUD_POD_STARTER', domain='',
                               customer_email=name + '@customer.test'))
    yield name
    remove_pod(lab_env, name)


def writes(lab_control, vmid, since):
    """The API calls that changed the container since ``since``: (last path part, params)."""
    return [(r['path'].rsplit('/', 1)[-1], r['params']) for r in lab_control.requests()
            if r['time'] >= since and r['method'] != 'GET' and '/lxc/%d/' % vmid in r['path']]


def test_suspend_then_resume_by_hand_with_check_mode_and_no_second_change(lab_env, lab_control, dirs, pod):
    [vmid] = pods_named(lab_control, pod)
    before = container(lab_control, pod)
    assert before['status'] == 'running' and str(before['config']['onboot']) == '1'

    started = time.time()
    dry = assert_ok(run_pod_playbook('suspend', lab_env, dirs, check=True, diff=True, pod=pod))
    assert changed_count(dry) == 1 and writes(lab_control, vmid, started) == []
    assert container(lab_control, pod)['status'] == 'running'

    started = time.time()
    run = assert_ok(run_pod_playbook('suspend', lab_env, dirs, pod=pod))
    after = container(lab_control, pod)
    assert after['status'] == 'stopped' and str(after['config']['onboot']) == '0'
    # onboot first, then a clean shutdown that PVE turns into a stop after 60 s (forceStop); no bare stop.
    calls = writes(lab_control, vmid, started)
    assert [path for path, _params in calls] == ['config', 'shutdown'], calls
    shutdown = {k: str(v) for k, v in calls[1][1].items() if k not in ('node', 'vmid')}
    assert shutdown == {'forceStop': '1', 'timeout': '60'}
    stats = run.report['global_custom_stats']
    assert (stats['vmid'], stats['power']) == (vmid, 'stopped')
    # Everything else is kept: the same config but onboot.
    assert {k: v for k, v in after['config'].items() if k not in ('onboot', 'digest')} == \
        {k: v for k, v in before['config'].items() if k not in ('onboot', 'digest')}

    started = time.time()
    again = assert_ok(run_pod_playbook('suspend', lab_env, dirs, pod=pod))
    assert changed_count(again) == 0 and writes(lab_control, vmid, started) == []

    started = time.time()
    dry = assert_ok(run_pod_playbook('resume', lab_env, dirs, check=True, pod=pod))
    assert changed_count(dry) == 1 and writes(lab_control, vmid, started) == []
    assert container(lab_control, pod)['status'] == 'stopped'

    run = assert_ok(run_pod_playbook('resume', lab_env, dirs, pod=pod))
    resumed = container(lab_control, pod)
    assert resumed['status'] == 'running' and str(resumed['config']['onboot']) == '1'
    assert run.report['global_custom_stats']['ip'] == resumed['ip'] and resumed['ip']

    started = time.time()
    again = assert_ok(run_pod_playbook('resume', lab_env, dirs, pod=pod))
    assert changed_count(again) == 0 and writes(lab_control, vmid, started) == []


@pytest.mark.parametrize('playbook', ['suspend', 'resume'])
def test_unknown_pod_fails_and_changes_nothing(lab_env, lab_control, dirs, playbook):
    name = new_pod('nopod')
    run = run_pod_playbook(playbook, lab_env, dirs, pod=name)
    assert run.rc != 0 and "pod '%s' (extra var pod) has no container" % name in run.stdout
    assert pods_named(lab_control, name) == []


def test_resume_refuses_a_pod_without_a_known_plan(lab_env, lab_control, dirs, pod):
    [vmid] = pods_named(lab_control, pod)
    assert_ok(run_pod_playbook('suspend', lab_env, dirs, pod=pod))
    started = time.time()
    run = run_pod_playbook('resume', lab_env, dirs, pod=pod, plan='CLOUD_POD_{{ 7 * 7 }}')
    assert run.rc != 0 and 'has no known plan' in run.stdout
    assert writes(lab_control, vmid, started) == [] and container(lab_control, pod)['status'] == 'stopped'
