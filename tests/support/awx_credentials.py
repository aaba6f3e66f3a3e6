# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Apply an AWX custom credential type (awx/credential_types/<name>.yml) the way AWX does at job time.

The renderer itself is the AWX stand-in's (tests/lab/awxsim/injectors.py): the stand-in's jobs and
the tests that run ansible themselves apply the credential types with the same code.

    env, extra_vars = inject(load_credential_type('proxmox_api'), {'api_url': ...}, private_dir)
"""

import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TYPES_DIR = os.path.join(ROOT, 'awx', 'credential_types')
LAB_DIR = os.path.join(ROOT, 'tests', 'lab')
if LAB_DIR not in sys.path:
    sys.path.insert(0, LAB_DIR)

from awxsim.injectors import inject, render  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import


def load_credential_type(name):
    with open(os.path.join(TYPES_DIR, name + '.yml'), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def lab_credential_inputs(lab_env, key_dir):
    """The inputs of the four credential types holding the lab's values (what an operator types into AWX),
    keyed by type file name. The simulator lab has no SSH node (first boot off): the SSH credential gets a
    fresh key, made in ``key_dir``, that nothing accepts, as a site's would go unused there."""
    key = os.path.join(str(key_dir), 'id_ed25519')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key], check=True)
    with open(key, encoding='utf-8') as handle:
        key_data = handle.read()
    with open(lab_env['PROXMOX_CA_BUNDLE'], encoding='utf-8') as handle:
        ca = handle.read()
    return {
        'proxmox_api': {'api_url': lab_env['PROXMOX_API_URL'], 'token_id': lab_env['PROXMOX_API_TOKEN_ID'],
                        'token_secret': lab_env['PROXMOX_API_TOKEN_SECRET'], 'ca_bundle': ca},
        'proxmox_ssh': {'host': '127.0.0.1', 'ssh_key_data': key_data, 'host_key_checking': 'false'},
        'powerdns': {'api_url': lab_env['POWERDNS_API_URL'], 'api_key': lab_env['POWERDNS_API_KEY']},
        'smtp': {'host': lab_env['SMTP_HOST'], 'port': lab_env['SMTP_PORT'], 'sender': 'Cloud Pods <noreply@example.net>'},
    }
