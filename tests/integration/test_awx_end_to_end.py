# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX path end to end on the shared lab: playbooks/awx/configure.yml sets up the lab's AWX
stand-in (awxsim: the project is this checkout as a git URL, checked out by the project update),
then runner_api (the API in process, ``cloudpods worker`` as a process, CLOUDPODS_EXECUTOR=awx)
takes an order as mPanel places it. The worker launches the provision job template, awxsim runs the
playbook from its checkout through ansible-runner against the lab's Proxmox simulator, PowerDNS and
SMTP with the credentials configure.yml made, and the order ends ACTIVE with what the simulator holds.

The lab's node is this machine (``.lab/inventory``): the node group gets ``localhost`` with a local
connection (cloudpods_awx_proxmox_nodes) and the inventory the site settings of ``.lab/site.yml``
(cloudpods_awx_inventory_variables)."""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.repository import Repository, open_pool  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, start_worker, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from test_runner_api import ALICE  # noqa: E402

PLAYBOOK = os.path.join(ROOT, 'playbooks', 'awx', 'configure.yml')
PLANS_FILE = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')
SSH_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nssh-e2e-unused-key\n-----END OPENSSH PRIVATE KEY-----\n'
SECRET_KEYS = ('PROXMOX_API_TOKEN_SECRET', 'POWERDNS_API_KEY', 'CONTROLLER_OAUTH_TOKEN')


def awx_call(lab_env, path, lab=False, method='GET', body=None):
    headers = {'Content-Type': 'application/json'}
    if lab:
        headers['X-Lab-Key'] = lab_env['AWXSIM_CONTROL_KEY']
    else:
        headers['Authorization'] = 'Bearer ' + lab_env['CONTROLLER_OAUTH_TOKEN']
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(lab_env['CONTROLLER_HOST'].rstrip('/') + path, data=data, method=method,
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def configure(lab_env, tmp_path):
    """configure.yml against the lab's awxsim, the credentials' inputs from the lab's settings."""
    key = tmp_path / 'id_ed25519'
    key.write_text(SSH_KEY, encoding='utf-8')
    with open(os.path.join(ROOT, '.lab', 'site.yml'), encoding='utf-8') as handle:
        site = yaml.safe_load(handle)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PROXMOX_', 'POWERDNS_', 'SMTP_', 'CONTROLLER_'))}
    env.update({k: v for k, v in lab_env.items() if k.startswith(('PROXMOX_', 'POWERDNS_', 'SMTP_', 'CONTROLLER_'))})
    env.update(ANSIBLE_NOCOLOR='1', PROXMOX_SSH_HOST='127.0.0.1', PROXMOX_SSH_PORT='22', PROXMOX_SSH_USER='root',
               PROXMOX_SSH_KEY_FILE=str(key), SMTP_USERNAME='', SMTP_PASSWORD='')
    extra = {'cloudpods_awx_scm_url': 'file://' + ROOT, 'cloudpods_awx_mail_from': 'noreply@example.net',
             'cloudpods_awx_notify_to': ['ops@example.net'], 'cloudpods_awx_drift_pods': [],
             'cloudpods_awx_proxmox_nodes': [{'name': 'localhost', 'ansible_connection': 'local',
                                              'ansible_python_interpreter': sys.executable}],
             'cloudpods_awx_inventory_variables': site}
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    result = subprocess.run([playbook, '-i', 'localhost,', PLAYBOOK, '-e', json.dumps(extra),
                             '-e', 'ansible_python_interpreter=%s' % sys.executable],
                            env=env, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result


def secrets_of(lab_env):
    return [lab_env[key] for key in SECRET_KEYS if lab_env.get(key)]


def test_order_through_awx_reaches_active(lab_env, tmp_path):
    awx_call(lab_env, '/_lab/reset', lab=True, method='POST')
    configured = configure(lab_env, tmp_path)
    for secret in secrets_of(lab_env):
        assert secret not in configured.stdout and secret not in configured.stderr
    project = awx_call(lab_env, '/api/v2/projects/Cloud%20Pods++Cloud%20Pods/')
    head = subprocess.run(['git', '-C', ROOT, 'rev-parse', 'HEAD'], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert project['status'] == 'successful' and project['scm_revision'] == head
    assert project['local_path'] == '_%d__cloud_pods' % project['id']

    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, executor='awx', awx_url=lab_env['CONTROLLER_HOST'],
                                 awx_token=lab_env['CONTROLLER_OAUTH_TOKEN'], awx_poll_seconds=0.5,
                                 awx_timeout_seconds=30, poll_seconds=0.5, max_attempts=1)
        settings = Settings.from_env({'DATABASE_URL': url, 'CLOUDPODS_PLANS_FILE': PLANS_FILE})
        pool = open_pool(settings, name='test-awx-e2e', min_size=1, max_size=2)
        repository = Repository(pool)
        token = new_token()
        repository.create_token('mpanel', 'service', None, token)
        client = create_app(settings, repository).test_client()
        log = tmp_path / 'worker.log'
        worker = start_worker(env, 'awx-e2e', str(log))
        try:
            domain = 'awx-e2e-%d.example.com' % os.getpid()
            response = client.post('/api/cloud-pods/order', json={
                'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org', 'domain': domain},
                headers={'Authorization': 'Bearer ' + token, 'X-Customer-Id': ALICE})
            assert response.status_code == 202, response.get_json()
            task = response.get_json()
            pod_id = task['id'] if 'pod_id' not in task else task['pod_id']
            row = None
            for _attempt in range(1200):  # bounded: at most ten minutes
                with pool.connection() as connection:
                    row = connection.execute("SELECT id, status, last_error FROM cloud_pod_provisioning_tasks "
                                             "WHERE subscription_id = %s AND task_type = 'CREATE_CONTAINER'",
                                             (pod_id,)).fetchone()
                if row['status'] in ('COMPLETED', 'FAILED') or worker.poll() is not None:
                    break
                time.sleep(0.5)
            assert row['status'] == 'COMPLETED', (row, log.read_text()[-4000:])
            pod = client.get('/api/cloud-pods/' + pod_id,
                             headers={'Authorization': 'Bearer ' + token, 'X-Customer-Id': ALICE}).get_json()
            assert pod['status'] == 'ACTIVE' and pod['vmid'] and pod['ip'], pod

            # What the simulator holds: the container of that vmid, on that node, with that address.
            containers = LabControl.from_env(lab_env).state()['containers']
            ct = containers[str(pod['vmid'])]
            assert ct['config']['hostname'] == pod['hostname']
            assert pod['ip'] == ct['ip'] and pod['node'] == lab_env['PROXMOX_NODE_NAME']

            # The AWX job that ran it: successful, the pod in its extra vars.
            jobs = awx_call(lab_env, '/api/v2/jobs/?order_by=-id&page_size=50')['results']
            ran = [job for job in jobs if json.loads(job['extra_vars'] or '{}').get('pod') == pod['hostname']]
            assert [job['status'] for job in ran] == ['successful'], ran
            assert ran[0]['name'] == 'Cloud Pods: provision'

            # The fleet's nightly drift check as AWX runs it (the template configure.yml made), on this pod:
            # the credentials' environment reaches repair_fleet.yml, and a pod just made is in plan.
            [fleet] = awx_call(lab_env, '/api/v2/job_templates/?name=%s'
                               % urllib.parse.quote('Cloud Pods: repair_fleet (drift check)'))['results']
            job = awx_call(lab_env, '/api/v2/job_templates/%d/launch/' % fleet['id'], method='POST',
                           body={'extra_vars': {'pods': [pod['hostname']]}})['job']
            for _attempt in range(600):  # bounded: at most five minutes
                status = awx_call(lab_env, '/api/v2/jobs/%d/' % job)
                if status['status'] in ('successful', 'failed', 'error', 'canceled'):
                    break
                time.sleep(0.5)
            request = urllib.request.Request(lab_env['CONTROLLER_HOST'].rstrip('/') + '/api/v2/jobs/%d/stdout/?format=txt'
                                             % job, headers={'Authorization': 'Bearer ' + lab_env['CONTROLLER_OAUTH_TOKEN']})
            with urllib.request.urlopen(request, timeout=30) as response:
                stdout = response.read().decode('utf-8', 'replace')
            assert status['status'] == 'successful' and status['job_type'] == 'check', (status, stdout[-4000:])
            assert '1 pods checked' in stdout and '1 in plan, drifted: none, refused: none' in stdout, stdout[-4000:]
            for secret in secrets_of(lab_env):
                assert secret not in stdout

            with pool.connection() as connection:
                events = connection.execute('SELECT step, status, message FROM cloud_pod_events '
                                            'WHERE subscription_id = %s ORDER BY id', (pod_id,)).fetchall()
            steps = [event['step'] for event in events]
            assert len(steps) > 5 and any('pod' in step.lower() for step in steps), steps
            dumped = json.dumps(events, default=str) + log.read_text()
            for secret in secrets_of(lab_env):
                assert secret not in dumped
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            pool.close()


def test_project_update_checks_out_local_git_only(tmp_path):
    """The stand-in's project update (no lab): a file:// project at a branch is checked out into
    ``_<id>__<slug>`` at that branch's commit; another URL fails the update and checks out nothing."""
    from awxsim.resources import Store  # pylint: disable=import-outside-toplevel
    repo = tmp_path / 'repo'
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.org', '-C', str(repo)]
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(repo)], check=True)
    (repo / 'site.yml').write_text('first\n', encoding='utf-8')
    subprocess.run(git + ['add', '.'], check=True)
    subprocess.run(git + ['commit', '-qm', 'one'], check=True)
    subprocess.run(git + ['checkout', '-qb', 'next'], check=True)
    (repo / 'site.yml').write_text('second\n', encoding='utf-8')
    subprocess.run(git + ['commit', '-qam', 'two'], check=True)
    subprocess.run(git + ['checkout', '-q', 'main'], check=True)
    next_head = subprocess.run(git + ['rev-parse', 'next'], capture_output=True, text=True, check=True).stdout.strip()
    root = tmp_path / 'projects'
    root.mkdir()
    store = Store(str(root))
    org = store.create('organizations', {'name': 'Org'})['id']
    project = store.create('projects', {'name': 'Cloud Pods', 'organization': org, 'scm_type': 'git',
                                        'scm_url': 'file://%s' % repo, 'scm_branch': 'next'})
    update = store.updates['project_updates'][1]
    assert (update['status'], update['scm_revision']) == ('successful', next_head)
    assert project['local_path'] == '_1__cloud_pods'
    assert (root / '_1__cloud_pods' / 'site.yml').read_text(encoding='utf-8') == 'second\n'
    other = store.create('projects', {'name': 'Far', 'organization': org, 'scm_type': 'git',
                                      'scm_url': 'https://git.example.org/cloudpods.git'})
    update = store.updates['project_updates'][2]
    assert update['status'] == 'failed' and 'only a git project on this machine' in update['job_explanation']
    assert other['local_path'] == '' and sorted(os.listdir(root)) == ['_1__cloud_pods']
