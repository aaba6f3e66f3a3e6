#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_fleet_info
short_description: Check every Cloud Pod against its plan at once, from the Proxmox VE and PowerDNS APIs
version_added: 0.1.0
description:
  - Reads every pod of the cluster (the containers tagged O(tag)) in bulk and says, per pod, what a repair
    (C(mpanel.cloudpods.repair)) would change through the APIs - the container (plan sizes, start at boot, run state,
    net0, pod record, plan tag, a root disk to grow), its firewall (options, the plan's rules, the IP filter set with
    its address) and its DNS zone (the records of the role M(mpanel.cloudpods.pod_dns), the zone's owner).
  - The comparisons are those of M(mpanel.cloudpods.pod_container), M(mpanel.cloudpods.pod_firewall) and
    M(mpanel.cloudpods.powerdns_zone) (the same code), with what they are given in C(repair.yml) - the plan's
    sizes and firewall from O(plans), the rules and records from the filters M(mpanel.cloudpods.plan_firewall_rules)
    and M(mpanel.cloudpods.pod_dns_rrsets). A pod found in plan here is one those modules would leave unchanged.
  - One C(cluster/resources) read for the whole fleet, then per pod its config, its address (running pods), its
    firewall options, rules and IP sets, and its zone, O(parallel) pods at a time. Nothing is changed.
  - A pod that is stopped with C(onboot) off is suspended (C(mpanel.cloudpods.suspend) leaves it so) and is checked
    as such - stopped, not started at boot. A stopped pod has no address - its IP filter set and its C(A) records
    are not checked (a repair starts it first).
  - Not checked here, because no API shows them - the site, the customer's account, sshd and keys and the
    certificate inside the pod, and the backup directory and cron entry on the Proxmox host. C(repair.yml) of one
    pod checks those.
  - A container still being cloned (lock C(create), a provision under way) is not checked; RV(busy) names it.
  - A pod that a repair would refuse (no known plan, a domain that is not a domain name, a root disk larger than its
    plan, a zone owned by someone else, a container that is not this pod's) is listed with its RV(pods[].problem)
    instead.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  plans:
    description:
      - The plan catalogue, C(playbooks/vars/plans.yml) (the lookup M(mpanel.cloudpods.plan_catalogue)) - per plan code
        C(vcpu), C(memory_mb), C(swap_mb), C(disk_gb) and C(firewall) (C(policy_in), C(policy_out), C(allow_in)).
    type: dict
    required: true
  pods:
    description:
      - Only these pods (pod ids, the containers' host names). Default - every pod.
    type: list
    elements: str
  tag:
    description: The tag of pod containers (the pods inventory's C(tag)).
    type: str
    default: cloudpod
  ssh_port:
    description: The port of the pods' sshd, which the plan entry C(ssh) opens (C(cloudpods_ssh_port)).
    type: int
    default: 22
  bridge:
    description:
      - The bridge of the pods' net0.
      - Uses the E(PROXMOX_CLOUDPOD_BRIDGE) environment variable if not specified.
    type: str
    default: vmbr0
  firewall_exclusive:
    description: The firewall keeps only our rules (C(cloudpods_firewall_exclusive)); another rule is drift.
    type: bool
    default: false
  dns:
    description:
      - The pods' zones, as the role M(mpanel.cloudpods.pod_dns) makes them - its entry point C(settings) sets the
        fact C(pod_dns_settings) with O(dns.records), O(dns.ttl), O(dns.nameservers) and O(dns.exclusive)), and the
        PowerDNS connection. Omitted - the zones are not checked.
    type: dict
    suboptions:
      records:
        description: The record settings, as the filter M(mpanel.cloudpods.pod_dns_rrsets) takes them.
        type: dict
        default: {}
      ttl:
        description: TTL of the records.
        type: int
        default: 3600
      nameservers:
        description: The apex NS records.
        type: list
        elements: str
      exclusive:
        description: A zone keeps only the pod's records; another rrset is drift.
        type: bool
        default: false
      api_url:
        description:
          - PowerDNS's HTTP API, as for M(mpanel.cloudpods.powerdns_zone).
          - Uses the E(POWERDNS_API_URL) environment variable if not specified.
        type: str
      api_key:
        description:
          - The API key of PowerDNS.
          - Uses the E(POWERDNS_API_KEY) environment variable if not specified.
        type: str
      server_id:
        description:
          - The PowerDNS server id.
          - Uses the E(POWERDNS_SERVER_ID) environment variable if not specified.
        type: str
        default: localhost
      validate_certs:
        description:
          - Check PowerDNS's TLS certificate.
          - Uses the E(POWERDNS_VALIDATE_CERTS) environment variable if not specified.
        type: bool
        default: true
      ca_path:
        description:
          - CA bundle for PowerDNS's certificate.
          - Uses the E(POWERDNS_CA_BUNDLE) environment variable if not specified.
        type: path
      api_timeout:
        description:
          - Seconds one PowerDNS request may take.
          - Uses the E(POWERDNS_API_TIMEOUT) environment variable if not specified.
        type: int
        default: 30
  parallel:
    description: How many pods are read at the same time (1 to 32).
    type: int
    default: 8
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
  - mpanel.cloudpods.attributes.info_module
seealso:
  - module: mpanel.cloudpods.pod_container
  - module: mpanel.cloudpods.pod_firewall
  - module: mpanel.cloudpods.powerdns_zone
"""

EXAMPLES = r"""
- name: Check every pod against its plan
  mpanel.cloudpods.pod_fleet_info:
    plans: "{{ lookup('mpanel.cloudpods.plan_catalogue') }}"
    ssh_port: 22
    dns: "{{ pod_dns_settings }}"
  register: fleet

- name: The pods a repair would change
  ansible.builtin.debug:
    msg: "{{ fleet.drifted }}"
"""

RETURN = r"""
pods:
  description: Every pod checked, by pod id.
  returned: always
  type: list
  elements: dict
  contains:
    pod:
      description: The pod id (the container's host name).
      type: str
    vmid:
      description: The container's VMID.
      type: int
    node:
      description: The node it runs on.
      type: str
    plan:
      description: Its plan code (plan tag, else the pod record), empty when unknown.
      type: str
    domain:
      description: Its domain (pod record), empty for none.
      type: str
    status:
      description: The container's run state.
      type: str
    suspended:
      description: Stopped with onboot off, as suspend leaves a pod.
      type: bool
    ip:
      description: Its IPv4 address (running pods), else empty.
      type: str
    container:
      description: What a repair would change on the container, in words (C(cores 1 -> 2), C(start)).
      type: list
      elements: str
    firewall:
      description: What it would change on the firewall, as M(mpanel.cloudpods.pod_firewall) reports it.
      type: list
      elements: str
    dns:
      description: What it would change in the zone (C(create www.shop.example.com. A)).
      type: list
      elements: str
    problem:
      description: Why a repair would refuse this pod; null when it would not.
      type: str
    in_plan:
      description: Nothing to change and no problem.
      type: bool
  sample:
    - {pod: shop-example-com, vmid: 101, node: pve, plan: CLOUD_POD_STARTER, domain: shop.example.com,
       status: running, suspended: false, ip: 10.1.20.31, container: [], firewall: ["create rule cloudpods: 443/tcp"],
       dns: [], problem: null, in_plan: false}
drifted:
  description: The pods with something to change (no problem), sorted.
  returned: always
  type: list
  elements: str
problems:
  description: The pods a repair would refuse, sorted.
  returned: always
  type: list
  elements: str
busy:
  description: The pods not checked because their container is still being cloned (lock C(create)), sorted.
  returned: always
  type: list
  elements: str
missing:
  description: The pods of O(pods) that have no container (tagged O(tag)), sorted.
  returned: always
  type: list
  elements: str
reads:
  description: API requests made, per API.
  returned: always
  type: dict
  sample: {proxmox: 1202, powerdns: 200}
"""

import threading
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.mpanel.cloudpods.plugins.module_utils import names, pod_record
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pod_container import WantedPod, check_options
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pod_firewall import (
    DEFAULT_MARKER,
    IPFILTER_SET,
    check_rules,
    describe_changes,
    ipset_plan,
    net_uses_dhcp,
    normalize_cidr,
    options_changes,
    rule_plan,
    wanted_options,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pod_plan import PlanError, dns_rrsets, firewall_rules
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxApiError, ProxmoxError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import (
    first_global_ipv4,
    parse_tags,
    pve_bool,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils.powerdns import (
    ConnectionSettings as PowerDnsSettings,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils.powerdns import (
    PowerDnsApiError,
    PowerDnsClient,
    PowerDnsError,
    current_rrsets,
    desired_rrsets,
    normalize_zone_name,
    powerdns_argument_spec,
    rrset_changes,
)

PLAN_KEYS = ('vcpu', 'memory_mb', 'swap_mb', 'disk_gb')


def dns_options():
    """The zone settings and the PowerDNS connection of the powerdns modules (same names, defaults and environment
    variables; not required here: without dns the zones are not checked, and the connection is checked on use)."""
    options = dict((name, dict((k, v) for k, v in spec.items() if k != 'required'))
                   for name, spec in powerdns_argument_spec().items())
    options.update(
        records=dict(type='dict', default={}),
        ttl=dict(type='int', default=3600),
        nameservers=dict(type='list', elements='str'),
        exclusive=dict(type='bool', default=False),
    )
    return options


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        plans=dict(type='dict', required=True),
        pods=dict(type='list', elements='str'),
        tag=dict(type='str', default=pod_record.POD_TAG),
        ssh_port=dict(type='int', default=22),
        bridge=dict(type='str', default='vmbr0', fallback=(env_fallback, ['PROXMOX_CLOUDPOD_BRIDGE'])),
        firewall_exclusive=dict(type='bool', default=False),
        dns=dict(type='dict', options=dns_options()),
        parallel=dict(type='int', default=8),
    )
    return spec


class Refused(Exception):
    """What a repair of this pod would refuse, in words."""


class PodFleetInfo(ProxmoxModule):

    expected_error = (ProxmoxError, PowerDnsError)

    def __init__(self, module):
        super(PodFleetInfo, self).__init__(module)
        self.params = module.params
        self.dns = self.params['dns']
        self.dns_settings = None
        if self.dns is not None:
            self._secrets.append(self.dns.get('api_key'))
            try:
                self.dns_settings = PowerDnsSettings.from_params(self.dns)
            except PowerDnsError as exc:
                self.fail('dns: %s' % exc.msg)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.reads = dict(proxmox=0, powerdns=0)

    # -- the API, one client per thread (each holds its own HTTP session) ------------------

    def _count(self, api):
        with self._lock:
            self.reads[api] += 1

    def pve_get(self, path, **params):
        client = getattr(self._local, 'pve', None)
        if client is None:
            client = self._local.pve = ProxmoxClient(self.settings, retry_timeout=self.client.retry_timeout)
            with self._lock:
                self._thread_clients.append(client)
        self._count('proxmox')
        return client.get(path, **params)

    def zone(self, zone):
        client = getattr(self._local, 'pdns', None)
        if client is None:
            client = self._local.pdns = PowerDnsClient(self.dns_settings)
        self._count('powerdns')
        return client.get_zone(zone)

    def api_retries(self):
        retries = super(PodFleetInfo, self).api_retries()
        for client in getattr(self, '_thread_clients', []):
            for reason, count in client.retries.items():
                retries[reason] = retries.get(reason, 0) + count
        return retries

    # -- the checks ----------------------------------------------------------

    def check_inputs(self):
        p = self.params
        if not 1 <= p['parallel'] <= 32:
            raise ProxmoxError('parallel must be between 1 and 32; got %s' % p['parallel'])
        if not 1 <= p['ssh_port'] <= 65535:
            raise ProxmoxError('ssh_port must be a port, 1 to 65535; got %s' % p['ssh_port'])
        if not p['plans']:
            raise ProxmoxError('plans is empty: give the plan catalogue (playbooks/vars/plans.yml)')
        for code, plan in sorted(p['plans'].items()):
            if not pod_record.is_plan_code(code) or not isinstance(plan, dict):
                raise ProxmoxError('plans: %r is not a plan code (CLOUD_POD_...) with its settings' % (code,))
            missing = [key for key in PLAN_KEYS if not isinstance(plan.get(key), int) or isinstance(plan.get(key), bool)]
            firewall = plan.get('firewall')
            if missing or not isinstance(firewall, dict):
                raise ProxmoxError('plans: %s needs the whole numbers %s and a firewall; %s'
                                   % (code, ', '.join(PLAN_KEYS), 'missing or not a number: %s' % ', '.join(missing)
                                      if missing else 'no firewall'))
            try:
                firewall_rules(firewall.get('allow_in') or [], p['ssh_port'])
            except PlanError as exc:
                raise ProxmoxError('plans: %s: %s' % (code, exc))
        if self.dns is not None:
            try:
                dns_rrsets('example.org', '192.0.2.1', self.dns['records'])
            except PlanError as exc:
                raise ProxmoxError('dns.records: %s' % exc)

    def pod_guests(self):
        guests = self.client.containers(self.client.guests())
        self._count('proxmox')
        tag = self.params['tag'].lower()
        wanted = self.params['pods']
        wanted = None if wanted is None else set(p.lower() for p in wanted)
        # A container still being cloned (lock create: a provision under way) has neither its tags nor its pod
        # record yet: named in busy when it is one of pods, or already tagged, and not checked.
        cloning = [g for g in guests if g.get('lock') == 'create' and g.get('name')]
        self.busy = sorted(g['name'] for g in cloning if (wanted is not None and g['name'].lower() in wanted)
                           or (wanted is None and tag in parse_tags(g.get('tags'))))
        pods = [g for g in guests if tag in parse_tags(g.get('tags')) and g.get('name') and g.get('lock') != 'create']
        self.missing = []
        if wanted is not None:
            pods = [g for g in pods if g['name'].lower() in wanted]
            self.missing = sorted(wanted - set(g['name'].lower() for g in pods) - set(n.lower() for n in self.busy))
        return sorted(pods, key=lambda g: int(g['vmid']))

    def check_pod(self, guest):
        name = guest['name']
        found = dict(pod=name, vmid=int(guest['vmid']), node=guest.get('node'), plan='', domain='',
                     status=guest.get('status'), suspended=False, ip='', container=[], firewall=[], dns=[],
                     problem=None, in_plan=False)
        try:
            self._check_pod(guest, found)
        except Refused as exc:
            found['problem'] = self.scrub(to_text(exc))
        except ProxmoxApiError as exc:
            if not (exc.status_code == 500 and 'does not exist' in exc.reason):
                raise  # the check cannot be made: the whole run fails, with the API's answer
            found['problem'] = 'CT %s was removed during the check' % found['vmid']
        found['in_plan'] = found['problem'] is None and not (found['container'] or found['firewall'] or found['dns'])
        return found

    def _check_pod(self, guest, found):
        p = self.params
        path = self.client.container_path(guest['node'], guest['vmid'])
        conf = self.pve_get(path + '/config') or {}
        record = pod_record.read(conf.get('description'), parse_tags(conf.get('tags')))
        found['plan'] = record['plan'] or ''
        found['domain'] = record['domain'] or ''
        if record['pod'] is None:
            raise Refused('CT %s has no "cloudpods-pod:" line in its description: not made by provision' % guest['vmid'])
        if record['pod'] != found['pod']:
            raise Refused('CT %s with hostname %s belongs to pod %s: repair -e pod=%s would refuse it'
                          % (guest['vmid'], found['pod'], record['pod'], found['pod']))
        plan = p['plans'].get(found['plan'])
        if plan is None:
            raise Refused('no known plan (%r): one of %s' % (found['plan'], ', '.join(sorted(p['plans']))))
        if found['domain'] and not names.is_domain(found['domain']):
            raise Refused('the cloudpods-domain line of CT %s is not a domain name: %r' % (guest['vmid'], found['domain']))

        status = guest.get('status')
        suspended = status != 'running' and not pve_bool(conf.get('onboot'))
        found['suspended'] = suspended
        if status == 'running':
            found['ip'] = first_global_ipv4(self.pve_get(path + '/interfaces')) or ''

        # The container, as pod_container with repair's options (converge.yml) compares it.
        params = dict(hostname=found['pod'], pod_id=found['pod'], vmid=None, template_copies=[], plan=found['plan'],
                      domain=found['domain'], state='stopped' if suspended else 'started',
                      cores=plan['vcpu'], memory=plan['memory_mb'], swap=plan['swap_mb'], disk=plan['disk_gb'],
                      onboot=not suspended, description=None, tags=None, bridge=p['bridge'], hwaddr=None,
                      full=True, storage=None, timeout=300, ip_timeout=120, template=None)
        try:
            check_options(params)
            changes = WantedPod(params, found['pod']).changes(dict(guest), conf, status)
        except ProxmoxApiError:
            raise
        except ProxmoxError as exc:  # a disk larger than the plan's, a record that cannot be written back
            raise Refused(exc.msg)
        for key, value in sorted(changes.config.items()):
            shown = 'the pod record' if key == 'description' else '%s -> %s' % (conf.get(key), value)
            found['container'].append('%s: %s' % (key, shown))
        if changes.resize:
            found['container'].append('disk: grow to %s' % changes.resize)
        if changes.power:
            found['container'].append('%s (it is %s)' % (changes.power, status))

        # The firewall, as pod_firewall with the role pod_firewall's options compares it.
        firewall = plan['firewall']
        rules = [dict(type='in', action='ACCEPT', enable=True, **rule)
                 for rule in firewall_rules(firewall.get('allow_in') or [], p['ssh_port'])]
        wanted_rules = check_rules(rules, DEFAULT_MARKER)
        fw = path + '/firewall/'
        options = self.pve_get(fw + 'options') or {}
        current_rules = self.pve_get(fw + 'rules') or []
        dhcp = True if net_uses_dhcp(conf.get('net0')) else None
        delta = options_changes(options, wanted_options(dict(
            enable=True, policy_in=firewall.get('policy_in', 'DROP'), policy_out=firewall.get('policy_out', 'ACCEPT'),
            ipfilter=True, dhcp=dhcp, macfilter=None)))
        plan_of_rules = rule_plan(current_rules, wanted_rules, DEFAULT_MARKER, p['firewall_exclusive'])
        ipset = None
        if found['ip']:
            sets = [item.get('name') for item in self.pve_get(fw + 'ipset') or []]
            exists = IPFILTER_SET in sets
            entries = (self.pve_get(fw + 'ipset/' + IPFILTER_SET) or []) if exists else []
            ipset = ipset_plan(exists, entries, [normalize_cidr(found['ip'])], DEFAULT_MARKER, p['firewall_exclusive'])
        found['firewall'] = describe_changes(delta, plan_of_rules, current_rules, ipset)

        # The zone, as powerdns_zone with the role pod_dns's options compares it.
        if self.dns is not None and found['domain']:
            self.check_zone(found)

    def check_zone(self, found):
        try:
            rrsets = dns_rrsets(found['domain'], found['ip'], self.dns['records'])
        except PlanError as exc:
            raise Refused('DNS records: %s' % exc)
        try:
            zone = normalize_zone_name(found['domain'])
        except PowerDnsError as exc:
            raise Refused('domain %r: %s' % (found['domain'], exc.msg))
        try:
            wanted, unwanted = desired_rrsets(zone, rrsets, self.dns['ttl'], self.dns['nameservers'])
        except PowerDnsApiError:
            raise
        except PowerDnsError as exc:
            raise Refused('DNS records: %s' % exc.msg)
        data = self.zone(zone)
        if data is None:
            found['dns'].append('create zone %s' % zone)
            return
        owner = (data.get('account') or '').strip()
        if owner != found['pod']:
            raise Refused('zone %s belongs to %s, not to pod %s: a repair would not change it'
                          % (zone, ('pod %r' % owner) if owner else 'no pod', found['pod']))
        for change in rrset_changes(current_rrsets(data), wanted, unwanted, zone, exclusive=self.dns['exclusive']):
            found['dns'].append('%s %s %s' % (change.action, change.name, change.type))

    def firewall_enforced(self):
        """Warn, as pod_firewall does, when Proxmox VE enforces no container firewall at all."""
        try:
            options = self.pve_get('cluster/firewall/options') or {}
        except ProxmoxApiError as exc:
            if exc.status_code != 403:
                raise
            self.module.warn('Cannot tell whether Proxmox VE enforces the firewall: %s' % exc.msg)
            return
        if str(options.get('enable') or '0') in ('0', ''):
            self.module.warn('The datacenter firewall is off (/cluster/firewall/options enable=0): Proxmox VE enforces '
                             'no container firewall, so no pod is filtered although their firewalls are set.')

    def run(self):
        self._thread_clients = []
        self.check_inputs()
        self.firewall_enforced()
        guests = self.pod_guests()
        if self.params['parallel'] == 1 or len(guests) < 2:
            pods = [self.check_pod(g) for g in guests]
        else:
            with ThreadPoolExecutor(max_workers=self.params['parallel']) as pool:
                pods = list(pool.map(self.check_pod, guests))
        pods.sort(key=lambda found: found['pod'])
        return dict(changed=False, pods=pods, reads=dict(self.reads), missing=self.missing, busy=self.busy,
                    drifted=[f['pod'] for f in pods if f['problem'] is None and not f['in_plan']],
                    problems=[f['pod'] for f in pods if f['problem'] is not None])


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PodFleetInfo(module).execute()


if __name__ == '__main__':
    main()
