# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's AWX stand-in (tests/lab/awxsim, started by ``tests/lab/lab up``) runs its jobs with
ansible-runner: the playbook of the template's project, the credentials' injectors, job events,
stdout, artifacts from set_stats, statuses and cancel; awxkit's ``awx ... --monitor`` and awx.awx's
``job_launch wait: true`` follow real runs; and mpanel.cloudpods.provision runs as an AWX job against
the lab's simulator with the four credential types' credentials.

Every test makes its own organization (a unique name) in the shared stand-in and never resets it.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SUPPORT = os.path.join(ROOT, 'tests', 'support')
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

from awx_credentials import lab_credential_inputs, load_credential_type  # noqa: E402  pylint: disable=wrong-import-position,import-error
from podplays import HostDirs, container, new_pod, pods_named, remove_pod  # noqa: E402  pylint: disable=wrong-import-position,import-error

FINISHED = ('successful', 'failed', 'error', 'canceled')
AWX_CLI = shutil.which('awx', path=os.path.dirname(sys.executable))
PLAYBOOKS = 'tests/support/awx_project/'
EVENT_FIELDS = ('id', 'created', 'job', 'event', 'counter', 'event_data', 'failed', 'changed', 'uuid', 'parent_uuid',
                'host_name', 'play', 'task', 'role', 'stdout', 'start_line', 'end_line')
TEST_TYPE = {
    'kind': 'cloud',
    'inputs': {'fields': [{'id': 'user', 'label': 'User', 'type': 'string'},
                          {'id': 'secret', 'label': 'Secret', 'type': 'string', 'secret': True}],
               'required': ['user', 'secret']},
    'injectors': {'env': {'AWXSIM_TEST_SECRET': '{{ secret }}', 'AWXSIM_TEST_USER': '{{ user }}',
                          'AWXSIM_TEST_FILE': '{{ tower.filename }}'},
                  'file': {'template': '{{ secret }}'},
                  'extra_vars': {'awxsim_test_user': '{{ user }}'}},
}


class Awx:
    """The lab's stand-in, with the admin token of ``.lab/env``."""

    def __init__(self, env):
        if 'CONTROLLER_HOST' not in env:
            pytest.fail('the lab has no AWX stand-in (CONTROLLER_HOST missing from .lab/env): run tests/lab/lab up')
        self.env = env
        self.base = env['CONTROLLER_HOST']

    def call(self, method, path, body=None, raw=False):
        data = json.dumps(body).encode() if body is not None else None
        headers = {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + self.env['CONTROLLER_OAUTH_TOKEN']}
        if path.startswith('/_lab'):
            headers = {'X-Lab-Key': self.env['AWXSIM_CONTROL_KEY']}
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            text, status = exc.read(), exc.code
        if raw:
            return status, text.decode()
        return status, (json.loads(text) if text else None)

    def ok(self, method, path, body=None, status=200):
        got, data = self.call(method, path, body)
        assert got == status, (method, path, got, data)
        return data

    def create(self, kind, body):
        return self.ok('POST', '/api/v2/%s/' % kind, body, 201)['id']

    def wait(self, job_id, until=FINISHED, bound=600):
        """The job once its status is one of ``until`` (polled; ``bound`` seconds at most)."""
        deadline = time.monotonic() + bound
        while True:
            job = self.ok('GET', '/api/v2/jobs/%d/' % job_id)
            if job['status'] in until or time.monotonic() > deadline:
                return job
            time.sleep(0.5)

    def events(self, job_id):
        found, path = [], '/api/v2/jobs/%d/job_events/?page_size=200' % job_id
        while path:
            page = self.ok('GET', path)
            found += page['results']
            path = page['next']
        return found


@pytest.fixture(scope='module')
def awx(lab_env):
    return Awx(lab_env)


@pytest.fixture
def seeded(awx):
    """An organization of its own, the test credential type and credential, the checkout's project,
    an inventory and three job templates (ok, fail, sleep)."""
    tag = uuid.uuid4().hex[:8]
    secret = 'awxsim-secret-' + uuid.uuid4().hex
    ids = {'secret': secret, 'tag': tag}
    ids['org'] = awx.create('organizations', {'name': 'jobs-' + tag})
    ids['type'] = awx.create('credential_types', dict(TEST_TYPE, name='Test type ' + tag))
    ids['cred'] = awx.create('credentials', {'name': 'test-' + tag, 'organization': ids['org'], 'credential_type': ids['type'],
                                             'inputs': {'user': 'deployer', 'secret': secret}})
    ids['project'] = awx.create('projects', {'name': 'checkout', 'organization': ids['org'], 'scm_type': '',
                                             'local_path': awx.env['AWXSIM_PROJECT_LOCAL_PATH']})
    ids['inventory'] = awx.create('inventories', {'name': 'local', 'organization': ids['org'],
                                                  'variables': 'ansible_python_interpreter: %s' % sys.executable})
    common = {'project': ids['project'], 'inventory': ids['inventory'], 'ask_variables_on_launch': True}
    for name in ('ok', 'fail', 'sleep'):
        ids[name] = awx.create('job_templates', dict(common, name='%s-%s' % (name, tag), playbook=PLAYBOOKS + name + '.yml',
                                                     extra_vars=json.dumps({'secret_sha256': hashlib.sha256(secret.encode()).hexdigest(),
                                                                            'expected_user': 'deployer'})))
        awx.ok('POST', '/api/v2/job_templates/%d/credentials/' % ids[name], {'id': ids['cred']}, 204)
    return ids


def launch(awx, jt, **body):
    return awx.ok('POST', '/api/v2/job_templates/%d/launch/' % jt, body, 201)['job']


def test_a_job_runs_its_playbook_with_the_credential_injected(awx, seeded):
    job_id = launch(awx, seeded['ok'], extra_vars={'greeting': '{{ 7 * 6 }}'})
    job = awx.wait(job_id)
    assert job['status'] == 'successful', job['result_traceback']
    assert job['failed'] is False and job['started'] and job['finished'] and job['elapsed'] > 0
    assert job['event_processing_finished'] is True
    # set_stats (per_host false) is the job's artifacts; the launch's own value arrived !unsafe (not templated)
    assert job['artifacts'] == {'greeting': '{{ 7 * 6 }}', 'job_id': str(job_id), 'check_mode': False, 'verbosity': 0}
    # job_env: the secret masked as AWX does, the rest as injected
    env = job['job_env']
    assert env['AWXSIM_TEST_SECRET'] == '**********' and env['AWXSIM_TEST_USER'] == 'deployer'
    assert env['JOB_ID'] == str(job_id) and env['AWXSIM_TEST_FILE'].startswith(env['AWX_PRIVATE_DATA_DIR'])

    events = awx.events(job_id)
    assert all(set(EVENT_FIELDS) <= set(event) for event in events)
    # (a warning about the empty inventory comes first, as a ``verbose`` event)
    names = [event['event'] for event in events if event['event'] != 'verbose']
    assert names[0] == 'playbook_on_start' and names[-1] == 'playbook_on_stats'
    assert [event['counter'] for event in events] == sorted(event['counter'] for event in events)
    hello = [event for event in events if event['event'] == 'runner_on_ok' and event['task'] == 'Say hello']
    assert len(hello) == 1 and hello[0]['host_name'] == 'localhost' and hello[0]['play'] == 'AWX stand-in test play'
    assert hello[0]['parent_uuid'] and not hello[0]['failed']
    page = awx.ok('GET', '/api/v2/jobs/%d/job_events/?page_size=3' % job_id)
    assert page['count'] == len(events) and len(page['results']) == 3 and 'page=2' in page['next']

    status, text = awx.call('GET', '/api/v2/jobs/%d/stdout/?format=txt' % job_id, raw=True)
    assert status == 200 and 'hello from job %d' % job_id in text and 'PLAY RECAP' in text
    # the secret never shows: not in the output, the events, the job
    everything = text + json.dumps(events) + json.dumps(job)
    assert seeded['secret'] not in everything
    # the private data dir (credential files, env) is gone with the job
    runner = awx.ok('GET', '/_lab/jobs/%d/runner' % job_id)
    assert runner['private_data_dir'] and not os.path.exists(runner['private_data_dir'])


def test_extra_vars_template_survey_launch_precedence(awx, seeded):
    """Template extra vars < survey defaults < the launch's answers; Jinja in what the template and its
    survey give is templated (AWX's ALLOW_JINJA_IN_EXTRA_VARS=template), in what a launch gives it is not."""
    template_vars = json.loads(awx.ok('GET', '/api/v2/job_templates/%d/' % seeded['ok'])['extra_vars'])
    awx.ok('PATCH', '/api/v2/job_templates/%d/' % seeded['ok'], {
        'extra_vars': json.dumps(dict(template_vars, greeting='from the template')), 'survey_enabled': True})
    awx.ok('POST', '/api/v2/job_templates/%d/survey_spec/' % seeded['ok'], {
        'name': 'greeting', 'description': '', 'spec': [
            {'type': 'text', 'question_name': 'Greeting', 'variable': 'greeting', 'required': False,
             'default': '{{ 6 * 7 }}'}]})
    job = awx.wait(launch(awx, seeded['ok']))
    assert job['status'] == 'successful' and job['artifacts']['greeting'] == 42
    job = awx.wait(launch(awx, seeded['ok'], extra_vars={'greeting': '{{ 6 * 7 }} said the launch'}))
    assert job['status'] == 'successful' and job['artifacts']['greeting'] == '{{ 6 * 7 }} said the launch'


def test_job_type_check_verbosity_and_limit_reach_ansible(awx, seeded):
    awx.ok('PATCH', '/api/v2/job_templates/%d/' % seeded['ok'], {
        'ask_job_type_on_launch': True, 'ask_verbosity_on_launch': True, 'ask_limit_on_launch': True})
    job = awx.wait(launch(awx, seeded['ok'], job_type='check', verbosity=2, limit='localhost', extra_vars={'greeting': 'x'}))
    assert job['status'] == 'successful' and (job['job_type'], job['verbosity'], job['limit']) == ('check', 2, 'localhost')
    assert job['artifacts']['check_mode'] is True and job['artifacts']['verbosity'] == 2
    # a limit that leaves no host: the play runs nowhere, nothing is handed back
    job = awx.wait(launch(awx, seeded['ok'], limit='no-such-host', extra_vars={'greeting': 'x'}))
    assert job['status'] == 'successful' and job['artifacts'] == {}
    assert not [event for event in awx.events(job['id']) if event['event'] == 'runner_on_ok']
    status, text = awx.call('GET', '/api/v2/jobs/%d/stdout/?format=txt' % job['id'], raw=True)
    assert status == 200 and 'no hosts matched' in text


def test_a_failing_playbook_fails_the_job(awx, seeded):
    job = awx.wait(launch(awx, seeded['fail']))
    assert job['status'] == 'failed' and job['failed'] is True
    failed = [event for event in awx.events(job['id']) if event['failed']]
    assert {event['event'] for event in failed} == {'runner_on_failed', 'playbook_on_stats'}
    assert [event['task'] for event in failed if event['event'] == 'runner_on_failed'] == ['Fail on purpose']


def test_an_inventory_the_stand_in_cannot_build_is_an_error(awx, seeded):
    smart = awx.create('inventories', {'name': 'smart', 'organization': seeded['org'], 'kind': 'smart'})
    awx.ok('PATCH', '/api/v2/job_templates/%d/' % seeded['ok'], {'inventory': smart})
    job = awx.wait(launch(awx, seeded['ok'], extra_vars={'greeting': 'x'}))
    assert job['status'] == 'error' and job['failed'] is True
    assert 'smart inventory' in job['result_traceback'] and job['started'] is None
    assert awx.events(job['id']) == []


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid, encoding='utf-8') as handle:
            return handle.read().split(') ', 1)[1][0] != 'Z'
    except OSError:
        return False


def _processes_naming(text):
    """Pids of the processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                    if text.encode() in handle.read() and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_cancel_stops_the_running_playbook(awx, seeded, tmp_path):
    pid_file = tmp_path / 'sleep.pid'
    job_id = launch(awx, seeded['sleep'], extra_vars={'pid_file': str(pid_file), 'seconds': 120})
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    sleeper = int(pid_file.read_text())
    assert _alive(sleeper)
    try:
        assert awx.ok('GET', '/api/v2/jobs/%d/' % job_id)['status'] == 'running'
        # ansible-playbook and its forks: the processes that name the job's private data dir
        pdd = awx.ok('GET', '/_lab/jobs/%d/runner' % job_id)['private_data_dir']
        ansible = _processes_naming(pdd)
        assert ansible
        assert awx.ok('GET', '/api/v2/jobs/%d/cancel/' % job_id) == {'can_cancel': True}
        assert awx.call('POST', '/api/v2/jobs/%d/cancel/' % job_id)[0] == 202
        job = awx.wait(job_id, bound=60)
        assert job['status'] == 'canceled' and job['cancel_flag'] is True and job['finished'] and job['failed'] is False
        # ansible-playbook, its forks (sessions of their own) and the module's shell are gone
        assert not [pid for pid in ansible + [sleeper] if _alive(pid)] and not _processes_naming(pdd)
        assert not os.path.exists(pdd)
        assert awx.call('POST', '/api/v2/jobs/%d/cancel/' % job_id)[0] == 405
    finally:
        if _alive(sleeper):  # only if the cancel failed to kill it: this test's own process
            os.kill(sleeper, 15)


def test_a_job_over_its_timeout_fails_and_its_processes_go(awx, seeded, tmp_path):
    awx.ok('PATCH', '/api/v2/job_templates/%d/' % seeded['sleep'], {'timeout': 3})
    pid_file = tmp_path / 'sleep.pid'
    job = awx.wait(launch(awx, seeded['sleep'], extra_vars={'pid_file': str(pid_file), 'seconds': 120}), bound=120)
    sleeper = int(pid_file.read_text())
    try:
        assert job['status'] == 'failed' and job['failed'] is True
        assert job['job_explanation'] == 'Job terminated due to timeout'
        assert not _alive(sleeper)
    finally:
        if _alive(sleeper):  # only if the timeout failed to kill it: this test's own process
            os.kill(sleeper, 15)


def _client_env(awx):
    return dict(os.environ, CONTROLLER_HOST=awx.base, CONTROLLER_OAUTH_TOKEN=awx.env['CONTROLLER_OAUTH_TOKEN'],
                CONTROLLER_VERIFY_SSL='false', ANSIBLE_NOCOLOR='1')


@pytest.mark.skipif(AWX_CLI is None, reason='awxkit (the awx CLI) is not installed in this venv')
def test_awxkit_launch_monitor_follows_a_real_run(awx, seeded):
    result = subprocess.run([AWX_CLI, 'job_templates', 'launch', str(seeded['ok']), '--monitor',
                             '--extra_vars', json.dumps({'greeting': 'from awxkit'}), '--conf.color', 'false'],
                            env=_client_env(awx), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # --monitor prints the job's events as they come, then the job
    assert 'TASK [Say hello]' in result.stdout and 'PLAY RECAP' in result.stdout
    jobs = awx.ok('GET', '/api/v2/jobs/?job_template=%d' % seeded['ok'])['results']
    assert [job['status'] for job in jobs] == ['successful']
    assert awx.ok('GET', '/api/v2/jobs/%d/' % jobs[0]['id'])['artifacts']['greeting'] == 'from awxkit'
    assert seeded['secret'] not in result.stdout


def test_awx_collection_job_launch_waits_for_a_real_run(awx, seeded, tmp_path):
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'awx.awx.job_launch': {'job_template': seeded['ok'], 'extra_vars': {'greeting': 'from awx.awx'}, 'wait': True,
                                'interval': 1}, 'register': 'launched'},
        {'ansible.builtin.copy': {'content': '{{ launched | to_json }}', 'dest': str(tmp_path / 'launched.json'), 'mode': '0600'}},
    ]}]
    (tmp_path / 'play.yml').write_text(yaml.safe_dump(play), encoding='utf-8')
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    result = subprocess.run([playbook, '-i', 'localhost,', '-c', 'local', str(tmp_path / 'play.yml'),
                             '-e', 'ansible_python_interpreter=%s' % sys.executable], env=_client_env(awx),
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    launched = json.loads((tmp_path / 'launched.json').read_text())
    assert launched['status'] == 'successful'
    job = awx.ok('GET', '/api/v2/jobs/%d/' % launched['id'])
    assert job['status'] == 'successful' and job['artifacts']['greeting'] == 'from awx.awx'


def test_provision_runs_as_an_awx_job_against_the_lab(awx, lab_env, lab_control, pdns, tmp_path):
    """The collection's real playbooks/provision.yml as an AWX job: the four credential types
    (awx/credential_types) as AWX credential types, credentials holding the lab's values, nothing
    else secret in the job's environment; the pod reaches its end and set_stats are the artifacts."""
    tag = uuid.uuid4().hex[:8]
    org = awx.create('organizations', {'name': 'provision-' + tag})
    inputs = lab_credential_inputs(lab_env, tmp_path)
    creds = []
    for name, values in inputs.items():
        ctype = load_credential_type(name)
        type_id = awx.create('credential_types', dict(ctype, name='%s %s' % (ctype['name'], tag)))
        creds.append(awx.create('credentials', {'name': '%s-%s' % (name, tag), 'organization': org,
                                                'credential_type': type_id, 'inputs': values}))
    project = awx.create('projects', {'name': 'cloudpods', 'organization': org, 'local_path': awx.env['AWXSIM_PROJECT_LOCAL_PATH']})
    inventory = awx.create('inventories', {'name': 'lab', 'organization': org,
                                           'variables': json.dumps({'ansible_python_interpreter': sys.executable})})
    dirs = HostDirs(tmp_path / 'host')
    jt = awx.create('job_templates', {'name': 'Provision', 'project': project, 'inventory': inventory,
                                      'playbook': 'playbooks/provision.yml', 'ask_variables_on_launch': True,
                                      'extra_vars': json.dumps(dirs.extra_vars())})
    for cred in creds:
        awx.ok('POST', '/api/v2/job_templates/%d/credentials/' % jt, {'id': cred}, 204)
    pod = new_pod('awx')
    domain = pod + '.test'
    try:
        job = awx.wait(launch(awx, jt, extra_vars={'pod': pod, 'plan': 'CLOUD_POD_STARTER', 'domain': domain,
                                                   'customer_email': pod + '@customer.test'}))
        status, text = awx.call('GET', '/api/v2/jobs/%d/stdout/?format=txt' % job['id'], raw=True)
        assert job['status'] == 'successful', text[-6000:] + job['result_traceback']
        [vmid] = pods_named(lab_control, pod)
        artifacts = job['artifacts']
        assert (artifacts['vmid'], artifacts['node']) == (vmid, 'pve')
        assert artifacts['ip'] and artifacts['ip'] == container(lab_control, pod)['ip']
        assert pdns.zone(domain) is not None
        for name in ('PROXMOX_API_TOKEN_SECRET', 'POWERDNS_API_KEY'):
            assert job['job_env'][name] == '**********'
            assert lab_env[name] not in text + json.dumps(awx.events(job['id'])) + json.dumps(job)
        assert status == 200
    finally:
        remove_pod(lab_env, pod)
        pdns.delete_zone(domain)
