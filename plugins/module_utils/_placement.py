# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: where a new pod goes, from one read of ``/cluster/resources``.

Pure functions (no API calls), shared by ``pod_placement`` (the decision, read-only) and
``pod_container`` (the check after its clone, for two orders racing for the last space).

The model, per node that is ``online``:
- memory: limit = the node's ``maxmem`` x ``memory_overcommit``; committed = the configured memory
  (``maxmem``) of every guest on the node, stopped ones too (they will start), templates not;
- disk: the pods' storage on that node (``storage/<node>/<storage>``): limit = its size (``maxdisk``)
  x ``disk_overcommit``; committed = the root disks (``maxdisk``) of the guests on the node, or of
  every guest of the cluster when that storage is shared (they may all live on it);
- free = limit - committed; the node qualifies when both free figures hold the plan.
Offline and unknown nodes never qualify; a node without the storage neither. Without a pods' storage
(``None``: clones stay on the template's) the disk is not weighed.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

MIB = 1024 * 1024
GIB = 1024 * MIB
POLICIES = ('most_free', 'pinned')


def policy_spec():
    """The placement policy's options, as pod_placement takes them and pod_container's ``placement`` dict
    (a new dict each call: AnsibleModule fills specs in)."""
    return dict(
        policy=dict(type='str', default='most_free', choices=list(POLICIES)),
        node_name=dict(type='str'),
        group=dict(type='list', elements='str', default=[]),
        memory_overcommit=dict(type='float', default=1.0),
        disk_overcommit=dict(type='float', default=1.0),
    )


# A guest with this lock is still being cloned (or created): its own run checks its place once it is done.
IN_PROGRESS_LOCK = 'create'


class PlacementError(Exception):
    """No node can take the pod: the message says what is short, and where there was the most room."""


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _is_template(guest):
    return str(guest.get('template', 0)) in ('1', 'True', 'true')


def guests(resources):
    """The guests that take memory and disk: VMs and containers, not templates."""
    return [r for r in resources if r.get('type') in ('lxc', 'qemu') and not _is_template(r)]


def find_container(resources, hostname):
    """The containers (not templates) named ``hostname`` (case-insensitive)."""
    name = hostname.lower()
    return [g for g in guests(resources) if g.get('type') == 'lxc' and (g.get('name') or '').lower() == name]


def node_figures(resources, storage, memory_overcommit=1.0, disk_overcommit=1.0, ignore=None):
    """Every node's figures (see the module docstring), sorted by name.

    ``ignore`` (a predicate on a guest) leaves guests out of the committed sums: the check after a
    clone leaves out the other clones still in progress.
    """
    counted = [g for g in guests(resources) if not (ignore and ignore(g))]
    stores = dict((r.get('node'), r) for r in resources if r.get('type') == 'storage' and r.get('storage') == storage)
    figures = []
    for entry in sorted((r for r in resources if r.get('type') == 'node'), key=lambda r: r.get('node') or ''):
        name = entry.get('node')
        on_node = [g for g in counted if g.get('node') == name]
        memory_limit = int(_number(entry.get('maxmem')) * memory_overcommit // MIB)
        memory_committed = int(sum(_number(g.get('maxmem')) for g in on_node) // MIB)
        store = stores.get(name)
        fig = dict(node=name, status=entry.get('status') or 'unknown', guests=len(on_node),
                   memory_limit_mb=memory_limit, memory_committed_mb=memory_committed,
                   memory_free_mb=memory_limit - memory_committed,
                   storage=storage, disk_limit_gb=None, disk_committed_gb=None, disk_free_gb=None)
        if store is not None and store.get('maxdisk') is not None:
            shared = str(store.get('shared', 0)) in ('1', 'True', 'true')
            disks = counted if shared else on_node
            fig['disk_limit_gb'] = round(_number(store.get('maxdisk')) * disk_overcommit / GIB, 1)
            fig['disk_committed_gb'] = round(sum(_number(g.get('maxdisk')) for g in disks) / GIB, 1)
            fig['disk_free_gb'] = round(fig['disk_limit_gb'] - fig['disk_committed_gb'], 1)
        figures.append(fig)
    return figures


def why_not(fig, memory_mb, disk_gb):
    """Why a node cannot take the plan ('' when it can)."""
    if fig['status'] != 'online':
        return 'node %s is %s' % (fig['node'], fig['status'])
    if fig['disk_free_gb'] is None and fig['storage']:
        return 'node %s has no storage %s (or it reports no size)' % (fig['node'], fig['storage'])
    short = []
    if fig['memory_free_mb'] < memory_mb:
        short.append('%s of memory' % mib_text(memory_mb))
    if fig['disk_free_gb'] is not None and fig['disk_free_gb'] < disk_gb:
        short.append('%s GiB of disk on %s' % (_gib_text(disk_gb), fig['storage']))
    if short:
        return 'node %s has less than %s free (%s)' % (fig['node'], ' and '.join(short), free_text(fig))
    return ''


def mib_text(mib):
    """1024 -> '1 GiB', 1536 -> '1.5 GiB', 512 -> '512 MiB'."""
    if abs(mib) >= 1024:
        return '%s GiB' % _gib_text(mib / 1024.0)
    return '%d MiB' % mib


def _gib_text(gib):
    return ('%.1f' % gib).rstrip('0').rstrip('.')


def free_text(fig):
    disk = 'no' if fig['disk_free_gb'] is None else '%s GiB of' % _gib_text(max(fig['disk_free_gb'], 0))
    return '%s: %s of memory and %s disk free' % (fig['node'], mib_text(max(fig['memory_free_mb'], 0)), disk)


def _rank(fig):
    """most_free: the most free memory, then the most free disk, then the name."""
    return (-fig['memory_free_mb'], -(fig['disk_free_gb'] or 0), fig['node'])


def choose(figures, memory_mb, disk_gb, policy='most_free', pinned=None, group=None):
    """The node for a new pod and why: ``(node, reason)``; PlacementError when none can take it.

    ``pinned``: that node or a failure (never silently another); ``group``: the candidates (a plan's
    node group), else every node.
    """
    if policy not in POLICIES:
        raise PlacementError('unknown placement policy %r (one of %s)' % (policy, ', '.join(POLICIES)))
    known = dict((f['node'], f) for f in figures)
    if policy == 'pinned':
        if not pinned:
            raise PlacementError('placement policy pinned needs a node (cloudpods_placement_node)')
        if pinned not in known:
            raise PlacementError('node %s (pinned) is not a node of the cluster (nodes: %s)'
                                 % (pinned, ', '.join(sorted(known)) or 'none'))
        reason = why_not(known[pinned], memory_mb, disk_gb)
        if reason:
            raise PlacementError('pinned %s' % reason)
        return pinned, 'node %s is pinned and has room (%s)' % (pinned, free_text(known[pinned]))
    candidates = figures
    where = 'node'
    if group:
        unknown = [n for n in group if n not in known]
        if unknown:
            raise PlacementError('the node group names %s, not a node of the cluster (nodes: %s)'
                                 % (', '.join(unknown), ', '.join(sorted(known))))
        candidates = [known[n] for n in group]
        where = 'node of the group %s' % ', '.join(group)
    fit = sorted((f for f in candidates if not why_not(f, memory_mb, disk_gb)), key=_rank)
    if fit:
        return fit[0]['node'], 'most free memory (%s)' % free_text(fit[0])
    raise PlacementError(no_room_message(candidates, memory_mb, disk_gb, where))


def no_room_message(candidates, memory_mb, disk_gb, where='node'):
    """'no node has 2 GiB of memory free (the most: pve2: ...)', naming what is short."""
    online = [f for f in candidates if f['status'] == 'online' and (f['disk_free_gb'] is not None or not f['storage'])]
    if not online:
        return 'no %s can take a pod: %s' % (where, '; '.join(why_not(f, memory_mb, disk_gb) for f in candidates)
                                             or 'the cluster lists no nodes')
    best = sorted(online, key=_rank)[0]
    memory_short = all(f['memory_free_mb'] < memory_mb for f in online)
    disk_short = all(f['disk_free_gb'] is not None and f['disk_free_gb'] < disk_gb for f in online)
    if memory_short and not disk_short:
        short = '%s of memory' % mib_text(memory_mb)
    elif disk_short and not memory_short:
        short = '%s GiB of disk' % _gib_text(disk_gb)
        best = sorted(online, key=lambda f: (-(f['disk_free_gb'] or 0), f['node']))[0]
    else:
        short = '%s of memory and %s GiB of disk' % (mib_text(memory_mb), _gib_text(disk_gb))
    return 'no %s has %s free (the most: %s)' % (where, short, free_text(best))


def keeps_place(resources, node, vmid, storage, size, memory_overcommit=1.0, disk_overcommit=1.0):
    """After the clone of ``vmid`` on ``node``: ``(keeps, figures of the node)``.

    ``size`` is ``(memory_mb, disk_gb)`` of the plan: the clone counts with them even before its
    configuration and resize reach ``/cluster/resources``.

    Counts every guest on the node except other clones still in progress (lock ``create``): each of
    those checks its own place once its clone is done, and then counts this one. So of two orders
    racing for the last space the one that checks later sees the other and gives way; both never keep
    a place over the limit (see README "Placement across a cluster" for why, and the limits).
    """
    def in_progress(guest):
        return guest.get('lock') == IN_PROGRESS_LOCK and str(guest.get('vmid')) != str(vmid)

    resources = [_sized(r, size) if r.get('type') == 'lxc' and str(r.get('vmid')) == str(vmid) else r
                 for r in resources]
    for fig in node_figures(resources, storage, memory_overcommit, disk_overcommit, ignore=in_progress):
        if fig['node'] == node:
            keeps = fig['memory_free_mb'] >= 0 and (fig['disk_free_gb'] is None or fig['disk_free_gb'] >= 0)
            return keeps, fig
    return False, None


def _sized(guest, size):
    memory_mb, disk_gb = size
    return dict(guest, maxmem=max(_number(guest.get('maxmem')), memory_mb * MIB),
                maxdisk=max(_number(guest.get('maxdisk')), disk_gb * GIB))
