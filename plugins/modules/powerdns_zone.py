#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: powerdns_zone
short_description: Converge one DNS zone and its record sets on PowerDNS Authoritative
version_added: 0.1.0
description:
  - Creates, updates or deletes a zone through the PowerDNS Authoritative HTTP API.
  - Reads the zone once, compares every record set (rrset) in canonical form, and sends only the rrsets that differ,
    all in one C(PATCH) (PowerDNS applies it in one transaction). A run with nothing to change makes exactly one
    C(GET).
  - Records compare equal however they are written; names are lower-cased and absolute, MX is C(priority host.),
    TXT is quoted (long strings split at 255 octets), IPv6 addresses are compressed. A second run with the same
    input reports no change.
  - The zone's C(account) records the pod that owns it. A zone owned by another pod is never changed or deleted; the
    module fails and says so. Nor is a zone created inside a zone that is not the pod's own (C(shop.example.com)
    when C(example.com) belongs to another pod or to nobody), which would take over part of that domain.
  - Names are checked before any call to the API; the message says which rule a bad name broke.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  name:
    description:
      - The zone (the customer's domain), for example V(example.com). A trailing dot is optional.
      - Internationalized names are converted to punycode (V(bücher.de) becomes V(xn--bcher-kva.de.)).
      - Must have at least two labels, letters, digits and hyphens only (no hyphen at either end of a label), at most
        63 characters per label and 253 in all, no wildcard, and a top-level label of letters (or an internationalized
        one); the rule of C(cloudpods_domain_pattern), checked on the punycode form.
    type: str
    required: true
    aliases: [zone]
  state:
    description:
      - V(present) - the zone exists with the given rrsets.
      - V(absent) - the zone is deleted with all its records.
    type: str
    choices: [present, absent]
    default: present
  kind:
    description:
      - Zone kind. A new zone is created as V(Native) when omitted.
      - The kind of an existing zone is changed only when this is given.
    type: str
    choices: [Native, Master]
  account:
    description:
      - The pod that owns the zone (stored in the zone's PowerDNS C(account) field), for example the subscription id.
      - When given, a zone whose account names another pod is refused (nothing is changed, the module fails), and so is
        an existing zone with an empty account unless O(take_over=true).
      - When given, a new zone inside an existing zone of another account (or of none) is refused too.
      - When omitted, the zone's account is neither checked nor changed (for operators, not for pod playbooks).
    type: str
  take_over:
    description:
      - Claim an existing zone whose account is empty for O(account) (set its account).
      - Zones owned by another pod are never taken over.
    type: bool
    default: false
  nameservers:
    description:
      - Host names of the zone's name servers, the apex C(NS) rrset (with O(ttl)).
      - When omitted, the apex NS rrset is left as it is (a new zone then has none).
    type: list
    elements: str
  ttl:
    description:
      - TTL of rrsets that do not give their own, and of the apex NS rrset.
    type: int
    default: 3600
  rrsets:
    description:
      - Record sets of the zone. Each is identified by O(rrsets[].name) and O(rrsets[].type); its records replace the
        ones PowerDNS has when they differ.
      - Rrsets not listed here are kept, unless O(exclusive=true).
      - The SOA record is maintained by PowerDNS and cannot be given. The apex NS rrset is given with O(nameservers)
        (or here, when O(nameservers) is omitted).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Owner name. V(@) is the zone apex; a name without a trailing dot that does not end with the zone name is
            relative to the zone (V(www), V(_dmarc), V(mail._domainkey)); a name with a trailing dot must lie inside
            the zone.
          - A wildcard is allowed as the whole leftmost label (V(*.example.com)).
        type: str
        required: true
      type:
        description:
          - Record type, for example V(A), V(AAAA), V(CNAME), V(MX), V(TXT), V(SRV), V(CAA), V(NS).
        type: str
        required: true
      ttl:
        description:
          - TTL in seconds. Defaults to O(ttl).
        type: int
      records:
        description:
          - The record contents. Domain names in them are always absolute (a trailing dot is optional).
          - V(A) and V(AAAA) - an address. V(MX) - V(priority host), for example V(10 mail.example.net).
            V(SRV) - V(priority weight port target). V(CAA) - V(flags tag value).
          - V(TXT) - plain text (V(v=spf1 mx -all)), quoted for you and split into strings of at most 255 octets;
            or zone-file syntax, one or more quoted strings (V("part one" "part two")).
          - Other types are sent as written; PowerDNS checks them.
        type: list
        elements: str
        default: []
      state:
        description:
          - V(absent) removes this rrset (its records are ignored).
        type: str
        choices: [present, absent]
        default: present
  exclusive:
    description:
      - Remove every rrset of the zone that O(rrsets) does not list. The SOA and the apex NS rrset are never removed.
      - By default other rrsets are kept, so records an operator added by hand survive a repair.
    type: bool
    default: false
extends_documentation_fragment:
  - mpanel.cloudpods.powerdns
  - mpanel.cloudpods.powerdns.actiongroup_powerdns
  - ansible.builtin.action_common_attributes
  - mpanel.cloudpods.attributes.in_process
attributes:
  check_mode:
    support: full
    details: Reads the zone, reports exactly the changes it would make (in RV(changes) and the diff) and sends nothing.
  diff_mode:
    support: full
    details: Before and after show the zone's kind, account and every rrset but the SOA; before is empty for a new
      zone, after is empty for a deleted one.
  platform:
    platforms: all
notes:
  - A zone is created in one request with all its rrsets, and changed in one C(PATCH); a run that fails leaves the
    zone as it was. Kind and account changes are a separate C(PUT).
  - Records that PowerDNS has marked disabled differ from the enabled records this module writes, and are replaced.
seealso:
  - module: mpanel.cloudpods.powerdns_zone_info
  - name: PowerDNS Authoritative HTTP API
    description: The zones and rrsets endpoints this module uses.
    link: https://doc.powerdns.com/authoritative/http-api/zone.html
"""

EXAMPLES = r"""
- name: Zone of a pod with web and mail records
  mpanel.cloudpods.powerdns_zone:
    name: shop-example.com
    account: sub-1042
    nameservers: [ns1.example.net]
    ttl: 3600
    rrsets:
      - {name: "@", type: A, records: [203.0.113.10]}
      - {name: www, type: A, records: [203.0.113.10]}
      - {name: "@", type: MX, records: ["10 mail.example.net"]}
      - {name: "@", type: TXT, records: ["v=spf1 mx include:_spf.example.net -all"]}
      - {name: _dmarc, type: TXT, records: ["v=DMARC1; p=quarantine; rua=mailto:postmaster@shop-example.com"]}

- name: Set the connection once for every PowerDNS module of the collection
  module_defaults:
    group/mpanel.cloudpods.powerdns:
      api_url: http://10.1.10.102:8081
      api_key: "{{ vault_powerdns_api_key }}"
  block:
    - name: Exactly these rrsets, nothing else (SOA and apex NS stay)
      mpanel.cloudpods.powerdns_zone:
        name: shop-example.com
        account: sub-1042
        exclusive: true
        rrsets:
          - {name: "@", type: A, ttl: 300, records: [203.0.113.11]}

    - name: Remove one rrset
      mpanel.cloudpods.powerdns_zone:
        name: shop-example.com
        account: sub-1042
        rrsets:
          - {name: old, type: CNAME, state: absent}

- name: Delete the zone (only if it belongs to this pod)
  mpanel.cloudpods.powerdns_zone:
    name: shop-example.com
    account: sub-1042
    state: absent
"""

RETURN = r"""
zone:
  description:
    - The zone after the run (predicted in check mode), without the SOA record. Empty when absent.
  returned: always
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
      description: The pod that owns the zone.
      type: str
      sample: sub-1042
    rrsets:
      description: Record sets, sorted by name and type, records in canonical form.
      type: list
      elements: dict
      sample: [{"name": "shop-example.com.", "type": "A", "ttl": 3600, "records": ["203.0.113.10"]}]
created:
  description: Whether the zone was created by this run (would be, in check mode).
  returned: always
  type: bool
  sample: true
changes:
  description:
    - The rrset changes made (or that would be made, in check mode), in the order sent.
    - C(action) is V(create), V(update) or V(delete); C(ttl) and C(records) are the new values (the removed ones for
      V(delete)); C(before) holds the old values of an V(update).
  returned: always
  type: list
  elements: dict
  sample:
    - {"action": "update", "name": "www.shop-example.com.", "type": "A", "ttl": 3600, "records": ["203.0.113.11"],
       "before": {"ttl": 3600, "records": ["203.0.113.10"]}}
diff:
  description: The zone before and after (kind, account, and rrsets keyed C(NAME TYPE)).
  returned: when diff mode is on
  type: dict
  sample:
    before: {"name": "shop-example.com.", "kind": "Native", "account": "sub-1042",
             "rrsets": {"www.shop-example.com. A": {"ttl": 3600, "records": ["203.0.113.10"]}}}
    after: {"name": "shop-example.com.", "kind": "Native", "account": "sub-1042",
            "rrsets": {"www.shop-example.com. A": {"ttl": 3600, "records": ["203.0.113.11"]}}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils.powerdns import (
    PowerDnsApiError,
    PowerDnsError,
    PowerDnsModule,
    apply_changes,
    change_to_dict,
    current_rrsets,
    desired_rrsets,
    normalize_zone_name,
    patch_body,
    powerdns_argument_spec,
    rrset_changes,
    rrsets_list,
    zone_view,
)


def argument_spec():
    spec = powerdns_argument_spec()
    spec.update(
        name=dict(type='str', required=True, aliases=['zone']),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        kind=dict(type='str', choices=['Native', 'Master']),
        account=dict(type='str'),
        take_over=dict(type='bool', default=False),
        nameservers=dict(type='list', elements='str'),
        ttl=dict(type='int', default=3600),
        rrsets=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True),
            type=dict(type='str', required=True),
            ttl=dict(type='int'),
            records=dict(type='list', elements='str', default=[]),
            state=dict(type='str', default='present', choices=['present', 'absent']),
        )),
        exclusive=dict(type='bool', default=False),
    )
    return spec


class PowerDnsZone(PowerDnsModule):

    def __init__(self, module):
        super(PowerDnsZone, self).__init__(module)
        self.params = module.params
        self.state = self.params['state']
        self.account = self.params['account']
        if self.account is not None:
            self.account = self.account.strip()
            if not self.account:
                self.fail('account is empty: give the pod id that owns the zone, or omit account')

    # -- ownership -------------------------------------------------------

    def check_owner(self, zone, data):
        """Refuse a zone that is not ours; return the account changes to make (may be empty)."""
        if self.account is None:
            return {}
        owner = (data.get('account') or '').strip()
        if owner == self.account:
            return {}
        if owner:
            raise PowerDnsError('Zone %s belongs to pod %r (its PowerDNS account), not to %r: it was not changed. A pod '
                                'can only manage its own domain; if the domain really moved, an operator must change '
                                'the zone\'s account first' % (zone, owner, self.account))
        if not self.params['take_over']:
            raise PowerDnsError('Zone %s already exists and belongs to no pod (its PowerDNS account is empty): it was not '
                                'changed. Set take_over=true to claim it for %r' % (zone, self.account))
        return {'account': self.account}

    # -- run -------------------------------------------------------------

    def run(self):
        zone = normalize_zone_name(self.params['name'])
        if self.state == 'absent':
            return self.ensure_absent(zone)
        wanted, unwanted = desired_rrsets(zone, self.params['rrsets'], self.params['ttl'], self.params['nameservers'])
        data = self.client.get_zone(zone)
        if data is None:
            result = self.create(zone, wanted)
            if result is not None:
                return result
            data = self.client.get_zone(zone)  # created meanwhile by somebody else (409): converge it instead
            if data is None:
                raise PowerDnsError('Zone %s was reported as existing (409) but cannot be read back' % zone)
        return self.update(zone, data, wanted, unwanted)

    def check_enclosing(self, zone):
        """A pod may not create a zone inside a domain that is not its own.

        PowerDNS answers for a name from the closest zone it has, so ``shop.example.com`` created
        for one pod would take over that part of ``example.com`` from its owner.
        """
        if self.account is None:
            return
        for parent in self.client.enclosing_zones(zone):
            owner = (parent.get('account') or '').strip()
            if owner != self.account:
                raise PowerDnsError('Zone %s cannot be created for %r: it lies inside zone %s, which belongs to %s. '
                                    'It would take over that part of the domain, so nothing was changed'
                                    % (zone, self.account, parent.get('name'),
                                       ('pod %r' % owner) if owner else 'no pod (an operator\'s zone)'))

    def create(self, zone, wanted):
        """Create the zone with all its rrsets in one request; None if it exists after all (409)."""
        self.check_enclosing(zone)
        kind = self.params['kind'] or 'Native'
        account = self.account or ''
        changes = rrset_changes({}, wanted, set(), zone)
        after = apply_changes({}, changes)
        result = dict(changed=True, created=True, changes=[change_to_dict(c) for c in changes],
                      zone=dict(name=zone, kind=kind, account=account, rrsets=rrsets_list(after)),
                      diff=dict(before={}, after=zone_view(zone, kind, account, after)))
        if self.module.check_mode:
            return result
        body = dict(name=zone, kind=kind, account=account, nameservers=[], rrsets=[
            dict(name=r.name, type=r.type, ttl=r.ttl, records=[dict(content=c, disabled=False) for c in r.records])
            for dummy, r in sorted(wanted.items())])
        try:
            self.client.create_zone(body)
        except PowerDnsApiError as exc:
            if exc.status_code == 409:
                return None
            raise
        return result

    def update(self, zone, data, wanted, unwanted):
        attributes = self.check_owner(zone, data)
        kind = data.get('kind') or 'Native'
        if self.params['kind'] and self.params['kind'] != kind:
            attributes['kind'] = self.params['kind']
        current = current_rrsets(data)
        changes = rrset_changes(current, wanted, unwanted, zone, exclusive=self.params['exclusive'])
        after = apply_changes(current, changes)
        account = data.get('account') or ''
        new_account = attributes.get('account', account)
        new_kind = attributes.get('kind', kind)
        result = dict(changed=bool(changes or attributes), created=False,
                      changes=[change_to_dict(c) for c in changes],
                      zone=dict(name=zone, kind=new_kind, account=new_account, rrsets=rrsets_list(after)),
                      diff=dict(before=zone_view(zone, kind, account, current),
                                after=zone_view(zone, new_kind, new_account, after)))
        if self.module.check_mode:
            return result
        if attributes:  # a claimed zone is ours before its records change
            self.client.update_zone(zone, attributes)
        if changes:
            self.client.patch_zone(zone, patch_body(changes))
        return result

    def ensure_absent(self, zone):
        data = self.client.get_zone(zone)
        if data is None:
            return dict(changed=False, created=False, changes=[], zone={}, diff=dict(before={}, after={}))
        self.check_owner(zone, data)
        current = current_rrsets(data)
        changes = [change_to_dict(c) for c in rrset_changes(current, {}, set(current), zone)]
        result = dict(changed=True, created=False, changes=changes, zone={},
                      diff=dict(before=zone_view(zone, data.get('kind') or 'Native', data.get('account') or '',
                                                 current), after={}))
        if not self.module.check_mode:
            self.client.delete_zone(zone)
        return result


def main(module_class=AnsibleModule):
    """module_class: AnsibleModule, or the stand-in of the action of the same name (the run in the controller)."""
    module = module_class(argument_spec=argument_spec(), supports_check_mode=True)
    PowerDnsZone(module).execute()


if __name__ == '__main__':
    main()
