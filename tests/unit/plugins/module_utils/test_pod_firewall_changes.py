# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of what pod_firewall would change on a given firewall (module_utils/_pod_firewall.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _pod_firewall as pf
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError

MARK = 'cloudpods:'
WEB = [dict(name='http', action='ACCEPT', proto='tcp', dport='80'),
       dict(name='https', action='ACCEPT', proto='tcp', dport='443')]


def stored(name, dport, **extra):
    rule = dict(type='in', action='ACCEPT', proto='tcp', dport=dport, enable=1, comment='%s %s' % (MARK, name),
                digest='d', pos=0)
    rule.update(extra)
    return rule


def test_wanted_rules_are_stored_as_pve_keeps_them():
    assert pf.check_rules(WEB, MARK) == [
        {'type': 'in', 'action': 'ACCEPT', 'enable': 1, 'comment': 'cloudpods: http', 'proto': 'tcp', 'dport': '80'},
        {'type': 'in', 'action': 'ACCEPT', 'enable': 1, 'comment': 'cloudpods: https', 'proto': 'tcp', 'dport': '443'}]
    assert pf.check_rules([dict(action='DROP', proto='udp', dport='53')], MARK)[0]['comment'] == 'cloudpods: 53/udp'


@pytest.mark.parametrize('rule,message', [
    (dict(name='x', action='ACCEPT', dport='80'), 'dport needs proto'),
    (dict(name='x', action='ACCEPT', proto='tcp', dport='70000'), 'ports 1-65535'),
    (dict(name='x', action='ACCEPT', proto='tcp', dport='80;rm'), 'ports 1-65535'),
    (dict(name='x y', action='ACCEPT'), 'name'),
    (dict(name='x', action='LOG'), 'action must be'),
    (dict(name='x', action='ACCEPT', source='+blacklist'), 'not an address'),
])
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(ProxmoxError, match=message):
        pf.check_rules([rule], MARK)


def test_nothing_differs_gives_an_empty_plan():
    current = [stored('http', '80', pos=0), stored('https', '443', pos=1)]
    plan = pf.rule_plan(current, pf.check_rules(WEB, MARK), MARK, exclusive=False)
    assert not plan
    assert pf.options_changes({'enable': 1, 'policy_in': 'DROP', 'digest': 'x'},
                              {'enable': 1, 'policy_in': 'DROP'}) == {}


def test_a_missing_rule_is_created_and_goes_to_the_top_in_order():
    current = [stored('https', '443')]
    plan = pf.rule_plan(current, pf.check_rules(WEB, MARK), MARK, exclusive=False)
    assert [r['comment'] for r in plan.create] == ['cloudpods: http'] and not plan.reorder
    assert [r['comment'] for r in pf.predict_rules(current, plan)] == ['cloudpods: http', 'cloudpods: https']


def test_a_missing_rule_below_a_kept_one_needs_a_reorder():
    current = [stored('http', '80')]
    plan = pf.rule_plan(current, pf.check_rules(WEB, MARK), MARK, exclusive=False)
    assert plan.reorder
    assert [r['comment'] for r in pf.predict_rules(current, plan)] == ['cloudpods: http', 'cloudpods: https']


def test_a_changed_rule_of_ours_is_updated_in_place_and_extra_fields_deleted():
    current = [stored('http', '8080', enable=0, source='10.0.0.0/8'), stored('https', '443')]
    plan = pf.rule_plan(current, pf.check_rules(WEB, MARK), MARK, exclusive=False)
    assert plan.update == {0: ({'dport': '80', 'enable': 1}, ['source'])}
    assert not plan.create and not plan.delete and not plan.reorder


def test_operator_rules_are_kept_unless_exclusive_and_duplicates_of_ours_go():
    current = [dict(type='in', action='ACCEPT', proto='tcp', dport='3306', enable=1, comment='office'),
               stored('http', '80'), stored('http', '80'), stored('https', '443'), stored('old', '8080')]
    plan = pf.rule_plan(current, pf.check_rules(WEB, MARK), MARK, exclusive=False)
    assert plan.delete == [2, 4] and not plan.create and not plan.update
    exclusive = pf.rule_plan(current, pf.check_rules(WEB, MARK), MARK, exclusive=True)
    assert exclusive.delete == [0, 2, 4]
    assert [r.get('comment') for r in pf.predict_rules(current, plan)] == ['office', 'cloudpods: http',
                                                                           'cloudpods: https']


def test_a_comment_that_only_resembles_the_marker_is_not_ours():
    assert pf.rule_name(MARK, 'cloudpods: http') == 'http'
    assert pf.rule_name(MARK, 'my cloudpods: http') is None
    assert pf.rule_name(MARK, None) is None


def test_options_compare_booleans_and_send_only_what_differs():
    wanted = pf.wanted_options(dict(enable=True, policy_in='DROP', policy_out='ACCEPT', ipfilter=True, dhcp=True,
                                    macfilter=None))
    assert wanted == {'enable': 1, 'policy_in': 'DROP', 'policy_out': 'ACCEPT', 'ipfilter': 1, 'dhcp': 1}
    assert pf.options_changes({'enable': '1', 'policy_in': 'REJECT', 'ipfilter': 0}, wanted) == {
        'policy_in': 'DROP', 'policy_out': 'ACCEPT', 'ipfilter': 1, 'dhcp': 1}


def test_ipfilter_entries_of_ours_follow_the_wanted_ones_and_others_stay():
    entries = [{'cidr': '10.0.0.5', 'comment': MARK}, {'cidr': '10.0.0.9', 'comment': 'office'}]
    plan = pf.ipset_plan(True, entries, ['10.0.0.7'], MARK, exclusive=False)
    assert (plan.create, plan.add, plan.remove) == (False, ['10.0.0.7'], ['10.0.0.5'])
    assert pf.ipset_plan(True, entries, ['10.0.0.7'], MARK, exclusive=True).remove == ['10.0.0.5', '10.0.0.9']
    assert not pf.ipset_plan(True, [{'cidr': '10.0.0.7', 'comment': MARK}], ['10.0.0.7'], MARK, False)
    assert pf.normalize_cidr('10.0.0.7/32') == '10.0.0.7' and pf.normalize_cidr('10.1.2.3/16') == '10.1.0.0/16'


def test_dhcp_and_firewall_flag_of_net0():
    net0 = 'name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth'
    assert pf.net_uses_dhcp(net0) and pf.net_firewall_flag(net0)
    assert not pf.net_uses_dhcp('name=eth0,ip=10.0.0.2/24') and not pf.net_firewall_flag('name=eth0,firewall=0')
