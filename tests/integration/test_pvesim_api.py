# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Proxmox VE simulator answers like PVE 8 does: plain HTTPS requests against the lab.

Each test starts from a reset simulator (only template 9000) with short task durations.
"""

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from pvesim.config import CLOUDPODS_PROV_PRIVILEGES  # tests/lab is on sys.path (tests/conftest.py)

TEMPLATE = 9000
UPID_RE = re.compile(r'^UPID:([^:]+):([0-9A-F]{8}):([0-9A-F]{8}):([0-9A-F]{8}):([^:]+):([^:]*):([^:]+):$')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Pve(object):
    """A bare PVE API client: form-encoded bodies, query strings, token header."""

    def __init__(self, env, token_id=None, secret=None):
        self.base = env['PROXMOX_API_URL']
        self.node = env['PROXMOX_NODE_NAME']
        self.session = requests.Session()
        # Per request: requests prefers REQUESTS_CA_BUNDLE over a session-level verify.
        self.verify = env['PROXMOX_CA_BUNDLE']
        token_id = token_id or env['PROXMOX_API_TOKEN_ID']
        secret = secret or env['PROXMOX_API_TOKEN_SECRET']
        self.session.headers['Authorization'] = 'PVEAPIToken=%s=%s' % (token_id, secret)

    def call(self, method, path, **params):
        path = path.replace('{node}', self.node)
        if method in ('POST', 'PUT'):
            return self.session.request(method, self.base + path, data=params, timeout=10,
                                        verify=self.verify)
        return self.session.request(method, self.base + path, params=params, timeout=10,
                                    verify=self.verify)

    def data(self, method, path, **params):
        response = self.call(method, path, **params)
        assert response.status_code == 200, (response.status_code, response.reason, response.text)
        return response.json()['data']

    def get(self, path, **params):
        return self.data('GET', path, **params)

    def task(self, upid):
        return self.get('/nodes/{node}/tasks/%s/status' % upid)

    def wait(self, upid, timeout=30.0, interval=0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.task(upid)
            if status['status'] == 'stopped':
                return status
            time.sleep(interval)
        raise AssertionError('task %s still running after %ss' % (upid, timeout))

    def ok(self, upid):
        status = self.wait(upid)
        assert status['exitstatus'] == 'OK', status
        return status

    def clone(self, newid, **params):
        params.setdefault('hostname', 'pod-%s' % newid)
        return self.data('POST', '/nodes/{node}/lxc/%d/clone' % TEMPLATE, newid=newid, **params)

    def cloned(self, newid, **params):
        self.ok(self.clone(newid, **params))
        return newid

    def running(self, vmid):
        self.ok(self.data('POST', '/nodes/{node}/lxc/%d/status/start' % vmid))
        return vmid

    def config(self, vmid):
        return self.get('/nodes/{node}/lxc/%d/config' % vmid)


def expect_error(response, status, reason):
    assert (response.status_code, response.reason) == (status, reason), response.text
    body = response.json()
    assert body['data'] is None
    assert body['message'] == reason + '\n'
    return body


def expect_login_failure(response, reason):
    """pve-http-server answers a failed login with the status line alone: no body, connection closed."""
    assert (response.status_code, response.reason) == (401, reason), response.text
    assert response.content == b''
    assert 'Content-Type' not in response.headers and 'Content-Length' not in response.headers
    assert response.headers['Connection'] == 'close'


@pytest.fixture
def pve(lab_env, lab_control):
    lab_control.reset()
    lab_control.config(default_task_duration=0.05, task_durations={
        'vzclone': 0.1, 'vzstart': 0.05, 'vzstop': 0.05, 'vzshutdown': 0.05, 'vzreboot': 0.05,
        'vzdestroy': 0.05, 'vzdump': 0.1, 'vzsuspend': 0.05, 'vzresume': 0.05, 'resize': 0.05},
        dhcp_delay=0.3)
    yield Pve(lab_env)
    lab_control.reset()


@pytest.fixture
def root(lab_env, lab_control, pve):
    """A root@pam token (everything allowed, root-only options too)."""
    lab_control.add_token('root@pam!lab', 'root-secret', privs=['*'])
    return Pve(lab_env, 'root@pam!lab', 'root-secret')


# ---------------------------------------------------------------- envelope, auth, errors

def test_every_answer_is_a_data_envelope(pve):
    response = pve.call('GET', '/version')
    assert (response.status_code, response.reason) == (200, 'OK')
    body = response.json()
    assert list(body) == ['data']
    assert body['data']['version'].startswith('8.')


def test_missing_or_garbled_auth_header_is_no_ticket(lab_env, pve):
    bare = requests.get(lab_env['PROXMOX_API_URL'] + '/version', verify=lab_env['PROXMOX_CA_BUNDLE'])
    expect_login_failure(bare, 'No ticket')
    for header in ('Bearer something', 'PVEAPIToken=', 'XPVEAPIToken=mpanel-api@pve!mpanel-token=x'):
        garbled = requests.get(lab_env['PROXMOX_API_URL'] + '/version', verify=lab_env['PROXMOX_CA_BUNDLE'],
                               headers={'Authorization': header})
        expect_login_failure(garbled, 'No ticket')


def test_bad_token_is_401_with_verify_tokens_reason(lab_env, lab_control, pve):
    """PVE 8.2 (the simulator's version): PVE::AccessControl::verify_token's message is the reason."""
    expect_login_failure(Pve(lab_env, secret='not-the-secret').call('GET', '/version'), 'invalid token value!')
    expect_login_failure(Pve(lab_env, token_id='mpanel-api@pve!other', secret='x').call('GET', '/version'),
                         "no such token 'other' for user 'mpanel-api@pve'")
    expect_login_failure(Pve(lab_env, token_id='nobody@pve!nothing', secret='x').call('GET', '/version'),
                         "no such user ('nobody@pve')")
    expect_login_failure(Pve(lab_env, token_id='no-realm!x', secret='x').call('GET', '/version'),
                         "'no-realm!x' is not a valid token ID - not able to split into user and token parts")
    no_secret = requests.get(lab_env['PROXMOX_API_URL'] + '/version', verify=lab_env['PROXMOX_CA_BUNDLE'],
                             headers={'Authorization': 'PVEAPIToken=mpanel-api@pve!mpanel-token'})
    expect_login_failure(no_secret, 'no tokenid specified')
    # the request log keeps the claimed token id, never the secret
    log = lab_control.requests()
    assert [r['token_id'] for r in log if r['reason'] == 'invalid token value!'] == ['mpanel-api@pve!mpanel-token']
    assert 'not-the-secret' not in json.dumps(log)


def test_unknown_path_is_not_implemented(pve):
    """pve-manager's rest_handler sets this message itself: no trailing newline in the body."""
    for method, path in (('GET', '/foo'), ('POST', '/version')):
        response = pve.call(method, path)
        reason = "Method '%s %s' not implemented" % (method, path)
        assert (response.status_code, response.reason) == (501, reason)
        assert response.json() == {'data': None, 'message': reason}


def test_missing_container_names_its_config_file(pve):
    expect_error(pve.call('GET', '/nodes/{node}/lxc/555/config'), 500,
                 "Configuration file 'nodes/pve/lxc/555.conf' does not exist")


def test_booleans_are_only_one_or_zero(pve):
    for value in ('True', 'true', 'yes'):
        body = expect_error(pve.call('PUT', '/nodes/{node}/lxc/9000/config', onboot=value),
                            400, 'Parameter verification failed.')
        assert body['errors'] == {'onboot': "type check ('boolean') failed - got '%s'" % value}


def test_integers_unknown_and_missing_parameters(pve):
    body = expect_error(pve.call('PUT', '/nodes/{node}/lxc/9000/config', cores='two', colour='red'),
                        400, 'Parameter verification failed.')
    assert body['errors'] == {
        'cores': "type check ('integer') failed - got 'two'",
        'colour': 'property is not defined in schema and the schema does not allow additional properties'}
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', hostname='x'),
                        400, 'Parameter verification failed.')
    assert body['errors'] == {'newid': 'property is missing and it is not optional'}


def test_missing_privilege_names_path_and_privilege(lab_env, lab_control, pve):
    pve.cloned(101)
    lab_control.add_token('auditor@pve!ro', 'ro-secret', privs=['VM.Audit', 'Sys.Audit'])
    auditor = Pve(lab_env, 'auditor@pve!ro', 'ro-secret')
    assert auditor.config(101)['hostname'] == 'pod-101'
    expect_error(auditor.call('DELETE', '/nodes/{node}/lxc/101'), 403,
                 'Permission check failed (/vms/101, VM.Allocate)')
    expect_error(auditor.call('POST', '/nodes/{node}/lxc/101/status/start'), 403,
                 'Permission check failed (/vms/101, VM.PowerMgmt)')
    expect_error(auditor.call('PUT', '/nodes/{node}/lxc/101/resize', disk='rootfs', size='+1G'), 403,
                 'Permission check failed (/vms/101, VM.Config.Disk)')
    # clone's rule is VM.Clone AND (VM.Allocate on the new id OR on the pool): PVE names
    # nothing when an OR fails
    lab_control.add_token('cloner@pve!cl', 'c-secret', privs=['VM.Audit', 'VM.Clone'])
    cloner = Pve(lab_env, 'cloner@pve!cl', 'c-secret')
    expect_error(cloner.call('POST', '/nodes/{node}/lxc/9000/clone', newid=102), 403, 'Permission check failed')
    expect_error(auditor.call('POST', '/nodes/{node}/lxc/9000/clone', newid=102), 403,
                 'Permission check failed (/vms/9000, VM.Clone)')


def test_clone_into_an_unknown_pool_is_403(lab_env, lab_control, pve):
    """pve-container src/PVE/API2/LXC.pm clone_vm: the permission rule first (VM.Allocate on the
    new id or the pool), then ``check_pool_exist`` (pve-access-control RPCEnvironment.pm), whose
    ``raise_perm_exc`` is a 403."""
    # the seed token has VM.Allocate on /, so the rule passes and the missing pool answers
    expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', newid=101, pool='nope'), 403,
                 "Permission check failed (pool 'nope' does not exist)")
    assert 'lock' not in pve.config(TEMPLATE)
    expect_error(pve.call('GET', '/nodes/{node}/lxc/101/config'), 500,
                 "Configuration file 'nodes/pve/lxc/101.conf' does not exist")
    # Pool.Allocate is not what the rule asks for: without VM.Allocate the rule fails first
    lab_control.add_token('pools@pve!pa', 'pa-secret', privs=['VM.Audit', 'VM.Clone', 'Pool.Allocate'])
    pooler = Pve(lab_env, 'pools@pve!pa', 'pa-secret')
    expect_error(pooler.call('POST', '/nodes/{node}/lxc/9000/clone', newid=101, pool='nope'), 403,
                 'Permission check failed')


def test_bridges_need_sdn_use(lab_env, lab_control, pve):
    """Stock PVE 8 checks SDN.Use on every NIC's bridge (pve-guest-common check_vnet_access):
    the seed's role alone is refused at the clone; the lab token also has SDN.Use on vmbr0."""
    seed_role = CLOUDPODS_PROV_PRIVILEGES
    lab_control.add_token('seedrole@pve!only', 'seed-secret', privs=seed_role)
    seed_only = Pve(lab_env, 'seedrole@pve!only', 'seed-secret')
    expect_error(seed_only.call('POST', '/nodes/{node}/lxc/9000/clone', newid=101), 403,
                 'Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)')
    assert 'lock' not in pve.config(TEMPLATE)
    assert 101 not in [ct['vmid'] for ct in pve.get('/nodes/{node}/lxc')]
    pve.cloned(101)
    # a VLAN tag is checked on <bridge>/<tag>, trunks on each VLAN; an ACL on the bridge covers them
    expect_error(seed_only.call('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0,tag=10'), 403,
                 'Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)')
    lab_control.add_token('vlan@pve!ten', 'vlan-secret', privs=seed_role,
                          acl={'/sdn/zones/localnetwork/vmbr0/10': ['SDN.Use']})
    vlan_ten = Pve(lab_env, 'vlan@pve!ten', 'vlan-secret')
    expect_error(vlan_ten.call('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0,tag=10'), 403,
                 'Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)')  # the old NIC, untagged
    assert pve.data('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0,tag=10') is None
    assert vlan_ten.data('PUT', '/nodes/{node}/lxc/101/config', cores=2) is None
    expect_error(vlan_ten.call('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0,trunks=10;20-21'),
                 403, 'Permission check failed (/sdn/zones/localnetwork/vmbr0/20, SDN.Use)')
    assert pve.data('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0,trunks=10;20-21') is None
    assert 'trunks=10;20-21' in pve.config(101)['net0']
    expect_error(vlan_ten.call('PUT', '/nodes/{node}/lxc/101/config', delete='net0'), 403,
                 'Permission check failed (/sdn/zones/localnetwork/vmbr0/20, SDN.Use)')


def test_per_key_config_privileges(lab_env, lab_control, pve):
    pve.cloned(101)
    lab_control.add_token('cpu@pve!only', 'cpu-secret', privs=['VM.Audit', 'VM.Config.CPU'])
    cpu_only = Pve(lab_env, 'cpu@pve!only', 'cpu-secret')
    assert cpu_only.data('PUT', '/nodes/{node}/lxc/101/config', cores=2) is None
    expect_error(cpu_only.call('PUT', '/nodes/{node}/lxc/101/config', memory=1024), 403,
                 'Permission check failed (/vms/101, VM.Config.Memory)')
    expect_error(cpu_only.call('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0'), 403,
                 'Permission check failed (/vms/101, VM.Config.Network)')


def test_seed_role_cannot_back_up(pve):
    """VM.Backup is not in the seed's CloudPodsProv role."""
    expect_error(pve.call('POST', '/nodes/{node}/vzdump', vmid=TEMPLATE, storage='local'), 403,
                 'Permission check failed (/vms/9000, VM.Backup)')


# ---------------------------------------------------------------- tasks, nextid, clone

def test_long_operations_return_a_upid(lab_env, pve):
    before = int(time.time())
    upid = pve.clone(101)
    after = time.time()
    match = UPID_RE.match(upid)
    assert match, upid
    node, pid, pstart, starttime, kind, task_id, user = match.groups()
    assert (node, kind, task_id, user) == ('pve', 'vzclone', '9000', lab_env['PROXMOX_API_TOKEN_ID'])
    assert before <= int(starttime, 16) <= after  # the epoch second of the request
    status = pve.task(upid)
    assert status['upid'] == upid and status['type'] == 'vzclone'
    assert (status['user'], status['tokenid']) == ('mpanel-api@pve', 'mpanel-token')
    pve.ok(upid)
    log = pve.call('GET', '/nodes/{node}/tasks/%s/log' % upid).json()
    assert log['data'][-1] == {'n': len(log['data']), 't': 'TASK OK'}
    assert log['total'] == len(log['data'])
    listed = pve.get('/nodes/{node}/tasks', vmid=TEMPLATE)
    assert [task['upid'] for task in listed] == [upid] and listed[0]['status'] == 'OK'


def test_nextid_reserves_nothing(pve):
    first, second = pve.get('/cluster/nextid'), pve.get('/cluster/nextid')
    assert first == second == '100'
    pve.cloned(int(first))
    expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', newid=second, hostname='late'), 500,
                 "CT 100 already exists on node 'pve'")
    assert pve.get('/cluster/nextid') == '101'
    body = expect_error(pve.call('GET', '/cluster/nextid', vmid=100), 400, 'Parameter verification failed.')
    assert body['errors'] == {'vmid': 'VM 100 already exists'}
    assert pve.get('/cluster/nextid', vmid=150) == '150'


def test_clone_locks_source_and_target_while_it_runs(lab_control, pve):
    template_mac = pve.config(TEMPLATE)['net0']
    lab_control.hold('vzclone')  # running, its locks held, until released below
    upid = pve.clone(101, description='order 42')
    lab_control.wait_held('vzclone', timeout=30)
    assert pve.config(TEMPLATE)['lock'] == 'disk'
    assert pve.get('/nodes/{node}/lxc/9000/status/current')['lock'] == 'disk'
    expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', newid=102), 500, 'CT is locked (disk)')
    entry = [r for r in pve.get('/cluster/resources', type='vm') if r['vmid'] == 101][0]
    assert entry['lock'] == 'create' and entry['name'] == 'pod-101'
    assert pve.get('/cluster/nextid') == '100'
    expect_error(pve.call('GET', '/cluster/nextid', vmid=101), 400, 'Parameter verification failed.')
    expect_error(pve.call('PUT', '/nodes/{node}/lxc/101/config', cores=2), 500, 'CT is locked (create)')
    assert pve.task(upid)['status'] == 'running'
    lab_control.release('vzclone')
    pve.ok(upid)
    source, clone = pve.config(TEMPLATE), pve.config(101)
    assert 'lock' not in source and 'lock' not in clone
    assert 'template' not in clone and clone['hostname'] == 'pod-101'
    assert clone['description'] == 'order 42\n'
    assert clone['rootfs'] == 'local-lvm:base-9000-disk-0/vm-101-disk-0,size=2G'
    assert re.search(r'hwaddr=BC:24:11:[0-9A-F:]{8}', clone['net0'])
    assert clone['net0'] != template_mac
    assert re.fullmatch(r'[0-9a-f]{40}', clone['digest'])


def test_full_clone_and_storage_rules(pve):
    pve.cloned(101, full=1)
    assert pve.config(101)['rootfs'] == 'local-lvm:vm-101-disk-0,size=2G'
    expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', newid=102, storage='local-lvm'), 500,
                 "parameter 'storage' not allowed for linked clones")
    expect_error(pve.call('POST', '/nodes/{node}/lxc/101/clone', newid=102, full=0), 500,
                 "Linked clone feature for 'local-lvm:vm-101-disk-0' is not available")
    assert 'lock' not in pve.config(TEMPLATE)


def test_failed_task_is_visible_as_soon_as_it_stops(lab_control, pve):
    lab_control.fault(task_fail={'type': 'vzclone', 'message': 'lvcreate: out of space'})
    lab_control.hold('vzclone')  # the failure comes when the held task is released
    upid = pve.clone(101)
    lab_control.wait_held('vzclone', timeout=30)
    assert pve.task(upid)['status'] == 'running' and pve.config(101)['lock'] == 'create'  # not failed early
    [released] = lab_control.release('vzclone')
    status = pve.wait(upid, interval=0.01)
    assert status['exitstatus'] == 'clone failed: lvcreate: out of space'
    # The status flip and the cleanup are one step: whoever sees "stopped" sees the rollback done
    # (read right after, below), and the task ended when released, not at some later sweep.
    [ended] = [task for task in lab_control.state()['tasks'] if task['upid'] == upid]
    assert int(released['released_at']) <= ended['endtime'] <= released['released_at'] + 5
    expect_error(pve.call('GET', '/nodes/{node}/lxc/101/config'), 500,
                 "Configuration file 'nodes/pve/lxc/101.conf' does not exist")
    assert 'lock' not in pve.config(TEMPLATE)
    log = pve.get('/nodes/{node}/tasks/%s/log' % upid)
    assert log[-1]['t'] == 'TASK ERROR: clone failed: lvcreate: out of space'
    assert pve.get('/nodes/{node}/tasks', errors=1)[0]['upid'] == upid


def test_task_warnings_and_stopping_a_task(lab_control, pve):
    lab_control.fault(task_fail={'type': 'vzclone', 'warnings': 2})
    assert pve.wait(pve.clone(101))['exitstatus'] == 'WARNINGS: 2'
    lab_control.config(task_durations={'vzclone': 5})
    upid = pve.clone(102)
    assert pve.data('DELETE', '/nodes/{node}/tasks/%s' % upid) is None
    assert pve.wait(upid)['exitstatus'] == 'clone failed: interrupted by signal'
    assert 'lock' not in pve.config(TEMPLATE)


# ---------------------------------------------------------------- config, resize, power

def test_config_update_digest_tags_and_net(lab_control, pve):
    pve.cloned(101)
    before = pve.config(101)
    assert pve.data('PUT', '/nodes/{node}/lxc/101/config', cores=2, memory=2048, onboot=1,
                    tags='Web;cloudpod,starter', digest=before['digest']) is None
    after = pve.config(101)
    assert (after['cores'], after['memory'], after['onboot']) == (2, 2048, 1)
    # pve-guest-common get_unique_tags, datacenter.cfg's default tag-style: lower-cased
    assert after['tags'] == 'cloudpod;starter;web'
    assert pve.data('PUT', '/nodes/{node}/lxc/101/config', tags='Zeta;alpha;ZETA') is None
    assert pve.config(101)['tags'] == 'alpha;zeta'
    assert after['digest'] != before['digest']
    expect_error(pve.call('PUT', '/nodes/{node}/lxc/101/config', cores=3, digest=before['digest']), 500,
                 'detected modified configuration - file changed by other user? Try again.')
    body = expect_error(pve.call('PUT', '/nodes/{node}/lxc/101/config', tags='ok;bad$tag'), 400,
                        'Parameter verification failed.')
    assert body['errors'] == {'tags': "invalid format - invalid tag 'bad$tag'"}
    assert pve.data('PUT', '/nodes/{node}/lxc/101/config', net0='name=eth0,bridge=vmbr0,ip=dhcp',
                    delete='onboot') is None
    changed = pve.config(101)
    assert 'onboot' not in changed
    assert re.fullmatch(r'name=eth0,bridge=vmbr0,hwaddr=BC:24:11:[0-9A-F:]{8},ip=dhcp', changed['net0'])
    lab_control.set_container(101, cores=4, description='drifted')
    assert pve.config(101)['cores'] == 4


def test_resize_grows_only(pve):
    pve.cloned(101)
    upid = pve.data('PUT', '/nodes/{node}/lxc/101/resize', disk='rootfs', size='+5G')
    assert UPID_RE.match(upid).group(5) == 'resize'
    pve.ok(upid)
    assert pve.config(101)['rootfs'].endswith(',size=7G')
    pve.ok(pve.data('PUT', '/nodes/{node}/lxc/101/resize', disk='rootfs', size='30G'))
    assert pve.get('/nodes/{node}/lxc/101/status/current')['maxdisk'] == 30 * 1024 ** 3
    expect_error(pve.call('PUT', '/nodes/{node}/lxc/101/resize', disk='rootfs', size='10G'), 500,
                 'unable to shrink disk size')
    expect_error(pve.call('PUT', '/nodes/{node}/lxc/101/resize', disk='rootfs', size='30G'), 500,
                 'disk is already at specified size')


def test_power_actions(pve):
    pve.cloned(101)
    expect_error(pve.call('POST', '/nodes/{node}/lxc/101/status/stop'), 500, 'CT 101 not running')
    pve.running(101)
    current = pve.get('/nodes/{node}/lxc/101/status/current')
    assert (current['status'], current['vmid'], current['name']) == ('running', 101, 'pod-101')
    assert 'lock' not in current and 'template' not in current
    expect_error(pve.call('POST', '/nodes/{node}/lxc/101/status/start'), 500, 'CT 101 already running')
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/reboot'))
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/suspend'))
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/resume'))
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/shutdown', timeout=30, forceStop=1))
    assert pve.get('/nodes/{node}/lxc/101/status/current')['status'] == 'stopped'
    failed = pve.wait(pve.data('POST', '/nodes/{node}/lxc/9000/status/start'))
    assert failed['exitstatus'] == "you can't start a CT if it's a template"


def test_starting_a_locked_container_fails_in_its_task(lab_control, pve):
    """PVE checks the config lock inside the start worker: a UPID, then a failed task."""
    lab_control.hold('vzclone')  # the clone runs, lock 'create' held, until released
    clone_upid = pve.clone(101)
    start_upid = pve.data('POST', '/nodes/{node}/lxc/101/status/start')
    assert pve.wait(start_upid)['exitstatus'] == 'CT is locked (create)'
    assert pve.task(clone_upid)['status'] == 'running'
    lab_control.release('vzclone')
    pve.ok(clone_upid)
    assert pve.get('/nodes/{node}/lxc/101/status/current')['status'] == 'stopped'


def test_reboot_of_a_locked_container_stops_it_and_fails_to_start_it(lab_control, pve):
    """PVE 8 (pve-container LXC.pm vm_reboot): no lock check before the stop; the start's pre-start
    hook refuses the locked CT, so the task fails after stopping it and the CT stays stopped."""
    pve.running(pve.cloned(101))
    lab_control.set_container(101, lock='backup')
    upid = pve.data('POST', '/nodes/{node}/lxc/101/status/reboot')
    assert UPID_RE.match(upid).group(5) == 'vzreboot'
    assert pve.wait(upid)['exitstatus'] == "startup for container '101' failed"
    assert [line['t'] for line in pve.get('/nodes/{node}/tasks/%s/log' % upid)] == [
        'run_buffer: 322 Script exited with status 2',
        'lxc_init: 844 Failed to run lxc.hook.pre-start for container "101"',
        '__lxc_start: 2027 Failed to initialize container "101"',
        "TASK ERROR: startup for container '101' failed"]
    current = pve.get('/nodes/{node}/lxc/101/status/current')
    assert (current['status'], current['lock']) == ('stopped', 'backup')
    assert pve.get('/nodes/{node}/lxc/101/interfaces') is None
    # Another reboot is refused at once; a start fails on the lock in its task, then works without it.
    expect_error(pve.call('POST', '/nodes/{node}/lxc/101/status/reboot'), 500, 'VM 101 not running')
    assert pve.wait(pve.data('POST', '/nodes/{node}/lxc/101/status/start'))['exitstatus'] == 'CT is locked (backup)'
    lab_control.set_container(101, lock=None)
    pve.running(101)
    assert pve.get('/nodes/{node}/lxc/101/status/current')['status'] == 'running'


def test_reboot_of_a_container_stopped_before_the_worker_ran_does_nothing(lab_control, pve):
    """``return if !check_running($vmid)`` in vm_reboot: the task ends OK and the CT stays stopped."""
    pve.running(pve.cloned(101))
    lab_control.hold('vzreboot')
    upid = pve.data('POST', '/nodes/{node}/lxc/101/status/reboot')
    lab_control.wait_held('vzreboot')
    lab_control.set_container(101, status='stopped')
    lab_control.release('vzreboot')
    assert pve.wait(upid)['exitstatus'] == 'OK'
    assert pve.get('/nodes/{node}/lxc/101/status/current')['status'] == 'stopped'


def test_interfaces_list_every_address_and_keep_the_last_in_inet(lab_control, pve):
    """PVE 8.4 (pve-container 5.2.6, LXC.pm get_interfaces): ``ip-addresses`` has every address in the
    kernel's order, ``inet``/``inet6`` the last one of their family."""
    lab_control.config(dhcp_delay=0)
    pve.cloned(101)
    lab_control.set_container(101, net0='name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth')
    pve.running(101)
    lab_control.add_address(101, '10.99.250.250/16')
    lo, eth0 = pve.get('/nodes/{node}/lxc/101/interfaces')
    assert lo == {'name': 'lo', 'hwaddr': '00:00:00:00:00:00', 'hardware-address': '00:00:00:00:00:00',
                  'inet': '127.0.0.1/8', 'inet6': '::1/128',
                  'ip-addresses': [{'ip-address': '127.0.0.1', 'ip-address-type': 'inet', 'prefix': 8},
                                   {'ip-address': '::1', 'ip-address-type': 'inet6', 'prefix': 128}]}
    assert eth0 == {'name': 'eth0', 'hwaddr': 'bc:24:11:2a:3b:4c', 'hardware-address': 'bc:24:11:2a:3b:4c',
                    'inet': '10.99.250.250/16', 'inet6': 'fe80::be24:11ff:fe2a:3b4c/64',
                    'ip-addresses': [
                        {'ip-address': '10.99.42.58', 'ip-address-type': 'inet', 'prefix': 16},
                        {'ip-address': '10.99.250.250', 'ip-address-type': 'inet', 'prefix': 16},
                        {'ip-address': 'fe80::be24:11ff:fe2a:3b4c', 'ip-address-type': 'inet6', 'prefix': 64}]}
    assert lab_control.state()['containers']['101']['ip'] == '10.99.42.58'
    # The alias lives in the running CT only, as an `ip addr add` does.
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/reboot'))
    assert [a['ip-address'] for a in pve.get('/nodes/{node}/lxc/101/interfaces')[1]['ip-addresses']] == [
        '10.99.42.58', 'fe80::be24:11ff:fe2a:3b4c']


def leased_interfaces(pve, vmid, timeout=30):
    """The interfaces once eth0 has its IPv4 lease (polled: the lease comes dhcp_delay s after the start)."""
    deadline = time.monotonic() + timeout
    while True:
        interfaces = {i['name']: i for i in pve.get('/nodes/{node}/lxc/%d/interfaces' % vmid)}
        if 'inet' in interfaces['eth0']:
            return interfaces
        assert time.monotonic() < deadline, 'no IPv4 lease after %s s: %s' % (timeout, interfaces)
        time.sleep(0.05)


def test_interfaces_follow_dhcp(lab_control, pve):
    lab_control.config(dhcp_delay=3.0)  # long enough to read the interfaces before the lease on a loaded machine
    pve.cloned(101)
    assert pve.get('/nodes/{node}/lxc/101/interfaces') is None
    pve.running(101)
    early = {i['name']: i for i in pve.get('/nodes/{node}/lxc/101/interfaces')}
    assert early['lo']['inet'] == '127.0.0.1/8'
    assert early['eth0']['inet6'].startswith('fe80::') and 'inet' not in early['eth0']
    late = leased_interfaces(pve, 101)
    assert re.fullmatch(r'10\.99\.\d+\.\d+/16', late['eth0']['inet'])
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/stop'))
    pve.running(101)
    again = leased_interfaces(pve, 101)
    assert again['eth0']['inet'] == late['eth0']['inet']


def test_destroy_needs_a_stopped_unlocked_container(lab_control, pve):
    pve.running(pve.cloned(101))
    expect_error(pve.call('DELETE', '/nodes/{node}/lxc/101', purge=1), 500,
                 'unable to destroy CT 101 - container is running')
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/101/status/stop'))
    lab_control.hold('vzdestroy')
    upid = pve.data('DELETE', '/nodes/{node}/lxc/101', purge=1, **{'destroy-unreferenced-disks': 1})
    assert UPID_RE.match(upid).group(5) == 'vzdestroy'
    lab_control.wait_held('vzdestroy', timeout=30)  # its worker has taken the lock
    assert pve.config(101)['lock'] == 'destroyed'
    lab_control.release('vzdestroy')
    pve.ok(upid)
    assert [r['vmid'] for r in pve.get('/cluster/resources', type='vm')] == [TEMPLATE]
    pve.data('PUT', '/nodes/{node}/lxc/9000/config', protection=1)
    expect_error(pve.call('DELETE', '/nodes/{node}/lxc/9000'), 500,
                 "can't remove CT 9000 - protection mode enabled")


def test_cluster_resources_entries(pve):
    pve.cloned(101)
    pve.data('PUT', '/nodes/{node}/lxc/101/config', tags='starter')
    entries = {r['id']: r for r in pve.get('/cluster/resources', type='vm')}
    assert set(entries) == {'lxc/101', 'lxc/9000'}
    pod = entries['lxc/101']
    for key in ('maxmem', 'maxdisk', 'maxcpu', 'mem', 'disk', 'cpu', 'uptime'):
        assert key in pod
    assert {k: pod[k] for k in ('type', 'vmid', 'node', 'name', 'status', 'template', 'tags')} == {
        'type': 'lxc', 'vmid': 101, 'node': 'pve', 'name': 'pod-101', 'status': 'stopped',
        'template': 0, 'tags': 'starter'}
    assert 'lock' not in pod and entries['lxc/9000']['template'] == 1
    kinds = {r['type'] for r in pve.get('/cluster/resources')}
    assert kinds == {'lxc', 'node', 'storage'}


# ---------------------------------------------------------------- firewall, backups

def test_new_firewall_rule_goes_to_top_disabled(pve):
    pve.cloned(101)
    rules = '/nodes/{node}/lxc/101/firewall/rules'
    assert pve.data('POST', rules, type='in', action='ACCEPT', proto='tcp', dport='22', enable=1,
                    comment='ssh') is None
    assert pve.data('POST', rules, type='in', action='ACCEPT', macro='HTTP', comment='web') is None
    listed = pve.get(rules)
    assert [(r['pos'], r['comment'], r['enable']) for r in listed] == [(0, 'web', 0), (1, 'ssh', 1)]
    assert pve.get(rules + '/1')['dport'] == '22'
    body = expect_error(pve.call('POST', rules, type='in', action='ACCEPT', dport='80'), 400,
                        'Parameter verification failed.')
    assert body['errors'] == {'proto': "missing property - 'dport' requires this property"}
    expect_error(pve.call('DELETE', rules + '/0', digest='0' * 40), 500,
                 'detected modified configuration - file changed by other user? Try again.')
    assert pve.data('DELETE', rules + '/0', digest=listed[0]['digest']) is None
    assert [r['comment'] for r in pve.get(rules)] == ['ssh']


def test_firewall_options_and_ipsets(pve):
    """pve-firewall src/PVE/API2/Firewall/IPSet.pm: duplicates are parameter errors (400), an
    address is stored as the config parser reads it back, entries come back sorted by cidr."""
    pve.cloned(101)
    base = '/nodes/{node}/lxc/101/firewall'
    assert pve.data('PUT', base + '/options', enable=1, policy_in='DROP') is None
    assert pve.get(base + '/options') == {'enable': 1, 'policy_in': 'DROP',
                                          'digest': 'b5b4b38b0ccd39fc3c426236926bf532647addaf'}
    body = expect_error(pve.call('PUT', base + '/options', delete='colour'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'delete': "no such option 'colour'"}
    assert pve.data('POST', base + '/ipset', name='ipfilter-net0', comment='pod addresses') is None
    body = expect_error(pve.call('POST', base + '/ipset', name='ipfilter-net0'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'name': "IPSet 'ipfilter-net0' already exists"}
    ipset = base + '/ipset/ipfilter-net0'
    assert pve.data('POST', ipset, cidr='10.99.2.7/24', comment='office') is None
    assert pve.data('POST', ipset, cidr='10.99.1.2/32') is None
    body = expect_error(pve.call('POST', ipset, cidr='10.99.1.2'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'cidr': "address '10.99.1.2' already exists"}
    body = expect_error(pve.call('POST', ipset, cidr='10.99.2.0/24'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'cidr': "address '10.99.2.0/24' already exists"}
    body = expect_error(pve.call('POST', ipset, cidr='0.0.0.0/0'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'cidr': 'a zero prefix is not allowed in ipset entries'}
    digest = 'cc02610b490a4b11f423cec203eac702aede2960'
    assert pve.get(ipset) == [{'cidr': '10.99.1.2', 'digest': digest},
                              {'cidr': '10.99.2.0/24', 'comment': 'office', 'digest': digest}]
    body = expect_error(pve.call('GET', ipset + '/10.99.3.0%2F24'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'cidr': 'no such IP/Network'}
    expect_error(pve.call('DELETE', ipset), 500, "IPSet 'ipfilter-net0' is not empty")
    body = expect_error(pve.call('DELETE', ipset, force=1, digest=digest), 400, 'Parameter verification failed.')
    assert body['errors'] == {'digest': 'property is not defined in schema and the schema does not allow '
                                        'additional properties'}
    # an address that is not there (as typed, not normalised) is no error and removes nothing
    assert pve.data('DELETE', ipset + '/10.99.1.2%2F32') is None
    assert [entry['cidr'] for entry in pve.get(ipset)] == ['10.99.1.2', '10.99.2.0/24']
    assert pve.data('DELETE', ipset + '/10.99.1.2', digest=digest) is None
    assert pve.data('DELETE', ipset, force=1) is None
    assert pve.get(base + '/ipset') == []


def test_firewall_ipset_names_and_rename(pve):
    pve.cloned(101)
    base = '/nodes/{node}/lxc/101/firewall/ipset'
    assert pve.data('POST', base, name='Office', comment='staff') is None
    assert pve.data('POST', base, name='guests') is None
    listed = pve.get(base)
    # the config parser lower-cases IP set names
    assert [(entry['name'], entry.get('comment')) for entry in listed] == [('guests', None), ('office', 'staff')]
    body = expect_error(pve.call('POST', base, name='guests', rename='office', digest=listed[0]['digest']), 400,
                        'Parameter verification failed.')
    assert body['errors'] == {'name': "IPSet 'guests' does already exist"}
    body = expect_error(pve.call('POST', base, name='staff', rename='nobody'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'name': "IPSet 'nobody' does not exist"}
    expect_error(pve.call('POST', base, name='staff', rename='office', digest='0' * 40), 500,
                 'detected modified configuration - file changed by other user? Try again.')
    assert pve.data('POST', base, name='staff', rename='office', digest=listed[0]['digest']) is None
    assert [(entry['name'], entry.get('comment')) for entry in pve.get(base)] == [('guests', None), ('staff', 'staff')]


def test_firewall_rules_options_and_ipsets_have_their_own_digests(pve):
    """Rules.pm, VM.pm (options) and IPSet.pm each check the digest of what they change."""
    pve.cloned(101)
    base = '/nodes/{node}/lxc/101/firewall'
    stale = 'detected modified configuration - file changed by other user? Try again.'
    assert pve.data('POST', base + '/rules', type='in', action='ACCEPT', proto='tcp', dport='22', enable=1) is None
    assert pve.data('POST', base + '/ipset', name='allowed') is None
    assert pve.data('POST', base + '/ipset/allowed', cidr='10.99.1.2') is None
    rules_digest = pve.get(base + '/rules')[0]['digest']
    options_digest = pve.get(base + '/options')['digest']
    assert options_digest == 'da39a3ee5e6b4b0d3255bfef95601890afd80709'  # SHA-1 of nothing: no options yet
    ipsets_digest = pve.get(base + '/ipset')[0]['digest']
    entries_digest = pve.get(base + '/ipset/allowed')[0]['digest']
    assert len({rules_digest, options_digest, ipsets_digest, entries_digest}) == 4

    # options change: the rules' digest still holds, the old options digest does not
    assert pve.data('PUT', base + '/options', enable=1, digest=options_digest) is None
    assert pve.get(base + '/rules')[0]['digest'] == rules_digest
    first_options_digest, options_digest = options_digest, pve.get(base + '/options')['digest']
    assert options_digest == 'bb9ed91416c7ca9fe0bdb701360217e37ab4497f'  # SHA-1 of "enable:1\n"
    assert pve.data('PUT', base + '/rules/0', comment='ssh', digest=rules_digest) is None
    expect_error(pve.call('PUT', base + '/options', policy_in='DROP', digest=first_options_digest), 500, stale)

    # rules change: the options' digest read before it still holds, the old rules digest does not
    expect_error(pve.call('DELETE', base + '/rules/0', digest=rules_digest), 500, stale)
    assert pve.data('PUT', base + '/options', policy_in='DROP', digest=options_digest) is None
    assert pve.get(base + '/options') == {'enable': 1, 'policy_in': 'DROP',
                                          'digest': 'b5b4b38b0ccd39fc3c426236926bf532647addaf'}
    assert [rule['comment'] for rule in pve.get(base + '/rules')] == ['ssh']
    # creating a rule takes a digest but PVE never checks it
    assert pve.data('POST', base + '/rules', type='out', action='DROP', digest=rules_digest) is None

    # IP set entries: their own digest; neither the rules nor the options touch it
    assert pve.get(base + '/ipset')[0]['digest'] == ipsets_digest
    assert pve.data('PUT', base + '/ipset/allowed/10.99.1.2', comment='one', digest=entries_digest) is None
    expect_error(pve.call('DELETE', base + '/ipset/allowed/10.99.1.2', digest=entries_digest), 500, stale)
    assert pve.get(base + '/ipset')[0]['digest'] == ipsets_digest
    entries_digest = pve.get(base + '/ipset/allowed')[0]['digest']
    assert pve.data('DELETE', base + '/ipset/allowed/10.99.1.2', digest=entries_digest) is None
    assert pve.get(base + '/ipset/allowed') == []


def test_firewall_rule_moveto_and_delete(pve):
    """Rules.pm ``update_rule``: ``moveto`` inserts before the rule that was at that position."""
    pve.cloned(101)
    rules = '/nodes/{node}/lxc/101/firewall/rules'
    for comment in ('c', 'b', 'a'):
        assert pve.data('POST', rules, type='in', action='ACCEPT', comment=comment) is None
    assert [r['comment'] for r in pve.get(rules)] == ['a', 'b', 'c']
    assert pve.data('PUT', rules + '/0', moveto=2) is None
    assert [r['comment'] for r in pve.get(rules)] == ['b', 'a', 'c']
    assert pve.data('PUT', rules + '/0', moveto=9) is None
    assert [r['comment'] for r in pve.get(rules)] == ['a', 'c', 'b']
    assert pve.data('PUT', rules + '/2', moveto=0) is None
    assert [r['comment'] for r in pve.get(rules)] == ['b', 'a', 'c']
    body = expect_error(pve.call('PUT', rules + '/0', delete='action'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'delete': "unable to delete required property 'action'"}
    body = expect_error(pve.call('PUT', rules + '/0', delete='colour'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'delete': "no such property ('colour')"}


def test_firewall_rule_fields_are_deleted_by_empty_or_dash(pve):
    """Firewall.pm ``copy_rule_data``, used by create and update: ``''`` or ``-`` deletes a field."""
    pve.cloned(101)
    rules = '/nodes/{node}/lxc/101/firewall/rules'
    assert pve.data('POST', rules, type='in', action='ACCEPT', proto='tcp', dport='80', comment='web') is None
    digest = pve.get(rules)[0]['digest']
    assert pve.data('PUT', rules + '/0', digest=digest, comment='-', source='10.0.0.0/8') is None
    rule = pve.get(rules + '/0')
    assert 'comment' not in rule and rule['source'] == '10.0.0.0/8'


def test_datacenter_firewall_options_need_sys_audit_and_sys_modify(lab_env, pve, root, lab_control):
    """API2/Firewall/Cluster.pm: GET needs Sys.Audit on /, PUT Sys.Modify on /; the lab starts it on."""
    assert pve.get('/cluster/firewall/options')['enable'] == 1  # the seed's role has Sys.Audit
    expect_error(pve.call('PUT', '/cluster/firewall/options', enable=0), 403, 'Permission check failed (/, Sys.Modify)')
    lab_control.add_token('audit@pve!none', 'no-audit-secret', privs=['VM.Audit'])
    blind = Pve(lab_env, 'audit@pve!none', 'no-audit-secret')
    expect_error(blind.call('GET', '/cluster/firewall/options'), 403, 'Permission check failed (/, Sys.Audit)')
    options = root.get('/cluster/firewall/options')
    expect_error(root.call('PUT', '/cluster/firewall/options', enable=0, digest='0' * 40), 500,
                 'detected modified configuration - file changed by other user? Try again.')
    assert root.data('PUT', '/cluster/firewall/options', enable=0, digest=options['digest']) is None
    assert root.get('/cluster/firewall/options')['enable'] == 0
    body = expect_error(root.call('PUT', '/cluster/firewall/options', delete='colour'), 400,
                        'Parameter verification failed.')
    assert body['errors'] == {'delete': "no such option 'colour'"}


def test_vzdump_writes_an_archive(lab_env, root):
    root.cloned(101)
    upid = root.data('POST', '/nodes/{node}/vzdump', vmid=101, storage='local', mode='snapshot',
                     compress='zstd', **{'notes-template': '{{guestname}} ({{vmid}})'})
    assert UPID_RE.match(upid).group(5) == 'vzdump'
    root.ok(upid)
    backups = root.get('/nodes/{node}/storage/local/content', content='backup', vmid=101)
    assert len(backups) == 1
    backup = backups[0]
    assert re.fullmatch(r'local:backup/vzdump-lxc-101-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.tar\.zst',
                        backup['volid'])
    assert (backup['format'], backup['vmid'], backup['notes']) == ('tar.zst', 101, 'pod-101 (101)')
    dump_dir = os.path.join(ROOT, '.lab', 'pvesim', 'storage', 'local', 'dump')
    archive = os.path.join(dump_dir, backup['volid'].split('/', 1)[1])
    with open(archive, 'rb') as handle:
        assert handle.read(4) == b'\x28\xb5\x2f\xfd'  # zstd frame magic
    with tempfile.TemporaryDirectory() as dumpdir:
        root.ok(root.data('POST', '/nodes/{node}/vzdump', vmid=101, dumpdir=dumpdir, compress='gzip'))
        assert [name for name in os.listdir(dumpdir) if name.endswith('.tar.gz')]


def test_vzdump_root_only_options_and_backup_jobs(lab_env, lab_control, root):
    lab_control.add_token('backup@pve!ops', 'ops-secret',
                          privs=['VM.Audit', 'VM.Backup', 'Datastore.AllocateSpace', 'Sys.Audit'])
    ops = Pve(lab_env, 'backup@pve!ops', 'ops-secret')
    body = expect_error(ops.call('POST', '/nodes/{node}/vzdump', vmid=TEMPLATE, dumpdir='/tmp'), 400,
                        'Parameter verification failed.')
    assert body['errors'] == {'dumpdir': 'Only root may set this option.'}
    expect_error(ops.call('POST', '/cluster/backup', schedule='daily', vmid=TEMPLATE, storage='local'), 403,
                 'Permission check failed (/, Sys.Modify)')
    assert root.data('POST', '/cluster/backup', id='pods-daily', schedule='02:30', vmid='9000',
                     storage='local', mode='snapshot', **{'prune-backups': 'keep-last=7'}) is None
    job = root.get('/cluster/backup/pods-daily')
    assert (job['schedule'], job['enabled'], job['prune-backups']) == ('02:30', 1, 'keep-last=7')
    assert root.data('PUT', '/cluster/backup/pods-daily', enabled=0, delete='prune-backups') is None
    assert 'prune-backups' not in ops.get('/cluster/backup')[0]
    assert root.data('DELETE', '/cluster/backup/pods-daily') is None


# ---------------------------------------------------------------- faults, state, concurrency

def test_injected_http_faults(lab_control, pve):
    lab_control.fault(method='GET', path=r'^/version$', count=2, status=596, reason='Connection timed out')
    for dummy in range(2):
        expect_error(pve.call('GET', '/version'), 596, 'Connection timed out')
    assert pve.get('/version')['version']
    lab_control.fault(path=r'/clone$', status=500, reason='got timeout')
    expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', newid=101), 500, 'got timeout')
    assert 'lock' not in pve.config(TEMPLATE)


def test_fault_after_the_work_is_done(lab_control, pve):
    """The change happens but the answer is lost, as when a proxy drops the reply."""
    pve.cloned(101)
    lab_control.fault(method='POST', path=r'/status/start$', after=True, status=500, reason='proxy error')
    expect_error(pve.call('POST', '/nodes/{node}/lxc/101/status/start'), 500, 'proxy error')
    deadline = time.monotonic() + 30  # a 0.05 s start task; the bound is for a loaded machine
    while pve.get('/nodes/{node}/lxc/101/status/current')['status'] != 'running':
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_added_latency(lab_control, pve):
    lab_control.fault(latency_ms=150)
    started = time.monotonic()
    pve.get('/version')
    assert time.monotonic() - started >= 0.15
    lab_control.clear_faults()


def test_task_hold_keeps_the_task_running_until_released(lab_control, pve):
    """A test can act "while the clone runs" on an event: the task stays running, its locks held."""
    lab_control.hold('vzclone')
    upid = pve.clone(101)
    hold = lab_control.wait_held('vzclone', timeout=10)
    assert hold['state'] == 'holding'
    assert pve.task(upid)['status'] == 'running'
    assert pve.config(TEMPLATE)['lock'] == 'disk' and pve.config(101)['lock'] == 'create'
    expect_error(pve.call('POST', '/nodes/{node}/lxc/9000/clone', newid=102), 500, 'CT is locked (disk)')
    [released] = lab_control.release('vzclone')
    assert released['state'] == 'released' and released['released_at'] >= released['held_at']
    assert pve.wait(upid)['exitstatus'] == 'OK'
    assert 'lock' not in pve.config(101)
    pve.cloned(102)  # a hold holds one task: the next clone runs its plain duration (pve.wait: 10 s at most)
    assert [hold['state'] for hold in lab_control.holds()] == ['released']


def test_task_hold_passes_on_a_queued_failure_and_a_cleared_hold_ends_its_task(lab_control, pve):
    lab_control.fault(task_fail={'type': 'vzclone', 'message': 'out of space'})
    lab_control.hold('vzclone')
    upid = pve.clone(101)
    lab_control.wait_held('vzclone', timeout=10)
    lab_control.release()
    assert pve.wait(upid)['exitstatus'] == 'clone failed: out of space'
    lab_control.hold('vzclone')
    upid = pve.clone(103)
    lab_control.wait_held('vzclone', timeout=10)
    lab_control.clear_faults()  # so does a reset: no work behind a cleared state
    assert pve.wait(upid)['exitstatus'] == 'clone failed: interrupted: task hold cleared'
    assert lab_control.holds() == []
    assert '103' not in lab_control.state()['containers']


def test_waiting_for_a_hold_no_task_reaches_fails(lab_control, pve):
    lab_control.hold('vzstart')
    with pytest.raises(AssertionError, match='no vzstart task reached its hold within 0.5 s'):
        lab_control.wait_held('vzstart', timeout=0.5)
    assert [hold['state'] for hold in lab_control.holds()] == ['pending']


def test_task_jitter_varies_durations_until_reset(lab_control, pve):
    """Measured by the client, a task lasts at least its duration plus the client's delays (longer on a
    loaded machine). So one resize seen shorter than the configured 2 s proves the jitter shortened it."""
    pve.cloned(101)
    duration, jitter = 2.0, 0.9
    lab_control.config(task_durations={'resize': duration}, task_jitter=jitter)
    seconds = []
    while not seconds or (min(seconds) >= duration and len(seconds) < 20):  # each is shorter with p ~ 0.4
        started = time.monotonic()
        pve.ok(pve.data('PUT', '/nodes/{node}/lxc/101/resize', disk='rootfs', size='+1G'))
        seconds.append(time.monotonic() - started)
    assert min(seconds) < duration, seconds
    assert all(value >= duration * (1 - jitter) for value in seconds), seconds
    lab_control.reset()
    assert lab_control.config()['task_jitter'] == 0.0


def test_state_readback_and_request_log(lab_env, lab_control, pve):
    lab_control.clear_requests()
    pve.running(pve.cloned(101))
    state = lab_control.state()
    pod = state['containers']['101']
    assert (pod['status'], pod['lock'], pod['config']['hostname']) == ('running', None, 'pod-101')
    assert any(task['type'] == 'vzclone' for task in state['tasks'])
    logged = [(entry['method'], entry['path'], entry['status']) for entry in state['requests']]
    assert ('POST', '/nodes/pve/lxc/9000/clone', 200) in logged
    assert {entry['token_id'] for entry in state['requests']} == {lab_env['PROXMOX_API_TOKEN_ID']}
    assert lab_env['PROXMOX_API_TOKEN_SECRET'] not in json.dumps(state)
    lab_control.set_container(101, status='stopped')
    assert pve.get('/nodes/{node}/lxc/101/status/current')['status'] == 'stopped'


def test_many_concurrent_clients(lab_env, lab_control, pve):
    """Twelve clients race for ids like twelve ansible processes would."""
    created, errors = [], []

    def provision(index):
        client = Pve(lab_env)
        deadline = time.monotonic() + 120  # clones of one template serialize on its disk lock
        while time.monotonic() < deadline:
            newid = int(client.get('/cluster/nextid'))
            response = client.call('POST', '/nodes/{node}/lxc/9000/clone', newid=newid,
                                   hostname='race-%d' % index)
            if response.status_code == 200:
                status = client.wait(response.json()['data'])
                if status['exitstatus'] == 'OK':
                    created.append(newid)
                    return
            elif not re.match(r'CT is locked \(disk\)|CT \d+ already exists', response.reason):
                errors.append(response.reason)
                return
            time.sleep(random.uniform(0.01, 0.05))
        errors.append('gave up')

    def refused():
        return [r for r in lab_control.requests() if r['path'] == '/nodes/pve/lxc/9000/clone' and r['status'] != 200]

    # The first clone is held running until every other client has been refused at least once
    # (each names its own hostname): all twelve raced, none merely ran after the others.
    lab_control.clear_requests()
    lab_control.hold('vzclone')
    threads = [threading.Thread(target=provision, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    try:
        lab_control.wait_held('vzclone', timeout=60)
        deadline = time.monotonic() + 60
        while len(set(r['params']['hostname'] for r in refused())) < 11 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        lab_control.release('vzclone')
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(created) == list(range(100, 112))
    assert len(set(r['params']['hostname'] for r in refused())) >= 11
    assert all(re.match(r'CT is locked \(disk\)|CT \d+ already exists', r['reason']) for r in refused())


# ---------------------------------------------------------------- community.proxmox

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    community.proxmox.proxmox:
      api_host: "{{ lookup('env', 'PVE_HOST') }}"
      api_port: "{{ lookup('env', 'PVE_PORT') }}"
      api_user: mpanel-api@pve
      api_token_id: mpanel-token
      api_token_secret: "{{ lookup('env', 'PVE_SECRET') }}"
      validate_certs: true
      node: pve
  tasks:
    - name: Clone the Cloud Pod template
      community.proxmox.proxmox:
        hostname: ansible-pod
        clone: 9000
        timeout: 20
      register: cloned
    - name: Size it for the plan
      community.proxmox.proxmox:
        vmid: "{{ cloned.vmid }}"
        hostname: ansible-pod
        update: true
        cores: 2
        memory: 2048
        onboot: true
    - name: Start it
      community.proxmox.proxmox:
        vmid: "{{ cloned.vmid }}"
        state: started
        timeout: 20
"""


def test_community_proxmox_module_clones_and_starts(lab_env, pve, tmp_path):
    playbook = tmp_path / 'clone.yml'
    playbook.write_text(PLAYBOOK)
    host, port = re.match(r'https://([^:/]+):(\d+)/', lab_env['PROXMOX_API_URL']).groups()
    venv_bin = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get('PATH', ''),
               PVE_HOST=host, PVE_PORT=port, PVE_SECRET=lab_env['PROXMOX_API_TOKEN_SECRET'],
               REQUESTS_CA_BUNDLE=lab_env['PROXMOX_CA_BUNDLE'],
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_NOCOLOR='1', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'))
    run = subprocess.run([os.path.join(venv_bin, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                          str(playbook)], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = [task['hosts']['localhost'] for task in json.loads(run.stdout)['plays'][0]['tasks']]
    assert all(result['changed'] for result in results), results
    vmid = int(results[0]['vmid'])
    assert vmid == 100
    config = pve.config(vmid)
    assert (config['hostname'], config['cores'], config['memory'], config['onboot']) == ('ansible-pod', 2, 2048, 1)
    assert pve.get('/nodes/{node}/lxc/%d/status/current' % vmid)['status'] == 'running'
