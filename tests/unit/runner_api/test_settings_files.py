# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where runner_api finds the collection's files (plan catalogue, order rules, playbooks), as an
installed wheel does: outside a checkout, through ANSIBLE_COLLECTIONS_PATH; a missing file stops
start-up with the setting's name. Also: one secret mask, and the dry run's extra vars."""

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api import cli, executors, settings as settings_module  # noqa: E402
from runner_api.settings import MASK, Settings, SettingsError, find_collection  # noqa: E402

DB = 'postgresql://cloudpods:s3cret-pw@127.0.0.1:5432/cloudpods'
WORKER_ENV = {'PROXMOX_API_URL': 'https://pve.example.net:8006', 'PROXMOX_API_TOKEN_ID': 'mpanel-api@pve!mpanel-token',
              'PROXMOX_API_TOKEN_SECRET': 'pve-secret-1234', 'PROXMOX_NODE_NAME': 'pve'}


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Not a checkout; the collection's playbooks installed under tmp_path as ansible-galaxy leaves them."""
    monkeypatch.setattr(settings_module, 'source_checkout', lambda: None)
    collection = tmp_path / 'collections' / 'ansible_collections' / 'mpanel' / 'cloudpods'
    shutil.copytree(os.path.join(ROOT, 'playbooks', 'vars'), collection / 'playbooks' / 'vars')
    (collection / 'plugins' / 'module_utils').mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, 'plugins', 'module_utils', 'ssh_keys.py'), collection / 'plugins' / 'module_utils')
    return collection


def test_outside_a_checkout_the_files_come_from_the_installed_collection(installed, tmp_path):
    path = os.pathsep.join([str(tmp_path / 'elsewhere'), str(tmp_path / 'collections')])
    settings = Settings.from_env({'DATABASE_URL': DB, 'ANSIBLE_COLLECTIONS_PATH': path})
    assert settings.plans_file == installed / 'playbooks' / 'vars' / 'plans.yml'
    assert settings.playbook_dir == installed / 'playbooks'
    assert settings.grammar_file == installed / 'playbooks' / 'vars' / 'settings.yml'
    assert settings.ssh_keys_file == installed / 'plugins' / 'module_utils' / 'ssh_keys.py'
    assert settings.collections_path == path  # the worker's playbooks run with the same collections
    assert find_collection(str(tmp_path / 'collections' / 'ansible_collections')) == installed


def test_without_the_collection_start_up_stops_naming_the_settings(installed, tmp_path):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({'DATABASE_URL': DB, 'ANSIBLE_COLLECTIONS_PATH': str(tmp_path / 'empty')})
    message = str(raised.value)
    assert 'CLOUDPODS_PLANS_FILE is not set' in message and 'CLOUDPODS_PLAYBOOK_DIR is not set' in message
    assert 'mpanel.cloudpods collection is not installed in ANSIBLE_COLLECTIONS_PATH' in message
    # migrate and token need no catalogue
    assert Settings.from_env({'DATABASE_URL': DB, 'ANSIBLE_COLLECTIONS_PATH': str(tmp_path / 'empty')},
                             catalogue=False).plans_file is None


def test_a_missing_or_broken_catalogue_stops_start_up(installed, tmp_path):
    env = {'DATABASE_URL': DB, 'ANSIBLE_COLLECTIONS_PATH': str(tmp_path / 'collections')}
    with pytest.raises(SettingsError, match=r'CLOUDPODS_PLANS_FILE: the plan catalogue .*/nowhere.yml does not exist'):
        Settings.from_env(dict(env, CLOUDPODS_PLANS_FILE=str(tmp_path / 'nowhere.yml')))
    broken = tmp_path / 'plans.yml'
    broken.write_text('other: {}\n')
    with pytest.raises(SettingsError, match=r"CLOUDPODS_PLANS_FILE: .* no 'cloudpods_plans' mapping"):
        Settings.from_env(dict(env, CLOUDPODS_PLANS_FILE=str(broken)))
    (installed / 'playbooks' / 'vars' / 'settings.yml').unlink()
    with pytest.raises(SettingsError, match=r'the order rules .*settings.yml \(of the collection\) do not exist'):
        Settings.from_env(env)


def test_the_mask_is_the_collections():
    redact = Path(ROOT, 'plugins', 'module_utils', 'redact.py').read_text()
    assert re.search(r"^REDACTED = '(.*)'$", redact, re.M).group(1) == MASK == '********'
    assert settings_module.scrub('token pve-secret-1234 refused', ['pve-secret-1234']) == 'token ******** refused'
    assert settings_module.redact_url(DB) == 'postgresql://cloudpods:********@127.0.0.1:5432/cloudpods'


def test_the_dry_run_builds_its_extra_vars_with_the_operation_registry(monkeypatch, capsys, tmp_path):
    for name, value in dict(WORKER_ENV, DATABASE_URL=DB).items():
        monkeypatch.setenv(name, value)
    site = tmp_path / 'site.yml'
    site.write_text('cloudpods_proxmox_hosts: localhost\n')  # the start-up check's host group: this machine
    monkeypatch.setenv('CLOUDPODS_EXTRA_VARS_FILE', str(site))
    monkeypatch.delenv('CLOUDPODS_INVENTORY', raising=False)
    seen = []

    def run(self, request, on_event, cancel=None):  # pylint: disable=unused-argument
        seen.append(request)
        return executors.RunResult('successful', 0)
    monkeypatch.setattr(executors.LocalAnsibleRunner, 'run', run)
    assert cli.main(['provision', 'CLOUD_POD_STARTER', '--dry-run', '--email', 'jane@example.org']) == 0
    assert seen[0].operation == 'CREATE_CONTAINER' and seen[0].check
    assert seen[0].extra_vars == {'pod': 'dry-run-pod', 'plan': 'CLOUD_POD_STARTER', 'domain': '',
                                  'customer_email': 'jane@example.org', 'ssh_public_keys': []}
    assert 'nothing was changed' in capsys.readouterr().out


def test_a_missing_or_broken_key_rule_stops_start_up(installed, tmp_path):
    path = str(tmp_path / 'collections')
    rule = installed / 'plugins' / 'module_utils' / 'ssh_keys.py'
    rule.write_text('MAX_KEYS = 10\n')
    with pytest.raises(SettingsError) as error:
        Settings.from_env({'DATABASE_URL': DB, 'ANSIBLE_COLLECTIONS_PATH': path})
    assert 'the SSH key rule %s' % rule in str(error.value) and 'not the SSH key rule' in str(error.value)
    rule.unlink()
    with pytest.raises(SettingsError) as error:
        Settings.from_env({'DATABASE_URL': DB, 'ANSIBLE_COLLECTIONS_PATH': path})
    assert 'the SSH key rule %s (of the collection) does not exist' % rule in str(error.value)


def test_the_playbooks_get_the_site_settings_of_the_contract():
    env = dict(WORKER_ENV, DATABASE_URL=DB, CLOUDPODS_SSH_PORT='2222', CLOUDPODS_CUSTOMER_USER='site',
               CLOUDPODS_ACME_DIRECTORY='https://127.0.0.1:14000/dir', CLOUDPODS_ACME_EMAIL='hostmaster@example.net',
               CLOUDPODS_ACME_CA_BUNDLE='/etc/pebble/root.pem', CLOUDPODS_HTTPS_WAIT='30',
               CLOUDPODS_HTTPS_RETRY_SECONDS='0.5', CLOUDPODS_LEASE_SECONDS='40',
               CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS='7')
    settings = Settings.from_env(env, worker=True)
    contract = ('CLOUDPODS_SSH_PORT', 'CLOUDPODS_CUSTOMER_USER', 'CLOUDPODS_ACME_DIRECTORY', 'CLOUDPODS_ACME_EMAIL',
                'CLOUDPODS_ACME_CA_BUNDLE', 'CLOUDPODS_HTTPS_WAIT', 'CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS')
    assert {name: settings.playbook_env[name] for name in contract} == {name: env[name] for name in contract}
    # None of them is a secret: they go to ansible-playbook as plain environment.
    assert all(name in executors.LocalAnsibleRunner(settings).public_env for name in contract)
    # runner_api's own settings stay with runner_api.
    assert 'CLOUDPODS_HTTPS_RETRY_SECONDS' not in settings.playbook_env
    assert 'CLOUDPODS_LEASE_SECONDS' not in settings.playbook_env
    assert settings.https_retry_seconds == 0.5
    with pytest.raises(SettingsError) as error:
        Settings.from_env(dict(env, CLOUDPODS_SSH_PORT='70000'))
    assert 'CLOUDPODS_SSH_PORT must be at most 65535' in str(error.value)
    for bad in ('-1', 'thirty', '1.5'):  # deprovision would refuse it only once a pod is terminated
        with pytest.raises(SettingsError) as error:
            Settings.from_env(dict(env, CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS=bad))
        assert 'CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS' in str(error.value)
