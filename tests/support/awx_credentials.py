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
