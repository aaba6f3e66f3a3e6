# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Webhooks to mPanel (issue 13): the outbox written by the database in the transaction of each
change, and its delivery by ``cloudpods worker`` processes (the lab's PostgreSQL, a scratch
database, stand-in playbooks) to a receiver on 127.0.0.1 written here.

- The outbox: a pod's creation, its status changes and its operations' outcomes are written with
  the change (a failed attempt that will be retried writes nothing, a rolled-back change nothing).
- A receiver answering 500 twice, then 200, gets the first event three times with the same id and
  body and a valid signature each time, and accepts it once; nothing secret in logs or rows.
- A receiver that is down: every event stays queued (attempts growing on each pod's earliest
  event only: a pod's later event is not sent before its earlier one is accepted); once it is up,
  every event arrives, once, in order per pod.
- The admin API shows the delivery state, filtered and paged, as the OpenAPI document says.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api import webhooks  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, scratch_database, worker_environment  # noqa: E402
from labenv import free_port  # noqa: E402
from test_runner_api_worker import STUB_PLAYBOOK, Queue, stub_site  # noqa: E402

SECRET = 'whsec-' + uuid.uuid4().hex  # this run's shared secret (never in a log or a row)


class Receiver(object):
    """An HTTP server on 127.0.0.1 that records every POST and answers with the next scripted
    status (then ``default``)."""

    def __init__(self, port, script=(), default=200):
        self.requests = []
        self.script = list(script)
        self.default = default
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get('Content-Length', '0')))
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.requests.append({'headers': dict(self.headers.items()), 'body': raw, 'status': status,
                                              'path': self.path})
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self):
        with self.lock:
            return [r for r in self.requests if 200 <= r['status'] < 300]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def signature_ok(request, secret=SECRET):
    """The receiver's check, written here from the README's rule (not runner_api's code)."""
    timestamp = request['headers']['X-CloudPods-Timestamp']
    expected = hmac.new(secret.encode(), timestamp.encode() + b'.' + request['body'], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request['headers']['X-CloudPods-Signature'], 'v1=' + expected)


@pytest.fixture
def hook_queue(lab_env, tmp_path):
    """A scratch database, the stub provision playbook, and worker settings that send webhooks
    to 127.0.0.1:<port> (nothing listens there until a test starts a Receiver on it)."""
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    (playbooks / 'provision.yml').write_text(STUB_PLAYBOOK)
    run_log = tmp_path / 'runs.txt'
    run_log.write_text('')
    extra_vars = stub_site(tmp_path / 'vars.json', stub_run_log=str(run_log), stub_seconds=0)
    port = free_port()
    receivers = []
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, playbook_dir=playbooks, extra_vars_file=extra_vars,
                                 lease_seconds=120, heartbeat_seconds=1, poll_seconds=1, retry_base_seconds=0.2,
                                 webhook_url='http://127.0.0.1:%d/hooks/cloudpods?src=test' % port,
                                 webhook_secret=SECRET, webhook_retry_base_seconds=0.2,
                                 webhook_retry_max_seconds=1, webhook_poll_seconds=0.2, webhook_timeout_seconds=5)
        queue = Queue(url, env, tmp_path)
        queue.port = port

        def receiver(**kwargs):
            made = Receiver(port, **kwargs)
            receivers.append(made)
            return made
        queue.receiver = receiver
        try:
            yield queue
        finally:
            queue.stop_all()
            for made in receivers:
                made.close()


def outbox(queue, pod_id=None):
    sql = ('SELECT id, event_id, subscription_id, sequence, event_type, payload, attempts, last_status, last_error, '
           'delivered_at FROM cloud_pod_webhook_outbox')
    if pod_id is None:
        return queue.rows(sql + ' ORDER BY id')
    return queue.rows(sql + ' WHERE subscription_id = %s ORDER BY sequence', (pod_id,))


def summary(rows):
    """(sequence, type, what) per outbox row: the pod's status for a status change, the operation's otherwise."""
    out = []
    for row in rows:
        data = row['payload']
        what = data['pod']['status'] if row['event_type'] == 'pod.status_changed' else \
            '%s %s' % (data['operation']['type'], data['operation']['status'])
        out.append((row['sequence'], row['event_type'], what))
    return out


CREATED_TO_ACTIVE = [(1, 'pod.status_changed', 'PROVISIONING'),
                     (2, 'operation.completed', 'CREATE_CONTAINER COMPLETED'),
                     (3, 'pod.status_changed', 'ACTIVE')]


# ---------------------------------------------------------------- the outbox (no worker)

def test_changes_write_their_events_in_their_transaction(hook_queue):
    queue = hook_queue
    repository = queue.repository
    pod = queue.order(max_attempts=2)
    assert summary(outbox(queue, pod['id'])) == [(1, 'pod.status_changed', 'PROVISIONING')]
    assert outbox(queue, pod['id'])[0]['payload']['pod']['previous_status'] is None

    # A failed attempt that will be retried: nothing for mPanel.
    task = repository.claim('test-worker', 60)
    assert repository.fail_attempt(task, 'the node did not answer', 0) == 'PENDING'
    assert len(outbox(queue, pod['id'])) == 1
    # The last attempt fails: the operation's outcome, then the pod's new status, in that transaction.
    task = repository.claim('test-worker', 60)
    assert repository.fail_attempt(task, 'the node did not answer again', 0) == 'FAILED'
    rows = outbox(queue, pod['id'])
    assert summary(rows) == [(1, 'pod.status_changed', 'PROVISIONING'),
                             (2, 'operation.failed', 'CREATE_CONTAINER FAILED'),
                             (3, 'pod.status_changed', 'FAILED')]
    assert rows[1]['payload']['operation']['error'] == 'the node did not answer again'
    assert rows[1]['payload']['operation']['attempts'] == 2
    assert rows[2]['payload']['pod']['previous_status'] == 'PROVISIONING'
    assert rows[2]['payload']['pod']['last_error'] == 'the node did not answer again'

    # A change that rolls back leaves no event; one that changes nothing writes none.
    with queue.pool.connection() as connection:
        with connection.transaction(force_rollback=True):
            connection.execute("UPDATE cloud_pod_subscriptions SET status = 'TERMINATED' WHERE id = %s", (pod['id'],))
            assert len(outbox(queue, pod['id'])) == 3  # another connection does not see it either
        connection.execute("UPDATE cloud_pod_subscriptions SET status = 'FAILED', updated_at = now() WHERE id = %s",
                           (pod['id'],))
    assert len(outbox(queue, pod['id'])) == 3
    # Any code that changes the status is covered (here plain SQL, as a future operation might do).
    with queue.pool.connection() as connection:
        connection.execute("UPDATE cloud_pod_subscriptions SET status = 'TERMINATED' WHERE id = %s", (pod['id'],))
    assert summary(outbox(queue, pod['id']))[-1] == (4, 'pod.status_changed', 'TERMINATED')
    # Other pods count their own sequence; nothing is sent without a worker, nothing is marked.
    other = queue.order()
    assert summary(outbox(queue, other['id'])) == [(1, 'pod.status_changed', 'PROVISIONING')]
    assert all(row['attempts'] == 0 and row['delivered_at'] is None for row in outbox(queue))


# ---------------------------------------------------------------- delivery

def test_500_twice_then_200_one_accepted_delivery_after_three_attempts(hook_queue):
    queue = hook_queue
    receiver = queue.receiver(script=[500, 500])
    pod = queue.order()
    queue.start('w1')
    queue.wait(lambda: len(receiver.accepted()) == 3, 120, 'three events accepted')

    first = [r for r in receiver.requests if json.loads(r['body'])['sequence'] == 1]
    assert [r['status'] for r in first] == [500, 500, 200]
    assert len({r['headers']['X-CloudPods-Event-Id'] for r in first}) == 1
    assert len({r['body'] for r in first}) == 1  # the same event, byte for byte
    assert all(signature_ok(r) for r in receiver.requests)
    assert not signature_ok(first[0], secret=SECRET + 'x')
    assert first[0]['path'] == '/hooks/cloudpods?src=test'
    accepted = receiver.accepted()
    assert [json.loads(r['body'])['sequence'] for r in accepted] == [1, 2, 3]
    assert len({r['headers']['X-CloudPods-Event-Id'] for r in accepted}) == 3  # each accepted once

    event = json.loads(accepted[0]['body'])
    row = outbox(queue, pod['id'])[0]
    assert event['id'] == str(row['event_id']) == accepted[0]['headers']['X-CloudPods-Event-Id']
    assert event['type'] == accepted[0]['headers']['X-CloudPods-Event-Type'] == 'pod.status_changed'
    assert event['pod_id'] == str(pod['id']) and event['data']['pod']['hostname'] == pod['hostname']
    assert accepted[0]['headers']['Content-Type'] == 'application/json'
    queue.wait(lambda: outbox(queue, pod['id'])[-1]['delivered_at'] is not None, 60, 'the last row marked')
    rows = outbox(queue, pod['id'])
    expected = [(3, 200, None), (1, 200, None), (1, 200, None)]
    assert [(r['attempts'], r['last_status'], r['last_error']) for r in rows] == expected
    assert summary(rows) == CREATED_TO_ACTIVE

    # The event as mPanel receives it is the document's WebhookEvent.
    checker = OpenApiChecker()
    schema = checker.document['webhooks']['cloudPodEvent']['post']['requestBody']['content']['application/json']
    validator = jsonschema.Draft202012Validator(dict(checker.document, **{'$ref': '#/$defs_target',
                                                                          '$defs_target': schema['schema']}),
                                                format_checker=jsonschema.FormatChecker())
    for request in accepted:
        assert not list(validator.iter_errors(json.loads(request['body'])))

    # No secret anywhere: outbox, events, worker log (whole, once the worker stopped).
    dump = json.dumps([dict(r) for r in queue.rows('SELECT * FROM cloud_pod_webhook_outbox')], default=str)
    dump += json.dumps([dict(r) for r in queue.rows('SELECT * FROM cloud_pod_events')], default=str)
    assert SECRET not in dump
    queue.stop_all()
    assert 'webhooks: stopped' in queue.log('w1')
    assert SECRET not in queue.all_logs()


def test_receiver_down_keeps_events_queued_then_all_arrive_in_order_per_pod(hook_queue):
    queue = hook_queue
    pods = [queue.order() for _pod in range(3)]
    queue.start('w1')
    queue.start('w2')  # two deliverers: one event is never sent by both at once

    def heads_retried():
        rows = outbox(queue)
        heads = [r for r in rows if r['sequence'] == 1]
        return len(rows) == 9 and all(r['attempts'] >= 3 for r in heads)
    queue.wait(heads_retried, 180, 'every pod ACTIVE and its first event tried three times')
    queue.wait_all('ACTIVE', 60)
    rows = outbox(queue)
    assert all(r['delivered_at'] is None and r['last_status'] is None and r['last_error'] for r in rows
               if r['attempts'])
    # In order per pod: a pod's later events are not tried while its first one is not accepted.
    assert all(r['attempts'] == 0 for r in rows if r['sequence'] > 1)
    assert 'Connection refused' in rows[0]['last_error'] or 'ConnectionRefused' in rows[0]['last_error']

    receiver = queue.receiver()
    queue.wait(lambda: all(r['delivered_at'] is not None for r in outbox(queue)), 120, 'every event delivered')
    seen = {}
    for request in receiver.requests:
        assert signature_ok(request)
        event = json.loads(request['body'])
        seen.setdefault(event['pod_id'], []).append((event['sequence'], event['id']))
    for pod in pods:
        arrived = seen[str(pod['id'])]
        assert [sequence for sequence, _event_id in arrived] == [1, 2, 3], arrived
        assert [str(r['event_id']) for r in outbox(queue, pod['id'])] == [event_id for _sequence, event_id in arrived]
        assert summary(outbox(queue, pod['id'])) == CREATED_TO_ACTIVE


# ---------------------------------------------------------------- the admin API

def test_admin_api_shows_the_delivery_state_filtered_and_paged(hook_queue):
    queue = hook_queue
    pods = [queue.order() for _pod in range(3)]
    with queue.pool.connection() as connection:  # as a deliverer records them
        connection.execute("UPDATE cloud_pod_webhook_outbox SET attempts = 1, last_status = 200, delivered_at = now() "
                           "WHERE subscription_id = %s", (pods[0]['id'],))
        connection.execute("UPDATE cloud_pod_webhook_outbox SET attempts = 2, last_status = 503, "
                           "last_error = 'HTTP 503 Service Unavailable' WHERE subscription_id = %s", (pods[1]['id'],))
    settings = Settings.from_env({'DATABASE_URL': queue.database_url})
    client = create_app(settings, queue.repository).test_client()
    admin, customer = new_token(), new_token()
    queue.repository.create_token('ops', 'admin', None, admin)
    queue.repository.create_token('jane', 'customer', 'cust-1', customer)
    checker = OpenApiChecker()

    def get(query, token=admin):
        response = client.get('/api/cloud-pods/admin/webhooks' + query, headers={'Authorization': 'Bearer ' + token})
        checker.check('GET', '/api/cloud-pods/admin/webhooks', response.status_code, response.content_type,
                      response.get_json())
        return response.status_code, response.get_json()

    status, page = get('')
    assert status == 200 and page['configured'] is False and page['next'] is None
    assert [d['pod_id'] for d in page['deliveries']] == [str(p['id']) for p in reversed(pods)]  # newest first
    by_pod = dict((d['pod_id'], d) for d in page['deliveries'])
    assert by_pod[str(pods[0]['id'])]['status'] == 'delivered' and by_pod[str(pods[0]['id'])]['next_attempt_at'] is None
    assert by_pod[str(pods[1]['id'])]['status'] == 'failed'
    assert by_pod[str(pods[1]['id'])]['last_error'] == 'HTTP 503 Service Unavailable'
    assert by_pod[str(pods[2]['id'])]['status'] == 'pending'
    assert by_pod[str(pods[2]['id'])]['event']['data']['pod']['status'] == 'PROVISIONING'
    assert [d['pod_id'] for d in get('?status=delivered')[1]['deliveries']] == [str(pods[0]['id'])]
    assert [d['pod_id'] for d in get('?status=failed')[1]['deliveries']] == [str(pods[1]['id'])]
    assert [d['pod_id'] for d in get('?status=pending')[1]['deliveries']] == [str(pods[2]['id']), str(pods[1]['id'])]
    assert [d['pod_id'] for d in get('?pod=%s' % pods[1]['id'])[1]['deliveries']] == [str(pods[1]['id'])]
    # Paged with the cursor: every row once.
    status, first = get('?limit=2')
    assert len(first['deliveries']) == 2 and first['next']
    status, second = get('?limit=2&cursor=' + first['next'])
    assert status == 200 and second['next'] is None
    assert [d['event_id'] for d in first['deliveries'] + second['deliveries']] == [
        d['event_id'] for d in page['deliveries']]
    status, filtered = get('?status=pending&limit=1')
    assert filtered['links']['next'].endswith('&status=pending')  # the next page keeps the filter
    status, rest = get(filtered['links']['next'][len('/api/cloud-pods/admin/webhooks'):])
    assert [d['pod_id'] for d in filtered['deliveries'] + rest['deliveries']] == [str(pods[2]['id']), str(pods[1]['id'])]
    # Bad parameters: 400 naming the parameter; a customer: 403.
    bad = (('?status=lost', 'status'), ('?pod=nope', 'pod'), ('?limit=0', 'limit'), ('?limit=501', 'limit'),
           ('?cursor=abc', 'cursor'), ('?status=failed&status=pending', 'status'))
    for query, parameter in bad:
        status, problem = get(query)
        assert (status, problem['parameter']) == (400, parameter), query
    assert get('', token=customer)[0] == 403


def test_delivered_events_older_than_the_keep_days_are_pruned_undelivered_never(hook_queue):
    queue = hook_queue
    old, recent, waiting = queue.order(), queue.order(), queue.order()
    with queue.pool.connection() as connection:
        # Delivered 40 days ago, delivered 1 day ago, and never delivered though created 400 days ago.
        connection.execute("UPDATE cloud_pod_webhook_outbox SET delivered_at = now() - interval '40 days' "
                           "WHERE subscription_id = %s", (old['id'],))
        connection.execute("UPDATE cloud_pod_webhook_outbox SET delivered_at = now() - interval '1 day' "
                           "WHERE subscription_id = %s", (recent['id'],))
        connection.execute("UPDATE cloud_pod_webhook_outbox SET created_at = now() - interval '400 days' "
                           "WHERE subscription_id = %s", (waiting['id'],))
    settings = Settings.from_env({'DATABASE_URL': queue.database_url, 'CLOUDPODS_WEBHOOK_KEEP_DAYS': '30'})
    deliverer = webhooks.Deliverer(settings, pool=queue.pool)
    assert deliverer.prune() == 1
    assert outbox(queue, old['id']) == []
    assert len(outbox(queue, recent['id'])) == 1 and len(outbox(queue, waiting['id'])) == 1
    assert deliverer.prune() == 0
