# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.repair and mpanel.cloudpods.restart against the lab: damage one pod behind the
playbooks' back (simulator control API, PowerDNS API, the cron file on disk) and repair it."""

import os
import time

import pytest

from podplays import (  # pylint: disable=import-error
    assert_ok, changed_count, changed_tasks, container, delete_rrset, new_pod, pods_named, remove_pod,
    run_pod_playbook)
from smtplab import Mailbox  # pylint: disable=import-error


@pytest.fixture
def pod(lab_env, pdns, dirs):
    """A provisioned Starter pod with a domain; removed afterwards."""
    name = new_pod('rep')
    values = dict(pod=name, plan='CLOUD_POD_STARTER', domain=name + '.test', customer_email=name + '@customer.test')
    assert_ok(run_pod_playbook('provision', lab_env, dirs, **values))
    yield values
    remove_pod(lab_env, name)
    pdns.delete_zone(values['domain'])


def test_repair_restores_memory_www_record_and_cron_file_only(lab_env, lab_control, pdns, dirs, pod):
    name, domain = pod['pod'], pod['domain']
    [vmid] = pods_named(lab_control, name)
    before = container(lab_control, name)
    zone_before = pdns.rrsets(domain)
    with open(dirs.cron_file(name)) as handle:
        cron_before = handle.read()
    mailbox = Mailbox.from_env(lab_env)
    mark = mailbox.mark()

    # the damage
    lab_control.set_container(vmid, memory=512)
    delete_rrset(pdns, domain, 'www.%s.' % domain, 'A')
    os.remove(dirs.cron_file(name))
    assert pdns.answers('www.' + domain, 'A') == 'NXDOMAIN'

    run = assert_ok(run_pod_playbook('repair', lab_env, dirs, pod=name))
    assert changed_tasks(run) == sorted([
        "Converge the pod's container on Proxmox VE",
        'Converge the DNS zone of the pod on PowerDNS',
        "Write the pod's backup cron entry",
    ])
    assert changed_count(run) == 3
    after = container(lab_control, name)
    assert after['config'] == before['config']
    assert after['status'] == 'running' and pods_named(lab_control, name) == [vmid]
    assert pdns.answers('www.' + domain, 'A') == [before['ip']]
    zone_after = pdns.rrsets(domain)
    # only the www rrset came back (the SOA serial moves with any change)
    assert dict((k, v) for k, v in zone_after.items() if k[1] != 'SOA') == \
        dict((k, v) for k, v in zone_before.items() if k[1] != 'SOA')
    with open(dirs.cron_file(name)) as handle:
        assert handle.read() == cron_before
    # The lab's mailbox is shared with other tests: only mail to this pod's customer counts.
    mailbox.assert_no_mail(since=mark, to=pod['customer_email'])  # from a server proven alive
    assert {k: v for k, v in run.report['global_custom_stats'].items() if k != 'https'} == {
        'vmid': vmid, 'node': 'pve', 'ip': before['ip'], 'ssh_host_keys': [], 'ssh': {'user': 'web', 'port': 22}}
    assert run.report['global_custom_stats']['https']['status'] == 'none'

    # and a repair of a healthy pod changes nothing
    assert changed_count(assert_ok(run_pod_playbook('repair', lab_env, dirs, pod=name))) == 0


def test_repair_of_unknown_pod_fails_and_creates_nothing(lab_env, lab_control, dirs):
    name = new_pod('nopod')
    run = run_pod_playbook('repair', lab_env, dirs, pod=name)
    assert run.rc != 0
    assert "pod '%s' (extra var pod) has no container" % name in run.stdout
    assert pods_named(lab_control, name) == []
    assert dirs.files() == []


def test_restart_reboots_the_pod_and_touches_nothing_else(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    before = container(lab_control, name)
    [vmid] = pods_named(lab_control, name)
    started = time.time()
    run = assert_ok(run_pod_playbook('restart', lab_env, dirs, pod=name))
    assert changed_tasks(run) == ["Converge the pod's container on Proxmox VE"]
    after = container(lab_control, name)
    assert after['config'] == before['config'] and after['status'] == 'running'
    writes = [r for r in lab_control.requests()
              if r['time'] >= started and r['method'] != 'GET' and '/lxc/%d/' % vmid in r['path']]
    assert [r['path'].rsplit('/', 1)[-1] for r in writes] == ['reboot']
    assert run.report['global_custom_stats']['vmid'] == vmid
