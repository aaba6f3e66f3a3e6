# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lookup mpanel.cloudpods.plan_catalogue: the same catalogue as the file (what runner_api reads),
parsed once until the file changes, a copy for each caller, clear errors; and in a real ansible-playbook
run through vars/settings.yml, where -e cloudpods_plans still wins."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible.errors import AnsibleLookupError

from ansible_collections.mpanel.cloudpods.plugins.lookup import plan_catalogue
from ansible_collections.mpanel.cloudpods.plugins.lookup.plan_catalogue import LookupModule

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
PLANS = os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')


def test_the_collections_catalogue_as_the_file_says():
    with open(PLANS) as handle:
        expected = yaml.safe_load(handle)['cloudpods_plans']
    assert os.path.samefile(plan_catalogue.DEFAULT, PLANS)
    assert LookupModule().run([]) == [expected]


def test_parsed_once_until_the_file_changes_and_each_caller_gets_a_copy(tmp_path, monkeypatch):
    path = tmp_path / 'plans.yml'
    path.write_text('cloudpods_plans: {A: {vcpu: 1}}\n')
    loads = []
    real_load = plan_catalogue.yaml.load
    monkeypatch.setattr(plan_catalogue.yaml, 'load', lambda *a, **k: loads.append(1) or real_load(*a, **k))
    first = plan_catalogue.read_catalogue(str(path))
    first['A']['vcpu'] = 99  # a caller changing its copy
    assert plan_catalogue.read_catalogue(str(path)) == {'A': {'vcpu': 1}} and len(loads) == 1
    path.write_text('cloudpods_plans: {A: {vcpu: 2}, B: {vcpu: 4}}\n')  # another size: read again
    assert plan_catalogue.read_catalogue(str(path)) == {'A': {'vcpu': 2}, 'B': {'vcpu': 4}} and len(loads) == 2


@pytest.mark.parametrize('content, message', [
    ('other: 1\n', 'has no cloudpods_plans mapping'),
    ('cloudpods_plans: [a, b]\n', 'has no cloudpods_plans mapping'),
    ('cloudpods_plans: {}\n', 'has no cloudpods_plans mapping'),
    ('cloudpods_plans: {A: [\n', 'cannot read the plan catalogue'),
    ('cloudpods_plans: !!python/object/apply:os.system ["true"]\n', 'cannot read the plan catalogue'),
])
def test_a_bad_catalogue_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / 'plans.yml'
    path.write_text(content)
    with pytest.raises(AnsibleLookupError, match=message):
        LookupModule().run([str(path)])


def test_a_missing_file_and_two_files_are_errors(tmp_path):
    with pytest.raises(AnsibleLookupError, match='cannot read the plan catalogue .*nowhere.yml'):
        LookupModule().run([str(tmp_path / 'nowhere.yml')])
    with pytest.raises(AnsibleLookupError, match='at most one file, got 2'):
        LookupModule().run([PLANS, PLANS])


def run_playbook(tmp_path, *options):
    path = tmp_path / 'playbook.yml'
    path.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False,
                                 'vars_files': [os.path.join(ROOT, 'playbooks', 'vars', 'settings.yml')],
                                 'tasks': [{'ansible.builtin.debug': {'var': 'cloudpods_plans'}}]}]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1')
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(path)] + list(options),
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']['cloudpods_plans']


def test_settings_define_the_catalogue_and_extra_vars_still_win(tmp_path):
    with open(PLANS) as handle:
        assert run_playbook(tmp_path) == yaml.safe_load(handle)['cloudpods_plans']
    assert run_playbook(tmp_path, '-e', json.dumps({'cloudpods_plans': {'X': {'vcpu': 7}}})) == {'X': {'vcpu': 7}}
