# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the Proxmox VE value formats: UPIDs, property strings, sizes, tags, addresses (_pve_formats.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _proxmox_errors as errors
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _pve_formats as formats

UPID = 'UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:mpanel-api@pve!mpanel-token:'


# --------------------------------------------------------------------------
# UPIDs
# --------------------------------------------------------------------------

def test_parse_upid_valid():
    task = formats.parse_upid(UPID)
    assert task.node == 'pve'
    assert task.pid == 0xA1B2
    assert task.pstart == 0xC0FFEE
    assert task.starttime == 0x6553F00D
    assert task.type == 'vzclone'
    assert task.id == '9000'
    assert task.user == 'mpanel-api@pve!mpanel-token'
    assert task.upid == UPID


def test_parse_upid_empty_id_is_valid():
    assert formats.parse_upid('UPID:pve:00001234:00005678:65000000:vzdump::root@pam:').id == ''


@pytest.mark.parametrize('upid, expected', [
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:', 'nine colon-terminated parts'),
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:extra:', 'found 10'),
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam', 'ends with a colon'),
    ('UPID:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:x', 'ends with a colon'),
    ('TASK:pve:0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:', 'starts with "UPID:"'),
    ('UPID:pve:0000XYZ1:00C0FFEE:6553F00D:vzclone:9000:root@pam:', 'pid'),
    ('UPID:pve:0000A1B2:00C0FFEE:123:vzclone:9000:root@pam:', 'starttime'),
    ('UPID::0000A1B2:00C0FFEE:6553F00D:vzclone:9000:root@pam:', 'must not be empty'),
])
def test_parse_upid_invalid(upid, expected):
    with pytest.raises(errors.ProxmoxError) as err:
        formats.parse_upid(upid)
    assert expected in err.value.msg


def test_parse_upid_not_a_string():
    with pytest.raises(errors.ProxmoxError):
        formats.parse_upid(None)


# --------------------------------------------------------------------------
# property strings, sizes, tags, descriptions, booleans
# --------------------------------------------------------------------------

@pytest.mark.parametrize('text, default_key', [
    ('name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth', None),
    ('local-lvm:vm-101-disk-0,size=8G', 'volume'),
    ('local:subvol-101-disk-0,mountoptions=noatime;nosuid,size=2G', 'volume'),
    ('name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,type=veth', None),
])
def test_property_string_round_trip(text, default_key):
    props = formats.parse_property_string(text, default_key)
    assert formats.format_property_string(props, default_key) == text


def test_property_string_parse():
    props = formats.parse_property_string('local-lvm:vm-101-disk-0,size=8G', 'volume')
    assert props == {'volume': 'local-lvm:vm-101-disk-0', 'size': '8G'}
    assert list(formats.parse_property_string('name=eth0,bridge=vmbr0')) == ['name', 'bridge']
    assert formats.parse_property_string('') == {}
    assert formats.parse_property_string(None) == {}
    with pytest.raises(errors.ProxmoxError):
        formats.parse_property_string('name=eth0,garbage')


def test_property_string_format_booleans_and_none():
    assert formats.format_property_string({'name': 'eth0', 'firewall': True, 'x': None, 'y': False}) == \
        'name=eth0,firewall=1,y=0'


@pytest.mark.parametrize('text, num_bytes', [
    ('8G', 8 * 1024 ** 3), ('512M', 512 * 1024 ** 2), ('1T', 1024 ** 4), ('64K', 65536),
    ('1.5G', int(1.5 * 1024 ** 3)), ('30g', 30 * 1024 ** 3), ('2GiB', 2 * 1024 ** 3),
    ('4096', 4096), (4096, 4096),
])
def test_parse_size(text, num_bytes):
    assert formats.parse_size(text) == num_bytes


@pytest.mark.parametrize('text', ['', 'G', 'eight', '8X', '-1G', None])
def test_parse_size_bad(text):
    with pytest.raises(errors.ProxmoxError):
        formats.parse_size(text)


@pytest.mark.parametrize('num_bytes, text', [
    (30 * 1024 ** 3, '30G'), (512 * 1024 ** 2, '512M'), (2 * 1024 ** 4, '2T'), (1536 * 1024 ** 2, '1536M'), (100, '100'),
])
def test_format_size(num_bytes, text):
    assert formats.format_size(num_bytes) == text
    assert formats.parse_size(text) == num_bytes


def test_tags():
    assert formats.parse_tags('cloudpod;Starter;web') == ['cloudpod', 'starter', 'web']
    assert formats.parse_tags(['B', 'a', 'a ', '']) == ['a', 'b']
    assert formats.parse_tags('a,b c') == ['a', 'b', 'c']
    assert formats.parse_tags(None) == []
    assert formats.format_tags(['starter', 'cloudpod']) == 'cloudpod;starter'
    assert formats.invalid_tags(['ok', 'not ok!', '-x', 'a.b+c_d-e']) == ['-x', 'not ok!']
    assert formats.invalid_tags(['fine', 'bad!']) == ['bad!']


def test_normalize_description():
    # The pod record inside a description: test_pod_record.py.
    desc = 'Cloud Pod for shop.example.com\ncloudpods-pod: sub-1042'
    assert formats.normalize_description(desc + '\n') == formats.normalize_description(desc) == desc
    assert formats.normalize_description('a  \r\nb\n\n') == 'a\nb'
    assert formats.normalize_description(None) == ''


def test_to_pve_params_sends_booleans_as_integers():
    assert formats.to_pve_params({'full': True, 'onboot': False, 'pool': None, 'cores': 2}) == \
        {'full': 1, 'onboot': 0, 'cores': 2}


@pytest.mark.parametrize('value, expected', [(1, True), ('1', True), (0, False), ('0', False), (None, False)])
def test_pve_bool(value, expected):
    assert formats.pve_bool(value) is expected


# --------------------------------------------------------------------------
# IPv4 selection
# --------------------------------------------------------------------------

LO = {'name': 'lo', 'hwaddr': '00:00:00:00:00:00', 'inet': '127.0.0.1/8', 'inet6': '::1/128'}


@pytest.mark.parametrize('interfaces, expected', [
    (None, None),
    ([], None),
    ([LO], None),
    ([LO, {'name': 'eth0', 'hwaddr': 'bc:24:11:00:00:01', 'inet6': 'fe80::be24:11ff:fe00:1/64'}], None),
    ([LO, {'name': 'eth0', 'inet': '169.254.10.2/16'}], None),
    ([LO, {'name': 'eth0', 'inet': '0.0.0.0/0'}], None),
    ([LO, {'name': 'eth0', 'inet': '224.0.0.251/32'}], None),
    ([LO, {'name': 'eth0', 'inet': '10.1.10.151/24', 'inet6': 'fe80::1/64'}], '10.1.10.151'),
    ([LO, {'name': 'eth0', 'inet': '192.168.50.7/24'}], '192.168.50.7'),
    ([LO, {'name': 'eth0', 'inet': '203.0.113.9/24'}], '203.0.113.9'),
    ([{'name': 'eth0', 'inet': '127.0.0.2/8'}, {'name': 'eth1', 'inet': '172.16.0.4/12'}], '172.16.0.4'),
    # newer PVE shape
    ([{'name': 'lo', 'ip-addresses': [{'ip-address': '127.0.0.1', 'ip-address-type': 'inet', 'prefix': 8}]},
      {'name': 'eth0', 'ip-addresses': [
          {'ip-address': 'fe80::1', 'ip-address-type': 'inet6', 'prefix': 64},
          {'ip-address': '10.0.3.15', 'ip-address-type': 'inet', 'prefix': 24}]}], '10.0.3.15'),
    # an address on lo that looks global is still ignored: lo is never the pod's address
    ([{'name': 'lo', 'inet': '10.9.9.9/32'}], None),
    ([{'name': 'eth0', 'inet': 'not-an-ip'}], None),
])
def test_first_global_ipv4(interfaces, expected):
    assert formats.first_global_ipv4(interfaces) == expected


# GET .../interfaces of PVE 8.4 (pve-container 5.2.6, LXC.pm get_interfaces) for a pod whose eth0 has
# its DHCP lease and, added by hand later, an alias: ``inet`` keeps the last IPv4 (the alias),
# ``ip-addresses`` every address in the kernel's order (the lease first).
PVE84_LO = {'name': 'lo', 'hwaddr': '00:00:00:00:00:00', 'hardware-address': '00:00:00:00:00:00',
            'inet': '127.0.0.1/8', 'inet6': '::1/128',
            'ip-addresses': [{'ip-address': '127.0.0.1', 'ip-address-type': 'inet', 'prefix': 8},
                             {'ip-address': '::1', 'ip-address-type': 'inet6', 'prefix': 128}]}
PVE84_ETH0_ALIAS = {
    'name': 'eth0', 'hwaddr': 'bc:24:11:2a:3b:4c', 'hardware-address': 'bc:24:11:2a:3b:4c',
    'inet': '10.98.7.200/24', 'inet6': 'fe80::be24:11ff:fe2a:3b4c/64',
    'ip-addresses': [{'ip-address': '10.98.7.23', 'ip-address-type': 'inet', 'prefix': 24},
                     {'ip-address': '10.98.7.200', 'ip-address-type': 'inet', 'prefix': 24},
                     {'ip-address': 'fe80::be24:11ff:fe2a:3b4c', 'ip-address-type': 'inet6', 'prefix': 64}]}


@pytest.mark.parametrize('interfaces, expected', [
    # the lease, not the alias that ``inet`` holds
    ([PVE84_LO, PVE84_ETH0_ALIAS], '10.98.7.23'),
    # a link-local IPv4 first (avahi-autoipd before DHCP answered), then the lease: the lease
    ([PVE84_LO, {'name': 'eth0', 'inet': '10.98.7.23/24', 'ip-addresses': [
        {'ip-address': '169.254.3.4', 'ip-address-type': 'inet', 'prefix': 16},
        {'ip-address': '10.98.7.23', 'ip-address-type': 'inet', 'prefix': 24}]}], '10.98.7.23'),
    # ``ip-addresses`` present but no IPv4 yet (lease pending): nothing, whatever else is there
    ([PVE84_LO, {'name': 'eth0', 'inet6': 'fe80::1/64',
                 'ip-addresses': [{'ip-address': 'fe80::1', 'ip-address-type': 'inet6', 'prefix': 64}]}], None),
])
def test_first_global_ipv4_prefers_the_kernels_first_address_over_inet(interfaces, expected):
    assert formats.first_global_ipv4(interfaces) == expected


def test_describe_interfaces_lists_every_address_once():
    assert formats.describe_interfaces([PVE84_LO, PVE84_ETH0_ALIAS]) == (
        'lo 127.0.0.1 ::1, eth0 10.98.7.23 10.98.7.200 fe80::be24:11ff:fe2a:3b4c')
    assert formats.describe_interfaces([LO, {'name': 'eth0', 'inet6': 'fe80::1/64'}]) == (
        'lo 127.0.0.1/8 ::1/128, eth0 fe80::1/64')
    assert formats.describe_interfaces(None) == 'none reported'


@pytest.mark.parametrize('conf, expected', [
    ({'rootfs': 'local-lvm:vm-101-disk-0,size=30G'}, ('30G', 30 * 1024 ** 3)),
    ({'rootfs': 'local:101/vm-101-disk-0.raw,mountoptions=noatime,size=2560M'}, ('2560M', 2560 * 1024 ** 2)),
    ({'rootfs': 'local-lvm:vm-101-disk-0'}, (None, None)),
    ({'rootfs': 'local-lvm:vm-101-disk-0,size=lots'}, (None, None)),
    ({}, (None, None)),
    (None, (None, None)),
])
def test_root_disk_size(conf, expected):
    assert formats.root_disk_size(conf) == expected
