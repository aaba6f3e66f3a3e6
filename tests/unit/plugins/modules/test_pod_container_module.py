# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the pod_container module file (what is not in module_utils/_pod_container.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.modules import pod_container as pc


def test_argument_spec_env_fallbacks():
    spec = pc.argument_spec()
    assert spec['template']['fallback'][1] == ['PROXMOX_CLOUDPOD_TEMPLATE_ID']
    assert spec['template']['default'] == 9000
    assert spec['storage']['fallback'][1] == ['PROXMOX_CLOUDPOD_STORAGE']
    assert spec['bridge']['fallback'][1] == ['PROXMOX_CLOUDPOD_BRIDGE']
    assert spec['bridge']['default'] == 'vmbr0'
    assert spec['state']['default'] == 'present'
    assert spec['full']['default'] is True


@pytest.mark.parametrize('action, message, expected', [
    ('start', 'CT 100 already running', True),
    ('start', 'startup for container \'100\' failed', False),
    ('stop', 'CT 100 not running', True),
    ('shutdown', 'CT 100 not running', True),
    ('shutdown', 'CT is locked (backup)', False),
    ('reboot', 'CT 100 not running', False),
])
def test_power_action_refused_only_because_already_in_state(action, message, expected):
    # A concurrent run (or a killed playbook's module that lives on) may start the pod first;
    # PVE then refuses the second start, at once or inside its task.
    assert pc._already_in_state(action, message) is expected  # pylint: disable=protected-access
