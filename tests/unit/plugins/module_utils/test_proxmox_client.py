# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the Proxmox client against a fake proxmoxer API: retries, tasks, VMIDs, errors (_proxmox_client.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
import requests
from proxmoxer.core import ResourceException

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _polling as polling
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_client as proxmox_client
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_errors as errors
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_settings as proxmox_settings

SECRET = '5f0b1d9e-0c1a-4a6e-9d55-7d3c2b1a0f99'
TOKEN_ID = 'mpanel-api@pve!mpanel-token'
UPID = 'UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:mpanel-api@pve!mpanel-token:'


# --------------------------------------------------------------------------
# The client against a fake proxmoxer API
# --------------------------------------------------------------------------

class FakeClock(object):
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class FakeApi(object):
    """Callable like proxmoxer's ProxmoxAPI: api(path).get(**params); answers come from a handler."""

    def __init__(self, handler):
        self.handler = handler
        self.calls = []

    def __call__(self, path):
        api = self

        class Resource(object):
            def __getattr__(self, method):
                def call(**params):
                    api.calls.append((method.upper(), path, params))
                    return api.handler(method.upper(), path, params)
                return call
        return Resource()


def http_error(status, reason):
    messages = {400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 500: 'Internal Server Error',
                595: 'Errors during connection establishment, proxy handshake',
                596: 'Errors during TLS negotiation, request sending and header processing'}
    return ResourceException(status, messages.get(status, ''), reason)


def make_client(handler, retry_timeout=30):
    clock = FakeClock()
    settings = proxmox_settings.ConnectionSettings('https://127.0.0.1:8006/api2/json', TOKEN_ID, SECRET)
    api = FakeApi(handler)

    def backoff():
        return polling.Backoff(jitter=False)

    client = proxmox_client.ProxmoxClient(settings, retry_timeout=retry_timeout, api=api, sleep=clock.sleep,
                                          clock=clock.time, backoff=backoff)
    return client, api, clock


def scripted(*answers):
    """A handler that returns/raises the given answers in order."""
    answers = list(answers)

    def handler(method, path, params):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    return handler


def test_request_retries_locked_then_succeeds():
    client, api, clock = make_client(scripted(http_error(500, 'CT is locked (disk)'),
                                              http_error(500, 'CT is locked (disk)'), 'UPID'))
    assert client.post('nodes/pve/lxc/9000/clone', newid=101, full=True) == 'UPID'
    assert client.retries['locked'] == 2
    assert clock.sleeps == [0.25, 0.5]  # exponential (jitter disabled here)
    assert api.calls[0] == ('POST', 'nodes/pve/lxc/9000/clone', {'newid': 101, 'full': 1})


@pytest.mark.parametrize('status, reason, counter', [
    (596, 'Connection timed out', 'http_596'),
    (595, 'Connection refused', 'http_595'),
    (500, "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout", 'lock_timeout'),
])
def test_request_retries_each_transient_form(status, reason, counter):
    client, api, clock = make_client(scripted(http_error(status, reason), {'ok': 1}))
    assert client.get('cluster/resources') == {'ok': 1}
    assert client.retries[counter] == 1
    assert sum(client.retries.values()) == 1


@pytest.mark.parametrize('status, reason', [
    (400, 'Parameter verification failed.'),
    (401, 'authentication failure'),
    (403, 'Permission check failed (/vms/101, VM.Allocate)'),
    (500, 'something broke'),
    (500, "CT 101 already exists on node 'pve'"),
])
def test_request_does_not_retry_other_errors(status, reason):
    client, api, clock = make_client(scripted(http_error(status, reason), 'never'))
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.post('nodes/pve/lxc/9000/clone', newid=101)
    assert len(api.calls) == 1
    assert clock.sleeps == []
    assert sum(client.retries.values()) == 0
    assert err.value.status_code == status


def test_request_gives_up_at_the_timeout():
    def always_locked(method, path, params):
        raise http_error(500, 'CT is locked (disk)')
    client, api, clock = make_client(always_locked, retry_timeout=10)
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.post('nodes/pve/lxc/9000/clone', newid=101)
    assert 'CT is locked (disk)' in err.value.msg
    assert 'still failing after retrying for 10 s' in err.value.msg
    assert sum(clock.sleeps) <= 10
    assert clock.sleeps[-1] == 2.0  # capped
    assert client.retries['locked'] == len(clock.sleeps)


def test_error_messages_from_the_client_never_contain_the_secret():
    reason = 'bad header PVEAPIToken=%s=%s' % (TOKEN_ID, SECRET)
    client, api, clock = make_client(scripted(http_error(401, reason)))
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.get('version')
    assert SECRET not in err.value.msg
    assert SECRET not in err.value.reason
    assert 'authentication failed for token %s' % TOKEN_ID in err.value.msg


@pytest.mark.parametrize('reason', ['invalid token value!', "no such token 'mpanel-token' for user 'mpanel-api@pve'",
                                    'Authentication failed!', 'No ticket'])
def test_401_without_a_body_is_explained_from_the_reason(reason):
    """PVE answers a failed login with the status line alone; proxmoxer then gives the reason as
    content and its placeholder errors for a body that is not JSON."""
    client, api, clock = make_client(scripted(ResourceException(401, 'Unauthorized', reason, errors={'errors': b''})))
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.get('version')
    assert err.value.msg == (
        'Proxmox API authentication failed for token mpanel-api@pve!mpanel-token (GET /version: HTTP 401 %s): '
        'check api_token_id and api_token_secret (PROXMOX_API_TOKEN_ID / PROXMOX_API_TOKEN_SECRET), and that '
        'the token exists and has not expired' % reason)
    assert (err.value.status_code, err.value.reason) == (401, reason)
    assert SECRET not in err.value.msg


def test_transport_errors_are_explained():
    client, api, clock = make_client(scripted(requests.exceptions.SSLError('certificate verify failed')))
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.get('version')
    assert 'TLS verification of the Proxmox API at https://127.0.0.1:8006 failed' in err.value.msg
    assert 'ca_path' in err.value.msg
    client, api, clock = make_client(scripted(requests.exceptions.ConnectionError('Connection refused')))
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.get('version')
    assert 'Cannot connect to the Proxmox API at https://127.0.0.1:8006' in err.value.msg
    assert sum(client.retries.values()) == 0


def task_handler(statuses, log=None):
    statuses = list(statuses)

    def handler(method, path, params):
        if path.endswith('/status'):
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if path.endswith('/log'):
            return log or []
        raise AssertionError(path)
    return handler


def test_wait_for_task_ok_and_warnings():
    client, api, clock = make_client(task_handler([{'status': 'running'}, {'status': 'stopped', 'exitstatus': 'OK'}]))
    assert client.wait_for_task(UPID, 60) == 'OK'
    assert api.calls[0][1] == 'nodes/pve/tasks/%s/status' % UPID
    client, api, clock = make_client(task_handler([{'status': 'stopped', 'exitstatus': 'WARNINGS: 2'}]))
    assert client.wait_for_task(UPID, 60) == 'WARNINGS: 2'


def test_wait_for_task_polls_quickly_with_growing_capped_intervals():
    statuses = [{'status': 'running'}] * 12 + [{'status': 'stopped', 'exitstatus': 'OK'}]
    client, api, clock = make_client(task_handler(statuses))
    client.wait_for_task(UPID, 60)
    assert clock.sleeps[0] == pytest.approx(0.1)
    assert clock.sleeps == sorted(clock.sleeps)
    assert max(clock.sleeps) == pytest.approx(0.25)


def test_wait_for_task_failure_reports_exit_status_and_log():
    log = [{'n': 1, 't': 'create full clone of mountpoint rootfs (local-lvm:base-9000-disk-0)'},
           {'n': 2, 't': 'clone failed: out of space on local-lvm'},
           {'n': 3, 't': 'TASK ERROR: clone failed: out of space on local-lvm'}]
    client, api, clock = make_client(task_handler(
        [{'status': 'running'}, {'status': 'stopped', 'exitstatus': 'clone failed: out of space on local-lvm'}], log))
    with pytest.raises(errors.ProxmoxTaskError) as err:
        client.wait_for_task(UPID, 60, what='clone of CT 9000 to CT 101')
    assert err.value.exitstatus == 'clone failed: out of space on local-lvm'
    assert 'clone of CT 9000 to CT 101 on node pve failed: clone failed: out of space on local-lvm' in err.value.msg
    assert 'create full clone of mountpoint rootfs' in err.value.msg
    assert 'TASK ERROR' not in err.value.msg
    assert UPID in err.value.msg
    assert sum(clock.sleeps) < 0.2  # noticed on the first poll after it stopped


def test_wait_for_task_timeout():
    client, api, clock = make_client(task_handler([{'status': 'running'}]))
    with pytest.raises(errors.ProxmoxTimeout) as err:
        client.wait_for_task(UPID, 5)
    assert 'Timed out after 5 s waiting for Proxmox task vzclone 9000 on node pve' in err.value.msg
    assert sum(clock.sleeps) == pytest.approx(5)


def test_clone_retries_with_a_new_vmid_when_taken():
    nextids = [101, 101, 102]
    created = []

    def handler(method, path, params):
        if path == 'cluster/nextid':
            return str(nextids.pop(0))
        if path.endswith('/clone'):
            if params['newid'] == 101:
                raise http_error(500, "CT 101 already exists on node 'pve'")
            created.append(params['newid'])
            return UPID
        if path.endswith('/status'):
            return {'status': 'stopped', 'exitstatus': 'OK'}
        raise AssertionError(path)

    client, api, clock = make_client(handler)
    vmid, created_now = client.clone_container('pve', 9000, 60, hostname='p1', full=True)
    assert (vmid, created_now) == (102, True)
    assert client.retries['vmid_taken'] == 2
    assert created == [102]


def test_clone_adopts_the_container_found_after_vmid_taken():
    def handler(method, path, params):
        if path == 'cluster/nextid':
            return '101'
        if path.endswith('/clone'):
            raise http_error(500, "CT 101 already exists on node 'pve'")
        raise AssertionError(path)

    client, api, clock = make_client(handler)
    assert client.clone_container('pve', 9000, 60, find_existing=lambda: 101, hostname='p1') == (101, False)
    assert client.retries['vmid_taken'] == 0


def test_clone_with_explicit_vmid_does_not_pick_another():
    client, api, clock = make_client(scripted(http_error(500, "CT 150 already exists on node 'pve'")))
    with pytest.raises(errors.ProxmoxApiError):
        client.clone_container('pve', 9000, 60, newid=150, hostname='p1')
    assert [c[1] for c in api.calls] == ['nodes/pve/lxc/9000/clone']


def test_clone_gives_up_after_bounded_vmid_attempts():
    def handler(method, path, params):
        if path == 'cluster/nextid':
            return '101'
        raise http_error(500, "CT 101 already exists on node 'pve'")

    client, api, clock = make_client(handler)
    with pytest.raises(errors.ProxmoxApiError):
        client.clone_container('pve', 9000, 60, max_vmid_attempts=3, hostname='p1')
    assert client.retries['vmid_taken'] == 2


def test_run_task_retries_a_task_that_failed_on_a_lock_when_asked():
    answers = ['UPID:pve:00000001:00000002:65000000:vzstart:101:root@pam:',
               {'status': 'stopped', 'exitstatus': 'CT is locked (backup)'},
               [],  # task log
               'UPID:pve:00000003:00000004:65000001:vzstart:101:root@pam:',
               {'status': 'stopped', 'exitstatus': 'OK'}]
    client, api, clock = make_client(scripted(*answers))
    assert client.run_task('POST', 'nodes/pve/lxc/101/status/start', 60, retry_locked_task=True) == 'OK'
    assert client.retries['locked'] == 1


def test_run_task_does_not_retry_other_task_failures():
    answers = ['UPID:pve:00000001:00000002:65000000:vzstart:101:root@pam:',
               {'status': 'stopped', 'exitstatus': 'startup for container 101 failed'}, []]
    client, api, clock = make_client(scripted(*answers))
    with pytest.raises(errors.ProxmoxTaskError):
        client.run_task('POST', 'nodes/pve/lxc/101/status/start', 60, retry_locked_task=True)
    assert sum(client.retries.values()) == 0


def test_run_task_passes_api_parameters_named_like_its_own_arguments():
    answers = ['UPID:pve:00000001:00000002:65000000:vzshutdown:101:root@pam:', {'status': 'stopped', 'exitstatus': 'OK'}]
    client, api, clock = make_client(scripted(*answers))
    client.run_task('POST', 'nodes/pve/lxc/101/status/shutdown', 300, params={'timeout': 60, 'forceStop': True})
    assert api.calls[0] == ('POST', 'nodes/pve/lxc/101/status/shutdown', {'timeout': 60, 'forceStop': 1})


def test_bare_permission_error_is_explained_from_the_token_permissions():
    held = {'/vms/9000': ['VM.Clone', 'VM.Audit'], '/vms/101': ['VM.Audit'], '/storage/local-lvm': ['Datastore.AllocateSpace']}

    def handler(method, path, params):
        if path == 'access/permissions':
            return {params['path']: dict((p, 1) for p in held.get(params['path'], []))}
        raise http_error(403, 'Permission check failed')

    client, api, clock = make_client(handler)
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.post('nodes/pve/lxc/9000/clone', newid=101, storage='local-lvm', full=True)
    assert 'permission denied for token %s on POST /nodes/pve/lxc/9000/clone' % TOKEN_ID in err.value.msg
    assert 'The token lacks VM.Allocate on /vms/101: grant it' in err.value.msg
    assert 'VM.Clone' not in err.value.msg


def test_bare_permission_error_lists_requirements_when_permissions_are_unreadable():
    def forbidden(method, path, params):
        raise http_error(403, 'Permission check failed')

    client, api, clock = make_client(forbidden)
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.post('nodes/pve/lxc/9000/clone', newid=101, pool='pods')
    assert 'This call needs VM.Clone on /vms/9000, and VM.Allocate on /vms/101 or VM.Allocate on /pool/pods' \
        in err.value.msg


def clone_server(nextids, answers):
    """A handler for clones: ids from ``nextids``, clone answers (or errors) from ``answers``, tasks all OK.

    Returns the handler and the list of the VMIDs the clones asked for."""
    nextids = list(nextids)
    answer = scripted(*answers)
    posted = []

    def handler(method, path, params):
        if path == 'cluster/nextid':
            return nextids.pop(0) if len(nextids) > 1 else nextids[0]
        if path.endswith('/clone'):
            posted.append(params['newid'])
            return answer(method, path, params)
        return {'status': 'stopped', 'exitstatus': 'OK'}
    return handler, posted


def test_clone_refused_on_a_locked_template_retries_with_a_fresh_vmid():
    handler, posted = clone_server(['101', '102'], [http_error(500, 'CT is locked (disk)'), UPID])
    client, api, clock = make_client(handler)
    assert client.clone_container('pve', 9000, 60, hostname='p1') == (102, True)
    assert posted == [101, 102]
    assert (client.retries['locked'], client.retries['vmid_taken']) == (1, 0)
    assert clock.sleeps[0] == 0.25


def copies_server(nextids, busy):
    """A Proxmox VE whose templates in ``busy`` refuse clones (locked); the clones posted: [(source, newid)]."""
    nextids = list(nextids)
    posted = []

    def handler(method, path, params):
        if path == 'cluster/nextid':
            return nextids.pop(0)
        if path.endswith('/clone'):
            source = int(path.split('/')[3])
            posted.append((source, params['newid']))
            if source in busy:
                raise http_error(500, 'CT is locked (disk)')
            return UPID
        return {'status': 'stopped', 'exitstatus': 'OK'}
    return handler, posted


def test_a_locked_template_sends_the_clone_to_a_free_copy_at_once():
    handler, posted = copies_server(['102', '103'], busy={9000})
    client, api, clock = make_client(handler)
    cloned_from = []
    assert client.clone_container('pve', 9000, 60, spare_sources=[9001], cloned_from=cloned_from,
                                  hostname='p1') == (103, True)
    # 102 % 2 = 0: the template first; refused, the copy at once with a fresh id, no wait.
    assert posted == [(9000, 102), (9001, 103)] and cloned_from == [9001]
    assert clock.sleeps == [] and client.retries['locked'] == 0


def test_concurrent_runs_start_on_different_copies():
    handler, posted = copies_server(['104'], busy=set())
    client, api, clock = make_client(handler)
    client.clone_container('pve', 9000, 60, spare_sources=[9001, 9002], hostname='p1')
    assert posted == [(9002, 104)]  # 104 % 3 = 2


def test_when_every_copy_is_locked_it_waits_then_goes_round_again():
    busy = {9000, 9001}
    handler, posted = copies_server(['104', '105', '106'], busy=busy)

    def freeing(method, path, params):
        if len(posted) == 2:
            busy.discard(9000)  # the template's clone ended while we waited
        return handler(method, path, params)

    client, api, clock = make_client(freeing)
    cloned_from = []
    assert client.clone_container('pve', 9000, 60, spare_sources=[9001, 9000], cloned_from=cloned_from,
                                  hostname='p1') == (106, True)
    assert posted == [(9000, 104), (9001, 105), (9000, 106)] and cloned_from == [9000]
    assert clock.sleeps == [0.25] and client.retries['locked'] == 1


def test_a_clone_refused_for_another_reason_does_not_try_the_copies():
    client, api, clock = make_client(scripted('101', http_error(403, 'Permission check failed (/vms/9000, VM.Clone)')))
    with pytest.raises(errors.ProxmoxApiError):
        client.clone_container('pve', 9000, 60, spare_sources=[9001], hostname='p1')
    assert [c[1] for c in api.calls] == ['cluster/nextid', 'nodes/pve/lxc/9001/clone']


def test_clone_after_a_lost_answer_adopts_what_it_created():
    posted = []

    def handler(method, path, params):
        if path == 'cluster/nextid':
            return '101'
        posted.append(params['newid'])
        raise http_error(596, 'Connection timed out')  # the clone went through; the answer was lost

    client, api, clock = make_client(handler)
    assert client.clone_container('pve', 9000, 60, find_existing=lambda: 101, hostname='p1') == (101, False)
    assert posted == [101]
    assert client.retries['http_596'] == 1


def test_clone_after_a_lost_request_retries_with_the_same_vmid():
    handler, posted = clone_server(['101'], [http_error(596, 'Connection timed out'), UPID])
    client, api, clock = make_client(handler)
    assert client.clone_container('pve', 9000, 60, find_existing=lambda: None, hostname='p1') == (101, True)
    assert posted == [101, 101]


# --------------------------------------------------------------------------
# Reboot of a locked CT (PVE 8: the reboot stops it, only the start checks the lock)
# --------------------------------------------------------------------------

class FakeCt(object):
    """CT 101 as PVE 8 powers it (pve-container stable-bookworm): the reboot worker (LXC.pm vm_reboot) stops
    it and starts it again, and only the start's pre-start hook checks the lock, so a locked CT is left
    stopped and the task fails ``startup for container '101' failed``; the start API's worker checks the
    lock first (``CT is locked (backup)``). The lock goes away at ``unlock_at`` on the fake clock."""

    def __init__(self, clock, unlock_at, running=True):
        self.clock, self.unlock_at, self.running = clock, unlock_at, running
        self.tasks = {}
        self.actions = []  # what really happened to the CT, in order

    def locked(self):
        return self.clock.now < self.unlock_at

    def task(self, kind, exitstatus, log=()):
        upid = 'UPID:pve:%08X:00000001:65000000:%s:101:root@pam:' % (len(self.tasks) + 1, kind)
        self.tasks[upid] = (exitstatus, list(log))
        return upid

    def reboot(self):
        if not self.running:
            raise http_error(500, 'VM 101 not running')
        self.running = False
        self.actions.append('stopped')
        if self.locked():
            return self.task('vzreboot', "startup for container '101' failed",
                             ['run_buffer: 322 Script exited with status 2',
                              'lxc_init: 844 Failed to run lxc.hook.pre-start for container "101"'])
        self.running = True
        self.actions.append('started')
        return self.task('vzreboot', 'OK')

    def start(self):
        if self.running:
            raise http_error(500, 'CT 101 already running')
        if self.locked():
            return self.task('vzstart', 'CT is locked (backup)')
        self.running = True
        self.actions.append('started')
        return self.task('vzstart', 'OK')

    def handler(self, method, path, params):
        if (method, path) == ('POST', 'nodes/pve/lxc/101/status/reboot'):
            return self.reboot()
        if (method, path) == ('POST', 'nodes/pve/lxc/101/status/start'):
            return self.start()
        if (method, path) == ('GET', 'nodes/pve/lxc/101/status/current'):
            return {'status': 'running' if self.running else 'stopped', 'vmid': 101}
        upid = path.split('/')[3]
        if path.endswith('/status'):
            return {'status': 'stopped', 'exitstatus': self.tasks[upid][0]}
        return [{'n': n, 't': t} for n, t in enumerate(self.tasks[upid][1] + ['TASK ERROR: x'], 1)]


def fake_ct_client(unlock_after, running=True, retry_timeout=30):
    client, api, clock = make_client(None, retry_timeout=retry_timeout)
    ct = FakeCt(clock, clock.now + unlock_after, running=running)
    api.handler = ct.handler
    return client, api, clock, ct


def posts(api):
    return [path.rsplit('/', 1)[-1] for method, path, params in api.calls if method == 'POST']


def test_reboot_of_an_unlocked_ct_is_one_reboot():
    client, api, clock, ct = fake_ct_client(unlock_after=0)
    assert client.reboot_container('pve', 101, 60) == 'OK'
    assert ct.actions == ['stopped', 'started'] and posts(api) == ['reboot']
    assert clock.sleeps == [] and sum(client.retries.values()) == 0


def test_reboot_that_stopped_a_locked_ct_starts_it_once_the_lock_is_gone():
    client, api, clock, ct = fake_ct_client(unlock_after=1.0)
    assert client.reboot_container('pve', 101, 60) == 'OK'
    # The reboot stopped the CT and could not start it; the start was refused on the lock until it went.
    assert ct.actions == ['stopped', 'started'] and ct.running
    assert posts(api) == ['reboot', 'start', 'start', 'start', 'start']
    assert clock.sleeps == [0.25, 0.5, 1.0] and clock.now == 1001.75  # the lock went at 1001.0
    assert client.retries['locked'] == 3
    assert [upid.split(':')[5] + ' ' + status for upid, (status, log) in ct.tasks.items()] == [
        "vzreboot startup for container '101' failed", 'vzstart CT is locked (backup)',
        'vzstart CT is locked (backup)', 'vzstart CT is locked (backup)', 'vzstart OK']


def test_reboot_of_a_ct_stopped_meanwhile_starts_it():
    # A reboot refused at once because the CT is no longer running (an earlier reboot stopped it).
    client, api, clock, ct = fake_ct_client(unlock_after=0, running=False)
    assert client.reboot_container('pve', 101, 60) == 'OK'
    assert ct.actions == ['started'] and posts(api) == ['reboot', 'start']


def test_reboot_that_cannot_start_the_ct_again_says_it_is_stopped():
    client, api, clock, ct = fake_ct_client(unlock_after=3600, retry_timeout=10)
    with pytest.raises(errors.ProxmoxError) as err:
        client.reboot_container('pve', 101, 60)
    assert ct.actions == ['stopped'] and not ct.running
    assert err.value.msg.startswith("CT 101 is stopped: its reboot stopped it and failed (Proxmox task reboot of CT 101 "
                                    "on node pve failed: startup for container '101' failed | last log lines: ")
    assert 'and starting it again failed: Proxmox task start of CT 101 after its failed reboot on node pve failed: ' \
           'CT is locked (backup)' in err.value.msg
    assert sum(clock.sleeps) <= 10


def test_reboot_failure_with_the_ct_still_running_is_raised_as_is():
    answers = ['UPID:pve:00000001:00000002:65000000:vzreboot:101:root@pam:',
               {'status': 'stopped', 'exitstatus': 'container did not stop'}, [],
               {'status': 'running'}]
    client, api, clock = make_client(scripted(*answers))
    with pytest.raises(errors.ProxmoxTaskError) as err:
        client.reboot_container('pve', 101, 60)
    assert err.value.exitstatus == 'container did not stop'
    assert posts(api) == ['reboot']
