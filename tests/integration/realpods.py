# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the real-container tests and benchmark (the lab's ``--lxc`` part, ``.lab/env.lxc``):
runner_api as a service on a scratch database, pct, the site, DNS, cgroups and DHCP leases."""

import collections
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.auth import new_token  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.repository import Repository, open_pool  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.settings import Settings  # noqa: E402  pylint: disable=wrong-import-position
from cloudpods_testing import scratch_database, start_worker, worker_environment  # noqa: E402  pylint: disable=wrong-import-position
from labenv import free_port  # noqa: E402  pylint: disable=wrong-import-position
from podplays import HostDirs  # noqa: E402  pylint: disable=wrong-import-position
from lxclab import read_leases  # noqa: E402  pylint: disable=wrong-import-position

ENV_LXC = os.path.join(ROOT, '.lab', 'env.lxc')


def pct(env, vmid, *command, check=True):
    result = subprocess.run([os.path.join(ROOT, 'tests', 'lab', 'bin', 'pct'), 'exec', str(vmid), '--'] + list(command),
                            env=dict(os.environ, LAB_LXC_PATH=env['LAB_LXC_PATH']), capture_output=True, text=True,
                            timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


SiteReply = collections.namedtuple('SiteReply', 'status_code text headers serial')


def site(ip, host, timeout=3.0):
    """GET / of the pod's site for ``host`` over http; once the pod redirects http to https (it has
    its certificate, role pod_https), over https from the same address with SNI ``host``. The
    certificate is not checked here (https_get with Pebble's root does that)."""
    reply = requests.get('http://%s/' % ip, headers={'Host': host}, timeout=timeout, allow_redirects=False)
    if reply.status_code in (301, 308) and reply.headers.get('Location', '').startswith('https://%s/' % host):
        return https_get(ip, host, None, timeout=timeout)
    return reply


def https_get(ip, name, root, path='/', timeout=10.0):
    """GET https://<name><path> from the pod's address with SNI ``name``, verified against the PEM
    ``root`` (unverified when None): a SiteReply (status_code, text, headers, serial of the
    certificate served, hexadecimal)."""
    if root is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=root)
    with socket.create_connection((ip, 443), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=name) as conn:
            serial = conn.getpeercert(binary_form=True)
            conn.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % (path, name)).encode())
            data = b''
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    serial = '%X' % x509.load_der_x509_certificate(serial).serial_number
    head, _sep, body = data.decode(errors='replace').partition('\r\n\r\n')
    lines = head.split('\r\n')
    headers = dict(line.split(': ', 1) for line in lines[1:] if ': ' in line)
    if headers.get('Transfer-Encoding') == 'chunked':
        body = _unchunk(body)
    return SiteReply(int(lines[0].split()[1]), body, headers, serial)


def download(ip, name, path, timeout=60.0):
    """GET https://<name><path> from the pod's address (SNI ``name``, unverified), the answer read and
    thrown away: (bytes received on the socket, headers and TLS records included; seconds it took)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    received = 0
    with socket.create_connection((ip, 443), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=name) as conn:
            conn.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % (path, name)).encode())
            while True:
                chunk = conn.recv(262144)
                if not chunk:
                    break
                received += len(chunk)
    return received, time.monotonic() - started


def _unchunk(body):
    out, rest = [], body
    while rest:
        size, _sep, rest = rest.partition('\r\n')
        length = int(size.split(';')[0] or '0', 16)
        if length == 0:
            break
        out.append(rest[:length])
        rest = rest[length + 2:]
    return ''.join(out)


# ---------------------------------------------------------------- the customer's way in

SSH_CLIENT_TIMEOUT = 60  # seconds for one ssh/sftp run, far above what it needs


def make_key(directory, name):
    path = os.path.join(str(directory), name)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', name + '@customer.test', '-f', path],
                   check=True, timeout=30)
    with open(path + '.pub') as handle:
        return path, handle.read().strip()


def fingerprint_of(line):
    done = subprocess.run(['ssh-keygen', '-l', '-E', 'sha256', '-f', '-'], input=line + '\n', capture_output=True,
                          text=True, check=True, timeout=30)
    size, fingerprint, rest = done.stdout.split(' ', 2)  # pylint: disable=unused-variable
    return '%s %s' % (fingerprint, rest.strip().rsplit(' ', 1)[-1])


class Pod(object):
    """A provisioned pod as the customer meets it: its address, port and reported host keys."""

    def __init__(self, name, domain, ip, port, host_keys, workdir):
        self.name, self.domain, self.ip, self.port = name, domain, ip, port
        self.host_keys = host_keys
        self.workdir = str(workdir)
        self.known_hosts = os.path.join(self.workdir, 'known_hosts-' + name)
        self.trust_reported_host_keys()

    def trust_reported_host_keys(self):
        """known_hosts = the pod's keys as ssh-keyscan sees them, each checked against the reported fingerprints."""
        scan = subprocess.run(['ssh-keyscan', '-T', '20', '-p', str(self.port), self.ip], capture_output=True,
                              text=True, check=False, timeout=SSH_CLIENT_TIMEOUT)
        lines = [line for line in scan.stdout.splitlines() if line and not line.startswith('#')]
        assert lines, 'ssh-keyscan found no host key at %s:%d: %s' % (self.ip, self.port, scan.stderr)
        for line in lines:
            host, key = line.split(' ', 1)
            assert fingerprint_of(key) in self.host_keys, 'an SSH host key the playbook did not report: ' + key
        with open(self.known_hosts, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')

    def options(self, identity=None):
        options = ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20', '-o', 'StrictHostKeyChecking=yes',
                   '-o', 'UserKnownHostsFile=' + self.known_hosts, '-o', 'GlobalKnownHostsFile=/dev/null',
                   '-o', 'IdentityAgent=none', '-F', '/dev/null']
        if identity:
            options += ['-o', 'IdentitiesOnly=yes', '-i', identity]
        return options

    def ssh(self, user, command, identity=None, extra=()):
        return subprocess.run(['ssh', '-p', str(self.port)] + self.options(identity) + list(extra)
                              + ['%s@%s' % (user, self.ip), command],
                              capture_output=True, text=True, check=False, timeout=SSH_CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)

    def sftp(self, identity, batch, user='web'):
        return subprocess.run(['sftp', '-P', str(self.port), '-b', '-'] + self.options(identity)
                              + ['%s@%s' % (user, self.ip)],
                              input=batch, capture_output=True, text=True, check=False, timeout=SSH_CLIENT_TIMEOUT)


def assert_refused(result, methods='publickey'):
    """Refused by the pod's sshd, which offers only ``methods`` (after a real host key check)."""
    assert result.returncode == 255, (result.returncode, result.stdout, result.stderr)
    assert 'Permission denied (%s)' % methods in result.stderr, result.stderr
    assert 'Host key verification failed' not in result.stderr


def pebble_root(env):
    reply = requests.get(env['LAB_PEBBLE_MANAGEMENT_URL'] + '/roots/0', verify=env['CLOUDPODS_ACME_CA_BUNDLE'], timeout=10)
    reply.raise_for_status()
    return reply.text


class DnsNotAnswered(AssertionError):
    """The lab's PowerDNS gave no usable answer: nothing can be concluded about the name."""


def dns_query(env, name, rtype='A', timeout=3.0):
    """Ask the lab's PowerDNS (``POWERDNS_DNS_PORT``) over UDP; ``(rcode text, sorted answers)``.

    Raises DnsNotAnswered when no nameserver answered (timeout, port closed, network error):
    a dead server is never an empty answer.
    """
    import dns.exception  # pylint: disable=import-outside-toplevel
    import dns.message  # pylint: disable=import-outside-toplevel
    import dns.query  # pylint: disable=import-outside-toplevel
    import dns.rcode  # pylint: disable=import-outside-toplevel
    import dns.rdatatype  # pylint: disable=import-outside-toplevel
    port = int(env['POWERDNS_DNS_PORT'])
    try:
        reply = dns.query.udp(dns.message.make_query(name, rtype), '127.0.0.1', port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsNotAnswered('no nameserver answered %s %s at 127.0.0.1:%d: %s' % (name, rtype, port, exc or type(exc).__name__)) from exc
    wanted = dns.rdatatype.from_text(rtype)
    answers = [rdata.to_text() for rrset in reply.answer if rrset.rdtype == wanted for rdata in rrset]
    return dns.rcode.to_text(reply.rcode()), sorted(answers)


def dns_a(env, name, timeout=3.0):
    """The A records of ``name``; ``[]`` only for a real empty answer (NXDOMAIN, or NODATA).

    No answer at all raises DnsNotAnswered, and so does an answer that is no answer about the
    name (REFUSED: the server hosts no zone for it, SERVFAIL): check those with dns_query.
    """
    rcode, answers = dns_query(env, name, 'A', timeout)
    if rcode not in ('NOERROR', 'NXDOMAIN'):
        raise DnsNotAnswered('%s A: the nameserver answered %s, not records or NXDOMAIN' % (name, rcode))
    return answers


def dns_no_zone(env, name):
    """True when the lab's PowerDNS is up and hosts no zone for ``name`` (it answers REFUSED)."""
    return dns_query(env, name, 'A')[0] == 'REFUSED'


def pve(env, path):
    reply = requests.get(env['PROXMOX_API_URL'] + path, verify=env['PROXMOX_CA_BUNDLE'], timeout=10, headers={
        'Authorization': 'PVEAPIToken=%s=%s' % (env['PROXMOX_API_TOKEN_ID'], env['PROXMOX_API_TOKEN_SECRET'])})
    return reply


def cgroup(env, vmid, key):
    result = subprocess.run(['lxc-cgroup', '-P', env['LAB_LXC_PATH'], '-n', str(vmid), key], capture_output=True,
                            text=True, check=False, timeout=20)
    return result.stdout.strip()


def leases(env):
    """dnsmasq's leases of the lab bridge as {mac: ip} (lxclab.read_leases)."""
    return read_leases(Path(env['LAB_DHCP_LEASES']))


def drop_zone(env, zone):
    """A zone left by an interrupted earlier run would belong to another pod: remove it first."""
    requests.delete('%s/api/v1/servers/%s/zones/%s.' % (env['POWERDNS_API_URL'], env['POWERDNS_SERVER_ID'], zone),
                    headers={'X-API-Key': env['POWERDNS_API_KEY']}, timeout=10)


class Service(object):
    """runner_api as mPanel meets it: gunicorn with the API, one worker, a scratch database."""

    def __init__(self, env, tmp_path):
        self.tmp_path = tmp_path
        self.dirs = HostDirs(tmp_path / 'proxmox-host')
        site = tmp_path / 'site.json'
        site.write_text(json.dumps(self.dirs.extra_vars()))
        self._database = scratch_database(env['DATABASE_URL'], prefix='cloudpods_e2e')
        self.database_url = self._database.__enter__()  # pylint: disable=unnecessary-dunder-call
        self.env = worker_environment(env, self.database_url, extra_vars_file=str(site), poll_seconds=1)
        self.token = new_token()
        self.pool = open_pool(Settings.from_env({'DATABASE_URL': self.database_url}), name='e2e', min_size=1, max_size=2)
        Repository(self.pool).create_token('e2e', 'service', None, self.token)
        port = free_port()
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        self.processes = []
        with open(str(tmp_path / 'api.log'), 'ab') as log:
            self.processes.append(subprocess.Popen(
                [os.path.join(bin_dir, 'gunicorn'), '-c', 'python:runner_api.gunicorn_conf', '-b', '127.0.0.1:%d' % port,
                 '-w', '2', 'runner_api.app:create_app()'],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        self.processes.append(start_worker(self.env, 'e2e', str(self.tmp_path / 'worker.log')))
        self.base = 'http://127.0.0.1:%d/api/cloud-pods' % port
        self._wait_until_serving()

    def _wait_until_serving(self, timeout=180):
        """Until the API answers (its workers load the app first: slow on a loaded machine)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.base + '/plans', timeout=10)
                return
            except requests.RequestException as exc:  # refused while binding, or no answer while loading
                if time.monotonic() > deadline:
                    self.close()
                    raise AssertionError('the API did not answer within %d s (%s):\n%s' % (timeout, exc, self.logs()))
                time.sleep(0.2)

    def restart_worker(self):
        """A new worker with ``self.env`` as it is now (site variables changed)."""
        worker = self.processes.pop()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=90)
        self.processes.append(start_worker(self.env, 'e2e', str(self.tmp_path / 'worker.log')))

    def call(self, method, path, body=None):
        reply = requests.request(method, self.base + path, json=body, timeout=30, headers={
            'Authorization': 'Bearer ' + self.token, 'X-Customer-Id': 'cust-e2e'})
        return reply.status_code, reply.json()

    def close(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
        self.pool.close()
        self._database.__exit__(None, None, None)

    def logs(self):
        return '\n'.join(open(str(self.tmp_path / name), errors='replace').read()[-3000:]
                         for name in ('worker.log', 'api.log'))
