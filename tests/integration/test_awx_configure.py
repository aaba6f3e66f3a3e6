# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/awx/configure.yml (the AWX setup as code, awx.awx) against the AWX API stand-in
(tests/lab/awxsim), which runs in this module's own fixture on loopback; no lab needed.

What is checked through AWX's API afterwards: the project (git, this checkout), the inventory source
(scm, the pods plugin's file), the node group, the credential types as the files say, the credentials
(secrets stored, read back $encrypted$, never in the playbook's output), one job template per playbook
with its credentials and survey (plan choices = playbooks/vars/plans.yml), the drift template's
schedules (rrule, job_type check) and its notification template (email) on success and error.
Then: a second run changes nothing; --check changes nothing; a refused token fails first and
changes nothing; a survey answer AWX refuses is refused at launch with AWX's message."""

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAB = os.path.join(ROOT, 'tests', 'lab')
if LAB not in sys.path:
    sys.path.insert(0, LAB)

from awxsim.server import create_server  # noqa: E402  pylint: disable=wrong-import-position
from labenv import free_port  # noqa: E402  pylint: disable=wrong-import-position

TOKEN = 'configure-admin-token'
CONTROL_KEY = 'awxsim-configure-key'
PLAYBOOK = os.path.join(ROOT, 'playbooks', 'awx', 'configure.yml')
# Secret inputs: each must reach AWX and never the playbook's output.
SECRETS = {'PROXMOX_API_TOKEN_SECRET': 'pve-secret-0d6c2b1e', 'POWERDNS_API_KEY': 'pdns-secret-93a1f0c2',
           'SMTP_PASSWORD': 'smtp-secret-5e7b44aa'}
SSH_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nssh-secret-7f3e9d10\n-----END OPENSSH PRIVATE KEY-----\n'
PODS = ['shop-example-com', 'cp-0123456789']
# runner_api's names (runner_api/settings.py awx_template_name): its AWX executor finds them by default.
TEMPLATES = ['provision', 'repair', 'restart', 'deprovision', 'suspend', 'resume', 'change_plan', 'reinstall',
             'backup_now', 'backups', 'restore', 'ssh_keys', 'https', 'transfer_quota', 'backup_catalog',
             'repair (drift check)', 'repair_fleet (drift check)']
ORG = 'Cloud%20Pods'


class Client:
    def __init__(self, base, app=None):
        self.base = base
        self.app = app  # the server's state, to read what AWX stores unmasked
        self.configured = None  # the run of configure.yml that made what the stand-in holds (fixture configured)

    def call(self, method, path, body=None, token=TOKEN, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        head = {'Content-Type': 'application/json'}
        if token:
            head['Authorization'] = 'Bearer ' + token
        head.update(headers or {})
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=head)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, (json.loads(raw) if raw else None)

    def ok(self, path):
        status, data = self.call('GET', path)
        assert status == 200, (path, status, data)
        return data

    def results(self, path):
        return self.ok(path + ('&' if '?' in path else '?') + 'page_size=200')['results']

    def state(self):
        status, data = self.call('GET', '/_lab/state', token=None, headers={'X-Lab-Key': CONTROL_KEY})
        assert status == 200
        return data


@pytest.fixture(scope='module')
def awx():
    config = {'listen_port': free_port(), 'control_key': CONTROL_KEY,
              'users': [{'username': 'admin', 'password': 'admin-pass', 'is_superuser': True}],
              'tokens': [{'token': TOKEN, 'user': 'admin', 'scope': 'write'}]}
    server = create_server(config)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    yield Client('http://127.0.0.1:%d' % server.server_address[1], server.app)
    server.shutdown()
    server.server_close()


def reset(awx):
    status, _data = awx.call('POST', '/_lab/reset', token=None, headers={'X-Lab-Key': CONTROL_KEY})
    assert status == 200
    awx.configured = None


@pytest.fixture
def client(awx):
    """An empty stand-in."""
    reset(awx)
    return awx


@pytest.fixture(scope='module')
def run(awx, tmp_path_factory):
    """``run(*args, token=..., extra_vars=...)``: configure.yml against the stand-in as it is; the CompletedProcess."""
    key = tmp_path_factory.mktemp('ssh') / 'id_ed25519'
    key.write_text(SSH_KEY, encoding='utf-8')
    env = {key_: value for key_, value in os.environ.items()
           if not key_.startswith(('PROXMOX_', 'POWERDNS_', 'SMTP_', 'CONTROLLER_'))}
    env.update(SECRETS, ANSIBLE_NOCOLOR='1', CONTROLLER_HOST=awx.base, CONTROLLER_VERIFY_SSL='false',
               PROXMOX_API_URL='https://10.1.10.70:8006/api2/json', PROXMOX_API_TOKEN_ID='cloudpods@pve!provision',
               PROXMOX_SSH_HOST='10.1.10.70', PROXMOX_SSH_PORT='2222', PROXMOX_SSH_USER='root',
               PROXMOX_SSH_KEY_FILE=str(key), PROXMOX_NODE_NAME='pve', POWERDNS_API_URL='http://10.1.10.102:8081',
               SMTP_HOST='10.1.10.101', SMTP_PORT='2525', SMTP_USERNAME='mailer')
    extra = {'cloudpods_awx_scm_url': 'file://' + ROOT, 'cloudpods_awx_mail_from': 'noreply@example.net',
             'cloudpods_awx_notify_to': ['ops@example.net'], 'cloudpods_awx_drift_pods': PODS}
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')

    def runner(*args, token=TOKEN, extra_vars=None):
        env['CONTROLLER_OAUTH_TOKEN'] = token
        return subprocess.run([playbook, '-i', 'localhost,', PLAYBOOK, '-e', json.dumps(dict(extra, **(extra_vars or {}))),
                               '-e', 'ansible_python_interpreter=%s' % sys.executable, *args],
                              env=env, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    return runner


@pytest.fixture
def configured(awx, run):
    """The stand-in as one run of configure.yml on an empty AWX left it, and that run (a CompletedProcess).
    The run is made once and shared by the tests that only read or add to it (each configure.yml run
    costs tens of seconds); a test that resets the stand-in or changes a setting marks it for a new one."""
    if awx.configured is None:
        reset(awx)
        first = run()
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
        awx.configured = first
    return awx.configured


def recap(result):
    """The play recap's counters for localhost."""
    line = [line for line in result.stdout.splitlines() if line.startswith('localhost')][-1]
    return {part.split('=')[0]: int(part.split('=')[1]) for part in line.split()[2:]}


def objects(client):
    """Every object the stand-in holds, without the times (a second run must leave them as they are)."""
    state = client.state()['objects']
    return {kind: [{k: v for k, v in obj.items() if k not in ('modified', 'next_run')} for obj in items]
            for kind, items in state.items()}


def assert_no_secret(result):
    for secret in list(SECRETS.values()) + ['ssh-secret-7f3e9d10']:
        assert secret not in result.stdout and secret not in result.stderr


def test_configure_makes_everything_and_a_second_run_changes_nothing(awx, configured, run):
    client, first = awx, configured
    assert_no_secret(first)
    assert recap(first)['changed'] > 0

    project = client.ok('/api/v2/projects/Cloud%20Pods++' + ORG + '/')
    assert project['scm_type'] == 'git' and project['scm_url'] == 'file://' + ROOT
    head = subprocess.run(['git', '-C', ROOT, 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
    assert project['scm_revision'] == head and project['status'] == 'successful'

    inventory = client.ok('/api/v2/inventories/Cloud%20Pods++' + ORG + '/')
    source = client.results('/api/v2/inventory_sources/?inventory=%d' % inventory['id'])
    assert [(s['name'], s['source'], s['source_path'], s['source_project'], s['overwrite'], s['update_on_launch'])
            for s in source] == [('Cloud Pods - pods', 'scm', 'awx/inventory/cloudpods.pods.yml', project['id'], False, True)]
    with open(os.path.join(ROOT, 'awx', 'inventory', 'cloudpods.pods.yml'), encoding='utf-8') as handle:
        assert yaml.safe_load(handle)['plugin'] == 'mpanel.cloudpods.pods'
    creds = {c['name']: c for c in client.results('/api/v2/credentials/')}
    assert source[0]['credential'] == creds['Cloud Pods - Proxmox VE API']['id']
    group = client.results('/api/v2/groups/?name=proxmox_hosts&inventory=%d' % inventory['id'])
    assert len(group) == 1
    assert [h['name'] for h in client.results('/api/v2/groups/%d/hosts/' % group[0]['id'])] == ['pve']
    host = client.results('/api/v2/hosts/?name=pve')[0]
    assert yaml.safe_load(host['variables']) == {'ansible_host': '10.1.10.70', 'ansible_port': 2222, 'ansible_user': 'root'}
    assert "lookup('ansible.builtin.env', 'PROXMOX_SSH_KEY_FILE')" in group[0]['variables']

    # Credential types as the files say; credentials hold the secrets, read back $encrypted$.
    types = {t['name']: t for t in client.results('/api/v2/credential_types/')}
    for name in ('proxmox_api', 'proxmox_ssh', 'powerdns', 'smtp'):
        with open(os.path.join(ROOT, 'awx', 'credential_types', name + '.yml'), encoding='utf-8') as handle:
            spec = yaml.safe_load(handle)
        assert types[spec['name']]['inputs'] == spec['inputs'] and types[spec['name']]['injectors'] == spec['injectors']
    assert creds['Cloud Pods - Proxmox VE API']['inputs']['token_secret'] == '$encrypted$'
    assert creds['Cloud Pods - Proxmox SSH']['inputs']['ssh_key_data'] == '$encrypted$'
    assert creds['Cloud Pods - Proxmox SSH']['inputs']['port'] == '2222'
    # what AWX stores (the server's own objects): the secrets themselves, from the environment
    stored = {c['name']: c['inputs'] for c in client.app.store.objects['credentials'].values()}
    assert stored['Cloud Pods - Proxmox VE API']['token_secret'] == SECRETS['PROXMOX_API_TOKEN_SECRET']
    assert stored['Cloud Pods - PowerDNS']['api_key'] == SECRETS['POWERDNS_API_KEY']
    assert stored['Cloud Pods - Proxmox SSH']['ssh_key_data'] == SSH_KEY  # whole, its last newline too (OpenSSH needs it)
    assert stored['Cloud Pods - SMTP']['password'] == SECRETS['SMTP_PASSWORD']
    note = list(client.app.store.objects['notification_templates'].values())[0]
    assert note['notification_configuration']['password'] == SECRETS['SMTP_PASSWORD']

    # One job template per playbook, each with the four credentials and its survey.
    with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml'), encoding='utf-8') as handle:
        plans = list(yaml.safe_load(handle)['cloudpods_plans'])
    jts = {jt['name']: jt for jt in client.results('/api/v2/job_templates/')}
    assert sorted(jts) == sorted('Cloud Pods: ' + name for name in TEMPLATES)
    for jt in jts.values():
        assert os.path.isfile(os.path.join(ROOT, jt['playbook'])), jt['playbook']
        assert jt['ask_variables_on_launch'] and jt['inventory'] == inventory['id']
        attached = sorted(c['name'] for c in client.results(jt['related']['credentials']))
        assert attached == sorted(creds), jt['name']
        if jt['name'] in ('Cloud Pods: backup_catalog', 'Cloud Pods: repair_fleet (drift check)'):  # no survey
            assert not jt['survey_enabled']
            continue
        assert jt['survey_enabled']
        spec = client.ok(jt['related']['survey_spec'])['spec']
        pod = [q for q in spec if q['variable'] == 'pod'][0]
        assert (pod['type'], pod['required'], pod['min'], pod['max']) == ('text', True, 1, 253)
    provision = {q['variable']: q for q in client.ok(jts['Cloud Pods: provision']['related']['survey_spec'])['spec']}
    assert provision['plan']['type'] == 'multiplechoice' and provision['plan']['choices'] == plans
    assert (provision['customer_email']['min'], provision['customer_email']['max']) == (6, 254)
    assert (provision['domain']['required'], provision['domain']['min'], provision['domain']['max']) == (False, 0, 253)
    assert [jt['name'] for jt in jts.values() if jt['ask_limit_on_launch']] == [
        'Cloud Pods: restart', 'Cloud Pods: suspend', 'Cloud Pods: resume']

    # The drift check: check mode, a schedule per pod, the email notification on success and error.
    drift = jts['Cloud Pods: repair (drift check)']
    assert drift['job_type'] == 'check' and drift['playbook'] == 'playbooks/repair.yml' and drift['diff_mode']
    schedules = client.results('/api/v2/schedules/?unified_job_template=%d' % drift['id'])
    assert sorted(s['extra_data']['pod'] for s in schedules) == sorted(PODS)
    for schedule in schedules:
        assert schedule['rrule'] == 'DTSTART;TZID=UTC:20260101T020000 RRULE:FREQ=DAILY;INTERVAL=1'
        assert schedule['job_type'] == 'check' and schedule['enabled'] and schedule['next_run'].endswith('T02:00:00Z')
    notes = client.results('/api/v2/notification_templates/')
    assert [(n['name'], n['notification_type']) for n in notes] == [('Cloud Pods - drift report', 'email')]
    config = notes[0]['notification_configuration']
    assert config == {'host': '10.1.10.101', 'port': 2525, 'username': 'mailer', 'password': '$encrypted$', 'use_tls': False,
                      'use_ssl': False, 'sender': 'noreply@example.net', 'recipients': ['ops@example.net'], 'timeout': 30}
    for event in ('success', 'error'):
        assert [n['id'] for n in client.results(drift['related']['notification_templates_' + event])] == [notes[0]['id']]
    assert client.results(drift['related']['notification_templates_started']) == []
    # The whole fleet's check in one job: repair_fleet.yml in check mode, one nightly schedule, the same report.
    fleet = jts['Cloud Pods: repair_fleet (drift check)']
    assert fleet['job_type'] == 'check' and fleet['playbook'] == 'playbooks/repair_fleet.yml' and fleet['diff_mode']
    [nightly] = client.results('/api/v2/schedules/?unified_job_template=%d' % fleet['id'])
    assert nightly['rrule'] == 'DTSTART;TZID=UTC:20260101T013000 RRULE:FREQ=DAILY;INTERVAL=1'
    assert nightly['job_type'] == 'check' and nightly['enabled'] and nightly['next_run'].endswith('T01:30:00Z')
    for event in ('success', 'error'):
        assert [n['id'] for n in client.results(fleet['related']['notification_templates_' + event])] == [notes[0]['id']]
    assert client.results(jts['Cloud Pods: repair']['related']['notification_templates_success']) == []

    before = objects(client)
    second = run()
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    assert recap(second)['changed'] == 0, second.stdout[-6000:]
    assert_no_secret(second)
    assert objects(client) == before


def test_check_mode_changes_nothing(awx, configured, run):  # pylint: disable=unused-argument
    """On a configured AWX, --check reports what a changed setting would change and changes nothing.
    (On an empty AWX awx.awx's check mode cannot go past the organization: every later module looks
    up the objects the earlier ones would have made; README "Job templates as code".)"""
    client = awx
    before, seen = objects(client), len(client.state()['requests'])
    result = run('--check', '--diff', extra_vars={'cloudpods_awx_drift_pods': PODS + ['new-pod'],
                                                  'cloudpods_awx_notify_to': ['other@example.net']})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert_no_secret(result)
    assert recap(result)['changed'] >= 2
    assert objects(client) == before
    assert not [r for r in client.state()['requests'][seen:] if r['method'] not in ('GET', 'HEAD', 'OPTIONS')]


def test_survey_refuses_a_bad_answer_at_launch(awx, configured):  # pylint: disable=unused-argument
    client = awx
    jt = client.ok('/api/v2/job_templates/Cloud%20Pods%3A%20provision++' + ORG + '/')
    with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml'), encoding='utf-8') as handle:
        plans = list(yaml.safe_load(handle)['cloudpods_plans'])
    status, data = client.call('POST', jt['related']['launch'], {'extra_vars': {
        'pod': 'shop-example-com', 'plan': 'CLOUD_POD_GOLD', 'customer_email': 'jane@example.org'}})
    assert (status, data) == (400, {'variables_needed_to_start': [
        "Value CLOUD_POD_GOLD for 'plan' expected to be one of %s." % plans]})
    status, data = client.call('POST', jt['related']['launch'], {'extra_vars': {'pod': 'shop-example-com', 'plan': plans[0]}})
    assert (status, data) == (400, {'variables_needed_to_start': ["'customer_email' value missing"]})
    assert client.ok('/api/v2/jobs/')['count'] == 0
    status, data = client.call('POST', jt['related']['launch'], {'extra_vars': {
        'pod': 'shop-example-com', 'plan': plans[0], 'customer_email': 'jane@example.org', 'ssh_public_keys': []}})
    assert status == 201 and json.loads(data['extra_vars'])['plan'] == plans[0]


def test_a_pod_gone_from_the_list_loses_its_schedule_and_nothing_else(awx, configured, run):  # pylint: disable=unused-argument
    client = awx
    drift = client.ok('/api/v2/job_templates/Cloud%20Pods%3A%20repair%20(drift%20check)++' + ORG + '/')
    fleet = client.ok('/api/v2/job_templates/Cloud%20Pods%3A%20repair_fleet%20(drift%20check)++' + ORG + '/')
    before = objects(client)
    awx.configured = None  # from here the stand-in is no longer what one run made
    third = run(extra_vars={'cloudpods_awx_drift_pods': PODS[:1]})
    assert third.returncode == 0, third.stdout[-6000:]
    assert recap(third)['changed'] == 1, third.stdout[-6000:]
    assert [s['extra_data']['pod'] for s in client.results('/api/v2/schedules/?unified_job_template=%d' % drift['id'])] \
        == PODS[:1]
    assert len(client.results('/api/v2/schedules/?unified_job_template=%d' % fleet['id'])) == 1  # not per pod: kept
    after = objects(client)
    gone = [s for s in before['schedules'] if s['name'].endswith(' - ' + PODS[1])]
    assert len(gone) == 1 and after == dict(before, schedules=[s for s in before['schedules'] if s not in gone])


@pytest.mark.parametrize('token', ['not-a-known-token', ''])
def test_refused_token_fails_first_and_changes_nothing(client, run, token):
    result = run(token=token)
    assert result.returncode != 0
    assert_no_secret(result)
    assert 'Invalid authentication credentials for /api/v2/me/ (HTTP 401)' in result.stdout, result.stdout[-3000:]
    assert 'An expired or unknown token (CONTROLLER_OAUTH_TOKEN) needs a new one' in result.stdout
    assert 'nothing was changed in AWX' in result.stdout
    assert all(not items for items in client.state()['objects'].values())
    assert not [r for r in client.state()['requests'] if r['method'] not in ('GET', 'HEAD', 'OPTIONS')]


# ------------------------------------------------------------------ the stand-in's new objects, by the API


def post(client, path, body):
    return client.call('POST', path, body)


def base_objects(client):
    org = post(client, '/api/v2/organizations/', {'name': 'O'})[1]['id']
    manual = post(client, '/api/v2/projects/', {'name': 'manual', 'organization': org})[1]
    inv = post(client, '/api/v2/inventories/', {'name': 'I', 'organization': org})[1]['id']
    jt = post(client, '/api/v2/job_templates/', {'name': 'J', 'project': manual['id'], 'playbook': 'playbooks/repair.yml',
                                                 'inventory': inv, 'job_type': 'check'})[1]
    return org, manual, inv, jt


def test_schedule_rrule_and_prompts_are_checked_as_awx_does(client):
    _org, _manual, _inv, jt = base_objects(client)
    url = '/api/v2/schedules/'
    cases = [
        ('RRULE:FREQ=DAILY;INTERVAL=1', ['Valid DTSTART required in rrule. Value should start with: DTSTART:YYYYMMDDTHHMMSSZ']),
        ('DTSTART:20260101T020000 RRULE:FREQ=DAILY;INTERVAL=1',
         ['DTSTART cannot be a naive datetime.  Specify ;TZINFO= or YYYYMMDDTHHMMSSZZ.']),
        ('DTSTART:20260101T020000Z', ['One or more rule required in rrule.']),
        ('DTSTART:20260101T020000Z RRULE:FREQ=DAILY', ['INTERVAL required in rrule: RULE:FREQ=DAILY']),
        ('DTSTART:20260101T020000Z RRULE:FREQ=DAILY;INTERVAL=1;COUNT=5;UNTIL=20270101T000000Z',
         ['RRULE may not contain both COUNT and UNTIL: RULE:FREQ=DAILY;INTERVAL=1;COUNT=5;UNTIL=20270101T000000Z']),
        ('DTSTART:20260101T020000Z RRULE:FREQ=FORTNIGHTLY;INTERVAL=1', ['rrule parsing failed validation: invalid frequency']),
    ]
    for rrule, messages in cases:
        assert post(client, url, {'name': 'S', 'unified_job_template': jt['id'], 'rrule': rrule}) == (400, {'rrule': messages})
    good = 'DTSTART:20260101T020000Z RRULE:FREQ=DAILY;INTERVAL=1'
    # job_type equal to the template's is no prompt; another one needs ask_job_type_on_launch; so do variables
    refused = {'job_type': ['Field is not configured to prompt on launch.'],
               'extra_data': ['Variables pod are not allowed on launch. Check the Prompt on Launch setting on the Job Template '
                              'to include Extra Variables.']}
    assert post(client, url, {'name': 'S', 'unified_job_template': jt['id'], 'rrule': good, 'job_type': 'run',
                              'extra_data': {'pod': 'x'}}) == (400, refused)
    status, made = post(client, url, {'name': 'S', 'unified_job_template': jt['id'], 'rrule': good, 'job_type': 'check'})
    assert status == 201 and made['next_run'].endswith('T02:00:00Z') and made['timezone'] == 'UTC'
    assert post(client, url, {'name': 'S', 'unified_job_template': jt['id'], 'rrule': good}) == (
        400, {'__all__': ['Schedule with this Name and Unified job template already exists.']})
    assert [s['id'] for s in client.results(jt['related']['schedules'])] == [made['id']]


def test_inventory_source_and_notification_template_rules(client):
    org, manual, inv, jt = base_objects(client)
    url = '/api/v2/inventory_sources/'
    assert post(client, url, {'name': 'S', 'inventory': inv, 'source': 'scm'}) == (
        400, {'source_project': ['Project required for scm type sources.']})
    assert post(client, url, {'name': 'S', 'inventory': inv, 'source': 'scm', 'source_project': manual['id']}) == (
        400, {'source_project': ['Cannot use manual project for SCM-based inventory.']})
    assert post(client, url, {'name': 'S', 'inventory': inv, 'source': 'ec2', 'source_path': 'x.yml'}) == (
        400, {'detail': 'Cannot set source_path if not SCM type.'})
    git = post(client, '/api/v2/projects/', {'name': 'git', 'organization': org, 'scm_type': 'git',
                                             'scm_url': 'https://git.example.net/x.git'})[1]
    assert git['status'] == 'failed' and git['scm_revision'] == ''  # the lab reaches no other host
    assert post(client, url, {'name': 'S', 'inventory': inv, 'source': 'scm', 'source_project': git['id']})[0] == 201

    url = '/api/v2/notification_templates/'
    refused = {'non_field_errors': [
        "No values specified for field 'recipients'",
        "Missing required fields for Notification Configuration: ['username', 'password', 'use_tls', 'use_ssl', 'sender'].",
        "Configuration field 'port' incorrect type, expected int."]}
    assert post(client, url, {'name': 'N', 'organization': org, 'notification_type': 'email',
                              'notification_configuration': {'host': 'h', 'port': '25', 'recipients': []}}) == (400, refused)
    config = {'host': 'h', 'port': 25, 'username': 'u', 'password': 'pw-1', 'use_tls': True, 'use_ssl': False,
              'sender': 'a@example.net', 'recipients': ['b@example.net']}
    status, note = post(client, url, {'name': 'N', 'organization': org, 'notification_type': 'email',
                                      'notification_configuration': config})
    assert status == 201 and note['notification_configuration'] == dict(config, password='$encrypted$', timeout=30)
    # "$encrypted$" sent back keeps the stored password (AWX's rule)
    status, _data = client.call('PATCH', note['url'], {'notification_configuration': dict(config, password='$encrypted$', host='h2')})
    assert status == 200
    stored = client.app.store.objects['notification_templates'][note['id']]['notification_configuration']
    assert (stored['password'], stored['host']) == ('pw-1', 'h2')
    # attach on success, detach, unknown id
    path = jt['related']['notification_templates_success']
    assert client.call('POST', path, {'id': note['id']})[0] == 204
    assert [n['id'] for n in client.results(path)] == [note['id']]
    assert client.call('POST', path, {'id': 999}) == (400, {'detail': 'NotificationTemplate matching query does not exist.'})
    assert client.call('POST', path, {'id': note['id'], 'disassociate': True})[0] == 204
    assert client.results(path) == []
