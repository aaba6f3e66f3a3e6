# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of what pod_container would change on a given container config (module_utils/_pod_container.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _pod_container as pc
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError

CONF = {
    'hostname': 'shop-example-com',
    'cores': 1,
    'memory': 512,
    'swap': 512,
    'rootfs': 'local-lvm:vm-101-disk-0,size=8G',
    'net0': 'name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth',
    'description': 'Cloud Pod\ncloudpods-pod: sub-1\n',
    'tags': 'cloudpod;starter',
    'digest': 'abc',
}
CT = {'vmid': 101, 'node': 'pve'}


OPTIONS = dict(hostname='shop-example-com', vmid=None, pod_id=None, plan=None, domain=None, state='present',
               template=9000, full=True, storage=None, bridge='vmbr0', pool=None, cores=None, memory=None, swap=None,
               disk=None, onboot=None, description=None, tags=None, timeout=300, wait_for_ip=True, ip_timeout=120,
               hwaddr=None)


def options(**params):
    return dict(OPTIONS, **params)


def wanted(**params):
    """What pod_container's options ask of the container of pod sub-1 (or of pod_id)."""
    return pc.WantedPod(options(**params), params.get('pod_id') or 'sub-1')


def test_matching_container_needs_no_change():
    changes = wanted(cores=1, memory=512, swap=512, disk=8, tags=['starter'], description='Cloud Pod').changes(
        CT, CONF, 'stopped')
    assert not changes
    assert (changes.config, changes.resize, changes.power) == ({}, None, None)


def test_changed_sizes_are_changed_and_only_those():
    changes = wanted(cores=2, memory=2048, swap=512, onboot=True).changes(CT, CONF, 'stopped')
    assert changes.config == {'cores': 2, 'memory': 2048, 'onboot': True}


def test_net0_keeps_mac_and_extra_keys():
    conf = dict(CONF, net0='name=eth0,bridge=vmbr1,hwaddr=BC:24:11:2A:3B:4C,ip=10.0.0.5/24,rate=50,type=veth')
    changes = wanted().changes(CT, conf, 'stopped')
    assert changes.config['net0'] == \
        'name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,rate=50,type=veth,firewall=1'


def test_hwaddr_sets_the_mac_of_net0_and_keeps_the_rest():
    # reinstall: the pod made again keeps its MAC address, so its DHCP address stays
    assert wanted(hwaddr='bc:24:11:00:00:01').changes(CT, CONF, 'stopped').config['net0'] == \
        'name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth'
    assert 'net0' not in wanted(hwaddr='BC:24:11:2A:3B:4C').changes(CT, CONF, 'stopped').config


def test_net0_created_when_missing():
    conf = dict(CONF)
    del conf['net0']
    assert wanted(bridge='vmbr9').changes(CT, conf, 'stopped').config['net0'] == \
        'name=eth0,bridge=vmbr9,firewall=1,ip=dhcp,type=veth'


def test_description_and_tags():
    changes = wanted(description='Premium pod', tags=['Premium']).changes(CT, CONF, 'stopped')
    assert changes.config['description'] == 'Premium pod\ncloudpods-pod: sub-1'
    assert changes.config['tags'] == 'cloudpod;premium'
    # omitted: kept, but the marker and the cloudpod tag are always ensured
    conf = dict(CONF, description='hand written', tags='web')
    changes = wanted().changes(CT, conf, 'stopped')
    assert changes.config == {'description': 'hand written\ncloudpods-pod: sub-1', 'tags': 'cloudpod;web'}


def test_upper_case_tags_match_the_lower_case_tags_pve_stores():
    """PVE 8 stores tags lower-cased (get_unique_tags): 'VIP' wanted, 'vip' stored is no change."""
    stored = dict(CONF, tags='cloudpod;starter;vip;web')
    assert not wanted(tags=['Web', 'VIP', 'Starter']).changes(CT, stored, 'stopped')
    assert wanted(tags=['Web', 'VIP']).changes(CT, CONF, 'stopped').config == {'tags': 'cloudpod;vip;web'}


RECORDED = dict(CONF, tags='cloud_pod_starter;cloudpod;web', description=(
    'note before\nCloud Pod\ncloudpods-plan: CLOUD_POD_STARTER\nnote between\ncloudpods-domain: shop.test\n'
    'cloudpods-pod: sub-1\nnote after\n'))


def test_the_record_is_written_around_hand_written_text():
    assert not wanted(plan='CLOUD_POD_STARTER', domain='shop.test').changes(CT, RECORDED, 'stopped')
    changes = wanted(plan='cloud_pod_premium', domain='').changes(CT, RECORDED, 'stopped')
    assert changes.config == {
        'description': 'note before\nCloud Pod\ncloudpods-plan: CLOUD_POD_PREMIUM\nnote between\n'
                       'cloudpods-pod: sub-1\nnote after',
        'tags': 'cloud_pod_premium;cloudpod;web'}


def test_a_new_free_text_keeps_the_record_of_the_container():
    changes = wanted(description='Cloud Pod shop').changes(CT, RECORDED, 'stopped')
    assert changes.config == {'description': 'Cloud Pod shop\ncloudpods-plan: CLOUD_POD_STARTER\n'
                                             'cloudpods-domain: shop.test\ncloudpods-pod: sub-1'}


def test_a_new_pod_gets_the_description_the_playbooks_always_wrote():
    pod = wanted(description='Cloud Pod shop', plan='CLOUD_POD_STARTER', domain='shop.test')
    conf = pod.clone_config(dict(CONF, template=1, description='the template'))
    assert conf['description'] == ('Cloud Pod shop\ncloudpods-plan: CLOUD_POD_STARTER\ncloudpods-domain: shop.test\n'
                                   'cloudpods-pod: sub-1')
    assert pod.changes(CT, conf, 'stopped').config == {'tags': 'cloud_pod_starter;cloudpod;starter'}


def test_a_malformed_record_line_on_the_container_fails_with_a_message():
    conf = dict(RECORDED, description='Cloud Pod\ncloudpods-domain: a b\ncloudpods-pod: sub-1')
    assert not wanted().changes(CT, dict(conf, tags='cloudpod'), 'stopped')  # not rewritten: left as it is
    with pytest.raises(ProxmoxError) as err:
        wanted(description='new text').changes(CT, conf, 'stopped')
    assert "domain of a pod record must be one word; got 'a b'" in err.value.msg


def test_disk_grow_and_same_size():
    assert wanted(disk=30).changes(CT, CONF, 'stopped').resize == '30G'
    assert wanted(disk=8).changes(CT, CONF, 'stopped').resize is None


def test_disk_shrink_is_refused_with_a_clear_message():
    with pytest.raises(ProxmoxError) as err:
        wanted(disk=4, cores=4).changes(CT, CONF, 'stopped')
    assert 'Refusing to shrink the root disk of CT 101 from 8G to 4G' in err.value.msg
    assert 'Nothing was changed' in err.value.msg
    assert 'disk: 8 or more' in err.value.msg


@pytest.mark.parametrize('state, status, power', [
    ('present', 'stopped', None), ('present', 'running', None),
    ('started', 'stopped', 'start'), ('started', 'running', None),
    ('stopped', 'running', 'shutdown'), ('stopped', 'stopped', None),
    ('restarted', 'running', 'reboot'), ('restarted', 'stopped', 'start'),
])
def test_power_actions(state, status, power):
    assert wanted(state=state).changes(CT, CONF, status).power == power


def test_predict_applies_the_changes():
    changes = wanted(cores=2, disk=30, onboot=True, state='started').changes(CT, CONF, 'stopped')
    conf, status = changes.predict(CONF, 'stopped')
    assert status == 'running'
    assert conf['cores'] == 2
    assert conf['onboot'] == 1
    assert conf['rootfs'] == 'local-lvm:vm-101-disk-0,size=30G'
    assert CONF['cores'] == 1  # the input is not modified


def test_config_view_normalises():
    view = pc.config_view(dict(CONF, onboot='1', tags='starter;cloudpod'), 'running')
    assert view == {
        'hostname': 'shop-example-com', 'cores': 1, 'memory': 512, 'swap': 512, 'onboot': True,
        'net0': CONF['net0'], 'disk': '8G', 'description': 'Cloud Pod\ncloudpods-pod: sub-1',
        'tags': 'cloudpod;starter', 'status': 'running'}
    assert pc.config_view({}) == {}


@pytest.mark.parametrize('params, expected', [
    (dict(hostname='bad_name'), 'not a valid DNS host name'),
    (dict(hostname='-x'), 'not a valid DNS host name'),
    (dict(pod_id='two words'), 'pod_id'),
    (dict(pod_id='sub-1\n'), 'pod_id'),
    (dict(vmid=99), 'vmid must be between 100'),
    (dict(cores=0), 'cores must be a positive number'),
    (dict(hwaddr='01:24:11:00:00:01'), 'must be a unicast MAC address'),
    (dict(hwaddr='BC:24:11:00:00'), 'must be a unicast MAC address'),
    (dict(hwaddr='BC:24:11:00:00:01\n'), 'must be a unicast MAC address'),
    (dict(swap=-1), 'swap must be 0 or more'),
    (dict(tags=['ok', 'Not!Ok']), 'invalid tags not!ok'),
    (dict(plan='STARTER'), "plan 'STARTER' must be a plan code"),
    (dict(plan='CLOUD_POD_STARTER\n'), 'must be a plan code'),
    (dict(domain='a b.test'), "domain 'a b.test' must be empty or a DNS name"),
    (dict(domain='a.test\n'), 'must be empty or a DNS name'),
    (dict(domain='a.test\ncloudpods-pod: x'), 'must be empty or a DNS name'),
    # the rule of cloudpods_domain_pattern (module_utils/names.py): two labels or more, lower case, alphabetic TLD
    (dict(domain='localhost'), 'must be empty or a DNS name'),
    (dict(domain='Shop.Example.com'), 'must be empty or a DNS name'),
    (dict(domain='shop.example.c0m'), 'must be empty or a DNS name'),
    (dict(tags=['cloud_pod_premium'], plan='CLOUD_POD_STARTER'),
     'tags cloud_pod_premium name another plan than plan CLOUD_POD_STARTER'),
])
def test_validation(params, expected):
    with pytest.raises(ProxmoxError) as err:
        pc.check_options(options(**params))
    assert expected in err.value.msg


@pytest.mark.parametrize('params', [
    dict(hostname='Shop-Example-Com'),  # host names are matched case-insensitively
    dict(hostname='web1.shop.example.com', domain='shop.example.com'),
    dict(domain='xn--bcher-kva.xn--p1ai'),
    dict(domain=''),
])
def test_validation_accepts(params):
    pc.check_options(options(**params))
