# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.change_plan against the simulator: an upgrade sizes the container, grows its disk,
moves the record, the backups and the firewall to the new plan, and repair keeps it; a downgrade
whose disk would shrink is refused before any write; check mode writes nothing; a second run
changes nothing; a suspended (stopped) pod changes plan and stays stopped."""

import os
import time

import pytest
import yaml

from runner_api import executors
from playbooks import run_playbook  # pylint: disable=import-error
from podplays import (  # pylint: disable=import-error
    ROOT, assert_ok, backup_time, changed_count, changed_tasks, container, new_pod, pods_named, remove_pod,
    run_pod_playbook, task)

# The cron lines of the plans, written out by hand (as test_provision_plans does).
PREMIUM_CRON = '0 3 * * * 180'  # the plans' backup times and windows (plans.yml)
BUSINESS_CRON = '30 2 * * * 180'


@pytest.fixture
def pod(lab_env, dirs):
    """A provisioned Starter pod (30G disk) without a domain; removed afterwards."""
    name = new_pod('plan')
    assert_ok(run_pod_playbook('provision', lab_env, dirs, pod=name, plan='CLOUD_POD_STARTER',
                               customer_email=name + '@customer.test'))
    yield name
    remove_pod(lab_env, name)


def writes_since(lab_control, vmid, started):
    """The simulator's non-GET requests on this CT (config, resize, firewall, power) since ``started``."""
    return [r for r in lab_control.requests()
            if r['time'] >= started and r['method'] != 'GET' and '/lxc/%d/' % vmid in r['path']]


def cron_line(dirs, name):
    with open(dirs.cron_file(name)) as handle:
        return handle.read().splitlines()[-1]


def description_plan(config):
    return [line for line in config['description'].splitlines() if line.startswith('cloudpods-plan:')]


def test_upgrade_is_live_and_repair_keeps_the_new_plan(lab_env, lab_control, dirs, pod):
    [vmid] = pods_named(lab_control, pod)
    before = container(lab_control, pod)
    firewall_before = before['firewall']
    assert (before['config']['cores'], before['config']['memory']) == (1, 1024)
    started = time.time()

    run = assert_ok(run_pod_playbook('change_plan', lab_env, dirs, pod=pod, plan='CLOUD_POD_PREMIUM'))

    after = container(lab_control, pod)
    config = after['config']
    assert (config['cores'], config['memory'], config['swap']) == (2, 2048, 1024)
    assert 'size=75G' in config['rootfs']
    assert sorted(config['tags'].split(';')) == ['cloud_pod_premium', 'cloudpod']
    assert description_plan(config) == ['cloudpods-plan: CLOUD_POD_PREMIUM']
    # live: no stop, start or reboot; one config write and one resize, nothing else on the CT but the firewall
    assert after['status'] == 'running'
    paths = [r['path'].split('/lxc/%d/' % vmid, 1)[1] for r in writes_since(lab_control, vmid, started)]
    assert [p for p in paths if not p.startswith('firewall')] == ['config', 'resize']
    # the firewall was already the Premium plan's (same rules): untouched
    assert after['firewall']['rules'] == firewall_before['rules']
    assert cron_line(dirs, pod).startswith(backup_time(pod, PREMIUM_CRON) + ' root ')
    assert cron_line(dirs, pod).endswith('--prune-backups keep-daily=7,keep-weekly=4 --quiet 1')
    assert changed_tasks(run) == sorted(["Converge the pod's container on Proxmox VE", "Write the pod's backup cron entry"])
    stats = run.report['global_custom_stats']
    assert stats == {'vmid': vmid, 'node': 'pve', 'ip': before['ip'], 'plan': 'CLOUD_POD_PREMIUM',
                     'plan_before': 'CLOUD_POD_STARTER',
                     'size': {'cores': 2, 'memory_mb': 2048, 'swap_mb': 1024, 'disk_gb': 75}}

    # a second run changes nothing
    assert changed_count(assert_ok(run_pod_playbook('change_plan', lab_env, dirs, pod=pod,
                                                    plan='CLOUD_POD_PREMIUM'))) == 0
    # repair reads the plan from the container: the new one, so it has nothing to undo
    run = assert_ok(run_pod_playbook('repair', lab_env, dirs, pod=pod))
    assert changed_count(run) == 0
    assert container(lab_control, pod)['config'] == config
    assert cron_line(dirs, pod).startswith(backup_time(pod, PREMIUM_CRON) + ' root ')


def test_downgrade_that_would_shrink_the_disk_is_refused_before_any_change(lab_env, lab_control, dirs, pod):
    [vmid] = pods_named(lab_control, pod)
    before = container(lab_control, pod)
    cron_before = cron_line(dirs, pod)
    started = time.time()

    run = run_pod_playbook('change_plan', lab_env, dirs, pod=pod, plan='CLOUD_POD_STUDENT')

    assert run.rc != 0
    message = ('plan change refused: the root disk would shrink: pod %s (CT %d) has a 30G root disk and plan '
               'CLOUD_POD_STUDENT (Student) has 2G; Proxmox VE cannot shrink a disk. Nothing was changed' % (pod, vmid))
    refused = task(run, "Check that the new plan's disk is not smaller than the pod's (disks only grow)")
    assert refused.get('failed') and refused['msg'] == message
    # the refusal is a precondition for runner_api (not retried): an assert in a play named "Check ..."
    [play] = [p['play']['name'] for p in run.report['plays']
              if any(t['task']['name'].startswith("Check that the new plan's disk") for t in p['tasks'])]
    assert play.startswith(executors.PRECONDITION_PLAY_PREFIX)
    assert refused['action'] in executors.PRECONDITION_ACTIONS
    assert writes_since(lab_control, vmid, started) == []
    after = container(lab_control, pod)
    assert after['config'] == before['config'] and after['status'] == 'running'
    assert cron_line(dirs, pod) == cron_before


def test_check_mode_shows_the_change_and_writes_nothing(lab_env, lab_control, dirs, pod):
    [vmid] = pods_named(lab_control, pod)
    before = container(lab_control, pod)
    cron_before = cron_line(dirs, pod)
    started = time.time()

    run = assert_ok(run_pod_playbook('change_plan', lab_env, dirs, check=True, diff=True, pod=pod,
                                     plan='CLOUD_POD_BUSINESS'))

    result = task(run, "Converge the pod's container on Proxmox VE")
    assert result['changed']
    diff_before, diff_after = result['diff']['before'], result['diff']['after']
    assert (diff_before['cores'], diff_before['memory'], diff_before['swap'], diff_before['disk']) == (1, 1024, 512, '30G')
    assert (diff_after['cores'], diff_after['memory'], diff_after['swap'], diff_after['disk']) == (3, 4096, 2048, '100G')
    assert 'cloud_pod_business' in diff_after['tags'] and 'cloudpods-plan: CLOUD_POD_BUSINESS' in diff_after['description']
    cron = task(run, "Write the pod's backup cron entry")
    assert cron['changed'] and backup_time(pod, BUSINESS_CRON) + ' root ' in str(cron['diff'])
    assert writes_since(lab_control, vmid, started) == []
    assert container(lab_control, pod)['config'] == before['config']
    assert cron_line(dirs, pod) == cron_before


def test_a_stopped_pod_changes_plan_and_stays_stopped(lab_env, lab_control, dirs, pod):
    [vmid] = pods_named(lab_control, pod)
    # suspended as suspend does it (stopped, onboot=0), with the module itself
    assert_ok(run_playbook([{'mpanel.cloudpods.pod_container': {'hostname': pod, 'state': 'stopped',
                                                                'onboot': False}}], env=lab_env))
    assert container(lab_control, pod)['status'] == 'stopped'
    started = time.time()

    assert_ok(run_pod_playbook('change_plan', lab_env, dirs, pod=pod, plan='CLOUD_POD_BUSINESS'))

    after = container(lab_control, pod)
    assert after['status'] == 'stopped'
    config = after['config']
    assert (config['cores'], config['memory'], config['swap'], config['onboot']) == (3, 4096, 2048, 0)
    assert 'size=100G' in config['rootfs'] and description_plan(config) == ['cloudpods-plan: CLOUD_POD_BUSINESS']
    paths = [r['path'].split('/lxc/%d/' % vmid, 1)[1] for r in writes_since(lab_control, vmid, started)]
    assert [p for p in paths if not p.startswith('firewall')] == ['config', 'resize']
    assert cron_line(dirs, pod).startswith(backup_time(pod, BUSINESS_CRON) + ' root ')
    assert changed_count(assert_ok(run_pod_playbook('change_plan', lab_env, dirs, pod=pod,
                                                    plan='CLOUD_POD_BUSINESS'))) == 0

    # and back down to Premium: 100G > 75G, refused, the stopped pod untouched
    run = run_pod_playbook('change_plan', lab_env, dirs, pod=pod, plan='CLOUD_POD_PREMIUM')
    assert run.rc != 0 and 'has a 100G root disk and plan CLOUD_POD_PREMIUM (Premium) has 75G' in run.stdout
    assert container(lab_control, pod)['config'] == config


def test_a_downgrade_that_keeps_the_disk_lowers_the_sizes_live(lab_env, lab_control, dirs, pod):
    # The catalogue's downgrades all shrink the disk; a site's own catalogue (here through -e, which outranks
    # vars/plans.yml) may have a smaller plan with the same disk: that one goes through, live.
    [vmid] = pods_named(lab_control, pod)
    with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')) as handle:
        plans = yaml.safe_load(handle)['cloudpods_plans']
    plans['CLOUD_POD_LITE'] = dict(plans['CLOUD_POD_STARTER'], name='Lite', memory_mb=512, swap_mb=256, disk_gb=30)
    started = time.time()

    run = assert_ok(run_pod_playbook('change_plan', lab_env, dirs, pod=pod, plan='CLOUD_POD_LITE', cloudpods_plans=plans))

    after = container(lab_control, pod)
    config = after['config']
    assert (config['cores'], config['memory'], config['swap']) == (1, 512, 256) and 'size=30G' in config['rootfs']
    assert after['status'] == 'running' and description_plan(config) == ['cloudpods-plan: CLOUD_POD_LITE']
    paths = [r['path'].split('/lxc/%d/' % vmid, 1)[1] for r in writes_since(lab_control, vmid, started)]
    assert [p for p in paths if not p.startswith('firewall')] == ['config']  # no resize: the disk is the same
    assert run.report['global_custom_stats']['plan_before'] == 'CLOUD_POD_STARTER'


@pytest.mark.parametrize('extra, expected', [
    (dict(plan='CLOUD_POD_GOLD'), "extra var 'plan' must be the new plan, one of CLOUD_POD_STUDENT"),
    (dict(), "extra var 'plan' must be the new plan"),
])
def test_bad_plan_is_refused(lab_env, dirs, extra, expected):
    run = run_pod_playbook('change_plan', lab_env, dirs, pod=new_pod('noplan'), **extra)
    assert run.rc != 0 and expected in run.stdout


def test_unknown_pod_is_refused(lab_env, lab_control, dirs):
    name = new_pod('nopod')
    run = run_pod_playbook('change_plan', lab_env, dirs, pod=name, plan='CLOUD_POD_PREMIUM')
    assert run.rc != 0 and "pod '%s' (extra var pod) has no container" % name in run.stdout
    assert pods_named(lab_control, name) == [] and dirs.files() == []
