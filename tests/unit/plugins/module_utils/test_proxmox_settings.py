# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the Proxmox connection options: token ids, API URLs, settings, argument spec (_proxmox_settings.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_errors as errors
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_settings as proxmox_settings

SECRET = '5f0b1d9e-0c1a-4a6e-9d55-7d3c2b1a0f99'
TOKEN_ID = 'mpanel-api@pve!mpanel-token'


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
