# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the LXC backend's firewall (tests/lab/pvesim/nftfirewall.py) makes of a CT's PVE firewall.

Pure: the nft text for given guests, no root, no lab. That the text is enforced on real traffic is
test_pod_firewall_real.py's subject.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(os.path.dirname(HERE), 'lab')
if LAB not in sys.path:
    sys.path.insert(0, LAB)

from pvesim import nftfirewall  # noqa: E402

NET0 = 'name=eth0,bridge=cp123456,firewall=1,hwaddr=BC:24:11:AA:BB:CC,ip=dhcp,type=veth'


def guest(**changes):
    item = {'vmid': 101, 'running': True, 'config': {'net0': NET0},
            'options': {'enable': 1, 'policy_in': 'DROP', 'policy_out': 'ACCEPT', 'ipfilter': 1, 'dhcp': 1},
            'rules': [{'type': 'in', 'action': 'ACCEPT', 'proto': 'tcp', 'dport': '80', 'enable': 1},
                      {'type': 'in', 'action': 'ACCEPT', 'proto': 'tcp', 'dport': '22', 'enable': 0}],
            'ipsets': {'ipfilter-net0': {'entries': [{'cidr': '10.98.1.57'}]}}}
    item.update(changes)
    return item


def chains(item):
    [(found, index, net)] = nftfirewall.filtered_interfaces([item], True)
    built = nftfirewall.Chains(found, index, net)
    return built.in_chain(), built.out_chain()


def test_nothing_is_filtered_unless_datacenter_ct_and_nic_say_so():
    assert nftfirewall.filtered_interfaces([guest()], True)
    assert nftfirewall.filtered_interfaces([guest()], False) == []
    assert nftfirewall.filtered_interfaces([guest(options={'enable': 0})], True) == []
    assert nftfirewall.filtered_interfaces([guest(running=False)], True) == []
    assert nftfirewall.filtered_interfaces([guest(config={'net0': NET0.replace('firewall=1', 'firewall=0')})],
                                           True) == []


def test_in_chain_established_dhcp_enabled_rules_then_the_policy():
    incoming, dummy = chains(guest())
    assert incoming[1:3] == ['meta mark & 0x02000000 == 0x02000000 drop',
                             'meta mark & 0x01000000 == 0x01000000 accept']
    assert 'ether type ip udp sport 67 udp dport 68 accept' in incoming
    assert 'ether type ip meta l4proto tcp th dport { 80 } accept' in incoming
    assert not any('{ 22 }' in line for line in incoming)  # a disabled rule is no rule
    assert incoming[-1] == 'drop'


def test_dhcp_is_let_through_unless_explicitly_off_as_pve_compiles_it():
    assert 'ether type ip udp sport 67 udp dport 68 accept' in chains(guest(options={'enable': 1}))[0]
    assert not any('sport 67' in line for line in chains(guest(options={'enable': 1, 'dhcp': 0}))[0])


def test_out_chain_mac_and_address_filter_with_the_lease_from_the_ipset():
    dummy, outgoing = chains(guest())
    assert 'ether saddr != bc:24:11:aa:bb:cc drop' in outgoing
    assert 'ether type arp arp saddr ip != { 0.0.0.0, 10.98.1.57 } drop' in outgoing
    assert 'ether type ip ip saddr != { 10.98.1.57 } drop' in outgoing
    assert outgoing[-1] == 'return'  # policy_out ACCEPT: on to the receiver's IN chain
    # ipfilter with no address at all (DHCP, nothing in the set): no IPv4 but DHCP, as on PVE
    dummy, outgoing = chains(guest(ipsets={}))
    assert 'ether type ip drop' in outgoing
    assert outgoing.index('ether type ip udp sport 68 udp dport 67 return') < outgoing.index('ether type ip drop')


def test_reject_marks_and_sources_split_by_family():
    rule = {'type': 'in', 'action': 'REJECT', 'proto': 'tcp', 'dport': '8000:8100,25', 'enable': 1,
            'source': '10.0.0.0/8,fd00::/8'}
    incoming, dummy = chains(guest(rules=[rule], options={'enable': 1, 'policy_in': 'REJECT'}))
    assert ('ether type ip ip saddr { 10.0.0.0/8 } meta l4proto tcp th dport { 8000-8100, 25 } '
            'meta mark set meta mark | 0x04000000 return') in incoming
    assert ('ether type ip6 ip6 saddr { fd00::/8 } meta l4proto tcp th dport { 8000-8100, 25 } '
            'meta mark set meta mark | 0x04000000 return') in incoming
    assert incoming[-1] == 'meta mark set meta mark | 0x04000000 return'


def test_the_ruleset_names_its_tables_after_the_bridge_and_hooks_each_veth():
    [(found, index, net)] = nftfirewall.filtered_interfaces([guest()], True)
    text = nftfirewall.ruleset(nftfirewall.table_name('cp12-34'), [(found, index, net, 'vethAbC1')])
    assert text.startswith('table inet cloudpods_cp12_34\ndelete table inet cloudpods_cp12_34\n')
    assert 'iifname "vethAbC1" jump ct101_net0_out' in text and 'oifname "vethAbC1" jump ct101_net0_in' in text
    assert 'type filter hook output priority -10' in text  # the host's own traffic is filtered too
