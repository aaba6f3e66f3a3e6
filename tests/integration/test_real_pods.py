# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""End to end with real containers: an order over HTTP becomes a pod whose site answers, and its
customer puts their site on it over SFTP with their own key and gets it served over HTTPS.

Runs against the LXC part of the lab (``tests/lab/lab up --lxc``, settings in ``.lab/env.lxc``):
the LXC-backed simulator, the lab bridge with DHCP, the sshd for pct, and the lab's PowerDNS,
SMTP and PostgreSQL, and Pebble as the ACME CA. runner_api (gunicorn + one worker) runs on a
scratch database. The tests share one pod and run in order: order -> checks, the customer's way in
(SFTP, HTTPS, a key change through the API), repair, suspend and resume through the API, deprovision.
"""

import email
import glob
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from podplays import HostDirs, changed_count, first_boot_changes, run_pod_playbook  # noqa: E402
from realpods import (ENV_LXC, Pod, Service, assert_refused, cgroup, dns_a, dns_no_zone, download, drop_zone, https_get,  # noqa: E402
                      leases, make_key, pct, pebble_root, pve, site)
from labenv import read_env as read_lab_env  # noqa: E402
from runner_api import metering  # noqa: E402
from runner_api.plans import PlanCatalogue  # noqa: E402
from smtplab import Mailbox  # noqa: E402

DOMAIN = 'example-shop.test'
PLAN = 'CLOUD_POD_STARTER'
CUSTOMER = 'jane@example-shop.test'

pytestmark = pytest.mark.real_containers


@pytest.fixture(scope='module')
def lxc_env():
    return read_lab_env(ENV_LXC)


@pytest.fixture(scope='module')
def service(lxc_env, tmp_path_factory):
    drop_zone(lxc_env, DOMAIN)
    running = Service(lxc_env, tmp_path_factory.mktemp('e2e'))
    yield running
    running.close()


@pytest.fixture(scope='module')
def customer_keys(tmp_path_factory):
    """The customer's key pair, a second one of theirs, and the marker a template in a key comment
    would create if order data were ever rendered as a template."""
    directory = tmp_path_factory.mktemp('customer-keys')
    own_path, own_line = make_key(directory, 'jane')
    marker = str(directory / 'rendered')
    # The comment is free text: a template in it must reach the pod as the same text, never run.
    own_line += " {{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker
    return {'own': (own_path, own_line), 'second': make_key(directory, 'jane-laptop'),
            'stranger': make_key(directory, 'stranger'), 'marker': marker}


@pytest.fixture(scope='module')
def active_pod(lxc_env, service, customer_keys):
    """The order, followed to its end. Every later test starts from this pod (and the last one
    removes it; if a test failed before, the pod is removed here)."""
    pod = _order(service, [customer_keys['own'][1]])
    yield pod
    if os.path.exists(os.path.join(lxc_env['LAB_LXC_PATH'], str(pod['vmid']))):
        run_pod_playbook('deprovision', lxc_env, service.dirs, pod=pod['hostname'], timeout=600)


def _order(service, ssh_public_keys):
    status, body = service.call('POST', '/order', {'plan_code': PLAN, 'domain': DOMAIN, 'customer_email': CUSTOMER,
                                                   'ssh_public_keys': ssh_public_keys})
    assert status in (201, 202), body
    started = time.monotonic()
    deadline = started + 600
    pod = body
    while time.monotonic() < deadline:
        _status, pod = service.call('GET', '/' + body['id'])
        if pod['status'] in ('ACTIVE', 'FAILED'):
            break
        time.sleep(0.5)
    assert pod['status'] == 'ACTIVE', 'pod ended %s: %s\n%s' % (pod['status'], pod.get('last_error'), service.logs())
    pod['seconds_to_active'] = time.monotonic() - started
    return pod


def test_order_becomes_a_working_pod(lxc_env, service, active_pod):
    vmid, ip = active_pod['vmid'], active_pod['ip']
    hostname = active_pod['hostname']

    # The container runs, with the Starter plan's limits (1 vCPU, 1024 MiB).
    state = subprocess.run(['lxc-info', '-P', lxc_env['LAB_LXC_PATH'], '-n', str(vmid), '-sH'],
                           capture_output=True, text=True, check=False).stdout.strip()
    assert state == 'RUNNING'
    memory_key = 'memory.max' if os.path.exists('/sys/fs/cgroup/cgroup.controllers') else 'memory.limit_in_bytes'
    assert int(cgroup(lxc_env, vmid, memory_key)) == 1024 * 1024 * 1024
    assert cgroup(lxc_env, vmid, 'cpuset.cpus') == '0'
    config = pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).json()['data']
    assert (config['cores'], config['memory'], config['hostname']) == (1, 1024, hostname)

    # Its address came from the lab's DHCP server, for the container's own MAC address.
    mac = re.search(r'hwaddr=([0-9A-Fa-f:]{17})', config['net0']).group(1).lower()
    assert leases(lxc_env).get(mac) == ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(lxc_env['LAB_BRIDGE_NETWORK'])

    # The lab's PowerDNS answers for the domain with that address, over DNS.
    assert dns_a(lxc_env, 'www.' + DOMAIN) == [ip]
    assert dns_a(lxc_env, DOMAIN) == [ip]

    # The site answers on that address for www.<domain>, rendered by PHP.
    reply = site(ip, 'www.' + DOMAIN)
    assert reply.status_code == 200
    assert hostname in reply.text
    assert '<?php' not in reply.text
    assert re.search(r'PHP \d+\.\d+', reply.text), reply.text[:500]

    # MariaDB inside accepts the customer's user, with the password that exists only in the pod.
    who = pct(lxc_env, vmid, 'mariadb', '--defaults-extra-file=/root/.cloudpod/mariadb.cnf', '-N', '-e',
              'SELECT CURRENT_USER(), DATABASE()')
    user, database = who.stdout.split()
    assert not user.startswith('root@') and database
    mode = pct(lxc_env, vmid, 'stat', '-c', '%a %U', '/root/.cloudpod/mariadb.cnf').stdout.split()
    assert mode == ['600', 'root']
    password = pct(lxc_env, vmid, 'sed', '-n', 's/^password *= *//p', '/root/.cloudpod/mariadb.cnf').stdout.strip()
    assert len(password) >= 16
    assert password not in service.logs()
    with service.pool.connection() as connection:
        rows = connection.execute('SELECT * FROM cloud_pod_events').fetchall()
        tasks = connection.execute('SELECT * FROM cloud_pod_provisioning_tasks').fetchall()
    assert rows and password not in json.dumps([list(row) for row in rows + tasks], default=str)

    # The backup cron entry, run once by hand, writes a real archive of the container.
    cron_file = service.dirs.cron_file(hostname)
    line = [text for text in open(cron_file).read().splitlines() if text and not text.startswith('#') and 'vzdump' in text][0]
    command = line.split(None, 6)[6]  # minute hour day month weekday user command
    result = subprocess.run(['/bin/sh', '-c', command], env=service.env, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr
    archives = [path for path in glob.glob(os.path.join(service.dirs.backup_dir(hostname), '**', 'vzdump-lxc-%s-*' % vmid),
                                           recursive=True) if re.search(r'\.tar(\.zst|\.gz|\.lzo)?$', path)]
    assert archives, os.listdir(service.dirs.backup_dir(hostname))
    listing = subprocess.run(['tar', '-tf', archives[0]], capture_output=True, text=True, check=True).stdout
    assert './etc/vzdump/pct.conf' in listing and './var/www/cloudpod/public/index.php' in listing

    # The welcome mail arrived, with the pod and its address and no secret.
    mails = []
    for path in glob.glob(os.path.join(lxc_env['SMTP_MAILBOX_DIR'], '*.eml')):
        with open(path, 'rb') as handle:
            message = email.message_from_binary_file(handle)
        if CUSTOMER in message.get('To', '') and hostname in message.get('Subject', '') + message.as_string():
            mails.append(message)
    assert len(mails) == 1
    body = mails[0].get_payload(decode=True) if not mails[0].is_multipart() else mails[0].get_payload(0).get_payload(decode=True)
    text = body.decode()
    assert hostname in text and ip in text and password not in text


def _wait_for_operation(service, pod_id, operation, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        _status, pod = service.call('GET', '/' + pod_id)
        progress = pod['progress']
        if progress['operation'] == operation and progress['operation_status'] in ('COMPLETED', 'FAILED'):
            return pod
        assert time.monotonic() < deadline, 'the %s operation did not end: %s\n%s' % (operation, pod, service.logs())
        time.sleep(0.5)


def test_the_customer_uploads_over_sftp_and_https_serves_it(lxc_env, service, active_pod, customer_keys, tmp_path):
    vmid, ip, hostname = active_pod['vmid'], active_pod['ip'], active_pod['hostname']
    own, stranger = customer_keys['own'][0], customer_keys['stranger'][0]

    # The pod detail says how to get in and that the domain has its certificate.
    status, pod = service.call('GET', '/' + active_pod['id'])
    assert status == 200
    assert pod['https']['status'] == 'active' and pod['https']['not_after'], pod['https']
    ssh = pod['ssh']
    assert (ssh['host'], ssh['port'], ssh['user']) == (DOMAIN, 22, 'web')
    assert [key['comment'] for key in ssh['keys']] == [customer_keys['own'][1].split(' ', 2)[2]]
    # The key's comment arrived as text: the template in it was never rendered.
    assert not os.path.exists(customer_keys['marker'])
    keys_file = pct(lxc_env, vmid, 'cat', '/etc/ssh/cloudpod/authorized_keys/web').stdout
    assert customer_keys['own'][1] in keys_file.splitlines()

    # SFTP with the customer's key, the pod's host keys checked against the ones the API reported.
    client = Pod(hostname, DOMAIN, ip, ssh['port'], ssh['host_key_fingerprints'], tmp_path)
    token = uuid.uuid4().hex
    page = tmp_path / 'index.php'
    page.write_text("<?php echo 'uploaded %s on ' . gethostname();\n" % token)
    upload = client.sftp(own, 'put %s /var/www/cloudpod/public/index.php\n' % page)
    assert upload.returncode == 0, upload.stderr

    # https://www.<domain>/, verified against Pebble's root, serves the uploaded page; http redirects.
    root = pebble_root(lxc_env)
    assert dns_a(lxc_env, 'www.' + DOMAIN) == [ip]
    for name in ('www.' + DOMAIN, DOMAIN):
        reply = https_get(ip, name, root)
        assert (reply.status_code, reply.text) == (200, 'uploaded %s on %s' % (token, hostname))
    plain = requests.get('http://%s/' % ip, headers={'Host': 'www.' + DOMAIN}, allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers['Location'] == 'https://www.%s/' % DOMAIN

    # Nobody else gets in: a wrong key, a password, root even with the customer's key.
    assert client.ssh('web', 'true', identity=own).returncode == 0  # the control
    assert_refused(client.ssh('web', 'true', identity=stranger))
    assert_refused(client.ssh('web', 'true', extra=['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password']))
    assert_refused(client.ssh('root', 'true', identity=own))

    # The customer replaces their keys through the API: the old one is refused, the new one works.
    second_path, second_line = customer_keys['second']
    status, task = service.call('PUT', '/%s/ssh-keys' % active_pod['id'], {'ssh_public_keys': [second_line]})
    assert status == 202 and task['type'] == 'SET_SSH_KEYS', task
    pod = _wait_for_operation(service, active_pod['id'], 'SET_SSH_KEYS')
    assert pod['progress']['operation_status'] == 'COMPLETED', (pod, service.logs())
    assert [key['comment'] for key in pod['ssh']['keys']] == ['jane-laptop@customer.test']
    assert_refused(client.ssh('web', 'true', identity=own))
    assert client.ssh('web', 'true', identity=second_path).returncode == 0

    # No private material of the pod anywhere on our side: the TLS key, the SSH host keys, the ACME
    # account key are not in the API's or the worker's log, nor in any row of the database.
    private = pct(lxc_env, vmid, 'sh', '-c', 'cat /etc/letsencrypt/live/cloudpod/privkey.pem /etc/ssh/ssh_host_*_key').stdout
    secrets = [line for line in private.splitlines() if line and not line.startswith('-----') and len(line) > 20]
    for path in pct(lxc_env, vmid, 'find', '/etc/letsencrypt/accounts', '-name', 'private_key.json').stdout.split():
        secrets.append(json.loads(pct(lxc_env, vmid, 'cat', path).stdout)['d'])
    assert len(secrets) > 10
    logs = ''.join(open(str(service.tmp_path / name), errors='replace').read() for name in ('worker.log', 'api.log'))
    with service.pool.connection() as connection:
        rows = [connection.execute('SELECT * FROM %s' % table).fetchall() for table in (
            'cloud_pod_subscriptions', 'cloud_pod_provisioning_tasks', 'cloud_pod_events')]
    stored = json.dumps(rows, default=str)
    assert 'PRIVATE KEY' not in logs + stored
    for secret in secrets:
        assert secret not in logs and secret not in stored


def test_repair_brings_the_site_back(lxc_env, service, active_pod):
    vmid, ip, hostname = active_pod['vmid'], active_pod['ip'], active_pod['hostname']
    pct(lxc_env, vmid, 'systemctl', 'stop', 'nginx')
    pct(lxc_env, vmid, 'rm', '/etc/nginx/conf.d/cloudpod.conf')  # the pod's server block (pod_first_boot_vhost)
    with pytest.raises(requests.ConnectionError):
        site(ip, 'www.' + DOMAIN)

    run = run_pod_playbook('repair', lxc_env, service.dirs, pod=hostname, timeout=600)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    # the server block written again (one of the files of the one command in the pod), nginx started
    files, done = first_boot_changes(run)
    assert files == ['/etc/nginx/conf.d/cloudpod.conf'] and 'service nginx: started' in done, (files, done)
    reply = site(ip, 'www.' + DOMAIN)
    assert reply.status_code == 200 and hostname in reply.text

    again = run_pod_playbook('repair', lxc_env, service.dirs, pod=hostname, timeout=600)
    assert again.rc == 0 and changed_count(again) == 0, again.stdout[-3000:] + again.stderr[-2000:]


def test_the_meter_counts_a_download_and_the_throttle_slows_it(lxc_env, service, active_pod):
    """Issue 16 with real containers: the CT's counters are its veth's bytes, so a download from the pod's
    site raises its usage by the file's size (plus headers and TLS records); the quota's throttle (net0
    rate=, playbook transfer_quota.yml) brings a download down to about the configured rate, and lifting it
    brings the speed back."""
    vmid, ip = active_pod['vmid'], active_pod['ip']
    size = 6 * 1024 * 1024
    pct(lxc_env, vmid, 'sh', '-c', 'head -c %d /dev/urandom > /var/www/cloudpod/public/blob.bin && '
        'chmod 644 /var/www/cloudpod/public/blob.bin' % size)
    meter = metering.Meter(service.pool, metering.ProxmoxResources(
        lxc_env['PROXMOX_API_URL'], lxc_env['PROXMOX_API_TOKEN_ID'], lxc_env['PROXMOX_API_TOKEN_SECRET'],
        lxc_env['PROXMOX_CA_BUNDLE']), PlanCatalogue(Path(HERE).parents[1] / 'playbooks' / 'vars' / 'plans.yml'))

    def sent():
        with service.pool.connection() as connection:
            row = connection.execute('SELECT coalesce(sum(bytes_out), 0) AS sent FROM cloud_pod_transfer_usage '
                                     'WHERE subscription_id = %s', (active_pod['id'],)).fetchone()
        return int(row['sent'])

    meter.run_pass()
    before = sent()
    received, fast = download(ip, DOMAIN, '/blob.bin')
    assert received >= size
    meter.run_pass()
    counted = sent() - before
    # The veth counts frames: the bytes the client read (TLS records and HTTP headers included) plus each
    # packet's Ethernet, IP and TCP headers, 66 bytes a 1448-byte segment at most (4.6%; with segmentation
    # offload far less: 0.6% seen), and the handshake's few kilobytes.
    assert received <= counted <= received * 1.05 + 65536, (received, counted)

    run_pod_playbook('transfer_quota', lxc_env, service.dirs, pod=active_pod['hostname'], rate_mbps='1', timeout=300)
    _received, slow = download(ip, DOMAIN, '/blob.bin', timeout=120)
    # 6 MiB at 1 MiB/s with PVE's 1 MiB burst: about 5 s; unthrottled it is a fraction of a second.
    assert slow >= 3.5 and slow > 5 * fast, (fast, slow)
    run_pod_playbook('transfer_quota', lxc_env, service.dirs, pod=active_pod['hostname'], rate_mbps='0', timeout=300)
    _received, again = download(ip, DOMAIN, '/blob.bin')
    assert again < slow / 3, (fast, slow, again)
    print('download of %d bytes: %.2f s, throttled to 1 MB/s %.2f s, lifted %.2f s; counted %d of %d received'
          % (size, fast, slow, again, counted, received))


def _lxc_state(lxc_env, vmid):
    return subprocess.run(['lxc-info', '-P', lxc_env['LAB_LXC_PATH'], '-n', str(vmid), '-sH'],
                          capture_output=True, text=True, check=False).stdout.strip()


def test_suspend_stops_the_site_and_resume_brings_it_back(lxc_env, service, active_pod):
    """mPanel suspends the pod for non-payment through the API: the site stops answering, the
    container is stopped and not started at boot; resumed, it answers again."""
    vmid, ip, pod_id = active_pod['vmid'], active_pod['ip'], active_pod['id']
    assert site(ip, 'www.' + DOMAIN).status_code == 200
    status, task = service.call('POST', '/%s/suspend' % pod_id, {'reason': 'non-payment'})
    assert status == 202 and task['type'] == 'SUSPEND', task
    pod = _wait_for_operation(service, pod_id, 'SUSPEND')
    assert pod['progress']['operation_status'] == 'COMPLETED', (pod, service.logs())
    assert pod['status'] == 'SUSPENDED' and pod['suspension']['reason'] == 'non-payment'
    assert _lxc_state(lxc_env, vmid) == 'STOPPED'
    config = pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).json()['data']
    assert str(config.get('onboot')) == '0'
    with pytest.raises(requests.ConnectionError):
        site(ip, 'www.' + DOMAIN, timeout=2)
    status, refused = service.call('POST', '/%s/suspend' % pod_id, {'reason': 'abuse'})
    assert status == 409 and refused['pod_status'] == 'SUSPENDED'

    status, task = service.call('POST', '/%s/resume' % pod_id)
    assert status == 202 and task['type'] == 'RESUME', task
    pod = _wait_for_operation(service, pod_id, 'RESUME')
    assert pod['progress']['operation_status'] == 'COMPLETED', (pod, service.logs())
    assert pod['status'] == 'ACTIVE' and pod['suspension'] is None
    assert _lxc_state(lxc_env, vmid) == 'RUNNING'
    config = pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).json()['data']
    assert str(config.get('onboot')) == '1'
    deadline = time.monotonic() + 60
    while True:  # nginx comes up with the container
        try:
            reply = site(pod['ip'], 'www.' + DOMAIN)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, 'the resumed pod\'s site does not answer'
            time.sleep(0.5)
    assert reply.status_code == 200 and active_pod['hostname'] in reply.text


def test_deprovision_removes_the_pod_and_keeps_backups(lxc_env, service, active_pod):
    vmid, ip, hostname = active_pod['vmid'], active_pod['ip'], active_pod['hostname']
    config = pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).json()['data']
    mac = re.search(r'hwaddr=([0-9A-Fa-f:]{17})', config['net0']).group(1).lower()
    before = set(glob.glob(os.path.join(service.dirs.backup_dir(hostname), '**', 'vzdump-*.tar*'), recursive=True))

    run = run_pod_playbook('deprovision', lxc_env, service.dirs, pod=hostname, timeout=600)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]

    assert pve(lxc_env, '/nodes/pve/lxc/%s/config' % vmid).status_code != 200
    assert not os.path.exists(os.path.join(lxc_env['LAB_LXC_PATH'], str(vmid)))
    deadline = time.monotonic() + 30
    while mac in leases(lxc_env) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mac not in leases(lxc_env)
    assert dns_no_zone(lxc_env, 'www.' + DOMAIN)  # PowerDNS answers, and hosts no zone for it
    zone = requests.get('%s/api/v1/servers/%s/zones/%s.' % (lxc_env['POWERDNS_API_URL'], lxc_env['POWERDNS_SERVER_ID'], DOMAIN),
                        headers={'X-API-Key': lxc_env['POWERDNS_API_KEY']}, timeout=10)
    assert zone.status_code == 404
    after = set(glob.glob(os.path.join(service.dirs.backup_dir(hostname), '**', 'vzdump-*.tar*'), recursive=True))
    assert before <= after and len(after) > len(before)  # the final backup, and the earlier one kept
    with pytest.raises(requests.ConnectionError):
        site(ip, 'www.' + DOMAIN, timeout=2)


def test_unreachable_pod_publishes_nothing(lxc_env, tmp_path):
    """SSH to the Proxmox host refused (a wrong address for the pod's node): the run fails at the
    first boot and nothing is published after it: no zone, no backup cron entry, no mail."""
    dirs = HostDirs(tmp_path / 'proxmox-host')
    pod = 'unreach-%s' % uuid.uuid4().hex[:6]
    domain = pod + '.test'
    run = run_pod_playbook('provision', lxc_env, dirs, pod=pod, plan=PLAN, domain=domain, customer_email=CUSTOMER,
                           cloudpods_linked_clones=True, cloudpods_pct_hosts={'pve': '127.0.0.2'})
    try:
        assert run.rc != 0
        assert 'did not complete' in run.stdout
        assert dns_no_zone(lxc_env, domain)
        zone_url = '%s/api/v1/servers/%s/zones/%s.' % (lxc_env['POWERDNS_API_URL'], lxc_env['POWERDNS_SERVER_ID'], domain)
        zone = requests.get(zone_url, headers={'X-API-Key': lxc_env['POWERDNS_API_KEY']}, timeout=10)
        assert zone.status_code == 404
        assert not os.path.exists(dirs.cron_file(pod))
        Mailbox.from_env(lxc_env).prove_alive()  # "no mail" counts only from a live mail server
        for path in glob.glob(os.path.join(lxc_env['SMTP_MAILBOX_DIR'], '*.eml')):
            with open(path, 'rb') as handle:
                assert pod not in email.message_from_binary_file(handle).as_string()
    finally:
        run_pod_playbook('deprovision', lxc_env, dirs, pod=pod, domain=domain, timeout=600)
