# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The customer's way in, with real containers (``tests/lab/lab up --lxc``): SSH and SFTP with the
customer's keys only, through the host's own OpenSSH clients.

Every connection checks the pod's host key for real: the known_hosts file holds the keys
ssh-keyscan fetched, kept only when their fingerprints are the ones the playbook reported
(set_stats ssh_host_keys). Clients run with BatchMode (no prompt can hang a test), a connect
timeout and a bounded run time. The pods are provisioned with the collection's playbooks, as
runner_api's worker runs them (linked clones); one runs sshd on a port of the site's choosing.
"""

import os
import re
import sys
import textwrap
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from podplays import HostDirs, changed_count, first_boot_changes, run_pod_playbook  # noqa: E402
from realpods import ENV_LXC, Pod, assert_refused, drop_zone, fingerprint_of, make_key, pct, site  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402
from smtplab import Mailbox  # noqa: E402

pytestmark = pytest.mark.real_containers

PLAN = 'CLOUD_POD_STARTER'
PORT = 2222  # not sshd's default: the setting cloudpods_ssh_port is really used
USER = 'web'
WEB_ROOT = '/var/www/cloudpod/public'
AUTHORIZED_KEYS = '/etc/ssh/cloudpod/authorized_keys/' + USER
DROP_IN = '/etc/ssh/sshd_config.d/00-cloudpod.conf'


def key_lines(env, vmid):
    """The keys in the pod's keys file (its comment line left out)."""
    text = pct(env, vmid, 'cat', AUTHORIZED_KEYS).stdout
    assert text.endswith('\n') and text.startswith('# ')
    return [line for line in text.splitlines() if not line.startswith('#')]


def stats(run):
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.report['global_custom_stats']


def no_private_host_keys(env, vmid, *runs):
    """No run's output holds private key material, in general or the pod's own host keys."""
    private = pct(env, vmid, 'sh', '-c', 'cat /etc/ssh/ssh_host_*_key').stdout
    secrets = [line for line in private.splitlines() if line and 'PRIVATE KEY' not in line and len(line) > 20]
    assert secrets
    for run in runs:
        text = run.stdout + run.stderr
        assert 'PRIVATE KEY' not in text
        for line in secrets:
            assert line not in text


@pytest.fixture(scope='module')
def lxc_env():
    return read_lab_env(ENV_LXC)


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp('keys')
    return dict((name, make_key(directory, name)) for name in ('first', 'second', 'stranger'))


@pytest.fixture(scope='module')
def dirs(tmp_path_factory):
    return HostDirs(tmp_path_factory.mktemp('proxmox-host'))


@pytest.fixture(scope='module')
def pods(lxc_env, dirs, keys, tmp_path_factory):
    """Two pods: 'keyed' (a domain, the first key, sshd on PORT) and 'bare' (no domain, no keys, port 22)."""
    workdir = tmp_path_factory.mktemp('ssh')
    made = {}
    runs = {}
    suffix = uuid.uuid4().hex[:6]
    specs = {
        'keyed': dict(pod='access-%s' % suffix, domain='access-%s.test' % suffix, ssh_public_keys=[keys['first'][1]],
                      cloudpods_ssh_port=PORT),
        'bare': dict(pod='bare-%s' % suffix),
    }
    try:
        for label, spec in specs.items():
            if spec.get('domain'):
                drop_zone(lxc_env, spec['domain'])
            run = run_pod_playbook('provision', lxc_env, dirs, plan=PLAN, customer_email=spec['pod'] + '@customer.test',
                                   cloudpods_linked_clones=True, timeout=900, **spec)
            reported = stats(run)
            runs[label] = run
            made[label] = dict(spec, vmid=reported['vmid'], ip=reported['ip'], stats=reported,
                               pod_obj=Pod(spec['pod'], spec.get('domain', ''), reported['ip'],
                                           reported['ssh']['port'], reported['ssh_host_keys'], workdir))
        made['runs'] = runs
        yield made
    finally:
        for label, spec in specs.items():
            run_pod_playbook('deprovision', lxc_env, dirs, pod=spec['pod'], timeout=900,
                             **({'domain': spec['domain']} if spec.get('domain') else {}))


def test_provision_reports_the_way_in_and_pods_have_their_own_host_keys(lxc_env, pods):
    keyed, bare = pods['keyed'], pods['bare']
    assert keyed['stats']['ssh'] == {'user': USER, 'port': PORT}
    assert bare['stats']['ssh'] == {'user': USER, 'port': 22}
    for pod in (keyed, bare):
        host_keys = pod['stats']['ssh_host_keys']
        assert host_keys and all(re.match(r'^SHA256:[A-Za-z0-9+/]{43} \((ED25519|ECDSA|RSA)\)\Z', key) for key in host_keys)
        assert any(key.endswith('(ED25519)') for key in host_keys)
        # what the pod's sshd really presents (checked by Pod.trust_reported_host_keys as well)
        inside = pct(lxc_env, pod['vmid'], 'sh', '-c', 'for f in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf "$f"; done')
        assert sorted(line.split()[1] for line in inside.stdout.splitlines()) == sorted(k.split()[0] for k in host_keys)
        # made at the clone's first start by the template's unit, before sshd (first-boot.sh had nothing to make)
        unit = pct(lxc_env, pod['vmid'], 'systemctl', 'show', '-p', 'Result', '-p', 'ExecMainStartTimestampMonotonic',
                   'cloudpod-ssh-host-keys.service').stdout.split()
        assert 'Result=success' in unit and 'ExecMainStartTimestampMonotonic=0' not in unit, unit
    for run in pods['runs'].values():
        assert 'SSH host keys: generated' not in run.stdout
    # each clone made its own keys: two pods share none, and the template carries none
    assert not set(keyed['stats']['ssh_host_keys']) & set(bare['stats']['ssh_host_keys'])
    template_ssh = os.path.join(lxc_env['LAB_LXC_PATH'], '9000', 'rootfs', 'etc', 'ssh')
    assert os.path.isdir(template_ssh)  # the template has an SSH server...
    assert not [name for name in os.listdir(template_ssh) if name.startswith('ssh_host_')]  # ...and no host keys
    for run in pods['runs'].values():
        no_private_host_keys(lxc_env, keyed['vmid'], run)
        no_private_host_keys(lxc_env, bare['vmid'], run)


def test_welcome_mail_says_how_to_connect(lxc_env, pods, keys):
    mailbox = Mailbox.from_env(lxc_env)
    private = pct(lxc_env, pods['keyed']['vmid'], 'cat', '/etc/ssh/ssh_host_ed25519_key').stdout.splitlines()[1]
    keyed, bare = [mailbox.messages(to=pods[label]['pod'] + '@customer.test') for label in ('keyed', 'bare')]
    assert len(keyed) == 1 and len(bare) == 1
    text = Mailbox.text(keyed[0])
    assert 'sftp -P %d %s@%s\n' % (PORT, USER, pods['keyed']['domain']) in text
    assert 'sftp -P %d %s@%s ' % (PORT, USER, pods['keyed']['ip']) in text
    assert 'Web root:   %s' % WEB_ROOT in text
    assert 'Your keys:  %s' % fingerprint_of(keys['first'][1]).split()[0] in text
    for host_key in pods['keyed']['stats']['ssh_host_keys']:
        assert '\n  %s\n' % host_key in text
    assert 'PRIVATE' not in text and private not in text and keys['first'][1].split()[1] not in text
    text = Mailbox.text(bare[0])
    assert 'sftp -P 22 %s@%s\n' % (USER, pods['bare']['ip']) in text
    assert 'none yet: add your SSH public key in the control panel' in text
    assert all(host_key in text for host_key in pods['bare']['stats']['ssh_host_keys'])


def test_sftp_upload_with_the_key_is_served_by_the_site(lxc_env, pods, keys):
    keyed = pods['keyed']
    pod = keyed['pod_obj']
    token = uuid.uuid4().hex
    page = textwrap.dedent('''\
        <?php
        $written = file_put_contents(__DIR__ . '/written-by-php.txt', 'ok') !== false;
        echo 'uploaded %s by ' . posix_getpwuid(posix_geteuid())['name'] . ($written ? ' wrote' : ' could not write');
        ''' % token)
    local = os.path.join(pod.workdir, 'index.php')
    with open(local, 'w') as handle:
        handle.write(page)
    upload = pod.sftp(keys['first'][0], 'put %s %s/index.php\nls -l %s\n' % (local, WEB_ROOT, WEB_ROOT))
    assert upload.returncode == 0, upload.stderr
    # served by PHP for the domain (the pod's address, the domain as Host), running as the customer,
    # and able to write the site's own files
    reply = site(pod.ip, pod.domain)
    assert reply.status_code == 200
    assert reply.text == 'uploaded %s by %s wrote' % (token, USER)
    owner = pct(lxc_env, keyed['vmid'], 'stat', '-c', '%U %a', WEB_ROOT, WEB_ROOT + '/index.php',
                WEB_ROOT + '/written-by-php.txt').stdout.split('\n')
    assert owner[:3] == ['%s 755' % USER, '%s 644' % USER, '%s 644' % USER]
    # Nginx still reaches PHP-FPM through its socket, which stays www-data's
    socket = pct(lxc_env, keyed['vmid'], 'sh', '-c', 'stat -L -c "%U %G %a" /run/php/php-fpm.sock').stdout.split()
    assert socket == ['www-data', 'www-data', '660']

    # a shell too: the account is unprivileged, without sudo
    shell = pod.ssh(USER, 'id -un; id -u; command -v sudo || echo no-sudo', identity=keys['first'][0])
    assert shell.returncode == 0, shell.stderr
    name, uid, sudo = shell.stdout.split()
    assert (name, sudo) == (USER, 'no-sudo') and int(uid) >= 1000


def test_only_the_customer_key_gets_in(lxc_env, pods, keys):
    keyed = pods['keyed']
    pod = keyed['pod_obj']
    first, stranger = keys['first'][0], keys['stranger'][0]
    # the key works (a control for every refusal below)
    assert pod.ssh(USER, 'true', identity=first).returncode == 0
    # a wrong key: refused, and the server offers nothing but publickey
    assert_refused(pod.ssh(USER, 'true', identity=stranger))
    # no password, no keyboard-interactive: the server does not even offer them
    for method in ('password', 'keyboard-interactive'):
        assert_refused(pod.ssh(USER, 'true', extra=['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=' + method]))
    # root: refused even with the customer's key in every file sshd could read for root
    pct(lxc_env, keyed['vmid'], 'sh', '-c', 'install -d -m 700 /root/.ssh && cp %s /root/.ssh/authorized_keys && cp %s %s'
        % (AUTHORIZED_KEYS, AUTHORIZED_KEYS, '/etc/ssh/cloudpod/authorized_keys/root'))
    try:
        assert_refused(pod.ssh('root', 'true', identity=first))
    finally:
        pct(lxc_env, keyed['vmid'], 'rm', '-f', '/root/.ssh/authorized_keys', '/etc/ssh/cloudpod/authorized_keys/root')
    # ssh runs and starts with the pod
    assert pct(lxc_env, keyed['vmid'], 'systemctl', 'is-enabled', 'ssh').stdout.strip() == 'enabled'
    # sshd's effective settings are the drop-in's (it is read first: its values win)
    effective = pct(lxc_env, keyed['vmid'], 'sshd', '-T').stdout.lower().splitlines()
    for line in ('port %d' % PORT, 'permitrootlogin no', 'passwordauthentication no', 'kbdinteractiveauthentication no',
                 'pubkeyauthentication yes', 'authenticationmethods publickey', 'allowusers %s' % USER,
                 'authorizedkeysfile /etc/ssh/cloudpod/authorized_keys/%u'):
        assert line in effective, line
    # the pod made without keys: the account exists, and nobody gets in
    bare = pods['bare']['pod_obj']
    assert_refused(bare.ssh(USER, 'true', identity=first))
    assert pct(lxc_env, pods['bare']['vmid'], 'id', '-un', USER).stdout.strip() == USER


def test_repair_restores_the_keys_and_sshd_settings(lxc_env, pods, keys, dirs):
    keyed = pods['keyed']
    pod, vmid, first = keyed['pod_obj'], keyed['vmid'], keys['first']
    # drift: the key removed, password login switched on (and allowed besides keys)
    pct(lxc_env, vmid, 'sh', '-c', 'sed -i "/^ssh-/d" %s && sed -i -e "s/^PasswordAuthentication no/PasswordAuthentication yes/" '
        '-e "s/^AuthenticationMethods publickey/AuthenticationMethods any/" %s && systemctl reload ssh' % (AUTHORIZED_KEYS, DROP_IN))
    assert_refused(pod.ssh(USER, 'true', identity=first[0]), methods='publickey,password')

    common = dict(pod=keyed['pod'], cloudpods_ssh_port=PORT, ssh_public_keys=[first[1]])
    # the dry run shows what it would change, and changes nothing
    dry = run_pod_playbook('repair', lxc_env, dirs, check=True, diff=True, timeout=900, **common)
    assert dry.rc == 0, dry.stdout[-4000:] + dry.stderr[-2000:]
    diffs = [result.get('diff') for result in dry.results if result.get('diff')]
    shown = repr(diffs)
    assert 'PasswordAuthentication no' in shown and DROP_IN in shown
    assert first[1] in shown and AUTHORIZED_KEYS in shown
    assert key_lines(lxc_env, vmid) == []
    assert 'PasswordAuthentication yes' in pct(lxc_env, vmid, 'cat', DROP_IN).stdout

    repaired = run_pod_playbook('repair', lxc_env, dirs, timeout=900, **common)
    reported = stats(repaired)
    assert reported['ssh_host_keys'] == keyed['stats']['ssh_host_keys']
    # sshd's drop-in and the keys written again by the one command in the pod, sshd reloaded after 'sshd -t'
    files, done = first_boot_changes(repaired)
    assert files == [DROP_IN, AUTHORIZED_KEYS] and 'service ssh: reloaded' in done, (files, done)
    assert key_lines(lxc_env, vmid) == [first[1]]
    assert pod.ssh(USER, 'true', identity=first[0]).returncode == 0
    assert_refused(pod.ssh(USER, 'true', extra=['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password']))

    again = run_pod_playbook('repair', lxc_env, dirs, timeout=900, **common)
    assert again.rc == 0 and changed_count(again) == 0, again.stdout[-4000:]

    # without ssh_public_keys, repair leaves the keys as they are and says so
    kept = run_pod_playbook('repair', lxc_env, dirs, timeout=900, pod=keyed['pod'], cloudpods_ssh_port=PORT)
    assert kept.rc == 0 and changed_count(kept) == 0, kept.stdout[-4000:]
    assert any('left as they are' in str(result.get('msg', '')) for result in kept.results)
    assert key_lines(lxc_env, vmid) == [first[1]]
    no_private_host_keys(lxc_env, vmid, dry, repaired, again, kept)


def test_ssh_keys_playbook_replaces_the_keys(lxc_env, pods, keys, dirs):
    keyed = pods['keyed']
    pod, vmid = keyed['pod_obj'], keyed['vmid']
    first, second = keys['first'], keys['second']
    common = dict(pod=keyed['pod'], cloudpods_ssh_port=PORT, ssh_public_keys=[second[1]])

    dry = run_pod_playbook('ssh_keys', lxc_env, dirs, check=True, diff=True, timeout=900, **common)
    assert dry.rc == 0, dry.stdout[-4000:] + dry.stderr[-2000:]
    [diff] = [result['diff'] for result in dry.results if result.get('diff') and AUTHORIZED_KEYS in repr(result['diff'])]
    diff = diff[0] if isinstance(diff, list) else diff
    assert (diff['before'].splitlines()[1:], diff['after'].splitlines()[1:]) == ([first[1]], [second[1]])
    assert pod.ssh(USER, 'true', identity=first[0]).returncode == 0  # nothing changed
    assert_refused(pod.ssh(USER, 'true', identity=second[0]))

    run = run_pod_playbook('ssh_keys', lxc_env, dirs, timeout=900, **common)
    reported = stats(run)
    assert reported == {'ssh_host_keys': keyed['stats']['ssh_host_keys'], 'ssh': {'user': USER, 'port': PORT}}
    assert changed_count(run) == 1  # the keys file, nothing else
    assert pod.ssh(USER, 'true', identity=second[0]).returncode == 0
    assert_refused(pod.ssh(USER, 'true', identity=first[0]))
    # only the access was converged: the site is the customer's page, untouched
    assert 'uploaded' in site(pod.ip, pod.domain).text

    again = run_pod_playbook('ssh_keys', lxc_env, dirs, timeout=900, **common)
    assert again.rc == 0 and changed_count(again) == 0, again.stdout[-4000:]
    no_private_host_keys(lxc_env, vmid, dry, run, again)


def test_bad_keys_stop_before_anything(lxc_env, pods, keys, dirs):
    keyed = pods['keyed']
    with open(keys['first'][0]) as handle:
        private = handle.read()
    before = pct(lxc_env, keyed['vmid'], 'cat', AUTHORIZED_KEYS).stdout
    for playbook in ('ssh_keys', 'repair'):
        run = run_pod_playbook(playbook, lxc_env, dirs, timeout=900, pod=keyed['pod'], cloudpods_ssh_port=PORT,
                               ssh_public_keys=[keys['second'][1], private])
        assert run.rc != 0
        assert 'ssh_public_keys[1]: this is a PRIVATE key' in run.stdout
        for line in private.splitlines()[1:-1]:
            assert line not in run.stdout + run.stderr
        assert changed_count(run) == 0
    assert pct(lxc_env, keyed['vmid'], 'cat', AUTHORIZED_KEYS).stdout == before
