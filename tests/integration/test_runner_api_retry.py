# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's worker and the playbooks' reports of issue 12, with worker processes against a
real PostgreSQL and stand-in playbooks written by the test (CLOUDPODS_PLAYBOOK_DIR) that report
what the contract says the real ones report (``ssh_host_keys``, ``ssh``, ``https``).

- The keys of an order reach provision.yml as ``ssh_public_keys``, literally (``!unsafe``: a
  template in a key's comment is never rendered); SET_SSH_KEYS runs ssh_keys.yml with the pod's keys.
- The stats of a run are stored on the subscription and shown in the pod detail.
- The background HTTPS retry: a pending pod is retried by https.yml (failing, then pending, then
  active) with a growing, capped backoff until it is active; an operation queued while a retry
  waits is not refused and runs first; a retry never runs beside another operation of its pod and
  steps aside (cancelled, released) when one arrives while it runs; a pod that is no longer ACTIVE
  is not retried.
- ``cloudpods migrate`` takes a database at migration 0001, with data in it, to 0002.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api import views  # noqa: E402
from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import migrate  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, scratch_database, with_database, worker_environment  # noqa: E402
from test_runner_api_worker import Queue, stub_site  # noqa: E402

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYaY9Fc2WAspbusY48TMbpXKmmrNgmMZLkJq2wNBXOa jane@laptop'
HOST_KEYS = ['SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU (ED25519)',
             'SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s (ECDSA)']
# Each stand-in appends "<start|end> <playbook> <pod> <epoch>" to stub_log.
LOG_LINE = "echo {event} {name} {{{{ pod }}}} $(date +%s.%N) >> {{{{ stub_log }}}}"
PROVISION = """
- name: Stand-in of provision.yml (issue 12's report)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Record the run and what it received
      ansible.builtin.shell: "{start}"
      changed_when: true
    - name: Keep the extra vars
      ansible.builtin.copy:
        dest: "{{{{ stub_dir }}}}/provision-{{{{ pod }}}}.json"
        mode: "0600"
        content: "{{{{ {{'ssh_public_keys': ssh_public_keys}} | to_json }}}}"
    - name: Record the end
      ansible.builtin.shell: "{end}"
      changed_when: true
    - name: Report the pod
      ansible.builtin.set_stats:
        data:
          vmid: 4242
          node: stub
          ip: 192.0.2.7
          ssh_host_keys: {host_keys}
          ssh: {{user: web, port: 2222}}
          https: {{status: pending, reason: "The CA could not reach the domain yet.", not_after: ""}}
        per_host: false
"""
# Each run takes the next line "<seconds> <outcome>" of stub_dir/https-outcomes (none left: "0 active").
HTTPS = """
- name: Stand-in of https.yml
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Take the next outcome
      ansible.builtin.shell: |
        {start}
        line=$(head -n 1 {{{{ stub_dir }}}}/https-outcomes); sed -i 1d {{{{ stub_dir }}}}/https-outcomes
        set -- ${{line:-0 active}}
        sleep "$1"
        {end}
        echo "$2"
      register: outcome
      changed_when: false
    - name: Fail when told
      ansible.builtin.fail:
        msg: the CA did not answer
      when: outcome.stdout == 'fail'
    - name: Report
      ansible.builtin.set_stats:
        data:
          https:
            status: "{{{{ outcome.stdout }}}}"
            reason: "{{{{ 'The CA is not answering.' if outcome.stdout == 'pending' else '' }}}}"
            not_after: "{{{{ '2027-02-27T10:00:00Z' if outcome.stdout == 'active' else '' }}}}"
        per_host: false
"""
SSH_KEYS = """
- name: Stand-in of ssh_keys.yml
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Record the run
      ansible.builtin.shell: "{start} && sleep {{{{ stub_keys_seconds }}}} && {end}"
      changed_when: true
    - name: Keep the extra vars
      ansible.builtin.copy:
        dest: "{{{{ stub_dir }}}}/ssh_keys-{{{{ pod }}}}.json"
        mode: "0600"
        content: "{{{{ {{'ssh_public_keys': ssh_public_keys}} | to_json }}}}"
    - name: Report
      ansible.builtin.set_stats:
        data:
          ssh_host_keys: {host_keys}
          ssh: {{user: web, port: 2222}}
        per_host: false
"""
SIMPLE = """
- name: Stand-in of {name}
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Record the run
      ansible.builtin.shell: "{start} && {end}"
      changed_when: true
"""


def _stub(template, name):
    return template.format(name=name, start=LOG_LINE.format(event='start', name=name),
                           end=LOG_LINE.format(event='end', name=name), host_keys=json.dumps(HOST_KEYS))


@pytest.fixture
def stubs(tmp_path):
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    (playbooks / 'provision.yml').write_text(_stub(PROVISION, 'provision'))
    (playbooks / 'https.yml').write_text(_stub(HTTPS, 'https'))
    (playbooks / 'ssh_keys.yml').write_text(_stub(SSH_KEYS, 'ssh_keys'))
    for name in ('restart', 'deprovision'):
        (playbooks / (name + '.yml')).write_text(_stub(SIMPLE, name))
    stub_dir = tmp_path / 'stub'
    stub_dir.mkdir()
    (stub_dir / 'https-outcomes').write_text('')
    log = tmp_path / 'runs.txt'
    log.write_text('')
    operator = stub_site(tmp_path / 'vars.json', stub_dir=str(stub_dir), stub_log=str(log), stub_keys_seconds=0)
    return {'playbooks': playbooks, 'dir': stub_dir, 'log': log, 'vars': operator}


@pytest.fixture
def queue(lab_env, tmp_path, stubs):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, playbook_dir=stubs['playbooks'], extra_vars_file=stubs['vars'],
                                 lease_seconds=120, heartbeat_seconds=1, poll_seconds=1, retry_base_seconds=0.2,
                                 https_retry_seconds=1, https_retry_max_seconds=4)
        queue = Queue(url, env, tmp_path)
        queue.stubs = stubs
        try:
            yield queue
        finally:
            queue.stop_all()


def runs(queue):
    """[(event, playbook, pod, time)] from the stand-ins' log."""
    rows = []
    for line in queue.stubs['log'].read_text().splitlines():
        event, name, pod, when = line.split()
        rows.append((event, name, pod, float(when)))
    return rows


def outcomes(queue, *lines):
    queue.stubs['dir'].joinpath('https-outcomes').write_text(''.join(line + '\n' for line in lines))


def pod_row(queue, pod_id):
    return queue.repository.get_subscription(pod_id)


def open_retries(queue, pod_id):
    return queue.rows("SELECT id, status, run_at FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s "
                      "AND task_type = 'ISSUE_HTTPS' AND status IN ('PENDING', 'RUNNING')", (pod_id,))


def order(queue, keys=()):
    row, _created = queue.repository.create_order({
        'customer_id': 'cust-1', 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER',
        'domain': 'shop-%s.example.org' % uuid.uuid4().hex[:6], 'hostname': 'cp-' + uuid.uuid4().hex[:10],
        'idempotency_key': None, 'request_digest': 'x', 'ssh_public_keys': list(keys)}, 3)
    return row


def stop(queue, worker_id):
    process = queue.workers.pop(worker_id)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0


# ---------------------------------------------------------------- keys and stats

def test_keys_reach_the_playbooks_literally_and_the_stats_are_stored_and_shown(queue, tmp_path):
    canary = tmp_path / 'CANARY'
    # A comment is free text: a template in it is a key's comment, never code.
    templated = KEY.replace('jane@laptop', "{{ lookup('pipe', 'touch %s') }}" % canary)
    outcomes(queue, '0 active')
    pod = order(queue, keys=[KEY, templated.replace('AAAAIBYaY9', 'AAAAIBYaY8')])
    queue.start('w')
    queue.wait(lambda: pod_row(queue, pod['id'])['https_status'] == 'active', 120, 'HTTPS active')
    seen = json.loads((queue.stubs['dir'] / ('provision-%s.json' % pod['hostname'])).read_text())
    assert seen['ssh_public_keys'] == pod_row(queue, pod['id'])['ssh_public_keys'] == [
        KEY, templated.replace('AAAAIBYaY9', 'AAAAIBYaY8')]
    assert not canary.exists()
    row = pod_row(queue, pod['id'])
    assert (row['status'], row['vmid'], row['ssh_user'], row['ssh_port']) == ('ACTIVE', 4242, 'web', 2222)
    assert row['ssh_host_keys'] == HOST_KEYS
    assert row['https_not_after'].isoformat() == '2027-02-27T10:00:00+00:00' and row['https_pending_runs'] == 0
    view = views.pod(row)
    assert view['ssh']['host'] == row['domain'] and view['ssh']['port'] == 2222 and view['ssh']['user'] == 'web'
    assert view['ssh']['host_key_fingerprints'] == HOST_KEYS
    assert [key['comment'] for key in view['ssh']['keys']] == ['jane@laptop', templated.split(' ', 2)[2]]
    assert view['https'] == {'status': 'active', 'reason': '', 'not_after': '2027-02-27T10:00:00+00:00',
                             'next_attempt_at': None}
    # The customer's detail over the API (checked against the OpenAPI document by the client below).
    settings = Settings.from_env({'DATABASE_URL': queue.database_url})
    client = create_app(settings, queue.repository).test_client()
    token = new_token()
    queue.repository.create_token('jane', 'customer', 'cust-1', token)
    response = client.get('/api/cloud-pods/%s' % pod['id'], headers={'Authorization': 'Bearer ' + token})
    detail = response.get_json()
    OpenApiChecker().check('GET', '/api/cloud-pods/%s' % pod['id'], 200, response.content_type, detail)
    assert detail['ssh'] == view['ssh'] and detail['https'] == view['https']
    assert detail['progress']['operation'] == 'CREATE_CONTAINER'  # the retry is not the pod's operation

    # New keys: the subscription holds them; SET_SSH_KEYS gives them to ssh_keys.yml.
    response = client.put('/api/cloud-pods/%s/ssh-keys' % pod['id'], headers={'Authorization': 'Bearer ' + token},
                          json={'ssh_public_keys': []})
    assert response.status_code == 202, response.get_json()
    queue.wait(lambda: queue.rows("SELECT 1 FROM cloud_pod_provisioning_tasks WHERE task_type = 'SET_SSH_KEYS' "
                                  "AND status = 'COMPLETED'"), 120, 'SET_SSH_KEYS')
    seen = json.loads((queue.stubs['dir'] / ('ssh_keys-%s.json' % pod['hostname'])).read_text())
    assert seen == {'ssh_public_keys': []}
    assert pod_row(queue, pod['id'])['ssh_public_keys'] == []


# ---------------------------------------------------------------- the background HTTPS retry

def test_a_pending_pod_is_retried_with_a_growing_capped_backoff_until_active(queue):
    # https.yml fails, reports pending twice, then active: four retries after the order.
    outcomes(queue, '0 fail', '0 pending', '0 pending', '0 active')
    pod = order(queue)
    queue.start('w')
    queue.wait(lambda: pod_row(queue, pod['id'])['https_status'] == 'active', 180, 'HTTPS active')
    assert [name for event, name, _pod, _when in runs(queue) if event == 'start'] == [
        'provision', 'https', 'https', 'https', 'https']
    retries = queue.rows("SELECT status, last_error, extract(epoch FROM run_at - created_at) AS delay "
                         "FROM cloud_pod_provisioning_tasks WHERE task_type = 'ISSUE_HTTPS' ORDER BY id")
    # 1 s after the order's pending, then doubling (2, 4) up to CLOUDPODS_HTTPS_RETRY_MAX_SECONDS (4).
    assert [round(float(r['delay']), 2) for r in retries] == [1.0, 2.0, 4.0, 4.0]
    assert [r['status'] for r in retries] == ['FAILED', 'COMPLETED', 'COMPLETED', 'COMPLETED']
    assert 'the CA did not answer' in retries[0]['last_error']
    row = pod_row(queue, pod['id'])
    assert (row['status'], row['https_status'], row['https_pending_runs'], row['last_error']) == (
        'ACTIVE', 'active', 0, None)
    assert open_retries(queue, pod['id']) == []


def test_while_pending_the_detail_shows_the_reason_and_the_next_attempt(queue):
    pod = order(queue)
    queue.start('w', CLOUDPODS_HTTPS_RETRY_SECONDS='3600')
    queue.wait(lambda: open_retries(queue, pod['id']), 120, 'a retry to be queued')
    [retry] = open_retries(queue, pod['id'])
    view = views.pod(pod_row(queue, pod['id']))
    assert view['status'] == 'ACTIVE'  # HTTP only, but ACTIVE: the order did not fail
    assert view['https']['status'] == 'pending' and view['https']['reason'] == 'The CA could not reach the domain yet.'
    assert view['https']['next_attempt_at'] == retry['run_at'].isoformat()


def test_an_operation_queued_while_a_retry_waits_is_accepted_and_runs_first(queue):
    pod = order(queue)
    queue.start('first', CLOUDPODS_HTTPS_RETRY_SECONDS='3600')
    queue.wait(lambda: open_retries(queue, pod['id']), 120, 'a retry to be queued')
    stop(queue, 'first')  # the retry waits in the database, no worker alive
    with queue.pool.connection() as connection:
        connection.execute("UPDATE cloud_pod_provisioning_tasks SET run_at = now() - interval '1 minute' "
                           "WHERE task_type = 'ISSUE_HTTPS'")  # due (overdue) before the operation is queued
    queue.stubs['vars'].write_text(json.dumps(dict(json.loads(queue.stubs['vars'].read_text()), stub_keys_seconds=2)))
    task = queue.repository.set_ssh_keys(pod['id'], [KEY], 'SET_SSH_KEYS', 3)  # no OperationInProgress
    assert task['status'] == 'PENDING'
    outcomes(queue, '0 active')
    for worker in ('a', 'b'):  # two workers: one of them would take the retry if the claim let it
        queue.start(worker)
    queue.wait(lambda: pod_row(queue, pod['id'])['https_status'] == 'active', 180, 'HTTPS active')
    later = [(event, name) for event, name, _pod, _when in runs(queue)][2:]
    assert later == [('start', 'ssh_keys'), ('end', 'ssh_keys'), ('start', 'https'), ('end', 'https')]
    keys_end = [when for event, name, _pod, when in runs(queue) if (event, name) == ('end', 'ssh_keys')][0]
    https_start = [when for event, name, _pod, when in runs(queue) if (event, name) == ('start', 'https')][0]
    assert https_start >= keys_end
    started = queue.rows("SELECT task_type, started_at, finished_at FROM cloud_pod_provisioning_tasks "
                         "WHERE task_type IN ('SET_SSH_KEYS', 'ISSUE_HTTPS') AND status = 'COMPLETED' "
                         "ORDER BY started_at")
    assert [row['task_type'] for row in started] == ['SET_SSH_KEYS', 'ISSUE_HTTPS']
    assert started[1]['started_at'] >= started[0]['finished_at']


def test_a_running_retry_steps_aside_for_an_operation_and_runs_again_after_it(queue):
    outcomes(queue, '600 pending', '0 active')  # the first retry would run ten minutes
    pod = order(queue)
    queue.start('w')
    queue.wait(lambda: (queue.stubs['dir'] / 'https-outcomes').read_text() == '0 active\n', 120,
               'the retry to take its (ten-minute) outcome')
    queue.repository.set_ssh_keys(pod['id'], [KEY], 'SET_SSH_KEYS', 3)
    queue.wait(lambda: pod_row(queue, pod['id'])['https_status'] == 'active', 180, 'HTTPS active')
    sequence = [(event, name) for event, name, _pod, _when in runs(queue)]
    # The ten-minute run was cancelled (it never ended); the keys went first; the retry ran again.
    assert sequence == [('start', 'provision'), ('end', 'provision'), ('start', 'https'), ('start', 'ssh_keys'),
                        ('end', 'ssh_keys'), ('start', 'https'), ('end', 'https')]
    released = queue.rows("SELECT e.message FROM cloud_pod_events e JOIN cloud_pod_provisioning_tasks t "
                          "ON t.id = e.task_id WHERE t.task_type = 'ISSUE_HTTPS' AND e.status = 'released'")
    assert [row['message'] for row in released] == ['an operation on this pod is waiting: it goes first']


def test_a_retry_whose_worker_died_is_retried_again(queue):
    outcomes(queue, '600 pending', '0 active')  # the first retry would run ten minutes: its worker dies in it
    pod = order(queue)
    doomed = queue.start('doomed', CLOUDPODS_LEASE_SECONDS='3')
    queue.wait(lambda: (queue.stubs['dir'] / 'https-outcomes').read_text() == '0 active\n', 120,
               'the retry to take its (ten-minute) outcome')
    doomed.kill()
    doomed.wait()
    del queue.workers['doomed']
    queue.start('rescuer', CLOUDPODS_LEASE_SECONDS='3')
    queue.wait(lambda: pod_row(queue, pod['id'])['https_status'] == 'active', 180, 'HTTPS active')
    retries = queue.rows("SELECT status, worker_id, last_error FROM cloud_pod_provisioning_tasks "
                         "WHERE task_type = 'ISSUE_HTTPS' ORDER BY id")
    assert [(r['status'], r['worker_id']) for r in retries] == [('FAILED', 'doomed'), ('COMPLETED', 'rescuer')]
    assert 'worker doomed stopped responding' in retries[0]['last_error']
    assert pod_row(queue, pod['id'])['last_error'] is None  # the pod's own error is not the retry's


def test_a_pod_that_is_no_longer_active_is_not_retried(queue):
    outcomes(queue, *['0 pending'] * 50)
    pod = order(queue)
    queue.start('w')
    queue.wait(lambda: sum(1 for e, n, _p, _w in runs(queue) if (e, n) == ('end', 'https')) >= 2, 180,
               'two retries')
    queue.repository.enqueue_operation(pod['id'], 'TERMINATE', 3)  # accepted beside the waiting retry
    queue.wait(lambda: pod_row(queue, pod['id'])['status'] == 'TERMINATED', 120, 'TERMINATED')
    assert open_retries(queue, pod['id']) == []  # closed with the TERMINATE, in its transaction
    retries_then = sum(1 for e, n, _p, _w in runs(queue) if (e, n) == ('start', 'https'))
    time.sleep(8)  # twice the longest backoff (4 s): a retry still scheduled would have run by now
    assert sum(1 for e, n, _p, _w in runs(queue) if (e, n) == ('start', 'https')) == retries_then
    dropped = queue.rows("SELECT result FROM cloud_pod_provisioning_tasks WHERE task_type = 'ISSUE_HTTPS' "
                         "AND result ? 'dropped'")
    assert len(dropped) == 1 and 'TERMINATED' in dropped[0]['result']['dropped']
    # A waiting retry of a pod someone else took out of ACTIVE (by hand, say) is dropped too.
    other = order(queue)
    queue.wait(lambda: open_retries(queue, other['id']), 120, 'a retry for the second pod')
    with queue.pool.connection() as connection:
        connection.execute("UPDATE cloud_pod_subscriptions SET status = 'SUSPENDED' WHERE id = %s", (other['id'],))
    queue.wait(lambda: not open_retries(queue, other['id']), 60, 'the retry of the SUSPENDED pod to be dropped')


# ---------------------------------------------------------------- migration 0001 -> 0002

def test_migrate_takes_a_database_at_0001_with_data_to_0002(lab_env):
    name = 'cloudpods_mig_%s' % uuid.uuid4().hex[:8]
    with psycopg.connect(lab_env['DATABASE_URL'], autocommit=True) as admin:
        admin.execute('CREATE DATABASE "%s"' % name)
    url = with_database(lab_env['DATABASE_URL'], name)
    try:
        assert migrate(url, upto='0001_cloud_pods.sql') == ['0001_cloud_pods.sql']
        with psycopg.connect(url) as connection:
            pod = connection.execute(
                "INSERT INTO cloud_pod_subscriptions (customer_id, customer_email, plan_code, hostname, status, vmid, "
                "idempotency_key, request_digest) VALUES ('cust-1', 'jane@example.org', 'CLOUD_POD_STARTER', "
                "'cp-0123456789', 'ACTIVE', 101, 'order-1', 'digest') RETURNING id").fetchone()[0]
            connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type, status, attempts) "
                               "VALUES (%s, 'CREATE_CONTAINER', 'COMPLETED', 1), (%s, 'RESTART', 'PENDING', 0)",
                               (pod, pod))
        env = dict(os.environ, DATABASE_URL=url)
        result = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'migrate'], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert '0002_access_and_https.sql' in result.stdout
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT status, vmid, ssh_public_keys, ssh_host_keys, https_status, "
                                     "https_pending_runs, request_digest FROM cloud_pod_subscriptions").fetchone()
            assert row == ('ACTIVE', 101, [], None, None, 0, 'digest')
            # The open RESTART still holds the pod's one open operation; a retry may wait beside it.
            with pytest.raises(psycopg.errors.UniqueViolation):
                connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type) "
                                   "VALUES (%s, 'SET_SSH_KEYS')", (pod,))
            connection.rollback()
            connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type) "
                               "VALUES (%s, 'ISSUE_HTTPS')", (pod,))
            with pytest.raises(psycopg.errors.UniqueViolation):
                connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type) "
                                   "VALUES (%s, 'ISSUE_HTTPS')", (pod,))
            connection.rollback()
            with pytest.raises(psycopg.errors.CheckViolation):
                connection.execute("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type) "
                                   "VALUES (%s, 'NOT_AN_OPERATION')", (pod,))
            connection.rollback()
            # Migration 0004: the lifecycle's task types, and no suspend reason on a pod never suspended.
            assert connection.execute("SELECT suspend_reason, suspended_at FROM cloud_pod_subscriptions").fetchone() \
                == (None, None)
            with pytest.raises(psycopg.errors.CheckViolation):
                connection.execute("UPDATE cloud_pod_subscriptions SET suspend_reason = 'boredom'")
        again = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'migrate'], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0 and '0002' not in again.stdout, again.stdout + again.stderr
    finally:
        with psycopg.connect(lab_env['DATABASE_URL'], autocommit=True) as admin:
            admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
