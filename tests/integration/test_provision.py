# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.provision through real ansible-playbook runs against the lab: the simulator,
the real PowerDNS (answers over DNS) and the real SMTP server (the mail as received).
"""

import os

import pytest
import yaml

from podplays import (  # pylint: disable=import-error
    ROOT, assert_no_secret, assert_ok, changed_count, container, new_pod, pods_named, ran, remove_pod,
    run_pod_playbook, task)
from smtplab import Mailbox  # pylint: disable=import-error

PLANS = yaml.safe_load(open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')))['cloudpods_plans']
CONTAINER_TASK = "Converge the pod's container on Proxmox VE"
DNS_TASK = 'Converge the DNS zone of the pod on PowerDNS'


@pytest.fixture(scope='module')
def mailbox(lab_env):
    if 'SMTP_MAILBOX_DIR' not in lab_env:
        pytest.fail('the lab has no SMTP server (SMTP_MAILBOX_DIR missing from .lab/env): run tests/lab/lab up')
    return Mailbox.from_env(lab_env)


@pytest.fixture
def order(lab_env, pdns):
    """A fresh order (pod id, domain, customer); the pod and its zone are removed afterwards."""
    pod = new_pod('prov')
    values = dict(pod=pod, plan='CLOUD_POD_STARTER', domain=pod + '.test', customer_email=pod + '@customer.test')
    yield values
    remove_pod(lab_env, pod)
    pdns.delete_zone(values['domain'])


def test_provision_starter_with_domain_then_rerun_changes_nothing(lab_env, lab_control, pdns, mailbox, dirs, order):
    pod, domain = order['pod'], order['domain']
    plan = PLANS['CLOUD_POD_STARTER']
    mark = mailbox.mark()
    run = assert_ok(run_pod_playbook('provision', lab_env, dirs, **order))

    # set_stats hands vmid, node, ip, ssh_host_keys, ssh and https to ansible-runner / AWX
    stats = run.report['global_custom_stats']
    ct = container(lab_control, pod)
    [vmid] = pods_named(lab_control, pod)
    # no first boot in the simulator lab: no host keys to report, no HTTPS; the customer's way in, with its defaults
    https = stats.pop('https')
    assert stats == {'vmid': vmid, 'node': 'pve', 'ip': ct['ip'], 'ssh_host_keys': [], 'ssh': {'user': 'web', 'port': 22}}
    assert https['status'] == 'none' and https['not_after'] == '' and 'CLOUDPODS_FIRST_BOOT=false' in https['reason']
    ip = stats['ip']
    assert ip

    # the container has the plan's sizes, its plan tag, and runs
    config = ct['config']
    assert (config['cores'], config['memory'], config['swap']) == (plan['vcpu'], plan['memory_mb'], plan['swap_mb'])
    assert 'size=%dG' % plan['disk_gb'] in config['rootfs']
    assert 'cloud_pod_starter' in config['tags'].split(';')
    assert ct['status'] == 'running'

    # DNS answers over the DNS port
    assert pdns.answers(domain, 'A') == [ip]
    assert pdns.answers('www.' + domain, 'A') == [ip]
    assert pdns.answers(domain, 'MX') == ['10 mail.example.net.']
    assert pdns.zone(domain)['account'] == pod

    # backup directory and cron entry as the tier says
    assert os.path.isdir(dirs.backup_dir(pod))
    with open(dirs.cron_file(pod)) as handle:
        cron_lines = [line for line in handle.read().splitlines() if line and not line.startswith('#')]
    # Starter: daily in the 150 minutes from 03:30, seven dailies kept (playbooks/vars/plans.yml), through the slots
    assert cron_lines[-1] == dirs.backup_cron_line(pod, vmid, '30 3 * * * 150', 'keep-daily=7')
    # the program that waits for a backup slot is on the host, as the role has it
    with open(os.path.join(dirs.lib_dir, 'cloudpods-backup-slot.py'), encoding='utf-8') as handle, \
            open(os.path.join(ROOT, 'roles', 'pod_backup', 'files', 'cloudpods-backup-slot.py'), encoding='utf-8') as source:
        assert handle.read() == source.read()
    assert os.stat(os.path.join(dirs.lib_dir, 'cloudpods-backup-slot.py')).st_mode & 0o777 == 0o755

    # the welcome mail, once, with the right fields and no secret
    [mail] = mailbox.messages(since=mark, to=order['customer_email'])
    text = Mailbox.text(mail)
    assert pod in mail['Subject']
    for expected in (pod, 'Starter (CLOUD_POD_STARTER)', ip, domain, '%s.  A   %s' % (domain, ip),
                     'www.%s.  A   %s' % (domain, ip), 'MX  10 mail.example.net.', 'ns1.example.net',
                     'https://mpanel.example.net/cloud-pods'):
        assert expected in text
    assert 'password:' not in text.lower()
    assert_no_secret(lab_env, text, run.stdout, run.stderr)

    # a second run changes nothing, and sends no second mail
    mark = mailbox.mark()
    again = assert_ok(run_pod_playbook('provision', lab_env, dirs, **order))
    assert changed_count(again) == 0, again.stdout[-5000:]
    assert again.report['global_custom_stats'] == dict(stats, https=https)
    # Its own recipient: the real-container lane's pods mail the same lab SMTP server meanwhile.
    mailbox.assert_no_mail(since=mark, to=order['customer_email'])  # after a probe proved the SMTP server alive
    assert pods_named(lab_control, pod) == [vmid]

    # and a dry run of the same order has nothing to report
    dry = assert_ok(run_pod_playbook('provision', lab_env, dirs, check=True, diff=True, **order))
    assert changed_count(dry) == 0, dry.stdout[-5000:]


def test_provision_without_domain_makes_no_zone(lab_env, lab_control, pdns, mailbox, dirs, order):
    # Premium: another plan than the other tests' (sizes and backup schedule differ)
    order = dict(order, plan='CLOUD_POD_PREMIUM')
    domain = order.pop('domain')
    mark = mailbox.mark()
    run = assert_ok(run_pod_playbook('provision', lab_env, dirs, **order))
    assert not ran(run, DNS_TASK)
    assert pdns.zone(domain) is None
    config = container(lab_control, order['pod'])['config']
    assert (config['cores'], config['memory']) == (2, 2048) and 'size=75G' in config['rootfs']
    [vmid] = pods_named(lab_control, order['pod'])
    with open(dirs.cron_file(order['pod'])) as handle:
        cron_line = handle.read().splitlines()[-1]
    # Premium: daily in the 180 minutes from 03:00, seven dailies and four weeklies kept
    assert cron_line == dirs.backup_cron_line(order['pod'], vmid, '0 3 * * * 180', 'keep-daily=7,keep-weekly=4')
    [mail] = mailbox.messages(since=mark, to=order['customer_email'])
    assert 'Premium (CLOUD_POD_PREMIUM)' in Mailbox.text(mail)


def test_dry_run_reports_and_creates_nothing(lab_env, lab_control, pdns, mailbox, dirs, order):
    mark = mailbox.mark()
    run = assert_ok(run_pod_playbook('provision', lab_env, dirs, check=True, diff=True, **order))
    # it says what it would create ...
    created = task(run, CONTAINER_TASK)
    assert created['changed'] is True and created['vmid'] is None
    assert created['diff']['after']['memory'] == 1024 and created['diff']['before'] == {}
    zone = task(run, DNS_TASK)
    assert zone['changed'] is True
    cron = task(run, "Write the pod's backup cron entry")
    assert cron['changed'] is True
    assert '<VMID of the new pod>' in str(cron.get('diff'))
    assert ran(run, 'Show the welcome mail a real run would send')
    # ... and creates nothing anywhere
    assert pods_named(lab_control, order['pod']) == []
    assert pdns.zone(order['domain']) is None
    assert dirs.files() == []
    mailbox.assert_no_mail(since=mark, mentioning=order['pod'])
    assert_no_secret(lab_env, run.stdout, run.stderr)


@pytest.mark.parametrize('change, variable', [
    (dict(plan='CLOUD_POD_GOLD'), 'plan'),
    (dict(domain='not a domain'), 'domain'),
    (dict(domain='-bad-.test'), 'domain'),
    (dict(pod=None), 'pod'),
    (dict(pod='Bad_Pod!'), 'pod'),
    (dict(customer_email='nobody'), 'customer_email'),
    (dict(customer_email=None), 'customer_email'),
])
def test_bad_extra_vars_stop_before_anything(lab_env, lab_control, pdns, mailbox, dirs, order, change, variable):
    values = dict(order, **change)
    values = dict((k, v) for k, v in values.items() if v is not None)
    mark = mailbox.mark()
    run = run_pod_playbook('provision', lab_env, dirs, **values)
    assert run.rc != 0
    failed = [t for t in run.tasks if t['result'].get('failed')]
    assert len(failed) == 1
    assert "'%s'" % variable in failed[0]['result']['msg']
    # nothing after the checks ran
    assert not ran(run, CONTAINER_TASK)
    assert pods_named(lab_control, order['pod']) == []
    assert pdns.zone(order['domain']) is None
    assert dirs.files() == []
    mailbox.assert_no_mail(since=mark, mentioning=order['pod'])
