# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Transfer metering and quotas (issue 16): ``cloudpods meter`` against the lab's simulator (its CTs'
netin/netout counters, moved through the control API) and PostgreSQL (a database of its own).

- A pass is one GET /cluster/resources, whatever the number of pods (the simulator's request log).
- Bytes are counted once: across passes, a CT restart (the counters begin again), a 64-bit wrap, a
  pass that dies before its commit, and a second meter running at the same time.
- At 80% and 100% of the Student plan's 50 GiB: the webhook events, and the TRANSFER_QUOTA operation,
  run by a real worker with the real playbook: the customer's mail arrives and the CT's net0 gets
  rate=; the next month (a clock the test moves) lifts it. The suspend policy suspends with the
  reason transfer-quota, and a plan change with more transfer resumes only such a pod.
- GET /api/cloud-pods/{id}/usage and the pod detail show the counted bytes, as the OpenAPI document says.
"""

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support'),
              os.path.join(ROOT, '.build', 'collections')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api import metering  # noqa: E402
from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.plans import PlanCatalogue  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, proxmox_client, scratch_database, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from smtplab import Mailbox  # noqa: E402

PLANS_FILE = Path(ROOT, 'playbooks', 'vars', 'plans.yml')
GIB = 1 << 30
QUOTA = 50 * GIB  # the Student plan's "50GB/mo"
NEXT_MONTH = datetime(2099, 2, 1, 0, 5, tzinfo=timezone.utc)  # a month no real pass reaches


@pytest.fixture(scope='module')
def lab(lab_env):
    return Lab(lab_env)


class Lab(object):
    """The shared lab's simulator: CTs cloned from the template, their counters moved by the control API."""

    def __init__(self, env):
        self.env = env
        self.client = proxmox_client(env)
        self.control = LabControl.from_env(env)
        self.made = []

    def container(self, start=True):
        hostname = 'mtr-' + uuid.uuid4().hex[:10]
        # A pod's CT: its record in the description, as pod_container writes it (the playbooks work on pods only).
        vmid, _created = self.client.clone_container('pve', 9000, 120, hostname=hostname, full=True,
                                                     description='cloudpods-pod: %s\n' % hostname)
        self.made.append(vmid)
        if start:
            self.power(vmid, 'start')
        return vmid, hostname

    def power(self, vmid, action):
        self.client.run_task('POST', 'nodes/pve/lxc/%d/status/%s' % (vmid, action), 120)

    def traffic(self, vmid, netin=0, netout=0):
        """Bytes the CT received (netin) and sent (netout), added to its counters."""
        return self.control._call('POST', '/containers/%d/traffic' % vmid, {'netin': netin, 'netout': netout})

    def counters(self, vmid, netin, netout):
        """The CT's counters set as they are (a wrap, a jump)."""
        return self.control.set_container(vmid, netin=netin, netout=netout)

    def resources_calls(self):
        return [r for r in self.control.requests() if r['path'].startswith('/cluster/resources')]

    def cleanup(self):
        for vmid in self.made:
            try:
                self.client.run_task('POST', 'nodes/pve/lxc/%d/status/stop' % vmid, 120)
            except Exception:  # pylint: disable=broad-except
                pass  # already stopped
            self.client.run_task('DELETE', 'nodes/pve/lxc/%d' % vmid, 120, params={'purge': 1})


@pytest.fixture(scope='module')
def db(lab_env, lab):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        settings = Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': str(PLANS_FILE)})
        pool = open_pool(settings, name='test-metering', min_size=1, max_size=4)
        yield Db(url, settings, pool, Repository(pool))
        pool.close()
    lab.cleanup()


class Db(object):
    def __init__(self, url, settings, pool, repository):
        self.url = url
        self.settings = settings
        self.pool = pool
        self.repository = repository

    def sql(self, statement, params=()):
        with self.pool.connection() as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else None

    def pod(self, vmid, hostname, plan='CLOUD_POD_STUDENT', status='ACTIVE', email='jane@example.org'):
        row, _created = self.repository.create_order({
            'customer_id': 'cust-meter', 'customer_email': email, 'plan_code': plan, 'domain': None,
            'hostname': hostname, 'idempotency_key': None, 'request_digest': 'x'}, 3)
        self.sql("UPDATE cloud_pod_provisioning_tasks SET status = 'COMPLETED', finished_at = now() "
                 "WHERE subscription_id = %s", (row['id'],))
        self.sql("UPDATE cloud_pod_subscriptions SET status = %s, vmid = %s, node = 'pve' WHERE id = %s",
                 (status, vmid, row['id']))
        return row['id']

    def usage(self, pod, month=None):
        rows = self.sql("SELECT * FROM cloud_pod_transfer_usage WHERE subscription_id = %s "
                        "AND month = coalesce(%s::date, date_trunc('month', now() AT TIME ZONE 'UTC')::date)",
                        (pod, month))
        return rows[0] if rows else None

    def total(self, pod, month=None):
        row = self.usage(pod, month)
        return (row['bytes_in'], row['bytes_out']) if row else (0, 0)

    def open_tasks(self, pod):
        return self.sql("SELECT id, task_type, params FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s "
                        "AND status IN ('PENDING', 'RUNNING') ORDER BY id", (pod,))

    def events(self, pod, kind='pod.transfer_quota'):
        return [row['payload'] for row in self.sql(
            "SELECT payload FROM cloud_pod_webhook_outbox WHERE subscription_id = %s AND event_type = %s "
            "ORDER BY sequence", (pod, kind))]


def new_meter(lab_env, db, **kwargs):
    api = metering.ProxmoxResources(lab_env['PROXMOX_API_URL'], lab_env['PROXMOX_API_TOKEN_ID'],
                                    lab_env['PROXMOX_API_TOKEN_SECRET'], lab_env['PROXMOX_CA_BUNDLE'])
    return metering.Meter(db.pool, api, PlanCatalogue(PLANS_FILE), **kwargs)


def run_worker(lab_env, db, tmp_path):
    """One task through ``cloudpods worker --once`` with the real playbooks; its log for a failure message."""
    # The lab's own inventory and site file (tests/lab/lab up writes them): the Proxmox host is localhost.
    env = worker_environment(lab_env, db.url, run_dir=tmp_path / 'runs', retry_base_seconds=0.1,
                             inventory=Path(ROOT, '.lab', 'inventory'), extra_vars_file=Path(ROOT, '.lab', 'site.yml'))
    log = tmp_path / 'worker.log'
    with open(log, 'ab') as handle:
        status = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'worker', '--once', '--worker-id', 'meter-test'],
                                env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, timeout=300, check=False)
    assert status.returncode == 0, log.read_text(encoding='utf-8')[-3000:]
    return log.read_text(encoding='utf-8')


def test_one_call_per_pass_counts_each_pod_s_bytes(lab_env, lab, db):
    pods = []
    for _index in range(3):
        vmid, hostname = lab.container()
        pods.append((vmid, db.pod(vmid, hostname, plan='CLOUD_POD_STARTER')))
    meter = new_meter(lab_env, db)
    lab.control.clear_requests()
    first = meter.run_pass()
    assert (first.counted, first.bytes, first.api_calls) == (3, 0, 1)  # the first reading is the starting point
    for index, (vmid, _pod) in enumerate(pods):
        lab.traffic(vmid, netin=1000 * (index + 1), netout=5000 * (index + 1))
    second = meter.run_pass()
    assert (second.counted, second.bytes, second.api_calls) == (3, 36000, 1)
    for index, (_vmid, pod) in enumerate(pods):
        assert db.total(pod) == (1000 * (index + 1), 5000 * (index + 1))
    # Two passes: two calls to the API, both GET /cluster/resources, and nothing per pod.
    calls = lab.control.requests()
    assert [(c['method'], c['path']) for c in calls] == [('GET', '/cluster/resources')] * 2
    state = db.sql('SELECT pods, api_calls, last_error, last_success_at FROM cloud_pod_meter_state')
    assert [(row['pods'], row['api_calls'], row['last_error']) for row in state] == [(3, 1, None)]
    nodes = db.sql('SELECT node, status, maxmem, mem FROM cloud_pod_nodes')
    assert [row['node'] for row in nodes] == ['pve'] and nodes[0]['maxmem'] > nodes[0]['mem'] > 0


def test_a_restart_is_counted_once(lab_env, lab, db):
    vmid, hostname = lab.container()
    pod = db.pod(vmid, hostname, plan='CLOUD_POD_STARTER')
    meter = new_meter(lab_env, db)
    meter.run_pass()
    lab.traffic(vmid, netin=700, netout=300)
    meter.run_pass()
    assert db.total(pod) == (700, 300)
    # The CT restarts: PVE's counters begin again at zero (a new veth). 200/100 moved since the start.
    lab.power(vmid, 'stop')
    lab.power(vmid, 'start')
    lab.traffic(vmid, netin=200, netout=100)
    result = meter.run_pass()
    assert result.restarts == 1
    assert db.total(pod) == (900, 400), 'the new counters count whole, the old ones are not subtracted'
    assert db.usage(pod)['restarts'] == 1


def test_a_wrap_is_counted_modulo_2_64(lab_env, lab, db):
    vmid, hostname = lab.container()
    pod = db.pod(vmid, hostname, plan='CLOUD_POD_STARTER')
    lab.counters(vmid, netin=2 ** 64 - 50, netout=2 ** 64 - 10)  # a long-running CT's counters, near the top
    meter = new_meter(lab_env, db)
    meter.run_pass()
    lab.counters(vmid, netin=25, netout=5)  # ... 75 and 15 bytes later they have wrapped
    result = meter.run_pass()
    assert (result.restarts, result.bytes) == (0, 90)
    assert db.total(pod) == (75, 15)
    # A counter that leaps by more than any link moves in an interval is not counted: re-read from there.
    lab.counters(vmid, netin=2 ** 62, netout=5)
    result = meter.run_pass()
    assert (result.anomalies, db.total(pod)) == (1, (75, 15))
    lab.traffic(vmid, netin=10)
    meter.run_pass()
    assert db.total(pod) == (85, 15)


def test_a_pass_that_dies_or_waits_for_another_meter_counts_nothing(lab_env, lab, db, monkeypatch):
    vmid, hostname = lab.container()
    pod = db.pod(vmid, hostname, plan='CLOUD_POD_STARTER')
    meter = new_meter(lab_env, db)
    meter.run_pass()
    lab.traffic(vmid, netin=4000, netout=1000)

    def dies(*_args):
        raise RuntimeError('killed after counting, before the commit')

    monkeypatch.setattr(meter, '_thresholds', dies)
    with pytest.raises(RuntimeError, match='before the commit'):
        meter.run_pass()
    assert db.total(pod) == (0, 0), 'nothing of the dead pass was kept'
    monkeypatch.undo()
    # Another meter holds the lock for its pass: this one counts nothing and changes nothing.
    with psycopg.connect(db.url) as other, other.transaction():
        other.execute('SELECT pg_advisory_xact_lock(%s)', (metering.METER_LOCK,))
        assert meter.run_pass().skipped
        assert db.total(pod) == (0, 0)
    meter.run_pass()
    assert db.total(pod) == (4000, 1000), 'the next pass counts from where the dead one began'


def test_80_and_100_percent_mail_throttle_and_next_month_lifts_it(lab_env, lab, db, tmp_path):
    vmid, hostname = lab.container()
    email = 'quota-%s@example.org' % uuid.uuid4().hex[:6]
    pod = db.pod(vmid, hostname, email=email)
    mailbox = Mailbox.from_env(lab_env)
    meter = new_meter(lab_env, db)
    meter.run_pass()
    lab.traffic(vmid, netin=30 * GIB, netout=10 * GIB)  # 40 GiB of 50: 80%
    assert meter.run_pass().crossed == 1
    [event] = db.events(pod)
    assert event['transfer'] == {'month': datetime.now(timezone.utc).strftime('%Y-%m'), 'used_bytes': 40 * GIB,
                                 'quota_bytes': QUOTA, 'level': 80, 'action': 'none', 'throttle_mbps': None}
    [task] = db.open_tasks(pod)
    assert task['task_type'] == 'TRANSFER_QUOTA' and task['params']['notice'] == 'warning'
    assert 'rate_mbps' not in task['params'], 'no throttle below 100%'
    marked = mailbox.mark()
    run_worker(lab_env, db, tmp_path)
    [mail] = mailbox.messages(since=marked, to=email)
    assert 'has used 80% of its monthly transfer' in mail['Subject']
    assert '40.0 GB of 50.0 GB (80%)' in Mailbox.text(mail)
    assert db.usage(pod)['notified_level'] == 80
    assert meter.run_pass().queued == 0, 'the warning is not sent twice'

    lab.traffic(vmid, netout=11 * GIB)  # 51 GiB: over
    result = meter.run_pass()
    assert (result.crossed, result.queued) == (1, 1)
    assert [e['transfer']['level'] for e in db.events(pod)] == [80, 100]
    [task] = db.open_tasks(pod)
    assert (task['params']['notice'], task['params']['rate_mbps']) == ('exceeded', 1.0)
    marked = mailbox.mark()
    run_worker(lab_env, db, tmp_path)
    assert 'rate=1' in lab.control.state()['containers'][str(vmid)]['config']['net0']
    [mail] = mailbox.messages(since=marked, to=email)
    assert 'has used its monthly transfer' in mail['Subject']
    assert db.sql('SELECT transfer_rate_mbps FROM cloud_pod_subscriptions WHERE id = %s', (pod,))[0][
        'transfer_rate_mbps'] == 1
    assert meter.run_pass().queued == 0, 'nothing more to do this month'

    # The first pass of the next month: a new month at zero, the throttle lifted.
    result = meter.run_pass(now=NEXT_MONTH)
    assert result.queued == 1
    assert db.total(pod, NEXT_MONTH.date()) == (0, 0)
    [task] = db.open_tasks(pod)
    assert task['params']['rate_mbps'] == 0 and task['params']['notice'] is None
    run_worker(lab_env, db, tmp_path)
    assert 'rate=' not in lab.control.state()['containers'][str(vmid)]['config']['net0']
    assert db.sql('SELECT transfer_rate_mbps FROM cloud_pod_subscriptions WHERE id = %s', (pod,))[0][
        'transfer_rate_mbps'] is None


def test_suspend_policy_and_a_plan_with_more_transfer(lab_env, lab, db):
    pods = {}
    over, unpaid = (lab.container() for _pod in range(2))
    for vmid, hostname in (over, unpaid):
        pods[vmid] = db.pod(vmid, hostname)
    over, unpaid = over[0], unpaid[0]
    meter = new_meter(lab_env, db, policy='suspend')
    meter.run_pass()
    # The second pod is suspended for non-payment by an admin (its SUSPEND done), then goes over too.
    db.sql("UPDATE cloud_pod_subscriptions SET status = 'SUSPENDED', suspend_reason = 'non-payment' WHERE id = %s",
           (pods[unpaid],))
    for vmid in (over, unpaid):
        lab.traffic(vmid, netout=QUOTA)
    meter.run_pass()
    [suspend] = db.open_tasks(pods[over])
    assert suspend['task_type'] == 'SUSPEND'
    assert db.sql('SELECT suspend_reason FROM cloud_pod_subscriptions WHERE id = %s', (pods[over],))[0][
        'suspend_reason'] == 'transfer-quota'
    assert [t['task_type'] for t in db.open_tasks(pods[unpaid])] == ['TRANSFER_QUOTA']  # only the mail
    assert 'rate_mbps' not in db.open_tasks(pods[unpaid])[0]['params']
    assert [e['transfer']['action'] for e in db.events(pods[over])] == ['none', 'suspend']
    # The suspension is done (as the worker would record it), and both pods move to a plan with more transfer.
    db.sql("UPDATE cloud_pod_provisioning_tasks SET status = 'COMPLETED', finished_at = now() "
           "WHERE subscription_id = ANY(%s) AND status = 'PENDING'", (list(pods.values()),))
    db.sql("UPDATE cloud_pod_subscriptions SET status = 'SUSPENDED' WHERE id = %s", (pods[over],))
    db.sql("UPDATE cloud_pod_subscriptions SET plan_code = 'CLOUD_POD_STARTER' WHERE id = ANY(%s)",
           (list(pods.values()),))
    meter.run_pass()
    assert [t['task_type'] for t in db.open_tasks(pods[over])] == ['RESUME']
    assert db.open_tasks(pods[unpaid]) == [], 'a pod suspended for another reason stays suspended'
    row = db.usage(pods[over])
    assert (row['quota_bytes'], row['warned_at'], row['exceeded_at']) == (None, None, None)


def test_an_operation_that_failed_is_asked_again_an_hour_later(lab_env, lab, db):
    vmid, hostname = lab.container()
    pod = db.pod(vmid, hostname)
    meter = new_meter(lab_env, db)
    meter.run_pass()
    lab.traffic(vmid, netin=QUOTA)
    assert meter.run_pass().queued == 1
    # Its attempts used up (say the mail server was down all along): the pod's TRANSFER_QUOTA failed for good.
    db.sql("UPDATE cloud_pod_provisioning_tasks SET status = 'FAILED', finished_at = now() "
           "WHERE subscription_id = %s AND status = 'PENDING'", (pod,))
    assert meter.run_pass().queued == 0
    db.sql("UPDATE cloud_pod_provisioning_tasks SET finished_at = now() - interval '61 minutes' "
           "WHERE subscription_id = %s AND status = 'FAILED'", (pod,))
    assert meter.run_pass().queued == 1
    [task] = db.open_tasks(pod)
    assert (task['task_type'], task['params']['notice'], task['params']['rate_mbps']) == (
        'TRANSFER_QUOTA', 'exceeded', 1.0)


def test_usage_endpoint_and_pod_detail(lab_env, lab, db):
    vmid, hostname = lab.container()
    pod = db.pod(vmid, hostname)
    meter = new_meter(lab_env, db)
    meter.run_pass()
    lab.traffic(vmid, netin=3 * GIB, netout=2 * GIB)
    meter.run_pass()
    token = new_token()
    db.repository.create_token('meter-admin', 'admin', None, token)
    client = create_app(db.settings, db.repository).test_client()
    checker = OpenApiChecker()
    headers = {'Authorization': 'Bearer ' + token}
    for path in ('/api/cloud-pods/%s/usage' % pod, '/api/cloud-pods/%s' % pod):
        response = client.get(path, headers=headers)
        checker.check('GET', path, response.status_code, response.content_type, response.get_json())
        assert response.status_code == 200
    usage = client.get('/api/cloud-pods/%s/usage' % pod, headers=headers).get_json()
    [month] = usage['months']
    assert (usage['quota_bytes'], month['bytes_in'], month['bytes_out'], month['total_bytes'], month['percent']) == (
        QUOTA, 3 * GIB, 2 * GIB, 5 * GIB, 10.0)
    detail = client.get('/api/cloud-pods/%s' % pod, headers=headers).get_json()
    assert detail['transfer'] == {'month_bytes': 5 * GIB, 'rate_limit_mbps': None}
    other = client.get('/api/cloud-pods/%s/usage' % uuid.uuid4(), headers=headers)
    assert other.status_code == 404


def test_the_api_metrics_show_the_metering_lag_and_the_nodes(lab_env, lab, db):
    from prometheus_client.parser import text_string_to_metric_families  # pylint: disable=import-outside-toplevel
    new_meter(lab_env, db).run_pass()
    token = 'metrics-' + uuid.uuid4().hex
    settings = Settings.from_env({'DATABASE_URL': db.url, 'CLOUDPODS_PLANS_FILE': str(PLANS_FILE),
                                  'CLOUDPODS_METRICS_TOKEN': token})
    response = create_app(settings, db.repository).test_client().get('/metrics', headers={
        'Authorization': 'Bearer ' + token})
    assert response.status_code == 200
    found = {family.name: family.samples for family in text_string_to_metric_families(response.get_data(as_text=True))}
    [lag] = found['cloudpods_metering_lag_seconds']
    assert lag.labels == {'cluster': lab_env['PROXMOX_API_URL'].rstrip('/')} and 0 <= lag.value < 60
    free = {(s.labels['node'], s.labels['resource']): s.value for s in found['cloudpods_node_free_bytes']}
    nodes = lab.client.get('nodes')
    assert {node for node, _resource in free} == {node['node'] for node in nodes if node['status'] == 'online'}
    for node in nodes:
        assert free[(node['node'], 'memory')] == node['maxmem'] - node['mem']
    assert {s.labels['node']: s.value for s in found['cloudpods_node_online']} == {
        node['node']: float(node['status'] == 'online') for node in nodes}


def test_cloudpods_meter_once_and_a_refused_token(lab_env, db, tmp_path):
    env = worker_environment(lab_env, db.url)
    env['CLOUDPODS_PLANS_FILE'] = str(PLANS_FILE)
    done = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'meter', '--once'], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert 'metering pass: ' in done.stderr and ' 1 API calls' in done.stderr
    env['PROXMOX_API_TOKEN_SECRET'] = 'wrong-' + uuid.uuid4().hex
    refused = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'meter', '--once'], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1
    assert '401' in refused.stderr and env['PROXMOX_API_TOKEN_SECRET'] not in refused.stderr
    state = db.sql('SELECT last_error FROM cloud_pod_meter_state')
    assert any('401' in (row['last_error'] or '') for row in state)
    del env['PROXMOX_API_URL']
    missing = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'meter', '--once'], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and 'PROXMOX_API_URL is not set' in missing.stderr


def test_a_running_meter_takes_a_rotated_token_from_the_secrets_file(lab_env, db, tmp_path):
    """rotate_token.yml rewrites CLOUDPODS_SECRETS_FILE; a running meter uses the new token from its next pass."""
    secrets = tmp_path / 'secrets.env'
    wrong = 'revoked-' + uuid.uuid4().hex
    token_id = 'PROXMOX_API_TOKEN_ID=%s\n' % lab_env['PROXMOX_API_TOKEN_ID']  # the file holds both, always
    secrets.write_text(token_id + 'PROXMOX_API_TOKEN_SECRET=%s\n' % wrong, encoding='utf-8')
    secrets.chmod(0o600)
    env = worker_environment(lab_env, db.url, secrets_file=secrets, meter_interval_seconds=1)
    env['CLOUDPODS_PLANS_FILE'] = str(PLANS_FILE)
    log = tmp_path / 'meter.log'
    with open(log, 'wb') as handle:
        meter = subprocess.Popen([sys.executable, '-m', 'runner_api.cli', 'meter'], env=env, cwd=ROOT,
                                 stdout=handle, stderr=subprocess.STDOUT)
    try:
        def wait_for(text, timeout=60):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if text in log.read_text(encoding='utf-8'):
                    return
                time.sleep(0.2)
            raise AssertionError('%r not in the meter log:\n%s' % (text, log.read_text(encoding='utf-8')[-2000:]))

        wait_for('metering pass failed: GET ')
        assert '401' in log.read_text(encoding='utf-8')
        secrets.write_text(token_id + 'PROXMOX_API_TOKEN_SECRET=%s\n' % lab_env['PROXMOX_API_TOKEN_SECRET'],
                           encoding='utf-8')
        wait_for('metering pass: ')
        # Read at the first pass and once more after the rewrite, not at every pass.
        assert log.read_text(encoding='utf-8').count('read again (PROXMOX_API_TOKEN_ID, PROXMOX_API_TOKEN_SECRET)') == 2
    finally:
        meter.terminate()
        assert meter.wait(timeout=30) == 0, 'SIGTERM ends the meter cleanly'
    text = log.read_text(encoding='utf-8')
    assert wrong not in text and lab_env['PROXMOX_API_TOKEN_SECRET'] not in text
