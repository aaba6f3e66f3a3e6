# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pvesim creates containers from OS templates like PVE 8 (``POST /nodes/{node}/lxc``), and
answers that need a simulator of their own (a later ``pve_version``) are checked here too.

Every test runs its own simulator in this process (HTTPS on a free loopback port, the
memory backend or a recording one), so nothing here touches the shared lab.
"""

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAB = os.path.join(ROOT, 'tests', 'lab')
if LAB not in sys.path:
    sys.path.insert(0, LAB)

from pvesim.acl import token_from_spec  # noqa: E402  pylint: disable=wrong-import-position,import-error
from pvesim.backend import BackendError, MemoryBackend  # noqa: E402  pylint: disable=wrong-import-position,import-error
from pvesim.config import CLOUDPODS_PROV_PRIVILEGES, SimConfig, bridge_acl  # noqa: E402  pylint: disable=wrong-import-position,import-error
from pvesim.server import create_server  # noqa: E402  pylint: disable=wrong-import-position,import-error

NODE = 'pve'
TEMPLATE = 9000
UBUNTU = 'ubuntu-22.04-standard_22.04-1_amd64.tar.zst'
DEBIAN = 'debian-12-standard_12.7-1_amd64.tar.zst'
TOKEN_ID = 'mpanel-api@pve!mpanel-token'
SECRET = 'seed-role-secret'
NET0 = 'name=eth0,bridge=vmbr0,ip=dhcp,type=veth'


# ---------------------------------------------------------------- a private simulator

def _issue_certificate(directory):
    """A throwaway CA and a 127.0.0.1 server certificate; returns (ca, cert, key) paths."""
    # pylint: disable=import-outside-toplevel
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'pvesim create test CA')])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(directory, name) for name in ('ca.pem', 'server.pem', 'server-key.pem')]
    pem = serialization.Encoding.PEM
    for path, data in zip(paths, (ca_cert.public_bytes(pem), cert.public_bytes(pem),
                                  key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        with open(path, 'wb') as handle:
            handle.write(data)
    return paths


class Sim(object):
    """One simulator running in a thread of this process, and a bare API client for it."""

    def __init__(self, directory, backend=None, **config):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.ca, cert, key = _issue_certificate(self.directory)
        values = {
            'listen_host': '127.0.0.1', 'listen_port': 0, 'tls_cert': cert, 'tls_key': key,
            'storage_root': os.path.join(self.directory, 'storage'),
            'tokens': [{'token_id': TOKEN_ID, 'secret': SECRET, 'privs': CLOUDPODS_PROV_PRIVILEGES,
                        'acl': bridge_acl('vmbr0')},
                       {'token_id': 'root@pam!lab', 'secret': 'root-secret', 'privs': ['*']}],
            'pools': [{'poolid': 'pods'}],
            'default_task_duration': 0.05, 'task_durations': {'vzcreate': 0.3}, 'dhcp_delay': 0.1,
        }
        values.update(config)
        self.config = SimConfig.from_dict(values)
        self.server = create_server(self.config, backend)
        self.app = self.server.app
        self.cluster = self.app.cluster
        self.port = self.server.server_address[1]
        self.base = 'https://127.0.0.1:%d/api2/json' % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05})
        self.thread.daemon = True
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def add_token(self, token_id, privs=None, acl=None, secret='s3cret'):
        spec = {'token_id': token_id, 'secret': secret}
        if privs is not None:
            spec['privs'] = privs
        if acl is not None:
            spec['acl'] = acl
        self.app.tokens.add(token_from_spec(spec))
        return Client(self, token_id, secret)

    def client(self, token_id=TOKEN_ID, secret=SECRET):
        return Client(self, token_id, secret)

    def ct(self, vmid):
        with self.cluster.lock:
            found = self.cluster.containers.get(vmid)
            return None if found is None else {'config': dict(found.config), 'status': found.status,
                                               'pool': found.pool}


class Client(object):
    def __init__(self, sim, token_id, secret):
        self.sim = sim
        self.session = requests.Session()
        self.session.headers['Authorization'] = 'PVEAPIToken=%s=%s' % (token_id, secret)

    def call(self, method, path, **params):
        url = self.sim.base + path.replace('{node}', NODE)
        if method in ('POST', 'PUT'):
            return self.session.request(method, url, data=params, timeout=10, verify=self.sim.ca)
        return self.session.request(method, url, params=params, timeout=10, verify=self.sim.ca)

    def data(self, method, path, **params):
        response = self.call(method, path, **params)
        assert response.status_code == 200, (response.status_code, response.reason, response.text)
        return response.json()['data']

    def get(self, path, **params):
        return self.data('GET', path, **params)

    def create(self, vmid, **params):
        params.setdefault('ostemplate', 'local:vztmpl/' + UBUNTU)
        return self.data('POST', '/nodes/{node}/lxc', vmid=vmid, **params)

    def wait(self, upid, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get('/nodes/{node}/tasks/%s/status' % upid)
            if status['status'] == 'stopped':
                return status
            time.sleep(0.02)
        raise AssertionError('task %s still running after %ss' % (upid, timeout))

    def ok(self, upid):
        status = self.wait(upid)
        assert status['exitstatus'] == 'OK', status
        return status


def expect_error(response, status, reason):
    assert (response.status_code, response.reason) == (status, reason), response.text
    body = response.json()
    assert body['data'] is None and body['message'] == reason + '\n'
    return body


class RecordingBackend(MemoryBackend):
    """The memory backend, plus a record of the new interface's calls and given CTs."""

    def __init__(self, existing=None, fail_create=None):
        super(RecordingBackend, self).__init__(dhcp_delay=0.1)
        self.calls = []
        self.kept = list(existing or [])
        self.fail_create = fail_create

    def create(self, vmid, archive, config):
        self.calls.append(('create', vmid, str(archive), dict(config)))
        if self.fail_create:
            raise BackendError(self.fail_create)

    def destroy(self, vmid):
        self.calls.append(('destroy', vmid))
        super(RecordingBackend, self).destroy(vmid)

    def save_config(self, vmid, config):
        self.calls.append(('save_config', vmid, dict(config)))

    def make_template(self, vmid, config):
        self.calls.append(('make_template', vmid, dict(config)))

    def reset(self):
        self.calls.append(('reset',))
        super(RecordingBackend, self).reset()

    def existing(self):
        self.calls.append(('existing',))
        return [dict(item, config=dict(item['config'])) for item in self.kept]

    def named(self, name):
        return [call for call in self.calls if call[0] == name]


@pytest.fixture
def sim(tmp_path):
    started = []

    def start(backend=None, **config):
        started.append(Sim(tmp_path / ('sim%d' % len(started)), backend, **config))
        return started[-1]
    yield start
    for each in started:
        each.stop()


# ---------------------------------------------------------------- templates on 'local'

def test_pvesim_lists_os_templates_as_vztmpl_content(sim, tmp_path):
    templates = tmp_path / 'templates'
    templates.mkdir()
    for name, size in ((DEBIAN, 3000), ('alpine-3.20-default_20240908_amd64.tar.xz', 2000),
                       ('centos-9-stream-default_20240828_amd64.tar.gz', 1000)):
        (templates / name).write_bytes(b'x' * size)
    (templates / 'notes.txt').write_text('not a template')
    (templates / 'half.tar.zst.tmp').write_bytes(b'partial download')
    pve = sim(vztmpl_dir=str(templates)).client()
    content = pve.get('/nodes/{node}/storage/local/content', content='vztmpl')
    assert [(entry['volid'], entry['format'], entry['size'], entry['content']) for entry in content] == [
        ('local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz', 'txz', 2000, 'vztmpl'),
        ('local:vztmpl/centos-9-stream-default_20240828_amd64.tar.gz', 'tgz', 1000, 'vztmpl'),
        ('local:vztmpl/' + DEBIAN, 'tzst', 3000, 'vztmpl')]
    assert all(isinstance(entry['ctime'], int) and 'vmid' not in entry for entry in content)
    # the whole listing (what community.proxmox's content check reads) has them too
    assert {entry['volid'] for entry in pve.get('/nodes/{node}/storage/local/content')} >= {
        'local:vztmpl/' + DEBIAN}
    # a configured template directory gets no stand-in template
    assert not (templates / UBUNTU).exists()
    assert pve.get('/nodes/{node}/storage/local-lvm/content', content='vztmpl') == []
    assert [item['storage'] for item in pve.get('/nodes/{node}/storage', content='vztmpl')] == ['local']


def test_pvesim_default_template_dir_has_a_real_standin(sim, tmp_path):
    pve = sim().client()
    content = pve.get('/nodes/{node}/storage/local/content', content='vztmpl')
    assert [entry['volid'] for entry in content] == ['local:vztmpl/' + UBUNTU]
    path = tmp_path / 'sim0' / 'storage' / 'local' / 'template' / 'cache' / UBUNTU
    assert path.stat().st_size == content[0]['size'] > 0
    listing = subprocess.run(['tar', '--zstd', '-tf', str(path)], capture_output=True, text=True, check=False)
    if listing.returncode == 0:  # tar may lack zstd support; the archive is valid either way
        assert './etc/os-release' in listing.stdout.split()


# ---------------------------------------------------------------- create

def test_pvesim_create_from_template_runs_vzcreate_under_create_lock(sim):
    server = sim()
    pve = server.client()
    upid = pve.create(101, hostname='web-1', storage='local-lvm', rootfs='local-lvm:8', memory=1024, swap=256,
                      cores=2, net0=NET0, unprivileged=1, password='hunter2-secret', description='made from a template',
                      tags='pod;web', onboot=1, features='nesting=1')
    assert upid.split(':')[5:7] == ['vzcreate', '101']
    assert upid.split(':')[7] == 'mpanel-api@pve!mpanel-token'
    config = pve.get('/nodes/{node}/lxc/101/config')
    assert config['lock'] == 'create'
    assert pve.get('/nodes/{node}/lxc/101/status/current')['lock'] == 'create'
    # while it is created, the CT is locked for everything else
    expect_error(pve.call('PUT', '/nodes/{node}/lxc/101/config', memory=2048), 500, 'CT is locked (create)')
    expect_error(pve.call('DELETE', '/nodes/{node}/lxc/101'), 500, 'CT is locked (create)')
    start = pve.data('POST', '/nodes/{node}/lxc/101/status/start')
    pve.ok(upid)
    assert pve.wait(start)['exitstatus'] == 'CT is locked (create)'

    config = pve.get('/nodes/{node}/lxc/101/config')
    assert 'lock' not in config
    assert config['rootfs'] == 'local-lvm:vm-101-disk-0,size=8G'
    assert (config['hostname'], config['memory'], config['swap'], config['cores']) == ('web-1', 1024, 256, 2)
    assert (config['unprivileged'], config['onboot'], config['features']) == (1, 1, 'nesting=1')
    assert (config['arch'], config['ostype']) == ('amd64', 'ubuntu')
    assert config['description'] == 'made from a template\n'
    assert config['tags'] == 'pod;web'
    assert config['net0'].startswith('name=eth0,bridge=vmbr0,hwaddr=BC:24:11:')
    assert 'password' not in config and 'ostemplate' not in config and 'template' not in config
    status = pve.get('/nodes/{node}/lxc/101/status/current')
    assert (status['status'], status['maxdisk'], 'lock' in status) == ('stopped', 8 * 1024 ** 3, False)
    volumes = pve.get('/nodes/{node}/storage/local-lvm/content', vmid=101)
    assert [(v['volid'], v['size']) for v in volumes] == [('local-lvm:vm-101-disk-0', 8 * 1024 ** 3)]
    log = [line['t'] for line in pve.get('/nodes/{node}/tasks/%s/log' % upid)]
    assert log[-1] == 'TASK OK' and any(UBUNTU in line for line in log)
    # the password went nowhere: not the request log, not the state, not a task log
    everything = json.dumps([server.app.requests.entries(), server.cluster.lab_state()])
    assert 'hunter2-secret' not in everything
    assert [e['params']['password'] for e in server.app.requests.entries()
            if (e['method'], e['path']) == ('POST', '/nodes/pve/lxc')] == ['********']


def test_pvesim_create_defaults_follow_pve(sim):
    pve = sim().client()
    pve.ok(pve.create(102, storage='local-lvm', ostemplate='local:vztmpl/' + UBUNTU))
    config = pve.get('/nodes/{node}/lxc/102/config')
    assert config['rootfs'] == 'local-lvm:vm-102-disk-0,size=4G'  # PVE's 4 GiB default
    assert (config['hostname'], config['memory'], config['swap']) == ('CT102', 512, 512)
    assert 'unprivileged' not in config  # the API (unlike the GUI) creates privileged CTs
    # a bare size is GiB on the 'storage' parameter's storage
    pve.ok(pve.create(103, storage='local-lvm', rootfs='2.5'))
    assert pve.get('/nodes/{node}/lxc/103/config')['rootfs'] == 'local-lvm:vm-103-disk-0,size=2560M'


def test_pvesim_create_refuses_a_vmid_in_use_at_once(sim):
    pve = sim().client()
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=TEMPLATE, ostemplate='local:vztmpl/' + UBUNTU,
                          storage='local-lvm'), 500, "CT 9000 already exists on node 'pve'")
    upid = pve.create(104, storage='local-lvm')
    # a second create of the same id while the first runs: at once, nothing started
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=104, ostemplate='local:vztmpl/' + UBUNTU,
                          storage='local-lvm'), 500, "CT 104 already exists on node 'pve'")
    pve.ok(upid)
    tasks = pve.get('/nodes/{node}/tasks', source='all', typefilter='vzcreate')
    assert len(tasks) == 1


def test_pvesim_create_with_a_missing_template_fails_in_its_task(sim):
    server = sim()
    pve = server.client()
    upid = pve.create(105, storage='local-lvm', ostemplate='local:vztmpl/debian-11-standard_11.7-1_amd64.tar.zst')
    status = pve.wait(upid)
    assert status['exitstatus'] == ("unable to create CT 105 - can't find file "
                                    "'local:vztmpl/debian-11-standard_11.7-1_amd64.tar.zst'")
    assert server.ct(105) is None
    expect_error(pve.call('GET', '/nodes/{node}/lxc/105/config'), 500,
                 "Configuration file 'nodes/pve/lxc/105.conf' does not exist")


def test_pvesim_create_parameter_and_volume_errors(sim):
    pve = sim().client()
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106), 400, 'Parameter verification failed.')
    assert body['errors'] == {'ostemplate': 'property is missing and it is not optional'}
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/' + UBUNTU,
                                 password='abc', colour='red'), 400, 'Parameter verification failed.')
    assert body['errors'] == {
        'password': 'value must be at least 5 characters long',
        'colour': 'property is not defined in schema and the schema does not allow additional properties'}
    assert 'abc' not in json.dumps(body)
    # 'local' (the default storage) holds templates and backups, not container volumes
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/' + UBUNTU),
                        400, 'Parameter verification failed.')
    assert body['errors'] == {'storage': "storage 'local' does not support container directories"}
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/' + UBUNTU,
                                 rootfs='local:8'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'storage': "storage 'local' does not support container directories"}
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/' + UBUNTU,
                          rootfs='nfs-pods:8'), 500, "storage 'nfs-pods' does not exist")
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='backups:vztmpl/' + UBUNTU,
                          storage='local-lvm'), 500, "storage 'backups' does not exist")
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local-lvm:vztmpl/' + UBUNTU,
                          storage='local-lvm'), 500, "unable to parse lvm volume name 'vztmpl/%s'" % UBUNTU)
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/ubuntu.iso',
                          storage='local-lvm'), 500, "unable to parse directory volume name 'vztmpl/ubuntu.iso'")
    backup = 'local:backup/vzdump-lxc-101-2025_01_01-00_00_00.tar.zst'
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate=backup, storage='local-lvm'), 500,
                 "unable to use volume %s - content type needs to be 'vztmpl'" % backup)
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, storage='local-lvm',
                          ostemplate='/var/lib/vz/template/cache/' + UBUNTU), 500,
                 'Only root can pass arbitrary filesystem paths.')
    expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/' + UBUNTU,
                          storage='local-lvm', **{'ssh-public-keys': 'ssh-rsa not-base64!'}), 500,
                 'SSH public key validation error')
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=106, ostemplate='local:vztmpl/' + UBUNTU,
                                 storage='local-lvm', unique=1), 400, 'Parameter verification failed.')
    assert list(body['errors']) == ['restore']
    assert pve.get('/nodes/{node}/tasks', source='all') == []
    assert pve.get('/cluster/resources', type='vm')[0]['vmid'] == TEMPLATE
    assert len(pve.get('/cluster/resources', type='vm')) == 1


def test_pvesim_create_privileges(sim):
    server = sim()
    template = 'local:vztmpl/' + UBUNTU
    base = ['VM.Config.CPU', 'VM.Config.Memory', 'VM.Config.Network', 'VM.Config.Options', 'VM.Config.Disk']
    storages = {'/storage/local': ['Datastore.Audit'], '/storage/local-lvm': ['Datastore.AllocateSpace']}

    nobody = server.add_token('nobody@pve!tk', privs=base, acl=storages)
    expect_error(nobody.call('POST', '/nodes/{node}/lxc', vmid=110, ostemplate=template, storage='local-lvm'),
                 403, 'Permission check failed')
    # VM.Allocate on the pool is enough, and the pool must exist
    pooled = server.add_token('pooler@pve!tk', privs=base, acl=dict(storages, **{'/pool/pods': ['VM.Allocate']}))
    expect_error(pooled.call('POST', '/nodes/{node}/lxc', vmid=110, ostemplate=template, storage='local-lvm',
                             pool='nope'), 403, "Permission check failed (pool 'nope' does not exist)")
    pooled.ok(pooled.create(110, storage='local-lvm', pool='pods', memory=256, hostname='pooled'))
    assert server.ct(110)['pool'] == 'pods'
    # a NIC needs SDN.Use on its bridge (on <bridge>/<tag> with a VLAN tag), checked before anything is made
    expect_error(pooled.call('POST', '/nodes/{node}/lxc', vmid=115, ostemplate=template, storage='local-lvm',
                             pool='pods', net0=NET0), 403, 'Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)')
    expect_error(pooled.call('POST', '/nodes/{node}/lxc', vmid=115, ostemplate=template, storage='local-lvm',
                             pool='pods', net0=NET0 + ',tag=42'), 403,
                 'Permission check failed (/sdn/zones/localnetwork/vmbr0/42, SDN.Use)')
    assert server.ct(115) is None

    allocator = server.add_token('alloc@pve!tk', privs=['VM.Allocate', 'VM.Config.CPU', 'VM.Config.Disk'],
                                 acl=storages)
    expect_error(allocator.call('POST', '/nodes/{node}/lxc', vmid=111, ostemplate=template, storage='local-lvm',
                                memory=256), 403, 'Permission check failed (/vms/111, VM.Config.Memory)')
    expect_error(allocator.call('POST', '/nodes/{node}/lxc', vmid=111, ostemplate=template, storage='local-lvm',
                                net0=NET0), 403, 'Permission check failed (/vms/111, VM.Config.Network)')
    expect_error(allocator.call('POST', '/nodes/{node}/lxc', vmid=111, ostemplate=template, storage='local-lvm',
                                hookscript='local:snippets/x.sh'), 403,
                 'Permission check failed (changing the hookscript is only allowed for root@pam)')
    # features: privileged CTs only for root; nesting alone needs VM.Allocate; others root only
    expect_error(allocator.call('POST', '/nodes/{node}/lxc', vmid=111, ostemplate=template, storage='local-lvm',
                                features='nesting=1'), 403,
                 'Permission check failed (changing feature flags for privileged container is only allowed for root@pam)')
    expect_error(allocator.call('POST', '/nodes/{node}/lxc', vmid=111, ostemplate=template, storage='local-lvm',
                                features='nesting=1,keyctl=1', unprivileged=1), 403,
                 'Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)')
    allocator.ok(allocator.create(111, storage='local-lvm', features='nesting=1', unprivileged=1, cores=1))

    no_space = server.add_token('nospace@pve!tk', privs=['VM.Allocate'] + base,
                                acl={'/storage/local': ['Datastore.Audit']})
    expect_error(no_space.call('POST', '/nodes/{node}/lxc', vmid=112, ostemplate=template, storage='local-lvm'),
                 403, 'Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)')
    expect_error(no_space.call('POST', '/nodes/{node}/lxc', vmid=112, ostemplate=template, rootfs='local-lvm:8'),
                 403, 'Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)')
    no_template = server.add_token('notmpl@pve!tk', privs=['VM.Allocate'] + base,
                                   acl={'/storage/local-lvm': ['Datastore.AllocateSpace'], '/storage/local': []})
    expect_error(no_template.call('POST', '/nodes/{node}/lxc', vmid=112, ostemplate=template, storage='local-lvm'),
                 403, 'Permission check failed (/storage/local, Datastore.AllocateSpace|Datastore.Audit)')

    # the seed's CloudPodsProv role may create; root may pass a file path as template
    seed = server.client()
    seed.ok(seed.create(113, storage='local-lvm', rootfs='local-lvm:8', net0=NET0 + ',tag=42', unprivileged=1, cores=2,
                        memory=1024, swap=512, hostname='seeded', ostemplate=template))
    root = server.client('root@pam!lab', 'root-secret')
    path = os.path.join(server.config.storage_root, 'local', 'template', 'cache', UBUNTU)
    root.ok(root.create(114, storage='local-lvm', ostemplate=path, hookscript='local:snippets/x.sh'))
    assert server.ct(114)['config']['hookscript'] == 'local:snippets/x.sh'


def test_pvesim_from_8_4_17_every_bad_token_is_authentication_failed(sim):
    """pve-manager 8.4.17 (commit d3973e63) hides verify_token's reason: always ``401 Authentication failed!``,
    no body; before that (the default 8.2.4) the reason is verify_token's own message."""
    for version, wrong_secret, unknown_user in (('8.4.17', 'Authentication failed!', 'Authentication failed!'),
                                                ('8.4.16', 'invalid token value!', "no such user ('nobody@pve')")):
        server = sim(pve_version=version)
        for client, reason in ((server.client(TOKEN_ID, 'wrong'), wrong_secret),
                               (server.client('nobody@pve!tk', 'x'), unknown_user)):
            response = client.call('GET', '/version')
            assert (response.status_code, response.reason, response.content) == (401, reason, b'')
        bare = requests.get(server.base + '/version', timeout=10, verify=server.ca)
        assert (bare.status_code, bare.reason, bare.content) == (401, 'No ticket', b'')
        assert server.client().get('/version')['version'] == version


def test_pvesim_create_and_start_adds_to_pool(sim):
    server = sim()
    pve = server.client()
    upid = pve.create(120, storage='local-lvm', net0=NET0, start=1, pool='pods', unprivileged=1)
    pve.ok(upid)
    starts = pve.get('/nodes/{node}/tasks', source='all', typefilter='vzstart', vmid=120)
    assert len(starts) == 1 and starts[0]['user'] == 'mpanel-api@pve' and starts[0]['tokenid'] == 'mpanel-token'
    pve.ok(starts[0]['upid'])
    assert pve.get('/nodes/{node}/lxc/120/status/current')['status'] == 'running'
    assert server.ct(120)['pool'] == 'pods'
    resource = [r for r in pve.get('/cluster/resources', type='vm') if r['vmid'] == 120][0]
    assert (resource['pool'], resource['template'], resource['name']) == ('pods', 0, 'CT120')


def test_pvesim_backend_failure_removes_the_new_ct(sim):
    backend = RecordingBackend(fail_create='tar: Unexpected EOF in archive')
    server = sim(backend)
    pve = server.client()
    status = pve.wait(pve.create(121, storage='local-lvm'))
    assert status['exitstatus'] == 'unable to create CT 121 - tar: Unexpected EOF in archive'
    assert server.ct(121) is None
    assert [call[0] for call in backend.calls if call[0] in ('create', 'destroy', 'save_config')] == \
        ['create', 'destroy']


def test_pvesim_backend_hooks_create_save_template_existing(sim):
    kept = {'vmid': 130, 'config': {'hostname': 'kept', 'rootfs': 'local-lvm:vm-130-disk-0,size=4G',
                                    'memory': 512, 'arch': 'amd64', 'ostype': 'debian'}}
    backend = RecordingBackend(existing=[kept])
    server = sim(backend)
    assert [call[0] for call in backend.calls[:2]] == ['reset', 'existing']
    assert server.ct(130) == {'config': kept['config'], 'status': 'stopped', 'pool': None}
    assert server.ct(TEMPLATE)['config']['template'] == 1
    pve = server.client()

    pve.ok(pve.create(131, storage='local-lvm', rootfs='local-lvm:8', net0=NET0, hostname='hooked'))
    created = backend.named('create')
    assert len(created) == 1
    dummy, vmid, archive, config = created[0]
    assert (vmid, archive) == (131, os.path.join(server.config.storage_root, 'local', 'template', 'cache', UBUNTU))
    assert config['rootfs'] == 'local-lvm:vm-131-disk-0,size=8G' and 'lock' not in config
    assert config == server.ct(131)['config']
    assert backend.named('save_config')[-1] == ('save_config', 131, config)

    pve.data('PUT', '/nodes/{node}/lxc/131/config', memory=2048)
    assert backend.named('save_config')[-1][2]['memory'] == 2048
    pve.ok(pve.data('PUT', '/nodes/{node}/lxc/131/resize', disk='rootfs', size='+2G'))
    assert backend.named('save_config')[-1][2]['rootfs'] == 'local-lvm:vm-131-disk-0,size=10G'
    assert pve.data('POST', '/nodes/{node}/lxc/131/template') is None
    deadline = time.monotonic() + 30
    while not server.ct(131)['config'].get('template') and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.named('make_template') == [('make_template', 131, dict(
        server.ct(131)['config']))]
    assert backend.named('save_config')[-1] == ('save_config', 131, server.ct(131)['config'])
    assert server.ct(131)['config']['rootfs'] == 'local-lvm:base-131-disk-0,size=10G'
    pve.ok(pve.data('POST', '/nodes/{node}/lxc/131/clone', newid=132, hostname='linked'))
    assert backend.named('save_config')[-1][1:] == (132, server.ct(132)['config'])
    saves = len(backend.named('save_config'))
    pve.ok(pve.data('DELETE', '/nodes/{node}/lxc/132'))
    assert len(backend.named('save_config')) == saves  # destroy is not a config change

    # reset: backend first, then what it has, then the seeded template (unless it has one)
    backend.calls[:] = []
    backend.kept = [kept, {'vmid': TEMPLATE, 'config': dict(kept['config'], hostname='own-template', template=1)}]
    server.cluster.reset()
    assert [call[0] for call in backend.calls[:2]] == ['reset', 'existing']
    assert server.ct(TEMPLATE)['config']['hostname'] == 'own-template'
    assert sorted(server.cluster.containers) == [130, TEMPLATE]


def test_pvesim_seed_template_can_be_turned_off(sim):
    server = sim(seed_template=False)
    assert server.client().get('/cluster/resources', type='vm') == []
    pve = server.client()
    pve.ok(pve.create(TEMPLATE, storage='local-lvm', hostname='my-template'))
    assert pve.data('POST', '/nodes/{node}/lxc/%d/template' % TEMPLATE) is None
    deadline = time.monotonic() + 30
    while not server.ct(TEMPLATE)['config'].get('template') and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.ct(TEMPLATE)['config']['rootfs'] == 'local-lvm:base-9000-disk-0,size=4G'


# ---------------------------------------------------------------- community.proxmox.proxmox

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    community.proxmox.proxmox:
      api_host: 127.0.0.1
      api_port: "{{ lookup('env', 'PVE_PORT') }}"
      api_user: mpanel-api@pve
      api_token_id: mpanel-token
      api_token_secret: "{{ lookup('env', 'PVE_SECRET') }}"
      validate_certs: true
      node: pve
      timeout: 20
  tasks:
    - name: Create a CT from an OS template
      community.proxmox.proxmox:
        vmid: 150
        hostname: from-template
        ostemplate: local:vztmpl/%(template)s
        storage: local-lvm
        disk: "8"
        cores: 2
        memory: 1024
        swap: 256
        password: "{{ lookup('env', 'CT_PASSWORD') }}"
        netif:
          net0: name=eth0,bridge=vmbr0,ip=dhcp,type=veth
        unprivileged: true
    - name: Create another with a disk_volume
      community.proxmox.proxmox:
        vmid: 151
        hostname: with-volume
        ostemplate: local:vztmpl/%(template)s
        disk_volume:
          storage: local-lvm
          size: 4
        netif:
          net0: name=eth0,bridge=vmbr0,ip=dhcp,type=veth
    - name: Creating it again changes nothing
      community.proxmox.proxmox:
        vmid: 151
        hostname: with-volume
        ostemplate: local:vztmpl/%(template)s
        update: false
    - name: Start it
      community.proxmox.proxmox:
        vmid: 150
        state: started
    - name: Stop it
      community.proxmox.proxmox:
        vmid: 150
        state: stopped
    - name: Make it a template
      community.proxmox.proxmox:
        vmid: 150
        state: template
""" % {'template': UBUNTU}


def test_pvesim_community_proxmox_creates_from_ostemplate(sim, tmp_path):
    server = sim(task_durations={'vzcreate': 0.2})
    playbook = tmp_path / 'create.yml'
    playbook.write_text(PLAYBOOK)
    venv_bin = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get('PATH', ''),
               PVE_PORT=str(server.port), PVE_SECRET=SECRET, CT_PASSWORD='ct-root-password-42',
               REQUESTS_CA_BUNDLE=server.ca, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_STDOUT_CALLBACK='ansible.posix.json', ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'))
    run = subprocess.run([os.path.join(venv_bin, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                          str(playbook)], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    results = [task['hosts']['localhost'] for task in json.loads(run.stdout)['plays'][0]['tasks']]
    assert [result['changed'] for result in results] == [True, True, False, True, True, True], results
    assert results[0]['msg'] == 'Created VM from-template (150) from template local:vztmpl/%s' % UBUNTU

    deadline = time.monotonic() + 30  # 'state: template' does not wait for its task
    while not server.ct(150)['config'].get('template') and time.monotonic() < deadline:
        time.sleep(0.05)
    made = server.ct(150)
    assert made['status'] == 'stopped'
    assert made['config']['rootfs'] == 'local-lvm:base-150-disk-0,size=8G'
    assert (made['config']['template'], made['config']['unprivileged'], made['config']['cores'],
            made['config']['memory'], made['config']['swap']) == (1, 1, 2, 1024, 256)
    other = server.ct(151)['config']
    assert other['rootfs'] == 'local-lvm:vm-151-disk-0,size=4G' and other['unprivileged'] == 1
    types = [(entry['method'], entry['path']) for entry in server.app.requests.entries()
             if entry['method'] != 'GET']
    assert ('POST', '/nodes/pve/lxc') in types and ('POST', '/nodes/pve/lxc/150/template') in types
    assert 'ct-root-password-42' not in json.dumps([server.app.requests.entries(), server.cluster.lab_state()])
