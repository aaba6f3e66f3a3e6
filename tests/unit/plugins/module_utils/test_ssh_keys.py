# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the customer SSH key rule (module_utils/ssh_keys.py), against keys ssh-keygen makes."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import shutil
import subprocess

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import ssh_keys

pytestmark = pytest.mark.skipif(shutil.which('ssh-keygen') is None, reason='ssh-keygen (openssh-client) not installed')


def make_key(tmp_path, name, *args):
    path = tmp_path / name
    subprocess.run(['ssh-keygen', '-q', '-N', '', '-C', name + '@example.org', '-f', str(path)] + list(args), check=True)
    public = (tmp_path / (name + '.pub')).read_text().strip()
    fingerprint = subprocess.run(['ssh-keygen', '-l', '-f', str(path) + '.pub'], check=True,
                                 capture_output=True, text=True).stdout.split()[1]
    return path.read_text(), public, fingerprint


@pytest.mark.parametrize('args, bits', [(['-t', 'ed25519'], 256), (['-t', 'ecdsa', '-b', '256'], 256),
                                        (['-t', 'ecdsa', '-b', '521'], 521), (['-t', 'rsa', '-b', '3072'], 3072)])
def test_accepted_keys_keep_their_line_and_fingerprint(tmp_path, args, bits):
    private, public, fingerprint = make_key(tmp_path, 'key', *args)
    key = ssh_keys.parse(0, public)
    assert (key.bits, key.line, key.fingerprint) == (bits, public, fingerprint)
    assert ssh_keys.authorized_keys([key]) == public + '\n'


def test_refused_entries_name_their_index_and_never_echo_the_entry(tmp_path):
    private, public, fingerprint = make_key(tmp_path, 'ed', '-t', 'ed25519')
    short_rsa = make_key(tmp_path, 'rsa2048', '-t', 'rsa', '-b', '2048')[1]
    key_type, blob = public.split()[:2]
    entries = [
        public,                                    # 0 fine
        private,                                   # 1 a private key pasted by mistake
        'command="/bin/sh" ' + public,             # 2 options
        'from="10.0.0.1" ' + public,               # 3 options
        'no-pty ' + public,                        # 4 options
        short_rsa,                                 # 5 RSA under 3072 bits
        key_type + ' ' + blob[:-8],                # 6 truncated blob
        'ssh-rsa ' + blob,                         # 7 blob of another type
        public + '\nssh-ed25519 ' + blob,          # 8 two lines in one entry
        public.replace('ed@', 'other@'),           # 9 the same key as 0
        'hello world',                             # 10 not a key
    ]
    keys, errors = ssh_keys.check(entries)
    assert [key.fingerprint for key in keys] == [fingerprint]
    assert [error.index for error in errors] == [None] + list(range(1, 11))  # 11 entries: one too many
    for error in errors:
        text = str(error)
        assert blob not in text and 'PRIVATE KEY-----' not in text and private.splitlines()[1] not in text
    assert 'PRIVATE key' in errors[1].reason
    assert all('options' in errors[i].reason for i in (2, 3, 4))
    assert '2048 bits' in errors[5].reason
    assert 'the same key as entry 0' in errors[9].reason


def test_not_a_list():
    assert [str(e) for e in ssh_keys.check('ssh-ed25519 AAAA')[1]] == [
        'ssh_public_keys: must be a list of OpenSSH public keys']
    with pytest.raises(ssh_keys.InvalidKey, match=r'ssh_public_keys\[0\]: must be a string'):
        ssh_keys.parse_all([42])
