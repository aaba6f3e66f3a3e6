# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api/openapi.yaml against the code it describes: the plan catalogue, the admin endpoints'
parameters, references and links that resolve, the statuses every authenticated endpoint can answer.
(tools/schemathesis tests the live service against the same document.)"""

import os
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api.app import create_app, load_openapi  # noqa: E402
from runner_api import operations as registry  # noqa: E402
from runner_api.blueprints import admin  # noqa: E402
from runner_api.plans import PlanCatalogue  # noqa: E402
from runner_api.settings import Settings  # noqa: E402

PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
DOC = load_openapi()
METHODS = ('get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace')


def operations():
    for path, item in DOC['paths'].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(node):
    while isinstance(node, dict) and '$ref' in node:
        target = DOC
        for part in node['$ref'].lstrip('#/').split('/'):
            target = target[part]
        node = target
    return node


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == '$ref':
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_plan_code_enum_is_the_catalogue():
    # The document is hard-coded; the catalogue is playbooks/vars/plans.yml. Add a plan to both.
    assert DOC['components']['schemas']['PlanCode']['enum'] == list(PlanCatalogue(Path(PLANS_FILE)).plans())


def test_task_type_enum_is_the_queued_operations():
    # A task's type is a queued operation of runner_api/operations.py, and nothing else.
    queued = [name for name, operation in registry.OPERATIONS.items() if operation.queued]
    assert sorted(DOC['components']['schemas']['Task']['properties']['type']['enum']) == sorted(queued)


def test_query_boolean_enum_is_what_the_admin_endpoint_accepts():
    assert sorted(DOC['components']['schemas']['QueryBoolean']['enum']) == sorted(admin.QUERY_BOOLEANS)


def test_every_reference_and_link_resolves():
    for ref in set(refs(DOC)):
        assert ref.startswith('#/'), ref
        resolve({'$ref': ref})
    ids = [operation['operationId'] for _path, _method, operation in operations()]
    assert len(ids) == len(set(ids)), 'operationIds are not unique'
    for path, method, operation in operations():
        for status, response in operation['responses'].items():
            for name, link in resolve(response).get('links', {}).items():
                assert link['operationId'] in ids, '%s %s %s: link %s' % (method, path, status, name)


def test_authenticated_operations_document_401_and_503():
    for path, method, operation in operations():
        if not operation.get('security'):
            continue
        unauthorized = resolve(operation['responses']['401'])
        assert unauthorized['headers']['WWW-Authenticate'], (method, path)
        unavailable = resolve(operation['responses']['503'])
        assert resolve(unavailable['headers']['Retry-After'])['required'] is True, (method, path)


# Answered by gunicorn before the API sees the request, with its own HTML page (documented as such).
SERVER_ANSWERS = {'414': '#/components/responses/UriTooLong'}


def test_errors_are_problem_json():
    for path, method, operation in operations():
        for status, response in operation['responses'].items():
            if status in SERVER_ANSWERS:
                assert response == {'$ref': SERVER_ANSWERS[status]}, (method, path, status)
                assert list(resolve(response)['content']) == ['text/html'], (method, path, status)
            elif int(status) >= 400:
                assert list(resolve(response)['content']) == ['application/problem+json'], (method, path, status)


def test_order_examples_are_valid_orders():
    schema = dict(DOC, **{'$ref': '#/components/schemas/OrderRequest'})
    examples = DOC['components']['schemas']['OrderRequest']['examples']
    assert examples
    for example in examples:
        jsonschema.Draft202012Validator(schema).validate(example)


# ---------------------------------------------------------------- admin.py, without a database

class FakeRepository(object):
    """Just enough for the admin blueprint: one admin token, an empty queue, no pods."""

    def __init__(self):
        self.queue_calls = []

    def token_by_secret(self, token):
        return {'id': 1, 'name': 'ops', 'role': 'admin', 'customer_id': None} if token == 'admin-token' else None

    def queue(self, include_finished=False, limit=500, before_id=None):  # pylint: disable=unused-argument
        self.queue_calls.append(include_finished)
        return []

    def get_subscription(self, subscription_id):
        return None


@pytest.fixture
def client():
    settings = Settings.from_env({'DATABASE_URL': 'postgresql://cloudpods:pw@127.0.0.1:5432/cloudpods',
                                  'CLOUDPODS_PLANS_FILE': PLANS_FILE})
    repository = FakeRepository()
    app = create_app(settings, repository)
    test_client = app.test_client()
    test_client.repository = repository
    return test_client


ADMIN = {'Authorization': 'Bearer admin-token'}
QUEUE = '/api/cloud-pods/admin/provisioning-queue'


@pytest.mark.parametrize('query,expected', [
    ('', False), ('?all=true', True), ('?all=1', True), ('?all=yes', True), ('?all=TRUE', True),
    ('?all=false', False), ('?all=0', False), ('?all=no', False), ('?all=No', False),
])
def test_provisioning_queue_all_takes_a_boolean(client, query, expected):
    response = client.get(QUEUE + query, headers=ADMIN)
    assert response.status_code == 200, response.get_json()
    assert client.repository.queue_calls == [expected]


@pytest.mark.parametrize('query', ['?all=null', '?all=', '?all=2', '?all=on', '?all=true%00', '?all=1&all=0'])
def test_provisioning_queue_refuses_anything_else_naming_the_parameter(client, query):
    response = client.get(QUEUE + query, headers=ADMIN)
    assert response.status_code == 400
    assert response.content_type == 'application/problem+json'
    body = response.get_json()
    assert body['parameter'] == 'all' and "'all'" in body['detail'] and body['status'] == 400
    assert client.repository.queue_calls == []


@pytest.mark.parametrize('pod_id', ['not-a-uuid', '00000000000040008000000000000000', '{00000000-0000-4000-8000-000000000000}'])
def test_restart_refuses_a_malformed_id_with_400(client, pod_id):
    response = client.post('/api/cloud-pods/admin/%s/restart' % pod_id, headers=ADMIN)
    assert response.status_code == 400
    assert response.get_json()['parameter'] == 'id'


def test_restart_of_an_unknown_pod_is_404(client):
    response = client.post('/api/cloud-pods/admin/00000000-0000-4000-8000-000000000000/restart', headers=ADMIN)
    assert response.status_code == 404


def test_the_documented_key_limit_is_the_key_rule_s():
    from runner_api import keys  # pylint: disable=import-outside-toplevel
    schema = DOC['components']['schemas']['SshPublicKeys']
    assert schema['maxItems'] == keys.rule().MAX_KEYS
    assert schema['items']['maxLength'] == keys.rule().MAX_LINE_LENGTH
    example = DOC['components']['schemas']['OrderRequest']['examples'][-1]['ssh_public_keys']
    assert keys.check(example) == (example, [])  # the documented example is a key the API takes


def test_the_ssh_keys_endpoint_documents_what_it_answers():
    operation = DOC['paths']['/api/cloud-pods/{id}/ssh-keys']['put']
    assert sorted(operation['responses']) == ['202', '400', '401', '403', '404', '409', '413', '415', '422', '503']
    assert resolve(operation['requestBody']['content']['application/json']['schema'])['required'] == [
        'ssh_public_keys']
