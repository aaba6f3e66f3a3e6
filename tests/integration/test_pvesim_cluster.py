# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pvesim as a cluster of several nodes (config ``nodes``, ``shared_storages``), as PVE 8 shows one:
guests and their usage per node, clones to another node and their refusals, VMIDs unique across
the cluster, an offline node (pveproxy's 595, stale then expired resources), quorum loss, and the
guests' traffic counters.

Every test runs its own memory-backed simulator in this process (test_pvesim_create's ``sim``).
"""

import time

import pytest
import requests

from test_pvesim_create import Client, expect_error, sim  # noqa: F401  pylint: disable=unused-import
from pvesim.backend import MemoryBackend  # tests/lab is on sys.path (test_pvesim_create)
from pvesim.config import SimConfig

TEMPLATE = 9000
ROOT = ('root@pam!lab', 'root-secret')
KEY = 'cluster-test-key'
NODES = [{'name': 'pve'}, {'name': 'pve2', 'maxmem': 32 * 1024 ** 3, 'maxcpu': 8}, {'name': 'pve3'}]
SHARED = [{'storage': 'shared-nfs', 'type': 'nfs', 'content': 'rootdir,images,backup'},
          {'storage': 'nfs-two', 'content': 'rootdir', 'nodes': ['pve', 'pve2']}]
MIB = 1024 * 1024


class Lab(object):
    """A three-node simulator, a root client and its control API."""

    def __init__(self, start):
        self.sim = start(nodes=NODES, shared_storages=SHARED, control_key=KEY)
        self.api = Client(self.sim, *ROOT)

    def control(self, method, path, body=None):
        response = requests.request(method, self.sim.base.replace('/api2/json', '') + path, json=body,
                                    headers={'X-Lab-Key': KEY}, verify=self.sim.ca, timeout=10)
        return response

    def lab(self, method, path, body=None):
        response = self.control(method, path, body)
        assert response.status_code == 200, (response.status_code, response.reason, response.text)
        return response.json()['data']

    def wait(self, node, upid):
        assert upid.startswith('UPID:%s:' % node), upid
        status = None
        for _attempt in range(1500):
            status = self.api.get('/nodes/%s/tasks/%s/status' % (node, upid))
            if status['status'] == 'stopped':
                return status
            time.sleep(0.02)
        raise AssertionError('task %s still running: %s' % (upid, status))

    def ok(self, node, upid):
        status = self.wait(node, upid)
        assert status['exitstatus'] == 'OK', status
        return status

    def clone(self, newid, source=TEMPLATE, node='pve', **params):
        params.setdefault('hostname', 'pod-%d' % newid)
        return self.api.call('POST', '/nodes/%s/lxc/%d/clone' % (node, source), newid=newid, **params)

    def cloned(self, newid, source=TEMPLATE, node='pve', **params):
        response = self.clone(newid, source, node, **params)
        assert response.status_code == 200, (response.status_code, response.reason)
        self.ok(node, response.json()['data'])

    def power(self, node, vmid, action):
        self.ok(node, self.api.data('POST', '/nodes/%s/lxc/%d/status/%s' % (node, vmid, action)))

    def resource(self, kind, ident):
        found = [item for item in self.api.get('/cluster/resources', type=kind) if item['id'] == ident]
        assert len(found) == 1, (ident, found)
        return found[0]

    def status(self, node, vmid):
        return self.api.get('/nodes/%s/lxc/%d/status/current' % (node, vmid))


@pytest.fixture
def lab(sim):  # noqa: F811  pylint: disable=redefined-outer-name
    return Lab(sim)


def test_nodes_listing_and_cluster_status(lab):
    nodes = lab.api.get('/nodes')
    assert [(item['node'], item['status'], item['maxmem'], item['maxcpu']) for item in nodes] == [
        ('pve', 'online', 64 * 1024 ** 3, 16), ('pve2', 'online', 32 * 1024 ** 3, 8),
        ('pve3', 'online', 64 * 1024 ** 3, 16)]
    status = lab.api.get('/cluster/status')
    assert status[0]['type'] == 'cluster' and status[0]['nodes'] == 3 and status[0]['quorate'] == 1
    assert [(item['name'], item['local'], item['online']) for item in status[1:]] == [
        ('pve', 1, 1), ('pve2', 0, 1), ('pve3', 0, 1)]
    # local storages on each node, a shared one where it is enabled
    storages = {item['id']: item for item in lab.api.get('/cluster/resources', type='storage')}
    assert sorted(storages) == sorted(
        ['storage/%s/%s' % (node, sid) for node in ('pve', 'pve2', 'pve3')
         for sid in ('local', 'local-lvm', 'shared-nfs')] + ['storage/pve/nfs-two', 'storage/pve2/nfs-two'])
    assert storages['storage/pve2/shared-nfs']['shared'] == 1
    assert storages['storage/pve2/local-lvm']['shared'] == 0
    assert {item['storage']: item.get('shared', 0) for item in lab.api.get('/storage')} == {
        'local': 0, 'local-lvm': 0, 'shared-nfs': 1, 'nfs-two': 1}
    assert lab.api.get('/storage/nfs-two')['nodes'] == 'pve,pve2'
    # pve-storage's storage_info: a storage not enabled on the node is listed, enabled 0 and empty ...
    listed = {item['storage']: item for item in lab.api.get('/nodes/pve3/storage')}
    assert sorted(listed) == ['local', 'local-lvm', 'nfs-two', 'shared-nfs']
    assert (listed['nfs-two']['enabled'], listed['nfs-two']['active'], listed['nfs-two']['total']) == (0, 0, 0)
    assert listed['shared-nfs']['enabled'] == 1 and listed['shared-nfs']['total'] > 0
    assert lab.api.get('/nodes/pve3/storage/nfs-two/status')['enabled'] == 0
    # ... but not for a content type, and not as a target's storage (shared, enabled on both nodes)
    assert [item['storage'] for item in lab.api.get('/nodes/pve3/storage', content='rootdir')] == [
        'local-lvm', 'shared-nfs']
    assert [item['storage'] for item in lab.api.get('/nodes/pve/storage', target='pve3')] == ['shared-nfs']
    assert [item['storage'] for item in lab.api.get('/nodes/pve/storage', target='pve2')] == [
        'shared-nfs', 'nfs-two']
    for path, params in (('/nodes/pve3/storage/nosuch/status', {}), ('/nodes/pve3/storage', {'storage': 'nosuch'})):
        response = lab.api.call('GET', path, **params)
        assert response.status_code == 400 and response.json()['errors'] == {'storage': 'No such storage.'}


def test_guests_and_usage_follow_their_node(lab):
    lab.cloned(101)  # linked, stays on pve
    lab.cloned(102, full=1, storage='shared-nfs', target='pve2')
    assert [ct['vmid'] for ct in lab.api.get('/nodes/pve2/lxc')] == [102]
    assert sorted(ct['vmid'] for ct in lab.api.get('/nodes/pve/lxc')) == [101, TEMPLATE]
    assert lab.api.get('/nodes/pve3/lxc') == []
    assert lab.resource('vm', 'lxc/102')['node'] == 'pve2'
    assert lab.resource('vm', 'lxc/101')['node'] == 'pve'
    assert lab.api.get('/nodes/pve2/lxc/102/config')['rootfs'].startswith('shared-nfs:102/vm-102-disk-0.raw')

    before = {node: lab.resource('node', 'node/' + node) for node in ('pve', 'pve2')}
    lab.power('pve2', 102, 'start')
    after = {node: lab.resource('node', 'node/' + node) for node in ('pve', 'pve2')}
    ct_mem = lab.status('pve2', 102)['mem']
    assert ct_mem > 0
    assert after['pve2']['mem'] == before['pve2']['mem'] + ct_mem
    assert after['pve2']['cpu'] > before['pve2']['cpu']
    assert after['pve']['mem'] == before['pve']['mem'] and after['pve']['cpu'] == before['pve']['cpu']
    status = lab.api.get('/nodes/pve2/status')
    assert status['memory']['used'] == after['pve2']['mem'] and status['cpuinfo']['cpus'] == 8

    # volumes: 101 on pve's local-lvm only, 102 on the shared storage, seen from every node
    def volumes(node, storage):
        return [item['volid'] for item in lab.api.get('/nodes/%s/storage/%s/content' % (node, storage))
                if item['content'] == 'rootdir']
    assert 'local-lvm:base-9000-disk-0/vm-101-disk-0' in volumes('pve', 'local-lvm')
    assert volumes('pve2', 'local-lvm') == []
    assert volumes('pve3', 'shared-nfs') == volumes('pve', 'shared-nfs') == ['shared-nfs:102/vm-102-disk-0.raw']
    used = {item['id']: item['disk'] for item in lab.api.get('/cluster/resources', type='storage')}
    assert used['storage/pve2/local-lvm'] == 0 < used['storage/pve/local-lvm']
    assert used['storage/pve/shared-nfs'] == used['storage/pve3/shared-nfs'] == 2 * 1024 ** 3
    assert lab.lab('GET', '/_lab/health')['containers'] == {'101': 'pve', '102': 'pve2', '9000': 'pve'}
    assert lab.lab('GET', '/_lab/state')['containers']['102']['node'] == 'pve2'


def test_a_ct_is_only_found_on_its_node(lab):
    lab.cloned(102, full=1, storage='shared-nfs', target='pve2')
    for path in ('/status/current', '/config'):
        expect_error(lab.api.call('GET', '/nodes/pve/lxc/102' + path), 500,
                     "Configuration file 'nodes/pve/lxc/102.conf' does not exist")
    expect_error(lab.api.call('PUT', '/nodes/pve3/lxc/102/config', memory=1024), 500,
                 "Configuration file 'nodes/pve3/lxc/102.conf' does not exist")
    # check_running is local: pve does not see it run; a start there fails in its task
    upid = lab.api.data('POST', '/nodes/pve/lxc/102/status/start')
    status = lab.wait('pve', upid)
    assert status['exitstatus'] == "Configuration file 'nodes/pve/lxc/102.conf' does not exist"
    assert lab.status('pve2', 102)['status'] == 'stopped'
    lab.power('pve2', 102, 'start')
    expect_error(lab.api.call('POST', '/nodes/pve/lxc/102/status/stop'), 500, 'CT 102 not running')
    # a task lives on its node
    upid = lab.api.data('POST', '/nodes/pve2/lxc/102/status/stop')
    response = lab.api.call('GET', '/nodes/pve/tasks/%s/status' % upid)
    assert response.status_code == 500 and 'No such file or directory' in response.reason
    lab.ok('pve2', upid)
    assert upid in [task['upid'] for task in lab.api.get('/nodes/pve2/tasks')]
    assert upid not in [task['upid'] for task in lab.api.get('/nodes/pve/tasks')]
    # vzdump on a node skips the guests of others: nothing local, no task (API2/VZDump.pm)
    assert lab.api.data('POST', '/nodes/pve/vzdump', vmid=102, storage='local') == 'OK'


def test_vmids_are_unique_across_nodes(lab):
    lab.cloned(102, full=1, storage='shared-nfs', target='pve2')
    expect_error(lab.clone(102, node='pve'), 500, "CT 102 already exists on node 'pve2'")
    expect_error(lab.api.call('POST', '/nodes/pve3/lxc', vmid=102, ostemplate='local:vztmpl/'
                              'ubuntu-22.04-standard_22.04-1_amd64.tar.zst'),
                 500, "CT 102 already exists on node 'pve2'")
    response = lab.api.call('GET', '/cluster/nextid', vmid=102)
    assert response.status_code == 400 and response.json()['errors'] == {'vmid': 'VM 102 already exists'}
    lab.cloned(100)
    lab.cloned(101)
    assert lab.api.get('/cluster/nextid') == '103'
    upid = lab.api.data('POST', '/nodes/pve3/lxc', vmid=103, storage='local-lvm',
                        ostemplate='local:vztmpl/ubuntu-22.04-standard_22.04-1_amd64.tar.zst')
    lab.ok('pve3', upid)
    assert lab.resource('vm', 'lxc/103')['node'] == 'pve3'
    assert lab.api.get('/nodes/pve3/lxc/103/config')['rootfs'].startswith('local-lvm:vm-103-disk-0')


def _clone_error(lab, newid, reason, node='pve', source=TEMPLATE, **params):
    expect_error(lab.clone(newid, source, node, **params), 500, reason)
    assert str(newid) not in lab.lab('GET', '/_lab/health')['containers']
    assert 'lock' not in lab.api.get('/nodes/%s/lxc/%d/config' % (node, source))


def test_clone_to_a_target_follows_pves_rules(lab):
    _clone_error(lab, 110, "no such cluster node 'pve9'", target='pve9')
    _clone_error(lab, 110, "storage 'nosuch' does not exist", storage='nosuch', full=1)
    _clone_error(lab, 110, "can't clone to non-shared storage 'local-lvm'", target='pve2',
                 storage='local-lvm', full=1)
    _clone_error(lab, 110, "storage 'nfs-two' is not available on node 'pve3'", target='pve3',
                 storage='nfs-two', full=1)
    _clone_error(lab, 110, "can't clone CT to node 'pve2' (CT uses local storage)", target='pve2')
    _clone_error(lab, 110, "can't clone CT to node 'pve2' (CT uses local storage)", target='pve2', full=1)
    _clone_error(lab, 110, "parameter 'storage' not allowed for linked clones", storage='local-lvm', full=0)
    # the local node (or localhost) as target: ignored, the clone stays here
    lab.cloned(111, target='pve')
    lab.cloned(112, target='localhost')
    assert [lab.resource('vm', 'lxc/%d' % vmid)['node'] for vmid in (111, 112)] == ['pve', 'pve']
    # a CT on shared storage may go to any node; a running one needs a snapshot for a full clone
    lab.cloned(120, full=1, storage='shared-nfs', target='pve3')
    lab.cloned(121, source=120, node='pve3', target='pve2')
    assert lab.resource('vm', 'lxc/121')['node'] == 'pve2'
    lab.power('pve3', 120, 'start')
    _clone_error(lab, 122, 'Cannot do full clones on a running container without snapshots',
                 node='pve3', source=120, target='pve')


def test_an_offline_node_looks_as_pve_shows_it(lab):
    lab.cloned(102, full=1, storage='shared-nfs', target='pve2')
    lab.power('pve2', 102, 'start')
    before = lab.resource('node', 'node/pve2')
    assert lab.lab('POST', '/_lab/nodes/pve2', {'status': 'offline'})['status'] == 'offline'

    response = lab.api.call('GET', '/nodes/pve2/lxc')
    assert (response.status_code, response.reason, response.content) == (595, 'No route to host', b'')
    assert lab.api.call('POST', '/nodes/pve2/lxc/102/status/stop').status_code == 595
    node = lab.resource('node', 'node/pve2')
    assert node['status'] == 'offline'
    assert node['maxmem'] == before['maxmem'] and node['maxcpu'] == before['maxcpu']
    assert not {'mem', 'cpu', 'disk', 'uptime'} & set(node)
    assert [item['status'] for item in lab.api.get('/nodes') if item['node'] == 'pve2'] == ['offline']
    assert [item['online'] for item in lab.api.get('/cluster/status') if item.get('name') == 'pve2'] == [0]
    # its guests keep their last report until pmxcfs drops it (5 minutes) ...
    guest = lab.resource('vm', 'lxc/102')
    assert (guest['status'], guest['node'], guest['name']) == ('running', 'pve2', 'pod-102')
    # ... then only what the vmlist knows, 'unknown'
    lab.lab('POST', '/_lab/nodes/pve2', {'status': 'offline', 'reason': 'Connection refused', 'offline_for': 301})
    assert lab.api.call('GET', '/nodes/pve2/status').reason == 'Connection refused'
    assert lab.resource('vm', 'lxc/102') == {'id': 'lxc/102', 'vmid': 102, 'node': 'pve2', 'type': 'lxc',
                                             'status': 'unknown'}
    assert lab.resource('node', 'node/pve2') == {'id': 'node/pve2', 'type': 'node', 'node': 'pve2',
                                                 'status': 'offline'}
    assert lab.resource('storage', 'storage/pve2/local-lvm')['status'] == 'unknown'
    # the other nodes still answer, the vmid stays taken
    assert lab.api.get('/nodes/pve3/lxc') == []
    expect_error(lab.clone(102), 500, "CT 102 already exists on node 'pve2'")

    lab.lab('POST', '/_lab/nodes/pve2', {'status': 'online'})
    assert lab.status('pve2', 102)['status'] == 'running'
    assert lab.resource('node', 'node/pve2')['mem'] == before['mem']
    for bad in ({'status': 'down'}, {'status': 'offline', 'reason': 'gone'}, {'state': 'offline'}):
        assert lab.control('POST', '/_lab/nodes/pve2', bad).status_code == 400
    assert lab.control('POST', '/_lab/nodes/pve', {'status': 'offline'}).status_code == 400
    assert lab.control('POST', '/_lab/nodes/pve9', {'status': 'offline'}).status_code == 400
    # a reset brings every node back
    lab.lab('POST', '/_lab/nodes/pve3', {'status': 'offline'})
    lab.lab('POST', '/_lab/quorum', {'quorate': False})
    lab.lab('POST', '/_lab/reset')
    health = lab.lab('GET', '/_lab/health')
    assert health['nodes'] == {'pve': 'online', 'pve2': 'online', 'pve3': 'online'} and health['quorate'] is True


def test_without_quorum_writes_fail(lab):
    lab.cloned(101)
    lab.lab('POST', '/_lab/quorum', {'quorate': False})
    assert lab.api.get('/cluster/status')[0]['quorate'] == 0
    expect_error(lab.clone(102), 500, 'cluster not ready - no quorum?')
    expect_error(lab.api.call('POST', '/nodes/pve/lxc/101/status/start'), 500, 'cluster not ready - no quorum?')
    expect_error(lab.api.call('POST', '/nodes/pve/lxc', vmid=103, ostemplate='local:vztmpl/x.tar.zst'),
                 500, 'cluster not ready - no quorum?')
    assert lab.status('pve', 101)['status'] == 'stopped'
    lab.lab('POST', '/_lab/quorum', {'quorate': True})
    lab.power('pve', 101, 'start')
    # corosync's majority: two of three nodes down is no quorum, one of three still is
    lab.lab('POST', '/_lab/nodes/pve2', {'status': 'offline'})
    assert lab.api.get('/cluster/status')[0]['quorate'] == 1
    lab.lab('POST', '/_lab/nodes/pve3', {'status': 'offline'})
    assert lab.lab('GET', '/_lab/health')['quorate'] is False
    expect_error(lab.clone(102), 500, 'cluster not ready - no quorum?')
    lab.lab('POST', '/_lab/nodes/pve3', {'status': 'online'})
    lab.cloned(102)


def test_traffic_counters_count_since_the_start(lab):
    lab.cloned(101)
    expect_error_400 = lab.control('POST', '/_lab/containers/101/traffic', {'netin': 5})
    assert expect_error_400.status_code == 400 and 'not running' in expect_error_400.reason
    lab.power('pve', 101, 'start')
    assert (lab.status('pve', 101)['netin'], lab.status('pve', 101)['netout']) == (0, 0)

    assert lab.lab('POST', '/_lab/containers/101/traffic', {'netin': 1500, 'netout': 7 * MIB}) == {
        'netin': 1500, 'netout': 7 * MIB}
    lab.lab('POST', '/_lab/containers/101/traffic', {'netout': 10})
    status = lab.status('pve', 101)
    assert (status['netin'], status['netout']) == (1500, 7 * MIB + 10)
    resource = lab.resource('vm', 'lxc/101')
    assert (resource['netin'], resource['netout']) == (1500, 7 * MIB + 10)
    for bad in ({'netin': -1}, {'netin': 'many'}, {'netin': 2 ** 64}, {'netup': 1}, {}):
        assert lab.control('POST', '/_lab/containers/101/traffic', bad).status_code == 400
    assert lab.status('pve', 101)['netout'] == 7 * MIB + 10

    # absolute values: a counter about to wrap, then wrapping
    lab.lab('PUT', '/_lab/containers/101', {'netout': 2 ** 64 - 5})
    lab.lab('POST', '/_lab/containers/101/traffic', {'netout': 10})
    assert lab.status('pve', 101)['netout'] == 5
    assert 'netout' not in lab.api.get('/nodes/pve/lxc/101/config')

    lab.power('pve', 101, 'reboot')
    assert (lab.status('pve', 101)['netin'], lab.status('pve', 101)['netout']) == (0, 0)
    lab.lab('POST', '/_lab/containers/101/traffic', {'netin': 42})
    lab.power('pve', 101, 'stop')
    assert (lab.status('pve', 101)['netin'], lab.resource('vm', 'lxc/101')['netin']) == (0, 0)
    lab.power('pve', 101, 'start')
    assert lab.status('pve', 101)['netin'] == 0


def test_nodes_setting_is_checked():
    for nodes in ([{'name': 'pve'}, {'name': 'pve'}], [{'name': 'bad_name'}], [{'name': 'localhost'}],
                  [{'name': 'pve', 'maxmem': 0}], [{'name': 'pve', 'cpus': 4}], ['pve']):
        with pytest.raises(ValueError):
            SimConfig.from_dict({'nodes': nodes})
    config = SimConfig.from_dict({'node': 'alpha', 'nodes': None})
    assert config.nodes == [{'name': 'alpha', 'maxcpu': 16, 'maxmem': 64 * 1024 ** 3, 'maxdisk': 100 * 1024 ** 3}]
    assert SimConfig.from_dict({'nodes': [{'name': 'n1'}, {'name': 'n2'}]}).node == 'n1'


def test_lab_launcher_node_count(tmp_path, monkeypatch):
    """``lab up --nodes N`` > ``CLOUDPODS_LAB_NODES`` > what ``up`` remembered > one node."""
    import lab as lab_module  # pylint: disable=import-outside-toplevel  # tests/lab/lab.py
    monkeypatch.delenv('CLOUDPODS_LAB_NODES', raising=False)
    assert lab_module.Lab(tmp_path).cluster_config('pve') == {}
    three = lab_module.Lab(tmp_path, nodes=3)
    assert three.cluster_config('pve') == {
        'nodes': [{'name': 'pve'}, {'name': 'pve2'}, {'name': 'pve3'}],
        'shared_storages': [{'storage': 'shared-nfs', 'type': 'nfs', 'content': 'rootdir,images,backup'}]}
    (tmp_path / 'nodes').write_text('3\n')  # what up writes
    assert lab_module.Lab(tmp_path).nodes == 3
    monkeypatch.setenv('CLOUDPODS_LAB_NODES', '2')
    assert lab_module.Lab(tmp_path).nodes == 2
    assert lab_module.Lab(tmp_path, nodes=1).nodes == 1
    for bad in ('0', 'three'):
        monkeypatch.setenv('CLOUDPODS_LAB_NODES', bad)
        with pytest.raises(lab_module.LabError):
            lab_module.Lab(tmp_path)
    # the simulator accepts what the launcher writes
    assert SimConfig.from_dict(dict(three.cluster_config('pve'), storage_root=str(tmp_path))).node == 'pve'


class PlacingBackend(MemoryBackend):
    """Remembers the nodes the simulator saves, and has CTs of its own (as the lxc backend after a restart)."""

    def __init__(self, kept):
        super(PlacingBackend, self).__init__(dhcp_delay=0.1)
        self.kept = kept
        self.nodes = {}

    def save_node(self, vmid, node):
        self.nodes[vmid] = node

    def existing(self):
        return [dict(item) for item in self.kept]


def test_placement_is_saved_and_found_again(sim):  # noqa: F811  pylint: disable=redefined-outer-name
    config = {'hostname': 'kept', 'memory': 512, 'rootfs': 'shared-nfs:150/vm-150-disk-0.raw,size=2G'}
    backend = PlacingBackend([{'vmid': 150, 'config': config, 'node': 'pve3'},
                              {'vmid': 151, 'config': dict(config, hostname='orphan'), 'node': 'gone'}])
    lab = Lab(lambda **values: sim(backend, **values))
    assert lab.lab('GET', '/_lab/health')['containers'] == {'150': 'pve3', '151': 'pve', '9000': 'pve'}
    assert lab.api.get('/nodes/pve3/lxc/150/config')['hostname'] == 'kept'
    lab.cloned(160, source=150, node='pve3', target='pve2')
    assert backend.nodes[160] == 'pve2'
    lab.api.data('PUT', '/nodes/pve3/lxc/150/config', memory=1024)
    assert backend.nodes[150] == 'pve3'
