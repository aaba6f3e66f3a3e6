#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_container_info
short_description: List Cloud Pod containers on Proxmox VE
version_added: 0.1.0
description:
  - Lists the pod containers of the cluster with their VMID, node, host name, run state, IPv4 address, tags, pod id
    and pod record (pod id, plan and domain, as M(mpanel.cloudpods.pod_container) wrote them).
  - Filters by O(hostname), O(vmid) and O(tag); all given filters must match. Without any filter, the containers
    tagged C(cloudpod) are listed.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  hostname:
    description:
      - Only the container with this host name (case-insensitive).
    type: str
  vmid:
    description:
      - Only the container with this VMID.
    type: int
  tag:
    description:
      - Only containers carrying this tag.
      - When none of O(hostname), O(vmid) and O(tag) is given, V(cloudpod) is used.
    type: str
  details:
    description:
      - Also return each container's full configuration in C(config).
    type: bool
    default: false
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
  - mpanel.cloudpods.attributes.info_module
seealso:
  - module: mpanel.cloudpods.pod_container
"""

EXAMPLES = r"""
- name: List every pod
  mpanel.cloudpods.pod_container_info:
  register: all_pods

- name: One pod by host name, with its configuration
  mpanel.cloudpods.pod_container_info:
    hostname: shop-example-com
    details: true
  register: one

- name: Pods of the Premium plan
  mpanel.cloudpods.pod_container_info:
    tag: premium
  register: premium

- name: Print VMID and address of each pod
  ansible.builtin.debug:
    msg: "{{ item.hostname }}: CT {{ item.vmid }} {{ item.status }} {{ item.ip }}"
  loop: "{{ all_pods.pods }}"
"""

RETURN = r"""
pods:
  description: The matching containers, sorted by VMID.
  returned: always
  type: list
  elements: dict
  contains:
    vmid:
      description: VMID.
      type: int
      sample: 101
    node:
      description: Node the container lives on.
      type: str
      sample: pve
    hostname:
      description: Host name.
      type: str
      sample: shop-example-com
    status:
      description: Run state (V(running) or V(stopped)).
      type: str
      sample: running
    ip:
      description: First global-unicast IPv4 address; null when stopped or before DHCP answered.
      type: str
      sample: 10.1.10.151
    tags:
      description: Tags.
      type: list
      elements: str
      sample: [cloudpod, starter]
    pod_id:
      description: Pod id from the C(cloudpods-pod) line of the description; null when there is none.
      type: str
      sample: sub-1042
    record:
      description:
        - The pod record of the container, parsed from its tags and description.
        - Values are text as found on the container, which anyone allowed to edit it can change; check them
          before use (the repair playbook checks the domain against C(cloudpods_domain_pattern)).
      type: dict
      contains:
        pod:
          description: Pod id, from the C(cloudpods-pod) line; null when there is none.
          type: str
          sample: sub-1042
        plan:
          description: Plan code, from the plan tag (C(cloud_pod_*), upper-cased), else from the C(cloudpods-plan)
            line; null when there is neither.
          type: str
          sample: CLOUD_POD_STARTER
        domain:
          description: Domain, from the C(cloudpods-domain) line; null when the pod has none.
          type: str
          sample: shop.example.com
    disk:
      description:
        - Size of the root disk as Proxmox VE writes it in C(rootfs) (V(30G)); null when the configuration gives
          none that parses.
        - A plan change compares it with the new plan's disk, since Proxmox VE only grows disks.
      type: str
      sample: 30G
    disk_bytes:
      description: Size of the root disk in bytes; null when RV(pods[].disk) is null.
      type: int
      sample: 32212254720
    lock:
      description: Lock held on the container (for example V(create) while it is being cloned); null when none.
      type: str
      sample: null
    config:
      description: Full configuration of the container.
      returned: when O(details=true)
      type: dict
      sample: {"cores": 1, "memory": 1024, "rootfs": "local-lvm:vm-101-disk-0,size=30G"}
api_retries:
  description: Retries made for transient Proxmox failures, by reason.
  returned: always
  type: dict
  sample: {"locked": 0, "lock_timeout": 0, "vmid_taken": 0, "http_595": 0, "http_596": 0}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils import pod_record
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxApiError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import first_global_ipv4, parse_tags, root_disk_size


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        hostname=dict(type='str'),
        vmid=dict(type='int'),
        tag=dict(type='str'),
        details=dict(type='bool', default=False),
    )
    return spec


class PodContainerInfo(ProxmoxModule):

    def matches(self, ct, hostname, vmid, tag):
        if hostname is not None and (ct.get('name') or '').lower() != hostname.lower():
            return False
        if vmid is not None and int(ct.get('vmid')) != vmid:
            return False
        if tag is not None and tag.lower() not in parse_tags(ct.get('tags')):
            return False
        return True

    def describe(self, ct):
        path = self.client.container_path(ct['node'], ct['vmid'])
        conf = self.client.get(path + '/config') or {}
        ip = None
        if ct.get('status') == 'running':
            try:
                ip = first_global_ipv4(self.client.get(path + '/interfaces'))
            except ProxmoxApiError:
                ip = None  # interfaces needs PVE 8.1+; the rest of the answer is still useful
        tags = parse_tags(conf.get('tags', ct.get('tags')))
        record = pod_record.read(conf.get('description'), tags)
        disk, disk_bytes = root_disk_size(conf)
        pod = dict(vmid=int(ct['vmid']), node=ct.get('node'), hostname=ct.get('name') or conf.get('hostname'),
                   status=ct.get('status'), ip=ip, tags=tags, pod_id=record['pod'], record=record,
                   disk=disk, disk_bytes=disk_bytes, lock=ct.get('lock') or None)
        if self.module.params['details']:
            pod['config'] = conf
        return pod

    def run(self):
        p = self.module.params
        tag = p['tag']
        if p['hostname'] is None and p['vmid'] is None and tag is None:
            tag = pod_record.POD_TAG
        containers = [ct for ct in self.client.containers() if self.matches(ct, p['hostname'], p['vmid'], tag)]
        pods = [self.describe(ct) for ct in sorted(containers, key=lambda c: int(c['vmid']))]
        return dict(changed=False, pods=pods)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PodContainerInfo(module).execute()


if __name__ == '__main__':
    main()
