# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api's pure parts: settings, secret scrubbing, backoff, domains, progress, event rows."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api import views  # noqa: E402
from runner_api.blueprints.customer import normalise_domain  # noqa: E402
from runner_api.executors import _EventCollector  # noqa: E402
from runner_api.settings import Settings, SettingsError, redact_url, scrub  # noqa: E402
from runner_api.worker import retry_delay  # noqa: E402

DB = 'postgresql://cloudpods:s3cret-pw@127.0.0.1:5432/cloudpods'
WORKER_ENV = {'DATABASE_URL': DB, 'PROXMOX_API_URL': 'https://10.1.10.70:8006/api2/json',
              'PROXMOX_API_TOKEN_ID': 'mpanel-api@pve!mpanel-token', 'PROXMOX_API_TOKEN_SECRET': 'pve-secret-1234',
              'PROXMOX_NODE_NAME': 'pve', 'POWERDNS_API_KEY': 'pdns-key-5678', 'CLOUDPODS_PLAYBOOK_DIR': ROOT}


def test_missing_and_malformed_settings_are_all_named():
    with pytest.raises(SettingsError) as error:
        Settings.from_env({'CLOUDPODS_LEASE_SECONDS': 'soon', 'CLOUDPODS_MAX_ATTEMPTS': '0'})
    text = str(error.value)
    assert 'DATABASE_URL is not set' in text
    assert "CLOUDPODS_LEASE_SECONDS must be a number, got 'soon'" in text
    assert 'CLOUDPODS_MAX_ATTEMPTS must be at least 1' in text


def test_worker_settings_check_the_proxmox_token_id_without_echoing_secrets():
    env = dict(WORKER_ENV, PROXMOX_API_TOKEN_ID='mpanel-token', DATABASE_URL='mysql://u:hunter22@h/db')
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env, worker=True)
    text = str(error.value)
    assert 'PROXMOX_API_TOKEN_ID must have the form user@realm!tokenid' in text
    assert 'DATABASE_URL must be a postgresql:// URL' in text and 'hunter22' not in text
    missing = dict(WORKER_ENV)
    del missing['PROXMOX_API_TOKEN_SECRET']
    with pytest.raises(SettingsError, match='PROXMOX_API_TOKEN_SECRET is not set'):
        Settings.from_env(missing, worker=True)


def test_secrets_go_to_the_playbook_env_and_the_scrub_list_but_not_the_repr():
    settings = Settings.from_env(WORKER_ENV, worker=True)
    assert settings.playbook_env['PROXMOX_API_TOKEN_SECRET'] == 'pve-secret-1234'
    assert 'DATABASE_URL' not in settings.playbook_env
    assert set(settings.secrets()) >= {'pve-secret-1234', 'pdns-key-5678', 's3cret-pw'}
    assert 'mpanel-api@pve!mpanel-token' not in settings.secrets()  # a token id is not a secret
    assert 's3cret-pw' not in repr(settings) and 'pve-secret' not in repr(settings)
    assert redact_url(DB) == 'postgresql://cloudpods:********@127.0.0.1:5432/cloudpods'
    assert scrub('auth PVEAPIToken=x=pve-secret-1234 failed', settings.secrets()) == 'auth PVEAPIToken=x=******** failed'


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    for attempt, ceiling in ((1, 5), (2, 10), (3, 20), (10, 300)):
        delays = [retry_delay(attempt, 5, 300) for dummy in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


@pytest.mark.parametrize('raw,expected', [
    ('Example.COM.', 'example.com'), ('shop.example.co.uk', 'shop.example.co.uk'), ('xn--bcher-kva.example', None),
    ('a.xn--p1ai', 'a.xn--p1ai'), ('localhost', None), ('10.0.0.1', None), ('-a.example.com', None),
    ('a_b.example.com', None), ('a' * 64 + '.com', None), ('example.com/x', None), ('', None),
])
def test_domains(raw, expected):
    result = normalise_domain(raw)
    if raw == 'xn--bcher-kva.example':
        assert result == 'xn--bcher-kva.example'
    else:
        assert result == expected


def _task(status='RUNNING', attempts=1, task_type='CREATE_CONTAINER'):
    return {'status': status, 'attempts': attempts, 'task_type': task_type}


def test_progress_follows_the_roles_of_the_latest_attempt():
    events = [{'attempt': 1, 'step': 'pod_container : Converge', 'status': 'failed'},
              {'attempt': 2, 'step': 'pod_container : Converge', 'status': 'changed'},
              {'attempt': 2, 'step': 'pod_firewall : Converge', 'status': 'ok'},
              {'attempt': 2, 'step': 'pod_dns : Converge', 'status': 'started'}]
    running = views.progress(_task(attempts=2), events)
    assert [s['status'] for s in running['steps']][:5] == ['done', 'done', 'skipped', 'running', 'pending']
    assert 0 < running['percent'] < 100
    done = views.progress(_task('COMPLETED', 2), events)
    assert done['percent'] == 100
    # pod_container, pod_firewall, pod_first_boot, pod_dns, pod_https, pod_backup, pod_mail (operations.py, CREATE_CONTAINER)
    assert [s['status'] for s in done['steps']] == ['done', 'done', 'skipped', 'done', 'skipped', 'skipped', 'skipped']
    assert views.progress(None, [])['steps'] == []


def test_event_rows_are_scrubbed_and_keep_the_first_failure_and_the_stats():
    rows = []
    collector = _EventCollector(['pve-secret-1234'], rows.append)
    collector.handle({'event': 'playbook_on_task_start', 'event_data': {'task': 'Clone', 'role': 'pod_container'}})
    collector.handle({'event': 'runner_on_failed', 'event_data': {
        'task': 'Clone', 'role': 'pod_container', 'host': 'localhost', 'duration': 1.5,
        'res': {'msg': 'HTTP 401 for token secret pve-secret-1234', 'invocation': {'x': 'pve-secret-1234'}}}})
    collector.handle({'event': 'runner_on_ok', 'event_data': {'task': 'Hidden', 'host': 'localhost',
                                                              'res': {'changed': True, 'censored': 'hidden'}}})
    collector.handle({'event': 'playbook_on_stats', 'event_data': {'artifact_data': {'vmid': 101, 'ip': '10.0.0.5'}}})
    assert rows[1] == {'step': 'pod_container : Clone', 'host': 'localhost', 'status': 'failed', 'duration_ms': 1500,
                       'message': 'HTTP 401 for token secret ********'}
    assert rows[2]['status'] == 'changed' and rows[2]['message'] is None
    assert collector.first_failure == "Step 'pod_container : Clone' failed: HTTP 401 for token secret ********"
    assert collector.stats == {'vmid': 101, 'ip': '10.0.0.5'}
    assert 'pve-secret-1234' not in repr(rows)
