# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pods inventory plugin's pure parts: plan from tags, host variables, file names."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.inventory.pods import (
    InventoryModule,
    plan_from_tags,
    pod_hostvars,
    safe_group,
)


@pytest.mark.parametrize('tags, plan', [
    (['cloudpod', 'cloud_pod_starter'], 'CLOUD_POD_STARTER'),
    (['cloud_pod_business', 'cloudpod'], 'CLOUD_POD_BUSINESS'),
    (['cloudpod'], ''),
    ([], ''),
    (['cloudpod', 'starter'], ''),
])
def test_plan_from_tags(tags, plan):
    assert plan_from_tags(tags) == plan


def test_hostvars_of_a_running_pod():
    guest = {'vmid': '101', 'node': 'pve', 'name': 'shop', 'status': 'running', 'tags': 'cloud_pod_premium;cloudpod'}
    hostvars = pod_hostvars(guest, '10.1.10.151', 'Cloud Pod shop\ncloudpods-pod: sub-1\n')
    assert hostvars == {
        'vmid': 101, 'node': 'pve', 'ip': '10.1.10.151', 'plan': 'CLOUD_POD_PREMIUM', 'status': 'running',
        'pod_tags': ['cloud_pod_premium', 'cloudpod'], 'pod_id': 'sub-1', 'ansible_host': '10.1.10.151',
    }


def test_hostvars_of_a_stopped_pod_have_no_address():
    hostvars = pod_hostvars({'vmid': 102, 'node': 'pve', 'status': 'stopped', 'tags': 'cloudpod'}, None, '')
    assert hostvars['ip'] == '' and 'ansible_host' not in hostvars and hostvars['plan'] == ''


def test_group_names_are_safe():
    assert safe_group('node_pve-2') == 'node_pve_2'


@pytest.mark.parametrize('name, ok', [
    ('cloudpods.pods.yml', True),
    ('pods.yaml', True),
    ('inventory.yml', False),
    ('pods.ini', False),
])
def test_verify_file_by_name(tmp_path, name, ok):
    path = tmp_path / name
    path.write_text('plugin: mpanel.cloudpods.pods\n')
    assert InventoryModule().verify_file(str(path)) is ok
