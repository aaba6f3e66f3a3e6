# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api/preflight.py without processes: the site settings file as Ansible reads it, the
collection on the path, and which lines of Ansible's output a message shows."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api import operations, preflight  # noqa: E402
from runner_api.settings import Settings  # noqa: E402


def test_the_site_file_may_use_ansible_tags(tmp_path):
    path = tmp_path / 'site.yml'
    path.write_text('cloudpods_proxmox_hosts: !unsafe "pve{1}"\nsecret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n')
    assert preflight.read_extra_vars(path) == {'cloudpods_proxmox_hosts': 'pve{1}',
                                               'secret': '$ANSIBLE_VAULT;1.1;AES256\n6162\n'}


@pytest.mark.parametrize('text, words', [
    ('', 'found nothing'), ('- a\n', 'found list'), ('"text"', 'found str'), ('a: [1\n', 'not valid YAML or JSON at line 2'),
    ('{"a": 1', 'not valid YAML or JSON at line 1'),
])
def test_a_site_file_that_is_not_a_mapping_is_named(tmp_path, text, words):
    path = tmp_path / 'site.yml'
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        preflight.read_extra_vars(path)
    assert str(raised.value).startswith('CLOUDPODS_EXTRA_VARS_FILE: the site settings file %s ' % path)
    assert words in str(raised.value)


def test_file_problems_name_each_setting(tmp_path):
    env = {'CLOUDPODS_EXTRA_VARS_FILE': str(tmp_path / 'gone.yml'), 'CLOUDPODS_INVENTORY': str(tmp_path / 'gone.ini')}
    assert preflight.file_problems(env) == [
        'CLOUDPODS_EXTRA_VARS_FILE: the site settings file %s does not exist' % (tmp_path / 'gone.yml'),
        'CLOUDPODS_INVENTORY: the inventory %s does not exist' % (tmp_path / 'gone.ini')]
    assert preflight.file_problems({}) == []


def test_the_collection_must_hold_the_operations_playbooks(tmp_path):
    playbooks = tmp_path / 'ansible_collections' / 'mpanel' / 'cloudpods' / 'playbooks'
    playbooks.mkdir(parents=True)
    settings = Settings(database_url='postgresql://x@127.0.0.1/x', plans_file=tmp_path, playbook_dir=playbooks,
                        collections_path=str(tmp_path))
    (playbooks / 'provision.yml').write_text('---\n')
    assert preflight.collection_problem(settings, ['CREATE_CONTAINER']) is None
    problem = preflight.collection_problem(settings)
    assert problem.startswith('ANSIBLE_COLLECTIONS_PATH: the mpanel.cloudpods collection at %s' % playbooks.parent)
    assert 'playbooks/deprovision.yml' in problem and 'playbooks/provision.yml' not in problem
    for name in set(operations.playbooks().values()):
        (playbooks / name).write_text('---\n')
    assert preflight.collection_problem(settings) is None
    elsewhere = Settings(database_url='postgresql://x@127.0.0.1/x', plans_file=tmp_path, playbook_dir=playbooks,
                         collections_path=str(tmp_path / 'elsewhere'))
    assert 'is not installed in %s' % (tmp_path / 'elsewhere') in preflight.collection_problem(elsewhere)


def test_error_lines_prefer_ansibles_own_errors():
    output = ('PLAY [x]\n[WARNING]: something\n[ERROR]: the role \'a.b.c\' was not found in /x\nOrigin: /y:3:7\n\n'
              '3   roles:\n    ^ column 7\n')
    assert preflight.ansible_refused(output)
    assert preflight.error_lines(output) == "[ERROR]: the role 'a.b.c' was not found in /x"
    assert not preflight.ansible_refused('fatal: [localhost]: FAILED! => {}\n')
    assert preflight.error_lines('a\nb\nc\nd\n') == 'b c d'
