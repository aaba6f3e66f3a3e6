# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One Proxmox VE client for every module of mpanel.cloudpods.

It wraps proxmoxer's HTTPS backend and adds what the Proxmox modules need in
one place: validated connection settings (API token only), error messages that
explain what went wrong and never contain the token secret, task (UPID)
waiting that notices a stopped task quickly, bounded retries for exactly the
transient failures Proxmox VE produces under concurrency, and VMID allocation
that survives the ``cluster/nextid`` race.

The pure helpers (parsing UPIDs, property strings, sizes, tags, interfaces)
have no dependency on proxmoxer so that they can be unit tested on their own.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import ipaddress
import os
import random
import re
import time
import traceback
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback, missing_required_lib
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils import redact
from ansible_collections.mpanel.cloudpods.plugins.module_utils.base import SecretSafeModule

PROXMOXER_IMPORT_ERROR = None
try:
    from proxmoxer import ProxmoxAPI
    from proxmoxer.core import ResourceException
    HAS_PROXMOXER = True
except ImportError:
    ProxmoxAPI = None
    HAS_PROXMOXER = False
    PROXMOXER_IMPORT_ERROR = traceback.format_exc()

    class ResourceException(Exception):
        """Stand-in so that ``except ResourceException`` stays valid without proxmoxer."""

REQUESTS_IMPORT_ERROR = None
try:
    import requests
    HAS_REQUESTS = True
    _REQUEST_ERRORS = (requests.exceptions.RequestException,)
except ImportError:
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
    _REQUEST_ERRORS = ()


REDACTED = redact.REDACTED

# Retry reasons. Only RETRYABLE ones are retried by ProxmoxClient.request();
# 'vmid_taken' is retried by the VMID allocator alone, with a fresh nextid.
RETRY_REASONS = ('locked', 'lock_timeout', 'vmid_taken', 'http_595', 'http_596')
RETRYABLE = frozenset(('locked', 'lock_timeout', 'http_595', 'http_596'))

_LOCKED_RE = re.compile(r'\b(?:CT|VM) is locked \(\w+\)')
_LOCK_TIMEOUT_RE = re.compile(r"can't lock file '?[^']*'?.*got timeout")
_VMID_TAKEN_RE = re.compile(r'\b(?:CT|VM) \d+ already exists\b')
_TOKEN_ID_RE = re.compile(r'^(?P<user>[^\s:/@!=]+)@(?P<realm>[A-Za-z][A-Za-z0-9._-]*)!(?P<token>[A-Za-z][A-Za-z0-9._-]*)$')
_AUTH_HEADER_RE = re.compile(r'(PVEAPIToken=[^=\s]*=)\S+')
_PERMISSION_RE = re.compile(r'Permission check failed \((?P<path>[^,)]+),\s*(?P<priv>[^)]+)\)')
_TAG_RE = re.compile(r'^[a-z0-9_][a-z0-9_+.-]*$')
_SIZE_RE = re.compile(r'^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:i?B)?\s*$', re.IGNORECASE)
_HEX_RE = re.compile(r'^[0-9A-Fa-f]{8,}$')

_SIZE_FACTORS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}


class ProxmoxError(Exception):
    """An error to report to the user as is: ``msg`` is already explained and scrubbed."""

    def __init__(self, msg):
        super(ProxmoxError, self).__init__(msg)
        self.msg = msg


class ProxmoxApiError(ProxmoxError):
    """The API answered with an HTTP error (or a transport error, status_code None)."""

    def __init__(self, msg, status_code=None, reason=None, method=None, path=None, errors=None):
        super(ProxmoxApiError, self).__init__(msg)
        self.status_code = status_code
        self.reason = reason or ''
        self.method = method
        self.path = path
        self.errors = errors

    @property
    def retry_reason(self):
        return classify_error(self.status_code, self.reason)


class ProxmoxTaskError(ProxmoxError):
    """A UPID task stopped with an error exit status."""

    def __init__(self, msg, upid=None, exitstatus=None, log=None):
        super(ProxmoxTaskError, self).__init__(msg)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log = log or []


class ProxmoxTimeout(ProxmoxError):
    """Waiting (for a task, a lock or an address) took longer than allowed."""


# --------------------------------------------------------------------------
# Connection settings
# --------------------------------------------------------------------------

def proxmox_argument_spec():
    """Connection options shared by every Proxmox module (documented in the doc fragment)."""
    return dict(
        api_url=dict(type='str', required=True, fallback=(env_fallback, ['PROXMOX_API_URL'])),
        api_token_id=dict(type='str', required=True, no_log=False,
                          fallback=(env_fallback, ['PROXMOX_API_TOKEN_ID'])),
        api_token_secret=dict(type='str', required=True, no_log=True,
                              fallback=(env_fallback, ['PROXMOX_API_TOKEN_SECRET'])),
        node=dict(type='str', default='pve', fallback=(env_fallback, ['PROXMOX_NODE_NAME'])),
        validate_certs=dict(type='bool', default=True, fallback=(env_fallback, ['PROXMOX_VALIDATE_CERTS'])),
        ca_path=dict(type='path', fallback=(env_fallback, ['PROXMOX_CA_BUNDLE'])),
        api_timeout=dict(type='int', default=30, fallback=(env_fallback, ['PROXMOX_API_TIMEOUT'])),
    )


def scrub_secrets(text, secrets=()):
    """Return ``text`` with every secret and any token header value replaced by ``********``."""
    return redact.scrub_secrets(text, secrets, patterns=(_AUTH_HEADER_RE,))


def _describe_token_id(value):
    """A token id safe to print: anything after '=' (a pasted secret) is hidden."""
    if '=' in value:
        value = value.split('=', 1)[0] + '=' + REDACTED
    return value


def parse_token_id(token_id):
    """Split ``user@realm!tokenid`` into ``(user@realm, tokenid)``.

    Raises ProxmoxError with a message that says which part is wrong; the
    message never contains anything after a ``=`` (that would be a secret).
    """
    if not token_id or not token_id.strip():
        raise ProxmoxError('api_token_id is empty: set it (or PROXMOX_API_TOKEN_ID) to the API token id, '
                           'in the form user@realm!tokenid, e.g. mpanel-api@pve!mpanel-token')
    shown = _describe_token_id(token_id.strip())
    hint = 'api_token_id must have the form user@realm!tokenid (e.g. mpanel-api@pve!mpanel-token); got %r' % shown
    if '=' in token_id:
        raise ProxmoxError('%s: it contains "=", which looks like "id=secret"; put only the id in '
                           'api_token_id and the secret in api_token_secret' % hint)
    token_id = token_id.strip()
    if '!' not in token_id:
        raise ProxmoxError('%s: the "!tokenid" part is missing' % hint)
    if '@' not in token_id.split('!', 1)[0]:
        raise ProxmoxError('%s: the "@realm" part of the user is missing' % hint)
    match = _TOKEN_ID_RE.match(token_id)
    if not match:
        raise ProxmoxError('%s: user, realm and token name must be non-empty, without spaces, '
                           'and realm and token name start with a letter' % hint)
    return '%s@%s' % (match.group('user'), match.group('realm')), match.group('token')


def parse_api_url(url):
    """Parse ``https://HOST[:PORT]/api2/json`` into ``(host, port, path_prefix)``."""
    example = 'e.g. https://10.1.10.70:8006/api2/json'
    if not url or not url.strip():
        raise ProxmoxError('api_url is empty: set it (or PROXMOX_API_URL) to the API base URL, %s' % example)
    parts = urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        raise ProxmoxError('api_url must not contain credentials (user:password@); authenticate with '
                           'api_token_id and api_token_secret instead')
    shown = url.strip()
    if parts.scheme.lower() != 'https':
        raise ProxmoxError('api_url must use https (the Proxmox VE API only speaks HTTPS), %s; got %r'
                           % (example, shown))
    if not parts.hostname:
        raise ProxmoxError('api_url has no host name, %s; got %r' % (example, shown))
    try:
        port = parts.port or 8006
    except ValueError:
        raise ProxmoxError('api_url has an invalid port, %s; got %r' % (example, shown))
    if parts.query or parts.fragment:
        raise ProxmoxError('api_url must not have a query or fragment, %s; got %r' % (example, shown))
    path = parts.path.rstrip('/')
    if not path.endswith('/api2/json'):
        raise ProxmoxError('api_url must end with the API path /api2/json, %s; got %r' % (example, shown))
    prefix = path[:-len('/api2/json')].strip('/') or None
    return parts.hostname, port, prefix


class ConnectionSettings(object):
    """Validated connection options, built from module parameters."""

    def __init__(self, api_url, api_token_id, api_token_secret, node='pve', validate_certs=True,
                 ca_path=None, api_timeout=30):
        self.api_url = api_url
        self.host, self.port, self.path_prefix = parse_api_url(api_url)
        self.token_id = api_token_id.strip()
        self.user, self.token_name = parse_token_id(api_token_id)
        if not api_token_secret:
            raise ProxmoxError('api_token_secret is empty: set it (or PROXMOX_API_TOKEN_SECRET) to the '
                               'secret of token %s' % self.token_id)
        self.token_secret = api_token_secret
        self.node = node or 'pve'
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        if validate_certs and ca_path and not os.path.isfile(ca_path):
            raise ProxmoxError('ca_path %r (PROXMOX_CA_BUNDLE) is not a readable file: it must be the CA '
                               'bundle (PEM) that signed the Proxmox VE certificate' % ca_path)
        if api_timeout is not None and api_timeout <= 0:
            raise ProxmoxError('api_timeout must be a positive number of seconds; got %r' % api_timeout)
        self.api_timeout = api_timeout or 30

    @classmethod
    def from_params(cls, params):
        return cls(api_url=params['api_url'], api_token_id=params['api_token_id'],
                   api_token_secret=params['api_token_secret'], node=params.get('node'),
                   validate_certs=params.get('validate_certs', True), ca_path=params.get('ca_path'),
                   api_timeout=params.get('api_timeout'))

    @property
    def verify(self):
        """What requests needs: False, True (system CAs) or the CA bundle path."""
        if not self.validate_certs:
            return False
        return self.ca_path or True

    @property
    def endpoint(self):
        host = '[%s]' % self.host if ':' in self.host else self.host
        return 'https://%s:%s' % (host, self.port)


# --------------------------------------------------------------------------
# Error classification and messages
# --------------------------------------------------------------------------

def classify_error(status_code, message):
    """Name the transient failure behind an API error, or return None.

    Only what Proxmox VE really produces under concurrency is recognised:
    ``CT/VM is locked (...)``, ``can't lock file ... got timeout``, the create
    race ``CT 101 already exists`` and pveproxy's 595/596 connection errors.
    Authentication, permission and parameter errors are never transient.
    """
    if status_code == 596:
        return 'http_596'
    if status_code == 595:
        return 'http_595'
    if status_code is None or status_code < 500:
        return None
    message = message or ''
    if _LOCKED_RE.search(message):
        return 'locked'
    if _LOCK_TIMEOUT_RE.search(message):
        return 'lock_timeout'
    if _VMID_TAKEN_RE.search(message):
        return 'vmid_taken'
    return None


def _format_param_errors(errors):
    if isinstance(errors, dict):
        return '; '.join('%s: %s' % (k, to_text(v).strip()) for k, v in sorted(errors.items()))
    return to_text(errors).strip()


_GRANT_HINT = ('grant it on that path (or a parent) to the token\'s user, and to the token itself if it was '
               'created with privilege separation')


def describe_api_error(status_code, reason, method, path, token_id, errors=None):
    """Turn an HTTP error from the API into a message a person can act on."""
    reason = to_text(reason or '').strip()
    where = '%s /%s' % (method, path)
    if status_code == 401:
        return ('Proxmox API authentication failed for token %s (%s: HTTP 401 %s): check api_token_id '
                'and api_token_secret (PROXMOX_API_TOKEN_ID / PROXMOX_API_TOKEN_SECRET), and that the '
                'token exists and has not expired' % (token_id, where, reason or 'authentication failure'))
    if status_code == 403:
        match = _PERMISSION_RE.search(reason)
        if match:
            return ('Proxmox API permission denied for token %s on %s: %s. The token lacks privilege %s '
                    'on %s: %s' % (token_id, where, reason, match.group('priv').strip(),
                                   match.group('path').strip(), _GRANT_HINT))
        return 'Proxmox API permission denied for token %s on %s: HTTP 403 %s' % (token_id, where, reason)
    if status_code == 400:
        details = _format_param_errors(errors) if errors else ''
        return 'Proxmox API rejected the parameters of %s: %s%s' % (
            where, reason or 'Parameter verification failed.', (' (%s)' % details) if details else '')
    if status_code in (595, 596):
        return ('Proxmox API proxy error on %s: HTTP %s %s (pveproxy could not reach the node or the '
                'connection broke)' % (where, status_code, reason))
    return 'Proxmox API error on %s: HTTP %s %s' % (where, status_code, reason)


def describe_transport_error(exc, settings, method, path):
    """Explain a connection, TLS or timeout problem (requests exceptions)."""
    where = '%s /%s' % (method, path)
    text = to_text(exc)
    if requests is not None:
        if isinstance(exc, requests.exceptions.SSLError):
            if settings.ca_path:
                how = ('the server certificate does not verify against ca_path %s (PROXMOX_CA_BUNDLE); '
                       'check that it is the CA that signed the certificate and that the host name in '
                       'api_url matches the certificate' % settings.ca_path)
            else:
                how = ('set ca_path (PROXMOX_CA_BUNDLE) to the CA bundle that signed the Proxmox VE '
                       'certificate (validate_certs=false only for throwaway test systems)')
            return 'TLS verification of the Proxmox API at %s failed on %s: %s; %s' % (
                settings.endpoint, where, text, how)
        if isinstance(exc, requests.exceptions.Timeout):
            return ('The Proxmox API at %s did not answer %s within api_timeout=%s s: %s'
                    % (settings.endpoint, where, settings.api_timeout, text))
        if isinstance(exc, requests.exceptions.ConnectionError):
            return ('Cannot connect to the Proxmox API at %s (%s): %s; check api_url (PROXMOX_API_URL) '
                    'and that pveproxy is running and reachable' % (settings.endpoint, where, text))
    return 'Request %s to the Proxmox API at %s failed: %s' % (where, settings.endpoint, text)


def required_privileges(method, path, params):
    """What an endpoint needs, as groups of alternatives ``[[(acl_path, privilege), ...], ...]``.

    Proxmox VE names the missing path and privilege in most 403 answers, but not when the
    check is an "any of" (clone needs VM.Allocate on the new VMID *or* on the target pool):
    then the answer is a bare ``Permission check failed`` and we work out which one is
    missing ourselves. Only the endpoints this collection calls are listed.
    """
    match = re.match(r'^nodes/[^/]+/lxc/(\d+)(/.*)?$', path)
    if not match:
        return []
    vmid, rest = match.group(1), match.group(2) or ''
    guest = '/vms/%s' % vmid
    if method == 'POST' and rest == '/clone':
        allocate = [('/vms/%s' % params.get('newid'), 'VM.Allocate')]
        if params.get('pool'):
            allocate.append(('/pool/%s' % params['pool'], 'VM.Allocate'))
        groups = [[(guest, 'VM.Clone')], allocate]
        if params.get('storage'):
            groups.append([('/storage/%s' % params['storage'], 'Datastore.AllocateSpace')])
        return groups
    if method == 'DELETE' and rest == '':
        return [[(guest, 'VM.Allocate')]]
    if method == 'PUT' and rest == '/config':
        by_key = {'cores': 'VM.Config.CPU', 'cpulimit': 'VM.Config.CPU', 'memory': 'VM.Config.Memory',
                  'swap': 'VM.Config.Memory', 'onboot': 'VM.Config.Options', 'description': 'VM.Config.Options',
                  'tags': 'VM.Config.Options'}
        privileges = set(by_key.get(key, 'VM.Config.Network' if key.startswith('net') else 'VM.Config.Options')
                         for key in params)
        return [[(guest, privilege)] for privilege in sorted(privileges)]
    if method == 'PUT' and rest == '/resize':
        return [[(guest, 'VM.Config.Disk')]]
    if method == 'POST' and rest.startswith('/status/'):
        return [[(guest, 'VM.PowerMgmt')]]
    if method == 'GET':
        return [[(guest, 'VM.Audit')]]
    return []


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------

Upid = collections.namedtuple('Upid', 'node pid pstart starttime type id user upid')


def parse_upid(upid):
    """Parse ``UPID:node:PID:PSTART:STARTTIME:type:id:user:`` (nine fields, trailing colon)."""
    if not isinstance(upid, str):
        raise ProxmoxError('Expected a task id (UPID string) from the Proxmox API, got %r' % (upid,))
    if not upid.startswith('UPID:'):
        raise ProxmoxError('Invalid task id %r: a UPID starts with "UPID:"' % (upid,))
    if not upid.endswith(':'):
        raise ProxmoxError('Invalid task id %r: a UPID ends with a colon '
                           '(UPID:node:pid:pstart:starttime:type:id:user:)' % (upid,))
    fields = upid[:-1].split(':')
    if len(fields) != 8:
        raise ProxmoxError('Invalid task id %r: a UPID has nine colon-terminated parts '
                           'UPID:node:pid:pstart:starttime:type:id:user: (found %d)' % (upid, len(fields) + 1))
    node, pid, pstart, starttime, task_type, task_id, user = fields[1:8]
    for name, value in (('pid', pid), ('pstart', pstart), ('starttime', starttime)):
        if not _HEX_RE.match(value):
            raise ProxmoxError('Invalid task id %r: %s %r is not hexadecimal' % (upid, name, value))
    if not node or not task_type or not user:
        raise ProxmoxError('Invalid task id %r: node, type and user must not be empty' % (upid,))
    return Upid(node, int(pid, 16), int(pstart, 16), int(starttime, 16), task_type, task_id, user, upid)


def is_upid(value):
    return isinstance(value, str) and value.startswith('UPID:')


def to_pve_params(params):
    """Drop None values and send booleans as 1/0 (Proxmox rejects True/False)."""
    result = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = 1 if value else 0
        result[key] = value
    return result


def pve_bool(value):
    """Read a Proxmox boolean (1/0, '1'/'0', None) as a Python bool."""
    if isinstance(value, str):
        return value.strip().lower() in ('1', 'true', 'yes', 'on')
    return bool(value)


def parse_property_string(text, default_key=None):
    """Parse ``key=value,key=value`` (first item may be a bare value for default_key) into an ordered dict."""
    result = collections.OrderedDict()
    if not text:
        return result
    for index, item in enumerate(text.split(',')):
        if not item:
            continue
        if '=' in item:
            key, value = item.split('=', 1)
            result[key.strip()] = value
        elif index == 0 and default_key:
            result[default_key] = item
        else:
            raise ProxmoxError('Cannot parse property string %r: item %r has no "="' % (text, item))
    return result


def format_property_string(props, default_key=None):
    """Inverse of parse_property_string(); the default key's value goes first, bare."""
    items = []
    if default_key and props.get(default_key) is not None:
        items.append(to_text(props[default_key]))
    for key, value in props.items():
        if key == default_key or value is None:
            continue
        if isinstance(value, bool):
            value = 1 if value else 0
        items.append('%s=%s' % (key, value))
    return ','.join(items)


def parse_size(text):
    """Parse a Proxmox size (``8G``, ``512M``, ``1.5T``, bare bytes) into bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE_RE.match(to_text(text or ''))
    if not match:
        raise ProxmoxError('Cannot parse size %r: expected a number with an optional K, M, G or T unit' % (text,))
    return int(float(match.group('num')) * _SIZE_FACTORS[match.group('unit').upper()])


def format_size(num_bytes):
    """Bytes to the largest unit that represents them exactly (``30G``, ``512M``)."""
    for unit in ('T', 'G', 'M', 'K'):
        factor = _SIZE_FACTORS[unit]
        if num_bytes and num_bytes % factor == 0:
            return '%d%s' % (num_bytes // factor, unit)
    return '%d' % num_bytes


def parse_tags(value):
    """Tags from a ``;``- (or ``,``/space-) separated string or a list, lower-cased, sorted, unique."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set)):
        items = value
    else:
        items = re.split(r'[;, ]', to_text(value))
    return sorted(set(to_text(t).strip().lower() for t in items if t and to_text(t).strip()))


def format_tags(tags):
    return ';'.join(parse_tags(tags))


def invalid_tags(tags):
    """The tags that Proxmox VE would reject."""
    return [t for t in parse_tags(tags) if not _TAG_RE.match(t)]


def normalize_description(description):
    # Proxmox VE stores the description as comment lines and returns it with a trailing newline.
    return '\n'.join(line.rstrip() for line in (description or '').strip().splitlines())


def _addresses_of(interface):
    """Every address string an interfaces entry carries, whatever the PVE version's shape."""
    found = []
    for key in ('inet', 'ip', 'ipv4'):
        value = interface.get(key)
        if isinstance(value, str):
            found.extend(value.split())
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str))
    for entry in interface.get('ip-addresses') or []:
        if isinstance(entry, dict) and entry.get('ip-address'):
            found.append(entry['ip-address'])
    return found


def global_ipv4(address):
    """Return the IPv4 address (no prefix) if it is global unicast (private ranges included), else None."""
    try:
        ip = ipaddress.ip_interface(to_text(address).strip()).ip
    except ValueError:
        return None
    if ip.version != 4:
        return None
    if (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved
            or ip == ipaddress.IPv4Address('255.255.255.255')):
        return None
    return str(ip)


def first_global_ipv4(interfaces):
    """The first global-unicast IPv4 in a ``GET .../interfaces`` answer (None while there is none)."""
    for interface in interfaces or []:
        if not isinstance(interface, dict) or interface.get('name') == 'lo':
            continue
        for address in _addresses_of(interface):
            ip = global_ipv4(address)
            if ip:
                return ip
    return None


def describe_interfaces(interfaces):
    if not interfaces:
        return 'none reported'
    parts = []
    for interface in interfaces:
        if isinstance(interface, dict):
            addresses = _addresses_of(interface) + [a for a in [interface.get('inet6')] if isinstance(a, str)]
            parts.append('%s %s' % (interface.get('name', '?'), ' '.join(addresses) or '(no address)'))
    return ', '.join(parts)


class Backoff(object):
    """Growing delays with jitter: base, base*factor, ... capped, each scaled by a random 0.5..1."""

    def __init__(self, base=0.25, factor=2.0, cap=2.0, jitter=True, rand=random.random):
        self.base = base
        self.factor = factor
        self.cap = cap
        self.jitter = jitter
        self.rand = rand
        self.attempt = 0

    def next(self):
        delay = min(self.cap, self.base * (self.factor ** self.attempt))
        self.attempt += 1
        if self.jitter:
            delay *= 0.5 + 0.5 * self.rand()
        return delay


class PollInterval(object):
    """Short, growing, capped poll intervals (no jitter): 0.1, 0.15, 0.225 ... cap.

    The default cap trades requests for latency: at most four status GETs a second
    per waiting task (cheap for pveproxy), and a finished task is seen within a
    quarter second, where a 1 s poll loses half a second per task on average.
    """

    def __init__(self, start=0.1, factor=1.5, cap=0.25):
        self.value = start
        self.factor = factor
        self.cap = cap

    def next(self):
        value = self.value
        self.value = min(self.cap, self.value * self.factor)
        return value


class _RetryBudget(object):
    """The retries of one call: backoff delays until ``timeout`` s after the first failure.

    ``counters`` (retries by reason) is updated for each retry taken.
    """

    def __init__(self, backoff, timeout, counters, clock, sleep):
        self.backoff = backoff
        self.timeout = timeout
        self.counters = counters
        self.clock = clock
        self.sleep = sleep
        self.deadline = clock() + timeout

    def wait_before_retry(self, exc, reason):
        """Count and sleep before retrying ``exc``; raise it, explained, once time is up."""
        delay = self.backoff.next()
        if self.clock() + delay > self.deadline:
            raise ProxmoxApiError('%s (still failing after retrying for %d s; timeout=%s)'
                                  % (exc.msg, self.timeout, self.timeout),
                                  status_code=exc.status_code, reason=exc.reason,
                                  method=exc.method, path=exc.path, errors=exc.errors)
        self.counters[reason] += 1
        self.sleep(delay)


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------

class ProxmoxClient(object):
    """Proxmox VE API over proxmoxer with retries, task waiting and readable errors.

    ``retry_timeout`` bounds how long one call keeps retrying a transient
    failure; ``retries`` counts retries by reason (see RETRY_REASONS).
    """

    def __init__(self, settings, retry_timeout=300, api=None, sleep=time.sleep, clock=time.monotonic,
                 backoff=None):
        self.settings = settings
        self.retry_timeout = retry_timeout
        self.retries = dict((reason, 0) for reason in RETRY_REASONS)
        self._sleep = sleep
        self._clock = clock
        self._backoff_factory = backoff or Backoff
        self._api = api if api is not None else self._connect()

    def _retry_budget(self):
        return _RetryBudget(self._backoff_factory(), self.retry_timeout, self.retries, self._clock, self._sleep)

    def _connect(self):
        s = self.settings
        try:
            return ProxmoxAPI(s.host, port=s.port, path_prefix=s.path_prefix, user=s.user,
                              token_name=s.token_name, token_value=s.token_secret,
                              verify_ssl=s.verify, timeout=s.api_timeout, service='PVE', backend='https')
        except Exception as exc:  # proxmoxer raises plain exceptions for bad settings
            raise ProxmoxError('Cannot set up the Proxmox API client for %s: %s'
                               % (s.endpoint, self.scrub(to_text(exc))))

    def scrub(self, text):
        return scrub_secrets(text, [self.settings.token_secret])

    # -- raw calls ------------------------------------------------------

    def _call_once(self, method, path, params):
        resource = self._api(path)
        call = getattr(resource, method.lower())
        try:
            return call(**params)
        except ResourceException as exc:
            status = getattr(exc, 'status_code', None)
            reason = self.scrub(getattr(exc, 'content', None) or to_text(exc))
            errors = getattr(exc, 'errors', None)
            if errors is not None:
                errors = dict((k, self.scrub(to_text(v))) for k, v in errors.items()) \
                    if isinstance(errors, dict) else self.scrub(to_text(errors))
            msg = describe_api_error(status, reason, method, path, self.settings.token_id, errors)
            if status == 403 and not _PERMISSION_RE.search(reason):
                msg += self._explain_missing_privileges(method, path, params)
            raise ProxmoxApiError(self.scrub(msg), status_code=status, reason=reason, method=method,
                                  path=path, errors=errors)
        except _REQUEST_ERRORS as exc:
            msg = describe_transport_error(exc, self.settings, method, path)
            raise ProxmoxApiError(self.scrub(msg), method=method, path=path)

    def _explain_missing_privileges(self, method, path, params):
        """For a bare 403: ask /access/permissions which required privilege the token lacks."""
        groups = required_privileges(method, path, params)
        if not groups:
            return ''
        held = {}
        missing = []
        try:
            for group in groups:
                for acl_path, dummy in group:
                    if acl_path not in held:
                        answer = self._call_once('GET', 'access/permissions', {'path': acl_path}) or {}
                        held[acl_path] = set(answer.get(acl_path) or {})
                if not any(privilege in held[acl_path] for acl_path, privilege in group):
                    missing.append(group)
        except ProxmoxError:
            missing = groups
            lead = '. This call needs'
        else:
            lead = '. The token lacks'
        if not missing:
            return ''
        parts = [' or '.join('%s on %s' % (privilege, acl_path) for acl_path, privilege in group)
                 for group in missing]
        return '%s %s: %s' % (lead, ', and '.join(parts), _GRANT_HINT)

    def request(self, method, path, retry=True, **params):
        """One API call; retries only RETRYABLE failures, with backoff, for at most retry_timeout s."""
        params = to_pve_params(params)
        path = path.strip('/')
        retry_budget = None
        while True:
            try:
                return self._call_once(method, path, params)
            except ProxmoxApiError as exc:
                reason = exc.retry_reason
                if not retry or reason not in RETRYABLE:
                    raise
                retry_budget = retry_budget or self._retry_budget()
                retry_budget.wait_before_retry(exc, reason)

    def get(self, path, **params):
        return self.request('GET', path, **params)

    def post(self, path, **params):
        return self.request('POST', path, **params)

    def put(self, path, **params):
        return self.request('PUT', path, **params)

    def delete(self, path, **params):
        return self.request('DELETE', path, **params)

    # -- tasks ----------------------------------------------------------

    def task_log_tail(self, upid, lines=5):
        """The last lines of a task's log (without the final TASK line); [] if unavailable."""
        task = parse_upid(upid)
        try:
            entries = self.get('nodes/%s/tasks/%s/log' % (task.node, upid), start=0, limit=500) or []
        except ProxmoxError:
            return []
        texts = [to_text(e.get('t', '')) for e in entries if isinstance(e, dict)]
        texts = [t for t in texts if t and not t.startswith('TASK ')]
        return texts[-lines:]

    def wait_for_task(self, upid, timeout, what=None):
        """Wait for a task to stop; return its exit status (``OK`` or ``WARNINGS: N``).

        Polls with short growing intervals (0.1 s up to 0.25 s) so a stopped
        task is noticed quickly. Raises ProxmoxTaskError with the task's own
        exit status (and the last log lines) if it failed, ProxmoxTimeout if
        it is still running after ``timeout`` seconds.
        """
        task = parse_upid(upid)
        label = what or ('%s %s' % (task.type, task.id)).strip()
        deadline = self._clock() + timeout
        interval = PollInterval()
        status_path = 'nodes/%s/tasks/%s/status' % (task.node, upid)
        while True:
            status = self.get(status_path) or {}
            if status.get('status') == 'stopped':
                exitstatus = to_text(status.get('exitstatus') or '').strip()
                if exitstatus == 'OK' or exitstatus.startswith('WARNINGS'):
                    return exitstatus
                log = self.task_log_tail(upid)
                msg = 'Proxmox task %s on node %s failed: %s' % (label, task.node, exitstatus or 'unknown error')
                if log:
                    msg += ' | last log lines: %s' % ' / '.join(log)
                msg += ' (task %s)' % upid
                raise ProxmoxTaskError(self.scrub(msg), upid=upid, exitstatus=exitstatus, log=log)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ProxmoxTimeout('Timed out after %s s waiting for Proxmox task %s on node %s (task %s); '
                                     'it is still running: see the node\'s task log, or raise timeout'
                                     % (timeout, label, task.node, upid))
            self._sleep(min(interval.next(), remaining))

    def run_task(self, method, path, timeout, what=None, retry_locked_task=False, params=None):
        """Call an endpoint that starts a task and wait for it (synchronous answers pass through).

        Some endpoints (start, stop, shutdown, reboot) check the guest's lock inside the task,
        so a lock held by another operation shows up as a task that failed at once with
        ``CT is locked (...)``. With ``retry_locked_task`` such a task is started again after a
        backoff, as a synchronous lock error would be; every other task failure is final.
        ``params`` are the API parameters (a dict: they may be named like our own arguments).
        """
        params = params or {}
        backoff = None
        deadline = None
        while True:
            result = self.request(method, path, **params)
            if not is_upid(result):
                return result
            try:
                return self.wait_for_task(result, timeout, what=what)
            except ProxmoxTaskError as exc:
                reason = classify_error(500, exc.exitstatus)
                if not retry_locked_task or reason not in ('locked', 'lock_timeout'):
                    raise
                now = self._clock()
                if backoff is None:
                    backoff = self._backoff_factory()
                    deadline = now + self.retry_timeout
                delay = backoff.next()
                if now + delay > deadline:
                    raise
                self.retries[reason] += 1
                self._sleep(delay)

    # -- lookups --------------------------------------------------------

    def guests(self):
        """Every guest (VMs, containers and templates) from ``cluster/resources?type=vm``."""
        return self.get('cluster/resources', type='vm') or []

    def containers(self, guests=None):
        """The LXC containers (not templates) among ``guests`` (fetched when not given)."""
        guests = self.guests() if guests is None else guests
        return [g for g in guests if g.get('type') == 'lxc' and not pve_bool(g.get('template'))]

    def guests_by_vmid(self, vmid, guests=None):
        guests = self.guests() if guests is None else guests
        return [g for g in guests if _int_or_none(g.get('vmid')) == int(vmid)]

    def next_vmid(self):
        value = self.get('cluster/nextid')
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ProxmoxError('cluster/nextid returned %r, not a VMID' % (value,))

    def container_path(self, node, vmid, suffix=''):
        return 'nodes/%s/lxc/%s%s' % (node, vmid, ('/' + suffix) if suffix else '')

    def clone_container(self, node, source_vmid, timeout, newid=None, max_vmid_attempts=20,
                        find_existing=None, **clone_params):
        """Clone ``source_vmid`` to a new VMID and wait for the task; return ``(vmid, created)``.

        ``cluster/nextid`` reserves nothing, so a concurrent create may take the same id: the
        clone then fails ``CT N already exists`` and we take a fresh id at once (bounded by
        ``max_vmid_attempts``). Before any new attempt ``find_existing`` is asked and may return
        a VMID to adopt instead: the container this very pod got meanwhile, from a concurrent run
        or from our own request whose answer was lost. ``created`` is then False.

        A clone refused because the source is locked (another clone of the same template holds
        lock ``disk`` for its whole task) is retried with backoff, with a fresh id each time: the
        refused request created nothing, and the id it named is likely taken by then. After an
        HTTP 595/596 the request may have gone through, so it is retried with the same id and
        ends up adopted through ``find_existing`` if it did.
        """
        taken = 0
        retry_budget = None
        vmid = None
        while True:
            if newid is not None:
                vmid = newid
            elif vmid is None:
                vmid = self.next_vmid()
            try:
                upid = self.request('POST', self.container_path(node, source_vmid, 'clone'), retry=False,
                                    newid=vmid, **clone_params)
            except ProxmoxApiError as exc:
                reason = exc.retry_reason
                if reason == 'vmid_taken':
                    adopted = find_existing() if find_existing is not None else None
                    if adopted is not None:
                        return adopted, False
                    taken += 1
                    if newid is not None or taken >= max_vmid_attempts:
                        raise
                    self.retries['vmid_taken'] += 1
                    vmid = None
                    continue
                if reason not in RETRYABLE:
                    raise
                retry_budget = retry_budget or self._retry_budget()
                retry_budget.wait_before_retry(exc, reason)
                adopted = find_existing() if find_existing is not None else None
                if adopted is not None:
                    return adopted, False
                if reason in ('locked', 'lock_timeout'):
                    vmid = None
                continue
            if is_upid(upid):
                self.wait_for_task(upid, timeout, what='clone of CT %s to CT %s' % (source_vmid, vmid))
            return vmid, True


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# Module base class
# --------------------------------------------------------------------------

class ProxmoxModule(SecretSafeModule):
    """Base class of the Proxmox modules: connects, and turns ProxmoxError into fail_json.

    Subclasses implement ``run()`` returning the result dict; ``execute()``
    calls it and exits. Every result, success or failure, carries
    ``api_retries``; nothing in it can contain the token secret.
    """

    retry_timeout_param = 'timeout'
    expected_error = ProxmoxError

    def __init__(self, module):
        super(ProxmoxModule, self).__init__(module)
        if not HAS_REQUESTS:
            module.fail_json(msg=missing_required_lib('requests'), exception=REQUESTS_IMPORT_ERROR)
        if not HAS_PROXMOXER:
            module.fail_json(msg=missing_required_lib('proxmoxer'), exception=PROXMOXER_IMPORT_ERROR)
        self._secrets = [module.params.get('api_token_secret')]
        token_id = module.params.get('api_token_id') or ''
        if '=' in token_id:
            # "id=secret" pasted into api_token_id: keep that secret out of the result's invocation too.
            pasted = token_id.split('=', 1)[1].strip()
            if pasted:
                module.no_log_values.add(pasted)
                self._secrets.append(pasted)
        self.client = None
        try:
            self.settings = ConnectionSettings.from_params(module.params)
            retry_timeout = module.params.get(self.retry_timeout_param) or 300
            self.client = ProxmoxClient(self.settings, retry_timeout=retry_timeout)
        except ProxmoxError as exc:
            self.fail(exc.msg)

    @property
    def node(self):
        return self.settings.node

    def api_retries(self):
        return dict(self.client.retries) if self.client else dict((r, 0) for r in RETRY_REASONS)

    def scrub(self, text):
        return scrub_secrets(text, self._secrets)

    def result_extras(self):
        return {'api_retries': self.api_retries()}
