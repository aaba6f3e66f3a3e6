# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The environment requests reads before every request, read once per session instead (module_utils/_http.py):
the same proxies, no_proxy, .netrc and CA bundle as requests itself would use."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
import requests

from ansible_collections.mpanel.cloudpods.plugins.module_utils._http import environment_verify, settle_environment

URL = 'https://pve.example.net:8006/'


def what_requests_would_use(url):
    session = requests.Session()
    return session.merge_environment_settings(url, {}, None, None, None)


@pytest.mark.parametrize('env', [
    {},
    {'HTTPS_PROXY': 'http://proxy.example.net:3128'},
    {'https_proxy': 'http://proxy.example.net:3128', 'no_proxy': 'pve.example.net'},
    {'all_proxy': 'socks5://proxy.example.net:1080'},
])
def test_the_session_keeps_the_proxies_requests_would_read_for_each_request(monkeypatch, env):
    for name in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy', 'NO_PROXY',
                 'no_proxy'):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    expected = what_requests_would_use(URL)['proxies']
    session = requests.Session()
    settle_environment(session, URL)
    assert not session.trust_env
    merged = session.merge_environment_settings(URL, {}, None, None, None)['proxies']
    assert merged == expected


def test_netrc_credentials_are_taken_once_and_a_session_s_own_auth_is_kept(monkeypatch, tmp_path):
    netrc = tmp_path / 'netrc'
    netrc.write_text('machine pve.example.net login alice password wonder\n')
    netrc.chmod(0o600)
    monkeypatch.setenv('NETRC', str(netrc))
    session = requests.Session()
    settle_environment(session, URL)
    assert session.auth == ('alice', 'wonder')
    own = requests.Session()
    own.auth = ('bob', 'builder')
    settle_environment(own, URL)
    assert own.auth == ('bob', 'builder')


def test_validate_certs_without_a_ca_path_uses_the_bundle_requests_would_take(monkeypatch):
    monkeypatch.delenv('CURL_CA_BUNDLE', raising=False)
    monkeypatch.delenv('REQUESTS_CA_BUNDLE', raising=False)
    assert environment_verify(True) is True
    monkeypatch.setenv('CURL_CA_BUNDLE', '/etc/curl.pem')
    assert environment_verify(True) == '/etc/curl.pem'
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', '/etc/requests.pem')
    assert environment_verify(True) == '/etc/requests.pem' == what_requests_would_use(URL)['verify']
    # a CA path or no check at all: the environment plays no part, as in requests
    assert environment_verify('/srv/ca.pem') == '/srv/ca.pem'
    assert environment_verify(False) is False


def test_a_session_already_settled_or_without_trust_is_left_alone(monkeypatch):
    monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.example.net:3128')
    session = requests.Session()
    session.trust_env = False
    settle_environment(session, URL)
    assert session.proxies == {}
