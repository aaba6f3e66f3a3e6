#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_firewall
short_description: Converge the Proxmox VE firewall of one Cloud Pod container
version_added: 0.2.0
description:
  - Sets the container's firewall options (C(enable), C(policy_in), C(policy_out), C(ipfilter), C(dhcp)) through
    C(/nodes/{node}/lxc/{vmid}/firewall/options) and its rules through C(.../firewall/rules).
  - Our rules carry a marker in their C(comment) (O(marker) followed by the rule's name); they are matched by that name,
    never by position (Proxmox VE inserts every new rule at the top). A rule of ours that differs is updated in place,
    a missing one is created (enabled unless the rule says otherwise), one no longer wanted is deleted, and ours are
    kept in the given order. Rules without the marker (added by an operator) are kept unless O(exclusive=true).
  - Sends only what differs, nothing when nothing does. Every C(PUT) and C(DELETE) carries the digest of what it
    changes, so a concurrent edit makes the call fail instead of changing the wrong rule.
  - Reads the datacenter firewall (C(/cluster/firewall/options)). When it is off, Proxmox VE enforces no container
    firewall at all; the module then warns and returns RV(enforced=false), and still sets the container's firewall.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  vmid:
    description:
      - VMID of the container (on O(node)).
    type: int
    required: true
  enable:
    description:
      - Turn the container's firewall on (or off).
    type: bool
    default: true
  policy_in:
    description:
      - What happens to traffic to the container that no rule matches. V(REJECT) answers (TCP reset, ICMP port
        unreachable), V(DROP) does not.
      - Proxmox VE's own default when unset is V(DROP).
    type: str
    choices: [ACCEPT, REJECT, DROP]
    default: DROP
  policy_out:
    description:
      - What happens to traffic from the container that no rule matches. Proxmox VE's default when unset is V(ACCEPT).
    type: str
    choices: [ACCEPT, REJECT, DROP]
    default: ACCEPT
  ipfilter:
    description:
      - Anti-spoofing. The container may only send from its addresses (the ones configured on C(net0) and the
        entries of the IP set C(ipfilter-net0)) and IPv6 link-local.
      - A container on DHCP has no configured address, so Proxmox VE would let it send from none (only DHCP and
        replies to connections made to it), so give its lease in O(ipfilter_addresses).
    type: bool
    default: true
  ipfilter_addresses:
    description:
      - Addresses the container may send from, kept in the IP set C(ipfilter-net0) (created when missing). Our entries
        carry O(marker) as comment; entries added by hand are kept unless O(exclusive=true).
      - When omitted, the IP set is not managed.
    type: list
    elements: str
  dhcp:
    description:
      - Let DHCP through (requests from the container, answers to it) before the policies.
      - When omitted it is V(true) if C(net0) takes its address by DHCP (C(ip=dhcp)), else not managed. With
        O(policy_in=DROP) and C(dhcp=0) Proxmox VE drops the DHCP answers and the container gets no address.
    type: bool
  macfilter:
    description:
      - MAC address filter (Proxmox VE's default is on). Not managed when omitted.
    type: bool
  rules:
    description:
      - The rules of ours, in order (the first matching rule decides).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The rule's name, unique among the rules; it follows the marker in the comment. Default C(<dport>/<proto>).
        type: str
      type:
        description: Direction.
        type: str
        choices: [in, out]
        default: in
      action:
        description: What a matching packet gets.
        type: str
        choices: [ACCEPT, REJECT, DROP]
        default: ACCEPT
      proto:
        description: "Protocol (C(tcp), C(udp), C(icmp), ...); needed with O(rules[].dport) or O(rules[].sport)."
        type: str
      dport:
        description: "Destination ports (C(80), C(8000:8100), C(80,443))."
        type: str
      sport:
        description: Source ports.
        type: str
      source:
        description: Source addresses or networks, comma separated.
        type: str
      dest:
        description: Destination addresses or networks, comma separated.
        type: str
      macro:
        description: A Proxmox VE macro (C(SSH), C(HTTP), ...).
        type: str
      iface:
        description: Network device of the container (C(net0)).
        type: str
      log:
        description: Log level of the rule.
        type: str
        choices: [emerg, alert, crit, err, warning, notice, info, debug, nolog]
      enable:
        description: Whether the rule is active.
        type: bool
        default: true
  exclusive:
    description:
      - Delete every rule (and C(ipfilter-net0) entry) that is not ours.
    type: bool
    default: false
  marker:
    description:
      - The start of the comment of our rules.
    type: str
    default: "cloudpods:"
  timeout:
    description:
      - Seconds to keep retrying transient failures of one call.
    type: int
    default: 60
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
attributes:
  check_mode:
    support: full
    details: Reads the firewall, computes the changes and makes none.
  diff_mode:
    support: full
    details: Shows the options, the rules and the C(ipfilter-net0) entries before and after.
  platform:
    platforms: all
notes:
  - Privileges (the C(CloudPodsProv) role has them) are C(VM.Audit) on C(/vms/<vmid>) to read and C(VM.Config.Network)
    to change the container's firewall, and C(Sys.Audit) on C(/) to read the datacenter firewall's state. Without
    C(Sys.Audit) the module warns and returns RV(enforced=null).
  - Proxmox VE filters a network device only when its C(netX) has C(firewall=1) (mpanel.cloudpods.pod_container sets
    it); the module warns when C(net0) lacks it.
seealso:
  - module: mpanel.cloudpods.pod_container
"""

EXAMPLES = r"""
- name: Only web and SSH in, anything out
  mpanel.cloudpods.pod_firewall:
    vmid: 101
    policy_in: DROP
    policy_out: ACCEPT
    ipfilter_addresses: ["{{ pod.ip }}"]
    rules:
      - {name: http, proto: tcp, dport: "80"}
      - {name: https, proto: tcp, dport: "443"}
      - {name: ssh, proto: tcp, dport: "22"}

- name: Turn the firewall off, keep the rules
  mpanel.cloudpods.pod_firewall:
    vmid: 101
    enable: false
    rules: "{{ pod_rules }}"
"""

RETURN = r"""
enforced:
  description:
    - Whether Proxmox VE enforces the container's firewall at all, that is whether the datacenter firewall is on.
    - V(null) when it could not be read (no C(Sys.Audit) on C(/)).
  returned: always
  type: bool
  sample: true
options:
  description: The managed options after the run.
  returned: always
  type: dict
  sample: {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT", "ipfilter": 1, "dhcp": 1}
rules:
  description: The container's rules after the run (ours and others), in order, with the managed fields.
  returned: always
  type: list
  elements: dict
  sample: [{"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "80", "enable": 1, "comment": "cloudpods: http"}]
changes:
  description: What was changed (or would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["options: enable=1, policy_in=DROP", "create rule cloudpods: ssh", "delete rule cloudpods: 8080/tcp"]
api_retries:
  description: Retries made for transient Proxmox failures, by reason.
  returned: always
  type: dict
  sample: {"locked": 0, "lock_timeout": 0, "vmid_taken": 0, "http_595": 0, "http_596": 0}
diff:
  description: Options, rules and C(ipfilter-net0) entries before and after.
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import quote
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pod_firewall import (
    DEFAULT_MARKER,
    IPFILTER_SET,
    check_rules,
    describe_changes,
    ipset_plan,
    ipset_view,
    net_firewall_flag,
    net_uses_dhcp,
    normalize_cidr,
    normalize_options,
    normalize_rule,
    options_changes,
    ours_in_order,
    predict_rules,
    rule_name,
    rule_plan,
    wanted_options,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxApiError, ProxmoxError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec


def argument_spec():
    spec = proxmox_argument_spec()
    policies = ['ACCEPT', 'REJECT', 'DROP']
    spec.update(
        vmid=dict(type='int', required=True),
        enable=dict(type='bool', default=True),
        policy_in=dict(type='str', choices=policies, default='DROP'),
        policy_out=dict(type='str', choices=policies, default='ACCEPT'),
        ipfilter=dict(type='bool', default=True),
        ipfilter_addresses=dict(type='list', elements='str'),
        dhcp=dict(type='bool'),
        macfilter=dict(type='bool'),
        rules=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str'),
            type=dict(type='str', choices=['in', 'out'], default='in'),
            action=dict(type='str', choices=policies, default='ACCEPT'),
            proto=dict(type='str'),
            dport=dict(type='str'),
            sport=dict(type='str'),
            source=dict(type='str'),
            dest=dict(type='str'),
            macro=dict(type='str'),
            iface=dict(type='str'),
            log=dict(type='str', choices=['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug',
                                          'nolog']),
            enable=dict(type='bool', default=True),
        )),
        exclusive=dict(type='bool', default=False),
        marker=dict(type='str', default=DEFAULT_MARKER),
        timeout=dict(type='int', default=60),
    )
    return spec


class PodFirewall(ProxmoxModule):

    def __init__(self, module):
        super(PodFirewall, self).__init__(module)
        self.params = module.params
        self.vmid = self.params['vmid']
        self.marker = self.params['marker']
        self.changes = []

    def path(self, suffix):
        return self.client.container_path(self.node, self.vmid, 'firewall/' + suffix)

    # -- reading --------------------------------------------------------

    def datacenter_enforces(self):
        """True/False from ``/cluster/firewall/options`` (``enable``), None when it may not be read."""
        try:
            options = self.client.get('cluster/firewall/options') or {}
        except ProxmoxApiError as exc:
            if exc.status_code != 403:
                raise
            self.module.warn('Cannot tell whether Proxmox VE enforces the firewall: %s' % exc.msg)
            return None
        enforced = str(options.get('enable') or '0') not in ('0', '')
        if not enforced:
            self.module.warn('The datacenter firewall is off (/cluster/firewall/options enable=0): Proxmox VE enforces '
                             'no container firewall, so CT %s is NOT filtered although its firewall is set. Turn it on '
                             'under Datacenter > Firewall > Options (first allow the management ports there).'
                             % self.vmid)
        return enforced

    def read_rules(self):
        return self.client.get(self.path('rules')) or []

    def read_ipset(self):
        """(exists, entries) of ``ipfilter-net0``."""
        names = [item.get('name') for item in self.client.get(self.path('ipset')) or []]
        if IPFILTER_SET not in names:
            return False, []
        return True, self.client.get(self.path('ipset/' + IPFILTER_SET)) or []

    # -- the run ----------------------------------------------------------

    def run(self):
        if self.vmid < 100:
            raise ProxmoxError('vmid must be 100 or more; got %s' % self.vmid)
        if not self.marker.strip():
            raise ProxmoxError('marker must not be empty: it tells our rules from an operator\'s')
        wanted_rules = check_rules(self.params['rules'], self.marker)
        addresses = None
        if self.params['ipfilter_addresses'] is not None:
            addresses = sorted(set(normalize_cidr(a) for a in self.params['ipfilter_addresses'] if a))

        enforced = self.datacenter_enforces()
        conf = self.client.get(self.client.container_path(self.node, self.vmid, 'config')) or {}
        net0 = conf.get('net0')
        if not net_firewall_flag(net0):
            self.module.warn('net0 of CT %s has no firewall=1: Proxmox VE does not filter that interface' % self.vmid)
        params = dict(self.params)
        if params['dhcp'] is None and net_uses_dhcp(net0):
            params['dhcp'] = True
        options_before = self.client.get(self.path('options')) or {}
        rules_before = self.read_rules()
        ipset_exists, entries_before = (self.read_ipset() if addresses is not None else (True, []))

        option_delta = options_changes(options_before, wanted_options(params))
        plan = rule_plan(rules_before, wanted_rules, self.marker, self.params['exclusive'])
        ipset = ipset_plan(ipset_exists, entries_before, addresses or [], self.marker, self.params['exclusive']) \
            if addresses is not None else None
        self.describe(option_delta, plan, rules_before, ipset)

        options_after = dict(normalize_options(options_before), **option_delta)
        rules_after = predict_rules(rules_before, plan)
        entries_after = ipset_view(entries_before)
        if ipset is not None:
            entries_after = sorted(set(entries_after) - set(ipset.remove) | set(ipset.add))
        before = dict(options=normalize_options(options_before), rules=[normalize_rule(r) for r in rules_before])
        after = dict(options=options_after, rules=rules_after)
        if addresses is not None:
            before[IPFILTER_SET] = ipset_view(entries_before) if ipset_exists else None
            after[IPFILTER_SET] = entries_after

        changed = bool(self.changes)
        if changed and not self.module.check_mode:
            # The IP set first: with ipfilter about to be turned on, the container keeps its address.
            if ipset:
                self.apply_ipset(ipset)
            self.apply_rules(plan, wanted_rules)
            if option_delta:
                self.client.put(self.path('options'), digest=options_before.get('digest'), **option_delta)
            options_after = normalize_options(self.client.get(self.path('options')) or {})
            rules_after = [normalize_rule(r) for r in self.read_rules()]
            after.update(options=options_after, rules=rules_after)
            if addresses is not None:
                after[IPFILTER_SET] = ipset_view(self.read_ipset()[1])
        result = dict(changed=changed, vmid=self.vmid, node=self.node, enforced=enforced, options=options_after,
                      rules=rules_after, changes=self.changes)
        if self.module._diff:
            result['diff'] = dict(before=before, after=after)
        return result

    def describe(self, option_delta, plan, rules_before, ipset):
        self.changes.extend(describe_changes(option_delta, plan, rules_before, ipset))

    # -- writing ----------------------------------------------------------

    def apply_ipset(self, ipset):
        if ipset.create:
            self.client.post(self.path('ipset'), name=IPFILTER_SET, comment='%s anti-spoofing' % self.marker)
        for cidr in ipset.add:
            self.client.post(self.path('ipset/' + IPFILTER_SET), cidr=cidr, comment=self.marker)
        for cidr in ipset.remove:
            digest = (self.read_ipset()[1] or [{}])[0].get('digest')
            self.client.delete(self.path('ipset/%s/%s' % (IPFILTER_SET, quote(cidr, safe=''))), digest=digest)

    def apply_rules(self, plan, wanted_rules):
        """Carry out ``plan``, reading the list again after each change: positions and the digest move."""
        rules = None
        for pos in sorted(plan.update):
            rules = self.read_rules() if rules is None else rules
            params, delete = plan.update[pos]
            self.client.put(self.path('rules/%d' % pos), digest=_digest(rules),
                            delete=','.join(delete) if delete else None, **params)
            rules = None
        for pos in sorted(plan.delete, reverse=True):
            rules = self.read_rules() if rules is None else rules
            self.client.delete(self.path('rules/%d' % pos), digest=_digest(rules))
            rules = None
        for rule in reversed(plan.create):
            self.client.post(self.path('rules'), **rule)
        if plan.reorder:
            for rule in reversed(wanted_rules):  # each moved to the top: the first one ends first
                rules = self.read_rules()
                if ours_in_order([normalize_rule(r) for r in rules], wanted_rules, self.marker):
                    break
                pos = [i for i, r in enumerate(rules)
                       if rule_name(self.marker, r.get('comment')) == rule_name(self.marker, rule['comment'])][0]
                self.client.put(self.path('rules/%d' % pos), digest=_digest(rules), moveto=0)


def _digest(rules):
    return rules[0].get('digest') if rules else None


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PodFirewall(module).execute()


if __name__ == '__main__':
    main()
