# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a plan and the site's settings ask of a pod's firewall and zone (module_utils/_pod_plan.py), and the
filters that give it to the roles (plan_firewall_rules, pod_dns_rrsets)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.mpanel.cloudpods.plugins.filter import pod_plan as filters
from ansible_collections.mpanel.cloudpods.plugins.module_utils import _pod_plan

SITE = dict(mail_host='mail.example.net', spf='v=spf1 mx include:_spf.example.net -all')


def test_inbound_entries_become_rules_in_their_order_and_ssh_opens_the_sshd_port():
    assert _pod_plan.firewall_rules(['ssh', '80/tcp', '443/tcp', '53/udp'], 2222) == [
        dict(name='ssh', proto='tcp', dport='2222'), dict(name='80/tcp', proto='tcp', dport='80'),
        dict(name='443/tcp', proto='tcp', dport='443'), dict(name='53/udp', proto='udp', dport='53')]
    assert _pod_plan.firewall_rules([], 22) == []


@pytest.mark.parametrize('entry', ['http', '80', '80/icmp', '0/tcp', '65536/tcp', '123456/tcp', '80/tcp ', 'SSH', 80])
def test_an_entry_that_is_not_ssh_or_a_port_is_refused_by_name(entry):
    with pytest.raises(_pod_plan.PlanError, match=r"firewall entry %s: an inbound entry is 'ssh'" % repr(entry).replace('(', r'\(')):
        _pod_plan.firewall_rules(['ssh', entry], 22)
    with pytest.raises(AnsibleFilterError, match='firewall entry'):
        filters.plan_firewall_rules(['ssh', entry], 22)


def test_the_records_of_a_pod_with_the_site_defaults():
    assert _pod_plan.dns_rrsets('shop.example.com', '10.1.20.31', SITE) == [
        dict(name='@', type='A', records=['10.1.20.31']),
        dict(name='www', type='A', records=['10.1.20.31']),
        dict(name='@', type='MX', records=['10 mail.example.net']),
        dict(name='@', type='TXT', records=['v=spf1 mx include:_spf.example.net -all']),
        dict(name='_dmarc', type='TXT', records=['v=DMARC1; p=quarantine; rua=mailto:postmaster@shop.example.com']),
    ]


def test_without_an_address_the_a_records_are_left_out_not_emptied():
    names = [(r['name'], r['type']) for r in _pod_plan.dns_rrsets('shop.example.com', '', SITE)]
    assert ('@', 'A') not in names and ('www', 'A') not in names and ('@', 'MX') in names


def test_an_idn_domain_gets_its_punycode_in_the_dmarc_address():
    [dmarc] = [r for r in _pod_plan.dns_rrsets(u'bücher.example', '10.0.0.1', SITE) if r['name'] == '_dmarc']
    assert dmarc['records'] == ['v=DMARC1; p=quarantine; rua=mailto:postmaster@xn--bcher-kva.example']


def test_parts_switched_off_are_left_out_and_the_optional_ones_come_in_when_set():
    rrsets = _pod_plan.dns_rrsets('shop.example.com', '10.0.0.1', dict(
        SITE, spf='', dmarc='', www=False, ipv6='2001:db8::5', dkim_public_key='MIIBIjAN', dkim_selector='mail',
        apex_txt_extra=['google-site-verification=x'], dmarc_policy='reject',
        extra_rrsets=[dict(name='shop', type='CNAME', records=['shop.example.net.'])]))
    by_key = dict(((r['name'], r['type']), r['records']) for r in rrsets)
    assert ('www', 'A') not in by_key and ('www', 'AAAA') not in by_key and ('_dmarc', 'TXT') not in by_key
    assert by_key[('@', 'AAAA')] == ['2001:db8::5']
    assert by_key[('@', 'TXT')] == ['google-site-verification=x']
    assert by_key[('mail._domainkey', 'TXT')] == ['v=DKIM1; k=rsa; p=MIIBIjAN']
    assert by_key[('shop', 'CNAME')] == ['shop.example.net.']


def test_a_dmarc_address_or_record_of_the_site_is_taken_as_it_is():
    rua = _pod_plan.dns_rrsets('a.example', '10.0.0.1', dict(SITE, dmarc_rua='mailto:dmarc@example.net'))
    assert [r['records'] for r in rua if r['name'] == '_dmarc'] == [['v=DMARC1; p=quarantine; rua=mailto:dmarc@example.net']]
    whole = _pod_plan.dns_rrsets('a.example', '10.0.0.1', dict(SITE, dmarc='v=DMARC1; p=none'))
    assert [r['records'] for r in whole if r['name'] == '_dmarc'] == [['v=DMARC1; p=none']]


def test_an_unknown_setting_is_refused_by_name():
    with pytest.raises(_pod_plan.PlanError, match='unknown DNS settings: mx_host'):
        _pod_plan.dns_rrsets('a.example', '10.0.0.1', dict(mx_host='mail.example.net'))
    with pytest.raises(AnsibleFilterError, match='unknown DNS settings: mx_host'):
        filters.pod_dns_rrsets('a.example', '10.0.0.1', dict(mx_host='mail.example.net'))


def test_the_filters_take_ansible_s_own_text_and_return_plain_values():
    rrsets = filters.pod_dns_rrsets(wrap_var('shop.example.com'), wrap_var('10.1.20.31'), wrap_var(dict(SITE)))
    assert rrsets == _pod_plan.dns_rrsets('shop.example.com', '10.1.20.31', SITE)
    assert all(type(r['name']) is str for r in rrsets)  # pylint: disable=unidiomatic-typecheck
    rules = filters.plan_firewall_rules(wrap_var(['ssh', '443/tcp']), 22)
    assert rules == [dict(name='ssh', proto='tcp', dport='22'), dict(name='443/tcp', proto='tcp', dport='443')]
