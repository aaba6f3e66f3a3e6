# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: what a pod's plan and the site's settings ask of its firewall and DNS zone.

One rule for every path that converges a pod: the roles pod_firewall and pod_dns reach it through the
filters of plugins/filter/pod_plan.py, the fleet check (pod_fleet_info) calls it directly. Pure: no
connection, no templating; every input is data.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

_ENTRY_RE = re.compile(r'^([0-9]{1,5})/(tcp|udp)\Z')


class PlanError(ValueError):
    """An entry of the plan catalogue or a DNS setting that cannot be turned into rules or records."""


def bad_firewall_entries(allow_in):
    """The entries of a plan's ``firewall.allow_in`` that are neither ``ssh`` nor ``<port>/tcp|udp`` (1-65535)."""
    bad = []
    for item in allow_in or []:
        match = _ENTRY_RE.match(item) if isinstance(item, str) else None
        if not (item == 'ssh' or (match and 1 <= int(match.group(1)) <= 65535)):
            bad.append(item)
    return bad


def firewall_rules(allow_in, ssh_port):
    """The pod_firewall rules of a plan's inbound entries, in their order: ``ssh`` opens the sshd port."""
    bad = bad_firewall_entries(allow_in)
    if bad:
        raise PlanError("firewall entry %r: an inbound entry is 'ssh' (the sshd port) or '<port>/tcp' or '<port>/udp'"
                        % (bad[0],))
    rules = []
    for item in allow_in or []:
        if item == 'ssh':
            rules.append(dict(name=item, proto='tcp', dport=str(ssh_port)))
        else:
            port, proto = item.split('/')
            rules.append(dict(name=item, proto=proto, dport=port))
    return rules


def ascii_domain(domain):
    """The domain in ASCII: an IDN in its punycode (xn--) form, as the DMARC report address needs it."""
    if re.search(r'[^\x00-\x7f]', domain):
        return domain.encode('idna').decode('ascii')
    return domain


# The record settings of the role pod_dns (its variables without the pod_dns_ prefix) and their defaults,
# where a default does not depend on the company domain.
DNS_SETTINGS = dict(
    ipv6='', www=True, mail_host='', mx_priority=10, spf='', apex_txt_extra=[], dmarc_policy='quarantine',
    dmarc_rua=None, dmarc=None, dkim_selector='default', dkim_key_type='rsa', dkim_public_key='', extra_rrsets=[],
)


def dns_rrsets(domain, ipv4, settings):
    """The rrsets (powerdns_zone's ``rrsets``) of a pod's zone.

    ``ipv4`` empty: the A records are left out (not checked, not changed): a stopped pod has no address.
    ``settings``: DNS_SETTINGS's keys; ``dmarc_rua`` None means ``mailto:postmaster@<domain in ASCII>``,
    ``dmarc`` None means ``v=DMARC1; p=<dmarc_policy>; rua=<dmarc_rua>``, empty means no DMARC record. A part
    whose value is empty (no IPv6, no DKIM key, SPF or DMARC off) is left out, not removed: records an
    operator added by hand survive.
    """
    unknown = sorted(set(settings or {}) - set(DNS_SETTINGS))
    if unknown:
        raise PlanError('unknown DNS settings: %s (known: %s)' % (', '.join(unknown), ', '.join(sorted(DNS_SETTINGS))))
    s = dict(DNS_SETTINGS)
    s.update((k, v) for k, v in (settings or {}).items() if v is not None or k in ('dmarc', 'dmarc_rua'))
    rua = s['dmarc_rua'] if s['dmarc_rua'] is not None else 'mailto:postmaster@%s' % ascii_domain(domain)
    dmarc = s['dmarc'] if s['dmarc'] is not None else 'v=DMARC1; p=%s; rua=%s' % (s['dmarc_policy'], rua)
    ipv4 = ipv4 or ''
    ipv6 = s['ipv6'] or ''
    apex_txt = ([s['spf']] if s['spf'] else []) + list(s['apex_txt_extra'] or [])
    candidates = [
        ('@', 'A', [ipv4] if ipv4 else []),
        ('www', 'A', [ipv4] if ipv4 and s['www'] else []),
        ('@', 'AAAA', [ipv6] if ipv6 else []),
        ('www', 'AAAA', [ipv6] if ipv6 and s['www'] else []),
        ('@', 'MX', ['%s %s' % (s['mx_priority'], s['mail_host'])] if s['mail_host'] else []),
        ('@', 'TXT', apex_txt),
        ('_dmarc', 'TXT', [dmarc] if dmarc else []),
        ('%s._domainkey' % s['dkim_selector'], 'TXT',
         ['v=DKIM1; k=%s; p=%s' % (s['dkim_key_type'], s['dkim_public_key'])] if s['dkim_public_key'] else []),
    ]
    rrsets = [dict(name=name, type=rtype, records=records) for name, rtype, records in candidates if records]
    return rrsets + list(s['extra_rrsets'] or [])
