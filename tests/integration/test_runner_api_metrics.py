# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's /metrics (runner_api/metrics.py) against a real PostgreSQL, a real worker process and a
real gunicorn with three workers.

- The API's database gauges follow the rows: queue depth when a task is inserted, claimed or
  scheduled later; the oldest waiting task's age from its run_at (moved back in the database, not
  slept); the webhook backlog from the outbox's undelivered rows.
- A worker's histogram and failures counter count the attempts it ran (a stub playbook that
  succeeds, and one that fails at a named step and is retried once), by operation, outcome and step.
- gunicorn -w 3: a known number of requests is the exact total in /metrics whichever process
  answers the scrape; the database gauges appear once, not once per process; a restart starts
  from zero (no files of the earlier run).
"""

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labenv import free_port  # noqa: E402
from test_runner_api_worker import Queue, stub_site  # noqa: E402

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
GUNICORN = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), 'gunicorn')
METRICS_TOKEN = 'metrics-' + uuid.uuid4().hex
# The queue tests' stub, with a step that fails for a pod whose name says so.
STUB_PLAYBOOK = """
- name: Stub of provision.yml for the metrics tests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Record what the playbook sees of the metrics token
      ansible.builtin.shell: 'echo "[${CLOUDPODS_METRICS_TOKEN:-}]" >> {{ stub_env_log }}'
      changed_when: true
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: "this pod is meant to fail"
      when: "'-fail-' in pod"
    - name: Report the pod
      ansible.builtin.set_stats:
        data: {vmid: 4242, node: stub, ip: 192.0.2.7}
        per_host: false
"""


def samples(text, name):
    """{labels as a sorted tuple of pairs: value} of the samples called ``name`` (a label set twice fails)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = tuple(sorted(sample.labels.items()))
                assert key not in found, 'sample %s%s repeated' % (name, sample.labels)
                found[key] = sample.value
    return found


def value(text, name, **labels):
    return samples(text, name).get(tuple(sorted(labels.items())))


# ---------------------------------------------------------------- the API's database gauges

@pytest.fixture
def api(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        settings = Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE,
                                      'CLOUDPODS_METRICS_TOKEN': METRICS_TOKEN})
        pool = open_pool(settings, name='test-metrics', min_size=1, max_size=4)
        try:
            yield Api(create_app(settings, Repository(pool)).test_client(), Repository(pool), pool)
        finally:
            pool.close()


class Api(object):
    def __init__(self, client, repository, pool):
        self.client = client
        self.repository = repository
        self.pool = pool

    def scrape(self):
        response = self.client.get('/metrics', headers={'Authorization': 'Bearer ' + METRICS_TOKEN})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.headers['Content-Type'].startswith('text/plain; version=0.0.4')
        return response.get_data(as_text=True)

    def order(self, hostname=None):
        row, _created = self.repository.create_order({
            'customer_id': 'cust-1', 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER',
            'domain': None, 'hostname': hostname or 'cp-' + uuid.uuid4().hex[:10], 'idempotency_key': None,
            'request_digest': 'x'}, 3)
        return row

    def sql(self, statement, params=()):
        with self.pool.connection() as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else None


def test_metrics_need_the_token(api):
    assert api.client.get('/metrics').status_code == 401
    wrong = api.client.get('/metrics', headers={'Authorization': 'Bearer ' + METRICS_TOKEN + 'x'})
    assert wrong.status_code == 401
    assert METRICS_TOKEN not in wrong.get_data(as_text=True)
    # An API token (even an admin's) is not the metrics token.
    admin = new_token()
    api.repository.create_token('admin', 'admin', None, admin)
    assert api.client.get('/metrics', headers={'Authorization': 'Bearer ' + admin}).status_code == 401


def test_queue_depth_follows_inserts_claims_and_schedules(api):
    before = api.scrape()
    assert value(before, 'cloudpods_database_up') == 1
    assert value(before, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='waiting') == 0
    assert value(before, 'cloudpods_queue_tasks', operation='RESTART', state='running') == 0  # zero-filled
    api.order()
    api.order()
    text = api.scrape()
    assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='waiting') == 2
    assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='running') == 0
    claimed = api.repository.claim('w-test', 60)
    assert claimed is not None
    text = api.scrape()
    assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='waiting') == 1
    assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='running') == 1
    # The other one is put off by an hour (as a retry's delay does): scheduled, no longer waiting.
    api.sql("UPDATE cloud_pod_provisioning_tasks SET run_at = now() + interval '1 hour' WHERE status = 'PENDING'")
    text = api.scrape()
    assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='waiting') == 0
    assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='scheduled') == 1
    assert value(text, 'cloudpods_queue_oldest_waiting_seconds', operation='CREATE_CONTAINER') == 0
    # Finished tasks leave the queue.
    api.sql("UPDATE cloud_pod_provisioning_tasks SET status = 'COMPLETED', finished_at = now()")
    text = api.scrape()
    assert sum(samples(text, 'cloudpods_queue_tasks').values()) == 0


def test_oldest_waiting_age_grows_with_the_tasks_age(api):
    api.order()
    api.sql("UPDATE cloud_pod_provisioning_tasks SET run_at = now() - interval '300 seconds'")
    first = value(api.scrape(), 'cloudpods_queue_oldest_waiting_seconds', operation='CREATE_CONTAINER')
    assert 300 <= first < 360
    api.sql("UPDATE cloud_pod_provisioning_tasks SET run_at = run_at - interval '3600 seconds'")
    second = value(api.scrape(), 'cloudpods_queue_oldest_waiting_seconds', operation='CREATE_CONTAINER')
    assert 3900 <= second < 3960
    assert value(api.scrape(), 'cloudpods_queue_oldest_waiting_seconds', operation='RESTART') == 0


def test_webhook_backlog_counts_undelivered_rows(api):
    assert value(api.scrape(), 'cloudpods_webhook_backlog_events') == 0
    for _index in range(3):
        api.order()  # each writes pod.status_changed to the outbox (migration 0003's trigger)
    undelivered = api.sql('SELECT count(*) AS n FROM cloud_pod_webhook_outbox WHERE delivered_at IS NULL')[0]['n']
    assert undelivered == 3
    api.sql("UPDATE cloud_pod_webhook_outbox SET created_at = now() - interval '600 seconds' "
            "WHERE id = (SELECT min(id) FROM cloud_pod_webhook_outbox)")
    text = api.scrape()
    assert value(text, 'cloudpods_webhook_backlog_events') == 3
    assert 600 <= value(text, 'cloudpods_webhook_oldest_undelivered_seconds') < 660
    api.sql("UPDATE cloud_pod_webhook_outbox SET delivered_at = now() "
            "WHERE id = (SELECT min(id) FROM cloud_pod_webhook_outbox)")
    text = api.scrape()
    assert value(text, 'cloudpods_webhook_backlog_events') == 2
    assert value(text, 'cloudpods_webhook_oldest_undelivered_seconds') < 60


def test_requests_are_counted_by_route_not_by_path(api):
    before = value(api.scrape(), 'cloudpods_api_requests_total', endpoint='/healthz', method='GET', status='200') or 0
    for _index in range(4):
        assert api.client.get('/healthz').status_code == 200
    api.client.get('/no/such/' + uuid.uuid4().hex)
    text = api.scrape()
    assert value(text, 'cloudpods_api_requests_total', endpoint='/healthz', method='GET', status='200') == before + 4
    assert all('no/such' not in dict(labels)['endpoint'] for labels in samples(text, 'cloudpods_api_requests_total'))
    assert value(text, 'cloudpods_api_requests_total', endpoint='unmatched', method='GET', status='404') >= 1


# ---------------------------------------------------------------- a worker's histogram and failures

@pytest.fixture
def metrics_queue(lab_env, tmp_path):
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    (playbooks / 'provision.yml').write_text(STUB_PLAYBOOK)
    env_log = tmp_path / 'playbook-env.txt'
    extra_vars = stub_site(tmp_path / 'vars.json', stub_env_log=str(env_log))
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, playbook_dir=playbooks, extra_vars_file=extra_vars,
                                 lease_seconds=120, heartbeat_seconds=1, poll_seconds=1, retry_base_seconds=0.1,
                                 retry_max_seconds=0.2, worker_metrics_port=free_port(),
                                 metrics_token=METRICS_TOKEN)
        queue = Queue(url, env, tmp_path)
        queue.env_log = env_log
        try:
            yield queue
        finally:
            queue.stop_all()


def worker_scrape(port, token=METRICS_TOKEN):
    headers = {'Authorization': 'Bearer ' + token} if token else {}
    return requests.get('http://127.0.0.1:%d/metrics' % port, headers=headers, timeout=5)


def test_worker_observes_each_attempt_by_operation_outcome_and_step(metrics_queue):
    queue = metrics_queue
    port = int(queue.env['CLOUDPODS_WORKER_METRICS_PORT'])
    ok = queue.order()
    bad, _created = queue.repository.create_order({
        'customer_id': 'cust-1', 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER',
        'domain': None, 'hostname': 'cp-fail-' + uuid.uuid4().hex[:8], 'idempotency_key': None,
        'request_digest': 'x'}, 2)
    queue.start('metrics-w1')
    queue.wait(lambda: sorted(row['status'] for row in queue.subscriptions().values()) == ['ACTIVE', 'FAILED'],
               180, 'one pod ACTIVE, one FAILED')
    assert queue.subscriptions()[str(bad['id'])]['status'] == 'FAILED'
    assert queue.subscriptions()[str(ok['id'])]['status'] == 'ACTIVE'
    assert worker_scrape(port, token=None).status_code == 401
    assert worker_scrape(port, token='metrics-' + uuid.uuid4().hex).status_code == 401
    response = worker_scrape(port)
    assert response.status_code == 200
    text = response.text
    count = 'cloudpods_operation_duration_seconds_count'
    assert samples(text, count) == {
        (('operation', 'CREATE_CONTAINER'), ('outcome', 'completed')): 1,
        (('operation', 'CREATE_CONTAINER'), ('outcome', 'retry')): 1,
        (('operation', 'CREATE_CONTAINER'), ('outcome', 'failed')): 1,
    }
    # Two failed attempts of the failing pod, both at the stub's step.
    assert samples(text, 'cloudpods_operation_failures_total') == {
        (('operation', 'CREATE_CONTAINER'), ('step', 'Fail on purpose')): 2}
    # The durations are the attempts' own: positive, and less than the test took.
    total = value(text, 'cloudpods_operation_duration_seconds_sum', operation='CREATE_CONTAINER', outcome='completed')
    assert 0 < total < 180
    # Nothing names a pod.
    assert ok['hostname'] not in text and bad['hostname'] not in text
    # The playbooks (three runs) never saw the metrics token the worker was started with.
    assert queue.env_log.read_text().split() == ['[]'] * 3


# ---------------------------------------------------------------- gunicorn with three workers

class Gunicorn(object):
    """``gunicorn -c python:runner_api.gunicorn_conf -w 3`` as deployed, its temporary files under ``tmpdir``."""

    def __init__(self, env, tmpdir, log):
        self.port = free_port()
        env = dict(env, TMPDIR=str(tmpdir))
        with open(str(log), 'ab') as out:
            self.process = subprocess.Popen(
                [GUNICORN, '-c', 'python:runner_api.gunicorn_conf', '-b', '127.0.0.1:%d' % self.port, '-w', '3',
                 'runner_api.app:create_app()'], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.log = log
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            try:
                if requests.get(self.url('/healthz'), timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise AssertionError('gunicorn did not answer:\n' + log.read_text())

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.port, path)

    def scrape(self):
        response = requests.get(self.url('/metrics'), headers={'Authorization': 'Bearer ' + METRICS_TOKEN},
                                timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def stop(self):
        self.process.terminate()
        assert self.process.wait(timeout=60) == 0, self.log.read_text()


def healthz_count(text):
    return value(text, 'cloudpods_api_requests_total', endpoint='/healthz', method='GET', status='200')


def test_gunicorn_three_workers_report_exact_totals(lab_env, tmp_path):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, metrics_token=METRICS_TOKEN)
        env.pop('PROMETHEUS_MULTIPROC_DIR', None)
        pool = open_pool(Settings.from_env({'DATABASE_URL': url}), name='test-metrics', min_size=1, max_size=1)
        try:
            Repository(pool).create_order({
                'customer_id': 'cust-1', 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER',
                'domain': None, 'hostname': 'cp-' + uuid.uuid4().hex[:10], 'idempotency_key': None,
                'request_digest': 'x'}, 3)
        finally:
            pool.close()
        tmpdir = tmp_path / 'tmp'
        tmpdir.mkdir()
        api = Gunicorn(env, tmpdir, tmp_path / 'gunicorn.log')
        try:
            start = healthz_count(api.scrape())
            assert start == 1  # the start-up probe that was answered

            def hit(_index):
                # A connection of its own each: the three processes share the requests.
                return requests.get(api.url('/healthz'), timeout=10, headers={'Connection': 'close'}).status_code
            with ThreadPoolExecutor(max_workers=6) as threads:
                assert list(threads.map(hit, range(90))) == [200] * 90
            metrics_dirs = list(tmpdir.glob('cloudpods-api-metrics-*'))
            assert len(metrics_dirs) == 1
            # Several processes counted (else the sum proves nothing): their counter files are by pid.
            assert len(list(metrics_dirs[0].glob('counter_*.db'))) >= 2, list(metrics_dirs[0].iterdir())
            for _index in range(6):  # whichever process answers the scrape, the same totals
                text = api.scrape()
                assert healthz_count(text) == start + 90
                # The database gauges once (samples() refuses a repeated label set), with the database's values.
                assert value(text, 'cloudpods_queue_tasks', operation='CREATE_CONTAINER', state='waiting') == 1
                assert value(text, 'cloudpods_database_up') == 1
        finally:
            api.stop()
        assert list(tmpdir.glob('cloudpods-api-metrics-*')) == []  # removed when gunicorn exits
        # A new start counts from zero: no file of the earlier run is read.
        again = Gunicorn(env, tmpdir, tmp_path / 'gunicorn.log')
        try:
            start = healthz_count(again.scrape())
            assert start == 1  # its own start-up probe, none of the 91 requests of the earlier run
            for _index in range(5):
                assert requests.get(again.url('/healthz'), timeout=10).status_code == 200
            assert healthz_count(again.scrape()) == start + 5
        finally:
            again.stop()


def test_gunicorn_preload_is_refused(lab_env, tmp_path):
    """--preload would import prometheus_client in the master before the multi-process directory is set:
    each worker would count alone and /metrics would show one process's share. gunicorn stops instead."""
    env = worker_environment(lab_env, lab_env['DATABASE_URL'], metrics_token=METRICS_TOKEN)
    result = subprocess.run([GUNICORN, '-c', 'python:runner_api.gunicorn_conf', '--preload', '-b',
                             '127.0.0.1:%d' % free_port(), '-w', '2', 'runner_api.app:create_app()'],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'start gunicorn without --preload' in result.stderr
