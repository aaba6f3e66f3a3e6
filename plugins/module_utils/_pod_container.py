# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: what pod_container changes on a container, worked out without the API.

``check_options()`` checks the module options; ``WantedPod`` holds what they ask for and compares it
with a container's current config and run state, giving the ``Changes`` to make (config keys, a disk
grow, a power action) or failing, before anything is changed, on what cannot be done (a disk shrink).
``config_view()`` is what diffs show. Pure: no connection, no clock. (The "plan" here is only ever the
pod's hosting plan, CLOUD_POD_STARTER and so on.)
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import re

from ansible_collections.mpanel.cloudpods.plugins.module_utils import names, pod_record
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import (
    GIB,
    format_property_string,
    format_size,
    format_tags,
    invalid_tags,
    normalize_description,
    parse_property_string,
    parse_size,
    parse_tags,
    pve_bool,
    pve_int,
)

_POD_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$')


# A unicast MAC address, as PVE's pve-configid 'mac-addr' format wants it (the I/G bit of the first octet clear).
_HWADDR_RE = re.compile(r'[0-9A-Fa-f][02468ACEace](:[0-9A-Fa-f]{2}){5}')


def check_options(params):
    """Fail (ProxmoxError) on the first module option that is not acceptable."""
    p = params
    # Host names are matched case-insensitively (find() compares them in lower case), so any case passes.
    if not names.is_hostname(p['hostname'].strip().lower()):
        raise ProxmoxError('hostname %r is not a valid DNS host name (letters, digits and "-", labels of at most '
                           '63 characters separated by ".")' % p['hostname'].strip())
    if p['pod_id'] is not None and not _POD_ID_RE.fullmatch(p['pod_id']):
        raise ProxmoxError('pod_id %r must be one word of letters, digits and "_ . : @ + -"' % p['pod_id'])
    if p['vmid'] is not None and not 100 <= p['vmid'] <= 999999999:
        raise ProxmoxError('vmid must be between 100 and 999999999; got %s' % p['vmid'])
    bad_copies = [str(vmid) for vmid in p.get('template_copies') or [] if not 100 <= vmid <= 999999999]
    if bad_copies:
        raise ProxmoxError('template_copies must be VMIDs between 100 and 999999999; got %s' % ', '.join(bad_copies))
    for name in ('cores', 'memory', 'disk', 'timeout', 'ip_timeout'):
        if p[name] is not None and p[name] <= 0:
            raise ProxmoxError('%s must be a positive number; got %s' % (name, p[name]))
    if p.get('hwaddr') is not None and not _HWADDR_RE.fullmatch(p['hwaddr']):
        raise ProxmoxError('hwaddr %r must be a unicast MAC address, six pairs of hex digits separated by ":" with '
                           'the lowest bit of the first pair 0, e.g. BC:24:11:2A:3B:4C' % p['hwaddr'])
    if p.get('net_rate') is not None and not 0 <= p['net_rate'] <= 10240:
        raise ProxmoxError('net_rate must be 0 (no limit) or a rate in MB/s up to 10240; got %s' % p['net_rate'])
    if p['swap'] is not None and p['swap'] < 0:
        raise ProxmoxError('swap must be 0 or more MiB; got %s' % p['swap'])
    if p['plan'] is not None and not pod_record.is_plan_code(p['plan']):
        raise ProxmoxError('plan %r must be a plan code: CLOUD_POD_ followed by letters, digits and "_"'
                           % p['plan'])
    if p['domain'] and not names.is_domain(p['domain']):
        raise ProxmoxError('domain %r must be empty or a DNS name (lower case letters, digits and "-", at least two '
                           'labels separated by ".", the last alphabetic; an IDN in its xn-- form)' % p['domain'])
    if p['tags'] is not None:
        bad = invalid_tags(p['tags'])
        if bad:
            raise ProxmoxError('invalid tags %s: a tag is lower case letters, digits and "_ - + ." and does not '
                               'start with "-", "+" or "."' % ', '.join(bad))
        other_plans = [t for t in parse_tags(p['tags']) if pod_record.is_plan_tag(t)
                       and p['plan'] is not None and t != pod_record.plan_tag(p['plan'])]
        if other_plans:
            raise ProxmoxError('tags %s name another plan than plan %s' % (', '.join(other_plans), p['plan']))
    if not p['bridge']:
        raise ProxmoxError('bridge must not be empty (PROXMOX_CLOUDPOD_BRIDGE)')


def _rate(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def format_rate(rate):
    """A net rate in MB/s as PVE's property string carries it: 1 and 2.5, not 1.0."""
    return ('%.3f' % rate).rstrip('0').rstrip('.')


def config_view(conf, status=None):
    """The settings this module manages, normalised for comparison and diffs."""
    if not conf:
        return {}
    rootfs = parse_property_string(conf.get('rootfs'), 'volume')
    view = {
        'hostname': conf.get('hostname'),
        'cores': pve_int(conf.get('cores')),
        'memory': pve_int(conf.get('memory')),
        'swap': pve_int(conf.get('swap')),
        'onboot': pve_bool(conf.get('onboot')),
        'net0': conf.get('net0'),
        'disk': rootfs.get('size'),
        'description': normalize_description(conf.get('description')),
        'tags': format_tags(conf.get('tags')),
    }
    if status is not None:
        view['status'] = status
    return view


class Changes(object):
    """What must change on one container: ``config`` keys to set, a disk grow (``resize``), a ``power`` action."""

    def __init__(self, config=None, resize=None, power=None):
        self.config = config or {}
        self.resize = resize
        self.power = power

    def __bool__(self):
        return bool(self.config or self.resize or self.power)

    __nonzero__ = __bool__

    def predict(self, conf, status):
        """Config and status after the changes are made (for check mode and diffs)."""
        conf = copy.deepcopy(conf)
        for key, value in self.config.items():
            conf[key] = (1 if value else 0) if isinstance(value, bool) else value
        if self.resize:
            rootfs = parse_property_string(conf.get('rootfs'), 'volume')
            rootfs['size'] = self.resize
            conf['rootfs'] = format_property_string(rootfs, 'volume')
        if self.power in ('start', 'reboot'):
            status = 'running'
        elif self.power in ('shutdown', 'stop'):
            status = 'stopped'
        return conf, status


class WantedPod(object):
    """What the options of pod_container ask of the pod's container (an option None: leave it as it is).

    ``params`` are the module parameters, ``pod_id`` the pod the container belongs to.
    """

    def __init__(self, params, pod_id):
        self.params = params
        self.hostname = params['hostname'].strip()
        self.state = params['state']
        self.pod_id = pod_id

    @property
    def plan_code(self):
        """The hosting plan (CLOUD_POD_STARTER), or None to keep the recorded one."""
        return self.params['plan'].upper() if self.params['plan'] is not None else None

    def changes(self, ct, conf, status):
        """Compare the container with the options; fail (changing nothing) on a disk shrink."""
        p = self.params
        config = {}
        for key in ('cores', 'memory', 'swap'):
            if p[key] is not None and pve_int(conf.get(key)) != p[key]:
                config[key] = p[key]
        if p['onboot'] is not None and pve_bool(conf.get('onboot')) != p['onboot']:
            config['onboot'] = p['onboot']
        net0 = self.net0(conf.get('net0'))
        if net0 is not None:
            config['net0'] = net0
        description = self.description(conf.get('description'))
        if normalize_description(description) != normalize_description(conf.get('description')):
            config['description'] = description
        tags = parse_tags(p['tags'] if p['tags'] is not None else conf.get('tags'))
        tags = pod_record.tags_with_plan(tags, self.plan_code)
        if tags != parse_tags(conf.get('tags')):
            config['tags'] = format_tags(tags)
        return Changes(config, self.disk_growth(ct, conf), self.power_action(status))

    def net0(self, current):
        """The net0 to set (bridge, DHCP, firewall; MAC and other keys kept), or None when it is right."""
        props = parse_property_string(current)
        wanted = parse_property_string(current)
        wanted.setdefault('name', 'eth0')
        wanted['bridge'] = self.params['bridge']
        wanted['firewall'] = '1'
        wanted['ip'] = 'dhcp'
        wanted.setdefault('type', 'veth')
        if self.params.get('hwaddr') is not None:
            wanted['hwaddr'] = self.params['hwaddr'].upper()
        rate = self.params.get('net_rate')
        if rate is not None and rate <= 0:
            wanted.pop('rate', None)
        elif rate is not None and _rate(props.get('rate')) != rate:
            wanted['rate'] = format_rate(rate)  # a rate already equal ("1.0" for 1) is kept as it is written
        if props == wanted:
            return None
        return format_property_string(wanted)

    def description(self, current):
        """The description with the pod record written into it, around the free text.

        The free text is the description option, else the container's own (hand edits included);
        record values not given as options stay as the container has them.
        """
        p = self.params
        record = dict(pod=self.pod_id, plan=self.plan_code, domain=p['domain'])
        text = current
        if p['description'] is not None:
            text = p['description']
            for source in (pod_record.parse_description(text), pod_record.parse_description(current)):
                for field, value in source.items():
                    if record[field] is None:
                        record[field] = value
        try:
            return pod_record.compose(text, **record)
        except ValueError as exc:
            # Options are checked up front: this value was read from the container (edited by hand).
            raise ProxmoxError('CT of %s: %s; pass it as an option to correct it' % (self.hostname, exc))

    def disk_growth(self, ct, conf):
        """The new root disk size (``30G``) when it must grow, else None; a shrink fails."""
        disk = self.params['disk']
        if disk is None:
            return None
        rootfs = parse_property_string(conf.get('rootfs'), 'volume')
        if not rootfs.get('size'):
            raise ProxmoxError('Cannot tell the root disk size of %s: its rootfs (%r) has no size'
                               % (self._label(ct), conf.get('rootfs')))
        current = parse_size(rootfs['size'])
        wanted = disk * GIB
        if wanted < current:
            raise ProxmoxError(
                'Refusing to shrink the root disk of %s from %s to %sG: Proxmox VE can only grow disks. Nothing was '
                'changed; use disk: %s or more' % (self._label(ct), rootfs['size'], disk, -(-current // GIB)))
        if wanted > current:
            return format_size(wanted)
        return None

    def power_action(self, status):
        """start, shutdown or reboot to reach the wanted run state from ``status``; None for none."""
        running = status == 'running'
        if self.state == 'started' and not running:
            return 'start'
        if self.state == 'stopped' and running:
            return 'shutdown'
        if self.state == 'restarted':
            return 'reboot' if running else 'start'
        return None

    def clone_config(self, template_conf):
        """The config a clone of the template gets (before the changes made after it)."""
        conf = dict((k, v) for k, v in template_conf.items() if k not in ('template', 'digest', 'lock'))
        conf['hostname'] = self.hostname
        conf['description'] = self.description(None)
        if conf.get('net0'):
            net0 = parse_property_string(conf['net0'])
            net0.pop('hwaddr', None)  # a clone gets a new MAC address (the hwaddr option sets it right after)
            conf['net0'] = format_property_string(net0)
        if self.params['full'] and self.params['storage'] and conf.get('rootfs'):
            rootfs = parse_property_string(conf['rootfs'], 'volume')
            rootfs['volume'] = '%s:(new volume)' % self.params['storage']
            conf['rootfs'] = format_property_string(rootfs, 'volume')
        return conf

    def _label(self, ct):
        if ct.get('vmid') is None:
            return 'the new container (template CT %s)' % self.params['template']
        return 'CT %s' % ct['vmid']
