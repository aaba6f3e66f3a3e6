# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filters mpanel.cloudpods.ssh_public_keys and ssh_public_key_fingerprints: called directly, and by
their FQCN in a real ansible-playbook run (extra vars as runner_api passes them), against keys ssh-keygen makes."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.mpanel.cloudpods.plugins.filter import ssh_public_keys as plugin

pytestmark = pytest.mark.skipif(shutil.which('ssh-keygen') is None, reason='ssh-keygen (openssh-client) not installed')

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')


def make_key(tmp_path, name, *args):
    path = tmp_path / name
    subprocess.run(['ssh-keygen', '-q', '-N', '', '-C', name + '@example.org', '-f', str(path)] + list(args), check=True)
    public = (tmp_path / (name + '.pub')).read_text().strip()
    fingerprint = subprocess.run(['ssh-keygen', '-l', '-f', str(path) + '.pub'], check=True,
                                 capture_output=True, text=True).stdout.split()[1]
    return path.read_text(), public, fingerprint


def test_good_keys_come_back_normalised_in_order(tmp_path):
    ed, ed_fp = make_key(tmp_path, 'ed', '-t', 'ed25519')[1:]
    ec, ec_fp = make_key(tmp_path, 'ec', '-t', 'ecdsa')[1:]
    key_type, blob, comment = ed.split()
    padded = '  %s %s   %s  ' % (key_type, blob, comment)  # blanks around and between the fields
    assert plugin.ssh_public_keys([padded, ec]) == [ed, ec]
    assert plugin.ssh_public_key_fingerprints([padded, ec]) == [ed_fp, ec_fp]
    assert plugin.ssh_public_keys([]) == [] and plugin.ssh_public_key_fingerprints([]) == []


@pytest.mark.parametrize('bad, index', [
    ('not a list', None),
    (['ssh-ed25519 AAAA'], 0),
])
def test_bad_input_fails_with_the_rules_message(bad, index):
    with pytest.raises(AnsibleFilterError) as raised:
        plugin.ssh_public_keys(bad)
    assert str(raised.value).startswith('ssh_public_keys' if index is None else 'ssh_public_keys[%d]: ' % index)


def test_the_first_bad_entry_is_named_by_index_never_quoted(tmp_path):
    private, public = make_key(tmp_path, 'ed', '-t', 'ed25519')[:2]
    for entries, index in (([public, private], 1), ([public, 'command="/bin/sh" ' + public], 1), ([public, public], 1)):
        with pytest.raises(AnsibleFilterError) as raised:
            plugin.ssh_public_keys(entries)
        text = str(raised.value)
        assert text.startswith('ssh_public_keys[%d]: ' % index)
        assert public.split()[1] not in text and private.splitlines()[1] not in text


def run(tmp_path, keys):
    """One play that checks ``keys`` (an extra var, as runner_api passes it: a YAML file, every string !unsafe)
    and shows the result."""
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'name': 'check', 'ansible.builtin.set_fact': {'checked': '{{ ssh_public_keys | mpanel.cloudpods.ssh_public_keys }}'}},
        {'name': 'show', 'ansible.builtin.debug': {
            'msg': '{{ {"lines": checked, "fingerprints": checked | mpanel.cloudpods.ssh_public_key_fingerprints} }}'}}]}]
    path = tmp_path / 'playbook.yml'
    path.write_text(json.dumps(play))
    vars_file = tmp_path / 'order-vars.yml'
    vars_file.write_text('ssh_public_keys:\n' + ''.join('  - !unsafe %s\n' % json.dumps(key) for key in keys))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1')
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(path),
         '-e', '@' + str(vars_file)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, check=False, timeout=120)
    return done


def test_in_a_playbook(tmp_path):
    private, public, fingerprint = make_key(tmp_path, 'ed', '-t', 'ed25519')
    good = run(tmp_path, [public])
    assert good.returncode == 0, good.stdout + good.stderr
    shown = json.loads(good.stdout)['plays'][0]['tasks'][1]['hosts']['localhost']['msg']
    assert shown == {'lines': [public], 'fingerprints': [fingerprint]}

    bad = run(tmp_path, [public, private])
    assert bad.returncode != 0
    result = json.loads(bad.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']
    assert result['failed'] and 'ssh_public_keys[1]: this is a PRIVATE key' in result['msg']
    for line in private.splitlines()[1:-1]:
        assert line not in bad.stdout + bad.stderr


def test_a_comment_that_looks_like_a_template_stays_text(tmp_path):
    public = make_key(tmp_path, 'ed', '-t', 'ed25519')[1]
    line = ' '.join(public.split()[:2]) + " {{ lookup('ansible.builtin.pipe', 'id') }} {{ 7 * 7 }}"
    done = run(tmp_path, [line])
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)['plays'][0]['tasks'][1]['hosts']['localhost']['msg']
    assert shown['lines'] == [line]
