# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the pure parts of the Proxmox client, and of its retry and task logic against a fake API."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
import requests
from proxmoxer.core import ResourceException

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _polling as polling
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_client as proxmox_client
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_errors as errors
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_settings as proxmox_settings
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _pve_formats as formats

SECRET = '5f0b1d9e-0c1a-4a6e-9d55-7d3c2b1a0f99'
TOKEN_ID = 'mpanel-api@pve!mpanel-token'
UPID = 'UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:mpanel-api@pve!mpanel-token:'


def error_of(function, *args, **kwargs):
    """The message of the ProxmoxError that ``function(*args, **kwargs)`` raises."""
    with pytest.raises(errors.ProxmoxError) as err:
        function(*args, **kwargs)
    return err.value.msg


# --------------------------------------------------------------------------
# token ids and URLs
# --------------------------------------------------------------------------

@pytest.mark.parametrize('token_id, user, name', [
    ('mpanel-api@pve!mpanel-token', 'mpanel-api@pve', 'mpanel-token'),
    ('root@pam!ansible', 'root@pam', 'ansible'),
    ('ops.user@ldap-corp!t1_x.y', 'ops.user@ldap-corp', 't1_x.y'),
    ('  mpanel-api@pve!mpanel-token  ', 'mpanel-api@pve', 'mpanel-token'),
])
def test_parse_token_id_good(token_id, user, name):
    assert proxmox_settings.parse_token_id(token_id) == (user, name)


@pytest.mark.parametrize('token_id, expected', [
    ('', 'empty'),
    ('mpanel-api@pve', '"!tokenid" part is missing'),
    ('mpanel-api!mpanel-token', '"@realm" part'),
    ('@pve!tok', 'non-empty'),
    ('mpanel-api@!tok', 'non-empty'),
    ('mpanel-api@pve!', 'non-empty'),
    ('mpanel api@pve!tok', 'without spaces'),
    ('mpanel-api@pve!1tok', 'start with a letter'),
    ('mpanel-api@pve!mpanel-token=' + SECRET, 'looks like "id=secret"'),
])
def test_parse_token_id_bad(token_id, expected):
    msg = error_of(proxmox_settings.parse_token_id, token_id)
    assert expected in msg
    assert 'user@realm!tokenid' in msg
    assert SECRET not in msg


def test_token_id_with_pasted_secret_is_redacted_in_message():
    msg = error_of(proxmox_settings.parse_token_id, 'mpanel-api@pve!mpanel-token=' + SECRET)
    assert SECRET not in msg
    assert 'mpanel-api@pve!mpanel-token=********' in msg


@pytest.mark.parametrize('url, expected', [
    ('https://10.1.10.70:8006/api2/json', ('10.1.10.70', 8006, None)),
    ('https://pve.example.com/api2/json/', ('pve.example.com', 8006, None)),
    ('https://127.0.0.1:43211/api2/json', ('127.0.0.1', 43211, None)),
    ('https://[::1]:8006/api2/json', ('::1', 8006, None)),
    ('https://proxy.example.com/pve/api2/json', ('proxy.example.com', 8006, 'pve')),
])
def test_parse_api_url_good(url, expected):
    assert proxmox_settings.parse_api_url(url) == expected


@pytest.mark.parametrize('url, expected', [
    ('', 'empty'),
    ('http://10.1.10.70:8006/api2/json', 'must use https'),
    ('10.1.10.70:8006', 'must use https'),
    ('https://10.1.10.70:8006', 'must end with the API path'),
    ('https://10.1.10.70:8006/api2/extjs', 'must end with the API path'),
    ('https:///api2/json', 'no host name'),
    ('https://10.1.10.70:99999/api2/json', 'invalid port'),
    ('https://10.1.10.70:8006/api2/json?x=1', 'query or fragment'),
])
def test_parse_api_url_bad(url, expected):
    assert expected in error_of(proxmox_settings.parse_api_url, url)


def test_api_url_with_credentials_is_refused_without_echoing_them():
    msg = error_of(proxmox_settings.parse_api_url, 'https://root:%s@10.1.10.70:8006/api2/json' % SECRET)
    assert SECRET not in msg
    assert 'credentials' in msg


def test_connection_settings(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('-----BEGIN CERTIFICATE-----\n')
    s = proxmox_settings.ConnectionSettings('https://10.1.10.70:8006/api2/json', TOKEN_ID, SECRET, ca_path=str(ca))
    assert (s.user, s.token_name, s.node, s.port) == ('mpanel-api@pve', 'mpanel-token', 'pve', 8006)
    assert s.verify == str(ca)
    assert proxmox_settings.ConnectionSettings('https://h/api2/json', TOKEN_ID, SECRET, validate_certs=False).verify is False
    assert proxmox_settings.ConnectionSettings('https://h/api2/json', TOKEN_ID, SECRET).verify is True
    assert 'not a readable file' in error_of(proxmox_settings.ConnectionSettings, 'https://h/api2/json', TOKEN_ID, SECRET,
                                             ca_path=str(tmp_path / 'nope.pem'))
    assert 'api_token_secret is empty' in error_of(proxmox_settings.ConnectionSettings, 'https://h/api2/json', TOKEN_ID, '')


def test_argument_spec_env_fallbacks_and_no_log():
    spec = proxmox_settings.proxmox_argument_spec()
    envs = dict((name, opt['fallback'][1][0]) for name, opt in spec.items())
    assert envs == {
        'api_url': 'PROXMOX_API_URL', 'api_token_id': 'PROXMOX_API_TOKEN_ID',
        'api_token_secret': 'PROXMOX_API_TOKEN_SECRET', 'node': 'PROXMOX_NODE_NAME',
        'validate_certs': 'PROXMOX_VALIDATE_CERTS', 'ca_path': 'PROXMOX_CA_BUNDLE',
        'api_timeout': 'PROXMOX_API_TIMEOUT',
    }
    assert spec['api_token_secret']['no_log'] is True
    assert spec['api_token_id']['no_log'] is False
    assert spec['validate_certs']['default'] is True
    assert spec['node']['default'] == 'pve'


# --------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------

def test_scrub_secrets():
    text = 'boom Authorization: PVEAPIToken=%s=%s and again %s' % (TOKEN_ID, SECRET, SECRET)
    scrubbed = errors.scrub_secrets(text, [SECRET])
    assert SECRET not in scrubbed
    assert 'PVEAPIToken=%s=********' % TOKEN_ID in scrubbed
    # the header form is scrubbed even when the secret is not known
    assert SECRET not in errors.scrub_secrets('PVEAPIToken=a@b!c=%s' % SECRET)
    assert errors.scrub_secrets(None, [SECRET]) is None
    assert errors.scrub_secrets('nothing here', [None, '']) == 'nothing here'


def test_auth_error_names_token_not_secret():
    msg = errors.describe_api_error(401, 'authentication failure', 'GET', 'cluster/resources', TOKEN_ID)
    assert 'authentication failed for token %s' % TOKEN_ID in msg
    assert SECRET not in msg


def test_permission_error_names_path_and_privilege():
    msg = errors.describe_api_error(403, 'Permission check failed (/vms/101, VM.Allocate)', 'POST',
                                    'nodes/pve/lxc/9000/clone', TOKEN_ID)
    assert 'Permission check failed (/vms/101, VM.Allocate)' in msg
    assert 'lacks privilege VM.Allocate on /vms/101' in msg


def test_parameter_error_lists_parameters():
    msg = errors.describe_api_error(400, 'Parameter verification failed.', 'PUT', 'nodes/pve/lxc/101/config',
                                    TOKEN_ID, errors={'onboot': "type check ('boolean') failed - got 'True'"})
    assert "onboot: type check ('boolean') failed - got 'True'" in msg


# --------------------------------------------------------------------------
# UPIDs
# --------------------------------------------------------------------------

def test_parse_upid_valid():
    task = formats.parse_upid(UPID)
    assert task.node == 'pve'
    assert task.pid == 0xA1B2
    assert task.pstart == 0xC0FFEE
    assert task.starttime == 0x6553F00D
    assert task.type == 'vzclone'
    assert task.id == '9000'
    assert task.user == 'mpanel-api@pve!mpanel-token'
    assert task.upid == UPID


def test_parse_upid_empty_id_is_valid():
    assert formats.parse_upid('UPID:pve:00001234:00005678:65000000:vzdump::root@pam:').id == ''


@pytest.mark.parametrize('upid, expected', [
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:', 'nine colon-terminated parts'),
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:extra:', 'found 10'),
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam', 'ends with a colon'),
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:x', 'ends with a colon'),
    ('TASK:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:', 'starts with "UPID:"'),
    ('UPID:pve:0000XYZ1:00C0FFEE:6553F00D:vzclone:9000:root@pam:', 'pid'),
    ('UPID:pve:0000A1B2:00C0FFEE:123:vzclone:9000:root@pam:', 'starttime'),
    ('UPID::0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:', 'must not be empty'),
])
def test_parse_upid_invalid(upid, expected):
    assert expected in error_of(formats.parse_upid, upid)


def test_parse_upid_not_a_string():
    with pytest.raises(errors.ProxmoxError):
        formats.parse_upid(None)


# --------------------------------------------------------------------------
# retry classification
# --------------------------------------------------------------------------

@pytest.mark.parametrize('status, message, reason', [
    (500, 'CT is locked (disk)', 'locked'),
    (500, 'CT is locked (create)', 'locked'),
    (500, 'VM is locked (backup)', 'locked'),
    (500, 'unable to clone: CT is locked (disk)\n', 'locked'),
    (500, "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout", 'lock_timeout'),
    (500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout", 'lock_timeout'),
    (500, "CT 101 already exists on node 'pve'", 'vmid_taken'),
    (500, "unable to create CT 101 - CT 101 already exists on node 'pve'", 'vmid_taken'),
    (596, 'Connection timed out', 'http_596'),
    (596, '', 'http_596'),
    (595, 'Connection refused', 'http_595'),
])
def test_classify_transient(status, message, reason):
    assert errors.classify_error(status, message) == reason


@pytest.mark.parametrize('status, message', [
    (400, 'Parameter verification failed.'),
    (401, 'authentication failure'),
    (403, 'Permission check failed (/vms/101, VM.Allocate)'),
    (500, 'Configuration file does not exist'),
    (500, "unable to resize: disk size can only grow"),
    (500, 'CT 101 already running'),
    (500, ''),
    (501, 'Method not implemented'),
    (503, 'Service Unavailable'),
    (None, 'Connection refused'),
    # a lock message under a non-5xx status is not what Proxmox sends under contention
    (400, 'CT is locked (disk)'),
    (403, "CT 101 already exists on node 'pve'"),
])
def test_classify_not_transient(status, message):
    assert errors.classify_error(status, message) is None


def test_retryable_reasons_exclude_vmid_taken():
    assert 'vmid_taken' not in errors.RETRYABLE
    assert set(errors.RETRYABLE) | {'vmid_taken'} == set(errors.RETRY_REASONS)


# --------------------------------------------------------------------------
# property strings, sizes, tags, descriptions, booleans
# --------------------------------------------------------------------------

@pytest.mark.parametrize('text, default_key', [
    ('name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth', None),
    ('local-lvm:vm-101-disk-0,size=8G', 'volume'),
    ('local:subvol-101-disk-0,mountoptions=noatime;nosuid,size=2G', 'volume'),
    ('name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,type=veth', None),
])
def test_property_string_round_trip(text, default_key):
    props = formats.parse_property_string(text, default_key)
    assert formats.format_property_string(props, default_key) == text


def test_property_string_parse():
    props = formats.parse_property_string('local-lvm:vm-101-disk-0,size=8G', 'volume')
    assert props == {'volume': 'local-lvm:vm-101-disk-0', 'size': '8G'}
    assert list(formats.parse_property_string('name=eth0,bridge=vmbr0')) == ['name', 'bridge']
    assert formats.parse_property_string('') == {}
    assert formats.parse_property_string(None) == {}
    with pytest.raises(errors.ProxmoxError):
        formats.parse_property_string('name=eth0,garbage')


def test_property_string_format_booleans_and_none():
    assert formats.format_property_string({'name': 'eth0', 'firewall': True, 'x': None, 'y': False}) == \
        'name=eth0,firewall=1,y=0'


@pytest.mark.parametrize('text, num_bytes', [
    ('8G', 8 * 1024 ** 3), ('512M', 512 * 1024 ** 2), ('1T', 1024 ** 4), ('64K', 65536),
    ('1.5G', int(1.5 * 1024 ** 3)), ('30g', 30 * 1024 ** 3), ('2GiB', 2 * 1024 ** 3),
    ('4096', 4096), (4096, 4096),
])
def test_parse_size(text, num_bytes):
    assert formats.parse_size(text) == num_bytes


@pytest.mark.parametrize('text', ['', 'G', 'eight', '8X', '-1G', None])
def test_parse_size_bad(text):
    with pytest.raises(errors.ProxmoxError):
        formats.parse_size(text)


@pytest.mark.parametrize('num_bytes, text', [
    (30 * 1024 ** 3, '30G'), (512 * 1024 ** 2, '512M'), (2 * 1024 ** 4, '2T'), (1536 * 1024 ** 2, '1536M'), (100, '100'),
])
def test_format_size(num_bytes, text):
    assert formats.format_size(num_bytes) == text
    assert formats.parse_size(text) == num_bytes


def test_tags():
    assert formats.parse_tags('cloudpod;Starter;web') == ['cloudpod', 'starter', 'web']
    assert formats.parse_tags(['B', 'a', 'a ', '']) == ['a', 'b']
    assert formats.parse_tags('a,b c') == ['a', 'b', 'c']
    assert formats.parse_tags(None) == []
    assert formats.format_tags(['starter', 'cloudpod']) == 'cloudpod;starter'
    assert formats.invalid_tags(['ok', 'not ok!', '-x', 'a.b+c_d-e']) == ['-x', 'not ok!']
    assert formats.invalid_tags(['fine', 'bad!']) == ['bad!']


def test_normalize_description():
    # The pod record inside a description: test_pod_record.py.
    desc = 'Cloud Pod for shop.example.com\ncloudpods-pod: sub-1042'
    assert formats.normalize_description(desc + '\n') == formats.normalize_description(desc) == desc
    assert formats.normalize_description('a  \r\nb\n\n') == 'a\nb'
    assert formats.normalize_description(None) == ''


def test_to_pve_params_sends_booleans_as_integers():
    assert formats.to_pve_params({'full': True, 'onboot': False, 'pool': None, 'cores': 2}) == \
        {'full': 1, 'onboot': 0, 'cores': 2}


@pytest.mark.parametrize('value, expected', [(1, True), ('1', True), (0, False), ('0', False), (None, False)])
def test_pve_bool(value, expected):
    assert formats.pve_bool(value) is expected


# --------------------------------------------------------------------------
# IPv4 selection
# --------------------------------------------------------------------------

LO = {'name': 'lo', 'hwaddr': '00:00:00:00:00:00', 'inet': '127.0.0.1/8', 'inet6': '::1/128'}


@pytest.mark.parametrize('interfaces, expected', [
    (None, None),
    ([], None),
    ([LO], None),
    ([LO, {'name': 'eth0', 'hwaddr': 'bc:24:11:00:00:01', 'inet6': 'fe80::be24:11ff:fe00:1/64'}], None),
    ([LO, {'name': 'eth0', 'inet': '169.254.10.2/16'}], None),
    ([LO, {'name': 'eth0', 'inet': '0.0.0.0/0'}], None),
    ([LO, {'name': 'eth0', 'inet': '224.0.0.251/32'}], None),
    ([LO, {'name': 'eth0', 'inet': '10.1.10.151/24', 'inet6': 'fe80::1/64'}], '10.1.10.151'),
    ([LO, {'name': 'eth0', 'inet': '192.168.50.7/24'}], '192.168.50.7'),
    ([LO, {'name': 'eth0', 'inet': '203.0.113.9/24'}], '203.0.113.9'),
    ([{'name': 'eth0', 'inet': '127.0.0.2/8'}, {'name': 'eth1', 'inet': '172.16.0.4/12'}], '172.16.0.4'),
    # newer PVE shape
    ([{'name': 'lo', 'ip-addresses': [{'ip-address': '127.0.0.1', 'ip-address-type': 'inet', 'prefix': 8}]},
      {'name': 'eth0', 'ip-addresses': [
          {'ip-address': 'fe80::1', 'ip-address-type': 'inet6', 'prefix': 64},
          {'ip-address': '10.0.3.15', 'ip-address-type': 'inet', 'prefix': 24}]}], '10.0.3.15'),
    # an address on lo that looks global is still ignored: lo is never the pod's address
    ([{'name': 'lo', 'inet': '10.9.9.9/32'}], None),
    ([{'name': 'eth0', 'inet': 'not-an-ip'}], None),
])
def test_first_global_ipv4(interfaces, expected):
    assert formats.first_global_ipv4(interfaces) == expected


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


def test_backoff_jitter_stays_within_half_to_full_delay():
    backoff = polling.Backoff(base=1.0, factor=2.0, cap=4.0, rand=lambda: 0.0)
    assert [backoff.next() for dummy in range(4)] == [0.5, 1.0, 2.0, 2.0]
    backoff = polling.Backoff(base=1.0, factor=2.0, cap=4.0, rand=lambda: 1.0)
    assert [backoff.next() for dummy in range(4)] == [1.0, 2.0, 4.0, 4.0]


def test_error_messages_from_the_client_never_contain_the_secret():
    reason = 'bad header PVEAPIToken=%s=%s' % (TOKEN_ID, SECRET)
    client, api, clock = make_client(scripted(http_error(401, reason)))
    with pytest.raises(errors.ProxmoxApiError) as err:
        client.get('version')
    assert SECRET not in err.value.msg
    assert SECRET not in err.value.reason
    assert 'authentication failed for token %s' % TOKEN_ID in err.value.msg


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


@pytest.mark.parametrize('method, path, params, expected', [
    ('PUT', 'nodes/pve/lxc/101/config', {'cores': 2, 'net0': 'x', 'tags': 'a'},
     [[('/vms/101', 'VM.Config.CPU')], [('/vms/101', 'VM.Config.Network')], [('/vms/101', 'VM.Config.Options')]]),
    ('DELETE', 'nodes/pve/lxc/101', {}, [[('/vms/101', 'VM.Allocate')]]),
    ('POST', 'nodes/pve/lxc/101/status/start', {}, [[('/vms/101', 'VM.PowerMgmt')]]),
    ('GET', 'cluster/resources', {}, []),
])
def test_required_privileges(method, path, params, expected):
    assert errors.required_privileges(method, path, params) == expected


def test_clone_refused_on_a_locked_template_retries_with_a_fresh_vmid():
    nextids = ['101', '102']
    answers = [http_error(500, 'CT is locked (disk)'), UPID]
    posted = []

    def handler(method, path, params):
        if path == 'cluster/nextid':
            return nextids.pop(0)
        if path.endswith('/clone'):
            posted.append(params['newid'])
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return {'status': 'stopped', 'exitstatus': 'OK'}

    client, api, clock = make_client(handler)
    assert client.clone_container('pve', 9000, 60, hostname='p1') == (102, True)
    assert posted == [101, 102]
    assert (client.retries['locked'], client.retries['vmid_taken']) == (1, 0)
    assert clock.sleeps[0] == 0.25


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
    posted = []
    answers = [http_error(596, 'Connection timed out'), UPID]

    def handler(method, path, params):
        if path == 'cluster/nextid':
            return '101'
        if path.endswith('/clone'):
            posted.append(params['newid'])
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return {'status': 'stopped', 'exitstatus': 'OK'}

    client, api, clock = make_client(handler)
    assert client.clone_container('pve', 9000, 60, find_existing=lambda: None, hostname='p1') == (101, True)
    assert posted == [101, 101]
