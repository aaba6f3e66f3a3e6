# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Placement of new pods on a cluster of three simulated nodes (pod_placement, pod_container's target_node and
placement, provision.yml): 30 orders land where the policy says, pinned and per-plan groups, no room is a clear
failure with nothing cloned, an offline node is never chosen, two orders racing for the last space, and a repair
of a pod on pve3.

A private simulator of three nodes (the tests reset it, take nodes offline and hold clone tasks). Its nodes have
64 GiB and a 2 TiB local-lvm each: the tests make them small with the overcommit ratios instead of filling them.
Copies of the template live on pve2 and pve3 (on the shared storage, cloned there with target) as
build_template makes them; PROXMOX_CLOUDPOD_TEMPLATE_COPIES names them.
"""

import os
import sys
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, '.build', 'collections')):
    if path not in sys.path:
        sys.path.insert(0, path)

from playbooks import PrivateLab, ensure_collection_link, run_playbook, start_playbook  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from podplays import HostDirs, assert_ok, new_pod, run_pod_playbook, task  # noqa: E402

ensure_collection_link()
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings  # noqa: E402

pytestmark = pytest.mark.own_lab

NODES = ('pve', 'pve2', 'pve3')
# Two copies on pve2: two clones there at once (the race) each take one (PVE locks a template for a whole clone).
COPIES = {'pve': (9000,), 'pve2': (9002, 9012), 'pve3': (9003,)}
NODE_MIB = 64 * 1024
LVM_GIB = 2048
PLANS = {'CLOUD_POD_STUDENT': (1024, 2), 'CLOUD_POD_STARTER': (1024, 30), 'CLOUD_POD_PREMIUM': (2048, 75)}


@pytest.fixture(scope='module')
def cluster():
    with PrivateLab(nodes=3) as env:
        env = dict(env, PROXMOX_CLOUDPOD_TEMPLATE_COPIES='9002,9012,9003')
        yield Cluster(env, LabControl.from_env(env))


@pytest.fixture
def lab(cluster):
    cluster.control.reset()
    cluster.control.config(default_task_duration=0.05, task_jitter=0)
    cluster.make_copies()
    cluster.control.clear_requests()
    yield cluster
    cluster.control.clear_faults()
    for name in NODES[1:]:
        cluster.control._call('POST', '/nodes/%s' % name, {'status': 'online'})


class Cluster(object):

    def __init__(self, env, control):
        self.env = env
        self.control = control
        settings = ConnectionSettings(env['PROXMOX_API_URL'], env['PROXMOX_API_TOKEN_ID'],
                                      env['PROXMOX_API_TOKEN_SECRET'], ca_path=env['PROXMOX_CA_BUNDLE'])
        self.client = ProxmoxClient(settings, retry_timeout=30)

    def make_copies(self):
        """As build_template's copies play: a full clone to the shared storage on the node, made a template."""
        for node, vmid in ((n, v) for n, copies in COPIES.items() for v in copies if v != 9000):
            self.client.clone_container('pve', 9000, 60, newid=vmid, hostname='cloudpod-template', full=True,
                                        storage='shared-nfs', target=node)
            self.client.run_task('POST', 'nodes/%s/lxc/%d/template' % (node, vmid), 60)

    def ct(self, node, vmid, memory_mb, disk_gb=2):
        """A container put on ``node`` by hand (an operator's, or an earlier pod)."""
        source = COPIES[node][0]
        self.client.clone_container(node, source, 60, newid=vmid, hostname='other-%d' % vmid, full=True,
                                    storage='local-lvm')
        self.client.put('nodes/%s/lxc/%d/config' % (node, vmid), memory=memory_mb)

    def where(self):
        """Host name -> node of every container that is not a template."""
        state = self.control.state()['containers']
        return dict((ct['config'].get('hostname'), ct['node']) for ct in state.values()
                    if not ct['config'].get('template'))

    def clones(self):
        return [r for r in self.control.requests() if r['method'] == 'POST' and r['path'].endswith('/clone')]


def order_tasks(pod, plan, placement=None, **place):
    memory, disk = PLANS[plan]
    settings = dict(memory_overcommit=0.25, disk_overcommit=4.0)
    settings.update(placement or {})
    register = 'placed_' + pod.replace('-', '_')
    return [
        {'name': 'place %s' % pod, 'register': register,
         'mpanel.cloudpods.pod_placement': dict(dict(hostname=pod, memory_mb=memory, disk_gb=disk, **place),
                                                **settings)},
        {'name': 'clone %s' % pod,
         'mpanel.cloudpods.pod_container': dict(hostname=pod, state='present', memory=memory, disk=disk, timeout=60,
                                                target_node='{{ %s.node | default(omit, true) }}' % register,
                                                placement=dict(settings, **place))},
    ]


def expected_most_free(orders, limit_mib, disk_limit_gib):
    """The policy worked out by hand: most free memory, then most free disk, then the name."""
    free = dict((node, [limit_mib, disk_limit_gib]) for node in NODES)
    chosen = []
    for plan in orders:
        memory, disk = PLANS[plan]
        fits = [n for n in NODES if free[n][0] >= memory and free[n][1] >= disk]
        node = sorted(fits, key=lambda n: (-free[n][0], -free[n][1], n))[0]
        free[node][0] -= memory
        free[node][1] -= disk
        chosen.append(node)
    return chosen, free


def test_thirty_orders_land_where_most_free_says_and_spread_the_memory(lab):
    plans = list(PLANS)
    orders = [plans[i % 3] for i in range(30)]
    pods = ['spread-%02d' % i for i in range(30)]
    tasks = []
    for pod, plan in zip(pods, orders):
        tasks += order_tasks(pod, plan)
    run = run_playbook(tasks, env=lab.env, timeout=900)
    assert run.rc == 0, run.stdout[-4000:]
    expected, free = expected_most_free(orders, NODE_MIB // 4, LVM_GIB * 4)
    placed = [r['node'] for r in run.results[0::2]]
    landed = [r['node'] for r in run.results[1::2]]
    assert placed == expected
    assert landed == expected
    where = lab.where()
    assert [where[pod] for pod in pods] == expected  # the simulator has each CT on that node
    # Each pod cloned once, from the copy on its node (no clone had to give way).
    assert [r['placement_attempts'] for r in run.results[1::2]] == [1] * 30
    assert all(r['cloned_from'] in COPIES[n] for r, n in zip(run.results[1::2], expected))
    spread = max(f[0] for f in free.values()) - min(f[0] for f in free.values())
    assert spread <= 2048  # at most one Premium apart


def test_pinned_and_a_plans_group(lab):
    tasks = []
    for i in range(3):
        tasks += order_tasks('pinned-%d' % i, 'CLOUD_POD_STARTER', policy='pinned', node_name='pve3')
    for i in range(4):
        tasks += order_tasks('student-%d' % i, 'CLOUD_POD_STUDENT', group=['pve', 'pve2'])
    run = run_playbook(tasks, env=lab.env, timeout=600)
    assert run.rc == 0, run.stdout[-4000:]
    where = lab.where()
    assert [where['pinned-%d' % i] for i in range(3)] == ['pve3'] * 3
    # The group leaves pve3 out, although it has the most free memory after the first pinned pod... of the
    # two others the most free one each time: pve, pve2, pve, pve2.
    assert [where['student-%d' % i] for i in range(4)] == ['pve', 'pve2', 'pve', 'pve2']
    assert 'pinned' in run.results[0]['reason']


def test_no_room_fails_the_order_at_once_naming_what_is_short_and_clones_nothing(lab, tmp_path):
    lab.ct('pve2', 150, 512)
    lab.control.clear_requests()
    dirs = HostDirs(tmp_path)
    pod = new_pod('full')
    run = run_pod_playbook('provision', lab.env, dirs, pod=pod, plan='CLOUD_POD_PREMIUM',
                           customer_email='jane@example.org', cloudpods_memory_overcommit=0.02)
    assert run.rc != 0
    failure = task(run, 'Stop when no node has room for the pod (nothing was created)')
    assert failure['failed']
    # 64 GiB x 0.02 = 1310 MiB per node; pve2 has 512 MiB of it taken.
    assert ('no node has 2 GiB of memory free (the most: pve: 1.3 GiB of memory and 2048 GiB of disk free)'
            in failure['msg']), failure['msg']
    assert [p['play']['name'] for p in run.report['plays']][-1] == 'Check the order'  # runner_api: not retried
    assert pod not in lab.where()
    assert lab.clones() == []


def test_an_offline_node_is_never_chosen_and_its_guests_count_for_it_only(lab):
    lab.ct('pve3', 160, 4096)
    lab.ct('pve', 161, 8192)
    lab.control._call('POST', '/nodes/pve2', {'status': 'offline', 'reason': 'No route to host'})
    lab.control.clear_requests()
    run = run_playbook(order_tasks('while-off', 'CLOUD_POD_STARTER')
                       + [{'name': 'pinned to the offline node', 'mpanel.cloudpods.pod_placement':
                           dict(memory_mb=1024, disk_gb=30, policy='pinned', node_name='pve2')}],
                       env=lab.env)
    assert run.rc == 0, run.stdout[-4000:]
    placed, cloned, pinned = run.results
    figures = dict((f['node'], f) for f in placed['nodes'])
    assert placed['node'] == 'pve3' and cloned['node'] == 'pve3'  # pve2 (offline, empty) had the most room
    assert figures['pve2']['status'] == 'offline' and not figures['pve2']['fits']
    assert figures['pve']['memory_committed_mb'] == 8192 and figures['pve3']['memory_committed_mb'] == 4096
    assert pinned['node'] is None and pinned['reason'].startswith('pinned node pve2 is offline')
    assert not [r for r in lab.control.requests() if r['path'].startswith('/nodes/pve2/')]


def test_two_orders_racing_for_the_last_space_do_not_both_land_there(lab):
    # 64 GiB x 0.05 = 3276 MiB per node; pve2 keeps 1600 MiB: room for one 1 GiB pod, pve and pve3 for none.
    lab.ct('pve', 170, 3000)
    lab.ct('pve2', 171, 1676)
    lab.ct('pve3', 172, 2800)
    settings = dict(memory_overcommit=0.05, disk_overcommit=4.0)
    lab.control.hold('vzclone')  # the first clone (of order A) stays running until released
    first = start_playbook(order_tasks('race-a', 'CLOUD_POD_STUDENT', settings), env=lab.env)
    lab.control.wait_held('vzclone')
    # B is placed while A's clone runs: A's clone counts with the template's 512 MiB, so pve2 still shows room
    # (1088 MiB) and B is told pve2 too. B's clone finishes first and keeps its place (A's is in progress).
    second = run_playbook(order_tasks('race-b', 'CLOUD_POD_STUDENT', settings), env=lab.env)
    lab.control.release('vzclone')
    first = first.wait(timeout=300)
    assert second.rc == 0, second.stdout[-4000:]
    assert first.result(0)['node'] == second.result(0)['node'] == 'pve2'
    assert second.result(1)['node'] == 'pve2' and second.result(1)['placement_attempts'] == 1
    # A, sized to its plan, finds pve2 over its limit, destroys its clone, and no other node has room.
    assert first.rc != 0
    assert first.result(1)['msg'].startswith('no node has 1 GiB of memory free (the most: pve2: 576 MiB'), \
        first.result(1)
    assert 'race-a' not in lab.where() and lab.where()['race-b'] == 'pve2'
    memory = [int(ct['config'].get('memory')) for ct in lab.control.state()['containers'].values()
              if ct['node'] == 'pve2' and not ct['config'].get('template')]
    assert sorted(memory) == [1024, 1676] and sum(memory) <= 3276
    destroyed = [r['path'] for r in lab.control.requests() if r['method'] == 'DELETE']
    assert len(destroyed) == 1 and destroyed[0].startswith('/nodes/pve2/lxc/')


def test_the_loser_of_a_race_lands_on_another_node_with_room(lab):
    lab.ct('pve', 170, 2200)  # pve: 1076 MiB free; pve2: 1600; pve3: 476
    lab.ct('pve2', 171, 1676)
    lab.ct('pve3', 172, 2800)
    settings = dict(memory_overcommit=0.05, disk_overcommit=4.0)
    lab.control.hold('vzclone')
    first = start_playbook(order_tasks('race-c', 'CLOUD_POD_STUDENT', settings), env=lab.env)
    lab.control.wait_held('vzclone')
    second = run_playbook(order_tasks('race-d', 'CLOUD_POD_STUDENT', settings), env=lab.env)
    lab.control.release('vzclone')
    first = first.wait(timeout=300)
    assert second.rc == 0 and first.rc == 0, (first.result(1).get('msg'), second.result(1).get('msg'))
    assert first.result(0)['node'] == second.result(0)['node'] == 'pve2'
    assert lab.where()['race-d'] == 'pve2' and lab.where()['race-c'] == 'pve'
    assert first.result(1)['placement_attempts'] == 2 and first.result(1)['node'] == 'pve'
    assert first.result(1)['cloned_from'] == 9000  # the template on pve, after the copy on pve2


def test_repair_of_a_pod_on_pve3(lab, tmp_path):
    dirs = HostDirs(tmp_path)
    pod = new_pod('far')
    run = assert_ok(run_pod_playbook('provision', lab.env, dirs, pod=pod, plan='CLOUD_POD_STUDENT',
                                     customer_email='jane@example.org', cloudpods_placement_policy='pinned',
                                     cloudpods_placement_node='pve3'))
    assert lab.where()[pod] == 'pve3'
    vmid = [int(v) for v, ct in lab.control.state()['containers'].items() if ct['config'].get('hostname') == pod][0]
    lab.client.run_task('POST', 'nodes/pve3/lxc/%d/status/stop' % vmid, 60)
    lab.client.put('nodes/pve3/lxc/%d/config' % vmid, memory=512)  # drifted from its plan
    assert lab.control.state()['containers'][str(vmid)]['status'] == 'stopped'
    lab.control.clear_requests()
    assert_ok(run_pod_playbook('repair', lab.env, dirs, pod=pod))
    ct = lab.control.state()['containers'][str(vmid)]
    assert ct['node'] == 'pve3' and ct['status'] == 'running' and int(ct['config']['memory']) == 1024
    # Every call about the pod went to its node.
    calls = [r['path'] for r in lab.control.requests() if '/lxc/%d/' % vmid in r['path']]
    assert calls and all(path.startswith('/nodes/pve3/') for path in calls), calls


def test_a_node_without_a_copy_clones_from_one_on_shared_storage_with_target_or_fails_naming_the_node(lab):
    pod = {'mpanel.cloudpods.pod_container': dict(hostname='via-shared', state='present', target_node='pve3',
                                                  timeout=60)}
    # The copies named are on pve2, on the shared storage: cloned from there with target=pve3.
    run = run_playbook([pod], env=lab.env, extra_env={'PROXMOX_CLOUDPOD_TEMPLATE_COPIES': '9002'})
    assert run.rc == 0, run.stdout[-3000:]
    assert run.result(0)['node'] == 'pve3' and run.result(0)['cloned_from'] == 9002
    assert run.result(0)['config']['rootfs'].startswith('shared-nfs:')
    clone = [r for r in lab.clones() if r['path'].endswith('/clone')][-1]
    assert clone['path'] == '/nodes/pve2/lxc/9002/clone' and clone['params']['target'] == 'pve3'
    # Only the template on pve's local storage: no way to pve3, and nothing is cloned.
    lab.control.clear_requests()
    pod['mpanel.cloudpods.pod_container'].update(hostname='no-copy', template_copies=[])
    run = run_playbook([pod], env=lab.env)
    assert run.rc != 0
    assert run.result(0)['msg'].startswith('no copy of the template on node pve3: template 9000 and copies none are '
                                           'on pve, on local storage'), run.result(0)['msg']
    assert 'PROXMOX_NODE_NAME=pve3' in run.result(0)['msg']
    assert lab.clones() == []


def test_provision_puts_a_new_pod_on_the_most_free_node_and_a_rerun_leaves_it_there(lab, tmp_path):
    lab.ct('pve', 180, 8192)
    dirs = HostDirs(tmp_path)
    pod = new_pod('most')
    first = assert_ok(run_pod_playbook('provision', lab.env, dirs, pod=pod, plan='CLOUD_POD_STARTER',
                                       customer_email='jane@example.org'))
    placed = task(first, 'Choose the node for the pod (README "Placement across a cluster")')
    assert placed['node'] == 'pve2' and not placed['exists']  # pve2 and pve3 tie: the name
    assert lab.where()[pod] == 'pve2'
    lab.ct('pve3', 181, 512)
    lab.ct('pve2', 182, 16384)  # pve2 is now the fullest node: the pod stays on it all the same
    again = assert_ok(run_pod_playbook('provision', lab.env, dirs, pod=pod, plan='CLOUD_POD_STARTER',
                                       customer_email='jane@example.org'))
    placed = task(again, 'Choose the node for the pod (README "Placement across a cluster")')
    assert placed['exists'] and placed['node'] == 'pve2' and 'stays there' in placed['reason']
    assert lab.where()[pod] == 'pve2'
    assert len([ct for ct in lab.control.state()['containers'].values() if ct['config'].get('hostname') == pod]) == 1
