# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's AWX executor (CLOUDPODS_EXECUTOR=awx) against the AWX stand-in (tests/lab/awxsim).

Jobs do not run in the stand-in here: a thread of the test plays the job's part through its
``/_lab`` controls (append job events, set artifacts, move the status), while the executor
launches and follows the job as it would in AWX. The executor is driven directly and through a
worker (in this process, ``Worker.run_one``) against a scratch database of the shared lab's
PostgreSQL; the start-up check runs ``cloudpods worker`` as a process.
"""

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from awxsim.server import Application, AwxSimServer, create_server  # noqa: E402  pylint: disable=wrong-import-position
from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labenv import free_port  # noqa: E402
from runner_api import awx_executor, operations  # noqa: E402
from runner_api.awx_executor import AwxExecutor  # noqa: E402
from runner_api.executors import RunRequest, make_executor  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import MASK, Settings, SettingsError, awx_template_name  # noqa: E402
from runner_api.worker import Worker  # noqa: E402

TOKEN = 'awx-executor-token-0f3c9d2e'
CONTROL_KEY = 'awxsim-control-key-h14'
PVE_SECRET = 'pve-secret-7d41e0aa59'
STEP_WAIT = 0.05
STEPS = 1200  # bounded loops: at most 60 s of waiting for the other side


class Awx(object):
    """The stand-in on a fixed port, stoppable and startable again with the same state."""

    def __init__(self):
        self.port = free_port()
        self.config = {'listen_port': self.port, 'control_key': CONTROL_KEY,
                       'users': [{'username': 'admin', 'password': 'admin-pass', 'is_superuser': True}],
                       'tokens': [{'token': TOKEN, 'user': 'admin', 'scope': 'write'}]}
        self.app = Application(self.config)
        self.server = None
        self.base = 'http://127.0.0.1:%d' % self.port

    def start(self):
        self.server = AwxSimServer(('127.0.0.1', self.port), self.app)
        threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def call(self, method, path, body=None, lab=False):
        headers = {'Content-Type': 'application/json'}
        headers.update({'X-Lab-Key': CONTROL_KEY} if lab else {'Authorization': 'Bearer ' + TOKEN})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, (json.loads(raw) if raw else None)

    def ok(self, method, path, body=None, lab=False, status=(200, 201, 202, 204)):
        got, data = self.call(method, path, body, lab)
        assert got in status, (method, path, got, data)
        return data

    def requests(self):
        return self.ok('GET', '/_lab/state', lab=True)['requests']


@pytest.fixture(scope='module')
def awx_server():
    awx = Awx()
    awx.start()
    yield awx
    if awx.server is not None:
        awx.stop()


@pytest.fixture
def awx(awx_server):
    """The stand-in reset, with a job template per operation under the default names."""
    if awx_server.server is None:
        awx_server.start()
    awx_server.ok('POST', '/_lab/reset', lab=True)
    awx_executor._TEMPLATES.clear()  # pylint: disable=protected-access  # ids of the previous test's objects
    org = awx_server.ok('POST', '/api/v2/organizations/', {'name': 'Cloud Pods'})['id']
    project = awx_server.ok('POST', '/api/v2/projects/', {'name': 'Cloud Pods', 'organization': org})['id']
    inventory = awx_server.ok('POST', '/api/v2/inventories/', {'name': 'Nodes', 'organization': org})['id']
    awx_server.templates = {}
    for operation, playbook in operations.playbooks().items():
        awx_server.templates[operation] = awx_server.ok('POST', '/api/v2/job_templates/', {
            'name': awx_template_name(playbook), 'project': project, 'playbook': 'playbooks/' + playbook,
            'inventory': inventory, 'ask_variables_on_launch': True,
            'ask_job_type_on_launch': operation == 'CREATE_CONTAINER'})['id']
    return awx_server


def awx_env(awx, **overrides):
    env = {'DATABASE_URL': 'postgresql://cloudpods@127.0.0.1:1/unused', 'CLOUDPODS_EXECUTOR': 'awx',
           'CLOUDPODS_AWX_URL': awx.base, 'CLOUDPODS_AWX_TOKEN': TOKEN, 'CLOUDPODS_AWX_POLL_SECONDS': '0.05',
           'CLOUDPODS_AWX_TIMEOUT_SECONDS': '5', 'PROXMOX_API_TOKEN_SECRET': PVE_SECRET}
    env.update(overrides)
    return env


def awx_settings(awx, **overrides):
    return Settings.from_env(awx_env(awx, **overrides))


class Driver(object):
    """Plays an AWX job in a thread: waits for the next launch, then appends ``events``, sets
    ``artifacts`` and moves the job to running and ``final``. ``final='await-cancel'``: the job stays
    running until runner_api cancels it (``cancel_flag``), then becomes canceled."""

    def __init__(self, awx, events=(), artifacts=None, final='successful', explanation='', then=()):
        self.awx = awx
        self.events = list(events)
        self.then = list(then)  # appended once runner_api has looked for the events after the first ones
        self.artifacts = artifacts
        self.final = final
        self.explanation = explanation
        self.known = {job['id'] for job in awx.ok('GET', '/api/v2/jobs/?page_size=200')['results']}
        self.job = None
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=STEPS * STEP_WAIT)
        assert not self.thread.is_alive(), 'the driver thread did not end'
        assert not self.errors, self.errors

    def _wait(self, predicate, what):
        for _step in range(STEPS):
            value = predicate()
            if value:
                return value
            time.sleep(STEP_WAIT)
        raise AssertionError('timed out waiting for ' + what)

    def _new_job(self):
        jobs = self.awx.ok('GET', '/api/v2/jobs/?page_size=200')['results']
        return next((job['id'] for job in jobs if job['id'] not in self.known), None)

    def _run(self):
        try:
            self.job = self._wait(self._new_job, 'a launch')
            path = '/_lab/jobs/%d/' % self.job
            self.awx.ok('POST', path + 'status', {'status': 'running'}, lab=True)
            if self.events:
                self.awx.ok('POST', path + 'events', {'events': self.events}, lab=True)
            if self.then:
                after = 'counter__gt=%d&' % len(self.events)
                self._wait(lambda: any(r['path'].endswith('/jobs/%d/job_events/' % self.job) and after in r['query']
                                       for r in self.awx.requests()), 'a look for the events after the first ones')
                self.awx.ok('POST', path + 'events', {'events': self.then}, lab=True)
            if self.artifacts is not None:
                self.awx.ok('POST', path + 'artifacts', {'artifacts': self.artifacts}, lab=True)
            if self.final == 'await-cancel':
                self._wait(lambda: self.awx.ok('GET', '/api/v2/jobs/%d/' % self.job)['cancel_flag'], 'a cancel')
                self.awx.ok('POST', path + 'status', {'status': 'canceled'}, lab=True)
            elif self.final:
                self.awx.ok('POST', path + 'status', {'status': self.final, 'job_explanation': self.explanation},
                            lab=True)
        except Exception as exc:  # pylint: disable=broad-except
            self.errors.append(repr(exc))


def task_events(play, task, result_event, res, host='pve1', action='ansible.builtin.debug', **extra):
    """A task's start and its result, as AWX stores them (runner's event_data, top-level copies)."""
    data = {'play': play, 'task': task, 'task_uuid': 'u-' + task, 'task_action': action, 'resolved_action': action}
    result = dict(data, host=host, res=res, duration=0.25)
    return [{'event': 'playbook_on_task_start', 'play': play, 'task': task, 'event_data': data},
            dict({'event': result_event, 'play': play, 'task': task, 'host_name': host, 'event_data': result,
                  'failed': result_event == 'runner_on_failed', 'changed': bool(res.get('changed')),
                  'stdout': json.dumps(res)}, **extra)]


SUCCESS_EVENTS = ([{'event': 'playbook_on_start', 'event_data': {}}]
                  + task_events('Provision a pod', 'Create the container', 'runner_on_ok',
                                {'changed': True, 'msg': 'created with token %s and %s' % (PVE_SECRET, TOKEN)},
                                stdout='changed: [pve1] %s' % PVE_SECRET)
                  + task_events('Provision a pod', 'Report the pod', 'runner_on_ok', {'changed': False})
                  + [{'event': 'playbook_on_stats', 'event_data': {'artifact_data': {'vmid': 1}}}])
ARTIFACTS = {'vmid': 4242, 'node': 'pve1', 'ip': '192.0.2.7'}
REQUEST = RunRequest('CREATE_CONTAINER', {'pod': 'cp-awx-1', 'plan': 'CLOUD_POD_STARTER', 'domain': ''})


# ------------------------------------------------------------------ settings


def test_executor_setting_is_checked(awx):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(awx_env(awx, CLOUDPODS_EXECUTOR='tower'))
    assert "CLOUDPODS_EXECUTOR must be one of local, awx, got 'tower'" in str(refused.value)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(awx_env(awx, CLOUDPODS_AWX_URL='', CLOUDPODS_AWX_TOKEN='',
                                  CLOUDPODS_AWX_JOB_TEMPLATES='{"PROVISION": "x"}'), worker=True)
    message = str(refused.value)
    assert 'CLOUDPODS_AWX_URL is not set' in message and 'CLOUDPODS_AWX_TOKEN is not set' in message
    assert 'CLOUDPODS_AWX_JOB_TEMPLATES: unknown operations PROVISION' in message
    # The API needs neither (it never calls AWX).
    assert Settings.from_env(awx_env(awx, CLOUDPODS_AWX_URL='', CLOUDPODS_AWX_TOKEN='')).executor == 'awx'
    settings = awx_settings(awx, CLOUDPODS_AWX_JOB_TEMPLATES='{"REPAIR": "Fleet repair"}')
    assert isinstance(make_executor(settings), AwxExecutor)
    assert TOKEN in settings.secrets() and TOKEN not in repr(settings)
    assert awx_executor.template_names(settings)['REPAIR'] == 'Fleet repair'
    assert awx_executor.template_names(settings)['CREATE_CONTAINER'] == 'Cloud Pods: provision'
    # A worker with the awx executor needs no Proxmox settings: AWX's credentials carry them.
    assert Settings.from_env(awx_env(awx), worker=True).executor == 'awx'


# ------------------------------------------------------------------ the executor


def test_successful_job_events_scrubbed_and_artifacts_as_stats(awx):
    seen = []
    with Driver(awx, SUCCESS_EVENTS[:3], ARTIFACTS, then=SUCCESS_EVENTS[3:]) as driver:
        result = AwxExecutor(awx_settings(awx)).run(REQUEST, seen.append)
    assert result.ok and result.stats == ARTIFACTS, result
    job = awx.ok('GET', '/api/v2/jobs/%d/' % driver.job)
    assert job['job_template'] == awx.templates['CREATE_CONTAINER'] and job['job_type'] == 'run'
    assert json.loads(job['extra_vars']) == REQUEST.extra_vars
    assert [(e['step'], e['status'], e['host']) for e in seen] == [
        ('Create the container', 'started', None), ('Create the container', 'changed', 'pve1'),
        ('Report the pod', 'started', None), ('Report the pod', 'ok', 'pve1')]
    assert seen[1]['message'] == 'created with token %s and %s' % (MASK, MASK)
    assert seen[1]['duration_ms'] == 250
    assert PVE_SECRET not in repr(seen) and TOKEN not in repr(seen)
    # Followed by counter: each look asks only for the events after the last one seen (the driver waited
    # for the look after the first three before it appended the rest).
    looks = [r['query'] for r in awx.requests() if r['path'] == '/api/v2/jobs/%d/job_events/' % driver.job]
    after = [int(query.split('counter__gt=')[1].split('&')[0]) for query in looks]
    assert 3 in after and after == sorted(after) and set(after) <= {0, 3, 6}, looks


def test_dry_run_launches_job_type_check_only_where_the_template_prompts(awx):
    with Driver(awx, final='successful') as driver:
        result = AwxExecutor(awx_settings(awx)).run(RunRequest('CREATE_CONTAINER', {'pod': 'x'}, check=True),
                                                    lambda event: None)
    assert result.ok and awx.ok('GET', '/api/v2/jobs/%d/' % driver.job)['job_type'] == 'check'
    before = len(awx.ok('GET', '/api/v2/jobs/')['results'])
    result = AwxExecutor(awx_settings(awx)).run(RunRequest('REPAIR', {'pod': 'x'}, check=True), lambda event: None)
    assert not result.ok and not result.retryable
    assert "'Cloud Pods: repair' does not prompt for it: set ask_job_type_on_launch" in result.error
    assert len(awx.ok('GET', '/api/v2/jobs/')['results']) == before  # nothing launched


def test_template_without_variable_prompt_is_refused_and_its_job_canceled(awx):
    awx.ok('PATCH', '/api/v2/job_templates/%d/' % awx.templates['RESTART'], {'ask_variables_on_launch': False})
    result = AwxExecutor(awx_settings(awx)).run(RunRequest('RESTART', {'pod': 'x'}), lambda event: None)
    assert not result.ok and not result.retryable
    assert 'ignored extra_vars at launch' in result.error and 'ask_variables_on_launch' in result.error
    assert awx.ok('GET', '/api/v2/jobs/')['results'][-1]['status'] == 'canceled'


def test_failed_job_names_the_failing_task_and_is_retried(awx):
    events = task_events('Provision a pod', 'Start the container', 'runner_on_failed',
                         {'failed': True, 'msg': 'CT 4242 did not start'})
    with Driver(awx, events, final='failed'):
        result = AwxExecutor(awx_settings(awx)).run(REQUEST, lambda event: None)
    assert (result.status, result.retryable) == ('failed', True)
    assert result.error == "Step 'Start the container' failed: CT 4242 did not start"


def test_precondition_failure_is_not_retried(awx):
    events = task_events('Check the order', 'The plan exists', 'runner_on_failed',
                         {'failed': True, 'msg': 'unknown plan CLOUD_POD_HUGE'}, action='ansible.builtin.assert')
    with Driver(awx, events, final='failed'):
        result = AwxExecutor(awx_settings(awx)).run(REQUEST, lambda event: None)
    assert (result.status, result.retryable) == ('failed', False)
    assert 'unknown plan CLOUD_POD_HUGE' in result.error


def test_job_error_and_cancel_in_awx(awx):
    with Driver(awx, final='error', explanation='Failed to pull the execution environment'):
        result = AwxExecutor(awx_settings(awx)).run(REQUEST, lambda event: None)
    assert (result.status, result.retryable) == ('error', True)
    assert 'ended in error: Failed to pull the execution environment' in result.error
    with Driver(awx, final='canceled') as driver:
        result = AwxExecutor(awx_settings(awx)).run(REQUEST, lambda event: None)
    assert (result.status, result.retryable) == ('canceled', False)
    assert result.error == 'AWX job %d was canceled in AWX (not by runner_api)' % driver.job


def test_cancel_posts_cancel_and_waits_for_canceled(awx):
    cancel = threading.Event()
    with Driver(awx, task_events('Provision a pod', 'Create the container', 'runner_on_ok', {}),
                final='await-cancel') as driver:
        def cancel_after_first_event(event):
            if event['status'] == 'ok':
                cancel.set()
        result = AwxExecutor(awx_settings(awx)).run(REQUEST, cancel_after_first_event, cancel.is_set)
    assert result.status == 'canceled' and result.error == 'AWX job %d canceled' % driver.job
    posts = [r for r in awx.requests() if r['method'] == 'POST' and r['path'] == '/api/v2/jobs/%d/cancel/' % driver.job]
    assert len(posts) == 1


def test_job_running_past_the_playbook_timeout_is_canceled(awx):
    settings = dataclasses.replace(awx_settings(awx), playbook_timeout_seconds=0.5)
    with Driver(awx, final='await-cancel') as driver:
        result = AwxExecutor(settings).run(REQUEST, lambda event: None)
    assert (result.status, result.retryable) == ('timeout', True)
    assert result.error == ('AWX job %d ran longer than CLOUDPODS_PLAYBOOK_TIMEOUT_SECONDS (0.5 s) and was canceled'
                            % driver.job)


def test_expired_token_is_a_configuration_error_without_the_token(awx):
    expired = 'expired-token-b81c66e2'
    result = AwxExecutor(awx_settings(awx, CLOUDPODS_AWX_TOKEN=expired)).run(REQUEST, lambda event: None)
    assert not result.ok and not result.retryable
    assert 'refused CLOUDPODS_AWX_TOKEN (401' in result.error and 'expired or was revoked' in result.error
    assert expired not in result.error
    problems = awx_executor.startup_problems(awx_settings(awx, CLOUDPODS_AWX_TOKEN=expired))
    assert len(problems) == 1 and 'refused CLOUDPODS_AWX_TOKEN (401' in problems[0] and expired not in problems[0]


def test_template_deleted_after_start_fails_once_then_is_looked_up_again(awx):
    executor = AwxExecutor(awx_settings(awx))
    with Driver(awx, final='successful'):
        assert executor.run(REQUEST, lambda event: None).ok
    awx.ok('DELETE', '/api/v2/job_templates/%d/' % awx.templates['CREATE_CONTAINER'])
    result = executor.run(REQUEST, lambda event: None)
    assert not result.retryable and "'Cloud Pods: provision'" in result.error and '404' in result.error
    result = executor.run(REQUEST, lambda event: None)
    assert not result.retryable and "has no job template 'Cloud Pods: provision' (operation CREATE_CONTAINER)" in result.error


def test_awx_down_at_launch_and_while_following_is_retryable(awx):
    settings = awx_settings(awx, CLOUDPODS_AWX_OUTAGE_SECONDS='0.5', CLOUDPODS_AWX_TIMEOUT_SECONDS='2')
    executor = AwxExecutor(settings)
    executor.client.template('CREATE_CONTAINER')  # resolved while AWX answers
    awx.stop()
    try:
        result = executor.run(REQUEST, lambda event: None)
    finally:
        awx.start()
    assert (result.status, result.retryable) == ('error', True)
    assert 'does not answer' in result.error and awx.base in result.error and TOKEN not in result.error
    # AWX goes away after the launch: the attempt gives up after CLOUDPODS_AWX_OUTAGE_SECONDS, retryable.
    stopped = []

    def stop_when_running(event):
        if not stopped:
            stopped.append(True)
            awx.stop()
    with Driver(awx, task_events('Provision a pod', 'Create the container', 'runner_on_ok', {}), final=None):
        try:
            result = executor.run(REQUEST, stop_when_running)
        finally:
            awx.start()
    assert stopped and (result.status, result.retryable) == ('error', True)
    assert 'gave up following AWX job' in result.error and 'CLOUDPODS_AWX_OUTAGE_SECONDS' in result.error


# ------------------------------------------------------------------ through a worker


@pytest.fixture
def queue(lab_env, awx):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = awx_env(awx, DATABASE_URL=url, CLOUDPODS_HEARTBEAT_SECONDS='0.2', CLOUDPODS_LEASE_SECONDS='30',
                      CLOUDPODS_RETRY_BASE_SECONDS='0', CLOUDPODS_RETRY_MAX_SECONDS='0', CLOUDPODS_MAX_ATTEMPTS='3')
        settings = Settings.from_env(env, worker=True)
        pool = open_pool(settings, name='test-awx-worker', min_size=1, max_size=4)
        repository = Repository(pool)
        yield settings, repository, pool, env
        pool.close()


def order(repository):
    row, _created = repository.create_order({
        'customer_id': 'cust-1', 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER',
        'domain': None, 'hostname': 'cp-awx-%d' % int(time.time() * 1000 % 10 ** 9), 'idempotency_key': None,
        'request_digest': 'x'}, 3)
    return row


def rows(pool, sql, params=()):
    with pool.connection() as connection:
        return connection.execute(sql, params).fetchall()


def test_worker_stores_scrubbed_events_and_the_pod_from_artifacts(queue, awx):
    settings, repository, pool, _env = queue
    pod = order(repository)
    with Driver(awx, SUCCESS_EVENTS, ARTIFACTS):
        assert Worker(settings, worker_id='awx-w1', repository=repository).run_one()
    sub = rows(pool, 'SELECT status, vmid, node, host(ip) AS ip FROM cloud_pod_subscriptions WHERE id = %s',
               (pod['id'],))[0]
    assert (sub['status'], sub['vmid'], sub['node'], sub['ip']) == ('ACTIVE', 4242, 'pve1', '192.0.2.7')
    events = rows(pool, 'SELECT step, host, status, message FROM cloud_pod_events WHERE subscription_id = %s '
                        'ORDER BY id', (pod['id'],))
    assert [(e['step'], e['status']) for e in events] == [
        ('worker', 'claimed'), ('Create the container', 'started'), ('Create the container', 'changed'),
        ('Report the pod', 'started'), ('Report the pod', 'ok'), ('worker', 'completed')]
    assert events[2]['message'] == 'created with token %s and %s' % (MASK, MASK)
    stored = json.dumps([dict(e) for e in rows(pool, 'SELECT * FROM cloud_pod_events')], default=str)
    assert PVE_SECRET not in stored and TOKEN not in stored


def test_worker_fails_a_failed_job_with_the_tasks_message(queue, awx):
    settings, repository, pool, _env = queue
    pod = order(repository)
    events = task_events('Check the order', 'The plan exists', 'runner_on_failed',
                         {'failed': True, 'msg': 'unknown plan CLOUD_POD_HUGE'}, action='ansible.builtin.assert')
    with Driver(awx, events, final='failed'):
        assert Worker(settings, worker_id='awx-w1', repository=repository).run_one()
    task = rows(pool, 'SELECT status, attempts, last_error FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s',
                (pod['id'],))[0]
    assert (task['status'], task['attempts']) == ('FAILED', 1)
    assert task['last_error'] == "Step 'The plan exists' failed: unknown plan CLOUD_POD_HUGE"


def test_worker_cancels_the_awx_job_when_its_lease_is_lost(queue, awx):
    settings, repository, pool, _env = queue
    pod = order(repository)
    with Driver(awx, task_events('Provision a pod', 'Create the container', 'runner_on_ok', {}),
                final='await-cancel') as driver:
        def steal(event):
            if event['status'] == 'ok':  # the job runs: another worker takes the task over
                rows(pool, "UPDATE cloud_pod_provisioning_tasks SET worker_id = 'thief' WHERE subscription_id = %s "
                           "RETURNING id", (pod['id'],))
        worker = Worker(settings, worker_id='awx-w1', repository=repository)
        original = worker.executor.run
        worker.executor.run = lambda request, on_event, cancel: original(
            request, lambda event: (on_event(event), steal(event)), cancel)
        assert worker.run_one()
    posts = [r for r in awx.requests() if r['method'] == 'POST' and r['path'] == '/api/v2/jobs/%d/cancel/' % driver.job]
    assert len(posts) == 1
    assert awx.ok('GET', '/api/v2/jobs/%d/' % driver.job)['status'] == 'canceled'
    task = rows(pool, 'SELECT status, worker_id FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s',
                (pod['id'],))[0]
    assert (task['status'], task['worker_id']) == ('RUNNING', 'thief')  # untouched by the worker that lost it


def test_worker_with_expired_token_fails_the_task_at_once(queue, awx):
    settings, repository, pool, env = queue
    pod = order(repository)
    expired = Settings.from_env(dict(env, CLOUDPODS_AWX_TOKEN='expired-token-b81c66e2'), worker=True)
    assert Worker(expired, worker_id='awx-w1', repository=repository).run_one()
    task = rows(pool, 'SELECT status, attempts, last_error FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s',
                (pod['id'],))[0]
    assert (task['status'], task['attempts']) == ('FAILED', 1)
    assert 'refused CLOUDPODS_AWX_TOKEN (401' in task['last_error'] and 'expired-token' not in task['last_error']


def test_worker_retries_when_awx_is_back(queue, awx):
    settings, repository, pool, _env = queue
    pod = order(repository)
    worker = Worker(settings, worker_id='awx-w1', repository=repository)
    worker.executor.client.template('CREATE_CONTAINER')
    awx.stop()
    try:
        assert worker.run_one()
    finally:
        awx.start()
    task = rows(pool, 'SELECT status, attempts, last_error FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s',
                (pod['id'],))[0]
    assert (task['status'], task['attempts']) == ('PENDING', 1) and 'does not answer' in task['last_error']
    with Driver(awx, SUCCESS_EVENTS, ARTIFACTS):
        assert worker.run_one()
    task = rows(pool, 'SELECT status, attempts FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s',
                (pod['id'],))[0]
    assert (task['status'], task['attempts']) == ('COMPLETED', 2)
    retry = rows(pool, "SELECT message FROM cloud_pod_events WHERE subscription_id = %s AND status = 'retry'",
                 (pod['id'],))
    assert len(retry) == 1 and 'does not answer' in retry[0]['message'] and TOKEN not in retry[0]['message']


def test_worker_refuses_to_start_without_a_template_or_with_a_bad_token(lab_env, awx):
    awx.ok('DELETE', '/api/v2/job_templates/%d/' % awx.templates['TERMINATE'])
    env = worker_environment({}, lab_env['DATABASE_URL'])
    env.update(awx_env(awx, DATABASE_URL=lab_env['DATABASE_URL']))
    for name in ('PROXMOX_API_URL', 'PROXMOX_API_TOKEN_ID', 'PROXMOX_NODE_NAME'):
        env.pop(name, None)
    done = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'worker', '--once'], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "has no job template 'Cloud Pods: deprovision' (TERMINATE)" in lines[0]
    env['CLOUDPODS_AWX_TOKEN'] = 'expired-token-b81c66e2'
    done = subprocess.run([sys.executable, '-m', 'runner_api.cli', 'worker', '--once'], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and 'refused CLOUDPODS_AWX_TOKEN (401' in done.stderr, done.stderr
    assert 'expired-token' not in done.stderr


def test_https_awx_is_verified_with_the_ca_file(awx, tmp_path):
    cert, key = tmp_path / 'cert.pem', tmp_path / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                    '-keyout', str(key), '-out', str(cert), '-days', '1', '-subj', '/CN=localhost',
                    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], check=True, capture_output=True)
    server = create_server(dict(awx.config, listen_port=free_port(), tls_cert=str(cert), tls_key=str(key)))
    threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    url = 'https://127.0.0.1:%d' % server.server_address[1]
    try:
        # Connected and the token accepted: what is left is the templates this empty AWX lacks.
        for extra in ({'CLOUDPODS_AWX_CA_FILE': str(cert)}, {'CLOUDPODS_AWX_VERIFY_SSL': 'false'}):
            problems = awx_executor.startup_problems(awx_settings(awx, CLOUDPODS_AWX_URL=url, **extra))
            assert len(problems) == 1 and "has no job template 'Cloud Pods: backup_now' (BACKUP), " in problems[0]
        problems = awx_executor.startup_problems(awx_settings(awx, CLOUDPODS_AWX_URL=url))
        assert len(problems) == 1 and 'does not answer' in problems[0] and 'CERTIFICATE_VERIFY_FAILED' in problems[0]
    finally:
        server.shutdown()
        server.server_close()
