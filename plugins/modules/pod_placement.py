#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_placement
short_description: Choose the Proxmox VE node for a new Cloud Pod
version_added: 0.1.0
description:
  - Reads C(/cluster/resources) once and says which node of the cluster a new pod of O(memory_mb) and O(disk_gb)
    goes to, why, and every node's figures. Nothing is changed.
  - The model, per node that is C(online) - memory limit = the node's C(maxmem) x O(memory_overcommit); committed =
    the configured memory of every guest on the node (stopped ones too, they will start; templates not). Disk - the
    pods' storage O(storage) on that node, its size x O(disk_overcommit), against the root disks of the guests on the
    node (of every guest of the cluster when that storage is shared). Free = limit - committed; a node qualifies when
    both free figures hold the plan. Offline and unknown nodes, and nodes without O(storage), never qualify.
  - O(policy=most_free) takes the node with the most free memory, then the most free disk, then the first by name,
    among every node or the nodes of O(group). O(policy=pinned) takes O(node_name) or nothing, never another node.
  - When a container named O(hostname) exists, the pod stays where it is - RV(node) is its node and RV(exists) is
    true; nothing is weighed.
  - No node with room is not a failure of the module - RV(node) is null and RV(reason) says what is short and where
    there was the most room (C(no node has 2 GiB of memory free) and that node's free figures); the playbook
    decides. Wrong options and API errors fail.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  hostname:
    description:
      - Host name of the pod. When a container of that name exists, its node is returned and nothing is weighed.
    type: str
  memory_mb:
    description: Memory of the pod's plan, in MiB.
    type: int
    required: true
  disk_gb:
    description: Root disk of the pod's plan, in GiB.
    type: int
    required: true
  policy:
    description:
      - V(most_free) - the node with the most free memory (then disk, then name), among O(group) when given.
      - V(pinned) - O(node_name) only; fails (RV(node) null) when it is offline, full or not in the cluster.
    type: str
    choices: [most_free, pinned]
    default: most_free
  node_name:
    description: The node of O(policy=pinned).
    type: str
  group:
    description: The nodes a pod may go to (a plan's node group); every node when empty.
    type: list
    elements: str
    default: []
  memory_overcommit:
    description: A node's memory limit as a multiple of its memory (V(1.0) none, V(1.5) half as much again).
    type: float
    default: 1.0
  disk_overcommit:
    description: The pods' storage's limit as a multiple of its size.
    type: float
    default: 1.0
  storage:
    description:
      - The storage of the pods' root disks, as in M(mpanel.cloudpods.pod_container).
      - Uses the E(PROXMOX_CLOUDPOD_STORAGE) environment variable if not specified. Unset - the disk is not weighed
        (the clones stay on the template's storage).
    type: str
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
  - mpanel.cloudpods.attributes.info_module
notes:
  - Two orders placed at the same time may both be told the same last space; M(mpanel.cloudpods.pod_container) with
    O(mpanel.cloudpods.pod_container#module:placement) checks the place again after its clone and gives way to the
    other order.
seealso:
  - module: mpanel.cloudpods.pod_container
"""

EXAMPLES = r"""
- name: Choose a node for a Starter pod
  mpanel.cloudpods.pod_placement:
    hostname: shop-example-com
    memory_mb: 1024
    disk_gb: 30
    memory_overcommit: 1.5
  register: placement

- name: Stop when no node has room
  ansible.builtin.fail:
    msg: "{{ placement.reason }}"
  when: placement.node is none

- name: Student pods only on two nodes
  mpanel.cloudpods.pod_placement:
    memory_mb: 1024
    disk_gb: 2
    group: [pve2, pve3]
"""

RETURN = r"""
node:
  description: The node chosen (or the node of the existing pod); null when no node can take the pod.
  returned: always
  type: str
  sample: pve2
reason:
  description: Why that node, or what is short when none.
  returned: always
  type: str
  sample: "most free memory (pve2: 61 GiB of memory and 90 GiB of disk free)"
exists:
  description: Whether a container named O(hostname) exists (RV(node) is then its node).
  returned: always
  type: bool
  sample: false
nodes:
  description: Every node's figures, by name.
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: Node name.
      type: str
    status:
      description: C(online), C(offline) or C(unknown).
      type: str
    guests:
      description: Guests counted on the node.
      type: int
    memory_limit_mb:
      description: The node's memory x O(memory_overcommit), MiB.
      type: int
    memory_committed_mb:
      description: Configured memory of the guests on the node, MiB.
      type: int
    memory_free_mb:
      description: Limit - committed (negative when over the limit), MiB.
      type: int
    storage:
      description: O(storage).
      type: str
    disk_limit_gb:
      description: Size of O(storage) on the node x O(disk_overcommit), GiB; null without the storage.
      type: float
    disk_committed_gb:
      description: Root disks counted against it, GiB.
      type: float
    disk_free_gb:
      description: Limit - committed, GiB.
      type: float
    fits:
      description: Whether the node can take the pod.
      type: bool
    why_not:
      description: Why it cannot (empty when it can).
      type: str
  sample:
    - {node: pve, status: online, guests: 3, memory_limit_mb: 65536, memory_committed_mb: 3072,
       memory_free_mb: 62464, storage: local-lvm, disk_limit_gb: 100.0, disk_committed_gb: 32.0,
       disk_free_gb: 68.0, fits: true, why_not: ''}
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.mpanel.cloudpods.plugins.module_utils._placement import (
    PlacementError,
    choose,
    find_container,
    node_figures,
    policy_spec,
    why_not,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        hostname=dict(type='str'),
        memory_mb=dict(type='int', required=True),
        disk_gb=dict(type='int', required=True),
        storage=dict(type='str', fallback=(env_fallback, ['PROXMOX_CLOUDPOD_STORAGE'])),
    )
    spec.update(policy_spec())
    return spec


class PodPlacement(ProxmoxModule):

    def validate(self):
        p = self.module.params
        if p['memory_mb'] <= 0 or p['disk_gb'] <= 0:
            raise ProxmoxError('memory_mb and disk_gb must be positive; got %s and %s' % (p['memory_mb'], p['disk_gb']))
        for name in ('memory_overcommit', 'disk_overcommit'):
            if not 0 < p[name] <= 20:
                raise ProxmoxError('%s must be more than 0 and at most 20; got %s' % (name, p[name]))
        if p['policy'] == 'pinned' and not p['node_name']:
            raise ProxmoxError('policy pinned needs node_name')

    def run(self):
        self.validate()
        p = self.module.params
        resources = self.client.get('cluster/resources') or []  # the one read: nodes, storages and guests
        figures = node_figures(resources, p['storage'], p['memory_overcommit'], p['disk_overcommit'])
        for fig in figures:
            fig['why_not'] = why_not(fig, p['memory_mb'], p['disk_gb'])
            fig['fits'] = not fig['why_not']
        result = dict(changed=False, exists=False, nodes=figures)
        existing = find_container(resources, p['hostname']) if p['hostname'] else []
        if existing:
            result.update(exists=True, node=existing[0].get('node'),
                          reason='CT %s (%s) exists on node %s: it stays there'
                          % (existing[0].get('vmid'), p['hostname'], existing[0].get('node')))
            return result
        try:
            node, reason = choose(figures, p['memory_mb'], p['disk_gb'], p['policy'], p['node_name'], p['group'])
        except PlacementError as exc:
            node, reason = None, str(exc)
        result.update(node=node, reason=reason)
        return result


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PodPlacement(module).execute()


if __name__ == '__main__':
    main()
