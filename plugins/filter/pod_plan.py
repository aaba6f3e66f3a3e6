# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters mpanel.cloudpods.plan_firewall_rules, mpanel.cloudpods.pod_dns_rrsets and mpanel.cloudpods.backup_start:
a pod's firewall rules, DNS records and backup time from its plan and the site's settings.

The rule is module_utils/_pod_plan.py, which the fleet check (pod_fleet_info) calls too: a single pod's
converge (roles pod_firewall and pod_dns) and the fleet check cannot disagree on what a pod should have.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _pod_plan
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_window


def _plain(value):
    # Variables arrive as Ansible's own subclasses of str, list and dict (unsafe text, tagged values).
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return dict((_plain(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plan_firewall_rules(allow_in, ssh_port=22):
    """The pod_firewall rules of a plan's ``firewall.allow_in``; AnsibleFilterError names the first bad entry."""
    try:
        return _pod_plan.firewall_rules(_plain(allow_in), _plain(ssh_port))
    except _pod_plan.PlanError as exc:
        raise AnsibleFilterError(str(exc))


def pod_dns_rrsets(domain, ipv4, settings=None):
    """The rrsets of the zone of a pod with ``domain`` and address ``ipv4`` (empty: no A records)."""
    try:
        return _pod_plan.dns_rrsets(_plain(domain), _plain(ipv4), _plain(settings or {}))
    except _pod_plan.PlanError as exc:
        raise AnsibleFilterError(str(exc))


def backup_start(pod, schedule):
    """The cron fields of the pod's backup in its plan's window (plugin_utils/backup_window.py);
    AnsibleFilterError says what in the schedule cannot be spread."""
    try:
        return backup_window.backup_start(_plain(pod), _plain(schedule))
    except backup_window.WindowError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):

    def filters(self):
        return {
            'plan_firewall_rules': plan_firewall_rules,
            'pod_dns_rrsets': pod_dns_rrsets,
            'backup_start': backup_start,
        }
