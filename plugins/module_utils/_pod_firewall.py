# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: what pod_firewall changes on a container's firewall, worked out without the API.

``check_rules()`` checks and normalises the wanted rules; ``options_changes()``, ``rule_plan()`` and
``ipset_plan()`` compare what is wanted with what the API returned and say what to send. Pure: no
connection. The module (plugins/modules/pod_firewall.py) sends it.

Which rules are ours: those whose ``comment`` starts with the marker (``cloudpods:`` by default),
followed by the rule's name. A rule is matched by that name, never by its position (Proxmox VE puts
every new rule at the top). Rules without the marker were added by an operator and are kept unless
``exclusive``.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ipaddress
import re

from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError

POLICIES = ('ACCEPT', 'REJECT', 'DROP')
# The rule fields this module manages (pve-firewall src/PVE/Firewall.pm $rule_properties, minus pos/digest).
RULE_FIELDS = ('type', 'action', 'enable', 'macro', 'proto', 'dport', 'sport', 'source', 'dest', 'iface', 'log',
               'icmp-type', 'comment')
OPTION_KEYS = ('enable', 'policy_in', 'policy_out', 'ipfilter', 'dhcp', 'macfilter')
BOOL_OPTIONS = ('enable', 'ipfilter', 'dhcp', 'macfilter')
IPFILTER_SET = 'ipfilter-net0'
# What starts the comment of our rules, unless the module's marker option says otherwise.
DEFAULT_MARKER = 'cloudpods:'
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,62}$')
_PORTS_RE = re.compile(r'^(\d{1,5}(:\d{1,5})?)(,\d{1,5}(:\d{1,5})?)*$')
_PROTO_RE = re.compile(r'^([a-z][a-z0-9-]*|\d{1,3})$')


def marker_comment(marker, name):
    return '%s %s' % (marker, name)


def rule_name(marker, comment):
    """The name of our rule from its comment, or None when the rule is not ours."""
    comment = to_text(comment or '')
    if not comment.startswith(marker):
        return None
    return comment[len(marker):].strip() or None


def check_rules(rules, marker):
    """The wanted rules as PVE stores them (strings, ``enable`` 0/1, our comment), in the given order.

    Fails (ProxmoxError) on a rule that PVE would refuse or that this module cannot name.
    """
    wanted = []
    seen = set()
    for index, rule in enumerate(rules or []):
        where = 'rules[%d]' % index
        name = rule.get('name')
        if not name:
            name = '%s/%s' % (rule.get('dport') or rule.get('macro') or 'any', rule.get('proto') or 'any')
        name = to_text(name)
        if not _NAME_RE.match(name):
            raise ProxmoxError('%s: name %r must be letters, digits and "_ . : / + -" (at most 63)' % (where, name))
        if name in seen:
            raise ProxmoxError('%s: two rules are named %r; every rule needs its own name' % (where, name))
        seen.add(name)
        if rule.get('action') not in POLICIES:
            raise ProxmoxError('%s: action must be one of %s' % (where, ', '.join(POLICIES)))
        proto = rule.get('proto')
        if proto is not None and not _PROTO_RE.match(to_text(proto)):
            raise ProxmoxError('%s: proto %r is not a protocol name or number' % (where, proto))
        for key in ('dport', 'sport'):
            value = rule.get(key)
            if value is None:
                continue
            value = to_text(value)
            if not _PORTS_RE.match(value) or any(not 1 <= int(p) <= 65535 for p in re.split('[,:]', value)):
                raise ProxmoxError('%s: %s %r must be ports 1-65535, "a:b" ranges and "," lists' % (where, key, value))
            if proto not in ('tcp', 'udp', 'udplite', 'sctp', 'dccp'):
                raise ProxmoxError('%s: %s needs proto tcp, udp, udplite, sctp or dccp' % (where, key))
        for key in ('source', 'dest'):
            value = rule.get(key)
            if value is None:
                continue
            for item in to_text(value).split(','):
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ProxmoxError('%s: %s %r is not an address or network (aliases and IP sets are not '
                                       'supported here)' % (where, key, item))
        stored = {
            'type': rule.get('type') or 'in',
            'action': rule['action'],
            'enable': 1 if rule.get('enable', True) else 0,
            'comment': marker_comment(marker, name),
        }
        for key in ('macro', 'proto', 'dport', 'sport', 'source', 'dest', 'iface', 'log', 'icmp-type'):
            if rule.get(key) is not None:
                stored[key] = to_text(rule[key])
        wanted.append(stored)
    return wanted


def normalize_rule(rule):
    """A rule from ``GET .../firewall/rules`` reduced to the managed fields, as strings (``enable`` 0/1)."""
    view = {}
    for key in RULE_FIELDS:
        value = rule.get(key)
        if value is None or value == '':
            continue
        view[key] = (1 if to_text(value) in ('1', 'True', 'true') else 0) if key == 'enable' else to_text(value)
    view.setdefault('enable', 0)
    return view


def normalize_options(options):
    view = {}
    for key in OPTION_KEYS:
        value = (options or {}).get(key)
        if value is None or value == '':
            continue
        view[key] = (1 if to_text(value) in ('1', 'True', 'true') else 0) if key in BOOL_OPTIONS else to_text(value)
    return view


def wanted_options(params):
    """The options the module manages (those given), as PVE stores them."""
    wanted = {}
    for key in OPTION_KEYS:
        value = params.get(key)
        if value is None:
            continue
        wanted[key] = (1 if value else 0) if key in BOOL_OPTIONS else value
    return wanted


def options_changes(current, wanted):
    """The options to PUT: those that differ ({} when nothing does)."""
    current = normalize_options(current)
    return dict((key, value) for key, value in wanted.items() if current.get(key) != value)


class RulePlan(object):
    """What to do to the rule list: ``update`` {pos: (params, delete)}, ``create`` [rule] (in wanted order),
    ``delete`` [pos] and whether our rules must be put back in order (``reorder``)."""

    def __init__(self, wanted=None):
        self.wanted = wanted or []
        self.update = {}
        self.create = []
        self.delete = []
        self.reorder = False

    def __bool__(self):
        return bool(self.update or self.create or self.delete or self.reorder)

    __nonzero__ = __bool__


def rule_plan(current, wanted, marker, exclusive):
    """Compare the current rule list (as returned, in order) with the wanted rules of ours.

    Our rules are matched by name (from the comment). A wanted rule that exists but differs is
    updated in place; a missing one is created; one of ours that is no longer wanted (or a second
    rule of the same name) is deleted, and with ``exclusive`` so is every rule that is not ours.
    """
    plan = RulePlan(wanted)
    wanted_by_name = dict((rule_name(marker, rule['comment']), rule) for rule in wanted)
    found = {}
    for pos, rule in enumerate(current):
        view = normalize_rule(rule)
        name = rule_name(marker, view.get('comment'))
        if name is None:
            if exclusive:
                plan.delete.append(pos)
            continue
        if name not in wanted_by_name or name in found:
            plan.delete.append(pos)
            continue
        found[name] = pos
        want = wanted_by_name[name]
        if view != want:
            params = dict((key, value) for key, value in want.items() if view.get(key) != value)
            delete = sorted(key for key in view if key not in want)
            plan.update[pos] = (params, delete)
    plan.create = [rule for rule in wanted if rule_name(marker, rule['comment']) not in found]
    plan.reorder = not ours_in_order(_apply(current, plan, reorder=False), wanted, marker)
    return plan


def ours_in_order(rules, wanted, marker):
    """True when our rules in ``rules`` (normalised) come in the wanted order."""
    names = [rule_name(marker, rule['comment']) for rule in wanted]
    present = [rule_name(marker, rule.get('comment')) for rule in rules]
    return [name for name in present if name in names] == names


def _apply(current, plan, reorder=True):
    """The rule list after ``plan``, carried out as the module does: updates, deletes (from the
    bottom), creates (each goes to the top, so the last wanted first), then our rules moved to the top
    in wanted order when they are not in it."""
    rules = [normalize_rule(rule) for rule in current]
    for pos, (params, delete) in plan.update.items():
        rule = dict(rules[pos])
        for key in delete:
            rule.pop(key, None)
        rule.update(params)
        rules[pos] = rule
    for pos in sorted(plan.delete, reverse=True):
        rules.pop(pos)
    for rule in reversed(plan.create):
        rules.insert(0, dict(rule))
    if reorder and plan.reorder:
        ours = [rule for rule in rules if rule.get('comment') in set(r['comment'] for r in plan.wanted)]
        others = [rule for rule in rules if rule not in ours]
        by_comment = dict((rule['comment'], rule) for rule in ours)
        rules = [by_comment[rule['comment']] for rule in plan.wanted] + others
    return rules


def predict_rules(current, plan):
    """The rule list (normalised) after the plan is carried out, for check mode and diffs."""
    return _apply(current, plan)


def normalize_cidr(value):
    """An address or network as PVE keeps it in an IP set (src/PVE/Firewall.pm parse_ip_or_cidr): host bits
    of a network cleared, /32 and /128 dropped."""
    text = to_text(value).strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ProxmoxError('ipfilter_addresses: %r is not an IP address or network' % (text,))
    if network.prefixlen == network.max_prefixlen:
        return to_text(network.network_address)
    if network.prefixlen == 0:
        raise ProxmoxError('ipfilter_addresses: %r: a zero prefix is not allowed in an IP set' % (text,))
    return to_text(network)


class IpsetPlan(object):
    """``create`` the set, ``add`` [cidr], ``remove`` [cidr]."""

    def __init__(self, create=False, add=None, remove=None):
        self.create = create
        self.add = add or []
        self.remove = remove or []

    def __bool__(self):
        return bool(self.create or self.add or self.remove)

    __nonzero__ = __bool__


def ipset_plan(exists, entries, wanted, marker, exclusive):
    """Entries of ``ipfilter-net0``: ours carry the marker as comment; others are kept unless ``exclusive``."""
    current = dict((to_text(entry.get('cidr')), entry) for entry in entries or [])
    plan = IpsetPlan(create=not exists)
    plan.add = [cidr for cidr in wanted if cidr not in current]
    for cidr, entry in sorted(current.items()):
        ours = to_text(entry.get('comment') or '').startswith(marker)
        if cidr not in wanted and (ours or exclusive):
            plan.remove.append(cidr)
    return plan


def ipset_view(entries):
    return sorted(to_text(entry.get('cidr')) for entry in entries or [])


def net_uses_dhcp(net0):
    """True when a CT's ``net0`` property string takes its IPv4 address by DHCP (``ip=dhcp``)."""
    return any(part.strip() == 'ip=dhcp' for part in to_text(net0 or '').split(','))


def net_firewall_flag(net0):
    return any(part.strip() == 'firewall=1' for part in to_text(net0 or '').split(','))


def describe_changes(option_delta, plan, rules_before, ipset):
    """The changes to a firewall in words (``options: enable=1``, ``create rule cloudpods: ssh``), in the order made."""
    changes = []
    if option_delta:
        changes.append('options: %s' % ', '.join('%s=%s' % item for item in sorted(option_delta.items())))
    if ipset:
        if ipset.create:
            changes.append('create IP set %s' % IPFILTER_SET)
        changes.extend('add %s to %s' % (cidr, IPFILTER_SET) for cidr in ipset.add)
        changes.extend('remove %s from %s' % (cidr, IPFILTER_SET) for cidr in ipset.remove)
    for pos in sorted(plan.update):
        changes.append('update rule %s' % normalize_rule(rules_before[pos]).get('comment'))
    for pos in sorted(plan.delete):
        comment = normalize_rule(rules_before[pos]).get('comment')
        changes.append('delete rule %s' % (comment or 'at position %d (not ours)' % pos))
    changes.extend('create rule %s' % rule['comment'] for rule in plan.create)
    if plan.reorder:
        changes.append('put our rules in order')
    return changes
