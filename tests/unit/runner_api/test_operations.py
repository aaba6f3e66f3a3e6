# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api/operations.py, the registry of operations, and what reads it: the executor, the
worker, the repository's status rules, the progress view and the admin restart (no database)."""

import os
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api import executors, operations, views  # noqa: E402
from runner_api.app import create_app  # noqa: E402
from runner_api.executors import LocalAnsibleRunner, RunRequest, RunResult, write_untrusted_vars  # noqa: E402
from runner_api.repository import Repository  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from runner_api.worker import TaskEvents, Worker, extra_vars_for  # noqa: E402

PLAYBOOK_DIR = Path(ROOT) / 'playbooks'
MIGRATIONS = sorted((Path(ROOT) / 'runner_api' / 'migrations').glob('*.sql'))
# Playbooks the other parts of issue 12 add (ssh_keys.yml: access; https.yml: HTTPS); until their
# branches are merged this branch has their operations without the files.
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYaY9Fc2WAspbusY48TMbpXKmmrNgmMZLkJq2wNBXOa jane@laptop'
PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
PAYLOAD = "{{ lookup('ansible.builtin.pipe', 'id') }}"


class Unsafe(str):
    """A string loaded from a ``!unsafe`` node."""

    def __eq__(self, other):
        return isinstance(other, Unsafe) and str.__eq__(self, other)

    __hash__ = str.__hash__


class UnsafeTagLoader(yaml.SafeLoader):
    """Loads ``!unsafe`` strings as ``Unsafe``: a plain string would not compare equal."""


UnsafeTagLoader.add_constructor('!unsafe', lambda loader, node: Unsafe(loader.construct_scalar(node)))


def _row(task_type, domain='shop.example.org', **extra):
    row = {'id': 7, 'subscription_id': 'sub-1', 'task_type': task_type, 'hostname': 'cp-0123456789',
           'plan_code': 'CLOUD_POD_STARTER', 'domain': domain, 'customer_email': 'jane@example.org',
           'attempts': 1, 'max_attempts': 5, 'worker_id': 'w', 'vmid': None, 'node': None, 'status': 'RUNNING',
           'last_error': None}
    row.update(extra)
    return row


def _task_type_check():
    """The task types the CHECK constraint allows, as the last migration that sets it has it."""
    allowed = None
    for migration in MIGRATIONS:
        for match in re.finditer(r"CHECK \(task_type IN \(([^)]*)\)\)", migration.read_text()):
            allowed = set(re.findall(r"'([A-Z_]+)'", match.group(1)))
    assert allowed, 'no task_type CHECK constraint found in the migrations'
    return allowed


# ---------------------------------------------------------------- the registry itself

def test_the_operations_are_the_fourteen_with_a_playbook():
    assert sorted(operations.OPERATIONS) == ['BACKUP', 'BACKUP_CATALOG', 'CHANGE_PLAN', 'CREATE_CONTAINER', 'ISSUE_HTTPS', 'REINSTALL',
                                             'REPAIR', 'RESTART', 'RESTORE', 'RESUME', 'SET_SSH_KEYS', 'SUSPEND',
                                             'TERMINATE', 'TRANSFER_QUOTA']
    for name, operation in operations.OPERATIONS.items():
        assert operation.name == name
        assert (PLAYBOOK_DIR / operation.playbook).is_file(), (name, operation.playbook)
    assert operations.background_types() == ('ISSUE_HTTPS',) == (operations.HTTPS_RETRY,)


def test_the_executor_reads_its_playbooks_from_the_registry():
    assert dict(executors.PLAYBOOKS) == {'CREATE_CONTAINER': 'provision.yml', 'RESTART': 'restart.yml',
                                         'TERMINATE': 'deprovision.yml', 'REPAIR': 'repair.yml',
                                         'SET_SSH_KEYS': 'ssh_keys.yml', 'ISSUE_HTTPS': 'https.yml',
                                         'SUSPEND': 'suspend.yml', 'RESUME': 'resume.yml',
                                         'CHANGE_PLAN': 'change_plan.yml', 'BACKUP': 'backup_now.yml',
                                         'RESTORE': 'restore.yml', 'REINSTALL': 'reinstall.yml',
                                         'TRANSFER_QUOTA': 'transfer_quota.yml', 'BACKUP_CATALOG': 'backup_catalog.yml'}
    with pytest.raises(TypeError):
        executors.PLAYBOOKS['BACKUP'] = 'backups.yml'  # read-only: the registry is the one place


def test_queued_operations_are_task_types_the_migration_allows():
    allowed = _task_type_check()
    for name, operation in operations.OPERATIONS.items():
        if operation.queued:
            assert name in allowed, '%s is queued but the migrations do not allow it: add a migration' % name
    # Migration 0004 allows the whole lifecycle, also the operations other parts register later.
    assert {'SUSPEND', 'RESUME', 'TERMINATE', 'REPAIR', 'CHANGE_PLAN', 'REINSTALL', 'BACKUP', 'RESTORE'} <= allowed
    assert operations.get('REPAIR').queued and operations.get('REPAIR').roles == ('admin',)


def test_extra_vars_per_operation():
    assert extra_vars_for(_row('CREATE_CONTAINER')) == {
        'pod': 'cp-0123456789', 'plan': 'CLOUD_POD_STARTER', 'domain': 'shop.example.org',
        'customer_email': 'jane@example.org', 'ssh_public_keys': []}
    assert extra_vars_for(_row('CREATE_CONTAINER', ssh_public_keys=[KEY]))['ssh_public_keys'] == [KEY]
    # The keys travel on the subscription (claim returns them with the task).
    assert extra_vars_for(_row('SET_SSH_KEYS', ssh_public_keys=[KEY])) == {
        'pod': 'cp-0123456789', 'ssh_public_keys': [KEY]}
    assert extra_vars_for(_row('SET_SSH_KEYS', ssh_public_keys=[])) == {'pod': 'cp-0123456789', 'ssh_public_keys': []}
    assert extra_vars_for(_row('ISSUE_HTTPS')) == {'pod': 'cp-0123456789'}
    # Repair converges the subscription's keys when it has the row; without them it leaves the pod's.
    assert extra_vars_for(_row('REPAIR', ssh_public_keys=[KEY])) == {'pod': 'cp-0123456789', 'ssh_public_keys': [KEY]}
    assert extra_vars_for(_row('CREATE_CONTAINER', domain=None))['domain'] == ''
    assert extra_vars_for(_row('RESTART')) == {'pod': 'cp-0123456789'}
    assert extra_vars_for(_row('TERMINATE')) == {'pod': 'cp-0123456789', 'domain': 'shop.example.org'}
    assert extra_vars_for(_row('TERMINATE', domain=None)) == {'pod': 'cp-0123456789'}
    # Repair reads plan and domain from the container: an extra var plan would be a resize.
    assert extra_vars_for(_row('REPAIR')) == {'pod': 'cp-0123456789'}
    # A SUSPENDED pod is suspended again at the end of its repair.
    assert extra_vars_for(_row('REPAIR', pod_status='SUSPENDED')) == {'pod': 'cp-0123456789', 'suspended': True}
    assert extra_vars_for(_row('REPAIR', pod_status='ACTIVE')) == {'pod': 'cp-0123456789'}
    assert extra_vars_for(_row('SUSPEND')) == extra_vars_for(_row('RESUME')) == {'pod': 'cp-0123456789'}
    # The new plan is the task's own argument (params, written with the task), not the pod's plan_code.
    assert extra_vars_for(_row('CHANGE_PLAN', params={'plan': 'CLOUD_POD_PREMIUM'})) == {
        'pod': 'cp-0123456789', 'plan': 'CLOUD_POD_PREMIUM'}
    assert operations.plan_after(_row('CHANGE_PLAN', params={'plan': 'CLOUD_POD_PREMIUM'})) == 'CLOUD_POD_PREMIUM'
    assert operations.plan_after(_row('REPAIR', params={'plan': 'CLOUD_POD_PREMIUM'})) is None
    assert extra_vars_for(_row('BACKUP')) == {'pod': 'cp-0123456789'}
    # The catalog is no task (no pod): the worker runs it for every pod, without extra vars.
    assert extra_vars_for(_row('BACKUP_CATALOG')) == {} and not operations.get('BACKUP_CATALOG').queued
    # Restore: the archive is the task's argument; plan, domain and the subscription's keys win over the
    # archive's (a key removed since that backup does not come back).
    archive = 'vzdump-lxc-101-2026_11_30-03_00_02.tar.zst'
    assert extra_vars_for(_row('RESTORE', params={'archive': archive}, ssh_public_keys=[KEY])) == {
        'pod': 'cp-0123456789', 'archive': archive, 'plan': 'CLOUD_POD_STARTER', 'domain': 'shop.example.org',
        'ssh_public_keys': [KEY]}
    assert extra_vars_for(_row('REINSTALL', domain=None)) == {
        'pod': 'cp-0123456789', 'plan': 'CLOUD_POD_STARTER', 'domain': '', 'ssh_public_keys': []}


def _unsafe(value):
    if isinstance(value, list):
        return [_unsafe(item) for item in value]
    return Unsafe(value)


def test_every_operations_extra_vars_are_written_unsafe(tmp_path):
    for name in operations.OPERATIONS:
        variables = extra_vars_for(_row(name, domain=PAYLOAD, hostname=PAYLOAD, customer_email=PAYLOAD,
                                        plan_code=PAYLOAD, ssh_public_keys=[KEY + ' ' + PAYLOAD, KEY],
                                        params={'plan': PAYLOAD, 'archive': PAYLOAD}))
        path = write_untrusted_vars(str(tmp_path / (name + '.yml')), variables)
        with open(path, encoding='utf-8') as handle:
            loaded = yaml.load(handle, Loader=UnsafeTagLoader)  # noqa: S506 (a SafeLoader)
        assert loaded == {Unsafe(key): _unsafe(value) for key, value in variables.items()}, name
        if 'ssh_public_keys' in variables:  # every key line is an !unsafe string of its own
            assert loaded[Unsafe('ssh_public_keys')] == [Unsafe(KEY + ' ' + PAYLOAD), Unsafe(KEY)], name


def test_statuses_messages_steps_and_roles():
    create, restart, terminate, repair = (operations.get(name) for name in
                                          ('CREATE_CONTAINER', 'RESTART', 'TERMINATE', 'REPAIR'))
    assert (create.success_status, create.failure_status) == ('ACTIVE', 'FAILED')
    assert (restart.success_status, restart.failure_status) == (None, None)
    assert (terminate.success_status, terminate.failure_status) == ('TERMINATED', None)
    assert (repair.success_status, repair.failure_status) == (None, None)
    assert create.success_message == 'pod is ACTIVE' and restart.success_message == 'RESTART done'
    assert [role for role, _label in create.progress_steps] == [
        'pod_container', 'pod_firewall', 'pod_first_boot', 'pod_dns', 'pod_https', 'pod_backup', 'pod_mail']
    assert restart.progress_steps == terminate.progress_steps == repair.progress_steps == ()
    assert restart.roles == ('admin',) and restart.start_states == ('ACTIVE',)
    assert restart.not_startable('FAILED') == 'Only an ACTIVE pod can be restarted; this one is FAILED.'
    suspend, resume = operations.get('SUSPEND'), operations.get('RESUME')
    assert (suspend.start_states, suspend.success_status, suspend.failure_status) == (('ACTIVE',), 'SUSPENDED', None)
    assert (resume.start_states, resume.success_status, resume.failure_status) == (('SUSPENDED',), 'ACTIVE', None)
    assert suspend.roles == resume.roles == ('service', 'admin')
    assert terminate.roles == ('customer', 'service', 'admin') and repair.roles == ('admin',)
    assert terminate.start_states == repair.start_states == ('PROVISIONING', 'ACTIVE', 'SUSPENDED', 'FAILED')


def test_progress_steps_are_roles_that_exist():
    for operation in operations.OPERATIONS.values():
        for role, label in operation.progress_steps:
            assert (Path(ROOT) / 'roles' / role).is_dir(), (operation.name, role)
            assert label


# ---------------------------------------------------------------- an unknown operation

@pytest.mark.parametrize('name', ['SNAPSHOT', 'MIGRATE', 'restart', '', None])
def test_an_unknown_operation_is_refused_with_a_clear_error(name):
    assert operations.find(name) is None
    with pytest.raises(operations.UnknownOperation) as error:
        extra_vars_for(_row(name))
    assert 'unknown operation' in str(error.value) and 'runner_api/operations.py' in str(error.value)
    assert 'CREATE_CONTAINER' in str(error.value)  # names what there is
    assert operations.success_status(name) is None and operations.failure_status(name) is None
    assert operations.progress_steps(name) == ()


def test_the_executor_refuses_an_unknown_operation_without_retries(tmp_path):
    settings = Settings(database_url='postgresql://unused@127.0.0.1/unused', plans_file=Path('unused'),
                        playbook_dir=PLAYBOOK_DIR, run_dir=tmp_path / 'runs')
    result = LocalAnsibleRunner(settings).run(RunRequest('SNAPSHOT', {'pod': 'cp-0123456789'}), lambda event: None)
    assert (result.status, result.retryable) == ('error', False)
    assert "unknown operation 'SNAPSHOT'" in result.error
    assert not (tmp_path / 'runs').exists() or list((tmp_path / 'runs').iterdir()) == []


class FakeQueue(object):
    """The worker's side of the repository, recording what the worker writes."""

    def __init__(self):
        self.events = []
        self.failed = []
        self.completed = []

    def heartbeat(self, task, lease_seconds):
        return True

    def add_event(self, task, step, status, host=None, duration_ms=None, message=None):
        self.events.append((step, status, message))

    def fail_attempt(self, task, error, retry_delay, give_up=False):
        self.failed.append((error, give_up))
        return 'FAILED' if give_up else 'PENDING'

    def complete(self, task, stats):
        self.completed.append(stats)
        return True


class RecordingExecutor(object):
    def __init__(self, result=None):
        self.requests = []
        self.result = result or RunResult('successful', 0, {'vmid': '101', 'ip': '10.0.0.5'})

    def run(self, request, on_event, cancel=lambda: False):
        self.requests.append(request)
        return self.result


def _worker(executor):
    settings = Settings(database_url='postgresql://unused@127.0.0.1/unused', plans_file=Path('unused'),
                        playbook_dir=PLAYBOOK_DIR, heartbeat_seconds=0.05)
    worker = Worker(settings, worker_id='w', executor=executor, repository=FakeQueue())
    return worker


def _execute(worker, task):
    worker.events = TaskEvents(worker, task)
    worker._execute(task)  # pylint: disable=protected-access
    return worker.repository


def test_the_worker_fails_a_task_of_an_unknown_type_at_once():
    executor = RecordingExecutor()
    repository = _execute(_worker(executor), _row('SNAPSHOT'))
    assert executor.requests == []  # nothing ran
    assert len(repository.failed) == 1
    error, give_up = repository.failed[0]
    assert give_up is True and "unknown operation 'SNAPSHOT'" in error
    assert repository.events[-1][:2] == ('worker', 'failed')


@pytest.mark.parametrize('task_type,message', [
    ('CREATE_CONTAINER', 'pod is ACTIVE: vmid 101, ip 10.0.0.5'), ('RESTART', 'RESTART done: vmid 101, ip 10.0.0.5'),
])
def test_the_worker_runs_the_registry_s_request_and_message(task_type, message):
    executor = RecordingExecutor()
    repository = _execute(_worker(executor), _row(task_type))
    assert [(request.operation, request.extra_vars) for request in executor.requests] == [
        (task_type, extra_vars_for(_row(task_type)))]
    assert repository.completed == [{'vmid': 101, 'ip': '10.0.0.5'}]
    assert repository.events[-1] == ('worker', 'completed', message)


# ---------------------------------------------------------------- the repository's status rules

class FakeConnection(object):
    def __init__(self, returning=None):
        self.statements = []
        self.returning = returning

    def execute(self, sql, params=()):
        self.statements.append((' '.join(sql.split()), params))
        return self

    def fetchone(self):
        return self.returning

    def transaction(self):
        return self

    def connection(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize('task_type,status', [
    ('CREATE_CONTAINER', 'FAILED'), ('RESTART', None), ('TERMINATE', None), ('SUSPEND', None)])
def test_a_task_that_failed_for_good_sets_its_operation_s_failure_status(task_type, status):
    connection = FakeConnection()
    Repository._fail_subscription(connection, {  # pylint: disable=protected-access
        'task_type': task_type, 'last_error': 'boom', 'subscription_id': 'sub-1'})
    [(sql, params)] = connection.statements
    assert 'UPDATE cloud_pod_subscriptions SET status = coalesce(%s, status), last_error = %s' in sql
    assert params == (status, 'boom', 'sub-1')


@pytest.mark.parametrize('task_type,status', [
    ('CREATE_CONTAINER', 'ACTIVE'), ('RESTART', None), ('TERMINATE', 'TERMINATED'), ('REPAIR', None),
    ('SUSPEND', 'SUSPENDED'), ('RESUME', 'ACTIVE')])
def test_a_completed_task_sets_its_operation_s_success_status(task_type, status):
    connection = FakeConnection(returning={'id': 7, 'status': status or 'ACTIVE', 'https_status': None,
                                           'https_pending_runs': 0})
    assert Repository(connection).complete(_row(task_type), {'vmid': 101}) is True
    [update] = [statement for statement in connection.statements if 'UPDATE cloud_pod_subscriptions' in statement[0]]
    assert update[1]['status'] == status and update[1]['vmid'] == 101


# ---------------------------------------------------------------- progress and the admin restart

def test_only_operations_with_steps_show_progress_steps():
    events = [{'attempt': 1, 'step': 'pod_container : Converge', 'status': 'changed'}]
    for name, operation in operations.OPERATIONS.items():
        view = views.progress({'status': 'RUNNING', 'attempts': 1, 'task_type': name}, events)
        assert [step['step'] for step in view['steps']] == [role for role, _label in operation.progress_steps]
    unknown = views.progress({'status': 'COMPLETED', 'attempts': 1, 'task_type': 'SUSPEND'}, events)
    assert unknown['steps'] == [] and unknown['percent'] == 100


class AdminRepository(object):
    def __init__(self, status):
        self.pod = {'id': 'sub-1', 'hostname': 'cp-0123456789', 'plan_code': 'CLOUD_POD_STARTER', 'status': status}
        self.enqueued = []

    def token_by_secret(self, token):
        return {'id': 1, 'name': 'ops', 'role': 'admin', 'customer_id': None} if token == 'admin-token' else None

    def get_subscription(self, subscription_id):
        return self.pod

    def enqueue_operation(self, subscription_id, task_type, max_attempts):
        self.enqueued.append(task_type)
        return {'id': 9, 'subscription_id': subscription_id, 'task_type': task_type, 'status': 'PENDING',
                'attempts': 0, 'max_attempts': max_attempts, 'worker_id': None, 'lease_expires_at': None,
                'last_error': None, 'run_at': None, 'created_at': None, 'started_at': None, 'finished_at': None}


@pytest.mark.parametrize('status,code', [('ACTIVE', 202), ('PROVISIONING', 409), ('FAILED', 409),
                                         ('SUSPENDED', 409), ('TERMINATED', 409)])
def test_the_admin_restart_starts_only_from_the_registry_s_states(status, code):
    settings = Settings.from_env({'DATABASE_URL': 'postgresql://cloudpods:pw@127.0.0.1:5432/cloudpods',
                                  'CLOUDPODS_PLANS_FILE': PLANS_FILE})
    repository = AdminRepository(status)
    client = create_app(settings, repository).test_client()
    response = client.post('/api/cloud-pods/admin/00000000-0000-4000-8000-000000000000/restart',
                           headers={'Authorization': 'Bearer admin-token'})
    assert response.status_code == code, response.get_json()
    if code == 202:
        assert repository.enqueued == ['RESTART'] and response.get_json()['type'] == 'RESTART'
    else:
        assert repository.enqueued == []
        assert response.get_json()['detail'] == 'Only an ACTIVE pod can be restarted; this one is %s.' % status
