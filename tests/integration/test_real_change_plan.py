# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.change_plan with real containers (``tests/lab/lab up --lxc``, ``.lab/env.lxc``):
an upgrade changes the cgroup limits of the running container at once, without restarting it (the
same init process, started at the same time); a refused downgrade leaves the limits and the config
as they were; a downgrade that keeps the disk lowers them, live as well.

The lab's disks are directories without a size (see tests/lab/README.md): the resize is checked in
the config Proxmox VE reports, not in the container's file system.
"""

import os
import subprocess
import sys

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from podplays import ROOT, HostDirs, assert_ok, changed_count, new_pod, remove_pod, run_pod_playbook  # noqa: E402
from realpods import ENV_LXC, cgroup, pct, pve  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402

pytestmark = pytest.mark.real_containers

V2 = os.path.exists('/sys/fs/cgroup/cgroup.controllers')
MEMORY_KEY = 'memory.max' if V2 else 'memory.limit_in_bytes'
MIB = 1024 * 1024


@pytest.fixture(scope='module')
def lxc_env():
    return read_lab_env(ENV_LXC)


@pytest.fixture
def starter_pod(lxc_env, tmp_path):
    """A running Starter pod (no domain; nothing set up inside: this test reads only its limits)."""
    name = new_pod('realplan')
    dirs = HostDirs(tmp_path)
    assert_ok(run_pod_playbook('provision', lxc_env, dirs, pod=name, plan='CLOUD_POD_STARTER',
                               customer_email=name + '@customer.test', cloudpods_first_boot=False))
    [ct] = [c for c in pve(lxc_env, '/cluster/resources?type=vm').json()['data'] if c.get('name') == name]
    yield dict(pod=name, vmid=ct['vmid'], dirs=dirs)
    remove_pod(lxc_env, name)


def init_process(env, vmid):
    """PID of the container's init on the host and its start time (clock ticks since boot, /proc/<pid>/stat)."""
    pid = subprocess.run(['lxc-info', '-P', env['LAB_LXC_PATH'], '-n', str(vmid), '-pH'], capture_output=True,
                         text=True, check=True).stdout.strip()
    with open('/proc/%s/stat' % pid) as handle:
        fields = handle.read().rsplit(')', 1)[1].split()
    return int(pid), int(fields[19])  # field 22 of stat; fields[0] is field 3


def limits(env, vmid):
    found = {'memory': int(cgroup(env, vmid, MEMORY_KEY)), 'cpus': cgroup(env, vmid, 'cpuset.cpus')}
    if V2:
        found['swap'] = int(cgroup(env, vmid, 'memory.swap.max'))
    return found


def expected_cpus(cores):
    cores = min(cores, len(os.sched_getaffinity(0)))
    return '0' if cores == 1 else '0-%d' % (cores - 1)


def test_upgrade_changes_the_running_containers_limits_without_a_restart(lxc_env, starter_pod):
    vmid, dirs = starter_pod['vmid'], starter_pod['dirs']
    before = limits(lxc_env, vmid)
    assert before['memory'] == 1024 * MIB and before['cpus'] == '0'
    if V2:
        assert before['swap'] == 512 * MIB
    init_before = init_process(lxc_env, vmid)
    # what the pod itself sees of its memory limit, from inside
    inside_key = '/sys/fs/cgroup/memory.max' if V2 else '/sys/fs/cgroup/memory/memory.limit_in_bytes'

    run = assert_ok(run_pod_playbook('change_plan', lxc_env, dirs, pod=starter_pod['pod'], plan='CLOUD_POD_PREMIUM'))

    after = limits(lxc_env, vmid)
    assert after['memory'] == 2048 * MIB and after['cpus'] == expected_cpus(2)
    if V2:
        assert after['swap'] == 1024 * MIB
    assert int(pct(lxc_env, vmid, 'cat', inside_key).stdout.strip()) == 2048 * MIB
    # the same init process, started at the same time: no restart, no reboot
    assert init_process(lxc_env, vmid) == init_before
    config = pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).json()['data']
    assert (config['cores'], config['memory'], config['swap']) == (2, 2048, 1024)
    assert 'size=75G' in config['rootfs'] and 'cloud_pod_premium' in config['tags'].split(';')
    assert run.report['global_custom_stats']['plan'] == 'CLOUD_POD_PREMIUM'

    # a downgrade to Student would shrink the disk (75G > 2G): refused, the limits stay
    run = run_pod_playbook('change_plan', lxc_env, dirs, pod=starter_pod['pod'], plan='CLOUD_POD_STUDENT')
    assert run.rc != 0 and 'plan change refused: the root disk would shrink: pod %s (CT %s) has a 75G root disk' % (
        starter_pod['pod'], vmid) in run.stdout
    assert limits(lxc_env, vmid) == after
    assert pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).json()['data'] == config
    assert init_process(lxc_env, vmid) == init_before

    # the same plan again changes nothing
    assert changed_count(assert_ok(run_pod_playbook('change_plan', lxc_env, dirs, pod=starter_pod['pod'],
                                                    plan='CLOUD_POD_PREMIUM'))) == 0

    # a downgrade that keeps the disk (a plan of a site's own catalogue, through -e) lowers the limits live too
    with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')) as handle:
        plans = yaml.safe_load(handle)['cloudpods_plans']
    plans['CLOUD_POD_SMALL'] = dict(plans['CLOUD_POD_PREMIUM'], name='Small', vcpu=1, memory_mb=768, swap_mb=256)
    assert_ok(run_pod_playbook('change_plan', lxc_env, dirs, pod=starter_pod['pod'], plan='CLOUD_POD_SMALL',
                               cloudpods_plans=plans))
    lowered = limits(lxc_env, vmid)
    assert lowered['memory'] == 768 * MIB and lowered['cpus'] == '0'
    if V2:
        assert lowered['swap'] == 256 * MIB
    assert init_process(lxc_env, vmid) == init_before
