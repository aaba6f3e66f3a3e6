# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: the Proxmox VE client's errors, and the words that explain them.

The bottom layer of the Proxmox client (nothing here talks to the API): the error classes,
which API failures are transient (and so retried), and the messages that say what went
wrong and what to check, never with the token secret in them.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils import redact
from ansible_collections.mpanel.cloudpods.plugins.module_utils._http import transport_failure

REDACTED = redact.REDACTED

# Retry reasons. Only RETRYABLE ones are retried by ProxmoxClient.request();
# 'vmid_taken' is retried by the VMID allocator alone, with a fresh nextid.
RETRY_REASONS = ('locked', 'lock_timeout', 'vmid_taken', 'http_595', 'http_596')
RETRYABLE = frozenset(('locked', 'lock_timeout', 'http_595', 'http_596'))
LOCK_REASONS = ('locked', 'lock_timeout')

_LOCKED_RE = re.compile(r'\b(?:CT|VM) is locked \(\w+\)')
_LOCK_TIMEOUT_RE = re.compile(r"can't lock file '?[^']*'?.*got timeout")
_VMID_TAKEN_RE = re.compile(r'\b(?:CT|VM) \d+ already exists\b')
_AUTH_HEADER_RE = re.compile(r'(PVEAPIToken=[^=\s]*=)\S+')
_PERMISSION_RE = re.compile(r'Permission check failed \((?P<path>[^,)]+),\s*(?P<priv>[^)]+)\)')

_GRANT_HINT = ('grant it on that path (or a parent) to the token\'s user, and to the token itself if it was '
               'created with privilege separation')
_SDN_PATH_RE = re.compile(r'^(?P<bridge>/sdn/zones/[^/]+/[^/]+)(?:/\d+)?$')


class ProxmoxError(Exception):
    """An error to report to the user as is: ``msg`` is already explained and scrubbed."""

    def __init__(self, msg):
        super(ProxmoxError, self).__init__(msg)
        self.msg = msg

    def gave_up(self, timeout):
        """This error as the last of the retries of ``timeout`` seconds (the error itself, unless explained)."""
        return self


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

    def gave_up(self, timeout):
        """This error, explained as the last of the retries of ``timeout`` seconds."""
        return ProxmoxApiError('%s (still failing after retrying for %d s; timeout=%s)' % (self.msg, timeout, timeout),
                               status_code=self.status_code, reason=self.reason, method=self.method,
                               path=self.path, errors=self.errors)


class ProxmoxTaskError(ProxmoxError):
    """A UPID task stopped with an error exit status."""

    def __init__(self, msg, upid=None, exitstatus=None, log=None):
        super(ProxmoxTaskError, self).__init__(msg)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log = log or []

    @property
    def retry_reason(self):
        # The task of an endpoint that checks the guest's lock inside it fails like the call would.
        return classify_error(500, self.exitstatus)


class ProxmoxTimeout(ProxmoxError):
    """Waiting (for a task, a lock or an address) took longer than allowed."""


def scrub_secrets(text, secrets=()):
    """Return ``text`` with every secret and any token header value replaced by ``********``."""
    return redact.scrub_secrets(text, secrets, patterns=(_AUTH_HEADER_RE,))


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


def names_privilege(reason):
    """True when a 403 reason names the missing path and privilege (most do)."""
    return bool(_PERMISSION_RE.search(reason or ''))


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
            acl_path, privilege = match.group('path').strip(), match.group('priv').strip()
            return ('Proxmox API permission denied for token %s on %s: %s. The token lacks privilege %s '
                    'on %s: %s' % (token_id, where, reason, privilege, acl_path,
                                   _sdn_use_hint(acl_path, token_id) if privilege == 'SDN.Use' else _GRANT_HINT))
        return 'Proxmox API permission denied for token %s on %s: HTTP 403 %s' % (token_id, where, reason)
    if status_code == 400:
        details = _format_param_errors(errors) if errors else ''
        return 'Proxmox API rejected the parameters of %s: %s%s' % (
            where, reason or 'Parameter verification failed.', (' (%s)' % details) if details else '')
    if status_code in (595, 596):
        return ('Proxmox API proxy error on %s: HTTP %s %s (pveproxy could not reach the node or the '
                'connection broke)' % (where, status_code, reason))
    return 'Proxmox API error on %s: HTTP %s %s' % (where, status_code, reason)


def _sdn_use_hint(acl_path, token_id):
    """What to grant when Proxmox VE 8 refuses a bridge (README.md, "Proxmox VE: the API user, role and token").

    pve-container's check_bridge_access (clone, create, network changes) calls pve-guest-common's
    check_vnet_access: SDN.Use on /sdn/zones/<zone>/<bridge>, or on .../<bridge>/<vlan> for a tagged NIC,
    for every user but root@pam. The CloudPodsProv role has no SDN.Use; an ACL on the bridge covers its VLANs.
    """
    match = _SDN_PATH_RE.match(acl_path)
    bridge_path = match.group('bridge') if match else acl_path
    user = to_text(token_id or '').partition('!')[0] or '<user>'
    return ('Proxmox VE 8 checks SDN.Use on the bridge of every network device of the container, and the '
            'CloudPodsProv role does not grant it. Grant it on the bridge to the token\'s user, e.g. '
            '"pveum role add CloudPodsNet --privs SDN.Use" and "pveum acl modify %s --roles CloudPodsNet --users %s" '
            '(add "--tokens %s" if the token was created with privilege separation)' % (bridge_path, user, token_id))


def describe_missing_privileges(missing, known):
    """The sentence added to a bare 403: which groups of alternatives ``[(acl_path, privilege), ...]`` are missing.

    ``known`` says whether the token's permissions could be read (else ``missing`` is all the call needs).
    """
    if not missing:
        return ''
    lead = '. The token lacks' if known else '. This call needs'
    parts = [' or '.join('%s on %s' % (privilege, acl_path) for acl_path, privilege in group) for group in missing]
    return '%s %s: %s' % (lead, ', and '.join(parts), _GRANT_HINT)


def describe_transport_error(exc, settings, method, path):
    """Explain a connection, TLS or timeout problem (requests exceptions)."""
    where = '%s /%s' % (method, path)
    text = to_text(exc)
    failure = transport_failure(exc)
    if failure == 'tls':
        if settings.ca_path:
            how = ('the server certificate does not verify against ca_path %s (PROXMOX_CA_BUNDLE); '
                   'check that it is the CA that signed the certificate and that the host name in '
                   'api_url matches the certificate' % settings.ca_path)
        else:
            how = ('set ca_path (PROXMOX_CA_BUNDLE) to the CA bundle that signed the Proxmox VE '
                   'certificate (validate_certs=false only for throwaway test systems)')
        return 'TLS verification of the Proxmox API at %s failed on %s: %s; %s' % (
            settings.endpoint, where, text, how)
    if failure == 'timeout':
        return ('The Proxmox API at %s did not answer %s within api_timeout=%s s: %s'
                % (settings.endpoint, where, settings.api_timeout, text))
    if failure == 'connection':
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
