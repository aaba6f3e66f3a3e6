# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pod's firewall enforced on real traffic (the lab's ``--lxc`` part, tests/lab/pvesim/nftfirewall.py).

A network namespace on the lab bridge, at .5 (outside dnsmasq's .10-.250), stands for the
internet and probes a provisioned pod. With the plans' policy_in DROP, a port the firewall closes
gives no answer (the probe times out), while a port it lets through answers: a connection, or a
refusal (TCP reset) when nothing listens there. So "closed by the firewall" is a timeout, and
"refused" proves the firewall let the packet through.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, '.build', 'collections')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from podplays import FIRST_BOOT_TASK, HostDirs, changed_count, run_pod_playbook, task  # noqa: E402
from realpods import ENV_LXC, pct  # noqa: E402
from labenv import read_env as read_lab_env  # noqa: E402
from playbooks import ensure_collection_link  # noqa: E402

ensure_collection_link()
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings  # noqa: E402

pytestmark = pytest.mark.real_containers

PLAN = 'CLOUD_POD_STUDENT'
PROBE_TIMEOUT = 4.0
# connect() from inside the namespace: open (connected), refused (a TCP reset), timeout (no answer:
# dropped), unreachable (an ICMP error: rejected).
PROBE = r'''
import errno, socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print({errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable"}.get(exc.errno, "error %s" % exc.errno))
'''


def plan_firewall():
    with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')) as handle:
        return yaml.safe_load(handle)['cloudpods_plans'][PLAN]['firewall']


class Internet(object):
    """A namespace with one veth into the lab bridge, at the subnet's .5."""

    def __init__(self, env):
        tag = uuid.uuid4().hex[:6]
        self.ns = 'fwt' + tag
        self.host_end, self.ns_end = 'fwh' + tag, 'fwn' + tag
        network = env['LAB_BRIDGE_NETWORK']  # 10.98.N.0/24
        self.address = network.rsplit('.', 1)[0] + '.5'
        self._run('ip', 'netns', 'add', self.ns)
        self._run('ip', 'link', 'add', self.host_end, 'type', 'veth', 'peer', 'name', self.ns_end)
        self._run('ip', 'link', 'set', self.ns_end, 'netns', self.ns)
        self._run('ip', 'link', 'set', self.host_end, 'master', env['LAB_BRIDGE'], 'up')
        self._run('ip', '-n', self.ns, 'addr', 'add', self.address + '/24', 'dev', self.ns_end)
        self._run('ip', '-n', self.ns, 'link', 'set', self.ns_end, 'up')
        self._run('ip', '-n', self.ns, 'link', 'set', 'lo', 'up')

    @staticmethod
    def _run(*argv):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def probe(self, ip, port, timeout=PROBE_TIMEOUT):
        result = subprocess.run(['ip', 'netns', 'exec', self.ns, sys.executable, '-c', PROBE, ip, str(port),
                                 str(timeout)], capture_output=True, text=True, timeout=timeout + 30, check=True)
        return result.stdout.strip()

    def close(self):
        subprocess.run(['ip', 'link', 'del', self.host_end], capture_output=True, check=False, timeout=30)
        subprocess.run(['ip', 'netns', 'del', self.ns], capture_output=True, check=False, timeout=30)


@pytest.fixture(scope='module')
def lxc_env():
    return read_lab_env(ENV_LXC)


@pytest.fixture(scope='module')
def internet(lxc_env):
    net = Internet(lxc_env)
    yield net
    net.close()


@pytest.fixture(scope='module')
def pod(lxc_env, tmp_path_factory):
    dirs = HostDirs(tmp_path_factory.mktemp('fw-host'))
    name = 'fw-%s' % uuid.uuid4().hex[:6]
    run = run_pod_playbook('provision', lxc_env, dirs, pod=name, plan=PLAN, domain='', customer_email='fw@example.test',
                           cloudpods_linked_clones=True)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    container = task(run, 'Converge the pod\'s container on Proxmox VE')
    # The address comes after the first boot (converge.yml waits for it then): the run's report has it.
    result = dict(name=name, dirs=dirs, vmid=container['vmid'], ip=run.report['global_custom_stats']['ip'],
                  firewall=task(run, 'Converge the pod\'s firewall on Proxmox VE'), run=run,
                  lease_granted=lease_granted(lxc_env, run.report['global_custom_stats']['ip']))
    yield result
    run_pod_playbook('deprovision', lxc_env, dirs, pod=name, timeout=600)


# The lab's dnsmasq leases for 12 h (tests/lab/lxclab.py) and writes each lease's expiry, in whole seconds.
LEASE_SECONDS = 12 * 3600


def lease_granted(env, ip):
    """When dnsmasq granted ``ip`` its (current) lease: epoch seconds, to the second."""
    with open(env['LAB_DHCP_LEASES']) as handle:
        expiries = [int(line.split()[0]) for line in handle if line.split()[2:3] == [ip]]
    assert len(expiries) == 1, 'no single lease for %s in %s' % (ip, env['LAB_DHCP_LEASES'])
    return expiries[0] - LEASE_SECONDS


def task_times(run, name):
    """(start, end) of the task named ``name``, epoch seconds."""
    [index] = [i for i, t in enumerate(run.tasks) if (t['name'] or '').endswith(name)]
    return run.task_times(index)


def client(env):
    settings = ConnectionSettings(env['PROXMOX_API_URL'], env['PROXMOX_API_TOKEN_ID'], env['PROXMOX_API_TOKEN_SECRET'],
                                  ca_path=env['PROXMOX_CA_BUNDLE'])
    return ProxmoxClient(settings, retry_timeout=30)


def fw_path(pod, suffix):
    return 'nodes/pve/lxc/%s/firewall/%s' % (pod['vmid'], suffix)


def web_ports_open(internet, pod):
    assert internet.probe(pod['ip'], 80) == 'open'
    assert internet.probe(pod['ip'], 443) in ('open', 'refused')  # nothing may listen there yet


def test_provision_sets_the_plans_firewall_and_it_is_enforced(lxc_env, internet, pod):
    firewall = pod['firewall']
    assert firewall['enforced'] is True
    assert [r['comment'] for r in firewall['rules']] == ['cloudpods: %s' % e for e in plan_firewall()['allow_in']]
    # MariaDB really listens inside (on loopback or everywhere): a closed port here is the firewall's doing
    listening = pct(lxc_env, pod['vmid'], 'ss', '-Htln').stdout
    assert ':3306' in listening, listening
    web_ports_open(internet, pod)
    assert internet.probe(pod['ip'], 3306) == 'timeout'
    # sshd is first boot's business (issue 12, part 1): through the firewall it answers or refuses
    expected_ssh = ('open', 'refused') if 'ssh' in plan_firewall()['allow_in'] else ('timeout',)
    assert internet.probe(pod['ip'], 22) in expected_ssh
    # the pod's own traffic still flows: it sends from its lease (ipfilter) and keeps its DHCP lease
    ping = pct(lxc_env, pod['vmid'], 'ping', '-c', '1', '-W', '5', internet.address, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_the_first_boot_ran_while_dhcp_leased_the_address(pod):
    """Provision starts the work inside the pod before its DHCP lease (converge.yml), and only then waits
    for the address: the first boot's one command started before dnsmasq granted the lease, and the
    wait for the address ran after it (it found the lease). Waiting for the address first (as before
    issue 15) starts the first boot at least a second after the lease."""
    run, granted = pod['run'], pod['lease_granted']
    first_boot_start, first_boot_end = task_times(run, FIRST_BOOT_TASK)
    wait = task(run, "Wait for the pod's address (DHCP)")
    assert wait.get('skipped') is not True and wait['ip'] == pod['ip'], wait
    wait_start, dummy = task_times(run, "Wait for the pod's address (DHCP)")
    # The lease's time is whole seconds (granted <= the real moment < granted + 1).
    assert first_boot_start < granted + 1, (first_boot_start, granted)
    assert first_boot_end <= wait_start


def test_firewall_off_opens_the_pod_and_repair_closes_it_again(lxc_env, internet, pod):
    api = client(lxc_env)
    api.put(fw_path(pod, 'options'), enable=0)
    assert internet.probe(pod['ip'], 3306) in ('open', 'refused')
    api.put(fw_path(pod, 'options'), enable=1)
    assert internet.probe(pod['ip'], 3306) == 'timeout'
    # drift: the web rule of ours deleted, an operator's own rule added (it opens 3306)
    rules = api.get(fw_path(pod, 'rules'))
    http = [r for r in rules if r.get('comment') == 'cloudpods: 80/tcp'][0]
    api.delete(fw_path(pod, 'rules/%d' % http['pos']), digest=http['digest'])
    api.put(fw_path(pod, 'options'), enable=0)
    api.post(fw_path(pod, 'rules'), type='in', action='ACCEPT', proto='tcp', dport='3306', enable=1,
             comment='operator: database for the office')
    assert internet.probe(pod['ip'], 3306) in ('open', 'refused')

    run = run_pod_playbook('repair', lxc_env, pod['dirs'], pod=pod['name'], timeout=600)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    changes = task(run, 'Converge the pod\'s firewall on Proxmox VE')['changes']
    assert 'create rule cloudpods: 80/tcp' in changes and 'options: enable=1' in changes
    comments = [r.get('comment') for r in api.get(fw_path(pod, 'rules'))]
    assert 'operator: database for the office' in comments and 'cloudpods: 80/tcp' in comments
    web_ports_open(internet, pod)
    assert internet.probe(pod['ip'], 3306) in ('open', 'refused')  # the operator's rule, kept, opens it
    assert internet.probe(pod['ip'], 8080) == 'timeout'  # and the policy closes the rest again

    again = run_pod_playbook('repair', lxc_env, pod['dirs'], pod=pod['name'], timeout=600)
    assert again.rc == 0 and changed_count(again) == 0, again.stdout[-4000:] + again.stderr[-2000:]


def test_a_restarted_pod_gets_its_lease_through_the_firewall_and_stays_filtered(lxc_env, internet, pod):
    """A start makes a new veth: the rules follow it, and DHCP (dhcp=1) passes policy_in DROP."""
    api = client(lxc_env)
    node_path = 'nodes/pve/lxc/%s' % pod['vmid']
    before = {r.get('comment') for r in api.get(fw_path(pod, 'rules'))}
    api.reboot_container('pve', pod['vmid'], timeout=120)
    deadline = time.monotonic() + 120
    leased = None
    while time.monotonic() < deadline and leased is None:
        for iface in api.get(node_path + '/interfaces') or []:
            for address in iface.get('ip-addresses') or []:
                if iface.get('name') == 'eth0' and address.get('ip-address-type') == 'inet':
                    leased = address['ip-address']
        time.sleep(1)
    assert leased == pod['ip']  # the same lease (same MAC), so ipfilter-net0 still holds
    assert {r.get('comment') for r in api.get(fw_path(pod, 'rules'))} == before
    assert internet.probe(pod['ip'], 80) in ('open', 'refused')  # nginx may still be starting
    # nothing listens on 8080: a timeout (not a refusal) shows the new veth is filtered
    # (3306 is open by now: the operator's rule of the test before)
    assert internet.probe(pod['ip'], 8080) == 'timeout'


def test_dry_run_shows_the_firewall_changes(lxc_env, pod):
    api = client(lxc_env)
    rules = api.get(fw_path(pod, 'rules'))
    https = [r for r in rules if r.get('comment') == 'cloudpods: 443/tcp'][0]
    api.delete(fw_path(pod, 'rules/%d' % https['pos']), digest=https['digest'])
    run = run_pod_playbook('repair', lxc_env, pod['dirs'], pod=pod['name'], check=True, diff=True, timeout=600)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    result = task(run, 'Converge the pod\'s firewall on Proxmox VE')
    # the last rule of ours, created again at the top, is then moved back below the others
    assert result['changed'] is True and result['changes'] == ['create rule cloudpods: 443/tcp', 'put our rules in order']
    assert 'cloudpods: 443/tcp' not in [r.get('comment') for r in result['diff']['before']['rules']]
    assert [r.get('comment') for r in result['diff']['after']['rules']][:3] == [
        'cloudpods: %s' % entry for entry in plan_firewall()['allow_in']]
    assert 'cloudpods: 443/tcp' not in [r.get('comment') for r in api.get(fw_path(pod, 'rules'))]


def test_reject_answers_where_drop_stays_silent(lxc_env, internet, pod):
    """A REJECT rule (an operator's, at the top) turns nginx's open port 80 into a TCP reset."""
    api = client(lxc_env)
    api.post(fw_path(pod, 'rules'), type='in', action='REJECT', proto='tcp', dport='80', enable=1,
             comment='operator: web closed for maintenance')
    try:
        assert internet.probe(pod['ip'], 80) == 'refused'
        assert internet.probe(pod['ip'], 8080) == 'timeout'  # the policy still drops
    finally:
        rules = api.get(fw_path(pod, 'rules'))
        mine = [r for r in rules if r.get('comment') == 'operator: web closed for maintenance'][0]
        api.delete(fw_path(pod, 'rules/%d' % mine['pos']), digest=mine['digest'])
    assert internet.probe(pod['ip'], 80) == 'open'
