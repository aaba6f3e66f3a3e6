# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pod_container and pod_container_info through real ansible-playbook runs against the simulator.

Every test starts from a reset simulator (only template 9000) and asserts what a user would see:
the module result and the container on the (simulated) server, plus the simulator's request log
where the question is "what did the module do" (nothing in check mode, no needless retries).

By default the tests run against a private simulator started for this module, because they
reset it, inject faults and change task durations, which would disturb anybody else using the
shared lab. ``CLOUDPODS_SHARED_LAB=1`` uses the shared lab (``lab_env`` / ``lab_control``).
"""

import ipaddress
import os
import re
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, '.build', 'collections')):
    if path not in sys.path:
        sys.path.insert(0, path)

from playbooks import PrivateLab, ensure_collection_link, run_playbook, start_playbook  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from cloudpods_testing import make_template_copies  # noqa: E402
from pvesim.config import CLOUDPODS_PROV_PRIVILEGES, TASK_TYPES  # noqa: E402

ensure_collection_link()
from ansible_collections.mpanel.cloudpods.plugins.module_utils import pod_record  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import RETRY_REASONS  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import parse_property_string  # noqa: E402

MODULE = 'mpanel.cloudpods.pod_container'
# a lab of its own: tools/test runs it in the real-container lane, which ends sooner than the simulator's
pytestmark = pytest.mark.own_lab

INFO = 'mpanel.cloudpods.pod_container_info'
TASK_DURATION = 0.2
DHCP_DELAY = 0.3
MUTATING = ('POST', 'PUT', 'DELETE')


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope='module')
def lab(request):
    if os.environ.get('CLOUDPODS_SHARED_LAB') == '1':
        yield request.getfixturevalue('lab_env'), request.getfixturevalue('lab_control')
        return
    with PrivateLab() as env:
        yield env, LabControl.from_env(env)


class Pve(object):
    """The simulator as the tests see it: run playbooks, read state and the request log."""

    def __init__(self, env, control):
        self.env = env
        self.control = control

    def run(self, tasks, **kwargs):
        if isinstance(tasks, dict):
            tasks = [tasks]
        return run_playbook(tasks, env=self.env, **kwargs)

    def pod(self, hostname, **options):
        """Run pod_container once; return (run, result)."""
        run_kwargs = dict((k, options.pop(k)) for k in ('check', 'diff', 'extra_env') if k in options)
        options['hostname'] = hostname
        run = self.run({'name': 'pod %s' % hostname, MODULE: options}, **run_kwargs)
        return run, run.result(0)

    def containers(self):
        """vmid -> container state, the template left out."""
        return dict((int(vmid), ct) for vmid, ct in self.control.state()['containers'].items()
                    if not ct['config'].get('template'))

    def named(self, hostname):
        return dict((vmid, ct) for vmid, ct in self.containers().items() if ct['config'].get('hostname') == hostname)

    def container(self, vmid):
        return self.containers()[int(vmid)]

    def requests(self, since=0.0):
        return [r for r in self.control.requests() if r['time'] >= since]

    def mutations(self, since=0.0):
        return [r for r in self.requests(since) if r['method'] in MUTATING]

    def client(self, token_id=None, secret=None):
        """The collection's own client, to act on the server as a crashed run or an operator would."""
        settings = ConnectionSettings(self.env['PROXMOX_API_URL'], token_id or self.env['PROXMOX_API_TOKEN_ID'],
                                      secret or self.env['PROXMOX_API_TOKEN_SECRET'],
                                      ca_path=self.env['PROXMOX_CA_BUNDLE'])
        return ProxmoxClient(settings, retry_timeout=30)


@pytest.fixture
def pve(lab):
    env, control = lab
    control.reset()
    control.config(default_task_duration=TASK_DURATION, dhcp_delay=DHCP_DELAY, auth_failure_delay=0,
                   task_durations=dict((kind, TASK_DURATION) for kind in TASK_TYPES))
    return Pve(env, control)


def assert_ok(run, index=0):
    result = run.result(index)
    assert run.rc == 0 and not result.get('failed'), 'playbook failed: %s\n%s' % (result.get('msg'), run.stderr[-3000:])
    return result


def assert_failed(run, index=0):
    result = run.result(index)
    assert run.rc != 0 and result.get('failed'), 'expected a failure, got %r' % result
    return result


def net0(config):
    return parse_property_string(config['net0'])


def disk_size(config):
    return parse_property_string(config['rootfs'], 'volume')['size']


def no_retries(result):
    return all(count == 0 for count in result['api_retries'].values())


def wait_until(found, timeout, what):
    """Poll ``found()`` until it returns something true (returned); AssertionError after ``timeout`` s."""
    deadline = time.time() + timeout
    while True:
        value = found()
        if value:
            return value
        assert time.time() < deadline, 'timed out after %s s waiting for %s' % (timeout, what)
        time.sleep(0.05)


def clone_tasks(pve):
    return [task for task in pve.control.state()['tasks'] if task['type'] == 'vzclone']


def create(pve, hostname='shop-example-com', **options):
    options.setdefault('state', 'started')
    run, result = pve.pod(hostname, **options)
    return assert_ok(run)


# --------------------------------------------------------------------------
# create, idempotence, check and diff mode
# --------------------------------------------------------------------------

def test_create_from_template(pve):
    started = time.time()
    run, result = pve.pod('shop-example-com', pod_id='sub-1042', state='started', cores=2, memory=2048, swap=256,
                          disk=20, onboot=True, tags=['Premium'], description='Cloud Pod for shop.example.com',
                          diff=True)
    assert_ok(run)
    assert result['changed'] is True and result['created'] is True
    vmid = result['vmid']
    ct = pve.container(vmid)
    config = ct['config']
    assert ct['status'] == 'running' and result['status'] == 'running'
    assert config['hostname'] == 'shop-example-com'
    assert (config['cores'], config['memory'], config['swap'], config['onboot']) == (2, 2048, 256, 1)
    assert disk_size(config) == '20G'
    assert config['tags'] == 'cloudpod;premium'  # as stored: 'Premium' written lower case, the marker tag added
    assert pod_record.parse_description(config['description'])['pod'] == 'sub-1042'
    assert 'Cloud Pod for shop.example.com' in config['description']
    nic = net0(config)
    assert (nic['bridge'], nic['ip'], nic['firewall'], nic['name']) == ('vmbr0', 'dhcp', '1', 'eth0')
    assert nic['hwaddr'] != net0(pve.control.state()['containers']['9000']['config'])['hwaddr']
    # the address is the one DHCP handed out, and a global-unicast IPv4
    ip = ipaddress.ip_address(result['ip'])
    assert ip.version == 4 and not ip.is_link_local and not ip.is_loopback
    assert result['ip'] == ct['ip']
    assert (result['node'], result['hostname'], result['pod_id']) == ('pve', 'shop-example-com', 'sub-1042')
    assert result['config']['rootfs'] == config['rootfs'] and result['config']['cores'] == 2
    assert result['diff']['before'] == {}
    assert result['diff']['after']['cores'] == 2 and result['diff']['after']['status'] == 'running'
    assert no_retries(result)
    # what was sent: one full clone of template 9000 to the configured storage, booleans as 1/0
    clones = [r for r in pve.requests(started) if r['path'].endswith('/clone')]
    assert len(clones) == 1
    assert clones[0]['path'] == '/nodes/pve/lxc/9000/clone'
    assert (clones[0]['params']['full'], clones[0]['params']['storage']) == ('1', 'local-lvm')
    for request in pve.requests(started):
        assert not set(map(str, request['params'].values())) & {'True', 'False', 'true', 'false'}, request
    # the disk grows online after the start, so boot and DHCP overlap the resize task
    writes = [(r['method'], r['path']) for r in pve.mutations(started) if '/lxc/%s/' % vmid in r['path']]
    assert writes.index(('POST', '/nodes/pve/lxc/%s/status/start' % vmid)) < \
        writes.index(('PUT', '/nodes/pve/lxc/%s/resize' % vmid)), writes


def test_second_run_changes_nothing(pve):
    options = dict(pod_id='sub-1', state='started', cores=2, memory=1024, swap=512, disk=12, tags=['starter'],
                   onboot=False, description='Starter pod')
    first = create(pve, 'idem-example-com', **options)
    since = time.time()
    run, result = pve.pod('idem-example-com', diff=True, **options)
    assert_ok(run)
    assert result['changed'] is False
    assert result['vmid'] == first['vmid'] and result['ip'] == first['ip']
    assert result['diff']['before'] == result['diff']['after']
    assert pve.mutations(since) == []
    assert len(pve.containers()) == 1


def test_upper_case_tags_are_stored_lower_case_and_change_nothing_next_time(pve):
    """PVE 8 stores tags lower-cased (pve-guest-common GuestHelpers.pm get_unique_tags), so wanted
    tags with upper case must compare equal to what is stored, not change on every run."""
    options = dict(pod_id='sub-7', state='present', tags=['Premium', 'VIP'])
    first = create(pve, 'case-example-com', **options)
    assert pve.container(first['vmid'])['config']['tags'] == 'cloudpod;premium;vip'
    # an operator adds a tag by hand, in upper case: PVE keeps it lower-cased
    pve.client().put('nodes/pve/lxc/%s/config' % first['vmid'], tags='cloudpod;Premium;VIP;Web')
    assert pve.container(first['vmid'])['config']['tags'] == 'cloudpod;premium;vip;web'
    since = time.time()
    run, result = pve.pod('case-example-com', diff=True, **dict(options, tags=['VIP', 'Web', 'Premium']))
    assert_ok(run)
    assert result['changed'] is False
    assert result['diff']['after']['tags'] == 'cloudpod;premium;vip;web'
    assert pve.mutations(since) == []


def test_check_mode_on_a_new_pod_creates_nothing(pve):
    since = time.time()
    run, result = pve.pod('check-example-com', state='started', cores=2, memory=2048, disk=30, check=True, diff=True)
    assert_ok(run)
    assert result['changed'] is True and result['vmid'] is None
    assert result['diff']['before'] == {}
    after = result['diff']['after']
    assert (after['hostname'], after['cores'], after['memory'], after['disk'], after['status']) == \
        ('check-example-com', 2, 2048, '30G', 'running')
    assert pve.containers() == {}
    assert pve.mutations(since) == []


def test_check_mode_on_an_existing_pod_changes_nothing(pve):
    first = create(pve, 'check2-example-com', cores=1)
    since = time.time()
    run, result = pve.pod('check2-example-com', state='stopped', cores=4, disk=16, check=True, diff=True)
    assert_ok(run)
    assert result['changed'] is True
    assert result['diff']['before']['cores'] == 1 and result['diff']['after']['cores'] == 4
    assert result['diff']['before']['status'] == 'running' and result['diff']['after']['status'] == 'stopped'
    assert result['diff']['after']['disk'] == '16G'
    ct = pve.container(first['vmid'])
    assert (ct['config']['cores'], ct['status'], disk_size(ct['config'])) == (1, 'running', '2G')
    assert pve.mutations(since) == []


def test_diff_shows_before_and_after(pve):
    first = create(pve, 'diff-example-com', cores=2, memory=1024, tags=['starter'])
    run, result = pve.pod('diff-example-com', cores=3, memory=1536, tags=['premium'], diff=True)
    assert_ok(run)
    before, after = result['diff']['before'], result['diff']['after']
    assert (before['cores'], before['memory'], before['tags']) == (2, 1024, 'cloudpod;starter')
    assert (after['cores'], after['memory'], after['tags']) == (3, 1536, 'cloudpod;premium')
    assert before['net0'] == after['net0']
    config = pve.container(first['vmid'])['config']
    assert (config['cores'], config['memory'], config['tags']) == (3, 1536, 'cloudpod;premium')
    assert 'PLAY RECAP' not in run.stdout  # the json callback was used


# --------------------------------------------------------------------------
# disk
# --------------------------------------------------------------------------

def test_grow_disk(pve):
    first = create(pve, 'grow-example-com')
    assert disk_size(pve.container(first['vmid'])['config']) == '2G'  # the template's size
    since = time.time()
    run, result = pve.pod('grow-example-com', disk=30, diff=True)
    assert_ok(run)
    assert result['changed'] is True
    assert (result['diff']['before']['disk'], result['diff']['after']['disk']) == ('2G', '30G')
    assert disk_size(pve.container(first['vmid'])['config']) == '30G'
    resizes = [r for r in pve.requests(since) if r['path'].endswith('/resize')]
    assert [(r['method'], r['params']['disk'], r['params']['size']) for r in resizes] == [('PUT', 'rootfs', '30G')]
    run, result = pve.pod('grow-example-com', disk=30)
    assert assert_ok(run)['changed'] is False


def test_shrink_is_refused_and_changes_nothing(pve):
    first = create(pve, 'shrink-example-com', cores=1, disk=20)
    since = time.time()
    run, result = pve.pod('shrink-example-com', cores=4, memory=4096, disk=10)
    assert_failed(run)
    assert 'Refusing to shrink the root disk of CT %s from 20G to 10G' % first['vmid'] in result['msg']
    assert 'Nothing was changed' in result['msg']
    config = pve.container(first['vmid'])['config']
    assert (config['cores'], config['memory'], disk_size(config)) == (1, 512, '20G')
    assert pve.mutations(since) == []


def test_new_pod_smaller_than_the_template_is_refused_before_cloning(pve):
    run, result = pve.pod('tiny-example-com', disk=1)
    assert_failed(run)
    assert 'Refusing to shrink the root disk of the new container (template CT 9000) from 2G to 1G' in result['msg']
    assert pve.containers() == {}
    assert pve.mutations() == []


# --------------------------------------------------------------------------
# run state and removal
# --------------------------------------------------------------------------

def test_stop_start_restart(pve):
    vmid = create(pve, 'power-example-com')['vmid']

    run, result = pve.pod('power-example-com', state='stopped')
    assert assert_ok(run)['changed'] is True
    assert (result['status'], result['ip']) == ('stopped', None)
    assert pve.container(vmid)['status'] == 'stopped'
    run, result = pve.pod('power-example-com', state='stopped')
    assert assert_ok(run)['changed'] is False

    # present never touches the run state
    run, result = pve.pod('power-example-com', state='present', cores=2)
    assert assert_ok(run)['changed'] is True
    assert pve.container(vmid)['status'] == 'stopped' and result['status'] == 'stopped'

    run, result = pve.pod('power-example-com', state='started')
    assert assert_ok(run)['changed'] is True
    assert result['status'] == 'running' and result['ip'] is not None
    assert result['ip'] == pve.container(vmid)['ip']

    since = time.time()
    run, result = pve.pod('power-example-com', state='restarted')
    assert assert_ok(run)['changed'] is True
    assert result['status'] == 'running' and result['ip']
    assert [r['path'] for r in pve.mutations(since)] == ['/nodes/pve/lxc/%s/status/reboot' % vmid]
    assert pve.container(vmid)['status'] == 'running'


def test_absent_removes_the_pod(pve):
    vmid = create(pve, 'gone-example-com')['vmid']
    since = time.time()
    run, result = pve.pod('gone-example-com', state='absent', diff=True)
    assert assert_ok(run)['changed'] is True
    assert result['status'] == 'absent' and result['vmid'] == vmid
    assert result['diff']['after'] == {} and result['diff']['before']['hostname'] == 'gone-example-com'
    assert pve.containers() == {}
    mutations = [(r['method'], r['path']) for r in pve.mutations(since)]
    assert mutations == [('POST', '/nodes/pve/lxc/%s/status/stop' % vmid), ('DELETE', '/nodes/pve/lxc/%s' % vmid)]
    delete = pve.mutations(since)[-1]
    assert (delete['params']['purge'], delete['params']['destroy-unreferenced-disks']) == ('1', '1')
    run, result = pve.pod('gone-example-com', state='absent')
    assert assert_ok(run)['changed'] is False
    # check mode on an existing pod keeps it
    vmid = create(pve, 'kept-example-com')['vmid']
    run, result = pve.pod('kept-example-com', state='absent', check=True)
    assert assert_ok(run)['changed'] is True
    assert vmid in pve.containers()


# --------------------------------------------------------------------------
# concurrency: the template lock and the nextid race
# --------------------------------------------------------------------------

def test_ten_parallel_playbooks_create_ten_pods(pve):
    pve.control.config(task_durations={'vzclone': 0.5})
    since = time.time()
    # The first clone is held running until each of the nine other runs has had a clone refused
    # (the refused request names its hostname): all ten raced for the template and the ids.
    pve.control.hold('vzclone')
    handles = [start_playbook([{'name': 'pod %d' % i, MODULE: {'hostname': 'par%d-example-com' % i,
                                                               'state': 'started', 'cores': 1 + i % 3}}],
                              env=pve.env) for i in range(10)]

    def refused_hosts():
        return set(r['params'].get('hostname') for r in pve.requests(since)
                   if r['path'] == '/nodes/pve/lxc/9000/clone' and r['status'] >= 400)
    try:
        pve.control.wait_held('vzclone', timeout=120)
        wait_until(lambda: len(refused_hosts()) >= 9, 120, 'every other run to have a clone refused')
    finally:
        pve.control.release('vzclone')
    runs = [handle.wait(timeout=300) for handle in handles]
    results = [assert_ok(run) for run in runs]

    vmids = [result['vmid'] for result in results]
    assert len(set(vmids)) == 10
    containers = pve.containers()
    assert sorted(containers) == sorted(vmids)
    for i, result in enumerate(results):
        config = containers[result['vmid']]['config']
        assert config['hostname'] == 'par%d-example-com' % i and config['cores'] == 1 + i % 3
        assert containers[result['vmid']]['status'] == 'running' and result['ip']

    # Every retry answers a clone the server refused (template locked by another clone, or the
    # VMID from nextid taken meanwhile), and nothing else was retried or refused.
    log = pve.requests(since)
    refused = [r for r in log if r['status'] >= 400]
    assert all(r['method'] == 'POST' and r['path'] == '/nodes/pve/lxc/9000/clone' for r in refused), refused
    locked = [r for r in refused if re.search(r'CT is locked \(disk\)', r['reason'])]
    taken = [r for r in refused if re.search(r'CT \d+ already exists', r['reason'])]
    assert len(locked) + len(taken) == len(refused)
    totals = dict((reason, sum(result['api_retries'][reason] for result in results)) for reason in RETRY_REASONS)
    assert totals['locked'] == len(locked)
    assert totals['vmid_taken'] == len(taken)
    assert totals['http_595'] == totals['http_596'] == totals['lock_timeout'] == 0
    accepted = [r for r in log if r['path'] == '/nodes/pve/lxc/9000/clone' and r['status'] == 200]
    assert len(accepted) == 10
    assert len(refused_hosts()) == 9 and len(locked) >= 9  # the race really happened


def test_template_copies_clone_four_pods_at_once(pve):
    """Four runs with three copies of the template: each clone goes to a template nobody clones, so the four
    clone tasks run at the same time (all four held at once, which one template's lock would never allow),
    none waits, and each pod says which template it came from."""
    make_template_copies(pve.client(), [9001, 9002, 9003])
    since = time.time()
    pve.control.hold('vzclone', count=4)
    handles = [start_playbook([{'name': 'pod %d' % i, MODULE: {
        'hostname': 'copy%d-example-com' % i, 'state': 'present', 'template_copies': [9001, 9002, 9003]}}],
        env=pve.env) for i in range(4)]
    try:
        wait_until(lambda: [h['state'] for h in pve.control.holds()].count('holding') == 4, 120,
                   'four clone tasks held at once')
    finally:
        pve.control.release('vzclone')
    results = [assert_ok(handle.wait(timeout=300)) for handle in handles]
    assert sorted(result['cloned_from'] for result in results) == [9000, 9001, 9002, 9003]
    assert all(result['created'] for result in results)
    for result in results:
        assert pve.container(result['vmid'])['config']['hostname'].startswith('copy')
    # A refused clone (a copy taken meanwhile) went to the next copy at once: no backoff, none counted.
    assert sum(result['api_retries']['locked'] for result in results) == 0
    clones = [r for r in pve.requests(since) if r['path'].endswith('/clone') and r['method'] == 'POST']
    assert len([r for r in clones if r['status'] == 200]) == 4


def test_build_template_makes_the_copies_once_and_refuses_a_taken_vmid(pve):
    """mpanel.cloudpods.build_template with PROXMOX_CLOUDPOD_TEMPLATE_COPIES: the template exists (its plays end
    at once), the copies are full clones of it turned into templates; a second run changes nothing; a VMID
    that another CT has is refused and that CT left alone."""
    playbook = [{'import_playbook': 'mpanel.cloudpods.build_template'}]
    copies = {'PROXMOX_CLOUDPOD_TEMPLATE_COPIES': '9001, 9002'}
    # PVE converts in a task (vztemplate) that the API call does not wait for: a slow one here, and the
    # playbook must still end only once both copies are templates.
    before = pve.control.config()['task_durations']['vztemplate']
    pve.control.config(task_durations={'vztemplate': 1.5})
    try:
        first = run_playbook(playbook=playbook, env=pve.env, extra_env=copies)
    finally:
        pve.control.config(task_durations={'vztemplate': before})
    assert first.rc == 0, first.stdout[-3000:] + first.stderr[-2000:]
    state = pve.control.state()['containers']
    for vmid in ('9001', '9002'):
        assert state[vmid]['config'].get('template') in (1, '1', True), state[vmid]['config']
        assert state[vmid]['config']['hostname'] == 'cloudpod-template'
    clones = [r for r in pve.requests() if r['method'] == 'POST' and r['path'].endswith('/clone')]
    assert sorted(r['params']['newid'] for r in clones if r['status'] == 200) in (['9001', '9002'], [9001, 9002])
    second = run_playbook(playbook=playbook, env=pve.env, extra_env=copies)
    assert second.rc == 0 and sum(1 for t in second.tasks if t['result'].get('changed')) == 0, second.stdout[-3000:]

    other = pve.pod('other-example-com', state='present', vmid=9003)[1]
    assert other['vmid'] == 9003
    refused = run_playbook(playbook=playbook, env=pve.env, extra_env={'PROXMOX_CLOUDPOD_TEMPLATE_COPIES': '9003'})
    assert refused.rc != 0 and 'CT 9003 exists and is not a copy of the template' in refused.stdout
    assert not pve.container(9003)['config'].get('template')


def test_template_copies_from_the_environment_and_a_bad_copy_id(pve):
    make_template_copies(pve.client(), [9001])
    run, result = pve.pod('env-copies-example-com', state='present', extra_env={
        'PROXMOX_CLOUDPOD_TEMPLATE_COPIES': '9001'})
    assert run.rc == 0 and result['cloned_from'] in (9000, 9001), result
    run, result = pve.pod('bad-copies-example-com', state='present', template_copies=[9001, 42])
    assert run.rc != 0 and result['msg'] == 'template_copies must be VMIDs between 100 and 999999999; got 42'
    assert not pve.named('bad-copies-example-com')


# --------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------

def test_failed_clone_task_is_reported_within_a_second(pve):
    """The module polls a running task well under a second apart, and reads the log of a failed
    one at once. Both from the simulator's request log (its clock), the clone held until released."""
    message = "unable to create image: out of space on storage 'local-lvm'"
    pve.control.fault(task_fail={'type': 'vzclone', 'message': message})
    pve.control.hold('vzclone')
    since = time.time()
    task = {'name': 'pod fail-example-com', MODULE: {'hostname': 'fail-example-com', 'state': 'started'}}
    handle = start_playbook([task], env=pve.env)

    def status_polls():
        return [r for r in pve.requests(since) if r['path'].endswith('/status') and '/tasks/' in r['path']]
    try:
        pve.control.wait_held('vzclone', timeout=120)
        wait_until(lambda: len(status_polls()) >= 6, 120, 'the module to poll the running clone task')
    finally:
        [released] = pve.control.release('vzclone')
    run = handle.wait(timeout=300)
    result = run.result(0)
    assert_failed(run)
    assert message in result['msg']
    assert 'clone of CT 9000 to CT' in result['msg']
    log = pve.requests(since)
    polls = [r['time'] for r in status_polls()]
    gaps = sorted(later - earlier for earlier, later in zip(polls, polls[1:]))
    assert gaps[len(gaps) // 2] < 1.0, gaps  # the median: 0.25 s polls, plus a loaded machine's delays
    [log_fetch] = [r for r in log if r['path'].endswith('/log')]
    after = [r for r in log if released['released_at'] < r['time'] < log_fetch['time']]
    # after the release: the task's end seen by a status poll or two, then its log read (no other request)
    assert after and all(r in status_polls() for r in after), after
    # the half-made container went away with the failed task; the next run succeeds
    assert pve.containers() == {}
    assert assert_ok(pve.pod('fail-example-com', state='started')[0])['created'] is True


def test_wrong_token_secret_is_a_clear_authentication_error(pve):
    wrong = 'b1e6f7c2-wrong-secret-0042'
    run, result = pve.pod('auth-example-com', extra_env={'PROXMOX_API_TOKEN_SECRET': wrong})
    assert_failed(run)
    # PVE's 401 has no body: the reason phrase (verify_token's message in PVE 8.2) is all there is
    assert ('Proxmox API authentication failed for token mpanel-api@pve!mpanel-token (GET /cluster/resources: '
            'HTTP 401 invalid token value!)') in result['msg']
    for secret in (wrong, pve.env['PROXMOX_API_TOKEN_SECRET']):
        assert secret not in run.stdout and secret not in run.stderr
    assert no_retries(result)


def test_token_without_vm_allocate_gets_an_error_naming_the_privilege(pve):
    secret = 'c0ffee00-limited-token-secret'
    privileges = [p for p in CLOUDPODS_PROV_PRIVILEGES if p != 'VM.Allocate']
    pve.control.add_token('limited@pve!no-allocate', secret, privs=privileges)
    run, result = pve.pod('perm-example-com', extra_env={'PROXMOX_API_TOKEN_ID': 'limited@pve!no-allocate',
                                                         'PROXMOX_API_TOKEN_SECRET': secret})
    assert_failed(run)
    assert 'VM.Allocate' in result['msg']
    assert 'permission denied for token limited@pve!no-allocate' in result['msg']
    assert secret not in run.stdout
    assert pve.containers() == {}


def test_token_without_sdn_use_is_told_what_to_grant(pve):
    """Stock PVE 8 checks SDN.Use on the bridge at the clone; the seed's CloudPodsProv role alone lacks it."""
    secret = '5d7e0c1a-seed-role-only-secret'
    pve.control.add_token('seedrole@pve!only', secret, privs=CLOUDPODS_PROV_PRIVILEGES)
    run, result = pve.pod('sdn-example-com', state='started',
                          extra_env={'PROXMOX_API_TOKEN_ID': 'seedrole@pve!only', 'PROXMOX_API_TOKEN_SECRET': secret})
    msg = assert_failed(run)['msg']
    assert ('Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use). The token lacks privilege SDN.Use '
            'on /sdn/zones/localnetwork/vmbr0: Proxmox VE 8 checks SDN.Use on the bridge') in msg
    assert '"pveum acl modify /sdn/zones/localnetwork/vmbr0 --roles CloudPodsNet --users seedrole@pve"' in msg
    assert secret not in run.stdout and secret not in run.stderr
    refused = [r for r in pve.requests() if r['status'] == 403]
    assert [(r['method'], r['path'], r['token_id']) for r in refused] == [
        ('POST', '/nodes/pve/lxc/9000/clone', 'seedrole@pve!only')]
    assert pve.containers() == {}
    assert 'lock' not in pve.control.state()['containers']['9000']['config']
    # the lab's own token (the README's setup: the role plus SDN.Use on the bridge) provisions the same pod
    assert assert_ok(pve.pod('sdn-example-com', state='started')[0])['created'] is True


def test_untrusted_certificate_is_explained(pve):
    run, result = pve.pod('tls-example-com', extra_env={'PROXMOX_CA_BUNDLE': None})
    assert_failed(run)
    assert 'TLS verification of the Proxmox API' in result['msg'] and 'ca_path' in result['msg']


def test_bad_settings_are_explained(pve):
    run, result = pve.pod('cfg-example-com', extra_env={'PROXMOX_API_TOKEN_ID': 'mpanel-api@pve'})
    assert 'the "!tokenid" part is missing' in assert_failed(run)['msg']
    run, result = pve.pod('cfg-example-com', extra_env={'PROXMOX_API_URL': 'http://127.0.0.1:8006/api2/json'})
    assert 'must use https' in assert_failed(run)['msg']
    pasted = 'mpanel-api@pve!mpanel-token=' + pve.env['PROXMOX_API_TOKEN_SECRET']
    run, result = pve.pod('cfg-example-com', extra_env={'PROXMOX_API_TOKEN_ID': pasted})
    assert 'looks like "id=secret"' in assert_failed(run)['msg']
    assert pve.env['PROXMOX_API_TOKEN_SECRET'] not in run.stdout + run.stderr


def test_missing_template_is_explained(pve):
    run, result = pve.pod('notemplate-example-com', template=9999)
    assert 'Template CT 9999 does not exist on node pve' in assert_failed(run)['msg']


def test_connection_from_module_defaults_group(pve):
    """The action group lets a playbook set the connection once, without environment variables."""
    connection = dict(api_url=pve.env['PROXMOX_API_URL'], api_token_id=pve.env['PROXMOX_API_TOKEN_ID'],
                      api_token_secret=pve.env['PROXMOX_API_TOKEN_SECRET'], ca_path=pve.env['PROXMOX_CA_BUNDLE'])
    unset = dict((key, None) for key in pve.env)
    run = run_playbook([{'name': 'create', MODULE: {'hostname': 'group-example-com', 'state': 'present'}},
                        {'name': 'list', INFO: {'hostname': 'group-example-com'}}],
                       env={}, extra_env=unset, module_defaults={'group/mpanel.cloudpods.proxmox': connection})
    assert assert_ok(run, 0)['created'] is True
    assert [p['hostname'] for p in assert_ok(run, 1)['pods']] == ['group-example-com']
    assert pve.env['PROXMOX_API_TOKEN_SECRET'] not in run.stdout


def test_transient_proxy_error_is_retried_and_counted(pve):
    vmid = create(pve, 'retry-example-com')['vmid']
    pve.control.fault(method='PUT', path=r'/lxc/\d+/config$', status=596, reason='Connection timed out')
    run, result = pve.pod('retry-example-com', cores=2)
    assert assert_ok(run)['changed'] is True
    assert result['api_retries']['http_596'] == 1 and sum(result['api_retries'].values()) == 1
    assert pve.container(vmid)['config']['cores'] == 2


def test_other_server_errors_are_not_retried(pve):
    create(pve, 'noretry-example-com')
    pve.control.fault(method='PUT', path=r'/lxc/\d+/config$', status=500, reason='unexpected failure')
    since = time.time()
    run, result = pve.pod('noretry-example-com', cores=2)
    assert 'HTTP 500 unexpected failure' in assert_failed(run)['msg']
    assert no_retries(result)
    assert len([r for r in pve.requests(since) if r['method'] == 'PUT']) == 1


def test_locked_container_is_waited_for(pve):
    vmid = create(pve, 'locked-example-com')['vmid']
    pve.control.set_container(vmid, lock='backup')

    def unlock_once_refused():
        # The backup "ends" once the module has been refused twice: it waited and tried again.
        deadline = time.time() + 120
        while time.time() < deadline:
            if len([r for r in pve.requests() if r['method'] == 'PUT' and 'CT is locked (backup)' in r['reason']]) >= 2:
                break
            time.sleep(0.05)
        pve.control.set_container(vmid, lock=None)

    unlocker = threading.Thread(target=unlock_once_refused)
    unlocker.start()
    try:
        run, result = pve.pod('locked-example-com', cores=3)
    finally:
        unlocker.join()
    assert assert_ok(run)['changed'] is True
    refused = [r for r in pve.requests() if 'CT is locked (backup)' in r['reason']]
    assert result['api_retries']['locked'] == len(refused) >= 2
    assert pve.container(vmid)['config']['cores'] == 3


def power_tasks(pve, vmid):
    """(type, exitstatus) of the start/stop/reboot tasks of ``vmid``, oldest first."""
    return [(t['type'], t.get('exitstatus')) for t in pve.control.state()['tasks']
            if t['id'] == str(vmid) and t['type'] in ('vzstart', 'vzstop', 'vzreboot')]


def test_restart_of_a_locked_pod_starts_it_again_once_the_lock_is_gone(pve):
    """PVE 8's reboot (pve-container LXC.pm vm_reboot) stops a locked CT and then fails to start it, leaving it
    stopped: the module starts it, retrying the start while the lock holds, and ends with the pod running."""
    vmid = create(pve, 'relocked-example-com')['vmid']
    pve.control.set_container(vmid, lock='backup')

    def unlock_once_a_start_was_refused():
        # The backup "ends" once the module's start (after the failed reboot) was refused on the lock.
        wait_until(lambda: ('vzstart', 'CT is locked (backup)') in power_tasks(pve, vmid), 60, 'a refused start')
        pve.control.set_container(vmid, lock=None)

    since = time.time()
    unlocker = threading.Thread(target=unlock_once_a_start_was_refused)
    unlocker.start()
    try:
        run, result = pve.pod('relocked-example-com', state='restarted')
    finally:
        unlocker.join()
    assert assert_ok(run)['changed'] is True
    assert result['status'] == 'running' and result['ip'] is not None
    assert result['ip'] == pve.container(vmid)['ip']
    assert pve.container(vmid)['status'] == 'running'
    # The reboot really stopped the CT (its start failed on the lock); then starts, refused until the lock went.
    tasks = power_tasks(pve, vmid)[1:]  # after create's start
    refused = len(tasks) - 2
    assert refused >= 1
    assert tasks == ([('vzreboot', "startup for container '%s' failed" % vmid)]
                     + [('vzstart', 'CT is locked (backup)')] * refused + [('vzstart', 'OK')])
    assert [r['path'].rsplit('/', 1)[-1] for r in pve.mutations(since)] == ['reboot'] + ['start'] * (refused + 1)
    assert result['api_retries']['locked'] == refused


def test_restart_of_a_pod_locked_for_good_fails_saying_it_is_stopped(pve):
    vmid = create(pve, 'stuck-example-com')['vmid']
    pve.control.set_container(vmid, lock='backup')
    run, result = pve.pod('stuck-example-com', state='restarted', timeout=2)
    msg = assert_failed(run)['msg']
    assert msg.startswith('CT %s is stopped: its reboot stopped it and failed (Proxmox task reboot of CT %s on node '
                          "pve failed: startup for container '%s' failed | last log lines: " % (vmid, vmid, vmid))
    assert ('and starting it again failed: Proxmox task start of CT %s after its failed reboot on node pve failed: '
            'CT is locked (backup)' % vmid) in msg
    assert pve.container(vmid)['status'] == 'stopped'
    assert power_tasks(pve, vmid)[1] == ('vzreboot', "startup for container '%s' failed" % vmid)


def test_pod_address_is_its_lease_not_an_alias_added_later(pve):
    """PVE 8.4's interfaces keep the last IPv4 of eth0 in ``inet`` (an alias added by hand) and every address
    in ``ip-addresses``, the lease first: the pod's address is the lease."""
    vmid = create(pve, 'alias-example-com')['vmid']
    interfaces = pve.control.add_address(vmid, '10.99.250.250/16')
    eth0 = [i for i in interfaces if i['name'] == 'eth0'][0]
    lease = eth0['ip-addresses'][0]['ip-address']
    assert eth0['inet'] == '10.99.250.250/16' and lease != '10.99.250.250'
    assert [a['ip-address-type'] for a in eth0['ip-addresses']] == ['inet', 'inet', 'inet6']
    run, result = pve.pod('alias-example-com', state='started')
    assert assert_ok(run)['changed'] is False
    assert result['ip'] == lease
    run = pve.run({'name': 'info', INFO: {'hostname': 'alias-example-com'}})
    assert run.result(0)['pods'][0]['ip'] == lease


# --------------------------------------------------------------------------
# identity and crash recovery
# --------------------------------------------------------------------------

def clone_like_a_crashed_run(pve, hostname, pod_id, wait=True):
    """What a run killed right after its clone leaves behind: a CT with hostname and marker, nothing else."""
    client = pve.client()
    vmid = client.next_vmid()
    upid = client.post('nodes/pve/lxc/9000/clone', newid=vmid, hostname=hostname, full=True,
                       description=pod_record.compose(None, pod=pod_id))
    if wait:
        client.wait_for_task(upid, 30)
    return vmid


def test_crash_recovery_adopts_the_container_left_behind(pve):
    vmid = clone_like_a_crashed_run(pve, 'crash-example-com', 'sub-77')
    run, result = pve.pod('crash-example-com', pod_id='sub-77', state='started', cores=2)
    assert assert_ok(run)['changed'] is True
    assert result['created'] is False and result['vmid'] == vmid
    assert len([r for r in pve.requests() if r['path'].endswith('/clone')]) == 1  # the crashed run's only
    assert list(pve.named('crash-example-com')) == [vmid]
    config = pve.container(vmid)['config']
    assert config['cores'] == 2 and config['tags'] == 'cloudpod'


def test_crash_recovery_waits_for_a_clone_still_running(pve):
    pve.control.hold('vzclone')
    vmid = clone_like_a_crashed_run(pve, 'slow-example-com', 'slow-example-com', wait=False)
    pve.control.wait_held('vzclone')
    since = time.time()
    handle = start_playbook([{'name': 'after the crash', MODULE: {'hostname': 'slow-example-com', 'state': 'started'}}],
                            env=pve.env)
    try:
        # The run finds the half-made container (lock 'create') and polls until the clone ends.
        wait_until(lambda: len([r for r in pve.requests(since) if r['path'] == '/cluster/resources']) >= 3, 120,
                   'the run to poll the container still being cloned')
        assert [task['status'] for task in clone_tasks(pve)] == ['running']
    finally:
        pve.control.release('vzclone')
    run = handle.wait(timeout=300)
    result = run.result(0)
    assert assert_ok(run)['vmid'] == vmid
    assert result['created'] is False and result['ip']
    assert len([r for r in pve.requests() if r['path'].endswith('/clone')]) == 1  # the crashed run's only
    assert list(pve.named('slow-example-com')) == [vmid]


def test_playbook_killed_during_the_clone_is_finished_by_the_next_run(pve):
    pve.control.hold('vzclone')
    handle = start_playbook([{'name': 'doomed', MODULE: {'hostname': 'killed-example-com', 'state': 'started'}}],
                            env=pve.env)
    try:
        pve.control.wait_held('vzclone', timeout=60)
        handle.process.kill()  # as an OOM kill or a lost worker would
        # the kill landed while the clone task ran: ansible-playbook is gone, the task still running
        assert handle.process.wait(timeout=30) == -9
        assert [task['status'] for task in clone_tasks(pve)] == ['running']
    finally:
        pve.control.release('vzclone')
    handle.wait()  # its output: a forked worker of the killed run may hold the pipe until the clone ends
    run, result = pve.pod('killed-example-com', state='started')
    assert assert_ok(run)['created'] is False and result['ip']
    assert len([r for r in pve.requests() if r['path'].endswith('/clone')]) == 1
    assert list(pve.named('killed-example-com')) == [result['vmid']]


def met_the_clone(pve, accepted):
    """After the ``accepted`` clone request: a clone refused (the template's lock), or the half-made
    container found and cluster/resources polled for the clone to end. The cloning run only polls its
    task meanwhile, so either comes from another run that met the clone while it ran."""
    later = [r for r in pve.requests(accepted['time']) if r != accepted]
    refused = [r for r in later if r['path'].endswith('/clone') and r['status'] >= 400]
    polls = [r for r in later if r['path'] == '/cluster/resources']
    return refused or len(polls) >= 3


def test_two_concurrent_runs_for_the_same_pod_make_one_container(pve):
    pve.control.hold('vzclone')
    handles = [start_playbook([{'name': 'twin', MODULE: {'hostname': 'twin-example-com', 'state': 'started'}}],
                              env=pve.env) for dummy in range(2)]
    try:
        pve.control.wait_held('vzclone', timeout=60)
        [accepted] = [r for r in pve.requests() if r['path'].endswith('/clone') and r['status'] == 200]
        # While the clone is held, the other run meets it (see met_the_clone).
        wait_until(lambda: met_the_clone(pve, accepted), 120, 'the second run to meet the clone of the first')
        assert [task['status'] for task in clone_tasks(pve)] == ['running']
    finally:
        pve.control.release('vzclone')
    results = [assert_ok(handle.wait()) for handle in handles]
    assert results[0]['vmid'] == results[1]['vmid']
    assert sorted(r['created'] for r in results) == [False, True]
    assert list(pve.named('twin-example-com')) == [results[0]['vmid']]


def test_clone_whose_answer_was_lost_is_not_repeated(pve):
    pve.control.fault(method='POST', path=r'/clone$', status=596, reason='Connection timed out', after=True)
    run, result = pve.pod('lost-example-com', state='started')
    assert assert_ok(run)['api_retries']['http_596'] == 1
    assert list(pve.named('lost-example-com')) == [result['vmid']]
    assert len([r for r in pve.requests() if r['path'].endswith('/clone')]) == 1


def test_container_of_someone_else_is_not_taken_over(pve):
    client = pve.client()
    vmid = client.next_vmid()
    client.wait_for_task(client.post('nodes/pve/lxc/9000/clone', newid=vmid, hostname='ops-example-com',
                                     full=True), 30)
    since = time.time()
    run, result = pve.pod('ops-example-com', state='absent')
    assert 'was not created by this module; pass vmid: %s' % vmid in assert_failed(run)['msg']
    assert pve.mutations(since) == [] and vmid in pve.containers()
    # naming the vmid takes it over
    run, result = pve.pod('ops-example-com', vmid=vmid, cores=2)
    assert assert_ok(run)['changed'] is True
    assert pod_record.parse_description(pve.container(vmid)['config']['description'])['pod'] == 'ops-example-com'


def test_the_record_is_rewritten_around_text_written_by_hand(pve):
    made = create(pve, 'rec-example-com', pod_id='sub-5', plan='CLOUD_POD_STARTER', domain='rec.example.com',
                  description='Cloud Pod rec-example-com', state='present')
    vmid = made['vmid']
    config = pve.container(vmid)['config']
    assert config['description'].strip() == ('Cloud Pod rec-example-com\ncloudpods-plan: CLOUD_POD_STARTER\n'
                                             'cloudpods-domain: rec.example.com\ncloudpods-pod: sub-5')
    assert config['tags'] == 'cloud_pod_starter;cloudpod'
    assert made['record'] == {'pod': 'sub-5', 'plan': 'CLOUD_POD_STARTER', 'domain': 'rec.example.com'}
    hand = ('Ticket 4711: customer moved\n' + config['description'].strip().replace(
        'cloudpods-domain', 'between the lines\ncloudpods-domain') + '\nafter the record\n')
    pve.client().put('nodes/pve/lxc/%s/config' % vmid, description=hand, tags='cloud_pod_starter;cloudpod;vip')
    since = time.time()
    run, result = pve.pod('rec-example-com', plan='CLOUD_POD_PREMIUM', domain='', check=True, diff=True)
    assert assert_ok(run)['changed'] is True and pve.mutations(since) == []
    expected = (hand.strip().replace('CLOUD_POD_STARTER', 'CLOUD_POD_PREMIUM')
                .replace('cloudpods-domain: rec.example.com\n', ''))
    assert result['diff']['after']['description'] == expected
    assert result['diff']['after']['tags'] == 'cloud_pod_premium;cloudpod;vip'
    assert result['record'] == {'pod': 'sub-5', 'plan': 'CLOUD_POD_PREMIUM', 'domain': None}
    run, result = pve.pod('rec-example-com', plan='CLOUD_POD_PREMIUM', domain='')
    assert assert_ok(run)['changed'] is True
    config = pve.container(vmid)['config']
    assert config['description'].strip() == expected
    assert config['tags'] == 'cloud_pod_premium;cloudpod;vip'
    run = pve.run({'name': 'info', INFO: {'hostname': 'rec-example-com'}})
    assert run.result(0)['pods'][0]['record'] == {'pod': 'sub-5', 'plan': 'CLOUD_POD_PREMIUM', 'domain': None}
    run, result = pve.pod('rec-example-com', plan='CLOUD_POD_PREMIUM', domain='')
    assert assert_ok(run)['changed'] is False


def test_pod_of_another_pod_id_is_refused(pve):
    create(pve, 'owned-example-com', pod_id='sub-1')
    run, result = pve.pod('owned-example-com', pod_id='sub-2')
    assert 'belongs to pod sub-1, not to pod sub-2' in assert_failed(run)['msg']


def test_identity_conflicts_are_clear_errors(pve):
    first = create(pve, 'one-example-com', state='present')
    run, result = pve.pod('two-example-com', vmid=first['vmid'])
    assert 'has hostname one-example-com, not two-example-com' in assert_failed(run)['msg']
    second = clone_like_a_crashed_run(pve, 'one-example-com', 'one-example-com')
    run, result = pve.pod('one-example-com')
    msg = assert_failed(run)['msg']
    assert 'hostname one-example-com is used by 2 containers' in msg
    assert 'CT %s' % first['vmid'] in msg and 'CT %s' % second in msg


# --------------------------------------------------------------------------
# pod_container_info
# --------------------------------------------------------------------------

def test_pod_container_info(pve):
    a = create(pve, 'info-a-example-com', pod_id='sub-a', tags=['premium'])
    b = create(pve, 'info-b-example-com', pod_id='sub-b', tags=['starter'], state='present')
    c = create(pve, 'info-c-example-com', pod_id='sub-c', tags=['premium'], state='stopped')
    run = pve.run([
        {'name': 'all', INFO: {}},
        {'name': 'by hostname', INFO: {'hostname': 'INFO-A-example-com', 'details': True}},
        {'name': 'by vmid', INFO: {'vmid': b['vmid']}},
        {'name': 'by tag', INFO: {'tag': 'premium'}},
        {'name': 'nothing', INFO: {'hostname': 'nope-example-com'}},
    ], check=True)
    everything, by_name, by_vmid, by_tag, nothing = [r['pods'] for r in run.results]
    assert [p['vmid'] for p in everything] == sorted([a['vmid'], b['vmid'], c['vmid']])
    assert 9000 not in [p['vmid'] for p in everything]
    assert len(by_name) == 1
    pod = by_name[0]
    assert (pod['vmid'], pod['node'], pod['hostname'], pod['status'], pod['pod_id']) == \
        (a['vmid'], 'pve', 'info-a-example-com', 'running', 'sub-a')
    assert pod['ip'] == a['ip'] and pod['tags'] == ['cloudpod', 'premium']
    assert pod['record'] == {'pod': 'sub-a', 'plan': None, 'domain': None}
    assert pod['config']['hostname'] == 'info-a-example-com'
    assert [(p['vmid'], p['status'], p['ip']) for p in by_vmid] == [(b['vmid'], 'stopped', None)]
    assert 'config' not in by_vmid[0]
    assert sorted(p['vmid'] for p in by_tag) == sorted([a['vmid'], c['vmid']])
    assert nothing == []
    assert all(r['changed'] is False for r in run.results)
