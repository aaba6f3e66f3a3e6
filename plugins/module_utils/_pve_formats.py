# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: the formats of Proxmox VE values, read and written.

Task ids (UPIDs), parameters (booleans as 1/0), integers, property strings, sizes, tags,
descriptions and the addresses in an interfaces answer. Pure functions, no I/O: the
bottom layer of the Proxmox client, beside its errors.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import ipaddress
import re

from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError

_TAG_RE = re.compile(r'^[a-z0-9_][a-z0-9_+.-]*$')
_SIZE_RE = re.compile(r'^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:i?B)?\s*$', re.IGNORECASE)
_HEX_RE = re.compile(r'^[0-9A-Fa-f]{8,}$')

_SIZE_FACTORS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}
GIB = _SIZE_FACTORS['G']

Upid = collections.namedtuple('Upid', 'node pid pstart starttime type id user upid')


def parse_upid(upid):
    """Parse ``UPID:node:PID:PSTART:STARTTIME:type:id:user:`` (nine fields, trailing colon)."""
    if not isinstance(upid, str):
        raise ProxmoxError('Expected a task id (UPID string) from the Proxmox API, got %r' % (upid,))
    if not upid.startswith('UPID:'):
        raise ProxmoxError('Invalid task id %r: a UPID starts with "UPID:"' % (upid,))
    if not upid.endswith(':'):
        raise ProxmoxError('Invalid task id %r: a UPID ends with a colon '
                           '(UPID:node:pid:pstart:starttime:type:id:user:)' % (upid,))
    fields = upid[:-1].split(':')
    if len(fields) != 8:
        raise ProxmoxError('Invalid task id %r: a UPID has nine colon-terminated parts '
                           'UPID:node:pid:pstart:starttime:type:id:user: (found %d)' % (upid, len(fields) + 1))
    node, pid, pstart, starttime, task_type, task_id, user = fields[1:8]
    for name, value in (('pid', pid), ('pstart', pstart), ('starttime', starttime)):
        if not _HEX_RE.match(value):
            raise ProxmoxError('Invalid task id %r: %s %r is not hexadecimal' % (upid, name, value))
    if not node or not task_type or not user:
        raise ProxmoxError('Invalid task id %r: node, type and user must not be empty' % (upid,))
    return Upid(node, int(pid, 16), int(pstart, 16), int(starttime, 16), task_type, task_id, user, upid)


def is_upid(value):
    return isinstance(value, str) and value.startswith('UPID:')


def to_pve_params(params):
    """Drop None values and send booleans as 1/0 (Proxmox rejects True/False)."""
    result = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = 1 if value else 0
        result[key] = value
    return result


def pve_bool(value):
    """Read a Proxmox boolean (1/0, '1'/'0', None) as a Python bool."""
    if isinstance(value, str):
        return value.strip().lower() in ('1', 'true', 'yes', 'on')
    return bool(value)


def pve_int(value):
    """Read a Proxmox integer (``2``, ``'2'``); None when it is missing or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_property_string(text, default_key=None):
    """Parse ``key=value,key=value`` (first item may be a bare value for default_key) into an ordered dict."""
    result = collections.OrderedDict()
    if not text:
        return result
    for index, item in enumerate(text.split(',')):
        if not item:
            continue
        if '=' in item:
            key, value = item.split('=', 1)
            result[key.strip()] = value
        elif index == 0 and default_key:
            result[default_key] = item
        else:
            raise ProxmoxError('Cannot parse property string %r: item %r has no "="' % (text, item))
    return result


def format_property_string(props, default_key=None):
    """Inverse of parse_property_string(); the default key's value goes first, bare."""
    items = []
    if default_key and props.get(default_key) is not None:
        items.append(to_text(props[default_key]))
    for key, value in props.items():
        if key == default_key or value is None:
            continue
        if isinstance(value, bool):
            value = 1 if value else 0
        items.append('%s=%s' % (key, value))
    return ','.join(items)


def parse_size(text):
    """Parse a Proxmox size (``8G``, ``512M``, ``1.5T``, bare bytes) into bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE_RE.match(to_text(text or ''))
    if not match:
        raise ProxmoxError('Cannot parse size %r: expected a number with an optional K, M, G or T unit' % (text,))
    return int(float(match.group('num')) * _SIZE_FACTORS[match.group('unit').upper()])


def format_size(num_bytes):
    """Bytes to the largest unit that represents them exactly (``30G``, ``512M``)."""
    for unit in ('T', 'G', 'M', 'K'):
        factor = _SIZE_FACTORS[unit]
        if num_bytes and num_bytes % factor == 0:
            return '%d%s' % (num_bytes // factor, unit)
    return '%d' % num_bytes


def root_disk_size(conf):
    """The root disk's size from a container config: ``('30G', 32212254720)``, or ``(None, None)`` when its
    ``rootfs`` is missing, has no ``size=`` or a size that does not parse (a config edited by hand)."""
    try:
        text = parse_property_string((conf or {}).get('rootfs'), 'volume').get('size')
        if not text:
            return None, None
        return to_text(text), parse_size(text)
    except ProxmoxError:
        return None, None


def parse_tags(value):
    """Tags from a ``;``- (or ``,``/space-) separated string or a list, lower-cased, sorted, unique."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set)):
        items = value
    else:
        items = re.split(r'[;, ]', to_text(value))
    return sorted(set(to_text(t).strip().lower() for t in items if t and to_text(t).strip()))


def format_tags(tags):
    return ';'.join(parse_tags(tags))


def invalid_tags(tags):
    """The tags that Proxmox VE would reject."""
    return [t for t in parse_tags(tags) if not _TAG_RE.match(t)]


def normalize_description(description):
    # Proxmox VE stores the description as comment lines and returns it with a trailing newline.
    return '\n'.join(line.rstrip() for line in (description or '').strip().splitlines())


def _addresses_of(interface):
    """Every address an interfaces entry carries, in the kernel's order where the answer has it.

    PVE 8.4 (pve-container 5.2.6, src/PVE/LXC.pm ``get_interfaces``) lists every address of the
    interface in ``ip-addresses``, in the order of ``ip a``: the configured or leased IPv4 address
    before any alias added later. Its ``inet``/``inet6`` keys, the only ones of older PVE 8, hold
    the *last* address of their family (each address overwrites the key), so they are read only
    when there is no ``ip-addresses``.
    """
    listed = interface.get('ip-addresses')
    if isinstance(listed, list):
        return [entry['ip-address'] for entry in listed if isinstance(entry, dict) and entry.get('ip-address')]
    found = []
    for key in ('inet', 'ip', 'ipv4', 'inet6'):
        value = interface.get(key)
        if isinstance(value, str):
            found.extend(value.split())
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str))
    return found


def global_ipv4(address):
    """Return the IPv4 address (no prefix) if it is global unicast (private ranges included), else None."""
    try:
        ip = ipaddress.ip_interface(to_text(address).strip()).ip
    except ValueError:
        return None
    if ip.version != 4:
        return None
    if (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved
            or ip == ipaddress.IPv4Address('255.255.255.255')):
        return None
    return str(ip)


def first_global_ipv4(interfaces):
    """The first global-unicast IPv4 in a ``GET .../interfaces`` answer (None while there is none):
    the lease or configured address, not an alias added after it (see ``_addresses_of``)."""
    for interface in interfaces or []:
        if not isinstance(interface, dict) or interface.get('name') == 'lo':
            continue
        for address in _addresses_of(interface):
            ip = global_ipv4(address)
            if ip:
                return ip
    return None


def describe_interfaces(interfaces):
    if not interfaces:
        return 'none reported'
    parts = []
    for interface in interfaces:
        if isinstance(interface, dict):
            parts.append('%s %s' % (interface.get('name', '?'), ' '.join(_addresses_of(interface)) or '(no address)'))
    return ', '.join(parts)
