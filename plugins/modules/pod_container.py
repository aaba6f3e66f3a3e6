#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_container
short_description: Converge one Cloud Pod LXC container on Proxmox VE
version_added: 0.1.0
description:
  - Creates a Cloud Pod container by cloning the pod template, sizes it from the plan (cores, memory,
    swap, root disk), attaches it to the pod bridge with DHCP, and starts, stops, restarts or removes it.
  - The pod is identified by O(hostname) (and O(vmid) when given). The container carries the pod record, written by
    the clone itself, so a run that crashed halfway is finished by the next run instead of cloning twice; the
    C(cloudpod) tag, the plan tag (the lower-case O(plan) code, C(cloud_pod_starter)), and the description lines
    C(cloudpods-plan), C(cloudpods-domain) (only when the pod has a domain) and C(cloudpods-pod) with the plan code,
    the domain and the pod id. The record lines are rewritten in place; text written by hand around them is kept.
  - A container that is still being cloned by an earlier (crashed) run is waited for, not cloned again.
  - VMIDs come from C(cluster/nextid), which reserves nothing; when a concurrent run takes the same VMID the clone is
    repeated with the next free one. Clones refused because the template is locked by another clone are retried with
    backoff.
  - Only the settings given are managed; the network interface C(net0) is always kept on O(bridge) with
    C(ip=dhcp) and the firewall flag, keeping its MAC address.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  hostname:
    description:
      - Host name of the container; the pod's identity.
      - Must be a valid DNS name. Two containers with this host name are an error.
    type: str
    required: true
  vmid:
    description:
      - VMID of the container.
      - When the container exists, its host name must equal O(hostname).
      - When it does not exist, the clone uses this VMID instead of the next free one.
      - Giving it also allows taking over a container that was not created by this module.
    type: int
  pod_id:
    description:
      - Pod identifier recorded in the container description, for example the subscription id.
      - When omitted, an existing container keeps the pod id it has, and a new one gets O(hostname).
      - When given and the container found by O(hostname) belongs to another pod, the module fails.
    type: str
  plan:
    description:
      - Plan code of the pod (C(CLOUD_POD_) followed by letters, digits and C(_), for example V(CLOUD_POD_STARTER)),
        recorded in the C(cloudpods-plan) line of the description and as the plan tag (the code in lower case), which
        replaces any other C(cloud_pod_*) tag.
      - When omitted, the plan recorded on the container is kept.
    type: str
  domain:
    description:
      - Domain of the pod, recorded in the C(cloudpods-domain) line of the description. V('') means the pod has no
        domain (the line is removed).
      - A domain in lower case, at least two labels, the last of letters; an internationalized domain in its C(xn--)
        form (the rule of the playbooks' C(cloudpods_domain_pattern)).
      - When omitted, the domain recorded on the container is kept.
    type: str
  state:
    description:
      - V(present) - the container exists and is configured; its run state is not touched
        (a new container stays stopped).
      - V(started) - as V(present), and running with a global IPv4 address (see O(wait_for_ip)).
      - V(stopped) - as V(present), and shut down (forced after the shutdown timeout).
      - V(restarted) - as V(present), then rebooted (started if it was stopped); always changes. Proxmox VE stops a
        locked container and then fails to start it; the module then starts it, retrying while the lock holds.
      - V(absent) - the container is stopped and destroyed with its disks.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: present
  template:
    description:
      - VMID of the template container to clone, on O(node).
      - Uses the E(PROXMOX_CLOUDPOD_TEMPLATE_ID) environment variable if not specified.
    type: int
    default: 9000
  template_copies:
    description:
      - VMIDs of copies of O(template) (templates with the same content, on any node of the cluster, made by
        C(mpanel.cloudpods.build_template) with C(cloudpods_template_copies)). Proxmox VE locks a template for the whole
        of a clone, so with one template, pods ordered at the same time are cloned one after another. A clone refused
        because its template is locked goes to the next copy at once; it waits only when every copy is busy.
      - A linked clone stays tied to the copy it was cloned from (RV(cloned_from)).
      - Only used when the container is created.
      - Uses the E(PROXMOX_CLOUDPOD_TEMPLATE_COPIES) environment variable (comma-separated VMIDs) if not specified.
    type: list
    elements: int
    default: []
  target_node:
    description:
      - Node a NEW container is cloned to (M(mpanel.cloudpods.pod_placement) chooses it); an existing container stays
        on its node, wherever it is. Defaults to O(node).
      - The clone is made from a copy of the template that lives on O(target_node) (O(template) or one of
        O(template_copies), by where C(/cluster/resources) lists them); else from one on a shared storage, with
        C(target) (the pod's disk then stays on that shared storage, or goes to O(storage) when it is shared); else
        the module fails, naming the node and how to make a copy there (C(mpanel.cloudpods.build_template) run with
        E(PROXMOX_NODE_NAME) set to that node and a VMID of its own, added to O(template_copies)).
    type: str
  placement:
    description:
      - With a new container - after the clone, its configuration and its disk, the place is checked again
        (C(/cluster/resources)) against the node's limits of M(mpanel.cloudpods.pod_placement), counting every guest
        of the node but the other clones still in progress. A clone that finds its node over a limit (another order
        took the last space meanwhile) is destroyed and placed again by these settings, at most O(placement.attempts)
        times; then, or when no node has room, the module fails with the reason and leaves no container.
      - Needs O(memory) and O(disk) (the plan's sizes).
    type: dict
    suboptions:
      policy:
        description: As M(mpanel.cloudpods.pod_placement)'s O(mpanel.cloudpods.pod_placement#module:policy).
        type: str
        choices: [most_free, pinned]
        default: most_free
      node_name:
        description: The node of O(placement.policy=pinned).
        type: str
      group:
        description: The nodes the pod may go to; every node when empty.
        type: list
        elements: str
        default: []
      memory_overcommit:
        description: A node's memory limit as a multiple of its memory.
        type: float
        default: 1.0
      disk_overcommit:
        description: The pods' storage's limit as a multiple of its size.
        type: float
        default: 1.0
      attempts:
        description: Clones made at most (the first included) before giving up the race for space.
        type: int
        default: 3
  full:
    description:
      - Make a full clone, independent of the template. V(false) makes a linked clone (faster, needs a storage
        that supports it, and ties the container to the template).
      - Only used when the container is created.
    type: bool
    default: true
  storage:
    description:
      - Storage for the root disk of a full clone. Defaults to the template's storage.
      - Only used when the container is created; ignored for linked clones.
      - Uses the E(PROXMOX_CLOUDPOD_STORAGE) environment variable if not specified.
    type: str
  bridge:
    description:
      - Bridge of the container's C(net0) interface, which uses DHCP and the Proxmox firewall.
      - Uses the E(PROXMOX_CLOUDPOD_BRIDGE) environment variable if not specified.
    type: str
    default: vmbr0
  hwaddr:
    description:
      - MAC address of C(net0), a unicast address such as V(BC:24:11:2A:3B:4C). Unchanged when omitted (a new clone
        gets a random one from Proxmox VE).
      - Set on a new clone before it first starts, so that a pod made again (reinstall) keeps its DHCP address.
    type: str
  net_rate:
    description:
      - Rate limit of C(net0) in MB/s (Proxmox VE's C(rate=), applied to both directions), e.g. V(1) or V(2.5).
      - V(0) removes the limit. Unchanged when omitted, so a limit set by the transfer quota stays through a repair.
    type: float
  pool:
    description:
      - Resource pool to add a new container to. Only used when the container is created.
    type: str
  cores:
    description:
      - Number of CPU cores. Unchanged when omitted.
    type: int
  memory:
    description:
      - Memory in MiB. Unchanged when omitted.
    type: int
  swap:
    description:
      - Swap in MiB. Unchanged when omitted.
    type: int
  disk:
    description:
      - Size of the root disk in GiB. Unchanged when omitted.
      - The disk is grown when it is smaller. A size smaller than the current one fails before anything is changed,
        since Proxmox VE cannot shrink a disk.
    type: int
  onboot:
    description:
      - Start the container when the node boots. Unchanged when omitted.
    type: bool
  description:
    description:
      - Free text of the description, around which the pod record lines are kept (see O(pod_id), O(plan),
        O(domain)); record lines in it are rewritten with the record's values.
      - When omitted, the existing text is kept, including text edited by hand around the record lines.
    type: str
  tags:
    description:
      - Tags of the container (lower case letters, digits, C(_), C(-), C(+), C(.)). The C(cloudpod) tag is always added,
        and the plan tag when O(plan) is given.
      - When given, the container has exactly these tags (plus the record's); when omitted, existing tags are kept.
      - With O(plan), a plan tag (C(cloud_pod_*)) of another plan is an error.
    type: list
    elements: str
  timeout:
    description:
      - Seconds to wait for each Proxmox task (clone, resize, start, shutdown, destroy) and for how long transient
        failures (locked container, lock timeouts, HTTP 595/596) are retried.
      - Proxmox VE locks the template for the whole of a clone, so pods created at the same time from one template
        are cloned one after another; this timeout must cover the clones queued before this one.
    type: int
    default: 300
  wait_for_ip:
    description:
      - With O(state=started) or O(state=restarted), wait until the container has a global-unicast IPv4 address
        (the first one reported by C(GET .../interfaces), in the order of C(ip-addresses) where Proxmox VE 8.4 gives
        it, so the lease and not an alias added later; private ranges included; loopback and link-local ignored).
      - Needs Proxmox VE 8.1 or newer.
    type: bool
    default: true
  ip_timeout:
    description:
      - Seconds to wait for the IPv4 address (DHCP) after the container runs.
    type: int
    default: 120
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
attributes:
  check_mode:
    support: full
    details: Computes the changes (including the configuration a new container would get) and makes none.
  diff_mode:
    support: full
    details: Shows the managed settings and the run state before and after; before is empty for a new container.
  platform:
    platforms: all
notes:
  - O(storage), O(pool) and O(full) only apply when the container is created; moving an existing container is out of
    scope.
  - The module runs on the controller (or wherever the task is delegated) and talks to the Proxmox VE API only.
seealso:
  - module: mpanel.cloudpods.pod_container_info
"""

EXAMPLES = r"""
- name: Provision a Starter pod and wait for its address
  mpanel.cloudpods.pod_container:
    hostname: shop-example-com
    pod_id: sub-1042
    state: started
    cores: 1
    memory: 1024
    swap: 512
    disk: 30
    onboot: true
    plan: CLOUD_POD_STARTER
    domain: shop.example.com
    description: Cloud Pod for shop.example.com
  register: pod

- name: Show where it runs
  ansible.builtin.debug:
    msg: "CT {{ pod.vmid }} on {{ pod.node }} has {{ pod.ip }}"

- name: Set the connection once for every Proxmox module of the collection
  module_defaults:
    group/mpanel.cloudpods.proxmox:
      api_url: https://10.1.10.70:8006/api2/json
      api_token_id: mpanel-api@pve!mpanel-token
      api_token_secret: "{{ vault_proxmox_token_secret }}"
      ca_path: /etc/mpanel/pve-root-ca.pem
  block:
    - name: Grow the disk to the Premium plan
      mpanel.cloudpods.pod_container:
        hostname: shop-example-com
        cores: 2
        memory: 2048
        disk: 75

    - name: Restart the pod
      mpanel.cloudpods.pod_container:
        hostname: shop-example-com
        state: restarted

- name: Remove the pod and its disks
  mpanel.cloudpods.pod_container:
    hostname: shop-example-com
    state: absent
"""

RETURN = r"""
timings:
  description:
    - Seconds this run spent in each phase it went through, to see where a provision's time goes.
    - C(clone) (clone task, template lock retries included), C(config), C(start), C(resize), C(address) (from the
      end of the start until the DHCP address showed), C(reboot), C(stop). Phases that did not happen are left out.
  returned: always
  type: dict
  sample: {clone: 2.41, config: 0.05, start: 0.62, resize: 0.31, address: 3.12}
cloned_from:
  description: VMID of the template (O(template) or one of O(template_copies)) this run cloned the container from.
  returned: when this run created the container
  type: int
  sample: 9000
vmid:
  description: VMID of the container (null in check mode when it would be created, or when absent).
  returned: always
  type: int
  sample: 101
placement_attempts:
  description: Clones this run made before one kept its place (1 without a race); 0 when nothing was cloned.
  returned: always
  type: int
  sample: 1
node:
  description: Node the container lives on.
  returned: always
  type: str
  sample: pve
hostname:
  description: Host name of the container.
  returned: always
  type: str
  sample: shop-example-com
pod_id:
  description: Pod id recorded in the container description.
  returned: always
  type: str
  sample: sub-1042
record:
  description:
    - The pod record on the container after the run (predicted in check mode), read back from its description and
      tags as M(mpanel.cloudpods.pod_container_info) returns it. Values are text as found on the container.
    - Empty when the container is absent.
  returned: always
  type: dict
  contains:
    pod:
      description: Pod id, from the C(cloudpods-pod) line.
      type: str
      sample: sub-1042
    plan:
      description: Plan code, from the plan tag (else the C(cloudpods-plan) line); null when there is none.
      type: str
      sample: CLOUD_POD_STARTER
    domain:
      description: Domain, from the C(cloudpods-domain) line; null when the pod has none.
      type: str
      sample: shop.example.com
created:
  description: Whether the container was cloned by this run.
  returned: always
  type: bool
  sample: true
status:
  description: Run state after the module ran (V(running), V(stopped), or V(absent)); predicted in check mode.
  returned: always
  type: str
  sample: running
ip:
  description: First global-unicast IPv4 address of the container, when it is running and has one.
  returned: always
  type: str
  sample: 10.1.10.151
config:
  description: Configuration of the container after the run, as returned by C(GET /nodes/{node}/lxc/{vmid}/config)
    (predicted in check mode, empty when absent).
  returned: always
  type: dict
  sample:
    hostname: shop-example-com
    cores: 1
    memory: 1024
    swap: 512
    rootfs: local-lvm:vm-101-disk-0,size=30G
    net0: name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:2A:3B:4C,ip=dhcp,type=veth
    tags: cloud_pod_starter;cloudpod
    description: |
      Cloud Pod for shop.example.com
      cloudpods-plan: CLOUD_POD_STARTER
      cloudpods-domain: shop.example.com
      cloudpods-pod: sub-1042
api_retries:
  description: Retries made for transient Proxmox failures, by reason (C(locked), C(lock_timeout), C(vmid_taken),
    C(http_595), C(http_596)).
  returned: always
  type: dict
  sample: {"locked": 2, "lock_timeout": 0, "vmid_taken": 1, "http_595": 0, "http_596": 0}
diff:
  description: Managed settings and run state before and after.
  returned: when diff mode is on
  type: dict
  sample:
    before: {}
    after: {"hostname": "shop-example-com", "cores": 1, "memory": 1024, "disk": "30G", "status": "running"}
"""

import contextlib

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.mpanel.cloudpods.plugins.module_utils import pod_record
from ansible_collections.mpanel.cloudpods.plugins.module_utils._polling import PENDING, PollInterval, poll
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pod_container import (
    WantedPod,
    check_options,
    config_view,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import (
    ProxmoxApiError,
    ProxmoxError,
    ProxmoxTaskError,
    ProxmoxTimeout,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import (
    describe_interfaces,
    first_global_ipv4,
    parse_tags,
    pve_bool,
    pve_int,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._placement import (
    PlacementError,
    choose,
    free_text,
    keeps_place,
    node_figures,
    policy_spec,
)

_SHUTDOWN_TIMEOUT = 60


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        hostname=dict(type='str', required=True),
        vmid=dict(type='int'),
        pod_id=dict(type='str'),
        plan=dict(type='str'),
        domain=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'started', 'stopped', 'restarted', 'absent']),
        template=dict(type='int', default=9000, fallback=(env_fallback, ['PROXMOX_CLOUDPOD_TEMPLATE_ID'])),
        template_copies=dict(type='list', elements='int', default=[],
                             fallback=(env_fallback, ['PROXMOX_CLOUDPOD_TEMPLATE_COPIES'])),
        target_node=dict(type='str'),
        placement=dict(type='dict', options=dict(policy_spec(), attempts=dict(type='int', default=3))),
        full=dict(type='bool', default=True),
        storage=dict(type='str', fallback=(env_fallback, ['PROXMOX_CLOUDPOD_STORAGE'])),
        bridge=dict(type='str', default='vmbr0', fallback=(env_fallback, ['PROXMOX_CLOUDPOD_BRIDGE'])),
        pool=dict(type='str'),
        hwaddr=dict(type='str'),
        net_rate=dict(type='float'),
        cores=dict(type='int'),
        memory=dict(type='int'),
        swap=dict(type='int'),
        disk=dict(type='int'),
        onboot=dict(type='bool'),
        description=dict(type='str'),
        tags=dict(type='list', elements='str'),
        timeout=dict(type='int', default=300),
        wait_for_ip=dict(type='bool', default=True),
        ip_timeout=dict(type='int', default=120),
    )
    return spec


class PodContainer(ProxmoxModule):

    def __init__(self, module):
        super(PodContainer, self).__init__(module)
        self.params = module.params
        self.hostname = self.params['hostname'].strip()
        self.state = self.params['state']
        self.timeout = self.params['timeout']
        self.pod_id = self.params['pod_id']
        self.timings = {}
        self.cloned_from = []  # the template this run cloned from (clone_container appends it)
        self.target = self.params['target_node'] or self.node  # where a new container goes
        self.placement_attempts = 0

    # -- validation -----------------------------------------------------

    def validate(self):
        check_options(self.params)
        placement = self.params['placement']
        if placement is not None:
            if self.params['memory'] is None or self.params['disk'] is None:
                raise ProxmoxError('placement needs memory and disk (the plan\'s sizes)')
            if placement['attempts'] < 1:
                raise ProxmoxError('placement.attempts must be 1 or more; got %s' % placement['attempts'])

    def wanted(self):
        """What the options ask of the container, for the pod it belongs to (known once it is found)."""
        return WantedPod(self.params, self.pod_id)

    # -- finding the container --------------------------------------------

    def container_path(self, ct, suffix=''):
        return self.client.container_path(ct['node'], ct['vmid'], suffix)

    def find(self):
        """The pod's container from cluster/resources (waiting out a running clone), or None."""
        vmid = self.params['vmid']
        name = self.hostname.lower()
        guests = self.client.guests()
        named = [c for c in self.client.containers(guests) if (c.get('name') or '').lower() == name]
        if vmid is not None:
            found = self.client.guests_by_vmid(vmid, guests)
            if not found:
                if named:
                    raise ProxmoxError('vmid %s is free, but hostname %s is already used by %s; use that vmid or '
                                       'another hostname' % (vmid, self.hostname, _describe_cts(named)))
                return None
            ct = found[0]
            if ct.get('type') != 'lxc':
                raise ProxmoxError('VMID %s is a %s guest (%s), not an LXC container'
                                   % (vmid, ct.get('type'), ct.get('name')))
            if pve_bool(ct.get('template')):
                raise ProxmoxError('VMID %s is a template, not a pod container' % vmid)
            if (ct.get('name') or '').lower() != name:
                raise ProxmoxError('CT %s on node %s has hostname %s, not %s: refusing to manage it as this pod '
                                   '(check vmid and hostname)' % (vmid, ct.get('node'), ct.get('name'), self.hostname))
        else:
            if len(named) > 1:
                raise ProxmoxError('hostname %s is used by %d containers: %s; pass vmid to choose one'
                                   % (self.hostname, len(named), _describe_cts(named)))
            if not named:
                return None
            ct = named[0]
        return self.wait_for_create_lock(ct)

    def wait_for_create_lock(self, ct):
        """A container with lock 'create' is still being cloned (e.g. by a crashed run): wait for it."""
        if ct.get('lock') != 'create':
            return ct

        def clone_over():
            found = [c for c in self.client.guests_by_vmid(ct['vmid']) if c.get('type') == 'lxc']
            if not found:
                return None  # the clone failed and Proxmox removed the half-made container
            return PENDING if found[0].get('lock') == 'create' else found[0]

        def still_locked():
            raise ProxmoxTimeout('CT %s (%s) is still locked by its clone after %s s (timeout); wait for the clone '
                                 'task on node %s to finish' % (ct['vmid'], self.hostname, self.timeout, ct.get('node')))

        return poll(clone_over, self.timeout, PollInterval(start=0.2, factor=1.5, cap=2.0), self.client.clock,
                    still_locked)

    def read_config(self, ct):
        return self.client.get(self.container_path(ct, 'config')) or {}

    def check_owner(self, ct, conf):
        """Refuse containers of another pod, or not made by this module unless vmid was given."""
        owner = pod_record.parse_description(conf.get('description'))['pod']
        if owner is None:
            if self.params['vmid'] is None:
                raise ProxmoxError(
                    'CT %s on node %s has hostname %s but its description has no "cloudpods-pod:" line, so it was '
                    'not created by this module; pass vmid: %s to take it over as a pod'
                    % (ct['vmid'], ct['node'], self.hostname, ct['vmid']))
        elif self.pod_id is not None and owner != self.pod_id:
            raise ProxmoxError('CT %s on node %s with hostname %s belongs to pod %s, not to pod %s'
                               % (ct['vmid'], ct['node'], self.hostname, owner, self.pod_id))
        if self.pod_id is None:
            self.pod_id = owner or self.hostname

    # -- applying ---------------------------------------------------------

    def clone_source(self):
        """Where the clone of a new container on ``self.target`` comes from: ``(node, vmid, spares, target)``.

        A copy of the template on the target node first (no ``target``: Proxmox VE cannot clone a CT on
        local storage to another node); else one on a shared storage, cloned with ``target``.
        """
        p = self.params
        sources = [p['template']] + [v for v in p['template_copies'] if v != p['template']]
        resources = self.client.get('cluster/resources') or []
        where = dict((pve_int(r.get('vmid')), r.get('node')) for r in resources if r.get('type') == 'lxc')
        local = [v for v in sources if where.get(v) == self.target]
        if not any(v in where for v in sources) and self.target == self.node:
            return self.target, p['template'], sources[1:], None  # missing: template_config() says so
        if local:
            return self.target, local[0], local[1:], None
        shared = dict(((r.get('node'), r.get('storage')), r) for r in resources
                      if r.get('type') == 'storage' and pve_bool(r.get('shared')))
        for vmid in (v for v in sources if v in where):
            conf = self.client.get(self.client.container_path(where[vmid], vmid, 'config')) or {}
            store = str(conf.get('rootfs') or '').split(':', 1)[0]
            if (where[vmid], store) in shared and (self.target, store) in shared:
                return where[vmid], vmid, [], self.target
        raise ProxmoxError(
            'no copy of the template on node %s: template %s and copies %s are on %s, on local storage, and Proxmox '
            'VE cannot clone a CT on local storage to another node; build one there (mpanel.cloudpods.build_template '
            'with PROXMOX_NODE_NAME=%s, PROXMOX_CLOUDPOD_TEMPLATE_ID=<a free VMID> and PROXMOX_SSH_HOST=<that node>) '
            'and add its VMID to PROXMOX_CLOUDPOD_TEMPLATE_COPIES, or keep a copy on a shared storage'
            % (self.target, p['template'], ','.join(str(v) for v in p['template_copies']) or 'none',
               ', '.join(sorted(set(where[v] for v in sources if v in where))) or 'no node', self.target))

    def template_config(self, node, vmid):
        path = self.client.container_path(node, vmid, 'config')
        try:
            return self.client.get(path) or {}
        except ProxmoxApiError as exc:
            if exc.status_code == 500 and 'does not exist' in exc.reason:
                raise ProxmoxError('Template CT %s does not exist on node %s (template / PROXMOX_CLOUDPOD_TEMPLATE_ID, '
                                   'node / PROXMOX_NODE_NAME)' % (vmid, node))
            raise

    def clone(self, source):
        source_node, source_vmid, spares, target = source
        p = self.params
        params = dict(hostname=self.hostname, full=p['full'], pool=p['pool'],
                      description=self.wanted().description(None))
        if target is not None:
            params['target'] = target
        if p['full'] and p['storage'] and (target is None or self._shared_storage(p['storage'])):
            params['storage'] = p['storage']

        def find_existing():
            # Before another clone attempt: if a container with our host name appeared meanwhile (a concurrent
            # run for this pod, or our own clone whose answer was lost), take it instead of making a duplicate.
            named = [c for c in self.client.containers() if (c.get('name') or '').lower() == self.hostname.lower()]
            return named[0]['vmid'] if named else None

        self.placement_attempts += 1
        return self.client.clone_container(source_node, source_vmid, self.timeout, newid=p['vmid'],
                                           find_existing=find_existing, spare_sources=spares,
                                           cloned_from=self.cloned_from, **params)

    def _shared_storage(self, storage):
        return any(r.get('type') == 'storage' and r.get('storage') == storage and pve_bool(r.get('shared'))
                   for r in self.client.get('cluster/resources', type='storage') or [])

    # -- placement: the race for the last space -----------------------------

    def placed_clone(self, wanted):
        """Clone, size and check the place; a clone over its node's limits gives way (see _placement)."""
        placement = self.params['placement']
        while True:
            source = self.clone_source()
            with self.timed('clone'):
                vmid, created = self.clone(source)
            ct = dict(vmid=vmid, node=self.target)
            if not created or placement is None:
                return vmid, created
            conf = self.read_config(ct)
            changes = wanted.changes(ct, conf, 'stopped')
            with self.timed('config'):
                if changes.config:
                    self.client.put(self.container_path(ct, 'config'), **changes.config)
                self.resize(ct, changes.resize)
            size = (self.params['memory'], self.params['disk'])
            keeps, fig = keeps_place(self.client.get('cluster/resources') or [], self.target, vmid,
                                     self.params['storage'], size, placement['memory_overcommit'],
                                     placement['disk_overcommit'])
            if keeps:
                return vmid, created
            self.destroy(ct)
            self.cloned_from[:] = []
            if self.placement_attempts >= placement['attempts']:
                raise ProxmoxError('no place kept for %s after %d clones: each time another order took the last space '
                                   'first (last: %s); nothing is left behind, try again'
                                   % (self.hostname, self.placement_attempts, free_text(fig) if fig else self.target))
            self.target = self.choose_again()

    def choose_again(self):
        placement = self.params['placement']
        figures = node_figures(self.client.get('cluster/resources') or [], self.params['storage'],
                               placement['memory_overcommit'], placement['disk_overcommit'])
        try:
            return choose(figures, self.params['memory'], self.params['disk'], placement['policy'],
                          placement['node_name'], placement['group'])[0]
        except PlacementError as exc:
            raise ProxmoxError(str(exc))

    def destroy(self, ct):
        try:
            self.client.run_task('DELETE', self.client.container_path(ct['node'], ct['vmid']), self.timeout,
                                 what='destroy of CT %s' % ct['vmid'],
                                 params={'purge': True, 'destroy-unreferenced-disks': True})
        except ProxmoxApiError as exc:
            # A retried DELETE whose first attempt went through (answer lost): it is gone, as wanted.
            if not (exc.status_code == 500 and 'does not exist' in exc.reason
                    and not self.client.guests_by_vmid(ct['vmid'])):
                raise

    def current_status(self, ct):
        return (self.client.get(self.container_path(ct, 'status/current')) or {}).get('status')

    def apply(self, ct, changes):
        if changes.config:
            with self.timed('config'):
                self.client.put(self.container_path(ct, 'config'), **changes.config)
        if changes.power == 'start':
            # A container's root disk grows online: start first, so the pod boots and gets its
            # DHCP lease while the resize task runs instead of after it.
            with self.timed('start'):
                self.power(ct, 'start')
            with self.timed('resize'):
                self.resize(ct, changes.resize)
            return
        with self.timed('resize'):
            self.resize(ct, changes.resize)
        if changes.power:
            with self.timed(changes.power if changes.power in ('start', 'reboot') else 'stop'):
                self.power(ct, changes.power)

    @contextlib.contextmanager
    def timed(self, phase):
        """Seconds spent in each phase, returned as ``timings`` (where a provision's time goes)."""
        now = self.client.clock.now
        started = now()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + now() - started, 3)

    def resize(self, ct, size):
        if size:
            self.client.run_task('PUT', self.container_path(ct, 'resize'), self.timeout,
                                 what='resize of CT %s to %s' % (ct['vmid'], size),
                                 params=dict(disk='rootfs', size=size))

    def power(self, ct, action):
        if action == 'reboot':
            # On a locked CT, PVE's reboot stops it and fails to start it: reboot_container starts it again.
            self.client.reboot_container(ct['node'], ct['vmid'], self.timeout)
            return
        params = {}
        if action == 'shutdown':
            params = dict(forceStop=True, timeout=min(_SHUTDOWN_TIMEOUT, self.timeout))
        try:
            self.client.run_task('POST', self.container_path(ct, 'status/%s' % action), self.timeout,
                                 what='%s of CT %s' % (action, ct['vmid']), retry_locked_task=True, params=params)
        except (ProxmoxApiError, ProxmoxTaskError) as exc:
            # Somebody else got there first (a concurrent run, or the module process of a killed
            # playbook that lives on): the container is already in the wanted state. PVE says so
            # at once, or, when both requests passed its check, in the second task.
            text = exc.reason if isinstance(exc, ProxmoxApiError) else exc.exitstatus
            if _already_in_state(action, text or ''):
                return
            raise

    def wait_for_ip(self, ct):
        path = self.container_path(ct, 'interfaces')
        seen = [None]

        def address():
            seen[0] = self.client.get(path)
            return first_global_ipv4(seen[0]) or PENDING

        def no_address():
            raise ProxmoxTimeout(
                'CT %s (%s) is running but has no global IPv4 address after %s s (ip_timeout); interfaces: %s. '
                'Check DHCP on bridge %s' % (ct['vmid'], self.hostname, self.params['ip_timeout'],
                                             describe_interfaces(seen[0]), self.params['bridge']))

        return poll(address, self.params['ip_timeout'], PollInterval(), self.client.clock, no_address)

    def read_ip(self, ct):
        try:
            return first_global_ipv4(self.client.get(self.container_path(ct, 'interfaces')))
        except ProxmoxApiError:
            return None

    # -- states -----------------------------------------------------------

    def run(self):
        self.validate()
        ct = self.find()
        conf = None
        if ct is not None:
            conf = self.read_config(ct)
            self.check_owner(ct, conf)
        if self.state == 'absent':
            return self.ensure_absent(ct, conf)
        return self.ensure_present(ct, conf)

    def result(self, changed, ct, conf, status, ip=None, created=False, diff=None):
        result = dict(changed=changed, vmid=ct.get('vmid') if ct else None,
                      node=ct.get('node') if ct else self.target, hostname=self.hostname,
                      placement_attempts=self.placement_attempts,
                      pod_id=self.pod_id or self.hostname, created=created, status=status, ip=ip,
                      config=conf or {}, timings=dict(self.timings),
                      record=pod_record.read(conf.get('description'), parse_tags(conf.get('tags'))) if conf else {})
        if result['vmid'] is not None:
            result['vmid'] = int(result['vmid'])
        if created and self.cloned_from:
            result['cloned_from'] = int(self.cloned_from[-1])
        if diff is not None and self.module._diff:
            result['diff'] = diff
        return result

    def ensure_present(self, ct, conf):
        created = False
        if ct is None:
            if self.pod_id is None:
                self.pod_id = self.hostname
            if self.params['placement'] is not None and not self.params['target_node']:
                self.target = self.choose_again()  # no node given: the placement settings choose it
            source = self.clone_source()
            template_conf = self.template_config(source[0], source[1])
            wanted = self.wanted()
            predicted = wanted.clone_config(template_conf)
            new_ct = dict(vmid=self.params['vmid'], node=self.target)
            changes = wanted.changes(new_ct, predicted, 'stopped')  # fails on a too small disk before cloning
            if self.module.check_mode:
                after, status = changes.predict(predicted, 'stopped')
                return self.result(True, new_ct, after, status, created=True,
                                   diff=dict(before={}, after=config_view(after, status)))
            vmid, created = self.placed_clone(wanted)
            if created:
                ct = dict(vmid=vmid, node=self.target)
            else:
                ct = self.find()
                if ct is None:
                    raise ProxmoxError('VMID %s was taken by a container named %s, which then disappeared; run again'
                                       % (vmid, self.hostname))
            conf = self.read_config(ct)
            if not created:
                self.check_owner(ct, conf)

        status = 'stopped' if created else self.current_status(ct)  # a fresh clone is stopped
        changes = self.wanted().changes(ct, conf, status)
        before = {} if created else config_view(conf, self._shown_status(status))
        if self.module.check_mode:
            after_conf, after_status = changes.predict(conf, status)
            ip = self.read_ip(ct) if after_status == 'running' and status == 'running' else None
            return self.result(bool(changes), ct, after_conf, after_status, ip=ip,
                               diff=dict(before=before, after=config_view(after_conf, self._shown_status(after_status))))

        self.apply(ct, changes)
        status = self.current_status(ct) if changes.power else status
        if changes.power in ('start', 'reboot') and status != 'running':
            raise ProxmoxError('CT %s (%s) is %s after its %s, which Proxmox VE reported done; see the node\'s '
                               'task log' % (ct['vmid'], self.hostname, status, changes.power))
        ip = None
        if status == 'running':
            if self.state in ('started', 'restarted') and self.params['wait_for_ip']:
                with self.timed('address'):
                    ip = self.wait_for_ip(ct)
            else:
                ip = self.read_ip(ct)
        final = self.read_config(ct) if (changes.config or changes.resize or created) else conf
        return self.result(created or bool(changes), ct, final, status, ip=ip, created=created,
                           diff=dict(before=before, after=config_view(final, self._shown_status(status))))

    def _shown_status(self, status):
        # The run state belongs in the diff only when the state option manages it.
        return status if self.state in ('started', 'stopped', 'restarted') else None

    def ensure_absent(self, ct, conf):
        if ct is None:
            return self.result(False, dict(vmid=self.params['vmid'], node=self.node), {}, 'absent',
                               diff=dict(before={}, after={}))
        status = self.current_status(ct)
        diff = dict(before=config_view(conf, status), after={})
        if self.module.check_mode:
            return self.result(True, ct, {}, 'absent', diff=diff)
        if status == 'running':
            self.power(ct, 'stop')
        self.destroy(ct)
        return self.result(True, ct, {}, 'absent', diff=diff)


def _already_in_state(action, message):
    """True when a power action failed only because the container is already where it should be."""
    if action == 'start':
        return 'already running' in message
    if action in ('shutdown', 'stop'):
        return 'not running' in message
    return False


def _describe_cts(cts):
    return ', '.join('CT %s on %s (%s)' % (c.get('vmid'), c.get('node'), c.get('status')) for c in cts)


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PodContainer(module).execute()


if __name__ == '__main__':
    main()
