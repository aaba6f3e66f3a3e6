# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pods inventory plugin's pure parts: host variables, file names (the pod record: test_pod_record.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.inventory.pods import (
    InventoryModule,
    pod_hostvars,
    safe_group,
)


def test_hostvars_of_a_running_pod():
    guest = {'vmid': '101', 'node': 'pve', 'name': 'shop', 'status': 'running', 'tags': 'cloud_pod_premium;cloudpod'}
    hostvars = pod_hostvars(guest, '10.1.10.151', 'Cloud Pod shop\ncloudpods-plan: CLOUD_POD_PREMIUM\n'
                                                  'cloudpods-domain: shop.test\ncloudpods-pod: sub-1\n')
    assert hostvars == {
        'vmid': 101, 'node': 'pve', 'ip': '10.1.10.151', 'plan': 'CLOUD_POD_PREMIUM', 'status': 'running',
        'pod_tags': ['cloud_pod_premium', 'cloudpod'], 'pod_id': 'sub-1', 'ansible_host': '10.1.10.151',
        'pod_record': {'pod': 'sub-1', 'plan': 'CLOUD_POD_PREMIUM', 'domain': 'shop.test'},
    }


@pytest.mark.parametrize('tags, description, plan', [
    ('cloud_pod_starter;cloudpod', 'cloudpods-plan: CLOUD_POD_PREMIUM', 'CLOUD_POD_STARTER'),  # the tag counts
    ('cloudpod', 'cloudpods-plan: CLOUD_POD_PREMIUM', 'CLOUD_POD_PREMIUM'),  # else the description line
    ('cloudpod;starter', 'Cloud Pod', ''),
])
def test_plan_of_a_pod(tags, description, plan):
    hostvars = pod_hostvars({'vmid': 101, 'node': 'pve', 'status': 'stopped', 'tags': tags}, None, description)
    assert hostvars['plan'] == plan


def test_hostvars_of_a_stopped_pod_have_no_address():
    hostvars = pod_hostvars({'vmid': 102, 'node': 'pve', 'status': 'stopped', 'tags': 'cloudpod'}, None, '')
    assert hostvars['ip'] == '' and 'ansible_host' not in hostvars and hostvars['plan'] == ''
    assert hostvars['pod_id'] is None and hostvars['pod_record'] == {'pod': None, 'plan': None, 'domain': None}


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
