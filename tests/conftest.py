# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures: the running lab and a client for its control endpoints.

``lab_env`` uses the lab that ``tests/lab/lab up`` started; if there is none (or it is
not healthy) the session starts one itself and stops it again at the end.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, 'tests', 'lab', 'lab')
LAB_ENV_FILE = os.path.join(ROOT, '.lab', 'env')
LAB_DIR = os.path.join(ROOT, 'tests', 'lab')
# The test helpers (tests/support: cloudpods_testing) and the lab's modules (tests/lab: labenv for
# .lab/env and free ports, labcontrol, ...) are importable by every test.
for _path in (os.path.join(ROOT, 'tests', 'support'), LAB_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from labenv import read_env as read_lab_env  # noqa: E402  pylint: disable=wrong-import-position


def _lab(command):
    return subprocess.run([LAB, command], cwd=ROOT, capture_output=True, text=True, check=False)


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
    from labcontrol import LabControl  # pylint: disable=import-outside-toplevel
    return LabControl.from_env(lab_env)
