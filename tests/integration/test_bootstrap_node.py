"""playbooks/bootstrap_node.yml against a private simulator: role, user, ACLs and a privilege-separated
token made through PVE's access API with an administrator token; the new token then works with exactly
what its ACLs give; a token without Permissions.Modify changes nothing; a second run is changed=0.

The module uses only a lab of its own (it adds tokens and users to the simulator).
"""

import json
import os
import re
import subprocess
import time

import pytest
import requests

from playbooks import VENV_BIN, PlaybookRun, PrivateLab, playbook_env, run_playbook
from pvesim.config import CLOUDPODS_PROV_PRIVILEGES  # tests/lab is on sys.path (tests/conftest.py)

pytestmark = pytest.mark.own_lab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(ROOT, 'playbooks', 'bootstrap_node.yml')
ADMIN = 'root@pam!bootstrap'
ADMIN_SECRET = 'e14-admin-secret-0123456789'
WEAK = 'helper@pve!weak'
WEAK_SECRET = 'e14-weak-secret-0123456789'
SECRET_RE = re.compile(r'Its secret, shown only this once: ([0-9a-f-]{36})')


class Lab(object):
    def __init__(self, env):
        self.env = env
        self.verify = env['PROXMOX_CA_BUNDLE']

    def control(self, method, path, body=None):
        response = requests.request(method, self.env['PVESIM_CONTROL_URL'] + path, json=body, timeout=10,
                                    headers={'X-Lab-Key': self.env['PVESIM_CONTROL_KEY']}, verify=self.verify)
        assert response.status_code == 200, response.text
        return response.json()['data']

    def access(self):
        return self.control('GET', '/state')['access']

    def api(self, token_id, secret, method, api_path, **params):
        api_path = api_path.replace('{node}', self.env['PROXMOX_NODE_NAME'])
        key = 'data' if method in ('POST', 'PUT') else 'params'
        return requests.request(method, self.env['PROXMOX_API_URL'] + api_path, timeout=10, verify=self.verify,
                                headers={'Authorization': 'PVEAPIToken=%s=%s' % (token_id, secret)},
                                **{key: params})

    def wait_task(self, token_id, secret, upid):
        for dummy in range(200):
            status = self.api(token_id, secret, 'GET', '/nodes/{node}/tasks/%s/status' % upid).json()['data']
            if status['status'] == 'stopped':
                return status
            time.sleep(0.1)
        raise AssertionError('task %s did not stop' % upid)


@pytest.fixture(scope='module')
def lab():
    with PrivateLab() as env:
        lab = Lab(env)
        lab.control('POST', '/tokens', {'token_id': ADMIN, 'secret': ADMIN_SECRET, 'privs': ['*']})
        # Everything a bootstrap needs but Permissions.Modify.
        lab.control('POST', '/tokens', {'token_id': WEAK, 'secret': WEAK_SECRET,
                                        'privs': ['Sys.Modify', 'Sys.Audit', 'User.Modify', 'Realm.AllocateUser']})
        yield lab


def bootstrap(lab, token_id, secret, user, token='prov', role='BootProv', net_role='BootNet', **kwargs):
    env = dict(lab.env, PROXMOX_ADMIN_TOKEN_ID=token_id, PROXMOX_ADMIN_TOKEN_SECRET=secret)
    extra = {'cloudpods_api_user': user, 'cloudpods_api_token': token, 'cloudpods_api_role': role,
             'cloudpods_net_role': net_role}
    return _run(env, extra, **kwargs)


def _run(env, extra, check=False, diff=False):
    """ansible-playbook on the repository's playbook (JSON callback), as an operator runs it."""
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), PLAYBOOK, '-e', json.dumps(extra)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    started = time.time()
    proc = subprocess.run(cmd, env=playbook_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300, check=False)
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, started, time.time(), PLAYBOOK)


def changed_tasks(run):
    changed = []
    for task in run.tasks:
        result = task['result']
        items = result.get('results') or [result]
        if any(item.get('changed') for item in items):
            changed.append(task['name'])
    return changed


def test_without_permissions_modify_nothing_is_created(lab):
    run = bootstrap(lab, WEAK, WEAK_SECRET, 'denied@pve', role='DeniedProv', net_role='DeniedNet')
    assert run.rc != 0
    assert '403 Permission check failed (/, Permissions.Modify)' in run.stdout
    access = lab.access()
    assert 'denied@pve' not in access['users']
    assert 'DeniedProv' not in access['roles'] and 'DeniedNet' not in access['roles']
    assert not [entry for entry in access['acl'] if entry['ugid'].startswith('denied@pve')]


def test_check_mode_changes_nothing(lab):
    run = bootstrap(lab, ADMIN, ADMIN_SECRET, 'checked@pve', role='CheckedProv', net_role='CheckedNet',
                    check=True, diff=True)
    assert run.rc == 0, run.stdout[-3000:]
    assert 'Role, user and ACLs for the provisioning user' in changed_tasks(run)
    assert 'Would create checked@pve!prov' in run.stdout
    access = lab.access()
    assert 'checked@pve' not in access['users'] and 'CheckedProv' not in access['roles']


def test_bootstrap_then_the_token_works_as_its_acl_says(lab):
    run = bootstrap(lab, ADMIN, ADMIN_SECRET, 'cloudpods-api@pve', diff=True)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    secrets = SECRET_RE.findall(run.stdout)
    assert len(secrets) == 1, run.stdout[-3000:]
    secret = secrets[0]
    assert run.stdout.count(secret) == 1 and secret not in run.stderr

    access = lab.access()
    assert access['roles']['BootProv'] == sorted(CLOUDPODS_PROV_PRIVILEGES + ['VM.Backup'])
    assert access['roles']['BootNet'] == ['SDN.Use']
    assert access['users']['cloudpods-api@pve']['tokens'] == {'prov': {
        'privsep': 1, 'comment': 'mPanel Cloud Pod provisioning (made by bootstrap_node.yml)'}}
    grants = set((e['path'], e['type'], e['ugid'], e['roleid'], e['propagate']) for e in access['acl'])
    bridge = '/sdn/zones/localnetwork/%s' % lab.env['PROXMOX_CLOUDPOD_BRIDGE']
    for principal, ugid in (('user', 'cloudpods-api@pve'), ('token', 'cloudpods-api@pve!prov')):
        assert ('/', principal, ugid, 'BootProv', 1) in grants
        assert (bridge, principal, ugid, 'BootNet', 1) in grants

    # The new token clones the template and configures the clone as pod_container does ...
    token = 'cloudpods-api@pve!prov'
    answer = lab.api(token, secret, 'POST', '/nodes/{node}/lxc/9000/clone', newid=150, hostname='boot-test',
                     full=1)
    assert answer.status_code == 200, answer.text
    assert lab.wait_task(token, secret, answer.json()['data'])['exitstatus'] == 'OK'
    answer = lab.api(token, secret, 'PUT', '/nodes/{node}/lxc/150/config', cores=2, memory=1024,
                     net0='name=eth0,bridge=%s,ip=dhcp,firewall=1' % lab.env['PROXMOX_CLOUDPOD_BRIDGE'])
    assert answer.status_code == 200, answer.text
    answer = lab.api(token, secret, 'POST', '/nodes/{node}/lxc/150/status/start')
    assert answer.status_code == 200, answer.text
    # ... and is refused where its ACL does not reach: another bridge, node settings, user management.
    answer = lab.api(token, secret, 'PUT', '/nodes/{node}/lxc/150/config',
                     net1='name=eth1,bridge=vmbr7,ip=dhcp')
    assert answer.status_code == 403 and 'SDN.Use' in answer.reason
    answer = lab.api(token, secret, 'POST', '/access/roles', roleid='Mine', privs='Sys.Modify')
    assert (answer.status_code, answer.reason) == (403, 'Permission check failed (/access, Sys.Modify)')
    answer = lab.api(token, secret, 'PUT', '/access/acl', path='/', roles='Administrator',
                     tokens='cloudpods-api@pve!prov')
    assert (answer.status_code, answer.reason) == (403, 'Permission check failed (/, Permissions.Modify)')

    # Privilege separation: taking the token's own grant on / away leaves it with nothing there,
    # although its user still has the role.
    lab.api(ADMIN, ADMIN_SECRET, 'PUT', '/access/acl', path='/', roles='BootProv',
            tokens='cloudpods-api@pve!prov', delete=1)
    answer = lab.api(token, secret, 'GET', '/nodes/{node}/lxc/150/status/current')
    assert (answer.status_code, answer.reason) == (403, 'Permission check failed (/vms/150, VM.Audit)')
    lab.api(ADMIN, ADMIN_SECRET, 'PUT', '/access/acl', path='/', roles='BootProv',
            tokens='cloudpods-api@pve!prov')

    # Our own module provisions a pod with the new token (clone, config, start).
    pod = run_playbook([{'name': 'pod', 'mpanel.cloudpods.pod_container': {
        'hostname': 'boot-pod-example-com', 'state': 'started', 'cores': 1}}],
        env=dict(lab.env, PROXMOX_API_TOKEN_ID=token, PROXMOX_API_TOKEN_SECRET=secret))
    result = pod.result(0)
    assert pod.rc == 0 and not result.get('failed'), result.get('msg')
    assert secret not in pod.stdout
    state = lab.control('GET', '/state')
    made = [ct for ct in state['containers'].values() if ct['config'].get('hostname') == 'boot-pod-example-com']
    assert len(made) == 1 and made[0]['status'] == 'running'
    clones = [r for r in state['requests'] if r['path'] == '/nodes/pve/lxc/9000/clone' and r['status'] == 200]
    assert clones and set(r['token_id'] for r in clones) == {token}

    # A second run changes nothing and makes no new token.
    again = bootstrap(lab, ADMIN, ADMIN_SECRET, 'cloudpods-api@pve')
    assert again.rc == 0, again.stdout[-3000:]
    assert changed_tasks(again) == []
    assert 'cloudpods-api@pve!prov exists already' in again.stdout
    assert not SECRET_RE.search(again.stdout) and secret not in again.stdout
    assert lab.api(token, secret, 'GET', '/nodes/{node}/lxc/150/status/current').status_code == 200


def test_refuses_the_provisioning_users_own_token(lab):
    run = bootstrap(lab, 'cloudpods-api@pve!prov', 'x' * 36, 'cloudpods-api@pve')
    assert run.rc != 0
    assert 'never the provisioning user' in run.stdout


def test_access_endpoints_answer_as_pve(lab):
    """The error answers a bootstrap meets, with PVE's status, reason and per-parameter errors."""
    def admin(method, api_path, **params):
        return lab.api(ADMIN, ADMIN_SECRET, method, api_path, **params)

    assert admin('POST', '/access/roles', roleid='EdgeRole', privs='VM.Audit').status_code == 200
    answer = admin('POST', '/access/roles', roleid='EdgeRole', privs='VM.Audit')
    assert (answer.status_code, answer.reason) == (500, "create role failed: role 'EdgeRole' already exists")
    answer = admin('POST', '/access/roles', roleid='Other', privs='VM.Audit,VM.Bogus')
    assert answer.status_code == 400
    assert answer.json()['errors'] == {'privs': "invalid format - invalid privilege 'VM.Bogus'"}
    answer = admin('PUT', '/access/roles/EdgeRole', privs='VM.Clone', append=1)
    assert answer.status_code == 200
    assert admin('GET', '/access/roles/EdgeRole').json()['data'] == {'VM.Audit': 1, 'VM.Clone': 1}
    admin('PUT', '/access/roles/EdgeRole', privs='VM.Clone')
    assert admin('GET', '/access/roles/EdgeRole').json()['data'] == {'VM.Clone': 1}

    assert admin('POST', '/access/users', userid='edge@pve').status_code == 200
    answer = admin('POST', '/access/users', userid='edge@pve')
    assert (answer.status_code, answer.reason) == (500, "create user failed: user 'edge@pve' already exists")
    made = admin('POST', '/access/users/edge@pve/token/t1', privsep=1, comment='edge').json()['data']
    assert made['full-tokenid'] == 'edge@pve!t1' and made['info'] == {'privsep': 1, 'comment': 'edge'}
    answer = admin('POST', '/access/users/edge@pve/token/t1')
    assert answer.status_code == 400 and answer.json()['errors'] == {'tokenid': 'Token already exists.'}
    tokens = admin('GET', '/access/users/edge@pve').json()['data']['tokens']
    assert tokens == {'t1': {'privsep': 1, 'comment': 'edge'}} and made['value'] not in str(tokens)

    answer = admin('PUT', '/access/acl', path='/', roles='EdgeRole')
    assert answer.status_code == 400
    assert set(answer.json()['errors']) == {'users', 'groups', 'tokens'}
    answer = admin('PUT', '/access/acl', path='/nowhere', roles='EdgeRole', users='edge@pve')
    assert answer.json()['errors'] == {'path': "invalid ACL path '/nowhere'"}
    answer = admin('PUT', '/access/acl', path='/', roles='Missing', users='edge@pve')
    assert (answer.status_code, answer.reason) == (500, "ACL update failed: role 'Missing' does not exist")

    # The token has nothing until the ACL names it AND its user; then it can audit /vms/9000.
    def audit():
        return lab.api('edge@pve!t1', made['value'], 'GET', '/nodes/{node}/lxc/9000/status/current')
    assert audit().status_code == 403
    admin('PUT', '/access/acl', path='/vms/9000', roles='PVEAuditor', tokens='edge@pve!t1')
    assert audit().status_code == 403
    admin('PUT', '/access/acl', path='/vms', roles='PVEAuditor', users='edge@pve')
    assert audit().status_code == 200
    admin('PUT', '/access/acl', path='/vms/9000', roles='PVEAuditor', tokens='edge@pve!t1', delete=1)
    assert audit().status_code == 403

    # A token without User.Modify may not make tokens; a removed token is refused at once.
    lab.control('POST', '/tokens', {'token_id': 'viewer@pve!ro', 'secret': 'e14-viewer-0123456789', 'privs': ['Sys.Audit']})
    answer = lab.api('viewer@pve!ro', 'e14-viewer-0123456789', 'POST', '/access/users/edge@pve/token/t2')
    assert (answer.status_code, answer.reason) == (403, 'Permission check failed')
    assert admin('DELETE', '/access/users/edge@pve/token/t1').status_code == 200
    answer = audit()
    assert (answer.status_code, answer.reason) == (401, "no such token 't1' for user 'edge@pve'")


def test_a_failing_token_step_still_says_why(lab):
    """The token task runs with no_log; its error (which holds no secret) is still shown by the next task."""
    run = bootstrap(lab, ADMIN, ADMIN_SECRET, 'half@pve', token='first', role='HalfProv', net_role='HalfNet')
    assert run.rc == 0, run.stdout[-3000:]
    # May change roles and ACLs, but not users or their tokens (no User.Modify).
    lab.control('POST', '/tokens', {'token_id': 'acl-admin@pve!tk', 'secret': 'e14-acl-admin-0123456789',
                                    'privs': ['Sys.Audit', 'Sys.Modify', 'Permissions.Modify']})
    again = bootstrap(lab, 'acl-admin@pve!tk', 'e14-acl-admin-0123456789', 'half@pve', token='second',
                      role='HalfProv', net_role='HalfNet')
    assert again.rc != 0
    [stop] = [task['result'] for task in again.tasks if task['name'] == 'Stop if the token could not be read or made']
    assert stop.get('failed') and '403 Permission check failed (/access/groups, User.Modify)' in stop['msg']
    assert 'second' not in lab.access()['users']['half@pve']['tokens']
