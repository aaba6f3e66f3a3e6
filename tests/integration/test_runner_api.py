# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's HTTP API against a real PostgreSQL (a database of its own in the lab's cluster).

Every response is checked against the OpenAPI document the service serves.
"""

import json
import os
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import OpenApiChecker, scratch_database  # noqa: E402

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
ALICE, BOB = 'cust-alice', 'cust-bob'


@pytest.fixture(scope='module')
def database_url(lab_env):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        yield url


@pytest.fixture(scope='module')
def api(database_url):
    settings = Settings.from_env({'DATABASE_URL': database_url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE,
                                  'CLOUDPODS_MAX_BODY_BYTES': '4096'})
    pool = open_pool(settings, name='test-api', min_size=1, max_size=4)
    repository = Repository(pool)
    app = create_app(settings, repository)
    tokens = {}
    for name, role, customer in (('alice', 'customer', ALICE), ('bob', 'customer', BOB), ('service', 'service', None),
                                 ('admin', 'admin', None), ('revoked', 'admin', None)):
        tokens[name] = new_token()
        row = repository.create_token(name, role, customer, tokens[name])
        if name == 'revoked':
            repository.revoke_token(row['id'])
    yield Api(app.test_client(), repository, tokens, OpenApiChecker())
    pool.close()


class Api(object):
    def __init__(self, client, repository, tokens, checker):
        self.client = client
        self.repository = repository
        self.tokens = tokens
        self.checker = checker

    def call(self, method, path, who=None, customer=None, headers=None, **kwargs):
        headers = dict(headers or {})
        if who is not None:
            headers['Authorization'] = 'Bearer ' + self.tokens.get(who, who)
        if customer is not None:
            headers['X-Customer-Id'] = customer
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        body = response.get_json(silent=True)
        assert body is not None, 'not JSON: %s %r' % (response.status, response.data[:200])
        self.checker.check(method, path.split('?')[0], response.status_code, response.content_type, body)
        if response.status_code >= 400:
            assert response.content_type == 'application/problem+json'
            assert body['status'] == response.status_code and body['detail']
        return response

    def order(self, who='alice', customer=None, key=None, **body):
        payload = {'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'alice@example.com'}
        payload.update(body)
        headers = {'Idempotency-Key': key} if key else {}
        return self.call('POST', '/api/cloud-pods/order', who, customer, headers=headers, json=payload)

    def rows(self):
        return self.repository.count_rows()

    def set_status(self, pod_id, status):
        with self.repository.pool.connection() as connection:
            connection.execute('UPDATE cloud_pod_subscriptions SET status = %s WHERE id = %s', (status, pod_id))
            connection.execute("UPDATE cloud_pod_provisioning_tasks SET status = 'COMPLETED' "
                               "WHERE subscription_id = %s AND status IN ('PENDING', 'RUNNING')", (pod_id,))


# ---------------------------------------------------------------- public

def test_plans_come_from_the_catalogue(api):
    body = api.call('GET', '/api/cloud-pods/plans').get_json()
    codes = [plan['code'] for plan in body['plans']]
    assert codes == ['CLOUD_POD_STUDENT', 'CLOUD_POD_STARTER', 'CLOUD_POD_PREMIUM', 'CLOUD_POD_BUSINESS']
    starter = api.call('GET', '/api/cloud-pods/plans/CLOUD_POD_STARTER').get_json()
    assert (starter['price'], starter['vcpu'], starter['memory_mb'], starter['disk_gb']) == ('1.49', 1, 1024, 30)
    assert api.call('GET', '/api/cloud-pods/plans/CLOUD_POD_NOPE').status_code == 404


def test_compare_and_openapi(api):
    compare = api.call('GET', '/api/cloud-pods/compare').get_json()
    assert [p['code'] for p in compare['plans']][0] == 'CLOUD_POD_STUDENT'
    price = [row for row in compare['rows'] if row['feature'] == 'price'][0]
    assert price['values']['CLOUD_POD_BUSINESS'] == '3.99'
    document = api.call('GET', '/api/cloud-pods/openapi.json').get_json()
    assert '/api/cloud-pods/order' in document['paths']


# ---------------------------------------------------------------- auth matrix

PRIVATE = [('GET', '/api/cloud-pods/my-pods'), ('POST', '/api/cloud-pods/order'),
           ('GET', '/api/cloud-pods/admin/all'), ('GET', '/api/cloud-pods/admin/provisioning-queue'),
           ('GET', '/api/cloud-pods/00000000-0000-4000-8000-000000000000'),
           ('POST', '/api/cloud-pods/admin/00000000-0000-4000-8000-000000000000/restart'),
           ('PUT', '/api/cloud-pods/00000000-0000-4000-8000-000000000000/ssh-keys')]


@pytest.mark.parametrize('method,path', PRIVATE)
@pytest.mark.parametrize('who', [None, 'not-a-token', 'revoked'])
def test_every_private_endpoint_needs_a_valid_token(api, method, path, who):
    response = api.call(method, path, who, json={} if method in ('POST', 'PUT') else None)
    assert response.status_code == 401
    assert response.headers['WWW-Authenticate'].startswith('Bearer')


@pytest.mark.parametrize('who', ['alice', 'service'])
@pytest.mark.parametrize('path', ['/api/cloud-pods/admin/all', '/api/cloud-pods/admin/provisioning-queue'])
def test_admin_endpoints_need_admin(api, who, path):
    assert api.call('GET', path, who, customer=ALICE).status_code == 403


def test_customers_see_only_their_pods(api):
    alice_pod = api.order('alice').get_json()['id']
    bob_pod = api.order('bob', customer_email='bob@example.com').get_json()['id']
    mine = [p['id'] for p in api.call('GET', '/api/cloud-pods/my-pods', 'alice').get_json()['pods']]
    assert alice_pod in mine and bob_pod not in mine
    assert api.call('GET', '/api/cloud-pods/' + alice_pod, 'alice').status_code == 200
    # Another customer's pod and a pod that does not exist answer the same.
    other = api.call('GET', '/api/cloud-pods/' + bob_pod, 'alice')
    missing = api.call('GET', '/api/cloud-pods/00000000-0000-4000-8000-000000000000', 'alice')
    assert other.status_code == missing.status_code == 404
    assert other.get_json() == missing.get_json()
    # A customer token cannot act for somebody else through the header.
    assert api.call('GET', '/api/cloud-pods/' + bob_pod, 'alice', customer=BOB).status_code == 404


def test_service_token_acts_for_the_named_customer(api):
    pod = api.order('service', customer=ALICE, customer_email='alice@example.com').get_json()['id']
    assert pod in [p['id'] for p in api.call('GET', '/api/cloud-pods/my-pods', 'alice').get_json()['pods']]
    assert api.call('GET', '/api/cloud-pods/' + pod, 'service', customer=ALICE).status_code == 200
    assert api.call('GET', '/api/cloud-pods/' + pod, 'service', customer=BOB).status_code == 404
    assert api.call('GET', '/api/cloud-pods/my-pods', 'service').status_code == 400
    before = api.rows()
    assert api.order('service').status_code == 400
    assert api.rows() == before


def test_admin_sees_everything(api):
    pod = api.order('bob', customer_email='bob@example.com').get_json()['id']
    pods = api.call('GET', '/api/cloud-pods/admin/all', 'admin').get_json()['pods']
    assert pod in [p['id'] for p in pods] and all('customer_id' in p for p in pods)
    detail = api.call('GET', '/api/cloud-pods/' + pod, 'admin').get_json()
    assert detail['customer_id'] == BOB and detail['status'] == 'PROVISIONING'
    queue = api.call('GET', '/api/cloud-pods/admin/provisioning-queue', 'admin').get_json()['tasks']
    task = [t for t in queue if t['pod_id'] == pod][0]
    expected = ('CREATE_CONTAINER', 'PENDING', 0, None)
    assert (task['type'], task['status'], task['attempts'], task['worker_id']) == expected


# ---------------------------------------------------------------- order

def test_order_writes_subscription_and_task(api):
    before = api.rows()
    response = api.order('alice', domain='Shop-One.Example.COM.')
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers['Location'] == '/api/cloud-pods/' + body['id']
    after = api.rows()
    assert (after['subscriptions'] - before['subscriptions'], after['tasks'] - before['tasks']) == (1, 1)
    detail = api.call('GET', '/api/cloud-pods/' + body['id'], 'alice').get_json()
    assert detail['domain'] == 'shop-one.example.com' and detail['status'] == 'PROVISIONING'
    assert detail['progress']['operation'] == 'CREATE_CONTAINER'
    assert [s['status'] for s in detail['progress']['steps']] == ['pending'] * len(detail['progress']['steps'])


def test_idempotency_key_makes_one_order(api):
    first = api.order('alice', key='order-42', domain='idem.example.net')
    before = api.rows()
    again = api.order('alice', key='order-42', domain='idem.example.net')
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()['id'] == first.get_json()['id']
    assert api.rows() == before
    # The same key from another customer is another order.
    assert api.order('bob', key='order-42', customer_email='b@example.com').status_code == 202
    # The same key with a different order is refused, nothing written.
    before = api.rows()
    assert api.order('alice', key='order-42', domain='other.example.net').status_code == 422
    assert api.rows() == before


def test_a_live_domain_is_taken(api):
    pod = api.order('alice', domain='taken.example.org').get_json()['id']
    before = api.rows()
    assert api.order('bob', domain='TAKEN.example.org', customer_email='b@example.com').status_code == 409
    assert api.rows() == before
    api.set_status(pod, 'TERMINATED')
    assert api.order('bob', domain='taken.example.org', customer_email='b@example.com').status_code == 202


BAD_ORDERS = [
    ('unknown plan', {'plan_code': 'CLOUD_POD_GOLD'}, 422),
    ('plan not a string', {'plan_code': 7}, 422),
    ('email missing', {'customer_email': None}, 422),
    ('email malformed', {'customer_email': 'not-an-email'}, 422),
    ('domain not a string', {'domain': ['a.com']}, 422),
    ('domain one label', {'domain': 'localhost'}, 422),
    ('domain bad characters', {'domain': 'exa_mple.com'}, 422),
    ('domain label too long', {'domain': 'a' * 64 + '.com'}, 422),
    ('domain leading hyphen', {'domain': '-bad.example.com'}, 422),
    ('domain is an address', {'domain': '10.1.10.70'}, 422),
    ('domain with a path', {'domain': 'example.com/x'}, 422),
    ('unknown field', {'vmid': 101}, 422),
    # what an independent probe got accepted (202, then five failed attempts) or answered with 500
    ('email with a comma', {'customer_email': 'a,b@example.org'}, 422),
    ('email with brackets', {'customer_email': 'a<b>@example.org'}, 422),
    ('email with ESC', {'customer_email': 'a\x1b@example.org'}, 422),
    ('email with NUL', {'customer_email': 'a\x00b@example.org'}, 422),
    ('email non-ASCII local part', {'customer_email': 'j\u00e4ne@ex\u00e4mple.org'}, 422),
    ('email with a trailing newline', {'customer_email': 'jane@example.org\n'}, 422),
    ('email with a space', {'customer_email': 'jane doe@example.org'}, 422),
    ('email template', {'customer_email': "{{ lookup('pipe','id') }}@example.org"}, 422),
    ('email template without spaces', {'customer_email': "{{lookup('pipe','id')}}@example.org"}, 422),
    ('email percent', {'customer_email': 'a%b@example.org'}, 422),
    ('email quoted local part', {'customer_email': '"a b"@example.org'}, 422),
    ('domain label ending in a newline', {'domain': 'shop.example.org\n'}, 422),
    ('domain newline inside', {'domain': 'shop\n.example.org'}, 422),
    ('domain template', {'domain': "{{ lookup('env','HOME') }}.example.org"}, 422),
    ('domain block tag', {'domain': "{% raw %}x{% endraw %}.example.org"}, 422),
    ('domain comment tag', {'domain': '{#x#}.example.org'}, 422),
]


@pytest.mark.parametrize('case,changes,status', BAD_ORDERS, ids=[case[0] for case in BAD_ORDERS])
def test_bad_orders_write_nothing(api, case, changes, status):
    payload = {'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'alice@example.com'}
    payload.update(changes)
    payload = dict((k, v) for k, v in payload.items() if v is not None)
    before = api.rows()
    response = api.call('POST', '/api/cloud-pods/order', 'alice', json=payload)
    assert response.status_code == status, (case, response.get_json())
    assert api.rows() == before


RAW_BAD = [
    ('malformed JSON', '{"plan_code": ', 'application/json', 400),
    ('JSON array', '[1, 2]', 'application/json', 400),
    ('JSON string', '"CLOUD_POD_STARTER"', 'application/json', 400),
    ('empty body', '', 'application/json', 400),
    ('not JSON', 'plan_code=CLOUD_POD_STARTER', 'application/x-www-form-urlencoded', 415),
    ('oversized', json.dumps({'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'a@example.com',
                              'domain': 'x' * 8000}), 'application/json', 413),
    ('nested arrays (RecursionError)', '[' * 2000 + ']' * 2000, 'application/json', 400),
    ('nested deep in a field', '{"plan_code": "CLOUD_POD_STARTER", "customer_email": "a@example.com", "domain": '
     + '[' * 900 + '"\\ud800"' + ']' * 900 + '}', 'application/json', 400),
    ('lone surrogate', '{"plan_code": "CLOUD_POD_STARTER", "customer_email": "a\\ud800@example.com"}',
     'application/json', 400),
    ('lone surrogate in a key', '{"plan_code": "CLOUD_POD_STARTER", "customer_email": "a@example.com", '
     '"\\udfff": 1}', 'application/json', 400),
]


@pytest.mark.parametrize('case,data,content_type,status', RAW_BAD, ids=[case[0] for case in RAW_BAD])
def test_malformed_bodies_write_nothing(api, case, data, content_type, status):
    before = api.rows()
    response = api.call('POST', '/api/cloud-pods/order', 'alice', data=data, content_type=content_type)
    assert response.status_code == status, case
    assert api.rows() == before


GOOD_EMAILS = [
    ('jane@example.org', 'jane@example.org'),
    ("o'brien+shop@Example.ORG", "o'brien+shop@example.org"),
    ('jane@ex\u00e4mple.org', 'jane@xn--exmple-cua.org'),
    ('jane@b\u00fccher.example', 'jane@xn--bcher-kva.example'),
]


@pytest.mark.parametrize('raw,stored', GOOD_EMAILS, ids=[case[1] for case in GOOD_EMAILS])
def test_mail_address_is_stored_normalised(api, raw, stored):
    response = api.order('alice', customer_email=raw)
    assert response.status_code == 202, response.get_json()
    with api.repository.pool.connection() as connection:
        row = connection.execute('SELECT customer_email FROM cloud_pod_subscriptions WHERE id = %s',
                                 (response.get_json()['id'],)).fetchone()
    assert row['customer_email'] == stored


def test_idn_domain_is_stored_in_its_ascii_form(api):
    response = api.order('alice', domain='B\u00fccher-%s.example' % uuid.uuid4().hex[:6])
    assert response.status_code == 202, response.get_json()
    assert api.repository.get_subscription(response.get_json()['id'])['domain'].startswith('xn--bcher-')


def test_customer_header_must_be_printable(api):
    before = api.rows()
    for value in ('cust 1', 'x' * 129, "{{ lookup('pipe','id') }}"):
        assert api.order('service', customer=value).status_code == 400, value
    assert api.rows() == before


def test_token_in_the_url_is_refused(api):
    response = api.client.get('/api/cloud-pods/my-pods?access_token=' + api.tokens['alice'])
    assert response.status_code == 400 and 'Authorization header' in response.get_json()['detail']


def test_security_headers(api):
    private = api.call('GET', '/api/cloud-pods/my-pods', 'alice')
    assert private.headers['Cache-Control'] == 'no-store'
    assert private.headers['X-Content-Type-Options'] == 'nosniff'
    public = api.call('GET', '/api/cloud-pods/plans')
    assert public.headers['X-Content-Type-Options'] == 'nosniff' and 'Cache-Control' not in public.headers
    assert api.client.get('/api/cloud-pods/my-pods').headers['Cache-Control'] == 'no-store'  # 401 too


def test_token_use_is_recorded(api):
    token = new_token()
    row = api.repository.create_token('recorded', 'customer', 'cust-rec', token)
    unused = [t for t in api.repository.list_tokens() if t['id'] == row['id']][0]
    assert unused['last_used_at'] is None
    api.call('GET', '/api/cloud-pods/my-pods', token)
    used = [t for t in api.repository.list_tokens() if t['id'] == row['id']][0]
    assert used['last_used_at'] is not None
    api.call('GET', '/api/cloud-pods/my-pods', token)  # within the minute: not written again
    again = [t for t in api.repository.list_tokens() if t['id'] == row['id']][0]
    assert again['last_used_at'] == used['last_used_at']


def test_customers_read_no_internal_error(api):
    pod = api.order('alice').get_json()['id']
    internal = "Step 'pod_container : Converge' failed: 403 Permission check failed (mpanel-api@pve!mpanel-token)"
    with api.repository.pool.connection() as connection:
        connection.execute("UPDATE cloud_pod_subscriptions SET status = 'FAILED', last_error = %s WHERE id = %s",
                           (internal, pod))
        task = connection.execute('SELECT max(id) AS id FROM cloud_pod_provisioning_tasks WHERE subscription_id = %s',
                                  (pod,)).fetchone()['id']
    mine = api.call('GET', '/api/cloud-pods/%s' % pod, 'alice').get_json()
    listed = [p for p in api.call('GET', '/api/cloud-pods/my-pods', 'alice').get_json()['pods'] if p['id'] == pod][0]
    for view in (mine, listed):
        assert 'mpanel-api' not in view['last_error'] and 'pod_container' not in view['last_error']
        assert 'task-%s' % task in view['last_error']
    admin = api.call('GET', '/api/cloud-pods/%s' % pod, 'admin').get_json()
    assert admin['last_error'] == internal


def test_bad_idempotency_key(api):
    before = api.rows()
    assert api.order('alice', key='x' * 200).status_code == 400
    assert api.order('alice', key="{{ lookup('pipe','id') }}").status_code == 400  # spaces: not a key
    assert api.rows() == before


# ---------------------------------------------------------------- admin restart

def test_restart(api):
    pod = api.order('alice').get_json()['id']
    path = '/api/cloud-pods/admin/%s/restart' % pod
    assert api.call('POST', path, 'alice').status_code == 403
    assert api.call('POST', path, 'admin').status_code == 409  # still provisioning
    api.set_status(pod, 'ACTIVE')
    response = api.call('POST', path, 'admin')
    assert response.status_code == 202
    assert (response.get_json()['type'], response.get_json()['status']) == ('RESTART', 'PENDING')
    assert api.call('POST', path, 'admin').status_code == 409  # one operation per pod at a time
    missing = '/api/cloud-pods/admin/00000000-0000-4000-8000-000000000000/restart'
    assert api.call('POST', missing, 'admin').status_code == 404


def test_unknown_routes_are_problems(api):
    response = api.client.get('/api/cloud-pods/not-a-uuid/extra')
    assert response.status_code == 404 and response.content_type == 'application/problem+json'
    response = api.client.delete('/api/cloud-pods/plans')
    assert response.status_code == 405 and response.content_type == 'application/problem+json'
