# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Promises of runner_api's queue, held against a private lab with real worker processes (issue 17, part 2).

- A worker paused past its lease (SIGSTOP of the worker and of its whole run, then SIGCONT; not
  killed) changes nothing once another worker took the task over: its heartbeat, event rows and
  outcome are refused, the task ends with the new owner's result, and there is one container.
- An order run without ``PROXMOX_SSH_HOST`` (first boot on) stops before touching anything: no
  Proxmox write, no DNS zone, no database change beyond the failure, a message naming the setting.
"""

import os
import signal
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from pdnslab import PowerDnsLab  # noqa: E402
from test_runner_api_worker import Queue, containers_named, site_vars  # noqa: E402
from test_untrusted_input import _processes_with  # noqa: E402

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab

TASK_ROW = ('SELECT status, worker_id, attempts, result, last_error, lease_expires_at, finished_at, updated_at '
            'FROM cloud_pod_provisioning_tasks WHERE id = %s')
SUBSCRIPTION_ROW = ('SELECT status, vmid, node, host(ip) AS ip, last_error, activated_at, updated_at '
                    'FROM cloud_pod_subscriptions WHERE id = %s')
WRITES = ('POST', 'PUT', 'DELETE')


@pytest.fixture
def queue(private_lab, tmp_path):
    control = LabControl.from_env(private_lab)
    control.clear_faults()
    with scratch_database(private_lab['DATABASE_URL']) as url:
        env = worker_environment(private_lab, url, extra_vars_file=site_vars(tmp_path), lease_seconds=4,
                                 heartbeat_seconds=1, poll_seconds=1, retry_base_seconds=0.5, retry_max_seconds=1)
        queue = Queue(url, env, tmp_path)
        queue.control = control
        try:
            yield queue
        finally:
            for process in queue.workers.values():
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGCONT)  # a failed test may leave one stopped
            queue.stop_all()
            control.clear_faults()


def run_processes(worker):
    """The processes of the worker's playbook run (guard, ansible-playbook, its forks)."""
    return set(_processes_with('CLOUDPODS_WORKER_PID=%d' % worker.pid))


def freeze(worker):
    """SIGSTOP the worker, then every process of its run until no new one appears; the PIDs stopped."""
    os.kill(worker.pid, signal.SIGSTOP)
    tried, stopped = set(), set()
    while True:
        new = run_processes(worker) - tried
        if not new:
            return stopped
        tried |= new
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue  # ended meanwhile
            stopped.add(pid)


def thaw(worker, run):
    os.kill(worker.pid, signal.SIGCONT)
    for pid in run:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_worker_paused_past_its_lease_changes_nothing(queue):
    control = queue.control
    control.hold('vzclone')
    pod = queue.order()
    paused = queue.start('paused')
    control.wait_held('vzclone', timeout=120)  # the playbook waits on the clone task: the run is mid-way
    [task] = queue.rows('SELECT id, worker_id, attempts FROM cloud_pod_provisioning_tasks')
    assert (task['worker_id'], task['attempts']) == ('paused', 1)
    run = freeze(paused)
    assert len(run) >= 2, run  # the guard and ansible-playbook at least: the whole run is paused, not only the worker
    try:
        # The pause outlives the lease: the database says it expired (nobody renewed it).
        queue.wait(lambda: queue.rows('SELECT lease_expires_at < now() AS expired FROM cloud_pod_provisioning_tasks '
                                      'WHERE id = %s', (task['id'],))[0]['expired'], 60, 'the paused lease to expire')
        control.release('vzclone')  # the clone ends; the paused run does not see it
        queue.start('rescuer')
        queue.wait(lambda: queue.rows(TASK_ROW, (task['id'],))[0]['worker_id'] == 'rescuer', 120, 'the takeover')
        queue.wait_all('ACTIVE', timeout=180)
        queue.wait(lambda: queue.rows(TASK_ROW, (task['id'],))[0]['status'] == 'COMPLETED', 60, 'COMPLETED')
        for pid in run:  # still paused all along: the takeover happened while the old run could not act
            with open('/proc/%d/stat' % pid) as handle:
                assert handle.read().rsplit(')', 1)[1].split()[0] == 'T', pid
        task_before = queue.rows(TASK_ROW, (task['id'],))[0]
        pod_before = queue.rows(SUBSCRIPTION_ROW, (pod['id'],))[0]
        last_event = queue.rows('SELECT max(id) AS id FROM cloud_pod_events')[0]['id']
        assert (task_before['worker_id'], task_before['attempts']) == ('rescuer', 2)
        assert pod_before['vmid'] and pod_before['ip']
        ct_before = control.state()['containers'][str(pod_before['vmid'])]
    finally:
        thaw(paused, run)
    resumed = time.time()
    # The paused worker finds out: its heartbeat (or its outcome) is refused, and it cancels the run.
    queue.wait(lambda: 'task %s: lease lost' % task['id'] in queue.log('paused')
               or 'task %s finished but is no longer ours' % task['id'] in queue.log('paused'), 120,
               'the paused worker to notice it lost the lease')
    queue.wait(lambda: not run_processes(paused), 60, 'the paused run to end')
    assert paused.poll() is None  # not killed: it goes on with the queue
    assert queue.rows(TASK_ROW, (task['id'],))[0] == task_before
    assert queue.rows(SUBSCRIPTION_ROW, (pod['id'],))[0] == pod_before
    late = queue.rows('SELECT worker_id, attempt, step, status FROM cloud_pod_events WHERE id > %s', (last_event,))
    assert late == [], late
    assert 'event rows refused' in queue.log('paused') or 'lease lost' in queue.log('paused')
    assert containers_named(control, pod['hostname']) == [str(pod_before['vmid'])]
    # The resumed run may still send what its module was about to send before the worker cancels it
    # (the playbooks are convergent): the container stays as the new owner left it.
    assert control.state()['containers'][str(pod_before['vmid'])] == ct_before
    late_writes = [(r['method'], r['path'], r['status'], round(r['time'] - resumed, 2)) for r in control.requests()
                   if r['time'] >= resumed and r['method'] in WRITES]
    print('Proxmox writes after the paused run resumed: %s' % late_writes)


def test_run_without_ssh_host_stops_before_touching_anything(queue, private_lab):
    control = queue.control
    env = {name: value for name, value in queue.env.items() if not name.startswith('PROXMOX_SSH_')}
    env['CLOUDPODS_FIRST_BOOT'] = 'true'  # the pod is to be configured inside: pct exec needs the SSH host
    domain = 'nossh-%d.test' % os.getpid()
    pdns = PowerDnsLab(private_lab)
    assert pdns.zone(domain) is None
    pod = queue.order(domain=domain)
    containers = set(control.state()['containers'])
    tasks_before = len(control.state()['tasks'])
    since = time.time()
    queue.env, full_env = env, queue.env  # Queue.start adds to its env; this worker's has no PROXMOX_SSH_*
    try:
        queue.start('nossh')
        queue.wait_all('FAILED', timeout=120)
    finally:
        queue.env = full_env
    row = queue.subscriptions()[str(pod['id'])]
    assert 'PROXMOX_SSH_HOST' in row['last_error'], row['last_error']
    assert row['vmid'] is None and row['ip'] is None
    [task] = queue.rows('SELECT status, attempts, last_error FROM cloud_pod_provisioning_tasks')
    assert (task['status'], task['attempts']) == ('FAILED', 1)  # a precondition: no retry
    assert 'PROXMOX_SSH_HOST' in task['last_error']
    writes = [r for r in control.requests() if r['time'] >= since and r['method'] in WRITES]
    assert writes == [], writes
    assert set(control.state()['containers']) == containers
    assert len(control.state()['tasks']) == tasks_before
    assert pdns.zone(domain) is None
    steps = [r['step'] for r in queue.rows("SELECT step FROM cloud_pod_events WHERE status NOT IN ('started')")]
    assert not any(step.startswith(('pod_container', 'pod_dns', 'pod_first_boot')) for step in steps), steps
