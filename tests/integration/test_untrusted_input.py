# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Order data is never code, and a run leaves nothing behind (issue 10, parts 1 to 3).

- A payload battery (``{{ }}``, ``{% %}``, ``{# #}``; lookup, query, env, pipe), each payload a
  command that would create a canary file if it were ever rendered, in every field and header
  that can reach a playbook, and in a CT description edited by hand before a repair. Each is
  refused (422/400, or a playbook precondition that fails at once) or carried literally; the
  canary never appears, and no secret reaches a mail, an event or ``last_error``.
- Every operation's playbook gets order data as ``!unsafe`` extra vars, an allow-listed
  environment (a variable planted in the worker's environment does not reach it) and no file in
  its private directory holds a secret or that variable while it runs.
- kill -9 of the worker mid-clone: within 2 s no process of that run is left (its forks call
  setsid(), so only the run's cgroup catches them), its private run directory is gone (the guard
  removes it) and the simulator sees no further request; the next worker completes the order.
"""

import glob
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from runner_api import executors  # noqa: E402
from runner_api.app import create_app  # noqa: E402
from runner_api.auth import new_token  # noqa: E402
from runner_api.executors import LocalAnsibleRunner, RunRequest  # noqa: E402
from runner_api.settings import Settings  # noqa: E402
from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from test_runner_api_worker import Queue, containers_named, site_vars  # noqa: E402

SECRET_NAMES = ('PROXMOX_API_TOKEN_SECRET', 'POWERDNS_API_KEY', 'PVESIM_CONTROL_KEY')


class Canary(object):
    """A file that exists only if some template was rendered; payloads that would create it."""

    def __init__(self, directory):
        self.directory = str(directory)
        self.count = 0

    def command(self, tag):
        return 'touch %s/CANARY-%s' % (self.directory, tag)

    def payloads(self, tag, spaces=True):
        """The forms, each creating CANARY-<tag>-<n> when rendered."""
        made = []
        for form in ("{{ lookup('pipe', '%s') }}", "{{ query('pipe', '%s') }}",
                     "{%% set x = lookup('ansible.builtin.pipe', '%s') %%}{{ x }}",
                     "{# c #}{{ lookup('pipe', '%s') | default('') }}",
                     "{{ lookup('env', 'PROXMOX_API_TOKEN_SECRET') ~ lookup('pipe', '%s') }}"):
            self.count += 1
            command = self.command('%s-%d' % (tag, self.count))
            text = form % command
            if not spaces:
                text = text.replace(' ', '').replace('touch', 'touch${IFS}')
            made.append(text)
        return made

    def found(self):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.directory, 'CANARY-*')))


def secrets_of(env):
    return [env[name] for name in SECRET_NAMES if env.get(name)]


# ---------------------------------------------------------------- every operation, stub playbooks

STUB = """
- name: Stub of {name} that records what it received
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the extra vars, the environment and what the run directory holds
      ansible.builtin.copy:
        dest: "{{{{ stub_out_dir }}}}/{name}.json"
        mode: "0600"
        content: "{{{{ {{'pod': pod, 'customer_email': customer_email, 'domain': domain, 'nested': nested,
                     'secret': lookup('ansible.builtin.env', 'PROXMOX_API_TOKEN_SECRET'),
                     'planted': lookup('ansible.builtin.env', 'PROBE_PLANTED_VARIABLE'),
                     'files_with_planted': lookup('ansible.builtin.pipe', 'grep -rlF -- ' ~ planted_value ~ ' '
                                                  ~ stub_run_base ~ ' || true'),
                     'files_with_secret': lookup('ansible.builtin.pipe', 'grep -rlF -- ' ~ secret_value ~ ' '
                                                 ~ stub_run_base ~ ' || true'),
                     'files': lookup('ansible.builtin.pipe', 'find ' ~ stub_run_base ~ ' -type f')}} | to_json }}}}"
"""


def test_every_operation_gets_order_data_literally_and_an_allow_listed_environment(tmp_path, monkeypatch):
    canary = Canary(tmp_path)
    playbooks = tmp_path / 'playbooks'
    playbooks.mkdir()
    for name in set(executors.PLAYBOOKS.values()):
        (playbooks / name).write_text(STUB.format(name=name))
    out, run_base = tmp_path / 'out', tmp_path / 'runs'
    out.mkdir()
    planted = 'planted-' + uuid.uuid4().hex
    secret = 'secret-' + uuid.uuid4().hex
    operator = tmp_path / 'operator.json'  # the operator's (trusted) settings: outside the run directory
    operator.write_text(json.dumps({'stub_out_dir': str(out), 'stub_run_base': str(run_base),
                                    'planted_value': planted, 'secret_value': secret}))
    monkeypatch.setenv('PROBE_PLANTED_VARIABLE', planted)
    monkeypatch.setenv('CLOUDPODS_EXTRA_VARS_FILE', str(operator))
    settings = Settings(database_url='postgresql://unused@127.0.0.1/unused', plans_file=Path('unused'),
                        playbook_dir=playbooks, run_dir=run_base,
                        playbook_env={'PROXMOX_API_TOKEN_SECRET': secret, 'PROXMOX_API_URL': 'https://127.0.0.1:1'})
    runner = LocalAnsibleRunner(settings)
    # One run per operation, every field holding a payload; the forms rotate over the operations,
    # so each form meets each field once.
    for turn, (operation, name) in enumerate(sorted(executors.PLAYBOOKS.items())):
        forms = [canary.payloads('%s-%d' % (operation, field)) for field in range(5)]
        pick = [forms[field][(turn + field) % 5] for field in range(5)]
        extra = {'pod': pick[0], 'customer_email': pick[1], 'domain': pick[2],
                 'nested': {'list': [pick[3]], 'key': pick[4]}}
        result = runner.run(RunRequest(operation, extra), lambda event: None)
        assert result.ok, (operation, result)
        seen = json.loads((out / (name + '.json')).read_text())
        assert (seen['pod'], seen['customer_email'], seen['domain'], seen['nested']) == (
            extra['pod'], extra['customer_email'], extra['domain'], extra['nested'])
        assert seen['secret'] == secret  # the playbook has it: handed over by the guard
        assert seen['planted'] == ''  # ... but not the worker's other variables
        assert seen['files'], 'the run directory was empty while the playbook ran'
        assert seen['files_with_planted'] == '' and seen['files_with_secret'] == '', seen
    assert canary.found() == []
    assert list(run_base.iterdir()) == []  # every run directory removed


# ---------------------------------------------------------------- the real playbooks, through API and worker

@pytest.fixture
def queue(lab_env, tmp_path):
    with scratch_database(lab_env['DATABASE_URL']) as url:
        env = worker_environment(lab_env, url, extra_vars_file=site_vars(tmp_path), lease_seconds=10,
                                 heartbeat_seconds=1, poll_seconds=1, retry_base_seconds=0.2, retry_max_seconds=0.5,
                                 run_dir=tmp_path / 'runs')
        queue = Queue(url, env, tmp_path)
        try:
            yield queue
        finally:
            queue.stop_all()


def _mail_text(lab_env):
    text = ''
    for path in glob.glob(os.path.join(lab_env['SMTP_MAILBOX_DIR'], '**', '*'), recursive=True):
        if os.path.isfile(path):
            with open(path, 'rb') as handle:
                text += handle.read().decode('utf-8', 'replace')
    return text


def test_payloads_in_every_order_field_are_refused_at_once_and_never_rendered(queue, lab_env, tmp_path):
    canary = Canary(tmp_path)
    # 1. Through the API: every body field refuses them (422) and nothing is written.
    settings = Settings.from_env({'DATABASE_URL': queue.database_url})
    app = create_app(settings, queue.repository)
    client = app.test_client()
    token = new_token()
    queue.repository.create_token('mpanel', 'service', None, token)
    headers = {'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'cust-7'}
    before = queue.repository.count_rows()
    for payload in canary.payloads('api-email') + canary.payloads('api-email', spaces=False):
        response = client.post('/api/cloud-pods/order', headers=headers, json={
            'plan_code': 'CLOUD_POD_STARTER', 'customer_email': payload + '@example.org'})
        assert response.status_code == 422, (payload, response.get_json())
    for payload in canary.payloads('api-domain') + canary.payloads('api-domain', spaces=False):
        response = client.post('/api/cloud-pods/order', headers=headers, json={
            'plan_code': 'CLOUD_POD_STARTER', 'customer_email': 'jane@example.org', 'domain': payload + '.example.org'})
        assert response.status_code == 422, (payload, response.get_json())
    for payload in canary.payloads('api-plan'):
        response = client.post('/api/cloud-pods/order', headers=headers, json={
            'plan_code': payload, 'customer_email': 'jane@example.org'})
        assert response.status_code == 422, (payload, response.get_json())
    assert queue.repository.count_rows() == before

    # 2. Headers that are accepted are carried literally: the order goes ACTIVE, nothing rendered.
    customer = canary.payloads('header-customer', spaces=False)[0]
    key = canary.payloads('header-key', spaces=False)[1]
    email = "o'brien|shop+%s@example.org" % uuid.uuid4().hex[:6]  # quotes and pipes are data too
    response = client.post('/api/cloud-pods/order', json={'plan_code': 'CLOUD_POD_STUDENT', 'customer_email': email},
                           headers=dict(headers, **{'X-Customer-Id': customer, 'Idempotency-Key': key}))
    assert response.status_code == 202, response.get_json()
    accepted = response.get_json()['id']

    # 3. Rows that bypass the API (an older API, a hand-made row) meet the playbook's own check,
    #    which fails at once (a precondition: no retry) with the value quoted literally.
    bad = {}
    for payload in canary.payloads('row-email')[:3]:
        row = queue.order(email=payload + '@example.org', max_attempts=5)
        bad[str(row['id'])] = payload
    for payload in canary.payloads('row-domain')[2:]:
        row = queue.order(domain=payload + '.example.org', max_attempts=5)
        bad[str(row['id'])] = payload
    queue.start('w')
    queue.wait(lambda: all(r['status'] in ('ACTIVE', 'FAILED') for r in queue.subscriptions().values()), 180,
               'every order to end')
    rows = queue.subscriptions()
    assert rows[accepted]['status'] == 'ACTIVE', rows[accepted]['last_error']
    for pod_id, payload in bad.items():
        assert rows[pod_id]['status'] == 'FAILED'
        assert "extra var 'customer_email'" in rows[pod_id]['last_error'] or \
            "extra var 'domain'" in rows[pod_id]['last_error'], rows[pod_id]['last_error']
        assert json.dumps(payload)[1:-1].split('(')[0] in rows[pod_id]['last_error']  # quoted, as it was
    attempts = queue.rows('SELECT subscription_id, attempts FROM cloud_pod_provisioning_tasks')
    assert all(t['attempts'] == 1 for t in attempts if str(t['subscription_id']) in bad)
    stored = queue.rows('SELECT customer_id, idempotency_key FROM cloud_pod_subscriptions WHERE id = %s', (accepted,))
    assert (stored[0]['customer_id'], stored[0]['idempotency_key']) == (customer, key)
    assert canary.found() == []
    dump = json.dumps(queue.rows('SELECT * FROM cloud_pod_events'), default=str)
    dump += json.dumps(queue.rows('SELECT * FROM cloud_pod_subscriptions'), default=str)
    mail = _mail_text(lab_env)
    assert email in mail
    for secret in secrets_of(lab_env):
        assert secret not in dump and secret not in mail and secret not in queue.all_logs()


def test_hand_edited_description_before_repair_is_data(lab_env, lab_control, tmp_path, monkeypatch):
    canary = Canary(tmp_path)
    monkeypatch.setenv('CLOUDPODS_EXTRA_VARS_FILE', str(site_vars(tmp_path)))
    settings = Settings.from_env(dict(lab_env, DATABASE_URL='postgresql://unused@127.0.0.1/unused',
                                      CLOUDPODS_RUN_DIR=str(tmp_path / 'runs')), worker=True)
    runner = LocalAnsibleRunner(settings)
    pod = 'hand-%s' % uuid.uuid4().hex[:8]
    events = []
    created = runner.run(RunRequest('CREATE_CONTAINER', {'pod': pod, 'plan': 'CLOUD_POD_STARTER', 'domain': '',
                                                         'customer_email': 'jane@example.org'}), events.append)
    assert created.ok, created
    vmid = int(created.stats['vmid'])
    try:
        # Free text around the record lines: carried literally, the repair succeeds.
        prose = canary.payloads('prose')
        lab_control.set_container(vmid, description='Cloud Pod %s\n%s\ncloudpods-pod: %s\ncloudpods-plan: '
                                  'CLOUD_POD_STARTER\n%s\n' % (pod, prose[0], pod, prose[2]))
        repaired = runner.run(RunRequest('REPAIR', {'pod': pod}), events.append)
        assert repaired.ok, repaired
        kept = lab_control.state()['containers'][str(vmid)]['config']['description']
        assert prose[0] in kept and prose[2] in kept, kept  # repair rewrites the record lines only
        # The record lines themselves: the domain read from the CT fails the domain check at once.
        for payload in canary.payloads('record', spaces=False)[:3]:
            lab_control.set_container(vmid, description='cloudpods-pod: %s\ncloudpods-plan: CLOUD_POD_STARTER\n'
                                      'cloudpods-domain: %s\n' % (pod, payload))
            failed = runner.run(RunRequest('REPAIR', {'pod': pod}), events.append)
            assert not failed.ok and not failed.retryable, failed
            assert 'cloudpods-domain line' in failed.error and payload[:12] in failed.error, failed.error
            for secret in secrets_of(lab_env):
                assert secret not in failed.error
        assert canary.found() == []
        for secret in secrets_of(lab_env):
            assert secret not in json.dumps(events)
    finally:
        runner.run(RunRequest('TERMINATE', {'pod': pod}), lambda event: None)


# ---------------------------------------------------------------- kill -9 mid-clone

def _processes_with(marker):
    """PIDs whose environment holds ``marker`` (a NAME=value line), and their session ids."""
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/environ' % entry, 'rb') as handle:
                if marker.encode() in handle.read().split(b'\0'):
                    found[int(entry)] = os.getsid(int(entry))
        except (OSError, ProcessLookupError):
            continue
    return found


def test_kill_9_mid_clone_leaves_no_process_no_request_and_no_file(private_lab, tmp_path):
    control = LabControl.from_env(private_lab)
    control.clear_faults()
    # The clone task is held running until released: the kill lands mid-clone, and a playbook that
    # outlived its worker would still be polling the held task, so "gone" below means killed.
    control.hold('vzclone')
    planted = 'planted-' + uuid.uuid4().hex
    run_base = tmp_path / 'runs'
    try:
        with scratch_database(private_lab['DATABASE_URL']) as url:
            env = worker_environment(private_lab, url, extra_vars_file=site_vars(tmp_path), lease_seconds=3,
                                     heartbeat_seconds=1, poll_seconds=1, run_dir=run_base)
            env['PROBE_PLANTED_VARIABLE'] = planted
            queue = Queue(url, env, tmp_path)
            try:
                since = int(time.time())
                pod = queue.order()
                doomed = queue.start('doomed')
                control.wait_held('vzclone', timeout=120)
                run = _processes_with('CLOUDPODS_WORKER_PID=%d' % doomed.pid)
                assert len(run) >= 3, run  # guard, ansible-playbook, its fork running the module
                assert len(set(run.values())) > 1, 'no fork left the session: the test would prove nothing'
                files = [p for p in run_base.rglob('*') if p.is_file()]
                assert files
                for path in files:
                    data = path.read_bytes()
                    for value in [planted] + secrets_of(private_lab):
                        assert value.encode() not in data, (path, value[:6])
                [run_dir] = list(run_base.iterdir())
                doomed.kill()
                killed = time.monotonic()
                doomed.wait()
                del queue.workers['doomed']
                while _processes_with('CLOUDPODS_WORKER_PID=%d' % doomed.pid) and time.monotonic() - killed < 60:
                    time.sleep(0.05)
                gone_after, gone = time.monotonic() - killed, time.time()
                assert not _processes_with('CLOUDPODS_WORKER_PID=%d' % doomed.pid)
                assert [h['state'] for h in control.holds()] == ['holding']  # gone while the clone still ran
                # The guard removed the private run directory before it ended (its last act): no other
                # worker has run on this machine since the kill, so nothing else could have.
                assert not run_dir.exists(), sorted(str(p) for p in run_dir.rglob('*'))
                assert list(run_base.iterdir()) == []
                control.release('vzclone')
                queue.wait(lambda: [t['status'] for t in control.state()['tasks']
                                    if t['type'] == 'vzclone' and t['starttime'] >= since] == ['stopped'], 60,
                           'the clone task to end')
                time.sleep(3)  # the clone task has ended: a live run would now configure and start
                late = [r for r in control.requests() if r['time'] > gone + 0.5]  # (+ one in flight)
                assert late == [], late
                queue.start('rescuer')
                queue.wait_all('ACTIVE', timeout=120)
                assert 'left behind by a worker that died' not in queue.log('rescuer')  # nothing was left
                row = queue.subscriptions()[str(pod['id'])]
                assert containers_named(control, pod['hostname']) == [str(row['vmid'])]
                for path in [p for p in run_base.rglob('*') if p.is_file()] + [tmp_path / 'rescuer.log']:
                    assert planted.encode() not in path.read_bytes()
            finally:
                queue.stop_all()
    finally:
        control.clear_faults()
    print('run processes gone %.2f s after kill -9' % gone_after)
