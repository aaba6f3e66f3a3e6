# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The placement model (module_utils/_placement.py): node figures from /cluster/resources, the policies,
the failure texts, and the check after a clone of two orders racing for the last space."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils._placement import (
    GIB,
    MIB,
    PlacementError,
    choose,
    keeps_place,
    mib_text,
    node_figures,
    why_not,
)


def node(name, mem_gib=8, status='online'):
    return dict(id='node/' + name, type='node', node=name, status=status, maxmem=mem_gib * GIB)


def storage(name, size_gib=100, shared=0, sid='local-lvm'):
    return dict(id='storage/%s/%s' % (name, sid), type='storage', node=name, storage=sid, shared=shared,
                maxdisk=size_gib * GIB)


def ct(vmid, name, mem_mib=1024, disk_gib=10, template=0, lock=None, kind='lxc'):
    guest = dict(id='%s/%d' % (kind, vmid), type=kind, vmid=vmid, node=name, name='pod-%d' % vmid,
                 maxmem=mem_mib * MIB, maxdisk=disk_gib * GIB, template=template, status='stopped')
    if lock:
        guest['lock'] = lock
    return guest


def cluster(*extra):
    return [node('pve'), node('pve2'), node('pve3'), storage('pve'), storage('pve2'), storage('pve3')] + list(extra)


def by_node(figures):
    return dict((f['node'], f) for f in figures)


def test_committed_memory_counts_every_guest_stopped_ones_too_and_no_template():
    resources = cluster(ct(101, 'pve', 2048), ct(102, 'pve', 1024), ct(9000, 'pve', 512, template=1),
                        ct(200, 'pve2', 4096, kind='qemu'))
    figures = by_node(node_figures(resources, 'local-lvm', memory_overcommit=1.5))
    assert figures['pve']['memory_limit_mb'] == 12288  # 8 GiB x 1.5
    assert figures['pve']['memory_committed_mb'] == 3072  # the template is not counted
    assert figures['pve']['memory_free_mb'] == 9216
    assert figures['pve2']['memory_committed_mb'] == 4096
    assert figures['pve3']['memory_committed_mb'] == 0
    assert figures['pve']['disk_committed_gb'] == 20.0
    assert figures['pve']['disk_free_gb'] == 80.0


def test_a_shared_pods_storage_counts_every_guest_of_the_cluster():
    resources = [node('pve'), node('pve2'), storage('pve', 50, 1, 'nfs'), storage('pve2', 50, 1, 'nfs'),
                 ct(101, 'pve', disk_gib=10), ct(102, 'pve2', disk_gib=15)]
    figures = by_node(node_figures(resources, 'nfs', disk_overcommit=2.0))
    assert figures['pve']['disk_limit_gb'] == 100.0
    assert figures['pve']['disk_committed_gb'] == figures['pve2']['disk_committed_gb'] == 25.0


def test_most_free_takes_the_most_free_memory_then_disk_then_name():
    resources = cluster(ct(101, 'pve', 2048), ct(102, 'pve2', 1024), ct(103, 'pve3', 1024, disk_gib=30))
    assert choose(node_figures(resources, 'local-lvm'), 1024, 10)[0] == 'pve2'  # pve3 has less disk
    resources = cluster(ct(101, 'pve', 1024), ct(102, 'pve2', 1024), ct(103, 'pve3', 1024))
    assert choose(node_figures(resources, 'local-lvm'), 1024, 10)[0] == 'pve'  # all equal: the name


def test_an_offline_node_never_qualifies_even_with_the_most_room():
    resources = [node('pve'), node('pve2', 64, status='offline'), storage('pve'), storage('pve2'), ct(101, 'pve')]
    node_name, reason = choose(node_figures(resources, 'local-lvm'), 1024, 10)
    assert node_name == 'pve' and 'most free memory' in reason
    with pytest.raises(PlacementError, match='pinned node pve2 is offline'):
        choose(node_figures(resources, 'local-lvm'), 1024, 10, 'pinned', 'pve2')


def test_a_node_without_the_pods_storage_does_not_qualify():
    resources = [node('pve'), node('pve2', 64), storage('pve')]
    assert why_not(by_node(node_figures(resources, 'local-lvm'))['pve2'], 1024, 1) == \
        'node pve2 has no storage local-lvm (or it reports no size)'
    assert choose(node_figures(resources, 'local-lvm'), 1024, 1)[0] == 'pve'


def test_no_room_names_what_is_short_and_the_best_node():
    resources = cluster(*[ct(100 + i, n, 3072) for i, n in enumerate(['pve', 'pve', 'pve2', 'pve2', 'pve3'])])
    with pytest.raises(PlacementError) as raised:
        choose(node_figures(resources, 'local-lvm'), 6144, 10)
    assert str(raised.value) == ('no node has 6 GiB of memory free '
                                 '(the most: pve3: 5 GiB of memory and 90 GiB of disk free)')
    resources = cluster(ct(101, 'pve', disk_gib=95), ct(102, 'pve2', disk_gib=95), ct(103, 'pve3', disk_gib=95))
    with pytest.raises(PlacementError, match=r'^no node has 30 GiB of disk free \(the most: pve: 7 GiB of memory '
                                             r'and 5 GiB of disk free\)$'):
        choose(node_figures(resources, 'local-lvm'), 1024, 30)


def test_pinned_takes_that_node_or_fails_never_another():
    resources = cluster(ct(101, 'pve2', 7168))
    assert choose(node_figures(resources, 'local-lvm'), 1024, 10, 'pinned', 'pve3')[0] == 'pve3'
    with pytest.raises(PlacementError, match='^pinned node pve2 has less than 2 GiB of memory free'):
        choose(node_figures(resources, 'local-lvm'), 2048, 10, 'pinned', 'pve2')
    with pytest.raises(PlacementError, match='node pve9 \\(pinned\\) is not a node of the cluster'):
        choose(node_figures(resources, 'local-lvm'), 1024, 10, 'pinned', 'pve9')


def test_a_group_narrows_the_candidates():
    resources = cluster(ct(101, 'pve2', 4096), ct(102, 'pve3', 2048))
    assert choose(node_figures(resources, 'local-lvm'), 1024, 10, group=['pve2', 'pve3'])[0] == 'pve3'
    with pytest.raises(PlacementError, match='^no node of the group pve2 has 6 GiB of memory free'):
        choose(node_figures(resources, 'local-lvm'), 6144, 10, group=['pve2'])
    with pytest.raises(PlacementError, match='names pve7, not a node'):
        choose(node_figures(resources, 'local-lvm'), 1024, 10, group=['pve7'])


def test_sizes_read_as_people_write_them():
    assert [mib_text(m) for m in (512, 1024, 1536, 2048)] == ['512 MiB', '1 GiB', '1.5 GiB', '2 GiB']


def test_after_a_clone_the_later_of_two_racers_gives_way():
    """Room for one 4 GiB pod on pve: A (vmid 201) was done first, B (202) checks after A."""
    base = cluster(ct(101, 'pve', 4096))
    a_done = ct(201, 'pve', 4096)
    b_fresh = ct(202, 'pve', 512, disk_gib=2)  # B's clone, before its configuration reached the resources
    assert keeps_place(base + [a_done], 'pve', 201, 'local-lvm', (4096, 10))[0]
    keeps, fig = keeps_place(base + [a_done, b_fresh], 'pve', 202, 'local-lvm', (4096, 10))
    assert not keeps and fig['memory_free_mb'] == -4096
    # A checking while B's clone is still in progress (lock create) does not count B: B checks later.
    b_cloning = ct(202, 'pve', 512, disk_gib=2, lock='create')
    assert keeps_place(base + [a_done, b_cloning], 'pve', 201, 'local-lvm', (4096, 10))[0]
    # The last space taken by nobody else: the clone keeps it; its own lock never counts against it.
    assert keeps_place(base + [ct(201, 'pve', 512, lock='create')], 'pve', 201, 'local-lvm', (4096, 10))[0]


def test_the_check_counts_the_plan_size_of_a_clone_not_yet_configured():
    base = cluster(ct(101, 'pve', 6144))
    # The clone still shows the template's 512 MiB; its plan asks 4 GiB, which does not fit in 2 GiB.
    assert not keeps_place(base + [ct(201, 'pve', 512)], 'pve', 201, 'local-lvm', (4096, 10))[0]
