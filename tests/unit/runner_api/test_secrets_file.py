# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CLOUDPODS_SECRETS_FILE: the worker reads it at start and again before a task when it changed; a bad file
keeps the last good values with one log line that names no value (issue 14, part 6)."""

import logging
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner_api import secrets_file  # noqa: E402
from runner_api.executors import LocalAnsibleRunner  # noqa: E402
from runner_api.settings import Settings, SettingsError  # noqa: E402
from runner_api.worker import Worker  # noqa: E402

OLD_ID, OLD_SECRET = 'mpanel-api@pve!mpanel-token', '11111111-2222-3333-4444-555555555555'
NEW_ID, NEW_SECRET = 'mpanel-api@pve!mpanel-token-20261130-1', '66666666-7777-8888-9999-000000000000'


def write(path, text):
    """As rotate_token.yml does: a new file renamed over the old one (a new inode)."""
    temporary = path.with_name(path.name + '.new')
    temporary.write_text(text)
    os.chmod(str(temporary), 0o600)
    os.replace(str(temporary), str(path))


def token_file(token_id, secret):
    return '# written by rotate_token.yml\nPROXMOX_API_TOKEN_ID=%s\nPROXMOX_API_TOKEN_SECRET="%s"\n' % (token_id, secret)


def test_parse_reads_name_value_lines():
    values = secrets_file.parse(token_file(OLD_ID, OLD_SECRET) + "\nPOWERDNS_API_KEY='k3y-value'\n", 'f')
    assert values == {'PROXMOX_API_TOKEN_ID': OLD_ID, 'PROXMOX_API_TOKEN_SECRET': OLD_SECRET,
                      'POWERDNS_API_KEY': 'k3y-value'}


@pytest.mark.parametrize('text, reason', [
    ('PROXMOX_API_TOKEN_ID %s\n' % OLD_ID, 'line 1 is not NAME=VALUE'),
    ('DATABASE_URL=postgresql://u:p@h/d\n', 'DATABASE_URL is not a setting the playbooks take'),
    ('HOME=/root\n', 'HOME is not a setting the playbooks take'),
    ('PROXMOX_API_TOKEN_ID=\n', 'PROXMOX_API_TOKEN_ID is empty'),
    ('PROXMOX_API_TOKEN_ID=not-a-token-id\nPROXMOX_API_TOKEN_SECRET=%s\n' % OLD_SECRET, 'user@realm!tokenid'),
    ('PROXMOX_API_TOKEN_SECRET=%s\n' % OLD_SECRET, 'go together'),
])
def test_parse_refuses_a_malformed_file_without_repeating_a_value(text, reason):
    with pytest.raises(secrets_file.SecretsFileError) as caught:
        secrets_file.parse(text, '/etc/cloudpods/secrets.env')
    assert reason in str(caught.value) and '/etc/cloudpods/secrets.env' in str(caught.value)
    assert OLD_SECRET not in str(caught.value) and 'u:p@' not in str(caught.value)


def settings(tmp_path, path, env=None):
    base = {'DATABASE_URL': 'postgresql://cloudpods@localhost/cloudpods', 'PROXMOX_API_URL': 'https://pve.test:8006',
            'PROXMOX_NODE_NAME': 'pve', 'CLOUDPODS_PLAYBOOK_DIR': str(ROOT / 'playbooks'),
            'CLOUDPODS_SECRETS_FILE': str(path)}
    base.update(env or {})
    return Settings.from_env(base, worker=True)


def test_the_worker_settings_take_the_file_over_the_environment(tmp_path):
    path = tmp_path / 'secrets.env'
    write(path, token_file(OLD_ID, OLD_SECRET))
    # The environment's token is the one the file replaces (the file wins); none in the environment is fine.
    got = settings(tmp_path, path, {'PROXMOX_API_TOKEN_ID': 'x@pve!env', 'PROXMOX_API_TOKEN_SECRET': 'env-secret'})
    assert got.secrets_file == path
    assert got.playbook_env['PROXMOX_API_TOKEN_ID'] == OLD_ID and got.playbook_env['PROXMOX_API_TOKEN_SECRET'] == OLD_SECRET
    assert OLD_SECRET in got.secrets()
    assert settings(tmp_path, path).playbook_env['PROXMOX_API_TOKEN_ID'] == OLD_ID
    # A worker does not start with a bad file (one problem naming it), nor with a missing one.
    write(path, 'PROXMOX_API_TOKEN_SECRET=%s\n' % OLD_SECRET)
    with pytest.raises(SettingsError) as caught:
        settings(tmp_path, path)
    assert 'CLOUDPODS_SECRETS_FILE %s: PROXMOX_API_TOKEN_ID and PROXMOX_API_TOKEN_SECRET go together' % path in str(caught.value)
    assert OLD_SECRET not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        settings(tmp_path, tmp_path / 'missing.env')
    assert 'cannot be read (FileNotFoundError' in str(caught.value)


def test_a_changed_file_counts_from_the_next_task_and_a_bad_one_keeps_the_last_good(tmp_path, caplog):
    path = tmp_path / 'secrets.env'
    write(path, token_file(OLD_ID, OLD_SECRET))
    worker = Worker(settings(tmp_path, path), worker_id='unit')
    assert isinstance(worker.executor, LocalAnsibleRunner)
    assert worker.executor.public_env['PROXMOX_API_TOKEN_ID'] == OLD_ID

    write(path, token_file(NEW_ID, NEW_SECRET))
    with caplog.at_level(logging.INFO, logger='runner_api'):
        worker._reread_secrets()  # pylint: disable=protected-access
    # The playbook's environment: the token id as a variable, the secret through the guard's hand-off.
    assert worker.executor.public_env['PROXMOX_API_TOKEN_ID'] == NEW_ID
    assert worker.executor.secret_env['PROXMOX_API_TOKEN_SECRET'] == NEW_SECRET
    assert NEW_SECRET in worker.executor.secrets
    assert 'PROXMOX_API_TOKEN_ID, PROXMOX_API_TOKEN_SECRET' in caplog.text and NEW_SECRET not in caplog.text
    # Unchanged file: nothing read again, nothing logged.
    caplog.clear()
    executor = worker.executor
    worker._reread_secrets()  # pylint: disable=protected-access
    assert worker.executor is executor and caplog.text == ''

    # Malformed, then gone (unreadable): the last good values stay, one line each, no value in it.
    for bad in ('PROXMOX_API_TOKEN_ID=%s\nPROXMOX_API_TOKEN_SECRET\n' % OLD_ID, None):
        caplog.clear()
        if bad is None:
            os.remove(str(path))
        else:
            write(path, bad)
        for dummy in range(3):
            worker._reread_secrets()  # pylint: disable=protected-access
        assert worker.executor.public_env['PROXMOX_API_TOKEN_ID'] == NEW_ID
        assert worker.executor.secret_env['PROXMOX_API_TOKEN_SECRET'] == NEW_SECRET
        warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1 and 'keeping the values read before' in warnings[0].getMessage()
        assert OLD_SECRET not in caplog.text and NEW_SECRET not in caplog.text and OLD_ID not in caplog.text

    # A good file again is taken at once.
    write(path, token_file(OLD_ID, OLD_SECRET))
    worker._reread_secrets()  # pylint: disable=protected-access
    assert worker.executor.secret_env['PROXMOX_API_TOKEN_SECRET'] == OLD_SECRET
