# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures: the running lab and a client for its control endpoints.

``lab_env`` uses the lab that ``tests/lab/lab up`` started; if there is none (or it is
not healthy) the session starts one itself and stops it again at the end.
"""

import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, 'tests', 'lab', 'lab')
LAB_ENV_FILE = os.path.join(ROOT, '.lab', 'env')
LAB_DIR = os.path.join(ROOT, 'tests', 'lab')


def _lab(command):
    return subprocess.run([LAB, command], cwd=ROOT, capture_output=True, text=True, check=False)


def read_lab_env(path=LAB_ENV_FILE):
    """``.lab/env`` as a dict (values are shell-quoted there)."""
    values = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith('#') or '=' not in line:
                continue
            key, dummy, value = line.partition('=')
            parts = shlex.split(value)
            values[key] = parts[0] if parts else ''
    return values


@pytest.fixture(scope='session')
def lab_env():
    """The lab's settings (PROXMOX_*, PVESIM_*), starting the lab when needed."""
    started_here = False
    if not os.path.exists(LAB_ENV_FILE) or _lab('status').returncode != 0:
        result = _lab('up')
        if result.returncode != 0:
            pytest.fail('tests/lab/lab up failed:\n%s%s' % (result.stdout, result.stderr))
        # Parallel workers share one lab; only a lone session may tear it down.
        started_here = 'PYTEST_XDIST_WORKER' not in os.environ
    yield read_lab_env()
    if started_here:
        _lab('down')


@pytest.fixture(scope='session')
def lab_control(lab_env):
    """Client for the simulator's /_lab endpoints: reset, fault, state, config,
    add_token, set_container (see tests/lab/labcontrol.py)."""
    if LAB_DIR not in sys.path:
        sys.path.insert(0, LAB_DIR)
    from labcontrol import LabControl  # pylint: disable=import-outside-toplevel
    return LabControl.from_env(lab_env)
