# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: pods
short_description: Cloud Pods on Proxmox VE as inventory hosts
version_added: 0.1.0
description:
  - One inventory host per Cloud Pod container (LXC containers carrying the O(tag) tag, templates left out), named by
    the container's host name (the pod id), so that C(--limit <pod>) targets one pod.
  - 'Host variables: C(vmid), C(node), C(ip) (first global IPv4 address, empty when stopped or before DHCP),
    C(plan) (the plan code from the container''s C(cloud_pod_*) tag, else from the C(cloudpods-plan) line of its
    description, empty when none), C(status), C(pod_id), C(pod_tags), C(pod_record) (the pod record of the container:
    C(pod), C(plan) and C(domain), as M(mpanel.cloudpods.pod_container_info) returns it, null where a value is
    missing; text as found on the container, to be checked before use), and C(ansible_host) set to C(ip) when there
    is one.'
  - 'Every value read from Proxmox VE (host names, tags, the pod record read from the description, which anyone
    allowed to edit a container can change) is data, never a template: it is marked unsafe, so a C({{ ... }}) in a
    description stays text wherever the host variable is used (ansible-core 2.19 and later treat inventory plugin
    data so anyway).'
  - 'With O(cache=true) what the API said about the pods is kept in the cache plugin O(cache_plugin) for
    O(cache_timeout) seconds, and runs in that time make no API call; C(--flush-cache) or C(meta: refresh_inventory)
    read the API again. The cache holds no credentials.'
  - 'Groups: C(cloudpods) (every pod), one group per plan (C(cloud_pod_starter) ...), one per node
    (C(node_<node>)) and one per run state (C(status_running), C(status_stopped)); more with O(keyed_groups),
    O(groups) and O(compose).'
  - The connection comes from the options or the same E(PROXMOX_API_URL), E(PROXMOX_API_TOKEN_ID),
    E(PROXMOX_API_TOKEN_SECRET), E(PROXMOX_CA_BUNDLE) environment variables as the modules; put no secret in the
    inventory file.
  - The inventory file must end in C(pods.yml) or C(pods.yaml) (for example C(cloudpods.pods.yml)).
author:
  - mPanel Cloud Pods team (@mpanel)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin.
    type: str
    required: true
    choices: [mpanel.cloudpods.pods]
  api_url:
    description: Proxmox VE API URL, for example C(https://10.1.10.70:8006/api2/json).
    type: str
    required: true
    env:
      - name: PROXMOX_API_URL
  api_token_id:
    description: API token id, C(user@realm!tokenid).
    type: str
    required: true
    env:
      - name: PROXMOX_API_TOKEN_ID
  api_token_secret:
    description: Secret of the API token. Prefer the environment variable to the inventory file.
    type: str
    required: true
    env:
      - name: PROXMOX_API_TOKEN_SECRET
  node:
    description: Default node name (the pods are listed cluster-wide).
    type: str
    default: pve
    env:
      - name: PROXMOX_NODE_NAME
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
    env:
      - name: PROXMOX_VALIDATE_CERTS
  ca_path:
    description: CA bundle (PEM) that signed the API's certificate.
    type: path
    env:
      - name: PROXMOX_CA_BUNDLE
  api_timeout:
    description: Seconds to wait for one API answer.
    type: int
    default: 30
  tag:
    description: Only containers carrying this tag are pods.
    type: str
    default: cloudpod
  want_ip:
    description: Read the address of each running pod (one more API call per running pod).
    type: bool
    default: true
"""

EXAMPLES = r"""
# cloudpods.pods.yml (the cache settings are optional: with them the API is read at most every 10 minutes)
plugin: mpanel.cloudpods.pods
ca_path: /etc/mpanel/pve-root-ca.pem
keyed_groups:
  - key: plan
    prefix: plan
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/cloudpods-inventory
cache_timeout: 600

# ansible-inventory -i cloudpods.pods.yml --graph
# ansible-playbook -i cloudpods.pods.yml mpanel.cloudpods.restart --limit shop-example-com
"""

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
# Values from the API must never be templated. ansible-core 2.19+ already treats inventory plugin
# data as untrusted (wrap_var only drops any trust there); on 2.17 and 2.18, which meta/runtime.yml
# still allows, wrap_var is what marks it unsafe. community.proxmox and netbox.netbox do the same.
from ansible.utils.unsafe_proxy import wrap_var as make_unsafe

from ansible_collections.mpanel.cloudpods.plugins.module_utils import pod_record
from ansible_collections.mpanel.cloudpods.plugins.module_utils.proxmox import (
    HAS_PROXMOXER,
    ConnectionSettings,
    ProxmoxClient,
    ProxmoxError,
    first_global_ipv4,
    parse_tags,
)


def pod_hostvars(guest, ip=None, description=None):
    """Host variables of one pod from its cluster/resources entry (and its address and description).

    Plain values; the inventory marks them unsafe (make_unsafe) before they become host variables."""
    tags = parse_tags(guest.get('tags'))
    ip = ip or ''
    record = pod_record.read(description, tags)
    hostvars = {
        'vmid': int(guest['vmid']),
        'node': guest.get('node'),
        'ip': ip,
        'plan': record['plan'] or '',
        'status': guest.get('status'),
        'pod_tags': tags,
        'pod_id': record['pod'],
        'pod_record': record,
    }
    if ip:
        hostvars['ansible_host'] = ip
    return hostvars


def safe_group(name):
    return ''.join(c if c.isalnum() or c == '_' else '_' for c in name.lower())


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'mpanel.cloudpods.pods'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(('pods.yml', 'pods.yaml'))

    def _client(self):
        if not HAS_PROXMOXER:
            raise AnsibleError('the mpanel.cloudpods.pods inventory needs the Python library proxmoxer')
        try:
            settings = ConnectionSettings(
                api_url=self.get_option('api_url'), api_token_id=self.get_option('api_token_id'),
                api_token_secret=self.get_option('api_token_secret'), node=self.get_option('node'),
                validate_certs=self.get_option('validate_certs'), ca_path=self.get_option('ca_path'),
                api_timeout=self.get_option('api_timeout'))
            return ProxmoxClient(settings, retry_timeout=self.get_option('api_timeout'))
        except ProxmoxError as exc:
            raise AnsibleError('mpanel.cloudpods.pods: %s' % to_native(exc))

    def pods(self, client):
        """Every pod container as {guest, ip, description} (JSON, as the cache keeps it), sorted by VMID."""
        tag = self.get_option('tag')
        found = []
        for guest in sorted(client.containers(), key=lambda g: int(g['vmid'])):
            if tag not in parse_tags(guest.get('tags')) or not guest.get('name'):
                continue
            path = 'nodes/%s/lxc/%s' % (guest['node'], guest['vmid'])
            config = client.get(path + '/config') or {}
            ip = None
            if self.get_option('want_ip') and guest.get('status') == 'running':
                try:
                    ip = first_global_ipv4(client.get(path + '/interfaces'))
                except ProxmoxError:
                    ip = None  # interfaces needs PVE 8.1+
            found.append(dict(guest=guest, ip=ip, description=config.get('description', '')))
        return found

    def read_pods(self):
        client = self._client()
        try:
            return self.pods(client)
        except ProxmoxError as exc:
            raise AnsibleError('mpanel.cloudpods.pods: %s' % client.scrub(to_native(exc)))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        # The inventory cache pattern of Ansible's developer guide (community.proxmox and netbox.netbox
        # use it too): read the cache unless told to refresh (cache=False: --flush-cache, meta:
        # refresh_inventory), and write it whenever the API was read because caching is on.
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        update_cache = self.get_option('cache') and not cache
        pods = None
        if use_cache:
            try:
                pods = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if pods is None:
            pods = self.read_pods()
        if update_cache:
            self._cache[cache_key] = pods
        self.populate(pods)

    def populate(self, pods):
        strict = self.get_option('strict')
        self.inventory.add_group('cloudpods')
        for pod in pods:
            # Everything below came from the API (or from the cache, which holds what the API said).
            host = make_unsafe(pod['guest']['name'])
            hostvars = make_unsafe(pod_hostvars(pod['guest'], pod['ip'], pod['description']))
            self.inventory.add_host(host, group='cloudpods')
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, value)
            for group in (hostvars['plan'].lower(), 'node_%s' % hostvars['node'], 'status_%s' % hostvars['status']):
                if group and not group.endswith('_None'):
                    group = safe_group(group)
                    self.inventory.add_group(group)
                    self.inventory.add_child(group, host)
            self._set_composite_vars(self.get_option('compose'), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, host, strict=strict)
