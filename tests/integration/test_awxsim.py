# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX API v2 stand-in (tests/lab/awxsim), over HTTP on loopback: bearer tokens and their
401/403, AWX's pagination, named URLs, DRF field errors, and the job template launch rules
(prompts, ignored_fields, surveys). The server runs in this module's own fixture; no lab needed."""

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(os.path.dirname(HERE), 'lab')
if LAB not in sys.path:
    sys.path.insert(0, LAB)

from awxsim.errors import NOT_AUTHENTICATED, PERMISSION_DENIED  # noqa: E402  pylint: disable=wrong-import-position
from awxsim.server import create_server  # noqa: E402  pylint: disable=wrong-import-position
from labenv import free_port  # noqa: E402  pylint: disable=wrong-import-position

ADMIN_TOKEN = 'admin-write-token-for-tests'
READ_TOKEN = 'admin-read-token-for-tests'
OUTSIDER_TOKEN = 'outsider-token-for-tests'
CONTROL_KEY = 'awxsim-control-key'


class Client:
    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, token=ADMIN_TOKEN, headers=None):
        """``(status, json body or None, headers)``."""
        data = json.dumps(body).encode() if body is not None else None
        head = {'Content-Type': 'application/json'}
        if token:
            head['Authorization'] = 'Bearer ' + token
        head.update(headers or {})
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=head)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status, got = response.read(), response.status, response.headers
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, exc.headers
        return status, (json.loads(raw) if raw else None), got

    def ok(self, method, path, body=None, status=200):
        got, data, _headers = self.call(method, path, body)
        assert got == status, (method, path, got, data)
        return data


@pytest.fixture(scope='module')
def awx():
    config = {'listen_port': free_port(), 'control_key': CONTROL_KEY,
              'users': [{'username': 'admin', 'password': 'admin-pass', 'is_superuser': True},
                        {'username': 'outsider', 'password': 'outsider-pass', 'organizations': []}],
              'tokens': [{'token': ADMIN_TOKEN, 'user': 'admin', 'scope': 'write'},
                         {'token': READ_TOKEN, 'user': 'admin', 'scope': 'read'},
                         {'token': OUTSIDER_TOKEN, 'user': 'outsider', 'scope': 'write'}]}
    server = create_server(config)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    yield Client('http://127.0.0.1:%d' % server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(awx):
    """The module's server, reset to its configured users and tokens and no objects."""
    status, _data, _headers = awx.call('POST', '/_lab/reset', token=None, headers={'X-Lab-Key': CONTROL_KEY})
    assert status == 200
    return awx


def seed(client, org='Org A'):
    """An organization, project, inventory and job template; their ids."""
    ids = {'org': client.ok('POST', '/api/v2/organizations/', {'name': org}, 201)['id']}
    ids['project'] = client.ok('POST', '/api/v2/projects/', {'name': 'Cloud Pods', 'organization': ids['org']}, 201)['id']
    ids['inventory'] = client.ok('POST', '/api/v2/inventories/', {'name': 'Nodes', 'organization': ids['org']}, 201)['id']
    ids['jt'] = client.ok('POST', '/api/v2/job_templates/', {
        'name': 'Provision', 'project': ids['project'], 'playbook': 'playbooks/provision.yml',
        'inventory': ids['inventory']}, 201)['id']
    return ids


# ------------------------------------------------------------------ authentication


def test_unauthenticated_endpoints_and_401(client):
    assert client.ok('GET', '/api/v2/ping/')['version']
    root = client.call('GET', '/api/v2/', token=None)
    assert root[0] == 200 and root[1]['job_templates'] == '/api/v2/job_templates/'
    for token in (None, 'not-a-known-token'):
        status, data, _headers = client.call('GET', '/api/v2/me/', token=token)
        assert (status, data) == (401, {'detail': NOT_AUTHENTICATED})
        status, data, _headers = client.call('GET', '/api/v2/job_templates/', token=token)
        assert (status, data) == (401, {'detail': NOT_AUTHENTICATED})


def test_me_names_the_token_user(client):
    me = client.ok('GET', '/api/v2/me/')
    assert me['count'] == 1 and me['results'][0]['username'] == 'admin'
    status, me, _headers = client.call('GET', '/api/v2/me/', token=OUTSIDER_TOKEN)
    assert status == 200 and me['results'][0]['username'] == 'outsider'


def test_read_token_cannot_change_or_launch(client):
    ids = seed(client)
    assert client.call('GET', '/api/v2/job_templates/%d/' % ids['jt'], token=READ_TOKEN)[0] == 200
    for method, path, body in (('POST', '/api/v2/organizations/', {'name': 'B'}),
                               ('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'limit': 'x'}),
                               ('DELETE', '/api/v2/job_templates/%d/' % ids['jt'], None),
                               ('POST', '/api/v2/job_templates/%d/launch/' % ids['jt'], {})):
        status, data, _headers = client.call(method, path, body, token=READ_TOKEN)
        assert (status, data) == (403, {'detail': PERMISSION_DENIED}), (method, path)
    # nothing changed
    assert client.ok('GET', '/api/v2/organizations/')['count'] == 1
    assert client.ok('GET', '/api/v2/job_templates/%d/' % ids['jt'])['limit'] == ''


def test_user_outside_the_organization(client):
    ids = seed(client)
    status, data, _headers = client.call('GET', '/api/v2/job_templates/', token=OUTSIDER_TOKEN)
    assert status == 200 and data['count'] == 0
    status, data, _headers = client.call('GET', '/api/v2/job_templates/%d/' % ids['jt'], token=OUTSIDER_TOKEN)
    assert (status, data) == (403, {'detail': PERMISSION_DENIED})
    status, data, _headers = client.call('POST', '/api/v2/projects/', {'name': 'x', 'organization': ids['org']},
                                         token=OUTSIDER_TOKEN)
    assert (status, data) == (403, {'detail': PERMISSION_DENIED})
    assert client.ok('GET', '/api/v2/projects/')['count'] == 1


def test_token_made_with_basic_auth_then_revoked(client):
    basic = {'Authorization': 'Basic ' + base64.b64encode(b'admin:admin-pass').decode()}
    body = {'description': 'x', 'application': None, 'scope': 'write'}
    status, token, _headers = client.call('POST', '/api/v2/tokens/', body, token=None, headers=basic)
    assert status == 201 and token['scope'] == 'write'
    assert client.call('GET', '/api/v2/me/', token=token['token'])[0] == 200
    assert client.call('DELETE', '/api/v2/tokens/%d/' % token['id'], token=token['token'])[0] == 204
    assert client.call('GET', '/api/v2/me/', token=token['token'])[0] == 401
    wrong = {'Authorization': 'Basic ' + base64.b64encode(b'admin:wrong').decode()}
    assert client.call('GET', '/api/v2/me/', token=None, headers=wrong)[0] == 401


# ------------------------------------------------------------------ lists, named URLs, field errors


def test_pagination(client):
    for number in range(30):
        client.ok('POST', '/api/v2/organizations/', {'name': 'org-%02d' % number}, 201)
    first = client.ok('GET', '/api/v2/organizations/')
    assert first['count'] == 30 and len(first['results']) == 25 and first['previous'] is None
    assert first['next'] == '/api/v2/organizations/?page=2'
    second = client.ok('GET', first['next'])
    assert [o['name'] for o in second['results']] == ['org-%02d' % n for n in range(25, 30)]
    assert second['next'] is None and second['previous'] == '/api/v2/organizations/?page=1'
    small = client.ok('GET', '/api/v2/organizations/?page_size=7&page=2')
    assert [o['name'] for o in small['results']] == ['org-%02d' % n for n in range(7, 14)]
    assert small['next'] == '/api/v2/organizations/?page=3&page_size=7'
    assert small['previous'] == '/api/v2/organizations/?page=1&page_size=7'
    capped = client.ok('GET', '/api/v2/organizations/?page_size=1000')
    assert len(capped['results']) == 30 and capped['next'] is None
    assert client.call('GET', '/api/v2/organizations/?page=9')[:2] == (404, {'detail': 'Invalid page.'})
    assert client.ok('GET', '/api/v2/organizations/?count_disabled=1&page_size=2') == {
        'results': first['results'][:2]}


def test_page_size_cap_is_200_and_next_carries_it(client):
    for number in range(205):
        client.ok('POST', '/api/v2/organizations/', {'name': 'o%03d' % number}, 201)
    page = client.ok('GET', '/api/v2/organizations/?page_size=500')
    assert len(page['results']) == 200 and page['next'] == '/api/v2/organizations/?page=2&page_size=200'


def test_name_filter_as_awx_clients_look_up(client):
    ids = seed(client)
    found = client.ok('GET', '/api/v2/job_templates/?name=Provision')
    assert found['count'] == 1 and found['results'][0]['id'] == ids['jt']
    assert client.ok('GET', '/api/v2/job_templates/?name=Nope')['count'] == 0
    both = client.ok('GET', '/api/v2/job_templates/?or__id=%d&or__name=%d' % (ids['jt'], ids['jt']))
    assert both['count'] == 1


def test_named_urls(client):
    ids = seed(client, org='Org; A+B')
    client.ok('POST', '/api/v2/job_templates/', {'name': 'a+b', 'project': ids['project'], 'playbook': 'p.yml'}, 201)
    jt = client.ok('GET', '/api/v2/job_templates/%d/' % ids['jt'])
    assert jt['related']['named_url'] == '/api/v2/job_templates/Provision++Org%3B%20A[+]B/'
    assert client.ok('GET', jt['related']['named_url'])['id'] == ids['jt']
    assert client.ok('GET', '/api/v2/job_templates/a[+]b++Org%3B%20A[+]B/')['name'] == 'a+b'
    assert client.ok('GET', '/api/v2/organizations/Org%3B%20A[+]B/')['id'] == ids['org']
    assert client.ok('GET', '/api/v2/projects/Cloud%20Pods++Org%3B%20A[+]B/')['id'] == ids['project']
    assert client.call('GET', '/api/v2/job_templates/Provision++Other/')[:2] == (404, {'detail': 'Not found.'})
    client.ok('PATCH', jt['related']['named_url'], {'limit': 'pod1'})
    assert client.ok('GET', '/api/v2/job_templates/%d/' % ids['jt'])['limit'] == 'pod1'


def test_create_field_errors(client):
    status, data, _headers = client.call('POST', '/api/v2/job_templates/', {'name': ''})
    assert status == 400
    assert data == {'name': ['This field may not be blank.'], 'project': ['This field is required.'],
                    'playbook': ['This field is required.']}
    status, data, _headers = client.call('POST', '/api/v2/inventories/', {'name': 'i', 'organization': 99})
    assert (status, data) == (400, {'organization': ['Invalid pk "99" - object does not exist.']})
    status, data, _headers = client.call('POST', '/api/v2/credential_types/', {'name': 'c', 'kind': 'ssh'})
    assert (status, data) == (400, {'kind': ["Must be 'cloud' or 'net', not ssh"]})
    client.ok('POST', '/api/v2/organizations/', {'name': 'Dup'}, 201)
    status, data, _headers = client.call('POST', '/api/v2/organizations/', {'name': 'Dup'})
    assert (status, data) == (400, {'name': ['Organization with this Name already exists.']})
    # a refusal creates nothing
    assert client.ok('GET', '/api/v2/organizations/')['count'] == 1
    assert client.ok('GET', '/api/v2/inventories/')['count'] == 0


def test_null_for_text_choice_and_boolean_fields(client):
    """AWX's CharNullField/ChoiceNullField/BooleanNullField: the awx.awx modules send null for options left unset."""
    org = client.ok('POST', '/api/v2/organizations/', {'name': 'O', 'description': None}, 201)
    inv = client.ok('POST', '/api/v2/inventories/', {'name': 'I', 'organization': org['id'], 'kind': None,
                                                     'variables': None, 'description': None}, 201)
    assert (org['description'], inv['kind'], inv['variables']) == ('', '', '')
    status, data, _headers = client.call('POST', '/api/v2/organizations/', {'name': None})
    assert (status, data) == (400, {'name': ['This field may not be blank.']})
    project = client.ok('POST', '/api/v2/projects/', {'name': 'P', 'organization': org['id']}, 201)
    status, data, _headers = client.call('POST', '/api/v2/job_templates/', {
        'name': 'J', 'project': project['id'], 'playbook': 'p.yml', 'verbosity': None, 'job_type': None,
        'ask_limit_on_launch': None})
    assert (status, data) == (400, {'job_type': ['"" is not a valid choice.'], 'verbosity': ['This field may not be null.']})


def test_patch_and_delete(client):
    ids = seed(client)
    status, data, _headers = client.call('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'job_type': 'bogus'})
    assert (status, data) == (400, {'job_type': ['"bogus" is not a valid choice.']})
    assert client.ok('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'ask_limit_on_launch': True})['ask_limit_on_launch']
    jt_url = '/api/v2/job_templates/%d/' % ids['jt']
    status, data, _headers = client.call('PUT', jt_url, {'name': 'Provision'})
    assert (status, data) == (400, {'project': ['This field is required.'], 'playbook': ['This field is required.']})
    put = client.ok('PUT', jt_url, {'name': 'Provision', 'project': ids['project'], 'playbook': 'other.yml'})
    assert (put['playbook'], put['ask_limit_on_launch'], put['inventory']) == ('other.yml', False, None)
    assert client.call('DELETE', '/api/v2/job_templates/%d/' % ids['jt'])[0] == 204
    assert client.call('GET', '/api/v2/job_templates/%d/' % ids['jt'])[0] == 404


def test_credentials_hide_secret_inputs(client):
    ctype = client.ok('POST', '/api/v2/credential_types/', {
        'name': 'Proxmox', 'kind': 'cloud',
        'inputs': {'fields': [{'id': 'url', 'label': 'URL', 'type': 'string'},
                              {'id': 'secret', 'label': 'Secret', 'type': 'string', 'secret': True}]}}, 201)
    cred = client.ok('POST', '/api/v2/credentials/', {
        'name': 'pve', 'credential_type': ctype['id'], 'inputs': {'url': 'https://pve', 'secret': 's3cr3t'}}, 201)
    assert cred['inputs'] == {'url': 'https://pve', 'secret': '$encrypted$'}
    assert 's3cr3t' not in json.dumps(client.ok('GET', '/api/v2/credentials/'))
    assert client.ok('GET', '/api/v2/credential_types/Proxmox+cloud/')['id'] == ctype['id']


# ------------------------------------------------------------------ launch


def launch(client, jt, body, token=ADMIN_TOKEN):
    status, data, headers = client.call('POST', '/api/v2/job_templates/%d/launch/' % jt, body, token=token)
    return status, data, headers


def test_launch_drops_unprompted_fields_into_ignored_fields(client):
    ids = seed(client)
    status, job, headers = launch(client, ids['jt'], {'limit': 'pod1', 'extra_vars': {'x': 1}, 'job_tags': 't'})
    assert status == 201 and headers['Location'] == client.base + '/api/v2/jobs/%d/' % job['job']
    assert job['ignored_fields'] == {'limit': 'pod1', 'extra_vars': {'x': 1}, 'job_tags': 't'}
    assert job['limit'] == '' and json.loads(job['extra_vars']) == {}


def test_launch_applies_prompted_fields(client):
    ids = seed(client)
    client.ok('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {
        'ask_limit_on_launch': True, 'ask_variables_on_launch': True, 'extra_vars': '{"keep": 1}'})
    status, job, _headers = launch(client, ids['jt'], {'limit': 'pod1', 'extra_vars': {'x': 1}})
    assert status == 201 and job['ignored_fields'] == {}
    assert job['limit'] == 'pod1' and json.loads(job['extra_vars']) == {'keep': 1, 'x': 1}
    status, data, _headers = launch(client, ids['jt'], {'limit': None})
    assert (status, data) == (400, {'limit': ['This field may not be null.']})
    status, job, _headers = launch(client, ids['jt'], {'extra_vars': 'x: 2\nname: pod1\n'})  # YAML text
    assert status == 201 and json.loads(job['extra_vars']) == {'keep': 1, 'x': 2, 'name': 'pod1'}
    status, data, _headers = launch(client, ids['jt'], {'extra_vars': '[1, 2]'})
    assert (status, data) == (400, {'extra_vars': ['Must be a valid JSON or YAML dictionary.']})
    status, data, _headers = client.call('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'extra_vars': '- a'})
    assert (status, data) == (400, {'extra_vars': ['Input type `list` is not a dictionary']})


def test_launch_without_inventory(client):
    ids = seed(client)
    client.ok('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'inventory': None})
    info = client.ok('GET', '/api/v2/job_templates/%d/launch/' % ids['jt'])
    assert info['inventory_needed_to_start'] and not info['can_start_without_user_input']
    status, data, _headers = launch(client, ids['jt'], {})
    assert (status, data) == (400, {'resources_needed_to_start': ["Job Template 'inventory' is missing or undefined."]})
    client.ok('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'ask_inventory_on_launch': True})
    status, job, _headers = launch(client, ids['jt'], {'inventory': ids['inventory']})
    assert status == 201 and job['inventory'] == ids['inventory']


SURVEY = {'name': 'pod', 'description': 'pod order', 'spec': [
    {'type': 'text', 'question_name': 'Hostname', 'variable': 'hostname', 'required': True, 'min': 3, 'max': 10},
    {'type': 'integer', 'question_name': 'Disk', 'variable': 'disk_gb', 'required': False, 'min': 5, 'max': 20,
     'default': 8},
    {'type': 'multiplechoice', 'question_name': 'Plan', 'variable': 'plan', 'required': True,
     'choices': ['small', 'large']},
]}


def test_survey_rules(client):
    ids = seed(client)
    jt_url = '/api/v2/job_templates/%d/' % ids['jt']
    client.ok('POST', jt_url + 'survey_spec/', SURVEY)
    client.ok('PATCH', jt_url, {'survey_enabled': True})
    info = client.ok('GET', jt_url + 'launch/')
    assert info['variables_needed_to_start'] == ['hostname', 'plan'] and info['survey_enabled']
    status, data, _headers = launch(client, ids['jt'], {})
    assert (status, data) == (400, {'variables_needed_to_start': ["'hostname' value missing", "'plan' value missing"]})
    status, data, _headers = launch(client, ids['jt'], {'extra_vars': {'hostname': 5, 'disk_gb': 3, 'plan': 'z'}})
    assert (status, data) == (400, {'variables_needed_to_start': [
        "Value 5 for 'hostname' expected to be a string.",
        "'disk_gb' value 3 is too small (must be at least 5).",
        "Value z for 'plan' expected to be one of ['small', 'large']."]})
    status, data, _headers = launch(client, ids['jt'], {'extra_vars': {'hostname': 'ab', 'disk_gb': 30, 'plan': 'small'}})
    assert (status, data) == (400, {'variables_needed_to_start': [
        "'hostname' value ab is too small (length is 2 must be at least 3).",
        "'disk_gb' value 30 is too large (must be no more than 20)."]})
    status, job, _headers = launch(client, ids['jt'], {'extra_vars': {'hostname': 'pod1', 'plan': 'small', 'other': 1}})
    assert status == 201
    assert json.loads(job['extra_vars']) == {'hostname': 'pod1', 'plan': 'small', 'disk_gb': 8}
    assert job['ignored_fields'] == {'extra_vars': {'other': 1}}
    # a default does not answer a required question (AWX checks the launch's own variables)
    spec = dict(SURVEY, spec=[dict(SURVEY['spec'][0], default='pod-default'), SURVEY['spec'][2]])
    client.ok('POST', jt_url + 'survey_spec/', spec)
    assert client.ok('GET', jt_url + 'launch/')['variables_needed_to_start'] == ['hostname', 'plan']
    status, data, _headers = launch(client, ids['jt'], {'extra_vars': {'plan': 'large'}})
    assert (status, data) == (400, {'variables_needed_to_start': ["'hostname' value missing"]})


def test_bad_survey_spec_is_refused(client):
    ids = seed(client)
    status, data, _headers = client.call('POST', '/api/v2/job_templates/%d/survey_spec/' % ids['jt'],
                                         {'name': 'x', 'spec': []})
    assert (status, data) == (400, {'error': "'spec' doesn't contain any items."})
    for spec, message in (({'name': 'x', 'spec': [{}]}, "Field 'description' is missing from survey spec."),
                          ({'name': 'x', 'description': '', 'spec': [{'type': 'text', 'question_name': 'q', 'variable': 'v',
                                                                      'required': 'yes'}]},
                           "'required' in survey question 0 expected to be boolean."),
                          ({'name': 'x', 'description': '', 'spec': [{'type': 'date', 'question_name': 'q', 'variable': 'v',
                                                                      'required': True}]},
                           "'date' in survey question 0 is not one of 'text, textarea, password, multiplechoice, multiselect,"
                           " integer, float' allowed question types.")):
        status, data, _headers = client.call('POST', '/api/v2/job_templates/%d/survey_spec/' % ids['jt'], spec)
        assert (status, data) == (400, {'error': message})
    assert client.ok('GET', '/api/v2/job_templates/%d/survey_spec/' % ids['jt']) == {}


# ------------------------------------------------------------------ AWX's own client


AWX_CLI = shutil.which('awx', path=os.path.dirname(sys.executable))


def awx_cli(client, *args):
    """``awx <args> -f json`` against the stand-in, with the admin token; its JSON answer."""
    env = dict(os.environ, CONTROLLER_HOST=client.base, CONTROLLER_OAUTH_TOKEN=ADMIN_TOKEN,
               CONTROLLER_VERIFY_SSL='false')
    result = subprocess.run([AWX_CLI] + list(args) + ['-f', 'json', '--conf.color', 'false'], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.mark.skipif(AWX_CLI is None, reason='awxkit (the awx CLI) is not installed in this venv')
def test_awxkit_cli_lists_job_templates(client):
    ids = seed(client)
    listed = awx_cli(client, 'job_templates', 'list')
    assert [jt['id'] for jt in listed['results']] == [ids['jt']]
    for number in range(30):
        client.ok('POST', '/api/v2/organizations/', {'name': 'org-%02d' % number}, 201)
    assert len(awx_cli(client, 'organizations', 'list')['results']) == 25
    every = awx_cli(client, 'organizations', 'list', '--all')  # follows ``next``
    assert sorted(org['name'] for org in every['results']) == sorted(['Org A'] + ['org-%02d' % n for n in range(30)])


@pytest.mark.skipif(AWX_CLI is None, reason='awxkit (the awx CLI) is not installed in this venv')
def test_awxkit_cli_creates_by_name_modifies_and_launches(client):
    """awxkit reads the root and OPTIONS to build its commands, resolves names with ``?name=``
    and follows AWX's answers; every object it makes is checked through the API."""
    org = awx_cli(client, 'organizations', 'create', '--name', 'Cloud Org')
    project = awx_cli(client, 'projects', 'create', '--name', 'Pods', '--organization', 'Cloud Org')
    inventory = awx_cli(client, 'inventory', 'create', '--name', 'Nodes', '--organization', 'Cloud Org')
    jt = awx_cli(client, 'job_templates', 'create', '--name', 'Provision', '--project', 'Pods',
                 '--playbook', 'playbooks/provision.yml', '--inventory', 'Nodes')
    assert (project['organization'], inventory['organization']) == (org['id'], org['id'])
    stored = client.ok('GET', '/api/v2/job_templates/Provision++Cloud%20Org/')
    assert (stored['id'], stored['project'], stored['inventory']) == (jt['id'], project['id'], inventory['id'])
    awx_cli(client, 'job_templates', 'modify', 'Provision', '--ask_limit_on_launch', 'true')
    assert client.ok('GET', '/api/v2/job_templates/%d/' % jt['id'])['ask_limit_on_launch'] is True
    job = awx_cli(client, 'job_templates', 'launch', 'Provision')
    assert job['job'] and job['ignored_fields'] == {}


# ------------------------------------------------------------------ jobs


def lab_status(client, job, status):
    got, data, _headers = client.call('POST', '/_lab/jobs/%d/status' % job, {'status': status}, token=None,
                                      headers={'X-Lab-Key': CONTROL_KEY})
    return got, data


def test_job_life_and_list(client):
    ids = seed(client)
    status, launched, _headers = launch(client, ids['jt'], {})
    assert status == 201 and launched['status'] == 'pending'
    job_url = '/api/v2/jobs/%d/' % launched['job']
    job = client.ok('GET', job_url)
    assert (job['status'], job['started'], job['finished'], job['failed']) == ('pending', None, None, False)
    assert lab_status(client, launched['job'], 'running')[0] == 200
    running = client.ok('GET', job_url)
    assert running['status'] == 'running' and running['started'] and not running['event_processing_finished']
    assert lab_status(client, launched['job'], 'failed')[0] == 200
    done = client.ok('GET', job_url)
    assert done['status'] == 'failed' and done['failed'] is True and done['finished'] and done['event_processing_finished']
    # a finished job does not go back
    assert lab_status(client, launched['job'], 'running')[0] == 400
    listed = client.ok('GET', '/api/v2/jobs/?status=failed')
    assert [j['id'] for j in listed['results']] == [launched['job']]
    assert 'job_env' not in listed['results'][0] and 'job_env' in done
    assert client.ok('GET', '/api/v2/jobs/?status=successful')['count'] == 0
    status, data, _headers = client.call('GET', job_url, token=OUTSIDER_TOKEN)
    assert (status, data) == (403, {'detail': PERMISSION_DENIED})


def test_cancel(client):
    ids = seed(client)
    pending = launch(client, ids['jt'], {})[1]['job']
    assert client.ok('GET', '/api/v2/jobs/%d/cancel/' % pending) == {'can_cancel': True}
    assert client.call('POST', '/api/v2/jobs/%d/cancel/' % pending)[0] == 202
    job = client.ok('GET', '/api/v2/jobs/%d/' % pending)
    assert job['status'] == 'canceled' and job['cancel_flag'] is True
    assert client.ok('GET', '/api/v2/jobs/%d/cancel/' % pending) == {'can_cancel': False}
    assert client.call('POST', '/api/v2/jobs/%d/cancel/' % pending)[0] == 405
    running = launch(client, ids['jt'], {})[1]['job']
    lab_status(client, running, 'running')
    assert client.call('POST', '/api/v2/jobs/%d/cancel/' % running)[0] == 202
    job = client.ok('GET', '/api/v2/jobs/%d/' % running)
    assert job['status'] == 'running' and job['cancel_flag'] is True  # until what runs it stops
    lab_status(client, running, 'canceled')
    assert client.ok('GET', '/api/v2/jobs/%d/' % running)['status'] == 'canceled'
    status, _data, _headers = client.call('POST', '/api/v2/jobs/%d/cancel/' % running, token=READ_TOKEN)
    assert status == 403


@pytest.mark.skipif(AWX_CLI is None, reason='awxkit (the awx CLI) is not installed in this venv')
def test_awxkit_cli_launch_waits_for_the_job(client):
    """``awx job_templates launch --wait`` follows the job until it finishes; the test moves the job
    (running, then successful) only after it has seen awxkit ask for it, so no step depends on time."""
    ids = seed(client)
    env = dict(os.environ, CONTROLLER_HOST=client.base, CONTROLLER_OAUTH_TOKEN=ADMIN_TOKEN,
               CONTROLLER_VERIFY_SSL='false')
    with subprocess.Popen([AWX_CLI, 'job_templates', 'launch', str(ids['jt']), '--wait', '-f', 'json',
                           '--conf.color', 'false'], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            wait_for_request(client, proc, lambda r: r['method'] == 'POST' and r['path'].endswith('/launch/'))
            job_id = client.ok('GET', '/api/v2/jobs/')['results'][0]['id']
            assert lab_status(client, job_id, 'running')[0] == 200
            wait_for_request(client, proc, lambda r: r['path'] == '/api/v2/jobs/%d/' % job_id)
            assert lab_status(client, job_id, 'successful')[0] == 200
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)['status'] == 'successful'


def wait_for_request(client, proc, predicate):
    """Until the stand-in has logged a request matching ``predicate`` (the awx process must still live)."""
    while True:
        state = client.call('GET', '/_lab/state', token=None, headers={'X-Lab-Key': CONTROL_KEY})[1]
        if any(predicate(entry) for entry in state['requests']):
            return True
        assert proc.poll() is None, proc.communicate()
        threading.Event().wait(0.2)


AWX_COLLECTION_PLAY = '''
- hosts: localhost
  gather_facts: false
  tasks:
    - awx.awx.organization: {name: Cloud Org}
    - awx.awx.inventory: {name: Nodes, organization: Cloud Org}
    - awx.awx.project: {name: Pods, organization: Cloud Org, scm_type: manual, local_path: cloudpods}
    - awx.awx.credential_type:
        name: Proxmox API
        kind: cloud
        inputs: {fields: [{id: token, label: Token, type: string, secret: true}]}
    - awx.awx.credential: {name: pve, organization: Cloud Org, credential_type: Proxmox API, inputs: {token: s3cr3t}}
    - awx.awx.job_template:
        name: Provision
        project: Pods
        inventory: Nodes
        playbook: playbooks/provision.yml
        credentials: [pve]
        ask_limit_on_launch: true
        survey_enabled: true
        survey_spec:
          name: pod
          description: pod order
          spec:
            - {type: text, question_name: Host, variable: hostname, required: true, min: 3, max: 20}
    - name: the same template again changes nothing
      awx.awx.job_template:
        name: Provision
        project: Pods
        inventory: Nodes
        playbook: playbooks/provision.yml
        credentials: [pve]
        ask_limit_on_launch: true
      register: again
    - ansible.builtin.assert: {that: [not again.changed]}
    - awx.awx.job_launch: {job_template: Provision, limit: pod1, extra_vars: {hostname: pod-1}, wait: false}
      register: launched
    - awx.awx.job_launch: {job_template: Provision, extra_vars: {hostname: ab}, wait: false}
      register: refused
      ignore_errors: true
    - ansible.builtin.assert:
        that:
          - launched.status == 'pending'
          - refused.failed
          - "refused.response.json == {'variables_needed_to_start':
              [\\"'hostname' value ab is too small (length is 2 must be at least 3).\\"]}"
    - ansible.builtin.copy: {content: "{{ launched.id }}", dest: "{{ job_id_file }}", mode: "0600"}
'''


def test_awx_collection_modules(client, tmp_path):
    """The awx.awx modules (shipped with ansible) create, find again, and launch through the stand-in."""
    play = tmp_path / 'play.yml'
    play.write_text(AWX_COLLECTION_PLAY, encoding='utf-8')
    env = dict(os.environ, CONTROLLER_HOST=client.base, CONTROLLER_OAUTH_TOKEN=ADMIN_TOKEN,
               CONTROLLER_VERIFY_SSL='false', ANSIBLE_NOCOLOR='1')
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    result = subprocess.run([playbook, '-i', 'localhost,', '-c', 'local', str(play),
                             '-e', 'ansible_python_interpreter=%s' % sys.executable,
                             '-e', 'job_id_file=%s' % (tmp_path / 'job_id')], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    job = client.ok('GET', '/api/v2/jobs/%s/' % (tmp_path / 'job_id').read_text(encoding='utf-8').strip())
    assert job['limit'] == 'pod1' and json.loads(job['extra_vars']) == {'hostname': 'pod-1'}
    jt = client.ok('GET', '/api/v2/job_templates/Provision++Cloud%20Org/')
    assert client.ok('GET', jt['related']['survey_spec'])['spec'][0]['variable'] == 'hostname'
    assert [c['name'] for c in client.ok('GET', jt['related']['credentials'])['results']] == ['pve']
    assert job['credentials'] == [client.ok('GET', '/api/v2/credentials/?name=pve')['results'][0]['id']]


def test_job_template_credentials_and_launch_credentials(client):
    ids = seed(client)
    ctype = client.ok('POST', '/api/v2/credential_types/', {'name': 'Proxmox API', 'kind': 'cloud'}, 201)
    first = client.ok('POST', '/api/v2/credentials/', {'name': 'pve1', 'credential_type': ctype['id']}, 201)
    second = client.ok('POST', '/api/v2/credentials/', {'name': 'pve2', 'credential_type': ctype['id']}, 201)
    creds_url = '/api/v2/job_templates/%d/credentials/' % ids['jt']
    assert client.call('POST', creds_url, {'id': first['id']})[0] == 204
    status, data, _headers = client.call('POST', creds_url, {'id': second['id']})
    assert (status, data) == (400, {'error': 'Cannot assign multiple Proxmox API credentials.'})
    assert client.call('POST', creds_url, {'id': 999})[:2] == (400, {'detail': 'Credential matching query does not exist.'})
    assert client.call('POST', creds_url, {'id': 'x'})[:2] == (400, {'msg': '"id" field must be an integer.'})
    assert [c['id'] for c in client.ok('GET', creds_url)['results']] == [first['id']]
    job = launch(client, ids['jt'], {'credentials': [second['id']]})[1]
    assert job['credentials'] == [first['id']] and job['ignored_fields'] == {'credentials': [second['id']]}
    client.ok('PATCH', '/api/v2/job_templates/%d/' % ids['jt'], {'ask_credential_on_launch': True})
    status, data, _headers = launch(client, ids['jt'], {'credentials': [first['id'], second['id']]})
    assert (status, data) == (400, {'credentials': ['Cannot assign multiple Proxmox API credentials.']})
    assert launch(client, ids['jt'], {'credentials': [second['id']]})[1]['credentials'] == [second['id']]
    assert client.call('POST', creds_url, {'id': first['id'], 'disassociate': True})[0] == 204
    assert client.ok('GET', creds_url)['count'] == 0
    assert client.call('POST', creds_url, {'id': first['id']}, token=READ_TOKEN)[0] == 403


def test_runs_as_a_program_over_tls(tmp_path):
    """``python -m awxsim --config FILE`` (how the lab will start it): serves HTTPS with the given
    certificate (a client that trusts it verifies it), then stops on SIGTERM."""
    cert, key = tmp_path / 'cert.pem', tmp_path / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                    '-keyout', str(key), '-out', str(cert), '-days', '1', '-subj', '/CN=localhost',
                    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], check=True, capture_output=True)
    port = free_port()
    config = tmp_path / 'awxsim.json'
    config.write_text(json.dumps({'listen_port': port, 'tls_cert': str(cert), 'tls_key': str(key),
                                  'users': [{'username': 'admin', 'is_superuser': True}],
                                  'tokens': [{'token': ADMIN_TOKEN, 'user': 'admin'}]}), encoding='utf-8')
    with subprocess.Popen([sys.executable, '-m', 'awxsim', '--config', str(config)], cwd=LAB,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert 'awxsim listening on https://127.0.0.1:%d' % port in proc.stderr.readline()
            request = urllib.request.Request('https://127.0.0.1:%d/api/v2/me/' % port,
                                             headers={'Authorization': 'Bearer ' + ADMIN_TOKEN})
            context = ssl.create_default_context(cafile=str(cert))
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                me = json.loads(response.read())
            assert me['results'][0]['username'] == 'admin'
            with pytest.raises(urllib.error.URLError, match='CERTIFICATE_VERIFY_FAILED'):
                urllib.request.urlopen(request, context=ssl.create_default_context(), timeout=30)  # pylint: disable=consider-using-with
            proc.terminate()
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
