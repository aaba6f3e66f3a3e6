# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.repair_fleet against a simulator of its own and the lab's PowerDNS: pods made by provision
are in plan; each kind of drift (container, firewall, zone) is found by the one bulk check exactly where
repair.yml of that pod would change something, shown in check mode without a write, and repaired, after which
repair.yml of each pod changes nothing; what an operator added by hand is kept; a suspended pod stays suspended;
a pod a repair would refuse is named and the others are still repaired; bad extra vars change nothing."""

import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support'),
             os.path.join(ROOT, '.build', 'collections')):
    if path not in sys.path:
        sys.path.insert(0, path)

from cloudpods_testing import proxmox_client  # noqa: E402  pylint: disable=import-error
from labcontrol import LabControl  # noqa: E402  pylint: disable=import-error
from pdnslab import PowerDnsLab  # noqa: E402  pylint: disable=import-error
from playbooks import PrivateLab  # noqa: E402  pylint: disable=import-error
from podplays import (  # noqa: E402  pylint: disable=import-error
    HostDirs, assert_no_secret, assert_ok, changed_count, changed_tasks, new_pod, run_pod_playbook, start_pod_playbook,
    task)

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab

CHECK = 'Check every pod against its plan'


class Fleet(object):
    def __init__(self, env, control, dirs):
        self.env = env
        self.control = control
        self.dirs = dirs
        self.api = proxmox_client(env)
        self.pdns = PowerDnsLab(env)
        self.pods = {}

    def provision(self, prefix, plan='CLOUD_POD_STARTER', domain=True):
        pod = new_pod(prefix)
        extra = dict(domain=pod + '.test') if domain else {}
        assert_ok(run_pod_playbook('provision', self.env, self.dirs, pod=pod, plan=plan,
                                   customer_email=pod + '@customer.test', **extra))
        [ct] = [c for c in self.api.containers() if c.get('name') == pod]
        self.pods[pod] = 'nodes/%s/lxc/%s' % (ct['node'], ct['vmid'])
        return pod

    def run(self, check=False, diff=False, **extra):
        return run_pod_playbook('repair_fleet', self.env, self.dirs, check=check, diff=diff, **extra)

    def writes_since(self, started):
        return [r for r in self.control.requests() if r['time'] >= started and r['method'] != 'GET']

    def rules(self, pod):
        return self.api.get(self.pods[pod] + '/firewall/rules')


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    with PrivateLab() as env:
        fleet = Fleet(env, LabControl.from_env(env), HostDirs(tmp_path_factory.mktemp('host')))
        yield fleet


def found(run, name=CHECK):
    return dict((p['pod'], p) for p in task(run, name)['pods'])


def test_pods_made_by_provision_are_in_plan_and_the_check_writes_nothing(fleet):
    starter = fleet.provision('fleet')
    premium = fleet.provision('fleet', plan='CLOUD_POD_PREMIUM')
    bare = fleet.provision('fleet', domain=False)
    started = time.time()
    run = assert_ok(fleet.run(check=True, diff=True))
    pods = found(run)
    assert set(pods) >= {starter, premium, bare}
    assert all(p['in_plan'] and p['problem'] is None for p in pods.values()), pods
    assert pods[premium]['plan'] == 'CLOUD_POD_PREMIUM' and pods[bare]['domain'] == ''
    assert changed_count(run) == 0 and fleet.writes_since(started) == []
    # The PowerDNS key and the token secret reach the module from the environment (no_log): never in its result.
    assert_no_secret(fleet.env, run.stdout, run.stderr)
    assert task(run, CHECK)['invocation']['module_args']['dns']['api_key'] == 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
    # one read of the cluster's guests and of the datacenter firewall for the whole fleet, then per pod:
    # config, interfaces, firewall options, rules, IP sets, the IP filter set (6); its zone when it has a domain.
    reads = task(run, CHECK)['reads']
    assert reads == dict(proxmox=2 + 6 * len(pods), powerdns=len([p for p in pods.values() if p['domain']]))
    # The same verdict as repair.yml of one pod.
    assert changed_count(assert_ok(run_pod_playbook('repair', fleet.env, fleet.dirs, check=True, pod=premium))) == 0


def test_each_drift_is_found_shown_without_a_write_and_repaired_as_repair_yml_would(fleet):
    sized, walled, named, suspended, steady = (fleet.provision('drift') for dummy in range(5))
    # the container: sizes changed by hand, and down (a crash: onboot still 1)
    fleet.api.put(fleet.pods[sized] + '/config', cores=3, memory=3072)
    fleet.api.run_task('POST', fleet.pods[sized] + '/status/stop', 60)
    # the firewall: our https rule deleted, the pod's address gone from its IP filter set, and an operator's rule
    # (kept: the firewall is not exclusive)
    [https] = [r for r in fleet.rules(walled) if r.get('comment') == 'cloudpods: 443/tcp']
    fleet.api.delete(fleet.pods[walled] + '/firewall/rules/%d' % https['pos'])
    [entry] = fleet.api.get(fleet.pods[walled] + '/firewall/ipset/ipfilter-net0')
    fleet.api.delete(fleet.pods[walled] + '/firewall/ipset/ipfilter-net0/' + entry['cidr'].replace('/', '%2F'))
    fleet.api.post(fleet.pods[walled] + '/firewall/rules', type='in', action='ACCEPT', proto='tcp', dport='8443',
                   enable=1, comment='opened by the operator')
    # the zone: www moved elsewhere, and a TXT record of the customer's (kept: the zone is not exclusive)
    zone = named + '.test'
    fleet.pdns.set_rrset(zone, 'www.%s.' % zone, 'A', 3600, ['192.0.2.66'])
    fleet.pdns.set_rrset(zone, 'verify.%s.' % zone, 'TXT', 3600, ['"site-verification=abc"'])
    # suspended as suspend.yml leaves a pod: stopped, onboot 0; nothing to repair
    assert_ok(run_pod_playbook('suspend', fleet.env, fleet.dirs, pod=suspended))
    mine = [sized, walled, named, suspended, steady]

    # Check mode: the drift, each change shown by the module that would make it, nothing written.
    started = time.time()
    zone_before = fleet.pdns.rrsets(zone)
    check = assert_ok(fleet.run(check=True, diff=True, pods=mine))
    pods = found(check)
    assert sorted(task(check, CHECK)['drifted']) == sorted([sized, walled, named])
    assert pods[sized]['container'] == ['cores: 3 -> 1', 'memory: 3072 -> 1024', 'start (it is stopped)']
    # in pod_firewall's words (PVE puts a new rule on top: ours are then put back in the plan's order)
    assert pods[walled]['firewall'] == ['add %s to ipfilter-net0' % entry['cidr'], 'create rule cloudpods: 443/tcp',
                                        'put our rules in order']
    assert pods[named]['dns'] == ['update www.%s. A' % zone]
    assert pods[suspended]['in_plan'] and pods[suspended]['suspended'] and pods[steady]['in_plan']
    [firewall] = [t['result'] for t in check.tasks
                  if t['name'].endswith("Converge the pod's firewall on Proxmox VE") and t['result'].get('changed')]
    assert firewall['changes'] == pods[walled]['firewall']  # the module's own words for the same comparison
    assert fleet.writes_since(started) == [] and fleet.pdns.rrsets(zone) == zone_before
    assert changed_tasks(check) == ['Converge the DNS zone of the pod on PowerDNS', "Converge the pod's firewall on Proxmox VE",
                                    'Repair the container of each pod that drifted']
    # exactly where repair.yml of each pod would change something (a suspended pod's repair starts it for the
    # work inside and suspends it again: not a comparison to make)
    for pod in (sized, walled, named, steady):
        single = assert_ok(run_pod_playbook('repair', fleet.env, fleet.dirs, check=True, pod=pod))
        assert (changed_count(single) > 0) == (pod != steady), (pod, changed_tasks(single))

    # The repair, then the check again finds all in plan, and repair.yml of each pod changes nothing.
    assert_ok(fleet.run(pods=mine))
    config = fleet.api.get(fleet.pods[sized] + '/config')
    assert (config['cores'], config['memory']) == (1, 1024)
    assert fleet.api.get(fleet.pods[sized] + '/status/current')['status'] == 'running'
    comments = [r.get('comment') for r in fleet.rules(walled)]
    assert 'cloudpods: 443/tcp' in comments and 'opened by the operator' in comments
    rrsets = fleet.pdns.rrsets(zone)
    assert rrsets[('www.%s.' % zone, 'A')][1] != ['192.0.2.66']
    assert rrsets[('verify.%s.' % zone, 'TXT')] == (3600, ['"site-verification=abc"'])
    status = fleet.api.get(fleet.pods[suspended] + '/status/current')['status']
    assert status == 'stopped' and not int(fleet.api.get(fleet.pods[suspended] + '/config').get('onboot') or 0)
    again = assert_ok(fleet.run(check=True, pods=mine))
    assert task(again, CHECK)['drifted'] == [] and changed_count(again) == 0
    for pod in (sized, walled, named):
        assert changed_count(assert_ok(run_pod_playbook('repair', fleet.env, fleet.dirs, check=True, pod=pod))) == 0


def test_a_pod_a_repair_would_refuse_is_named_and_the_others_are_repaired(fleet):
    taken, unknown, drifted = (fleet.provision('refused') for dummy in range(3))
    zone = taken + '.test'
    reply = fleet.pdns._call('PUT', '/zones/%s.' % zone, dict(account='another-pod'))  # pylint: disable=protected-access
    assert reply.status_code == 204, reply.text
    fleet.api.put(fleet.pods[unknown] + '/config', tags='cloud_pod_gold;cloudpod')
    fleet.api.put(fleet.pods[drifted] + '/config', cores=2)
    run = fleet.run(pods=[taken, unknown, drifted])
    assert run.rc != 0
    message = task(run, 'Check that no pod was refused')['msg']
    assert "%s: zone %s. belongs to pod 'another-pod', not to pod %s" % (taken, zone, taken) in message
    assert "%s: no known plan ('CLOUD_POD_GOLD')" % unknown in message
    assert fleet.api.get(fleet.pods[drifted] + '/config')['cores'] == 1  # repaired all the same
    assert fleet.api.get(fleet.pods[unknown] + '/config')['tags'] == 'cloud_pod_gold;cloudpod'


def test_a_pod_still_being_cloned_is_named_and_not_checked(fleet):
    steady = fleet.provision('busy')
    cloning = new_pod('busy')
    before = fleet.control.config()['task_durations'].get('vzclone')
    fleet.control.config(task_durations={'vzclone': 8})
    try:
        provision = start_pod_playbook('provision', fleet.env, fleet.dirs, pod=cloning, plan='CLOUD_POD_STARTER',
                                       customer_email=cloning + '@customer.test')
        deadline = time.time() + 30
        while not [c for c in fleet.api.containers() if c.get('name') == cloning and c.get('lock') == 'create']:
            assert time.time() < deadline, 'the clone never showed up with its create lock'
            time.sleep(0.1)
        run = assert_ok(fleet.run(check=True, pods=[steady, cloning]))
        result = task(run, CHECK)
        assert result['busy'] == [cloning] and result['missing'] == []
        assert [p['pod'] for p in result['pods']] == [steady] and result['pods'][0]['in_plan']
        assert [c for c in fleet.api.containers() if c.get('name') == cloning][0].get('lock') == 'create'  # still
        assert 'being cloned (not checked): ' + cloning in task(run, 'Say what the check found')['msg']
    finally:
        fleet.control.config(task_durations={'vzclone': before or 0})
    assert_ok(provision.wait())


@pytest.mark.parametrize('pods, message', [
    ('shop-example-com', "extra var 'pods' must be a list of pod ids"),
    (['shop example'], "extra var 'pods' must be a list of pod ids"),
    (['no-such-pod-x'], 'no container for the pods no-such-pod-x (extra var pods): nothing was changed'),
])
def test_bad_extra_vars_are_refused_and_change_nothing(fleet, pods, message):
    started = time.time()
    run = fleet.run(pods=pods)
    assert run.rc != 0 and message in run.stdout, run.stdout[-3000:]
    assert fleet.writes_since(started) == []


@pytest.mark.parametrize('args, message', [
    (dict(parallel=0), 'parallel must be between 1 and 32; got 0'),
    (dict(ssh_port=70000), 'ssh_port must be a port, 1 to 65535; got 70000'),
    (dict(plans={}), 'plans is empty'),
    (dict(plans={'GOLD': {}}), "plans: 'GOLD' is not a plan code"),
    (dict(plans={'CLOUD_POD_GOLD': dict(vcpu=1, memory_mb='a lot', swap_mb=0, disk_gb=10, firewall={})}),
     'plans: CLOUD_POD_GOLD needs the whole numbers vcpu, memory_mb, swap_mb, disk_gb and a firewall; missing or not a '
     'number: memory_mb'),
    (dict(plans={'CLOUD_POD_GOLD': dict(vcpu=1, memory_mb=1, swap_mb=0, disk_gb=10, firewall=dict(allow_in=['80/icmp']))}),
     "plans: CLOUD_POD_GOLD: firewall entry '80/icmp'"),
    (dict(dns=dict(records=dict(mx_host='mail.example.net'))), 'dns.records: unknown DNS settings: mx_host'),
    (dict(dns=dict(api_key='')), 'dns: api_key is empty'),
])
def test_the_module_refuses_bad_options_before_reading_a_pod(fleet, args, message):
    from playbooks import run_playbook  # pylint: disable=import-error,import-outside-toplevel
    options = dict(plans={'CLOUD_POD_STARTER': dict(vcpu=1, memory_mb=1024, swap_mb=512, disk_gb=30,
                                                    firewall=dict(allow_in=['ssh']))})
    options.update(args)
    started = time.time()
    run = run_playbook([{'name': 'fleet', 'mpanel.cloudpods.pod_fleet_info': options}], env=fleet.env)
    result = run.result(0)
    assert result.get('failed') and message in result['msg'], result
    assert [r for r in fleet.control.requests() if r['time'] >= started] == []  # not one request: the options first
