# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL going away under a running API and worker (issue 10, part 4).

The outage test stops the PostgreSQL of a private lab (the shared lab's database is not
disturbed) for 20 s while a worker runs an order's playbook and the API (gunicorn) is asked
about it: the API must answer 503 problem+json with Retry-After within seconds, the worker must
neither exit nor lose the playbook's outcome, and the order must reach ACTIVE once the database is
back. The other tests need no lab: 405 carries Allow, and a pool that cannot connect answers 503
within its timeout.
"""

import json
import os
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

from psycopg_pool import PoolTimeout  # noqa: E402
from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labenv import free_port  # noqa: E402
from playbooks import PrivateLab  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from test_runner_api_worker import Queue, _wait_http, site_vars  # noqa: E402

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
OUTAGE_SECONDS = 20
LEASE_SECONDS = 10  # below OUTAGE_SECONDS (it runs out during the outage), 10 heartbeats: not lost otherwise
# The API waits db_timeout_seconds (2) for a connection, then answers 503; a hung request would take the
# client's 30 s. The bound leaves room for a machine running two test suites at once.
MAX_LATENCY = 10.0
PROBLEM = 'application/problem+json'


# ---------------------------------------------------------------- without a database

class _NoDatabase(object):
    """A repository whose database is away (every call: what an empty pool raises)."""

    def __getattr__(self, name):
        def unavailable(*_args, **_kwargs):
            raise PoolTimeout("couldn't get a connection after 2.00 sec")
        return unavailable


def _app(repository=None, **settings):
    env = {'DATABASE_URL': settings.pop('database_url', 'postgresql://cloudpods:pw@127.0.0.1:9/cloudpods'),
           'CLOUDPODS_PLANS_FILE': PLANS_FILE}
    env.update(('CLOUDPODS_' + key.upper(), str(value)) for key, value in settings.items())
    return create_app(Settings.from_env(env), repository)


def test_405_names_the_allowed_methods_and_keeps_problem_json():
    client = _app(_NoDatabase()).test_client()
    response = client.delete('/api/cloud-pods/plans')
    assert response.status_code == 405
    assert response.mimetype == PROBLEM
    assert set(m.strip() for m in response.headers['Allow'].split(',')) >= {'GET', 'HEAD'}
    assert 'DELETE' not in response.headers['Allow']
    assert response.get_json()['status'] == 405
    order = client.get('/api/cloud-pods/order')
    assert order.status_code == 405 and 'POST' in order.headers['Allow'] and order.mimetype == PROBLEM


def test_database_errors_answer_503_with_retry_after():
    client = _app(_NoDatabase()).test_client()
    response = client.get('/api/cloud-pods/my-pods', headers={'Authorization': 'Bearer ' + new_token()})
    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert int(response.headers['Retry-After']) > 0
    body = response.get_json()
    assert body['status'] == 503 and body['type'].endswith('/database-unavailable')
    assert 'PoolTimeout' not in json.dumps(body)  # nothing about the internals
    assert client.get('/api/cloud-pods/plans').status_code == 200  # what needs no database still works


def test_a_pool_that_cannot_connect_answers_503_within_its_timeout():
    port = free_port()  # a port nothing listens on
    app = _app(database_url='postgresql://cloudpods:pw@127.0.0.1:%d/cloudpods' % port, db_timeout_seconds=1)
    client = app.test_client()
    try:
        for dummy in range(3):
            started = time.monotonic()
            response = client.get('/api/cloud-pods/my-pods', headers={'Authorization': 'Bearer ' + new_token()})
            assert time.monotonic() - started < 5  # 1 s, well below psycopg_pool's default 30 s
            assert response.status_code == 503 and response.headers['Retry-After']
    finally:
        app.extensions['cloudpods'].repository.pool.close()


# ---------------------------------------------------------------- the outage

@pytest.fixture(scope='module')
def outage_lab():
    """A private lab and its PostgreSQL service (``stop()``/``start()``: same port, same data)."""
    private = PrivateLab()
    env = private.__enter__()
    try:
        postgres = [service for service in private.lab.services if service.name == 'postgres'][0]
        yield env, postgres
    finally:
        private.__exit__(None, None, None)


class Probe(object):
    """Requests to the API, each with its start, latency, status and what the outage test checks."""

    def __init__(self, base, headers):
        self.base = base
        self.headers = headers
        self.samples = []

    def get(self, path):
        started = time.monotonic()
        error = None
        try:
            response = requests.get(self.base + path, headers=self.headers, timeout=30, verify=False)
        except requests.RequestException as exc:
            response = None
            error = repr(exc)
        ended = time.monotonic()
        sample = {'path': path, 'start': started, 'end': ended, 'latency': ended - started,
                  'status': response.status_code if response is not None else None,
                  'type': response.headers.get('Content-Type', '') if response is not None else '',
                  'retry_after': response.headers.get('Retry-After') if response is not None else None,
                  'body': _json(response) if response is not None else error}
        self.samples.append(sample)
        return sample


def _json(response):
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


def test_api_and_worker_ride_out_a_postgres_outage(outage_lab, tmp_path):
    env, postgres = outage_lab
    control = LabControl.from_env(env)
    control.clear_faults()
    extra_vars = site_vars(tmp_path)
    api = None
    with scratch_database(env['DATABASE_URL']) as url:
        worker_env = worker_environment(env, url, extra_vars_file=extra_vars, lease_seconds=LEASE_SECONDS,
                                        heartbeat_seconds=1, poll_seconds=1, retry_base_seconds=0.5, retry_max_seconds=1,
                                        db_timeout_seconds=2, db_retry_max_seconds=2)
        queue = Queue(url, worker_env, tmp_path)
        try:
            token = new_token()
            queue.repository.create_token('mpanel', 'service', None, token)
            port = free_port()
            api_log = tmp_path / 'api.out'
            with open(str(api_log), 'ab') as log:
                api = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'gunicorn'), '-b',
                                        '127.0.0.1:%d' % port, '-w', '2', 'runner_api.app:create_app()'],
                                       env=worker_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            base = 'http://127.0.0.1:%d/api/cloud-pods' % port
            _wait_http(base + '/plans')
            probe = Probe(base, {'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'cust-7'})
            # The clone is held: the playbook is still running when the database goes away, and
            # finishes during the outage (released below).
            control.hold('vzclone')
            response = requests.post(base + '/order', json={
                'plan_code': 'CLOUD_POD_STARTER', 'domain': 'outage-%s.example.com' % uuid.uuid4().hex[:6],
                'customer_email': 'jane@example.org'}, headers=dict(probe.headers, **{'Idempotency-Key': 'o-1'}),
                timeout=10)
            assert response.status_code == 202, response.text
            pod_id = response.json()['id']
            worker = queue.start('w')
            queue.wait(lambda: queue.rows("SELECT 1 FROM cloud_pod_events WHERE status = 'claimed'"), 60,
                       'the worker to claim the order')
            # A second worker sleeps on LISTEN through the outage (the path that used to exit), and
            # must not take the order over when the database is back (its lease ran out meanwhile).
            idle = queue.start('idle')
            queue.wait(lambda: 'worker idle ready' in queue.log('idle'), 60, 'the idle worker')
            control.wait_held('vzclone', timeout=120)

            # ---- the outage
            stopping = time.monotonic()
            postgres.stop()
            down = time.monotonic()
            control.release('vzclone')
            paths = ['/' + pod_id, '/my-pods', '/plans']
            while time.monotonic() < down + OUTAGE_SECONDS:
                probe.get(paths[len(probe.samples) % len(paths)])
                for name, process in (('w', worker), ('idle', idle)):
                    assert process.poll() is None, 'worker %s exited during the outage:\n%s' % (
                        name, queue.log(name)[-3000:])
                time.sleep(0.2)
            postgres.start()
            up = time.monotonic()

            # ---- back: the order goes on by itself
            deadline = up + 90
            detail = {}
            while time.monotonic() < deadline:
                sample = probe.get('/' + pod_id)
                assert worker.poll() is None, 'the worker exited:\n' + queue.log('w')[-3000:]
                detail = sample['body'] if sample['status'] == 200 else {}
                if detail.get('status') in ('ACTIVE', 'FAILED'):
                    break
                time.sleep(0.3)
            active = time.monotonic()
            assert detail.get('status') == 'ACTIVE', (detail, queue.log('w')[-3000:])

            # ---- and the queue goes on: the worker that was idle takes the next order on its own
            queue.wait(lambda: 'database reachable again' in queue.log('idle'), 30, 'the idle worker to reconnect')
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
            second = requests.post(base + '/order', json={
                'plan_code': 'CLOUD_POD_STUDENT', 'domain': 'after-%s.example.com' % uuid.uuid4().hex[:6],
                'customer_email': 'joe@example.org'},
                headers=dict(probe.headers, **{'Idempotency-Key': 'o-2'}), timeout=10)
            assert second.status_code == 202, second.text
            queue.wait(lambda: queue.subscriptions()[second.json()['id']]['status'] == 'ACTIVE', 90,
                       'the second order to be ACTIVE')
        finally:
            control.clear_faults()
            # Order matters: the server first (scratch_database drops the database through it, and a
            # worker stopped while it is away would wait for it), then the processes, then the database.
            if not postgres.healthy():
                postgres.start()
            if api is not None:
                api.terminate()
                api.wait(timeout=10)
            queue.stop_all()

        samples = probe.samples
        report = {'stop_seconds': round(down - stopping, 2), 'requests': len(samples),
                  'max_latency': round(max(s['latency'] for s in samples), 3),
                  'max_latency_outage': round(max(s['latency'] for s in samples if down <= s['start'] < up), 3),
                  'db_back_to_active_seconds': round(active - up, 2),
                  'statuses_during_outage': sorted(set(s['status'] for s in samples if down <= s['start'] < up))}
        (tmp_path / 'report.json').write_text(json.dumps(report))
        print('\noutage report: %s' % json.dumps(report))

        # Every request answered, and in bounded time.
        slow = [s for s in samples if s['status'] is None or s['latency'] >= MAX_LATENCY]
        assert not slow, slow
        # The outage really happened: requests needing the database got 503 problem+json with Retry-After.
        during = [s for s in samples if down <= s['start'] and s['end'] <= up]
        needing_db = [s for s in during if s['path'] != '/plans']
        assert len(needing_db) >= 5, report
        assert all(s['status'] == 503 for s in needing_db), [(s['path'], s['status'], s['body']) for s in needing_db]
        for sample in needing_db:
            assert sample['type'].startswith(PROBLEM) and int(sample['retry_after']) > 0, sample
            assert sample['body']['status'] == 503 and sample['body']['type'].endswith('/database-unavailable')
        assert all(s['status'] == 200 for s in during if s['path'] == '/plans')  # no database needed

        # Both workers rode it out: the same processes (stopped by our SIGTERM, not before), each
        # reported the outage once and the recovery once.
        for name, process in (('w', worker), ('idle', idle)):
            worker_log = queue.log(name)
            assert process.returncode == 0, worker_log
            assert worker_log.count('worker %s ready' % name) == 1, worker_log
            assert worker_log.count('signal 15') == 1 and worker_log.count('stopped') == 1, worker_log
            assert worker_log.count('database unavailable') == 1, worker_log
            assert worker_log.count('database reachable again') == 1, worker_log
            assert 'error connecting in' not in worker_log  # psycopg_pool's per-attempt warnings: no flood
            assert 'Traceback' not in worker_log, worker_log
            warnings = [line for line in worker_log.splitlines() if ' WARNING ' in line or ' ERROR ' in line]
            assert len(warnings) <= 3, warnings

        # Nothing lost: the task done on its first attempt by the worker that claimed it (not taken over),
        # every event row written, in order.
        with_db = Queue(url, worker_env, tmp_path)
        try:
            task = with_db.rows('SELECT status, attempts, worker_id FROM cloud_pod_provisioning_tasks ORDER BY id')
            events = with_db.rows('SELECT step, status FROM cloud_pod_events WHERE subscription_id = %s ORDER BY id',
                                  (pod_id,))
        finally:
            with_db.pool.close()
        assert [(t['status'], t['attempts'], t['worker_id']) for t in task] == [('COMPLETED', 1, 'w'),
                                                                                ('COMPLETED', 1, 'idle')]
        assert events[0]['status'] == 'claimed' and events[-1]['status'] == 'completed', events
        assert sum(1 for e in events if e['status'] == 'claimed') == 1
        assert any(e['step'].startswith('pod_container : ') and e['status'] == 'changed' for e in events)
        assert any(e['step'].startswith('pod_dns : ') and e['status'] == 'changed' for e in events)
        assert 'Traceback' not in api_log.read_text()
