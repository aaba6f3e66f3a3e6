# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of powerdns_zone's decisions against an in-memory stand-in for the API client.

The real server is exercised by tests/integration; here are the paths a real server rarely
takes on demand (a zone created by somebody else between our GET and POST) and the exact
calls each decision makes.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import powerdns as pd
from ansible_collections.mpanel.cloudpods.plugins.modules import powerdns_zone as pz

ZONE = 'example.com.'


class FakeClient(object):
    """Zones in memory, answering like PowerDNS; ``calls`` lists (method, what)."""

    def __init__(self, zones=None, race=None):
        self.zones = zones or {}
        self.race = race  # a zone that appears when we try to create it
        self.calls = []
        self.last_patch = None

    def enclosing_zones(self, zone):
        labels = zone.rstrip('.').split('.')
        parents = ['.'.join(labels[start:]) + '.' for start in range(1, len(labels) - 1)]  # as the real client asks
        self.calls.extend(('LIST', parent) for parent in parents)
        return [self.zones[parent] for parent in parents if parent in self.zones]

    def get_zone(self, zone):
        self.calls.append(('GET', zone))
        return self.zones.get(zone)

    def create_zone(self, body):
        self.calls.append(('POST', body['name']))
        if self.race is not None:
            self.zones[body['name']] = self.race
            raise pd.PowerDnsApiError('conflict', status_code=409)
        self.zones[body['name']] = dict(body, rrsets=body['rrsets'])
        return self.zones[body['name']]

    def patch_zone(self, zone, body):
        self.calls.append(('PATCH', zone))
        self.last_patch = body

    def update_zone(self, zone, attributes):
        self.calls.append(('PUT', zone))
        self.zones[zone].update(attributes)

    def delete_zone(self, zone):
        self.calls.append(('DELETE', zone))
        self.zones.pop(zone, None)


class FakeModule(object):
    def __init__(self, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode


def zone_module(client, check_mode=False, **params):
    defaults = dict(name='example.com', state='present', kind=None, account='pod-1', take_over=False,
                    nameservers=None, ttl=3600, rrsets=[], exclusive=False)
    defaults.update(params)
    module = pz.PowerDnsZone.__new__(pz.PowerDnsZone)  # no AnsibleModule, no connection
    module.module = FakeModule(defaults, check_mode)
    module.params = defaults
    module.state = defaults['state']
    module.account = defaults['account']
    module.client = client
    return module


def existing(account='pod-1', *rrsets):
    return dict(name=ZONE, kind='Native', account=account, rrsets=[
        dict(name=n, type=t, ttl=ttl, records=[dict(content=c, disabled=False) for c in contents])
        for n, t, ttl, contents in rrsets])


A_RRSETS = [dict(name='@', type='A', ttl=None, records=['192.0.2.1'], state='present')]


def test_argument_spec():
    spec = pz.argument_spec()
    assert sorted(spec) == sorted(['api_url', 'api_key', 'server_id', 'validate_certs', 'ca_path', 'api_timeout',
                                   'name', 'state', 'kind', 'account', 'take_over', 'nameservers', 'ttl', 'rrsets',
                                   'exclusive'])
    assert spec['name']['aliases'] == ['zone']
    assert spec['kind'] == dict(type='str', choices=['Native', 'Master'])
    assert spec['exclusive']['default'] is False and spec['ttl']['default'] == 3600
    assert sorted(spec['rrsets']['options']) == ['name', 'records', 'state', 'ttl', 'type']


def test_new_zone_is_one_post_with_everything():
    client = FakeClient()
    result = zone_module(client, rrsets=A_RRSETS, nameservers=['ns1.example.net']).run()
    assert client.calls == [('GET', ZONE), ('POST', ZONE)]
    body = client.zones[ZONE]
    assert body['account'] == 'pod-1' and body['kind'] == 'Native' and body['nameservers'] == []
    assert [(r['name'], r['type']) for r in body['rrsets']] == [(ZONE, 'A'), (ZONE, 'NS')]
    assert result['changed'] and result['created']
    assert result['diff']['before'] == {}


def test_check_mode_sends_nothing():
    client = FakeClient()
    result = zone_module(client, check_mode=True, rrsets=A_RRSETS).run()
    assert client.calls == [('GET', ZONE)]
    assert result['changed'] and [c['action'] for c in result['changes']] == ['create']
    client = FakeClient({ZONE: existing('pod-1', (ZONE, 'A', 3600, ['192.0.2.9']))})
    result = zone_module(client, check_mode=True, rrsets=A_RRSETS).run()
    assert client.calls == [('GET', ZONE)]
    assert result['changes'][0]['before'] == {'ttl': 3600, 'records': ['192.0.2.9']}


def test_zone_created_meanwhile_is_converged_not_failed():
    client = FakeClient(race=existing('pod-1', (ZONE, 'A', 3600, ['192.0.2.9'])))
    result = zone_module(client, rrsets=A_RRSETS).run()
    assert client.calls == [('GET', ZONE), ('POST', ZONE), ('GET', ZONE), ('PATCH', ZONE)]
    assert result['created'] is False and [c['action'] for c in result['changes']] == ['update']


def test_zone_created_meanwhile_by_another_pod_is_refused():
    client = FakeClient(race=existing('pod-2'))
    with pytest.raises(pd.PowerDnsError) as err:
        zone_module(client, rrsets=A_RRSETS).run()
    assert "belongs to pod 'pod-2'" in err.value.msg
    assert ('PATCH', ZONE) not in client.calls


def test_unchanged_zone_is_one_get():
    client = FakeClient({ZONE: existing('pod-1', (ZONE, 'A', 3600, ['192.0.2.1']))})
    result = zone_module(client, rrsets=A_RRSETS).run()
    assert client.calls == [('GET', ZONE)]
    assert result['changed'] is False


@pytest.mark.parametrize('state', ['present', 'absent'])
def test_other_pods_zone_is_never_touched(state):
    client = FakeClient({ZONE: existing('pod-2', (ZONE, 'A', 3600, ['192.0.2.9']))})
    with pytest.raises(pd.PowerDnsError) as err:
        zone_module(client, state=state, rrsets=A_RRSETS).run()
    assert "belongs to pod 'pod-2'" in err.value.msg and "not to 'pod-1'" in err.value.msg
    assert client.calls == [('GET', ZONE)]


def test_take_over_claims_an_unowned_zone_first():
    client = FakeClient({ZONE: existing('', (ZONE, 'A', 3600, ['192.0.2.9']))})
    with pytest.raises(pd.PowerDnsError) as err:
        zone_module(client, rrsets=A_RRSETS).run()
    assert 'belongs to no pod' in err.value.msg
    result = zone_module(client, rrsets=A_RRSETS, take_over=True).run()
    assert client.calls[-2:] == [('PUT', ZONE), ('PATCH', ZONE)]
    assert result['diff']['after']['account'] == 'pod-1'


def test_without_account_any_zone_is_managed_and_account_kept():
    client = FakeClient({ZONE: existing('pod-2', (ZONE, 'A', 3600, ['192.0.2.9']))})
    result = zone_module(client, account=None, rrsets=A_RRSETS, kind='Master').run()
    assert result['zone']['account'] == 'pod-2' and result['zone']['kind'] == 'Master'
    assert client.calls == [('GET', ZONE), ('PUT', ZONE), ('PATCH', ZONE)]


def test_absent():
    client = FakeClient({ZONE: existing('pod-1', (ZONE, 'A', 3600, ['192.0.2.9']))})
    result = zone_module(client, state='absent').run()
    assert client.calls == [('GET', ZONE), ('DELETE', ZONE)]
    assert result['changed'] and result['diff']['after'] == {}
    result = zone_module(client, state='absent').run()
    assert result['changed'] is False


@pytest.mark.parametrize('parent_account, allowed', [('pod-1', True), ('pod-2', False), ('', False)])
def test_zone_inside_a_zone_of_another_owner_is_refused(parent_account, allowed):
    client = FakeClient({ZONE: existing(parent_account)})
    module = zone_module(client, name='shop.example.com', rrsets=A_RRSETS)
    if allowed:
        assert module.run()['created'] is True
        assert client.calls == [('GET', 'shop.example.com.'), ('LIST', ZONE), ('POST', 'shop.example.com.')]
        return
    with pytest.raises(pd.PowerDnsError) as err:
        module.run()
    assert 'lies inside zone example.com.' in err.value.msg and 'take over' in err.value.msg
    assert client.calls == [('GET', 'shop.example.com.'), ('LIST', ZONE)]


def test_bad_input_fails_before_any_call():
    client = FakeClient()
    with pytest.raises(pd.InvalidName):
        zone_module(client, name='-bad-.com').run()
    with pytest.raises(pd.InvalidRecord):
        zone_module(client, rrsets=[dict(name='@', type='MX', ttl=None, records=['mail.example.net'],
                                         state='present')]).run()
    assert client.calls == []
