# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulator's LXC backend through the Proxmox API: what each call does to a real container.

Against the lab's LXC part (``tests/lab/lab up --lxc``, ``.lab/env.lxc``), straight over HTTP as
Proxmox's API clients do: linked and full clones, limits applied to a running container, the
address from DHCP, vzdump through the lab's stand-in, destroy releasing the lease.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from realpods import ENV_LXC, ROOT, cgroup, leases, pct  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402
from labcontrol import LabControl  # noqa: E402

pytestmark = pytest.mark.real_containers

MEMORY_KEY = 'memory.max' if os.path.exists('/sys/fs/cgroup/cgroup.controllers') else 'memory.limit_in_bytes'


class Api(object):
    def __init__(self, env):
        self.env = env
        self.url = env['PROXMOX_API_URL']
        self.headers = {'Authorization': 'PVEAPIToken=%s=%s' % (env['PROXMOX_API_TOKEN_ID'], env['PROXMOX_API_TOKEN_SECRET'])}

    def call(self, method, path, **params):
        reply = requests.request(method, self.url + path, headers=self.headers, verify=self.env['PROXMOX_CA_BUNDLE'],
                                 timeout=30, **({'params': params} if method in ('GET', 'DELETE') else {'data': params}))
        assert reply.status_code == 200, '%s %s: %s %s' % (method, path, reply.status_code, reply.reason)
        return reply.json()['data']

    def task(self, method, path, timeout=300, **params):
        upid = self.call(method, path, **params)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.call('GET', '/nodes/pve/tasks/%s/status' % upid)
            if status['status'] == 'stopped':
                assert status['exitstatus'] == 'OK', status
                return status
            time.sleep(0.2)
        raise AssertionError('task %s did not end' % upid)

    def address(self, vmid, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for iface in self.call('GET', '/nodes/pve/lxc/%d/interfaces' % vmid) or []:
                ipv4 = [a['ip-address'] for a in iface['ip-addresses'] if a['ip-address-type'] == 'inet']
                if iface.get('name') == 'eth0' and ipv4:
                    return ipv4[0], iface['hwaddr']
            time.sleep(0.2)
        raise AssertionError('CT %d has no address' % vmid)


@pytest.fixture(scope='module')
def api():
    return Api(read_lab_env(ENV_LXC))


@pytest.fixture
def new_ct(api):
    """Clones made by a test, destroyed afterwards whatever happened."""
    made = []

    def clone(full):
        vmid = int(api.call('GET', '/cluster/nextid'))
        api.task('POST', '/nodes/pve/lxc/9000/clone', newid=vmid, hostname='lxc-test-%s' % uuid.uuid4().hex[:6],
                 full=1 if full else 0)
        made.append(vmid)
        return vmid
    yield clone
    for vmid in made:
        status = requests.get(api.url + '/nodes/pve/lxc/%d/status/current' % vmid, headers=api.headers,
                              verify=api.env['PROXMOX_CA_BUNDLE'], timeout=30)
        if status.status_code == 200:
            if status.json()['data']['status'] == 'running':
                api.task('POST', '/nodes/pve/lxc/%d/status/stop' % vmid)
            api.task('DELETE', '/nodes/pve/lxc/%d' % vmid, purge=1)


def test_lxc_linked_clone_is_an_overlay_and_full_clone_a_copy(api, new_ct):
    lxc_path = api.env['LAB_LXC_PATH']
    linked, full = new_ct(False), new_ct(True)
    layout = json.load(open(os.path.join(lxc_path, str(linked), 'storage.json')))
    assert layout == {'kind': 'overlay', 'lower': os.path.join(lxc_path, '9000', 'rootfs')}
    assert os.listdir(os.path.join(lxc_path, str(linked), 'delta')) == []
    assert json.load(open(os.path.join(lxc_path, str(full), 'storage.json'))) == {'kind': 'dir'}
    assert os.path.exists(os.path.join(lxc_path, str(full), 'rootfs', 'opt', 'cloudpod-bootstrap', 'first-boot.sh'))
    config = api.call('GET', '/nodes/pve/lxc/%d/config' % linked)
    assert re.match(r'local-lvm:base-9000-disk-0/vm-%d-disk-0' % linked, config['rootfs']), config['rootfs']


def test_lxc_limits_follow_the_config_even_while_running(api, new_ct):
    vmid = new_ct(False)
    api.call('PUT', '/nodes/pve/lxc/%d/config' % vmid, memory=768, cores=1)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    assert int(cgroup(api.env, vmid, MEMORY_KEY)) == 768 * 1024 * 1024
    assert cgroup(api.env, vmid, 'cpuset.cpus') == '0'
    api.call('PUT', '/nodes/pve/lxc/%d/config' % vmid, memory=1536)  # hot, as PVE applies it
    assert int(cgroup(api.env, vmid, MEMORY_KEY)) == 1536 * 1024 * 1024
    inside = pct(api.env, vmid, 'hostname').stdout.strip()
    assert inside == api.call('GET', '/nodes/pve/lxc/%d/config' % vmid)['hostname']


def test_lxc_address_comes_from_the_lab_dhcp_and_destroy_releases_it(api, new_ct):
    vmid = new_ct(False)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    ip, mac = api.address(vmid)
    assert leases(api.env).get(mac.lower()) == ip
    assert pct(api.env, vmid, 'ip', '-4', '-o', 'addr', 'show', 'eth0').stdout.split()[3].startswith(ip + '/')

    api.task('POST', '/nodes/pve/lxc/%d/status/stop' % vmid)
    api.task('DELETE', '/nodes/pve/lxc/%d' % vmid, purge=1)
    deadline = time.monotonic() + 30
    while mac.lower() in leases(api.env) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mac.lower() not in leases(api.env)
    assert not os.path.exists(os.path.join(api.env['LAB_LXC_PATH'], str(vmid)))


def lxc_state(env, vmid):
    result = subprocess.run(['lxc-info', '-P', env['LAB_LXC_PATH'], '-n', str(vmid), '-s', '-H'], capture_output=True,
                            text=True, check=False, timeout=20)
    return result.stdout.strip()


def test_lxc_reboot_of_a_locked_container_stops_it_for_real(api, new_ct):
    """PVE 8 (pve-container LXC.pm vm_reboot): the stop happens, the start's pre-start hook refuses the lock."""
    control = LabControl.from_env(api.env)
    vmid = new_ct(False)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    assert lxc_state(api.env, vmid) == 'RUNNING'
    control.set_container(vmid, lock='backup')
    try:
        upid = api.call('POST', '/nodes/pve/lxc/%d/status/reboot' % vmid)
        deadline = time.monotonic() + 120
        while api.call('GET', '/nodes/pve/tasks/%s/status' % upid)['status'] != 'stopped':
            assert time.monotonic() < deadline, 'reboot task still running'
            time.sleep(0.2)
        assert api.call('GET', '/nodes/pve/tasks/%s/status' % upid)['exitstatus'] == "startup for container '%d' failed" % vmid
        assert [line['t'] for line in api.call('GET', '/nodes/pve/tasks/%s/log' % upid)][-2:] == [
            '__lxc_start: 2027 Failed to initialize container "%d"' % vmid,
            "TASK ERROR: startup for container '%d' failed" % vmid]
        assert lxc_state(api.env, vmid) == 'STOPPED'
        assert api.call('GET', '/nodes/pve/lxc/%d/status/current' % vmid)['status'] == 'stopped'
        assert api.call('GET', '/nodes/pve/lxc/%d/interfaces' % vmid) is None
    finally:
        control.set_container(vmid, lock=None)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    assert lxc_state(api.env, vmid) == 'RUNNING'


def test_lxc_interfaces_list_every_address_and_keep_the_last_in_inet(api, new_ct):
    """PVE 8.4 (LXC.pm get_interfaces): ``ip-addresses`` in the order of ``ip a`` inside the CT, ``inet`` the last."""
    vmid = new_ct(False)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    lease, mac = api.address(vmid)
    assert leases(api.env).get(mac.lower()) == lease
    LabControl.from_env(api.env).add_address(vmid, '192.0.2.10/24')
    assert '192.0.2.10/24' in pct(api.env, vmid, 'ip', '-4', '-o', 'addr', 'show', 'eth0').stdout
    eth0 = [i for i in api.call('GET', '/nodes/pve/lxc/%d/interfaces' % vmid) if i['name'] == 'eth0'][0]
    prefix = int(api.env['LAB_BRIDGE_NETWORK'].split('/')[1])
    ipv6 = [a for a in eth0['ip-addresses'] if a['ip-address-type'] == 'inet6']
    assert eth0['ip-addresses'][:2] == [{'ip-address': lease, 'ip-address-type': 'inet', 'prefix': prefix},
                                        {'ip-address': '192.0.2.10', 'ip-address-type': 'inet', 'prefix': 24}]
    assert eth0['inet'] == '192.0.2.10/24'
    assert [a['ip-address'].startswith('fe80::') for a in ipv6] == [True]
    assert eth0['inet6'] == '%s/64' % ipv6[0]['ip-address']
    assert eth0['hwaddr'] == eth0['hardware-address'] == mac.lower()


def test_lxc_vzdump_writes_a_real_archive_of_the_running_container(api, new_ct, tmp_path):
    vmid = new_ct(False)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    pct(api.env, vmid, 'sh', '-c', 'echo written-inside > /root/proof.txt')
    env = dict(os.environ, **api.env)
    result = subprocess.run([os.path.join(ROOT, 'tests', 'lab', 'bin', 'vzdump'), str(vmid), '--dumpdir', str(tmp_path),
                             '--mode', 'snapshot', '--compress', 'zstd'], env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    archives = [name for name in os.listdir(str(tmp_path)) if name.endswith('.tar.zst')]
    assert len(archives) == 1
    archive = str(tmp_path / archives[0])
    listing = subprocess.run(['tar', '-tf', archive], capture_output=True, text=True, check=True).stdout.splitlines()
    assert './etc/vzdump/pct.conf' in listing and './root/proof.txt' in listing
    assert not [name for name in listing if name.startswith('./proc/') and name != './proc/']  # one file system only
    proof = subprocess.run(['tar', '-xOf', archive, './root/proof.txt'], capture_output=True, text=True, check=True)
    assert proof.stdout == 'written-inside\n'


# ---------------------------------------------------------------- traffic counters and rate=

BLOB = 4 * 1024 * 1024  # the file a test downloads from a container
SERVE_PORT = 8088


def _serve_blob(api, vmid):
    """A file of BLOB random bytes, served over HTTP from inside the CT for at most 300 s."""
    pct(api.env, vmid, 'sh', '-c', 'mkdir -p /root/blob && head -c %d /dev/urandom > /root/blob/blob' % BLOB)
    pct(api.env, vmid, 'sh', '-c', 'setsid timeout 300 python3 -m http.server %d --directory /root/blob '
                                   '>/dev/null 2>&1 < /dev/null &' % SERVE_PORT)


def _download(ip, timeout=60):
    """GET the blob from the CT; (bytes received, seconds it took). Retries until the server listens."""
    deadline = time.monotonic() + 20
    while True:
        try:
            started = time.monotonic()
            reply = requests.get('http://%s:%d/blob' % (ip, SERVE_PORT), timeout=timeout)
            return len(reply.content), time.monotonic() - started
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


SINK_PORT = 8089
# Inside the CT: count what a connection sends until it ends, answer the count (no single quotes: sh -c '...').
SINK = ('import socket\n'
        's = socket.socket()\n'
        's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
        's.bind(("", %d))\n'
        's.listen(4)\n'
        'while True:\n'
        '    c, _ = s.accept()\n'
        '    n = 0\n'
        '    d = c.recv(65536)\n'
        '    while d:\n'
        '        n += len(d)\n'
        '        d = c.recv(65536)\n'
        '    c.sendall(str(n).encode())\n'
        '    c.close()\n' % SINK_PORT)


def _serve_sink(api, vmid):
    pct(api.env, vmid, 'sh', '-c', "setsid timeout 300 python3 -c '%s' >/dev/null 2>&1 < /dev/null &" % SINK)


def _upload(ip, timeout=60):
    """Send BLOB bytes to the CT's sink; (bytes it counted, seconds until it answered)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            started = time.monotonic()
            with socket.create_connection((ip, SINK_PORT), timeout=timeout) as connection:
                connection.sendall(b'\0' * BLOB)
                connection.shutdown(socket.SHUT_WR)
                answer = connection.recv(64)
            return int(answer), time.monotonic() - started
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _status(api, vmid):
    return api.call('GET', '/nodes/pve/lxc/%d/status/current' % vmid)


def _with_rate(net0, rate):
    parts = [part for part in net0.split(',') if not part.startswith('rate=')]
    return ','.join(parts + (['rate=%s' % rate] if rate else []))


def _tc(*argv, **kwargs):
    prefix = ['nsenter', '-t', str(kwargs['pid']), '-n'] if kwargs.get('pid') else []
    return subprocess.run(prefix + ['tc'] + list(argv), capture_output=True, text=True, timeout=10,
                          check=True).stdout


def _limits(api, vmid):
    """(the htb class on the host veth: what the CT receives, what limits what it sends): PVE's police on
    the veth's ingress, or where this kernel has none, the htb class the simulator puts on the CT's eth0."""
    veth = 'veth%di0' % vmid
    received = _tc('class', 'show', 'dev', veth)
    sent = _tc('filter', 'show', 'dev', veth, 'parent', 'ffff:') if 'ingress' in _tc('qdisc', 'show', 'dev', veth) else ''
    if 'police' not in sent:
        pid = subprocess.run(['lxc-info', '-P', api.env['LAB_LXC_PATH'], '-n', str(vmid), '-p', '-H'],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        sent = _tc('class', 'show', 'dev', 'eth0', pid=pid)
    return received, sent


def test_lxc_counters_count_the_bytes_a_download_moved(api, new_ct):
    vmid = new_ct(False)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    ip, _mac = api.address(vmid)
    _serve_blob(api, vmid)
    _download(ip)  # the server is up (and its first answer counted) before the measured download
    before = _status(api, vmid)
    size, _seconds = _download(ip)
    after = _status(api, vmid)
    assert size == BLOB
    sent, received = after['netout'] - before['netout'], after['netin'] - before['netin']
    # the body, plus HTTP headers and TCP/IP framing (about 66 bytes per 1448-byte segment)
    assert BLOB <= sent <= BLOB * 1.06 + 64 * 1024, (sent, BLOB)
    assert 0 < received < BLOB * 0.1, received  # the request and the ACKs
    resource = [item for item in api.call('GET', '/cluster/resources', type='vm') if item['vmid'] == vmid][0]
    assert resource['netout'] >= after['netout'] and resource['node'] == 'pve'

    api.task('POST', '/nodes/pve/lxc/%d/status/stop' % vmid)
    assert (_status(api, vmid)['netin'], _status(api, vmid)['netout']) == (0, 0)
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    assert _status(api, vmid)['netout'] < 64 * 1024  # a new veth: only what the new start sent (DHCP)


def test_lxc_rate_limits_what_a_container_sends_and_receives(api, new_ct):
    """rate=1 on net0 before the start, rate=2 set while it runs, then none: both directions follow."""
    vmid = new_ct(False)
    net0 = api.call('GET', '/nodes/pve/lxc/%d/config' % vmid)['net0']
    api.call('PUT', '/nodes/pve/lxc/%d/config' % vmid, net0=_with_rate(net0, 1))
    api.task('POST', '/nodes/pve/lxc/%d/status/start' % vmid)
    ip, _mac = api.address(vmid)
    for limit in _limits(api, vmid):  # 1 MiB/s = 8388608 bit/s, burst 1 MiB
        assert 'rate 8388Kbit' in limit and 'burst 1Mb' in limit, limit
    _serve_blob(api, vmid)
    _serve_sink(api, vmid)
    speeds = {}

    def measure(label):
        for direction, transfer in (('sent', _download), ('received', _upload)):
            size, seconds = transfer(ip)
            assert size == BLOB
            speeds['%s %s' % (direction, label)] = size / seconds / 1024 / 1024

    measure('rate=1')
    api.call('PUT', '/nodes/pve/lxc/%d/config' % vmid, net0=_with_rate(net0, 2))
    assert all('rate 16777Kbit' in limit for limit in _limits(api, vmid))
    measure('rate=2')
    api.call('PUT', '/nodes/pve/lxc/%d/config' % vmid, net0=net0)
    assert _limits(api, vmid) == ('', ''), _limits(api, vmid)
    measure('none')
    figures = ', '.join('%s %.2f' % item for item in speeds.items())
    print('MiB/s the CT sent and received, %d MiB each: %s' % (BLOB // 1024 // 1024, figures))
    # the first MiB passes at once (the burst), the rest at the rate; TCP keeps a bit below it
    for direction in ('sent', 'received'):
        assert 0.3 <= speeds[direction + ' rate=1'] <= 1.6, speeds
        assert speeds[direction + ' rate=1'] < speeds[direction + ' rate=2'] <= 3.0, speeds
        assert speeds[direction + ' none'] > 3 * speeds[direction + ' rate=2'], speeds
