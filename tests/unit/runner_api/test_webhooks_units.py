# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api.webhooks' pure parts: the signature, the body, the headers, the backoff, the settings."""

import datetime
import hashlib
import hmac
import json
import os
import socket
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api import webhooks  # noqa: E402
from runner_api.settings import Settings, SettingsError  # noqa: E402

SECRET = 'whsec-0123456789abcdef'
DB = 'postgresql://cloudpods:s3cret-pw@127.0.0.1:5432/cloudpods'
ROW = {'event_id': uuid.UUID('7d0c5f3e-2b7a-4c53-9a55-0c1d2e3f4a5b'), 'event_type': 'pod.status_changed',
       'subscription_id': uuid.UUID('11111111-2222-4333-8444-555555555555'), 'sequence': 3,
       'created_at': datetime.datetime(2026, 11, 30, 3, 0, 0, tzinfo=datetime.timezone.utc),
       'payload': {'pod': {'id': '11111111-2222-4333-8444-555555555555', 'status': 'ACTIVE', 'domain': 'café.example'}}}


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex():
    body = b'{"id":"x"}'
    # Computed here from the documented rule, not with runner_api's code.
    expected = hmac.new(SECRET.encode(), b'1764471600.{"id":"x"}', hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, 1764471600, body) == 'v1=' + expected
    assert webhooks.sign(SECRET, 1764471601, body) != 'v1=' + expected
    assert webhooks.sign(SECRET + 'x', 1764471600, body) != 'v1=' + expected


def test_verify_accepts_a_fresh_signature_and_rejects_tampering_and_replays():
    body = webhooks.body(ROW)
    now = 1764471600
    signature = webhooks.sign(SECRET, now, body)
    assert webhooks.verify(SECRET, str(now), signature, body, now=now)
    assert webhooks.verify(SECRET, str(now), signature, body, now=now + 300)
    assert not webhooks.verify(SECRET, str(now), signature, body, now=now + 301)  # a replay
    assert not webhooks.verify(SECRET, str(now), signature, body, now=now - 301)  # from the future
    assert not webhooks.verify(SECRET, str(now), signature, body + b' ', now=now)
    assert not webhooks.verify(SECRET, str(now + 1), signature, body, now=now)
    assert not webhooks.verify('another-secret-123', str(now), signature, body, now=now)
    assert not webhooks.verify(SECRET, 'soon', signature, body, now=now)
    assert not webhooks.verify(SECRET, str(now), None, body, now=now)


def test_the_body_is_the_envelope_compact_and_stable_and_the_headers_sign_it():
    body = webhooks.body(ROW)
    assert body == webhooks.body(dict(ROW))  # the same bytes at every attempt
    event = json.loads(body)
    assert event == {'id': '7d0c5f3e-2b7a-4c53-9a55-0c1d2e3f4a5b', 'type': 'pod.status_changed',
                     'pod_id': '11111111-2222-4333-8444-555555555555', 'sequence': 3,
                     'created_at': '2026-11-30T03:00:00+00:00', 'data': ROW['payload']}
    assert 'café' in body.decode()
    headers = webhooks.headers(SECRET, ROW, body, timestamp=1764471600)
    assert headers['X-CloudPods-Event-Id'] == '7d0c5f3e-2b7a-4c53-9a55-0c1d2e3f4a5b'
    assert headers['X-CloudPods-Event-Type'] == 'pod.status_changed'
    assert headers['X-CloudPods-Timestamp'] == '1764471600'
    assert webhooks.verify(SECRET, headers['X-CloudPods-Timestamp'], headers['X-CloudPods-Signature'], body,
                           now=1764471600)
    assert SECRET not in json.dumps(headers)


def test_the_backoff_doubles_up_to_the_cap_with_jitter():
    for attempts, ceiling in ((1, 5), (2, 10), (3, 20), (8, 600), (9, 600), (500, 600)):
        delays = [webhooks.retry_delay(attempts, 5, 600) for _draw in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jitter


def test_webhook_settings():
    settings = Settings.from_env({'DATABASE_URL': DB, 'CLOUDPODS_WEBHOOK_URL': 'https://mpanel.example/hooks',
                                  'CLOUDPODS_WEBHOOK_SECRET': SECRET})
    assert (settings.webhook_url, settings.webhook_secret) == ('https://mpanel.example/hooks', SECRET)
    assert (settings.webhook_retry_base_seconds, settings.webhook_retry_max_seconds) == (5.0, 600.0)
    assert SECRET in settings.secrets()  # scrubbed from logs, events and errors
    assert SECRET not in repr(settings)
    assert 'CLOUDPODS_WEBHOOK_SECRET' not in settings.playbook_env  # never handed to a playbook
    assert Settings.from_env({'DATABASE_URL': DB}).webhook_url is None  # no URL: not sent
    with pytest.raises(SettingsError) as error:
        Settings.from_env({'DATABASE_URL': DB, 'CLOUDPODS_WEBHOOK_URL': 'https://mpanel.example/hooks'})
    assert 'CLOUDPODS_WEBHOOK_SECRET is not set' in str(error.value)
    with pytest.raises(SettingsError) as error:
        Settings.from_env({'DATABASE_URL': DB, 'CLOUDPODS_WEBHOOK_URL': 'ftp://u:token-in-url@h/x',
                           'CLOUDPODS_WEBHOOK_SECRET': 'short'})
    assert 'CLOUDPODS_WEBHOOK_URL must be an http(s) URL' in str(error.value)
    assert 'at least 16 characters' in str(error.value)
    assert 'token-in-url' not in str(error.value) and "'short'" not in str(error.value)
    with pytest.raises(SettingsError) as error:
        Settings.from_env({'DATABASE_URL': DB, 'CLOUDPODS_WEBHOOK_URL': 'http://mpanel.example:99999/hooks',
                           'CLOUDPODS_WEBHOOK_SECRET': SECRET})
    assert 'CLOUDPODS_WEBHOOK_URL must be an http(s) URL' in str(error.value)


def test_the_url_target_keeps_path_and_query_and_takes_credentials_as_basic_auth():
    assert webhooks.target('http://127.0.0.1:8080/hooks?x=1') == ('http', '127.0.0.1', 8080, '/hooks?x=1', None)
    scheme, host, port, path, authorization = webhooks.target('https://mp:p%40ss@mpanel.example')
    assert (scheme, host, port, path) == ('https', 'mpanel.example', None, '/')
    assert authorization == 'Basic bXA6cEBzcw=='  # mp:p@ss


def test_a_closed_port_is_a_failed_attempt_not_an_exception():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    status, error = webhooks.post('http://127.0.0.1:%d/' % port, b'{}', {}, timeout=2)
    assert status is None and 'Connection' in error
