# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pod's lifecycle through the API (issue 13): suspend, resume, change plan, backups (list, now),
restore, reinstall, terminate, the admin's repair and retry of a failed order, the worker's periodic
backup catalog, and cursor paging of the long lists.

The first part calls the API in process against a real PostgreSQL (a database of its own): who may
ask, from which states, and that every refusal writes nothing. The second part runs the API under
gunicorn and a worker (the real playbooks) against the shared simulator lab, as mPanel calls it.
"""

import json
import os
import re
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

from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, scratch_database, start_worker, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from labenv import free_port  # noqa: E402
from test_runner_api import ALICE, BOB, Api as BaseApi  # noqa: E402

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
VZDUMP = os.path.join(ROOT, 'tests', 'lab', 'bin', 'vzdump')
PCT = os.path.join(ROOT, 'tests', 'lab', 'bin', 'pct')
ARCHIVE = 'vzdump-lxc-%d-2026_11_30-03_00_02.tar.zst'
NOWHERE = '00000000-0000-4000-8000-000000000000'


@pytest.fixture(scope='module')
def api(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        settings = Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE})
        pool = open_pool(settings, name='test-lifecycle', min_size=1, max_size=4)
        repository = Repository(pool)
        tokens = {}
        for name, role, customer in (('alice', 'customer', ALICE), ('bob', 'customer', BOB),
                                     ('service', 'service', None), ('admin', 'admin', None)):
            tokens[name] = new_token()
            repository.create_token(name, role, customer, tokens[name])
        yield Api(create_app(settings, repository).test_client(), repository, tokens, OpenApiChecker())
        pool.close()


class Api(BaseApi):
    """test_runner_api's client (token, X-Customer-Id, the OpenAPI check of every answer) and
    what these tests need besides: pods in a given state, SQL, refusals that write nothing."""

    def pod(self, customer=ALICE, status='ACTIVE', domain=None):
        """A pod of ``customer`` in ``status`` with no open task."""
        row, _created = self.repository.create_order({
            'customer_id': customer, 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER',
            'domain': domain, 'hostname': 'cp-' + uuid.uuid4().hex[:10], 'idempotency_key': None,
            'request_digest': 'x'}, 3)
        self.sql("UPDATE cloud_pod_provisioning_tasks SET status = %s, finished_at = now() WHERE subscription_id = %s",
                 ('FAILED' if status == 'FAILED' else 'COMPLETED', row['id']))
        self.sql('UPDATE cloud_pod_subscriptions SET status = %s WHERE id = %s', (status, row['id']))
        return str(row['id'])

    def sql(self, statement, params=()):
        with self.repository.pool.connection() as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else None

    def snapshot(self):
        """Everything a refusal must leave as it was."""
        return json.dumps([self.sql('SELECT * FROM cloud_pod_subscriptions ORDER BY id'),
                           self.sql('SELECT * FROM cloud_pod_provisioning_tasks ORDER BY id'),
                           self.sql('SELECT * FROM cloud_pod_events ORDER BY id')], default=str)

    def refused(self, status, slug, method, path, who, customer=None, **kwargs):
        before = self.snapshot()
        response = self.call(method, path, who, customer, **kwargs)
        assert response.status_code == status, response.get_json()
        assert response.get_json()['type'].endswith('/' + slug), response.get_json()
        assert self.snapshot() == before, 'a refusal wrote something'
        return response.get_json()

    def accepted(self, method, path, who, customer=None, **kwargs):
        response = self.call(method, path, who, customer, **kwargs)
        assert response.status_code == 202, response.get_json()
        task = response.get_json()
        assert response.headers['Location'] == '/api/cloud-pods/' + task['pod_id']
        return task


def open_tasks(api, pod):
    return [row['task_type'] for row in api.sql("SELECT task_type FROM cloud_pod_provisioning_tasks "
                                                "WHERE subscription_id = %s AND status = 'PENDING'", (pod,))]


# ---------------------------------------------------------------- who may ask, from which states

def test_suspend_is_for_mpanel_and_admins_with_a_reason(api):
    pod = api.pod()
    path = '/api/cloud-pods/%s/suspend' % pod
    body = {'reason': 'non-payment'}
    api.refused(401, 'unauthorized', 'POST', path, None, json=body)
    api.refused(403, 'forbidden', 'POST', path, 'alice', json=body)  # a customer cannot suspend itself
    api.refused(404, 'unknown-pod', 'POST', path, 'service', BOB, json=body)  # another customer's pod
    api.refused(400, 'customer-required', 'POST', path, 'service', json=body)
    api.refused(404, 'unknown-pod', 'POST', '/api/cloud-pods/%s/suspend' % NOWHERE, 'service', ALICE, json=body)
    for bad in ({}, {'reason': 'late'}, {'reason': 'abuse', 'extra': 1}, {'reason': None},
                {'reason': 'abuse', 'ssh_public_keys': []}):
        problem = api.refused(422, 'invalid-suspend-request', 'POST', path, 'service', ALICE, json=bad)
        assert problem['errors']
    api.refused(415, 'unsupported-media-type', 'POST', path, 'service', ALICE, data='reason=abuse')
    task = api.accepted('POST', path, 'service', ALICE, json=body)
    assert (task['type'], task['status'], task['pod_id']) == ('SUSPEND', 'PENDING', pod)
    detail = api.call('GET', '/api/cloud-pods/' + pod, 'service', ALICE).get_json()
    assert detail['suspension'] == {'reason': 'non-payment', 'since': None}
    assert detail['progress']['operation'] == 'SUSPEND'
    # A second operation while this one is open: 409 naming it.
    problem = api.refused(409, 'operation-in-progress', 'POST', path, 'admin', json={'reason': 'abuse'})
    assert (problem['running_operation'], problem['running_task_id']) == ('SUSPEND', task['id'])
    assert 'SUSPEND (task %d) is PENDING' % task['id'] in problem['detail']
    problem = api.refused(409, 'operation-in-progress', 'POST', '/api/cloud-pods/%s/terminate' % pod, 'alice')
    assert problem['running_operation'] == 'SUSPEND'
    assert api.sql('SELECT suspend_reason FROM cloud_pod_subscriptions WHERE id = %s', (pod,))[0] == \
        {'suspend_reason': 'non-payment'}


@pytest.mark.parametrize('status', ['PROVISIONING', 'FAILED', 'SUSPENDED', 'TERMINATED'])
def test_only_an_active_pod_is_suspended(api, status):
    pod = api.pod(status=status)
    problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/suspend' % pod, 'service', ALICE,
                          json={'reason': 'abuse'})
    assert problem['pod_status'] == status
    assert problem['detail'] == 'Only an ACTIVE pod can be suspended; this one is %s.' % status


def test_resume_is_for_mpanel_and_admins_from_suspended(api):
    pod = api.pod(status='SUSPENDED')
    api.sql("UPDATE cloud_pod_subscriptions SET suspend_reason = 'abuse', suspended_at = now() WHERE id = %s", (pod,))
    path = '/api/cloud-pods/%s/resume' % pod
    api.refused(403, 'forbidden', 'POST', path, 'alice')
    api.refused(404, 'unknown-pod', 'POST', path, 'service', BOB)
    active = api.pod()
    problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/resume' % active, 'service', ALICE)
    assert problem['pod_status'] == 'ACTIVE' and 'this one is ACTIVE' in problem['detail']
    task = api.accepted('POST', path, 'admin')
    assert task['type'] == 'RESUME'
    assert api.call('GET', '/api/cloud-pods/' + pod, 'alice').get_json()['suspension']['reason'] == 'abuse'


def test_terminate_own_pods_from_any_state_but_terminated(api):
    for status in ('ACTIVE', 'SUSPENDED', 'FAILED'):
        pod = api.pod(status=status)
        api.refused(404, 'unknown-pod', 'POST', '/api/cloud-pods/%s/terminate' % pod, 'bob')
        api.refused(404, 'unknown-pod', 'POST', '/api/cloud-pods/%s/terminate' % pod, 'service', BOB)
        assert api.accepted('POST', '/api/cloud-pods/%s/terminate' % pod, 'alice')['type'] == 'TERMINATE'
    gone = api.pod(status='TERMINATED')
    problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/terminate' % gone, 'service', ALICE)
    assert problem['pod_status'] == 'TERMINATED'
    # A PROVISIONING pod has its create open: 409 naming it.
    row, _created = api.repository.create_order({
        'customer_id': ALICE, 'customer_email': 'jane@example.org', 'plan_code': 'CLOUD_POD_STARTER', 'domain': None,
        'hostname': 'cp-' + uuid.uuid4().hex[:10], 'idempotency_key': None, 'request_digest': 'x'}, 3)
    problem = api.refused(409, 'operation-in-progress', 'POST', '/api/cloud-pods/%s/terminate' % row['id'], 'alice')
    assert problem['running_operation'] == 'CREATE_CONTAINER'


def test_change_plan_for_everyone_who_owns_the_pod_and_never_a_shrinking_disk(api):
    pod = api.pod()  # CLOUD_POD_STARTER: 30 GiB
    path = '/api/cloud-pods/%s/change-plan' % pod
    up = {'plan_code': 'CLOUD_POD_PREMIUM'}
    api.refused(401, 'unauthorized', 'POST', path, None, json=up)
    api.refused(404, 'unknown-pod', 'POST', path, 'bob', json=up)
    api.refused(404, 'unknown-pod', 'POST', path, 'service', BOB, json=up)
    for bad in ({}, {'plan_code': 'CLOUD_POD_GOLD'}, {'plan_code': 'CLOUD_POD_PREMIUM', 'extra': 1}, {'plan_code': 7}):
        assert api.refused(422, 'invalid-plan-change-request', 'POST', path, 'alice', json=bad)['errors']
    api.refused(415, 'unsupported-media-type', 'POST', path, 'alice', data='plan_code=CLOUD_POD_PREMIUM')
    problem = api.refused(409, 'same-plan', 'POST', path, 'alice', json={'plan_code': 'CLOUD_POD_STARTER'})
    assert problem['plan_code'] == 'CLOUD_POD_STARTER'
    # Student has a 2 GiB disk: Proxmox VE cannot shrink 30 GiB to it, refused before anything is written.
    problem = api.refused(409, 'disk-would-shrink', 'POST', path, 'service', ALICE, json={'plan_code': 'CLOUD_POD_STUDENT'})
    assert 'Plan CLOUD_POD_STUDENT has a 2 GiB disk and the pod has 30 GiB' in problem['detail']
    for status in ('PROVISIONING', 'FAILED', 'TERMINATED'):
        other = api.pod(status=status)
        problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/change-plan' % other, 'alice',
                              json=up)
        assert problem['pod_status'] == status
        assert problem['detail'] == ('Only an ACTIVE or SUSPENDED pod can be moved to another plan; this one is %s.'
                                     % status)
    task = api.accepted('POST', path, 'alice', json=up)
    assert (task['type'], task['params'], task['plan_code']) == ('CHANGE_PLAN', {'plan': 'CLOUD_POD_PREMIUM'},
                                                                 'CLOUD_POD_STARTER')  # the pod's plan until it ran
    assert api.refused(409, 'operation-in-progress', 'POST', path, 'admin', json=up)['running_operation'] == 'CHANGE_PLAN'
    suspended = api.pod(status='SUSPENDED')
    assert api.accepted('POST', '/api/cloud-pods/%s/change-plan' % suspended, 'admin', json=up)['type'] == 'CHANGE_PLAN'


def test_a_terminated_pods_domain_can_be_ordered_again(api):
    domain = 'again-%s.example.com' % uuid.uuid4().hex[:6]
    pod = api.pod(domain=domain)
    order = {'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org', 'domain': domain}
    api.refused(409, 'domain-taken', 'POST', '/api/cloud-pods/order', 'alice', json=order)
    api.sql("UPDATE cloud_pod_subscriptions SET status = 'TERMINATED' WHERE id = %s", (pod,))
    assert api.call('POST', '/api/cloud-pods/order', 'alice', json=order).status_code == 202


def listed(api, pod, *names, when='2026-11-30 03:00:10+00'):
    """The pod's archives as the worker would have stored them (migration 0006)."""
    backups = [{'name': name, 'created_at': '2026-11-30T03:00:10+00:00', 'size_bytes': 1024, 'kind': 'scheduled'}
               for name in names]
    api.sql('UPDATE cloud_pod_subscriptions SET backups = %s::jsonb, backups_listed_at = %s WHERE id = %s',
            (json.dumps(backups), when, pod))


def test_backups_list_and_backup_now_for_everyone_who_owns_the_pod(api):
    pod = api.pod()
    path = '/api/cloud-pods/%s/backups' % pod
    # Never listed yet: an empty list and listed_at null.
    assert api.call('GET', path, 'alice').get_json() == {'pod_id': pod, 'listed_at': None, 'backups': []}
    listed(api, pod, ARCHIVE % 101)
    for who, customer in (('alice', None), ('service', ALICE), ('admin', None)):
        body = api.call('GET', path, who, customer).get_json()
        assert body['listed_at'].startswith('2026-11-30T03:00:10') and [b['name'] for b in body['backups']] == [
            ARCHIVE % 101]
    assert api.call('GET', path, 'bob').status_code == 404
    assert api.call('GET', path, 'service', BOB).status_code == 404
    api.refused(401, 'unauthorized', 'POST', path, None)
    api.refused(404, 'unknown-pod', 'POST', path, 'bob')
    for status in ('PROVISIONING', 'FAILED', 'TERMINATED'):
        other = api.pod(status=status)
        problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/backups' % other, 'alice')
        assert problem['pod_status'] == status
        assert problem['detail'] == 'Only an ACTIVE or SUSPENDED pod can be backed up; this one is %s.' % status
    task = api.accepted('POST', path, 'alice')
    assert (task['type'], task['params']) == ('BACKUP', {})
    assert api.refused(409, 'operation-in-progress', 'POST', path, 'service', ALICE)['running_operation'] == 'BACKUP'
    suspended = api.pod(status='SUSPENDED')
    assert api.accepted('POST', '/api/cloud-pods/%s/backups' % suspended, 'service', ALICE)['type'] == 'BACKUP'


def test_restore_only_a_listed_archive_of_an_active_pod(api):
    pod = api.pod()
    path = '/api/cloud-pods/%s/restore' % pod
    body = {'archive': ARCHIVE % 101}
    api.refused(401, 'unauthorized', 'POST', path, None, json=body)
    api.refused(404, 'unknown-pod', 'POST', path, 'bob', json=body)
    for bad in ({}, {'archive': '../cp-other/' + ARCHIVE % 101}, {'archive': '/mnt/windows-backup/x/' + ARCHIVE % 101},
                {'archive': 'vzdump-qemu-101-2026_11_30-03_00_02.vma.zst'}, {'archive': ARCHIVE % 101 + '\n'},
                {'archive': ARCHIVE % 101, 'storage': 'local'}, {'archive': 7}):
        assert api.refused(422, 'invalid-restore-request', 'POST', path, 'alice', json=bad)['errors'], bad
    api.refused(415, 'unsupported-media-type', 'POST', path, 'alice', data='archive=x')
    # Never listed: refused (409) naming when it was listed (never); listed without it: the same.
    problem = api.refused(409, 'unknown-archive', 'POST', path, 'alice', json=body)
    assert problem['listed_at'] is None and 'GET /api/cloud-pods/{id}/backups' in problem['detail']
    listed(api, pod, ARCHIVE % 102)
    problem = api.refused(409, 'unknown-archive', 'POST', path, 'service', ALICE, json=body)
    assert problem['listed_at'].startswith('2026-11-30T03:00:10')
    for status in ('SUSPENDED', 'PROVISIONING', 'FAILED', 'TERMINATED'):
        other = api.pod(status=status)
        listed(api, other, ARCHIVE % 101)
        problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/restore' % other, 'alice', json=body)
        assert problem['detail'] == 'Only an ACTIVE pod can be restored; this one is %s.' % status
    listed(api, pod, ARCHIVE % 102, ARCHIVE % 101)
    task = api.accepted('POST', path, 'alice', json=body)
    assert (task['type'], task['params']) == ('RESTORE', {'archive': ARCHIVE % 101})
    assert api.refused(409, 'operation-in-progress', 'POST', path, 'admin', json=body)['running_operation'] == 'RESTORE'


def test_reinstall_own_active_pods(api):
    pod = api.pod()
    path = '/api/cloud-pods/%s/reinstall' % pod
    api.refused(401, 'unauthorized', 'POST', path, None)
    api.refused(404, 'unknown-pod', 'POST', path, 'bob')
    api.refused(404, 'unknown-pod', 'POST', path, 'service', BOB)
    for status in ('SUSPENDED', 'PROVISIONING', 'FAILED', 'TERMINATED'):
        other = api.pod(status=status)
        problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/%s/reinstall' % other, 'service', ALICE)
        assert problem['pod_status'] == status
    assert api.accepted('POST', path, 'alice')['type'] == 'REINSTALL'
    assert api.refused(409, 'operation-in-progress', 'POST', path, 'alice')['running_operation'] == 'REINSTALL'
    assert api.accepted('POST', '/api/cloud-pods/%s/reinstall' % api.pod(), 'admin')['type'] == 'REINSTALL'


def test_the_backup_catalog_is_claimed_once_per_period(api):
    """Periodic jobs (migration 0006): the first call starts the clock, then one claim per period,
    whoever asks; the catalog writes every pod's list but never over a newer one."""
    repository = api.repository
    name = 'test_catalog'  # a scratch database of this module's own
    assert repository.claim_periodic(name, 3600) is None  # the clock starts
    assert repository.claim_periodic(name, 3600) is None  # not due
    api.sql("UPDATE cloud_pod_maintenance SET last_started_at = now() - interval '2 hours' WHERE name = %s", (name,))
    started = repository.claim_periodic(name, 3600)
    assert started is not None and repository.claim_periodic(name, 3600) is None
    older, newer, empty = api.pod(), api.pod(), api.pod()
    listed(api, newer, ARCHIVE % 103, when='2999-01-01 00:00:00+00')
    hostnames = {row['id']: row['hostname'] for row in api.sql('SELECT id::text, hostname FROM cloud_pod_subscriptions')}
    entry = {'name': ARCHIVE % 104, 'created_at': '2026-11-30T03:00:10+00:00', 'size_bytes': 5, 'kind': 'scheduled'}
    repository.store_backup_catalog({hostnames[older]: [entry], hostnames[newer]: [entry]}, started)
    body = api.call('GET', '/api/cloud-pods/%s/backups' % older, 'alice').get_json()
    assert body['backups'] == [entry] and body['listed_at']
    assert [b['name'] for b in api.call('GET', '/api/cloud-pods/%s/backups' % newer, 'alice').get_json()['backups']] == [
        ARCHIVE % 103]  # its list was newer than the catalog
    assert api.call('GET', '/api/cloud-pods/%s/backups' % empty, 'alice').get_json()['backups'] == []


def test_repair_is_for_admins_from_any_state_but_terminated(api):
    for status in ('ACTIVE', 'SUSPENDED', 'FAILED'):
        pod = api.pod(status=status)
        path = '/api/cloud-pods/admin/%s/repair' % pod
        api.refused(403, 'forbidden', 'POST', path, 'alice')
        api.refused(403, 'forbidden', 'POST', path, 'service', ALICE)
        assert api.accepted('POST', path, 'admin')['type'] == 'REPAIR'
        assert api.sql('SELECT status FROM cloud_pod_subscriptions WHERE id = %s', (pod,))[0]['status'] == status
    gone = api.pod(status='TERMINATED')
    api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/admin/%s/repair' % gone, 'admin')
    api.refused(404, 'unknown-pod', 'POST', '/api/cloud-pods/admin/%s/repair' % NOWHERE, 'admin')


def test_retry_requeues_a_failed_create_only(api):
    domain = 'retry-%s.example.com' % uuid.uuid4().hex[:6]
    pod = api.pod(status='FAILED', domain=domain)
    api.sql("UPDATE cloud_pod_subscriptions SET last_error = 'storage full' WHERE id = %s", (pod,))
    path = '/api/cloud-pods/admin/%s/retry' % pod
    api.refused(403, 'forbidden', 'POST', path, 'alice')
    api.refused(403, 'forbidden', 'POST', path, 'service', ALICE)
    for status in ('ACTIVE', 'SUSPENDED', 'TERMINATED'):
        other = api.pod(status=status)
        problem = api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/admin/%s/retry' % other, 'admin')
        assert problem['pod_status'] == status
    # Another pod took the domain meanwhile (a FAILED pod does not hold it): refused, nothing written.
    taker = api.pod(domain=domain)
    api.refused(409, 'domain-taken', 'POST', path, 'admin')
    api.sql("UPDATE cloud_pod_subscriptions SET status = 'TERMINATED' WHERE id = %s", (taker,))
    task = api.accepted('POST', path, 'admin')
    assert (task['type'], task['status']) == ('CREATE_CONTAINER', 'PENDING')
    row = api.sql('SELECT status, last_error FROM cloud_pod_subscriptions WHERE id = %s', (pod,))[0]
    assert row == {'status': 'PROVISIONING', 'last_error': None}
    problem = api.refused(409, 'pod-not-startable', 'POST', path, 'admin')
    assert problem['pod_status'] == 'PROVISIONING'
    # A FAILED pod whose latest operation is not a create (a repair that failed for good) is not an order.
    broken = api.pod(status='FAILED')
    api.sql("INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type, status) VALUES (%s, 'REPAIR', "
            "'FAILED')", (broken,))
    api.refused(409, 'pod-not-startable', 'POST', '/api/cloud-pods/admin/%s/retry' % broken, 'admin')


# ---------------------------------------------------------------- paging

def read_all(api, path, key, who, customer=None, limit=3):
    seen, pages, url = [], 0, '%s%slimit=%d' % (path, '&' if '?' in path else '?', limit)
    while url:
        body = api.call('GET', url, who, customer).get_json()
        assert len(body[key]) <= limit
        seen += body[key]
        pages += 1
        assert (body['next'] is None) == ('next' not in body['links'])
        url = body['links'].get('next')
        assert pages < 100
    return seen, pages


def test_my_pods_pages_with_a_cursor(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        settings = Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE})
        pool = open_pool(settings, name='test-paging', min_size=1, max_size=2)
        try:
            repository = Repository(pool)
            tokens = {'carol': new_token(), 'admin': new_token()}
            repository.create_token('carol', 'customer', 'cust-carol', tokens['carol'])
            repository.create_token('admin', 'admin', None, tokens['admin'])
            api = Api(create_app(settings, repository).test_client(), repository, tokens, OpenApiChecker())
            ids = [api.pod(customer='cust-carol') for _index in range(7)]
            others = [api.pod(customer='cust-dave') for _index in range(2)]
            # Two pods created in the same instant: the id breaks the tie, none is lost or repeated.
            api.sql('UPDATE cloud_pod_subscriptions SET created_at = (SELECT min(created_at) FROM '
                    'cloud_pod_subscriptions) WHERE id = ANY(%s::uuid[])', ([ids[3], ids[4]],))
            pods, pages = read_all(api, '/api/cloud-pods/my-pods', 'pods', 'carol')
            assert pages == 3 and sorted(p['id'] for p in pods) == sorted(ids)
            expected = api.sql("SELECT id::text FROM cloud_pod_subscriptions WHERE customer_id = 'cust-carol' "
                               "ORDER BY created_at DESC, id")
            assert [p['id'] for p in pods] == [row['id'] for row in expected]
            everyone, pages = read_all(api, '/api/cloud-pods/admin/all', 'pods', 'admin', limit=4)
            assert pages == 3 and sorted(p['id'] for p in everyone) == sorted(ids + others)
            one = api.call('GET', '/api/cloud-pods/my-pods', 'carol').get_json()  # the default limit: one page
            assert len(one['pods']) == 7 and one['next'] is None and one['links'] == {}
            # The queue: 9 creates, plus 2 open ones when only the open tasks are asked for.
            api.sql("UPDATE cloud_pod_provisioning_tasks SET status = 'PENDING' WHERE subscription_id = ANY(%s::uuid[])",
                    (others,))
            tasks, pages = read_all(api, '/api/cloud-pods/admin/provisioning-queue?all=true', 'tasks', 'admin', limit=2)
            assert pages == 5 and len({t['id'] for t in tasks}) == 9
            assert [t['id'] for t in tasks] == sorted((t['id'] for t in tasks), reverse=True)
            open_only, pages = read_all(api, '/api/cloud-pods/admin/provisioning-queue', 'tasks', 'admin', limit=1)
            assert pages == 2 and sorted(t['pod_id'] for t in open_only) == sorted(others)
            # Bad limits and cursors: 400 naming the parameter.
            first = api.call('GET', '/api/cloud-pods/my-pods?limit=2', 'carol').get_json()
            for query in ('limit=0', 'limit=501', 'limit=x', 'limit=1&limit=2', 'cursor=nonsense', 'cursor=' + 'A' * 300,
                          'cursor=' + api.call('GET', '/api/cloud-pods/admin/all?limit=1', 'admin').get_json()['next']):
                response = api.call('GET', '/api/cloud-pods/my-pods?' + query, 'carol')
                assert response.status_code == 400, query
                assert response.get_json()['parameter'] in ('limit', 'cursor')
            assert first['next'] and len(first['pods']) == 2
        finally:
            pool.close()


# ---------------------------------------------------------------- end to end: API, worker, playbooks, simulator

@pytest.fixture(scope='module')
def lab_api(lab_env, tmp_path_factory):
    """runner_api under gunicorn and one worker running the real playbooks against the shared lab."""
    tmp = tmp_path_factory.mktemp('lifecycle')
    host = tmp / 'host'
    (host / 'cron.d').mkdir(parents=True)
    (host / 'lib').mkdir()  # /usr/local/lib: where deprovision installs the prune script
    site = tmp / 'site.json'
    site.write_text(json.dumps({
        'cloudpods_proxmox_hosts': 'localhost', 'cloudpods_backup_root': str(host / 'backup'),
        'cloudpods_cron_dir': str(host / 'cron.d'), 'cloudpods_state_dir': str(host / 'state'),
        'cloudpods_vzdump': VZDUMP, 'cloudpods_pct': PCT, 'cloudpods_lib_dir': str(host / 'lib')}))
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, extra_vars_file=site, poll_seconds=1, retry_base_seconds=0.5,
                                 retry_max_seconds=1, max_attempts=2)
        pool = open_pool(Settings.from_env({'DATABASE_URL': url}), name='test-lifecycle-lab', min_size=1, max_size=2)
        repository = Repository(pool)
        subprocess.run([sys.executable, '-m', 'runner_api.cli', 'migrate'], env=env, check=True, cwd=ROOT,
                       capture_output=True)
        tokens = {}
        for name, role, customer in (('mpanel', 'service', None), ('admin', 'admin', None),
                                     ('alice', 'customer', ALICE)):
            tokens[name] = new_token()
            repository.create_token(name, role, customer, tokens[name])
        port = free_port()
        log = open(str(tmp / 'api.log'), 'ab')
        server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'gunicorn'), '-b',
                                   '127.0.0.1:%d' % port, '-w', '2', 'runner_api.app:create_app()'],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        worker = start_worker(env, 'lifecycle', str(tmp / 'worker.log'))
        lab = LabApi('http://127.0.0.1:%d/api/cloud-pods' % port, tokens, repository, LabControl.from_env(lab_env),
                     tmp, worker)
        lab.lab_env = lab_env
        try:
            lab.wait_http()
            yield lab
        finally:
            for process in (worker, server):
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()
            pool.close()


class LabApi(object):
    def __init__(self, base, tokens, repository, control, tmp, worker):
        self.base = base
        self.tokens = tokens
        self.repository = repository
        self.control = control
        self.tmp = tmp
        self.worker = worker

    def call(self, method, path, who, customer=None, **kwargs):
        headers = {'Authorization': 'Bearer ' + self.tokens[who]}
        if customer:
            headers['X-Customer-Id'] = customer
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def wait_http(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + '/plans', timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError('the API did not answer')

    def logs(self):
        return ''.join(path.read_text() for path in self.tmp.glob('*.log'))

    def wait_task(self, task_id, timeout=180):
        """The task once it ended (COMPLETED or FAILED)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.repository.pool.connection() as connection:
                row = connection.execute('SELECT status, last_error FROM cloud_pod_provisioning_tasks WHERE id = %s',
                                         (task_id,)).fetchone()
            if row['status'] in ('COMPLETED', 'FAILED'):
                return row
            if self.worker.poll() is not None:
                raise AssertionError('the worker died:\n' + self.logs()[-3000:])
            time.sleep(0.3)
        raise AssertionError('task %s did not end\n%s' % (task_id, self.logs()[-4000:]))

    def create_task(self, pod_id):
        with self.repository.pool.connection() as connection:
            return connection.execute("SELECT max(id) AS id FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s "
                                      "AND task_type = 'CREATE_CONTAINER'", (pod_id,)).fetchone()['id']

    def run(self, method, path, who, customer=None, **kwargs):
        """Ask for an operation (202) and wait until its task COMPLETED; the pod's detail after it."""
        response = self.call(method, path, who, customer, **kwargs)
        assert response.status_code == 202, response.text
        task = response.json()
        assert response.headers['Location'] == '/api/cloud-pods/' + task['pod_id']
        row = self.wait_task(task['id'])
        assert row['status'] == 'COMPLETED', row
        return self.call('GET', '/' + task['pod_id'], 'admin').json()

    def container(self, vmid):
        return self.control.state()['containers'].get(str(vmid))


def test_suspend_repair_change_plan_resume_terminate_end_to_end(lab_api):
    domain = 'life-%s.example.com' % uuid.uuid4().hex[:6]
    order = {'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org', 'domain': domain}
    response = lab_api.call('POST', '/order', 'mpanel', ALICE, json=order)
    assert response.status_code == 202, response.text
    pod_id = response.json()['id']
    assert lab_api.wait_task(lab_api.create_task(pod_id))['status'] == 'COMPLETED'
    pod = lab_api.call('GET', '/' + pod_id, 'mpanel', ALICE).json()
    assert pod['status'] == 'ACTIVE'
    vmid = pod['vmid']
    ct = lab_api.container(vmid)
    assert ct['status'] == 'running' and str(ct['config'].get('onboot')) == '1'

    # Suspend (mPanel, non-payment): stopped, not started at boot, the reason on the pod.
    pod = lab_api.run('POST', '/%s/suspend' % pod_id, 'mpanel', ALICE, json={'reason': 'non-payment'})
    assert pod['status'] == 'SUSPENDED' and pod['suspension']['reason'] == 'non-payment'
    assert re.match(r'^\d{4}-\d\d-\d\dT', pod['suspension']['since'])
    ct = lab_api.container(vmid)
    assert ct['status'] == 'stopped' and str(ct['config'].get('onboot')) == '0', ct['config']
    assert ct['config']['hostname'] == pod['hostname']  # the container (its disk) is kept
    shutdowns = [task for task in lab_api.control.state()['tasks']
                 if task['type'] == 'vzshutdown' and str(task.get('id')) == str(vmid)]
    assert shutdowns, 'the container was not shut down through status/shutdown'
    # Wrong state and wrong role, through HTTP: refused.
    again = lab_api.call('POST', '/%s/suspend' % pod_id, 'mpanel', ALICE, json={'reason': 'abuse'})
    assert again.status_code == 409 and again.json()['pod_status'] == 'SUSPENDED'
    assert lab_api.call('POST', '/%s/resume' % pod_id, 'alice').status_code == 403

    # Repair of a SUSPENDED pod (admin): converged, and suspended again at the end.
    pod = lab_api.run('POST', '/admin/%s/repair' % pod_id, 'admin')
    assert pod['status'] == 'SUSPENDED'
    ct = lab_api.container(vmid)
    assert ct['status'] == 'stopped' and str(ct['config'].get('onboot')) == '0'

    # Change plan while SUSPENDED (the customer asks): the new limits are in the config, the pod
    # stays stopped, its plan is the new one; the way back down would shrink the disk: 409.
    pod = lab_api.run('POST', '/%s/change-plan' % pod_id, 'alice', json={'plan_code': 'CLOUD_POD_PREMIUM'})
    assert (pod['status'], pod['plan_code']) == ('SUSPENDED', 'CLOUD_POD_PREMIUM')
    ct = lab_api.container(vmid)
    assert ct['status'] == 'stopped' and (int(ct['config']['cores']), int(ct['config']['memory'])) == (2, 2048)
    assert 'size=75G' in ct['config']['rootfs'], ct['config']['rootfs']
    down = lab_api.call('POST', '/%s/change-plan' % pod_id, 'alice', json={'plan_code': 'CLOUD_POD_STARTER'})
    assert down.status_code == 409 and down.json()['type'].endswith('/disk-would-shrink'), down.text

    # Resume: running, started at boot again (the plan's onboot, true), the suspension cleared.
    pod = lab_api.run('POST', '/%s/resume' % pod_id, 'mpanel', ALICE)
    assert pod['status'] == 'ACTIVE' and pod['suspension'] is None and pod['ip']
    ct = lab_api.container(vmid)
    assert ct['status'] == 'running' and str(ct['config'].get('onboot')) == '1'

    # Terminate, asked by the customer itself: the container is gone and the domain free again.
    pod = lab_api.run('POST', '/%s/terminate' % pod_id, 'alice')
    assert pod['status'] == 'TERMINATED'
    assert lab_api.container(vmid) is None
    assert lab_api.call('POST', '/%s/terminate' % pod_id, 'alice').status_code == 409
    response = lab_api.call('POST', '/order', 'mpanel', 'cust-other', json=order)
    assert response.status_code == 202, response.text
    again = response.json()['id']
    assert lab_api.wait_task(lab_api.create_task(again))['status'] == 'COMPLETED'
    assert lab_api.call('GET', '/' + again, 'admin').json()['domain'] == domain
    lab_api.run('POST', '/%s/terminate' % again, 'admin')  # the new pod, cleaned up


def test_backup_restore_reinstall_and_the_catalog_end_to_end(lab_api):
    """Backup now, restore and reinstall asked through the API and run by the worker; a scheduled
    archive the cron job wrote appears in the list once the worker's periodic catalog ran."""
    control = lab_api.control
    domain = 'bak-%s.example.com' % uuid.uuid4().hex[:6]
    response = lab_api.call('POST', '/order', 'mpanel', ALICE,
                            json={'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org', 'domain': domain})
    assert response.status_code == 202, response.text
    pod_id, hostname = response.json()['id'], response.json()['hostname']
    assert lab_api.wait_task(lab_api.create_task(pod_id))['status'] == 'COMPLETED'
    before = lab_api.call('GET', '/' + pod_id, 'alice').json()
    vmid = before['vmid']
    net0 = lab_api.container(vmid)['config']['net0']
    backup_dir = lab_api.tmp / 'host' / 'backup' / hostname

    # Backup now (the customer): one manual archive, listed for GET at once.
    lab_api.run('POST', '/%s/backups' % pod_id, 'alice')
    listing = lab_api.call('GET', '/%s/backups' % pod_id, 'alice').json()
    assert [b['kind'] for b in listing['backups']] == ['manual'] and listing['listed_at']
    chosen = listing['backups'][0]['name']
    assert (backup_dir / chosen).is_file() and listing['backups'][0]['size_bytes'] == (backup_dir / chosen).stat().st_size

    # A scheduled archive (what the cron job runs on the host) shows once the catalog ran: make its
    # period due now (the worker checks every 10 s when idle).
    subprocess.run([VZDUMP, str(vmid), '--dumpdir', str(backup_dir), '--compress', 'zstd'], check=True,
                   capture_output=True, env=dict(os.environ, **lab_api.lab_env))
    with lab_api.repository.pool.connection() as connection:
        connection.execute("UPDATE cloud_pod_maintenance SET last_started_at = now() - interval '2 hours' "
                           "WHERE name = 'backup_catalog'")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listing = lab_api.call('GET', '/%s/backups' % pod_id, 'alice').json()
        if len(listing['backups']) == 2:
            break
        time.sleep(1)
    assert sorted(b['kind'] for b in listing['backups']) == ['manual', 'scheduled'], (listing, lab_api.logs()[-3000:])
    assert 'backup catalog:' in lab_api.logs()

    # Restore the manual archive: a safety backup first, the same container (VMID, MAC), running.
    restores = len([t for t in control.state()['tasks'] if t['type'] == 'vzrestore'])
    pod = lab_api.run('POST', '/%s/restore' % pod_id, 'alice', json={'archive': chosen})
    assert pod['status'] == 'ACTIVE' and pod['vmid'] == vmid and pod['ip'] == before['ip']
    assert len([t for t in control.state()['tasks'] if t['type'] == 'vzrestore']) == restores + 1
    ct = lab_api.container(vmid)
    assert ct['status'] == 'running' and ct['config']['net0'] == net0
    listing = lab_api.call('GET', '/%s/backups' % pod_id, 'alice').json()
    assert sorted(b['kind'] for b in listing['backups']) == ['manual', 'manual', 'scheduled']  # + the safety backup
    assert not (backup_dir / '.restore').exists()
    # An archive that is not the pod's: refused before anything is queued.
    other = lab_api.call('POST', '/%s/restore' % pod_id, 'alice', json={'archive': ARCHIVE % 999})
    assert other.status_code == 409 and other.json()['type'].endswith('/unknown-archive')

    # Reinstall (mPanel for the customer): a backup first, then a new clone with the same VMID and MAC.
    clones = len([r for r in control.requests() if r['path'].endswith('/clone')])
    pod = lab_api.run('POST', '/%s/reinstall' % pod_id, 'mpanel', ALICE)
    assert pod['status'] == 'ACTIVE' and pod['vmid'] == vmid and pod['domain'] == domain
    assert len([r for r in control.requests() if r['path'].endswith('/clone')]) == clones + 1
    assert lab_api.container(vmid)['config']['net0'] == net0
    assert len(lab_api.call('GET', '/%s/backups' % pod_id, 'alice').json()['backups']) == 4
    assert not (backup_dir / '.reinstall').exists()
    lab_api.run('POST', '/%s/terminate' % pod_id, 'alice')
    assert lab_api.container(vmid) is None


def test_failed_order_retried_adopts_its_container(lab_api):
    """A create that ends FAILED after it cloned: the admin's retry re-queues it and provision.yml
    adopts the container (no second clone, no orphan)."""
    control = lab_api.control
    control.clear_faults()
    # Every start of a container fails: the clone is made, then the create fails for good (2 attempts).
    control.fault(method='POST', path=r'/status/start$', status=500, reason='lab: start refused', count=-1)
    try:
        response = lab_api.call('POST', '/order', 'mpanel', ALICE,
                                json={'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org'})
        assert response.status_code == 202, response.text
        pod_id, hostname = response.json()['id'], response.json()['hostname']
        assert lab_api.wait_task(lab_api.create_task(pod_id))['status'] == 'FAILED'
    finally:
        control.clear_faults()
    assert lab_api.call('GET', '/' + pod_id, 'admin').json()['status'] == 'FAILED'
    left = [vmid for vmid, ct in control.state()['containers'].items() if ct['config'].get('hostname') == hostname]
    assert len(left) == 1, 'the failed create left no container to adopt: the test proves nothing'
    pod = lab_api.run('POST', '/admin/%s/retry' % pod_id, 'admin')
    assert pod['status'] == 'ACTIVE' and str(pod['vmid']) == left[0]
    assert [vmid for vmid, ct in control.state()['containers'].items()
            if ct['config'].get('hostname') == hostname] == left
    lab_api.run('POST', '/%s/terminate' % pod_id, 'admin')
