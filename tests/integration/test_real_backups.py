# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backups, restore and reinstall with real containers (``tests/lab/lab up --lxc``, ``.lab/env.lxc``).

A pod is provisioned with the playbook (site, DNS, first boot inside); a file written in it comes back
with a restore, also after a restore killed halfway; a reinstall wipes the site and keeps VMID, MAC
address, DHCP address and domain.
"""

import os
import re
import sys
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from podplays import HostDirs, run_pod_playbook, start_pod_playbook  # noqa: E402
from realpods import ENV_LXC, dns_a, drop_zone, make_key, pct, pve, site  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402
from test_provision_killed import kill_tree  # noqa: E402

PLAN = 'CLOUD_POD_STARTER'
WEB_ROOT = '/var/www/cloudpod/public'

pytestmark = pytest.mark.real_containers


@pytest.fixture(scope='module')
def lxc_env():
    return read_lab_env(ENV_LXC)


def ok(run):
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run


def containers_named(env, name):
    return sorted(int(ct['vmid']) for ct in pve(env, '/cluster/resources?type=vm').json()['data']
                  if ct.get('name') == name)


def net0(env, vmid):
    return pve(env, '/nodes/pve/lxc/%s/config' % vmid).json()['data']['net0']


@pytest.fixture(scope='module')
def pod(lxc_env, tmp_path_factory):
    dirs = HostDirs(tmp_path_factory.mktemp('proxmox-host'))
    name = 'rb-%s' % uuid.uuid4().hex[:6]
    domain = name + '.test'
    drop_zone(lxc_env, domain)
    run = ok(run_pod_playbook('provision', lxc_env, dirs, pod=name, plan=PLAN, domain=domain,
                              customer_email='owner@' + domain, cloudpods_linked_clones=True, timeout=900))
    stats = run.report['global_custom_stats']
    yield dict(name=name, domain=domain, dirs=dirs, vmid=int(stats['vmid']), ip=stats['ip'])
    run_pod_playbook('deprovision', lxc_env, dirs, pod=name, timeout=600)


def write(env, vmid, path, text):
    pct(env, vmid, 'sh', '-c', 'printf %s "$1" > "$2"', 'sh', text, path)


def read(env, vmid, path):
    result = pct(env, vmid, 'cat', path, check=False)
    return result.stdout if result.returncode == 0 else None


def test_a_deleted_file_comes_back_with_a_restore(lxc_env, pod):
    name, vmid = pod['name'], pod['vmid']
    marker = os.path.join(WEB_ROOT, 'kept.txt')
    write(lxc_env, vmid, marker, 'from the backup')
    backup = ok(run_pod_playbook('backup_now', lxc_env, pod['dirs'], pod=name)).report['global_custom_stats']['backup']
    pct(lxc_env, vmid, 'rm', marker)
    assert read(lxc_env, vmid, marker) is None

    run = ok(run_pod_playbook('restore', lxc_env, pod['dirs'], pod=name, archive=backup['name'], timeout=900))
    assert containers_named(lxc_env, name) == [vmid]
    assert read(lxc_env, vmid, marker) == 'from the backup'
    reply = requests.get('http://%s/kept.txt' % pod['ip'], headers={'Host': pod['domain']}, timeout=10,
                         allow_redirects=False)
    assert reply.status_code in (200, 301, 308)
    assert site(pod['ip'], pod['domain']).status_code == 200  # the pod answers at the same address
    safety = run.report['global_custom_stats']['restored']['safety']
    assert os.path.exists(safety) and safety != backup['volid']


def test_a_restore_killed_halfway_leaves_one_pod_and_the_next_run_finishes(lxc_env, pod):
    name, vmid = pod['name'], pod['vmid']
    control = LabControl.from_env(lxc_env)
    in_archive, after_backup = os.path.join(WEB_ROOT, 'in-archive.txt'), os.path.join(WEB_ROOT, 'after-backup.txt')
    write(lxc_env, vmid, in_archive, 'A')
    backup = ok(run_pod_playbook('backup_now', lxc_env, pod['dirs'], pod=name)).report['global_custom_stats']['backup']
    write(lxc_env, vmid, after_backup, 'B')
    archives_before = set(os.listdir(pod['dirs'].backup_dir(name)))

    control.hold('vzrestore')
    handle = start_pod_playbook('restore', lxc_env, pod['dirs'], pod=name, archive=backup['name'])
    try:
        control.wait_held('vzrestore', timeout=300)
        kill_tree(handle.pid)
        assert handle.process.wait(timeout=60) == -9
    finally:
        control.release()
    handle.wait()
    # PVE's task goes on without the playbook: wait until the CT is unlocked, then it is one of the two states.
    for _attempt in range(600):
        status = pve(lxc_env, '/nodes/pve/lxc/%s/status/current' % vmid).json()['data']
        if not status.get('lock'):
            break
        time.sleep(0.5)
    assert containers_named(lxc_env, name) == [vmid]
    rootfs = os.path.join(lxc_env['LAB_LXC_PATH'], str(vmid), 'rootfs')
    assert os.path.exists(rootfs + in_archive)  # old pod (A and B) or restored (A only): never neither
    new = set(os.listdir(pod['dirs'].backup_dir(name))) - archives_before
    safety = [entry for entry in new if re.match(r'vzdump-lxc-\d+-.*\.tar\.zst\Z', entry)]
    assert len(safety) == 1  # the safety archive is there

    ok(run_pod_playbook('restore', lxc_env, pod['dirs'], pod=name, archive=backup['name'], timeout=900))
    assert containers_named(lxc_env, name) == [vmid]
    assert read(lxc_env, vmid, in_archive) == 'A' and read(lxc_env, vmid, after_backup) is None
    assert site(pod['ip'], pod['domain']).status_code == 200


def test_reinstall_wipes_the_site_and_keeps_address_and_domain(lxc_env, pod, tmp_path):
    name, vmid = pod['name'], pod['vmid']
    mac = net0(lxc_env, vmid)
    # the customer's key, as the ssh_keys playbook would have put it (the file pod_first_boot writes)
    key_line = make_key(tmp_path, 'owner')[1]
    keys_file = '/etc/ssh/cloudpod/authorized_keys/web'
    write(lxc_env, vmid, keys_file, read(lxc_env, vmid, keys_file) + key_line + '\n')
    write(lxc_env, vmid, os.path.join(WEB_ROOT, 'index.php'), '<h1>the old page</h1>')  # the page the site serves
    write(lxc_env, vmid, os.path.join(WEB_ROOT, 'old.txt'), 'old')
    # PHP's opcache looks at a script's timestamp at most every 2 s (opcache.revalidate_freq): the
    # tests before this one fetched the starter index.php just now, so the new one may take a moment.
    deadline = time.monotonic() + 30
    while 'the old page' not in site(pod['ip'], pod['domain']).text and time.monotonic() < deadline:
        time.sleep(0.5)
    assert 'the old page' in site(pod['ip'], pod['domain']).text

    run = ok(run_pod_playbook('reinstall', lxc_env, pod['dirs'], pod=name, timeout=900))
    stats = run.report['global_custom_stats']
    assert containers_named(lxc_env, name) == [vmid] and int(stats['vmid']) == vmid
    assert net0(lxc_env, vmid) == mac and stats['ip'] == pod['ip']
    assert read(lxc_env, vmid, os.path.join(WEB_ROOT, 'old.txt')) is None
    reply = site(pod['ip'], pod['domain'])
    assert reply.status_code == 200 and 'the old page' not in reply.text
    assert dns_a(lxc_env, pod['domain']) == [pod['ip']]
    assert os.path.exists(stats['reinstalled']['backup'])
    assert key_line in read(lxc_env, vmid, keys_file)  # the keys are kept
