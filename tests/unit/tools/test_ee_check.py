# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/ee-check: ansible-builder create and introspect on the execution environment, and every
third-party import of the plugins covered by its Python requirements. Runs the real ansible-builder."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os
import shutil
import subprocess
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location('ee_check', os.path.join(ROOT, 'tools', 'ee_check.py'))
ee_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ee_check)

pytestmark = pytest.mark.skipif(shutil.which('ansible-builder') is None, reason='ansible-builder not installed (tools/install)')


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(textwrap.dedent(text))


@pytest.fixture
def fake(tmp_path):
    """A minimal collection like ours: its EE declares requests only; one module imports requests."""
    root = str(tmp_path / 'fakecoll')
    write(os.path.join(root, 'galaxy.yml'), '''\
        namespace: fake
        name: eecheck
        version: 0.0.1
        ''')
    write(os.path.join(root, 'meta', 'execution-environment.yml'), '''\
        dependencies:
          python: meta/ee-requirements.txt
        ''')
    write(os.path.join(root, 'meta', 'ee-requirements.txt'), 'requests>=2.31\n')
    write(os.path.join(root, 'execution-environment.yml'), '''\
        ---
        version: 3
        images:
          base_image:
            name: quay.io/fedora/fedora:42
        dependencies:
          python: meta/ee-requirements.txt
        ''')
    write(os.path.join(root, 'plugins', 'modules', 'good.py'), '''\
        import json
        from ansible.module_utils.basic import AnsibleModule
        from ansible_collections.fake.eecheck.plugins.module_utils import helper
        from . import sibling
        import requests
        ''')
    return root


def add_plugin(root, text):
    write(os.path.join(root, 'plugins', 'module_utils', 'undeclared.py'), text)


def test_the_repository_execution_environment_covers_every_import(capsys):
    assert ee_check.check() == []
    out = capsys.readouterr().out
    # paramiko is imported by community.proxmox's proxmox_pct_remote, which the playbooks use.
    for module in ('idna', 'paramiko', 'proxmoxer', 'requests'):
        assert module in out


def test_the_fake_collection_with_declared_imports_passes(fake):
    assert ee_check.check(fake) == []
    assert sorted(ee_check.third_party_imports(fake)) == ['requests']


def test_an_installed_but_undeclared_import_fails(fake):
    # flask is installed here (runner_api) but not in the fake EE's requirements.
    add_plugin(fake, '''\
        try:
            from flask import Flask
        except ImportError:
            Flask = None
        ''')
    problems = ee_check.check(fake)
    assert len(problems) == 1
    assert 'import flask (plugins/module_utils/undeclared.py:2)' in problems[0]
    assert 'not in the execution environment' in problems[0]


def test_declaring_it_makes_the_check_pass(fake):
    add_plugin(fake, 'import flask\n')
    with open(os.path.join(fake, 'meta', 'ee-requirements.txt'), 'a', encoding='utf-8') as handle:
        handle.write('Flask>=3  # the web framework\n')
    assert ee_check.check(fake) == []


def test_an_import_nothing_provides_fails(fake):
    add_plugin(fake, 'import nosuchpackage_eecheck.sub\n')
    problems = ee_check.check(fake)
    assert len(problems) == 1
    assert 'import nosuchpackage_eecheck (plugins/module_utils/undeclared.py:1): no installed distribution' in problems[0]


def test_a_collection_used_but_not_declared_fails(fake):
    write(os.path.join(fake, 'playbooks', 'x.yml'), '''\
        - hosts: all
          tasks:
            - community.proxmox.proxmox_vm_info: {}
        ''')
    problems = ee_check.check(fake)
    assert any(p.startswith('collection community.proxmox (community.proxmox.proxmox_vm_info in playbooks/x.yml)')
               for p in problems), problems


def test_an_ee_whose_dependency_file_is_missing_fails(fake):
    os.remove(os.path.join(fake, 'meta', 'ee-requirements.txt'))
    problems = ee_check.check(fake)
    assert any(p.startswith('ansible-builder create failed') for p in problems), problems


def test_collection_metadata_naming_another_file_fails(fake):
    # meta/execution-environment.yml resolves from the collection root: meta/ee-requirements.txt there.
    write(os.path.join(fake, 'meta', 'execution-environment.yml'), 'version: 1\ndependencies:\n  python: ee-requirements.txt\n')
    problems = ee_check.check(fake)
    assert any('dependencies.python (ee-requirements.txt, from the collection root)' in p for p in problems), problems


def test_the_command_exits_1_and_names_the_import(fake):
    add_plugin(fake, 'import flask\n')
    proc = subprocess.run([os.path.join(ROOT, 'tools', 'ee-check'), '--root', fake],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert 'import flask' in proc.stderr
