# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/rotate_token.yml against a private lab (issue 14, part 6): a rotation while 10 orders run.

The provisioning user and its privilege-separated token are made by bootstrap_node.yml with an administrator
token, as on a real node; runner_api's workers take that token from the secrets file (CLOUDPODS_SECRETS_FILE).
While the workers provision 10 pods, rotate_token.yml makes a new token with the old one's ACL entries, proves
it, writes it to the secrets file and to the AWX credential (an AWX stand-in of this module's own), waits its
grace period and revokes the old token. Every order reaches ACTIVE in one attempt; afterwards the simulator
refuses the old token (401) and takes the new one; the secrets file holds the new token, and the simulator's
request log shows that a task claimed after the rotation used it. Also: check mode and the refusals.
"""

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time

import pytest
import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, 'tests', 'support')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from awxsim.server import create_server  # noqa: E402
from cloudpods_testing import scratch_database, worker_environment  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from labenv import free_port  # noqa: E402
from playbooks import VENV_BIN, PlaybookRun, playbook_env  # noqa: E402
from runner_api.secrets_file import read as read_secrets  # noqa: E402
from test_runner_api_worker import Queue, site_vars  # noqa: E402

pytestmark = pytest.mark.own_lab

BOOTSTRAP = os.path.join(ROOT, 'playbooks', 'bootstrap_node.yml')
ROTATE = os.path.join(ROOT, 'playbooks', 'rotate_token.yml')
CREDENTIAL_TYPE = os.path.join(ROOT, 'awx', 'credential_types', 'proxmox_api.yml')
ADMIN, ADMIN_SECRET = 'root@pam!rotate-admin', 'i14-admin-secret-0123456789'
USER, FIRST = 'cloudpods-rot@pve', 'prov'
AWX_TOKEN = 'i14-awx-admin-token-0123456789'
SECRET_RE = re.compile(r'Its secret, shown only this once: ([0-9a-f-]{36})')
ORDERS = 10
GRACE = 90  # longer than one provision run here (about 15-30 s on a loaded machine): in-flight runs finish


def run(playbook, env, extra=None, check=False, diff=False):
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), playbook, '-e', json.dumps(extra or {})]
    cmd += ['--check'] if check else []
    cmd += ['--diff'] if diff else []
    started = time.time()
    proc = subprocess.run(cmd, env=playbook_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=900, check=False)
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, started, time.time(), playbook)


def start(playbook, env, extra=None):
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), playbook, '-e', json.dumps(extra or {})]
    return subprocess.Popen(cmd, env=playbook_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)


class Lab(object):
    def __init__(self, env):
        self.env = env
        self.control = LabControl.from_env(env)

    def api(self, token_id, secret, method, api_path, **params):
        api_path = api_path.replace('{node}', self.env['PROXMOX_NODE_NAME'])
        key = 'data' if method in ('POST', 'PUT') else 'params'
        return requests.request(method, self.env['PROXMOX_API_URL'] + api_path, timeout=10,
                                verify=self.env['PROXMOX_CA_BUNDLE'],
                                headers={'Authorization': 'PVEAPIToken=%s=%s' % (token_id, secret)}, **{key: params})

    def tokens(self):
        return self.control.state()['access']['users'].get(USER, {}).get('tokens', {})

    def acl_of(self, token_id):
        return sorted((e['path'], e['roleid'], e['propagate']) for e in self.control.state()['access']['acl']
                      if e['type'] == 'token' and e['ugid'] == token_id)

    def rotate_env(self, secrets_file, **extra):
        env = dict(self.env, PROXMOX_ADMIN_TOKEN_ID=ADMIN, PROXMOX_ADMIN_TOKEN_SECRET=ADMIN_SECRET,
                   CLOUDPODS_SECRETS_FILE=str(secrets_file))
        env.pop('PROXMOX_API_TOKEN_ID')
        env.pop('PROXMOX_API_TOKEN_SECRET')
        # The lab's own AWX stand-in (CONTROLLER_*) is not this test's: an AWX is a destination only where a
        # test names its own.
        for name in [name for name in env if name.startswith('CONTROLLER_')]:
            del env[name]
        env.update(extra)
        return env


@pytest.fixture(scope='module')
def lab(private_lab):
    lab = Lab(private_lab)
    lab.control.add_token(ADMIN, ADMIN_SECRET, privs=['*'])
    made = run(BOOTSTRAP, dict(private_lab, PROXMOX_ADMIN_TOKEN_ID=ADMIN, PROXMOX_ADMIN_TOKEN_SECRET=ADMIN_SECRET),
               {'cloudpods_api_user': USER, 'cloudpods_api_token': FIRST})
    assert made.rc == 0, made.stdout[-3000:]
    [lab.first_secret] = SECRET_RE.findall(made.stdout)
    yield lab


@pytest.fixture
def awx():
    """An AWX stand-in of this test's own, with the Proxmox credential type and a credential to rotate."""
    server = create_server({'listen_port': free_port(), 'users': [{'username': 'admin', 'is_superuser': True}],
                            'tokens': [{'token': AWX_TOKEN, 'user': 'admin', 'scope': 'write'}]})
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    base = 'http://127.0.0.1:%d/api/v2/' % server.server_address[1]
    session = requests.Session()
    session.headers['Authorization'] = 'Bearer ' + AWX_TOKEN

    def post(path, body):
        response = session.post(base + path, json=body, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()['id']
    org = post('organizations/', {'name': 'Cloud Pods'})
    with open(CREDENTIAL_TYPE) as handle:
        ctype = post('credential_types/', yaml.safe_load(handle))
    server.credential = post('credentials/', {
        'name': 'Cloud Pods - Proxmox VE API', 'organization': org, 'credential_type': ctype,
        'inputs': {'api_url': 'https://pve.example.net:8006/api2/json', 'token_id': 'old@pve!old',
                   'token_secret': 'old-secret-in-awx', 'ca_bundle': '-----BEGIN CERTIFICATE-----\nMII\n'}})
    server.url = 'http://127.0.0.1:%d' % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


def secrets_file(tmp_path, token_id, secret):
    path = tmp_path / 'secrets.env'
    # quoted as systemd's EnvironmentFile allows; rotate_token.yml writes its lines unquoted
    path.write_text('# runner_api secrets\nPOWERDNS_API_KEY=kept-line-value\nPROXMOX_API_TOKEN_ID="%s"\n'
                    'PROXMOX_API_TOKEN_SECRET=%s\n' % (token_id, secret))
    os.chmod(str(path), 0o600)
    return path


def test_refusals_change_nothing(lab, tmp_path):
    path = secrets_file(tmp_path, '%s!%s' % (USER, FIRST), lab.first_secret)
    before = (lab.tokens(), path.read_text())

    no_admin = run(ROTATE, dict(lab.rotate_env(path), PROXMOX_ADMIN_TOKEN_SECRET=''))
    assert no_admin.rc != 0 and 'Set PROXMOX_ADMIN_TOKEN_ID' in no_admin.stdout
    nowhere = run(ROTATE, dict(lab.rotate_env(path), CLOUDPODS_SECRETS_FILE=''))
    assert nowhere.rc != 0 and 'a destination for the new secret' in nowhere.stdout
    unknown_user = run(ROTATE, lab.rotate_env(path),
                       {'cloudpods_api_user': 'nobody@pve', 'cloudpods_old_token_id': 'nobody@pve!prov'})
    assert unknown_user.rc != 0 and "no such user ('nobody@pve')" in unknown_user.stdout, unknown_user.stdout[-2000:]
    missing = run(ROTATE, lab.rotate_env(path), {'cloudpods_api_user': USER, 'cloudpods_old_token_id': USER + '!gone'})
    assert missing.rc != 0
    assert 'token %s!gone (acl_from, the token being replaced) does not exist' % USER in missing.stdout
    wrong_user = run(ROTATE, lab.rotate_env(path), {'cloudpods_api_user': USER, 'cloudpods_old_token_id': 'other@pve!prov'})
    assert wrong_user.rc != 0 and 'must be a token of %s' % USER in wrong_user.stdout

    # Check mode: says what it would do, changes nothing (no token, the file as it was).
    checked = run(ROTATE, lab.rotate_env(path), {'cloudpods_api_user': USER}, check=True, diff=True)
    assert checked.rc == 0, checked.stdout[-3000:]
    assert 'Would make the token %s!%s-' % (USER, FIRST) in checked.stdout and 'would revoke' in checked.stdout
    assert (lab.tokens(), path.read_text()) == before
    for result in (no_admin, nowhere, unknown_user, missing, wrong_user, checked):
        assert lab.first_secret not in result.stdout + result.stderr and ADMIN_SECRET not in result.stdout + result.stderr


def test_rotation_while_ten_orders_run(lab, awx, tmp_path):
    old_id = '%s!%s' % (USER, FIRST)
    path = secrets_file(tmp_path, old_id, lab.first_secret)
    # Short but real task durations, so that the orders overlap the rotation.
    lab.control.config(task_durations={'vzclone': 1.0, 'vzstart': 0.5})
    lab.control.clear_requests()
    site = site_vars(tmp_path)
    with scratch_database(lab.env['DATABASE_URL']) as url:
        env = worker_environment(lab.env, url, extra_vars_file=site, secrets_file=path, lease_seconds=30,
                                 heartbeat_seconds=2, poll_seconds=1, retry_base_seconds=0.5, retry_max_seconds=1)
        # The worker's environment holds no provisioning token: it has only the secrets file's.
        env.pop('PROXMOX_API_TOKEN_ID')
        env.pop('PROXMOX_API_TOKEN_SECRET')
        queue = Queue(url, env, tmp_path)
        try:
            first = [queue.order() for dummy in range(ORDERS - 2)]
            queue.start('w1')
            queue.start('w2')
            queue.wait(lambda: queue.rows("SELECT 1 FROM cloud_pod_provisioning_tasks WHERE status = 'RUNNING'"),
                       180, 'a task to run')
            rotation = start(ROTATE, lab.rotate_env(path, CONTROLLER_HOST=awx.url, CONTROLLER_OAUTH_TOKEN=AWX_TOKEN),
                             {'cloudpods_api_user': USER, 'cloudpods_rotate_grace_seconds': GRACE})
            # Two more orders once the new token is in the file: their tasks start after the rotation.
            queue.wait(lambda: read_secrets(str(path))['PROXMOX_API_TOKEN_ID'] != old_id or rotation.poll() is not None,
                       300, 'the secrets file to change')
            written_at = os.stat(str(path)).st_mtime
            later = [queue.order() for dummy in range(2)]
            stdout, stderr = rotation.communicate(timeout=900)
            assert rotation.returncode == 0, stdout[-4000:] + stderr[-2000:]
            queue.wait_all('ACTIVE', timeout=600)
            tasks = queue.rows('SELECT subscription_id, attempts, status, started_at FROM cloud_pod_provisioning_tasks')
            subs = queue.subscriptions()
        finally:
            queue.stop_all()
    assert len(tasks) == ORDERS and all((t['status'], t['attempts']) == ('COMPLETED', 1) for t in tasks), tasks

    values = read_secrets(str(path))
    new_id, new_secret = values['PROXMOX_API_TOKEN_ID'], values['PROXMOX_API_TOKEN_SECRET']
    assert re.match(r'^%s!%s-\d{8}-\d{6}$' % (re.escape(USER), FIRST), new_id)
    assert values['POWERDNS_API_KEY'] == 'kept-line-value'  # other lines are kept
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    # The secret is printed nowhere; the report names what was done.
    assert new_secret not in stdout + stderr and lab.first_secret not in stdout + stderr
    assert 'revoked %s after %d s' % (old_id, GRACE) in stdout and 'updated the AWX credential' in stdout
    assert new_secret not in queue.all_logs()

    # The simulator: the old token is refused, the new one works with the old one's ACL entries.
    template = '/nodes/{node}/lxc/%s/config' % lab.env.get('PROXMOX_CLOUDPOD_TEMPLATE_ID', '9000')
    refused = lab.api(old_id, lab.first_secret, 'GET', template)
    assert (refused.status_code, refused.reason) == (401, "no such token '%s' for user '%s'" % (FIRST, USER))
    assert lab.api(new_id, new_secret, 'GET', template).status_code == 200
    assert set(lab.tokens()) == {new_id.split('!')[1]}
    assert lab.acl_of(new_id) and lab.acl_of(old_id) == []

    # The workers used the new token for the tasks started after the rotation, and the old one before.
    log = lab.control.requests()
    writes_by = dict((token, [r for r in log if r['token_id'] == token and r['method'] == 'POST'
                              and r['path'].endswith('/clone')]) for token in (old_id, new_id))
    assert writes_by[old_id] and writes_by[new_id], 'clones by token: %s' % {k: len(v) for k, v in writes_by.items()}
    assert all(r['time'] < written_at + GRACE for r in log if r['token_id'] == old_id and r['status'] == 200)
    later_ids = set(str(row['id']) for row in later)
    later_hosts = set(subs[pod]['hostname'] for pod in later_ids)
    later_clones = [r for r in log if r['method'] == 'POST' and r['path'].endswith('/clone')
                    and r['params'].get('hostname') in later_hosts]
    # (a clone may be tried again while another worker's clone holds the template's lock: count the pods)
    assert set(r['params']['hostname'] for r in later_clones if r['status'] == 200) == later_hosts
    assert set(r['token_id'] for r in later_clones) == {new_id}
    assert all(subs[str(pod['id'])]['status'] == 'ACTIVE' for pod in first)

    # AWX's credential: the new token id and secret, its URL and CA kept.
    inputs = awx.app.store.objects['credentials'][awx.credential]['inputs']
    assert (inputs['token_id'], inputs['token_secret']) == (new_id, new_secret)
    assert inputs['api_url'] == 'https://pve.example.net:8006/api2/json' and inputs['ca_bundle'].startswith('-----BEGIN')
