# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTPS of a real pod's domain (role pod_https) against the lab's Pebble, with real validation.

Runs against the LXC part of the lab (``tests/lab/lab up --lxc``, ``.lab/env.lxc``): Pebble resolves
the pod's domain through the lab's PowerDNS and fetches the HTTP-01 challenge from the pod on port
80. Certificates are verified against Pebble's current root (its management port, /roots/0).
The tests share one pod with a domain and run in order; the test that stops Pebble runs last (a
restarted Pebble has new roots).
"""

import glob
import json
import os
import re
import socket
import ssl
import sys
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from podplays import HostDirs, changed_count, run_pod_playbook  # noqa: E402
from realpods import ENV_LXC, drop_zone, https_get, pct, pebble_root, site  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402

PLAN = 'CLOUD_POD_STARTER'
CUSTOMER = 'jane@example-shop.test'
STATE = '/var/lib/cloudpod/https.json'
LIVE = '/etc/letsencrypt/live/cloudpod'

pytestmark = pytest.mark.real_containers


@pytest.fixture(scope='module')
def lxc_env():
    env = read_lab_env(ENV_LXC)
    if not env.get('CLOUDPODS_ACME_DIRECTORY'):
        pytest.fail('the lab has no Pebble (CLOUDPODS_ACME_DIRECTORY missing in .lab/env.lxc): tests/lab/lab up --lxc')
    return env


@pytest.fixture(scope='module')
def outputs():
    """Every playbook output of this module, searched for key material at the end."""
    return []


@pytest.fixture(scope='module')
def pods(lxc_env, tmp_path_factory):
    """Pods made by the tests here: deprovisioned at the end."""
    made = []
    dirs = HostDirs(tmp_path_factory.mktemp('https-host'))
    yield dirs, made
    for pod, domain in made:
        run_pod_playbook('deprovision', lxc_env, dirs, pod=pod, domain=domain, timeout=600)


def provision(lxc_env, pods, outputs, domain, **settings):
    dirs, made = pods
    pod = 'https-%s' % uuid.uuid4().hex[:6]
    if domain:
        drop_zone(lxc_env, domain)
    made.append((pod, domain))
    extra = dict(pod=pod, plan=PLAN, customer_email=CUSTOMER, cloudpods_linked_clones=True, **settings)
    if domain:
        extra['domain'] = domain
    run = run_pod_playbook('provision', lxc_env, dirs, **extra)
    outputs.append(run.stdout + run.stderr)
    assert run.rc == 0, run.stdout[-5000:] + run.stderr[-2000:]
    stats = run.report['global_custom_stats']
    return dict(pod=pod, domain=domain, vmid=stats['vmid'], ip=stats['ip'], https=stats['https'])


def pod_state(env, vmid):
    return json.loads(pct(env, vmid, 'cat', STATE).stdout)


@pytest.fixture(scope='module')
def pod(lxc_env, pods, outputs):
    domain = 'tls-%s.test' % uuid.uuid4().hex[:6]
    return provision(lxc_env, pods, outputs, domain)


def test_provision_serves_the_domain_over_https(lxc_env, pod):
    https = pod['https']
    assert https['status'] == 'active' and https['reason'] == '', https
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', https['not_after'])
    root = pebble_root(lxc_env)
    for name in (pod['domain'], 'www.' + pod['domain']):
        status, body, _headers, _serial = https_get(pod['ip'], name, root)
        assert status == 200 and pod['pod'] in body  # the starter page, rendered by PHP
    # a certificate from another CA does not verify: the check above means Pebble's root
    with pytest.raises(ssl.SSLError):
        https_get(pod['ip'], pod['domain'], open(lxc_env['CLOUDPODS_ACME_CA_BUNDLE']).read())

    # http:// redirects to https://, the ACME path stays on port 80
    reply = requests.get('http://%s/some/page?x=1' % pod['ip'], headers={'Host': 'www.' + pod['domain']},
                         allow_redirects=False, timeout=10)
    assert reply.status_code == 301 and reply.headers['Location'] == 'https://www.%s/some/page?x=1' % pod['domain']
    token = uuid.uuid4().hex
    pct(lxc_env, pod['vmid'], 'sh', '-c', 'echo %s > /var/www/cloudpod/acme/.well-known/acme-challenge/probe' % token)
    reply = requests.get('http://%s/.well-known/acme-challenge/probe' % pod['ip'], headers={'Host': pod['domain']},
                         allow_redirects=False, timeout=10)
    assert reply.status_code == 200 and reply.text.strip() == token
    pct(lxc_env, pod['vmid'], 'rm', '/var/www/cloudpod/acme/.well-known/acme-challenge/probe')

    # the pod renews on its own: its timer is on, Debian's certbot.timer is off
    assert pct(lxc_env, pod['vmid'], 'systemctl', 'is-active', 'cloudpod-https.timer', check=False).stdout.strip() == 'active'
    assert pct(lxc_env, pod['vmid'], 'systemctl', 'is-enabled', 'certbot.timer', check=False).stdout.strip() != 'enabled'
    assert pod_state(lxc_env, pod['vmid'])['status'] == 'active'


def test_forced_renewal_serves_a_new_certificate_without_a_playbook(lxc_env, pod):
    root = pebble_root(lxc_env)
    _status, _body, _headers, before = https_get(pod['ip'], 'www.' + pod['domain'], root)
    # what the pod's timer runs (cloudpod-https.service: 'cloudpod-https run'), with the renewal forced
    result = pct(lxc_env, pod['vmid'], 'python3', '/usr/local/lib/cloudpod-https.py', 'run', '--force-renewal')
    assert 'certificate issued' in result.stdout, result.stdout + result.stderr
    # nginx -s reload returns at once; its new workers take over gracefully
    deadline = time.monotonic() + 30
    while True:
        status, body, _headers, after = https_get(pod['ip'], 'www.' + pod['domain'], root)
        if after != before or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and pod['pod'] in body
    assert after != before
    assert pod_state(lxc_env, pod['vmid'])['serial'].replace(':', '').upper().lstrip('0') == after.lstrip('0')


def test_repair_restores_a_deleted_key_and_certificate(lxc_env, pods, outputs, pod):
    dirs, _made = pods
    root = pebble_root(lxc_env)
    _status, _body, _headers, serial = https_get(pod['ip'], pod['domain'], root)
    pct(lxc_env, pod['vmid'], 'rm', LIVE + '/privkey.pem', LIVE + '/cert.pem')
    assert pct(lxc_env, pod['vmid'], 'test', '-e', LIVE + '/privkey.pem', check=False).returncode != 0

    run = run_pod_playbook('repair', lxc_env, dirs, pod=pod['pod'], timeout=600)
    outputs.append(run.stdout + run.stderr)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert changed_count(run) >= 1
    assert 'restored %s/privkey.pem' % LIVE in run.stdout
    assert pct(lxc_env, pod['vmid'], 'test', '-f', LIVE + '/privkey.pem', check=False).returncode == 0
    assert run.report['global_custom_stats']['https']['status'] == 'active'
    pct(lxc_env, pod['vmid'], 'systemctl', 'reload', 'nginx')  # nginx reads the restored files
    status, _body, _headers, now = https_get(pod['ip'], pod['domain'], root)
    assert status == 200 and now == serial  # the same certificate, from certbot's archive

    again = run_pod_playbook('repair', lxc_env, dirs, pod=pod['pod'], timeout=600)
    outputs.append(again.stdout + again.stderr)
    assert again.rc == 0 and changed_count(again) == 0, again.stdout[-4000:]

    # the dry run of the https playbook says nothing would change and issues nothing
    dry = run_pod_playbook('https', lxc_env, dirs, pod=pod['pod'], check=True, diff=True, timeout=600)
    outputs.append(dry.stdout + dry.stderr)
    assert dry.rc == 0 and changed_count(dry) == 0, dry.stdout[-4000:]


def test_dry_run_shows_a_removed_certificate_and_issues_nothing(lxc_env, pods, outputs, pod):
    dirs, _made = pods
    pct(lxc_env, pod['vmid'], 'sh', '-c', 'rm -rf /etc/letsencrypt/live/cloudpod /etc/letsencrypt/archive/cloudpod')
    dry = run_pod_playbook('https', lxc_env, dirs, pod=pod['pod'], check=True, diff=True, timeout=600)
    outputs.append(dry.stdout + dry.stderr)
    assert dry.rc == 0 and changed_count(dry) >= 1, dry.stdout[-4000:]
    assert 'would issue a certificate' in dry.stdout
    assert pct(lxc_env, pod['vmid'], 'test', '-e', LIVE, check=False).returncode != 0  # nothing issued

    # the https playbook (what runner_api queues for pending pods) issues a new one
    run = run_pod_playbook('https', lxc_env, dirs, pod=pod['pod'], timeout=600)
    outputs.append(run.stdout + run.stderr)
    assert run.rc == 0 and run.report['global_custom_stats']['https']['status'] == 'active', run.stdout[-4000:]
    status, _body, _headers, _serial = https_get(pod['ip'], pod['domain'], pebble_root(lxc_env))
    assert status == 200


def test_no_private_key_material_in_the_output(lxc_env, outputs, pod):
    keys = [pct(lxc_env, pod['vmid'], 'cat', LIVE + '/privkey.pem').stdout]
    keys += [pct(lxc_env, pod['vmid'], 'cat', path).stdout for path in pct(
        lxc_env, pod['vmid'], 'find', '/etc/letsencrypt/accounts', '-name', 'private_key.json').stdout.split()]
    assert len(keys) >= 2 and 'PRIVATE KEY' in keys[0]
    secrets = []
    for key in keys:
        if 'PRIVATE KEY' in key:  # PEM: each base64 line of the body
            secrets += [line for line in key.splitlines() if line and not line.startswith('-----')]
        else:  # the ACME account key, a JWK: its private members
            jwk = json.loads(key)
            secrets += [jwk[member] for member in ('d', 'p', 'q', 'dp', 'dq', 'qi') if member in jwk]
    assert secrets
    journal = pct(lxc_env, pod['vmid'], 'journalctl', '-u', 'cloudpod-https', '--no-pager', check=False).stdout
    for text in outputs + [journal]:
        for secret in secrets:
            assert secret not in text, 'private key material in the output'


def test_pod_without_domain_gets_no_certificate(lxc_env, pods, outputs):
    pod = provision(lxc_env, pods, outputs, '')
    assert pod['https']['status'] == 'none' and pod['https']['not_after'] == ''
    assert 'no domain' in pod['https']['reason']
    assert pct(lxc_env, pod['vmid'], 'test', '-e', LIVE, check=False).returncode != 0
    with pytest.raises(OSError):
        socket.create_connection((pod['ip'], 443), timeout=5).close()
    reply = site(pod['ip'], pod['pod'])
    assert reply.status_code == 200 and pod['pod'] in reply.text


def _pebble():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'lab'))
    import lab  # pylint: disable=import-outside-toplevel
    instance = lab.Lab()
    return instance, next(service for service in instance.services if isinstance(service, lab.PebbleService))


def test_ca_down_leaves_https_pending_then_the_pod_gets_it_alone(lxc_env, pods, outputs):
    lab_instance, pebble = _pebble()
    pebble.stop()
    try:
        pod = provision(lxc_env, pods, outputs, 'late-%s.test' % uuid.uuid4().hex[:6], cloudpods_https_retry=5)
        https = pod['https']
        assert https['status'] == 'pending' and https['not_after'] == '', https
        assert 'ACME CA unreachable' in https['reason'], https
        reply = site(pod['ip'], 'www.' + pod['domain'])  # the site over HTTP meanwhile
        assert reply.status_code == 200 and pod['pod'] in reply.text
    finally:
        pebble.start()
        lab_instance._wait_healthy(pebble)  # pylint: disable=protected-access
    root = pebble_root(lxc_env)
    deadline = time.monotonic() + 240  # the pod's timer: every 5 s here
    while True:
        try:
            status, body, _headers, _serial = https_get(pod['ip'], 'www.' + pod['domain'], root)
            break
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise AssertionError('no certificate after Pebble came back: %s' % pod_state(lxc_env, pod['vmid']))
            time.sleep(2)
    assert status == 200 and pod['pod'] in body
    assert pod_state(lxc_env, pod['vmid'])['status'] == 'active'
    logs = glob.glob(os.path.join(os.path.dirname(lxc_env['CLOUDPODS_ACME_CA_BUNDLE']), 'pebble', '*.log'))
    assert logs  # Pebble's own log is where the lab keeps it
