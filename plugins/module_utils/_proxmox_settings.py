# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: the connection options of the Proxmox modules, validated.

The argument spec every Proxmox module shares (documented in the ``mpanel.cloudpods.proxmox``
doc fragment, with its environment variables) and ``ConnectionSettings``, built from it: API
token only, and every message says which part of an option is wrong without repeating a secret.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

from ansible.module_utils.basic import env_fallback

from ansible_collections.mpanel.cloudpods.plugins.module_utils._http import ApiSettings, split_api_url
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import REDACTED, ProxmoxError

_TOKEN_ID_RE = re.compile(r'^(?P<user>[^\s:/@!=]+)@(?P<realm>[A-Za-z][A-Za-z0-9._-]*)!(?P<token>[A-Za-z][A-Za-z0-9._-]*)$')


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
    parts, port = split_api_url(
        url, ('https',), 'must use https (the Proxmox VE API only speaks HTTPS)', example,
        'api_url is empty: set it (or PROXMOX_API_URL) to the API base URL, %s' % example,
        'authenticate with api_token_id and api_token_secret instead', ProxmoxError)
    path = parts.path.rstrip('/')
    if not path.endswith('/api2/json'):
        raise ProxmoxError('api_url must end with the API path /api2/json, %s; got %r' % (example, url.strip()))
    prefix = path[:-len('/api2/json')].strip('/') or None
    return parts.hostname, port or 8006, prefix


class ConnectionSettings(ApiSettings):
    """Validated connection options, built from module parameters."""

    OPTIONS = ('api_url', 'api_token_id', 'api_token_secret', 'node', 'validate_certs', 'ca_path', 'api_timeout')

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

    @property
    def endpoint(self):
        host = '[%s]' % self.host if ':' in self.host else self.host
        return 'https://%s:%s' % (host, self.port)
