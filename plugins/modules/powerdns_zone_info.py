#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: powerdns_zone_info
short_description: Read a DNS zone and its record sets from PowerDNS Authoritative
version_added: 0.1.0
description:
  - With O(name), returns that zone with its rrsets (in the canonical form M(mpanel.cloudpods.powerdns_zone) compares),
    or an empty RV(zone) and RV(exists=false) when there is no such zone.
  - Without O(name), lists the zones of the server (without their rrsets), optionally only those of one O(account).
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  name:
    description:
      - The zone to read, for example V(example.com). Checked and converted like the O(mpanel.cloudpods.powerdns_zone#module:name)
        option of M(mpanel.cloudpods.powerdns_zone) (punycode, trailing dot).
    type: str
    aliases: [zone]
  account:
    description:
      - Without O(name), list only the zones whose account (owning pod) is this.
      - With O(name), ignored.
    type: str
extends_documentation_fragment:
  - mpanel.cloudpods.powerdns
  - mpanel.cloudpods.powerdns.actiongroup_powerdns
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
  - mpanel.cloudpods.attributes.info_module
seealso:
  - module: mpanel.cloudpods.powerdns_zone
"""

EXAMPLES = r"""
- name: Read the zone of a pod
  mpanel.cloudpods.powerdns_zone_info:
    name: shop-example.com
  register: dns

- name: Show who owns it and its MX
  ansible.builtin.debug:
    msg: "{{ dns.zone.account }}: {{ dns.zone.rrsets | selectattr('type', 'eq', 'MX') | map(attribute='records') | list }}"
  when: dns.exists

- name: Zones of one pod
  mpanel.cloudpods.powerdns_zone_info:
    account: sub-1042
  register: pod_zones
"""

RETURN = r"""
exists:
  description: Whether the zone exists.
  returned: when O(name) is given
  type: bool
  sample: true
zone:
  description: The zone, empty when it does not exist.
  returned: when O(name) is given
  type: dict
  contains:
    name:
      description: Zone name in ASCII form with a trailing dot.
      type: str
      sample: shop-example.com.
    kind:
      description: Zone kind.
      type: str
      sample: Native
    account:
      description: The pod that owns the zone (empty when none).
      type: str
      sample: sub-1042
    serial:
      description: SOA serial.
      type: int
      sample: 2025112601
    soa:
      description: Content of the SOA record.
      type: str
      sample: ns1.example.net. hostmaster.shop-example.com. 2025112601 10800 3600 604800 3600
    rrsets:
      description: Every rrset but the SOA, sorted by name and type, records in canonical form (a disabled record
        ends with C( (disabled))).
      type: list
      elements: dict
      sample: [{"name": "shop-example.com.", "type": "A", "ttl": 3600, "records": ["203.0.113.10"]}]
zones:
  description: The zones of the server (or of O(account)), sorted by name, without rrsets.
  returned: when O(name) is not given
  type: list
  elements: dict
  sample: [{"name": "shop-example.com.", "kind": "Native", "account": "sub-1042", "serial": 2025112601}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils.powerdns import (
    PowerDnsModule,
    current_rrsets,
    normalize_zone_name,
    powerdns_argument_spec,
    rrsets_list,
)


def argument_spec():
    spec = powerdns_argument_spec()
    spec.update(
        name=dict(type='str', aliases=['zone']),
        account=dict(type='str'),
    )
    return spec


def describe_zone(data):
    soa = ''
    for rrset in data.get('rrsets') or []:
        if (rrset.get('type') or '').upper() == 'SOA' and rrset.get('records'):
            soa = rrset['records'][0].get('content', '')
    return dict(name=data.get('name'), kind=data.get('kind'), account=data.get('account') or '',
                serial=data.get('serial'), soa=soa, rrsets=rrsets_list(current_rrsets(data)))


class PowerDnsZoneInfo(PowerDnsModule):

    def run(self):
        params = self.module.params
        if params['name'] is not None:
            zone = normalize_zone_name(params['name'])
            data = self.client.get_zone(zone)
            if data is None:
                return dict(changed=False, exists=False, zone={})
            return dict(changed=False, exists=True, zone=describe_zone(data))
        zones = []
        for data in self.client.list_zones():
            account = data.get('account') or ''
            if params['account'] is not None and account != params['account']:
                continue
            zones.append(dict(name=data.get('name'), kind=data.get('kind'), account=account,
                              serial=data.get('serial')))
        return dict(changed=False, zones=sorted(zones, key=lambda z: z['name'] or ''))


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PowerDnsZoneInfo(module).execute()


if __name__ == '__main__':
    main()
