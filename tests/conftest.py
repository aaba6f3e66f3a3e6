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

from labenv import ENV_LXC_FILE  # noqa: E402  pylint: disable=wrong-import-position
from labenv import read_env as read_lab_env  # noqa: E402  pylint: disable=wrong-import-position

# Tests marked ``real_containers`` need the lab's LXC part (``.lab/env.lxc``). Without it they are
# skipped with this reason, except where tools/test found that this machine can run real containers
# (``tests/lab/lab lxc-check``) and set CLOUDPODS_REAL_CONTAINERS=required: there such a skip is a
# failure, so a lab that silently came up without --lxc cannot pass as a full run.
NO_REAL_CONTAINERS = 'no real containers: the lab is up without --lxc (tools/test adds it where root on Linux with lxc can)'
REAL_CONTAINERS_REQUIRED = os.environ.get('CLOUDPODS_REAL_CONTAINERS') == 'required'
# tools/test collects every skip (tab-separated: suite, test id, reason) here and prints the count
# and the reasons at the end of the run.
SKIP_LOG = os.environ.get('CLOUDPODS_SKIP_LOG')
_SKIPPED = []


def pytest_configure(config):
    config.addinivalue_line('markers', 'real_containers: needs the lab\'s real LXC containers (tests/lab/lab up --lxc)')
    config.addinivalue_line('markers', 'own_lab: uses a lab of its own, never the shared simulator or PowerDNS; '
                            'tools/test runs these in the real-container lane to even out the lanes')


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    if os.path.exists(ENV_LXC_FILE):
        return
    for item in items:
        if item.get_closest_marker('real_containers'):
            item.add_marker(pytest.mark.skip(reason=NO_REAL_CONTAINERS))


def _skip_reason(report):
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).replace('Skipped: ', '', 1)
    return str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
    outcome = yield
    report = outcome.get_result()
    if report.skipped and REAL_CONTAINERS_REQUIRED and item.get_closest_marker('real_containers'):
        report.outcome = 'failed'
        report.longrepr = ('real-container test skipped on a machine that can run real containers '
                           '(CLOUDPODS_REAL_CONTAINERS=required): %s' % _skip_reason(report))


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
    if SKIP_LOG:
        with open(SKIP_LOG, 'a', encoding='utf-8') as handle:
            for nodeid, reason in _SKIPPED:
                handle.write('pytest\t%s\t%s\n' % (nodeid, ' '.join(reason.split())))


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
