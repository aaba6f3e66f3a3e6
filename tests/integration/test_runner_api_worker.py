# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's workers as separate processes against a real PostgreSQL.

The queue tests (races, SIGTERM) run a stub playbook written by the test (fast, and it logs each
run so "exactly once" can be counted). The lab tests (SIGKILL mid-playbook, retries, the whole
order) run the collection's provision playbook against a private lab of this module (its own
simulator, PowerDNS, SMTP and PostgreSQL), since they inject faults.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, start_worker, worker_environment  # noqa: E402
from labenv import free_port  # noqa: E402
from labcontrol import LabControl  # noqa: E402

VZDUMP = os.path.join(ROOT, 'tests', 'lab', 'bin', 'vzdump')
STUB_PLAYBOOK = """
- name: Stub of provision.yml for the queue tests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Record the run
      ansible.builtin.shell: "echo {{ pod }} {{ lookup('env', 'CLOUDPODS_WORKER_PID') }} >> {{ stub_run_log }}"
      changed_when: true
    - name: Work for a while
      ansible.builtin.command: "sleep {{ stub_seconds }}"
      changed_when: false
    - name: Report the pod
      ansible.builtin.set_stats:
        data: {vmid: 4242, node: stub, ip: 192.0.2.7}
        per_host: false
"""


# ---------------------------------------------------------------- helpers

class Queue(object):
    """One scratch database, its repository, and the workers started on it."""

    def __init__(self, database_url, env, tmp_path):
        self.database_url = database_url
        self.env = env
        self.tmp_path = tmp_path
        self.pool = open_pool(Settings.from_env({'DATABASE_URL': database_url}), name='test-worker', min_size=1,
                              max_size=4)
        self.repository = Repository(self.pool)
        self.workers = {}

    def order(self, domain=None, email='jane@example.org', plan='CLOUD_POD_STARTER', max_attempts=3):
        row, _created = self.repository.create_order({
            'customer_id': 'cust-1', 'customer_email': email, 'plan_code': plan, 'domain': domain,
            'hostname': 'cp-' + uuid.uuid4().hex[:10], 'idempotency_key': None, 'request_digest': 'x'},
            max_attempts)
        return row

    def start(self, worker_id, **overrides):
        env = dict(self.env)
        env.update(overrides)
        process = start_worker(env, worker_id, str(self.tmp_path / ('%s.log' % worker_id)))
        self.workers[worker_id] = process
        return process

    def log(self, worker_id):
        return (self.tmp_path / ('%s.log' % worker_id)).read_text()

    def all_logs(self):
        return ''.join(path.read_text() for path in self.tmp_path.glob('*.log'))

    def rows(self, sql, params=()):
        with self.pool.connection() as connection:
            return connection.execute(sql, params).fetchall()

    def subscriptions(self):
        return dict((str(row['id']), row) for row in self.rows(
            'SELECT id, hostname, status, vmid, node, host(ip) AS ip, last_error FROM cloud_pod_subscriptions'))

    def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for worker_id, process in self.workers.items():
                if process.poll() not in (None, 0):
                    raise AssertionError('worker %s died (rc %s):\n%s' % (worker_id, process.returncode,
                                                                          self.log(worker_id)[-3000:]))
            time.sleep(0.1)
        raise AssertionError('timed out waiting for %s\n%s' % (what, self.all_logs()[-4000:]))

    def wait_all(self, status, timeout):
        self.wait(lambda: all(row['status'] == status for row in self.subscriptions().values()), timeout,
                  'every pod %s: %s' % (status, sorted(r['status'] for r in self.subscriptions().values())))

    def stop_all(self):
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pool.close()


def stub_site(path, **values):
    """A stub playbook's site settings file: its values, and the Proxmox host group every worker checks at
    start (cloudpods_proxmox_hosts: this machine, as the default inventory has it)."""
    values.setdefault('cloudpods_proxmox_hosts', 'localhost')
    path.write_text(json.dumps(values))
    return path


@pytest.fixture
def stub_queue(lab_env, tmp_path):
    """A queue whose provision playbook is the stub (no lab services needed besides PostgreSQL)."""
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    (playbooks / 'provision.yml').write_text(STUB_PLAYBOOK)
    run_log = tmp_path / 'runs.txt'
    run_log.write_text('')
    extra_vars = stub_site(tmp_path / 'vars.json', stub_run_log=str(run_log), stub_seconds=0)
    with scratch_database(lab_env['DATABASE_URL']) as url:
        # A long lease: no queue test waits for one to expire, and with 8 workers on a loaded 2-core
        # machine a 1 s heartbeat can fall seconds behind (a lost lease would run a task twice).
        env = worker_environment(lab_env, url, playbook_dir=playbooks, extra_vars_file=extra_vars,
                                 lease_seconds=120, heartbeat_seconds=1, poll_seconds=2, retry_base_seconds=0.2)
        queue = Queue(url, env, tmp_path)
        queue.run_log = run_log
        queue.extra_vars = extra_vars
        try:
            yield queue
        finally:
            queue.stop_all()


def why_retried(queue, tasks):
    """What went wrong for ``tasks``: their events other than ok (a failed attempt says why), then the workers' logs."""
    events = queue.rows("SELECT task_id, attempt, worker_id, step, status, message FROM cloud_pod_events "
                        "WHERE task_id = ANY(%s) AND status <> 'ok' ORDER BY id", ([task['id'] for task in tasks],))
    return '\n'.join(str(dict(event)) for event in events) + '\n' + queue.all_logs()[-6000:]


def runs(queue):
    return [line.split()[0] for line in queue.run_log.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- races

@pytest.mark.parametrize('workers', [2, 8])
def test_workers_racing_run_every_task_exactly_once(stub_queue, workers):
    # 16 tasks: each worker races the others for several of them (the 8 workers claim 2 each on average);
    # every task is a whole ansible-playbook run, the cost of this test.
    pods = [stub_queue.order() for dummy in range(16)]
    for index in range(workers):
        stub_queue.start('w%d' % index)
    stub_queue.wait_all('ACTIVE', timeout=900)  # 16 ansible runs on 2 cores: minutes on a loaded machine
    ran = runs(stub_queue)
    assert sorted(ran) == sorted(pod['hostname'] for pod in pods)  # each exactly once
    tasks = stub_queue.rows('SELECT id, status, attempts, worker_id FROM cloud_pod_provisioning_tasks')
    again = [task for task in tasks if (task['status'], task['attempts']) != ('COMPLETED', 1)]
    assert not again, 'tasks not done in one attempt: %s\nwhy:\n%s' % (again, why_retried(stub_queue, again))
    assert len(set(task['worker_id'] for task in tasks)) > 1, 'the work was not shared'
    claimed = stub_queue.rows("SELECT count(*) AS n FROM cloud_pod_events WHERE status = 'claimed'")[0]['n']
    assert claimed == len(pods)
    assert all((row['vmid'], row['ip']) == (4242, '192.0.2.7') for row in stub_queue.subscriptions().values())


def test_sigterm_lets_the_running_playbook_finish(stub_queue):
    stub_site(stub_queue.extra_vars, stub_run_log=str(stub_queue.run_log), stub_seconds=3)
    pod = stub_queue.order()
    worker = stub_queue.start('graceful', CLOUDPODS_SHUTDOWN_GRACE_SECONDS='300')
    stub_queue.wait(lambda: runs(stub_queue), 120, 'the playbook to start')
    second = stub_queue.order()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=300) == 0
    subs = stub_queue.subscriptions()
    assert subs[str(pod['id'])]['status'] == 'ACTIVE'
    assert subs[str(second['id'])]['status'] == 'PROVISIONING'  # not claimed after the signal
    task = stub_queue.rows('SELECT status, attempts, worker_id FROM cloud_pod_provisioning_tasks '
                           'WHERE subscription_id = %s', (second['id'],))[0]
    assert (task['status'], task['attempts'], task['worker_id']) == ('PENDING', 0, None)


def test_sigterm_past_the_grace_period_releases_the_task(stub_queue):
    stub_site(stub_queue.extra_vars, stub_run_log=str(stub_queue.run_log), stub_seconds=600)
    pod = stub_queue.order()
    worker = stub_queue.start('impatient', CLOUDPODS_SHUTDOWN_GRACE_SECONDS='0.5')
    stub_queue.wait(lambda: runs(stub_queue), 120, 'the playbook to start')
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=300) == 0  # the playbook would run 600 s: cancelled past the 0.5 s grace period
    task = stub_queue.rows('SELECT status, attempts, worker_id FROM cloud_pod_provisioning_tasks')[0]
    assert (task['status'], task['attempts'], task['worker_id']) == ('PENDING', 0, None)
    # Nothing lost: another worker picks it up at once and finishes it.
    stub_site(stub_queue.extra_vars, stub_run_log=str(stub_queue.run_log), stub_seconds=0)
    stub_queue.start('next')
    stub_queue.wait_all('ACTIVE', timeout=120)
    assert runs(stub_queue) == [pod['hostname'], pod['hostname']]
    released = stub_queue.rows("SELECT count(*) AS n FROM cloud_pod_events WHERE status = 'released'")[0]['n']
    assert released == 1


def test_missing_playbook_fails_at_once_with_a_readable_error(stub_queue):
    pod = stub_queue.order()
    stub_queue.start('w', CLOUDPODS_PLAYBOOK_DIR=str(stub_queue.tmp_path))
    stub_queue.wait_all('FAILED', timeout=120)
    row = stub_queue.subscriptions()[str(pod['id'])]
    assert 'no playbook for CREATE_CONTAINER' in row['last_error']
    assert stub_queue.rows('SELECT attempts FROM cloud_pod_provisioning_tasks')[0]['attempts'] == 1


def waiting_on_listen(queue, worker_id, quiet=3):
    """The worker is ready and its database sessions have been idle for ``quiet`` s: its first round
    (lease sweep, claim, the idle query, each a transaction of its own) is over, and it sleeps on LISTEN.
    Only a worker stalled that long between two statements of a round could fool this."""
    if 'worker %s ready' % worker_id not in queue.log(worker_id):
        return False
    sessions = queue.rows("SELECT state, now() - state_change > make_interval(secs => %s) AS quiet "
                          "FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                          (quiet, 'cloudpods-worker ' + worker_id))
    return bool(sessions) and all(row['state'] == 'idle' and row['quiet'] for row in sessions)


def test_notify_wakes_an_idle_worker_at_once(stub_queue):
    # Its next poll is an hour away: a claim at all (within a bound far below that) proves the NOTIFY woke it.
    stub_queue.start('idle', CLOUDPODS_POLL_SECONDS='3600')
    stub_queue.wait(lambda: waiting_on_listen(stub_queue, 'idle'), 60, 'the worker to sleep on LISTEN')
    pod = stub_queue.order()
    stub_queue.wait(lambda: stub_queue.rows("SELECT 1 FROM cloud_pod_provisioning_tasks WHERE worker_id = 'idle'"),
                    120, 'the order to be claimed: NOTIFY did not wake the idle worker')
    stub_queue.wait_all('ACTIVE', timeout=120)
    assert runs(stub_queue) == [pod['hostname']]


# ---------------------------------------------------------------- against the lab, with the real playbook

@pytest.fixture
def lab_queue(private_lab, tmp_path):
    extra_vars = site_vars(tmp_path)
    control = LabControl.from_env(private_lab)
    control.clear_faults()
    with scratch_database(private_lab['DATABASE_URL']) as url:
        env = worker_environment(private_lab, url, extra_vars_file=extra_vars, lease_seconds=4, heartbeat_seconds=1,
                                 poll_seconds=1, retry_base_seconds=0.5, retry_max_seconds=1)
        queue = Queue(url, env, tmp_path)
        queue.control = control
        try:
            yield queue
        finally:
            queue.stop_all()
            control.clear_faults()


def site_vars(tmp_path):
    """The operator's site settings for the playbooks (CLOUDPODS_EXTRA_VARS_FILE): the Proxmox host is
    localhost, its backup, cron and state directories under ``tmp_path``, vzdump the lab's stand-in."""
    host = tmp_path / 'host'
    (host / 'cron.d').mkdir(parents=True)
    (host / 'lib').mkdir()  # /usr/local/lib: where deprovision installs the prune script
    path = tmp_path / 'site.json'
    path.write_text(json.dumps({
        'cloudpods_proxmox_hosts': 'localhost', 'cloudpods_backup_root': str(host / 'backup'),
        'cloudpods_cron_dir': str(host / 'cron.d'), 'cloudpods_state_dir': str(host / 'state'),
        'cloudpods_vzdump': VZDUMP, 'cloudpods_lib_dir': str(host / 'lib')}))
    return path


def containers_named(control, hostname):
    return [vmid for vmid, ct in control.state()['containers'].items() if ct['config'].get('hostname') == hostname]


@pytest.mark.own_lab  # a lab of its own: the real-container lane, which ends sooner
def test_sigkilled_worker_its_lease_expires_another_completes_one_container(lab_queue):
    control = lab_queue.control
    # The clone task is held running until the worker is dead: the kill lands mid-clone by
    # construction, and the assertions below check that it did.
    since = int(time.time())

    def clones():  # this test's clone tasks (the private lab serves the whole module)
        return [task for task in control.state()['tasks'] if task['type'] == 'vzclone' and task['starttime'] >= since]
    control.hold('vzclone')
    try:
        pod = lab_queue.order()
        doomed = lab_queue.start('doomed')
        control.wait_held('vzclone', timeout=120)
        doomed.kill()
        doomed.wait()
        killed_at = time.time()
        del lab_queue.workers['doomed']
        [clone] = clones()
        assert clone['status'] == 'running', clone
        assert containers_named(control, pod['hostname']) != [] and lab_queue.rows(
            "SELECT 1 FROM cloud_pod_events WHERE step LIKE 'pod_container : Converge%%' AND status = 'started'")
        assert lab_queue.subscriptions()[str(pod['id'])]['status'] != 'ACTIVE'
        control.release('vzclone')
        lab_queue.start('rescuer')
        lab_queue.wait_all('ACTIVE', timeout=120)
    finally:
        control.clear_faults()
    [clone] = clones()  # the rescuer adopted the container: no second clone
    assert (clone['status'], clone['exitstatus']) == ('stopped', 'OK') and clone['endtime'] >= int(killed_at)
    row = lab_queue.subscriptions()[str(pod['id'])]
    assert containers_named(lab_queue.control, pod['hostname']) == [str(row['vmid'])]
    task = lab_queue.rows('SELECT attempts, worker_id FROM cloud_pod_provisioning_tasks')[0]
    assert (task['attempts'], task['worker_id']) == (2, 'rescuer')


@pytest.mark.own_lab  # a lab of its own: the real-container lane, which ends sooner
def test_transient_proxmox_fault_is_retried(lab_queue):
    lab_queue.control.fault(method='POST', path=r'/clone$', status=500, reason='storage is temporarily offline',
                            count=1)
    pod = lab_queue.order()
    lab_queue.start('w')
    lab_queue.wait_all('ACTIVE', timeout=120)
    task = lab_queue.rows('SELECT attempts, status FROM cloud_pod_provisioning_tasks')[0]
    assert (task['attempts'], task['status']) == (2, 'COMPLETED')
    retry = lab_queue.rows("SELECT message FROM cloud_pod_events WHERE status = 'retry'")
    assert len(retry) == 1 and 'storage is temporarily offline' in retry[0]['message']
    assert len(containers_named(lab_queue.control, pod['hostname'])) == 1


@pytest.mark.own_lab  # a lab of its own: the real-container lane, which ends sooner
def test_permanent_proxmox_fault_ends_failed_after_max_attempts(lab_queue):
    lab_queue.control.fault(method='POST', path=r'/clone$', status=500, reason='storage local-lvm is full',
                            count=-1)
    pod = lab_queue.order(max_attempts=2)
    lab_queue.start('w')
    lab_queue.wait_all('FAILED', timeout=120)
    task = lab_queue.rows('SELECT attempts, status, last_error FROM cloud_pod_provisioning_tasks')[0]
    assert (task['attempts'], task['status']) == (2, 'FAILED')
    row = lab_queue.subscriptions()[str(pod['id'])]
    assert 'storage local-lvm is full' in row['last_error']
    assert row['last_error'].startswith("Step 'pod_container")


@pytest.mark.own_lab  # a lab of its own: the real-container lane, which ends sooner
def test_order_over_http_to_active_with_events_and_no_secret(lab_queue, private_lab, tmp_path):
    token = new_token()
    lab_queue.repository.create_token('mpanel', 'service', None, token)
    port = free_port()
    api_log = tmp_path / 'api.log'
    with open(str(api_log), 'ab') as log:
        api = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'gunicorn'), '-b',
                                '127.0.0.1:%d' % port, '-w', '2', 'runner_api.app:create_app()'],
                               env=lab_queue.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        base = 'http://127.0.0.1:%d/api/cloud-pods' % port
        headers = {'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'cust-42'}
        _wait_http(base + '/plans')
        domain = 'shop-%s.example.com' % uuid.uuid4().hex[:6]
        # A private key pasted by mistake: refused, never repeated (the API's log is checked below).
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'jane@laptop', '-f',
                        str(tmp_path / 'id_ed25519')], check=True, capture_output=True)
        private = (tmp_path / 'id_ed25519').read_text()
        public = (tmp_path / 'id_ed25519.pub').read_text().strip()
        refused = requests.post(base + '/order', json={'plan_code': 'CLOUD_POD_PREMIUM', 'domain': domain,
                                                       'customer_email': 'jane@example.org',
                                                       'ssh_public_keys': [public, private]},
                                headers=headers, timeout=10, verify=False)
        assert refused.status_code == 422 and refused.json()['errors'][0].startswith('ssh_public_keys[1]: ')
        assert private.splitlines()[1][:24] not in refused.text
        response = requests.post(base + '/order', json={'plan_code': 'CLOUD_POD_PREMIUM', 'domain': domain,
                                                        'customer_email': 'jane@example.org',
                                                        'ssh_public_keys': [public]},
                                 headers=dict(headers, **{'Idempotency-Key': 'order-1'}), timeout=10, verify=False)
        assert response.status_code == 202, response.text
        pod_id = response.json()['id']
        lab_queue.start('w')
        detail = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            detail = requests.get(base + '/' + pod_id, headers=headers, timeout=10, verify=False).json()
            if detail['status'] in ('ACTIVE', 'FAILED'):
                break
            time.sleep(0.5)
        assert detail['status'] == 'ACTIVE', detail
        assert detail['vmid'] and re.match(r'^\d+\.\d+\.\d+\.\d+$', detail['ip'])
        assert detail['progress']['percent'] == 100
        assert [key['comment'] for key in detail['ssh']['keys']] == ['jane@laptop']
        container = lab_queue.control.state()['containers'][str(detail['vmid'])]
        assert container['config']['hostname'] == detail['hostname']
        assert int(container['config']['cores']) == 2  # the Premium plan's vCPUs, from plans.yml
        # The admin restart goes through the same queue and runs playbooks/restart.yml.
        admin = new_token()
        lab_queue.repository.create_token('ops', 'admin', None, admin)
        restart = requests.post(base + '/admin/%s/restart' % pod_id, headers={'Authorization': 'Bearer ' + admin},
                                timeout=10, verify=False)
        assert restart.status_code == 202, restart.text
        lab_queue.wait(lambda: lab_queue.rows("SELECT 1 FROM cloud_pod_provisioning_tasks WHERE task_type = 'RESTART' "
                                              "AND status IN ('COMPLETED', 'FAILED')"), 90, 'the restart')
        task = lab_queue.rows("SELECT status, last_error FROM cloud_pod_provisioning_tasks WHERE task_type = 'RESTART'")
        assert task[0]['status'] == 'COMPLETED', task
        assert lab_queue.subscriptions()[pod_id]['status'] == 'ACTIVE'
    finally:
        api.terminate()
        api.wait(timeout=10)
    steps = lab_queue.rows('SELECT step, status, message FROM cloud_pod_events ORDER BY id')
    assert any(s['step'].startswith('pod_container : ') and s['status'] == 'changed' for s in steps)
    assert any(s['step'].startswith('pod_dns : ') and s['status'] == 'changed' for s in steps)
    assert steps[-1]['status'] == 'completed' and 'vmid' in steps[-1]['message']
    # No secret in the events table, the worker's log or the API's log.
    dump = json.dumps(lab_queue.rows('SELECT * FROM cloud_pod_events'), default=str)
    dump += json.dumps(lab_queue.rows('SELECT * FROM cloud_pod_provisioning_tasks'), default=str)
    dump += json.dumps(lab_queue.rows('SELECT * FROM cloud_pod_subscriptions'), default=str)
    dump += json.dumps(lab_queue.rows('SELECT * FROM cloud_pod_api_tokens'), default=str)
    logs = lab_queue.all_logs() + api_log.read_text()
    for name in ('PROXMOX_API_TOKEN_SECRET', 'POWERDNS_API_KEY', 'PVESIM_CONTROL_KEY'):
        assert private_lab[name] not in dump and private_lab[name] not in logs, name
    password = re.match(r'postgresql://[^:]+:([^@]+)@', private_lab['DATABASE_URL']).group(1)
    assert password not in dump and password not in logs
    assert token not in dump and token not in logs and admin not in dump and admin not in logs
    for line in private.splitlines()[1:-1]:
        assert line[:24] not in dump and line[:24] not in logs


def _wait_http(url, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2, verify=False).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError('%s did not answer' % url)
