# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the integration tests: the lab's PowerDNS, throwaway zone names, a pod run's directories."""

import os
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab')):
    if path not in sys.path:
        sys.path.insert(0, path)

from pdnslab import PowerDnsLab  # noqa: E402  pylint: disable=wrong-import-position
from playbooks import PrivateLab  # noqa: E402  pylint: disable=wrong-import-position
from podplays import HostDirs  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope='module')
def pdns(lab_env):
    """The shared lab's PowerDNS: API, DNS queries and its request log."""
    if 'POWERDNS_API_URL' not in lab_env:
        pytest.fail('the lab has no PowerDNS (POWERDNS_API_URL missing from .lab/env): run tests/lab/lab up')
    return PowerDnsLab(lab_env)


@pytest.fixture(scope='module')
def private_lab():
    """A lab of the test module's own (``playbooks.PrivateLab``), for tests that stop, pause, hold or
    fault its services; its ``.lab/env`` settings."""
    with PrivateLab() as env:
        yield env


@pytest.fixture
def dirs(tmp_path):
    """The "Proxmox host" paths (backups, cron, state) of one pod playbook test."""
    return HostDirs(tmp_path)


@pytest.fixture
def new_zone(pdns):
    """Unique zone names for one test (``<prefix>-<random>.test``); deleted afterwards."""
    names = []

    def make(prefix='zone'):
        name = '%s-%s.test' % (prefix, uuid.uuid4().hex[:8])
        names.append(name)
        return name
    yield make
    for name in names:
        pdns.delete_zone(name)
