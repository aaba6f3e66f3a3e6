# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker SIGKILLed in the middle of a restore, a reinstall and a terminate (issue 13): another
worker takes the task over once the lease expired and finishes it, with exactly one container (none
after terminate) and nothing lost.

Each test orders a pod through the API (in process, against a database of its own), lets a worker
provision it, and asks for the operation through the API as mPanel does. The simulator of this
module's private lab holds PVE's task at the chosen point (the restore task; the clone that follows
the destroy of the old container; the destroy after the final backup), so the kill lands there by
construction, not by a race: the worker and every process under it (ansible-runner's guard,
ansible-playbook, its forks, the running module or command) are stopped, then SIGKILLed together,
as an OOM kill or a lost machine would end them; nothing of the run gets to clean up. The held
task is released and runs to its end without anyone watching it (as PVE's would), then a second
worker (a 4 s lease) takes the task over and completes it as its second attempt.
"""

import json
import os
import re
import shlex
import signal
import sys
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, scratch_database, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from pdnslab import PowerDnsLab  # noqa: E402
from podplays import PCT, VZDUMP, HostDirs  # noqa: E402
from test_provision_killed import process_tree  # noqa: E402
from test_runner_api import ALICE, Api  # noqa: E402
from test_runner_api_worker import Queue, containers_named  # noqa: E402

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
ARCHIVE_RE = re.compile(r'vzdump-lxc-\d+-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.tar\.zst\Z')
OUTCOMES = ('completed', 'retry', 'failed', 'released')


@pytest.fixture(scope='module')
def control(private_lab):
    """The module's private lab (one for the three tests): its control API, no fault left over."""
    lab = LabControl.from_env(private_lab)
    lab.clear_faults()
    yield lab
    lab.clear_faults()


@pytest.fixture
def queue(private_lab, control, tmp_path):
    """A database of this test's own, the API on it (in process) and its workers (short leases)."""
    dirs = HostDirs(tmp_path / 'host')
    site = tmp_path / 'site.json'
    site.write_text(json.dumps(dict(dirs.extra_vars(), **host_tools(private_lab, tmp_path / 'bin'))))
    with scratch_database(private_lab['DATABASE_URL']) as url:
        # Run directories of this test's own: a worker of another test (the other lane) starting meanwhile would
        # sweep the killed run's directory before this test's rescuer does, and the rescuer's sweep is checked.
        env = worker_environment(private_lab, url, extra_vars_file=site, lease_seconds=4, heartbeat_seconds=1,
                                 poll_seconds=1, retry_base_seconds=0.5, retry_max_seconds=1,
                                 run_dir=str(tmp_path / 'runs'))
        queue = Queue(url, env, tmp_path)
        queue.control = control
        queue.dirs = dirs
        queue.pdns = PowerDnsLab(private_lab)
        settings = Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE})
        tokens = {'mpanel': new_token()}
        queue.repository.create_token('mpanel', 'service', None, tokens['mpanel'])
        queue.api = Api(create_app(settings, queue.repository).test_client(), queue.repository, tokens,
                        OpenApiChecker())
        try:
            yield queue
        finally:
            queue.stop_all()
            control.clear_faults()


# ---------------------------------------------------------------- helpers

def host_tools(lab, directory):
    """vzdump and pct of the "Proxmox host" for this module's private lab: the lab's stand-ins
    (tests/lab/bin) find the simulator's control API through ``PVESIM_CONTROL_*`` or the shared lab's
    ``.lab/env``, and a worker hands a playbook no ``PVESIM_*`` variable (runner_api/settings.py), so
    each is wrapped in a script that sets them (the file readable by this user only)."""
    directory.mkdir(mode=0o700)
    tools = {}
    for name, target in (('vzdump', VZDUMP), ('pct', PCT)):
        path = directory / name
        path.write_text('#!/bin/sh\nPVESIM_CONTROL_URL=%s PVESIM_CONTROL_KEY=%s exec %s "$@"\n' % (
            shlex.quote(lab['PVESIM_CONTROL_URL']), shlex.quote(lab['PVESIM_CONTROL_KEY']), shlex.quote(target)))
        path.chmod(0o700)
        tools['cloudpods_' + name] = str(path)
    return tools


def ask(queue, path, **kwargs):
    """mPanel asks for an operation on a pod: 202 and the task."""
    response = queue.api.call('POST', '/api/cloud-pods' + path, 'mpanel', ALICE, **kwargs)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def task_row(queue, task_id):
    return queue.rows('SELECT id, task_type, status, attempts, worker_id, last_error, result '
                      'FROM cloud_pod_provisioning_tasks WHERE id = %s', (task_id,))[0]


def wait_task(queue, task_id, timeout=180):
    queue.wait(lambda: task_row(queue, task_id)['status'] in ('COMPLETED', 'FAILED'), timeout,
               'task %s to end' % task_id)
    row = task_row(queue, task_id)
    assert row['status'] == 'COMPLETED', '%s\n%s' % (row['last_error'], queue.all_logs()[-3000:])
    return row


def active_pod(queue, worker_id):
    """A pod ordered through the API and provisioned by worker ``worker_id`` (started here)."""
    domain = 'kill-%s.test' % uuid.uuid4().hex[:8]
    response = queue.api.call('POST', '/api/cloud-pods/order', 'mpanel', ALICE, json={
        'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org', 'domain': domain})
    assert response.status_code == 202, response.get_json()
    pod = response.get_json()
    queue.start(worker_id)
    create = queue.rows("SELECT id FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s", (pod['id'],))[0]
    wait_task(queue, create['id'])
    row = queue.subscriptions()[pod['id']]
    assert row['status'] == 'ACTIVE' and containers_named(queue.control, row['hostname']) == [str(row['vmid'])]
    return row


def archives(queue, hostname):
    directory = queue.dirs.backup_dir(hostname)
    return sorted(name for name in os.listdir(directory) if ARCHIVE_RE.match(name)) if os.path.isdir(directory) else []


def pve_tasks(queue, task_type, vmid, since):
    """The simulator's tasks of ``task_type`` started since ``since`` on CT ``vmid`` (None: any CT; a
    clone's task names the CT it copies, the template)."""
    return [task for task in queue.control.state()['tasks'] if task['type'] == task_type and task['starttime'] >= since
            and (vmid is None or str(task.get('id')) == str(vmid))]


def command_line(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        return ''


def kill_worker(queue, worker_id):
    """SIGKILL worker ``worker_id`` and every process under it at once, as an OOM kill or a lost machine
    would: all are stopped first (SIGSTOP, top down, again until no new one appears: a stopped process
    forks no more), then killed, so no guard, runner or playbook gets to clean up or to go on. Returns
    the command lines of the killed processes."""
    process = queue.workers.pop(worker_id)
    stopped = {}
    while True:
        new = [pid for pid in process_tree(process.pid) if pid not in stopped]
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped[pid] = command_line(pid)
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.wait(timeout=60) == -signal.SIGKILL
    return list(stopped.values())


def kill_at_hold(queue, worker_id, task_id, task_type, vmid, since):
    """With the PVE task ``task_type`` of CT ``vmid`` held: kill the worker running the operation there and
    prove that the kill landed while the playbook was at that point. Returns the killed processes'
    command lines. The PVE task stays held (``release``)."""
    queue.control.wait_held(task_type, timeout=180)
    row = task_row(queue, task_id)
    assert (row['status'], row['attempts'], row['worker_id']) == ('RUNNING', 1, worker_id), row
    killed = kill_worker(queue, worker_id)
    [held] = pve_tasks(queue, task_type, vmid, since)
    assert held['status'] == 'running', held  # the kill came while PVE's task ran
    assert any('ansible-playbook' in line for line in killed), killed  # the playbook was running too
    # The first attempt ran the playbook (its event rows) and has no outcome: the kill ended it.
    events = queue.rows('SELECT attempt, worker_id, step, status FROM cloud_pod_events WHERE task_id = %s ORDER BY id',
                        (task_id,))
    assert [e for e in events if e['attempt'] == 1 and e['step'] != 'worker'], events
    assert not [e for e in events if e['attempt'] == 1 and e['status'] in OUTCOMES], events
    assert task_row(queue, task_id)['status'] == 'RUNNING'  # nobody closed it: the lease will expire
    return killed


def release(queue, task_type, vmid, since):
    """Let the held PVE task go on, and wait until it ended on its own (nobody watches it any more)."""
    queue.control.release(task_type)
    queue.wait(lambda: pve_tasks(queue, task_type, vmid, since)[0]['status'] == 'stopped', 60,
               'the released %s task to end' % task_type)


def rescued(queue, task_id):
    """A second worker takes the task over once its lease expired and completes it: attempt 2."""
    if 'rescuer' not in queue.workers:
        queue.start('rescuer')
    row = wait_task(queue, task_id)
    # Nothing of the killed run cleaned up after it (its guard was killed too): the rescuer removed its directory.
    assert 'left behind by a worker that died' in queue.log('rescuer')
    assert (row['attempts'], row['worker_id']) == (2, 'rescuer'), queue.rows(
        "SELECT attempt, step, status, message FROM cloud_pod_events WHERE task_id = %s AND status NOT IN "
        "('ok', 'started', 'skipped') ORDER BY id", (task_id,))
    events = queue.rows('SELECT attempt, worker_id, status, message FROM cloud_pod_events WHERE task_id = %s '
                        "AND step = 'worker' ORDER BY id", (task_id,))
    assert [(e['attempt'], e['worker_id'], e['status']) for e in events if e['status'] in OUTCOMES] == \
        [(2, 'rescuer', 'completed')], events
    return row


def listed(queue, pod_id):
    """The pod's archives as the API lists them."""
    body = queue.api.call('GET', '/api/cloud-pods/%s/backups' % pod_id, 'mpanel', ALICE).get_json()
    return sorted(entry['name'] for entry in body['backups'])


# ---------------------------------------------------------------- the three operations

@pytest.mark.parametrize('pve_task', ['ends before the next worker comes', 'still runs when the next worker comes'])
def test_restore_killed_during_pves_restore_task_is_finished_by_another_worker(queue, pve_task):
    pod = active_pod(queue, 'first')
    pod_id, hostname, vmid = str(pod['id']), pod['hostname'], pod['vmid']
    # The archive to restore: a BACKUP through the API, which lists the pod's archives for the API.
    backup = wait_task(queue, ask(queue, '/%s/backups' % pod_id)['id'])
    [chosen] = archives(queue, hostname)
    assert backup['result']['archive'] == chosen and listed(queue, pod_id) == [chosen]
    before = queue.control.state()['containers'][str(vmid)]
    # A hand edit after the backup (the pod record lines stay): the restore must take it away.
    queue.control.set_container(vmid, description=before['config']['description'] + 'changed after the backup\n')

    since = int(time.time())
    queue.control.hold('vzrestore')
    task = ask(queue, '/%s/restore' % pod_id, json={'archive': chosen})
    killed = kill_at_hold(queue, 'first', task['id'], 'vzrestore', vmid, since)
    assert any(' restore %d ' % vmid in line and chosen in line for line in killed), killed  # pct restore ran
    # Killed: one container (the old pod under PVE's restore, or the restored one), the safety backup and
    # the journal there.
    assert containers_named(queue.control, hostname) == [str(vmid)]
    [safety] = [name for name in archives(queue, hostname) if name != chosen]
    journal = os.path.join(queue.dirs.backup_dir(hostname), '.restore')
    assert json.loads(open(journal).read())['archive'] == chosen
    if pve_task == 'ends before the next worker comes':
        release(queue, 'vzrestore', vmid, since)
    else:
        # A long restore (a big archive) outlives the lease: the next worker finds PVE's task still running
        # (the CT locked), takes no second safety backup and waits for it at the stop of the container.
        queue.start('rescuer')
        queue.wait(lambda: queue.rows("SELECT 1 FROM cloud_pod_events WHERE task_id = %s AND attempt = 2 AND step = %s "
                                      "AND status = 'started'", (task['id'], "Stop the pod's container")),
                   180, 'the second attempt to reach the stop of the container')
        assert pve_tasks(queue, 'vzrestore', vmid, since)[0]['status'] == 'running'
        assert archives(queue, hostname) == sorted([chosen, safety])
        release(queue, 'vzrestore', vmid, since)

    row = rescued(queue, task['id'])
    # Exactly one container, the pod's, restored and running; the hand edit is gone.
    assert containers_named(queue.control, hostname) == [str(vmid)]
    after = queue.control.state()['containers'][str(vmid)]
    assert after['status'] == 'running' and 'changed after the backup' not in after['config']['description']
    assert after['config']['net0'] == before['config']['net0']
    subscription = queue.subscriptions()[pod_id]
    assert (subscription['status'], subscription['vmid']) == ('ACTIVE', vmid)
    # Nothing lost: the chosen archive and the first attempt's safety backup (no second one), journal gone.
    assert archives(queue, hostname) == sorted([chosen, safety])
    assert row['result']['safety_archive'] == safety
    with open(os.path.join(queue.dirs.backup_dir(hostname), safety + '.notes')) as handle:
        assert handle.read().startswith('cloudpods: manual (safety backup before restoring %s)' % chosen)
    assert not os.path.exists(journal)
    assert listed(queue, pod_id) == sorted([chosen, safety])


def test_reinstall_killed_after_the_old_container_went_is_finished_by_another_worker(queue):
    pod = active_pod(queue, 'first')
    pod_id, hostname, vmid = str(pod['id']), pod['hostname'], pod['vmid']
    before = queue.control.state()['containers'][str(vmid)]
    assert archives(queue, hostname) == []

    since = int(time.time())
    queue.control.hold('vzclone')
    task = ask(queue, '/%s/reinstall' % pod_id)
    kill_at_hold(queue, 'first', task['id'], 'vzclone', None, since)
    release(queue, 'vzclone', None, since)
    # Killed after the old container was destroyed, while the new one was being cloned: the backup and
    # the journal are there.
    assert [t['status'] for t in pve_tasks(queue, 'vzdestroy', vmid, since)] == ['stopped']
    [backup] = archives(queue, hostname)
    journal = os.path.join(queue.dirs.backup_dir(hostname), '.reinstall')
    assert json.loads(open(journal).read())['vmid'] == vmid

    row = rescued(queue, task['id'])
    # Exactly one container with the pod's name and VMID, running, the same MAC address.
    assert containers_named(queue.control, hostname) == [str(vmid)]
    after = queue.control.state()['containers'][str(vmid)]
    assert after['status'] == 'running' and after['config']['net0'] == before['config']['net0']
    subscription = queue.subscriptions()[pod_id]
    assert (subscription['status'], subscription['vmid']) == ('ACTIVE', vmid)
    # Nothing lost: the backup the first attempt took is there, and no second one (of a half-made pod).
    assert archives(queue, hostname) == [backup]
    assert row['result']['archive'] == backup
    with open(os.path.join(queue.dirs.backup_dir(hostname), backup + '.notes')) as handle:
        assert handle.read().startswith('cloudpods: manual (backup before reinstall)')
    assert not os.path.exists(journal)
    assert listed(queue, pod_id) == [backup]


@pytest.mark.parametrize('pve_task', ['ends before the next worker comes', 'still runs when the next worker comes'])
def test_terminate_killed_during_the_destroy_is_finished_by_another_worker(queue, pve_task):
    pod = active_pod(queue, 'first')
    pod_id, hostname, vmid = str(pod['id']), pod['hostname'], pod['vmid']
    domain = queue.rows('SELECT domain FROM cloud_pod_subscriptions WHERE id = %s', (pod_id,))[0]['domain']
    assert queue.pdns.zone(domain) is not None and os.path.exists(queue.dirs.cron_file(hostname))
    assert archives(queue, hostname) == []

    since = int(time.time())
    queue.control.hold('vzdestroy')
    task = ask(queue, '/%s/terminate' % pod_id)
    kill_at_hold(queue, 'first', task['id'], 'vzdestroy', vmid, since)
    # Killed during the destroy, after the final backup: it is there.
    [final] = archives(queue, hostname)
    assert queue.subscriptions()[pod_id]['status'] == 'ACTIVE'
    if pve_task == 'ends before the next worker comes':
        release(queue, 'vzdestroy', vmid, since)
    else:
        # A destroy that outlives the lease: the next worker finds the CT locked 'destroyed' (vzdump cannot
        # back it up), takes no second final backup, and its destroy, refused while the lock holds, is
        # retried until PVE's task is over. pod_container asks for the CT's run state just before it
        # destroys (nothing else of the run does).
        queue.control.clear_requests()
        queue.start('rescuer')
        status_path = '/lxc/%d/status/current' % vmid
        queue.wait(lambda: [r for r in queue.control.requests() if r['method'] == 'GET' and r['path'].endswith(status_path)],
                   180, 'the second attempt to reach the destroy')
        assert pve_tasks(queue, 'vzdestroy', vmid, since)[0]['status'] == 'running'
        assert task_row(queue, task['id'])['attempts'] == 2
        release(queue, 'vzdestroy', vmid, since)

    rescued(queue, task['id'])
    assert containers_named(queue.control, hostname) == []
    assert len(pve_tasks(queue, 'vzdestroy', vmid, since)) == 1  # the first attempt's, never a second one
    assert queue.subscriptions()[pod_id]['status'] == 'TERMINATED'
    assert queue.pdns.zone(domain) is None and not os.path.exists(queue.dirs.cron_file(hostname))
    assert archives(queue, hostname) == [final]  # the final backup kept, and no second one
