# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pod_firewall through real ansible-playbook runs against the simulator (memory backend).

What a user sees: the module result, the CT's firewall on the (simulated) server, and the
simulator's request log where the question is "what did the module send" (nothing when nothing
differs, nothing in check mode, a digest on every PUT and DELETE). Enforcement on real traffic is
tested in test_pod_firewall_real.py.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab'), os.path.join(ROOT, '.build', 'collections')):
    if path not in sys.path:
        sys.path.insert(0, path)

from playbooks import PrivateLab, ensure_collection_link, run_playbook  # noqa: E402
from labcontrol import LabControl  # noqa: E402
from pvesim.config import CLOUDPODS_PROV_PRIVILEGES  # noqa: E402

ensure_collection_link()
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient  # noqa: E402
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings  # noqa: E402

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab

MODULE = 'mpanel.cloudpods.pod_firewall'
WEB = [{'name': 'http', 'proto': 'tcp', 'dport': '80'}, {'name': 'https', 'proto': 'tcp', 'dport': '443'}]
SSH = {'name': 'ssh', 'proto': 'tcp', 'dport': '22'}


@pytest.fixture(scope='module')
def lab():
    with PrivateLab() as env:
        yield env, LabControl.from_env(env)


class Pve(object):
    def __init__(self, env, control, vmid):
        self.env = env
        self.control = control
        self.vmid = vmid

    def firewall(self, **options):
        run_kwargs = dict((k, options.pop(k)) for k in ('check', 'diff', 'extra_env') if k in options)
        options.setdefault('vmid', self.vmid)
        run = run_playbook([{'name': 'firewall', MODULE: options}], env=self.env, **run_kwargs)
        return run, run.result(0)

    def state(self):
        return self.control.state()['containers'][str(self.vmid)]['firewall']

    def rules(self):
        return self.state()['rules']

    def writes(self):
        return [r for r in self.control.requests() if r['method'] in ('POST', 'PUT', 'DELETE')]

    def client(self, token_id=None, secret=None):
        settings = ConnectionSettings(self.env['PROXMOX_API_URL'], token_id or self.env['PROXMOX_API_TOKEN_ID'],
                                      secret or self.env['PROXMOX_API_TOKEN_SECRET'],
                                      ca_path=self.env['PROXMOX_CA_BUNDLE'])
        return ProxmoxClient(settings, retry_timeout=10)

    def path(self, suffix):
        return 'nodes/pve/lxc/%s/firewall/%s' % (self.vmid, suffix)


@pytest.fixture
def pve(lab):
    env, control = lab
    control.reset()
    control.config(default_task_duration=0.05, dhcp_delay=0.1)
    run = run_playbook([{'name': 'pod', 'mpanel.cloudpods.pod_container': {
        'hostname': 'fw-example-com', 'state': 'started'}, 'register': 'pod'}], env=env)
    vmid = run.result(0)['vmid']
    control.clear_requests()
    return Pve(env, control, vmid)


def ok(run, result):
    assert run.rc == 0 and not result.get('failed'), 'failed: %s\n%s' % (result.get('msg'), run.stderr[-3000:])
    return result


def ours(rules):
    return [(r.get('comment'), r.get('proto'), r.get('dport'), r.get('action'), r.get('enable')) for r in rules]


def test_first_run_sets_options_and_rules_in_order_then_nothing(pve):
    result = ok(*pve.firewall(rules=WEB + [SSH], ipfilter_addresses=['10.0.0.7']))
    assert result['changed'] is True and result['enforced'] is True
    state = pve.state()
    assert state['options'] == {'enable': 1, 'policy_in': 'DROP', 'policy_out': 'ACCEPT', 'ipfilter': 1, 'dhcp': 1}
    assert ours(state['rules']) == [('cloudpods: http', 'tcp', '80', 'ACCEPT', 1),
                                    ('cloudpods: https', 'tcp', '443', 'ACCEPT', 1),
                                    ('cloudpods: ssh', 'tcp', '22', 'ACCEPT', 1)]
    assert [e['cidr'] for e in state['ipsets']['ipfilter-net0']['entries']] == ['10.0.0.7']
    pve.control.clear_requests()
    again = ok(*pve.firewall(rules=WEB + [SSH], ipfilter_addresses=['10.0.0.7/32']))
    assert again['changed'] is False and again['changes'] == []
    assert pve.writes() == []


def test_check_mode_sends_nothing_and_diff_shows_before_and_after(pve):
    run, result = pve.firewall(rules=WEB, check=True, diff=True)
    ok(run, result)
    assert result['changed'] is True
    assert pve.writes() == []
    assert pve.rules() == [] and pve.state()['options'] == {}
    diff = result['diff']
    assert diff['before'] == {'options': {}, 'rules': []}
    assert diff['after']['options'] == {'enable': 1, 'policy_in': 'DROP', 'policy_out': 'ACCEPT', 'ipfilter': 1,
                                        'dhcp': 1}
    assert [r['comment'] for r in diff['after']['rules']] == ['cloudpods: http', 'cloudpods: https']


def test_a_changed_plan_changes_the_rules_and_keeps_an_operators_rule(pve):
    ok(*pve.firewall(rules=WEB))
    client = pve.client()
    client.post(pve.path('rules'), type='in', action='ACCEPT', proto='tcp', dport='8443', enable=1,
                comment='office VPN')
    pve.control.clear_requests()
    result = ok(*pve.firewall(rules=WEB + [SSH], diff=True))
    assert result['changes'] == ['create rule cloudpods: ssh', 'put our rules in order']
    comments = [r.get('comment') for r in pve.rules()]
    assert comments == ['cloudpods: http', 'cloudpods: https', 'cloudpods: ssh', 'office VPN']
    # every PUT and DELETE carried the list's digest
    assert all('digest' in (r.get('params') or {}) or r['method'] == 'POST' for r in pve.writes()), pve.writes()
    # the plan loses SSH: our rule goes, the operator's stays
    result = ok(*pve.firewall(rules=WEB))
    assert result['changes'] == ['delete rule cloudpods: ssh']
    assert [r.get('comment') for r in pve.rules()] == ['cloudpods: http', 'cloudpods: https', 'office VPN']


def test_exclusive_removes_every_rule_that_is_not_ours(pve):
    ok(*pve.firewall(rules=WEB))
    pve.client().post(pve.path('rules'), type='in', action='ACCEPT', proto='tcp', dport='3306', enable=1)
    result = ok(*pve.firewall(rules=WEB, exclusive=True))
    assert result['changes'] == ['delete rule at position 0 (not ours)']
    assert [r.get('comment') for r in pve.rules()] == ['cloudpods: http', 'cloudpods: https']


def test_a_rule_of_ours_changed_by_hand_is_put_back_in_place(pve):
    ok(*pve.firewall(rules=WEB))
    client = pve.client()
    digest = client.get(pve.path('rules'))[0]['digest']
    client.put(pve.path('rules/1'), digest=digest, dport='4443', enable=0, source='10.1.0.0/16')
    client.delete(pve.path('rules/0'), digest=client.get(pve.path('rules'))[0]['digest'])
    result = ok(*pve.firewall(rules=WEB))
    assert result['changes'] == ['update rule cloudpods: https', 'create rule cloudpods: http']
    assert ours(pve.rules()) == [('cloudpods: http', 'tcp', '80', 'ACCEPT', 1),
                                 ('cloudpods: https', 'tcp', '443', 'ACCEPT', 1)]
    assert 'source' not in pve.rules()[1]


def test_turned_off_by_hand_is_turned_on_again(pve):
    ok(*pve.firewall(rules=WEB))
    client = pve.client()
    client.put(pve.path('options'), enable=0)
    result = ok(*pve.firewall(rules=WEB))
    assert result['changes'] == ['options: enable=1']
    assert pve.state()['options']['enable'] == 1


def test_a_stale_digest_is_refused_by_the_simulator(pve):
    """What makes the module's digests worth sending: PVE refuses a PUT/DELETE on a changed list."""
    ok(*pve.firewall(rules=WEB))
    client = pve.client()
    stale = client.get(pve.path('rules'))[0]['digest']
    client.post(pve.path('rules'), type='in', action='DROP', proto='tcp', dport='25')
    with pytest.raises(Exception) as caught:
        client.delete(pve.path('rules/0'), digest=stale)
    assert 'detected modified configuration' in str(caught.value)
    assert len(pve.rules()) == 3


def test_datacenter_firewall_off_gives_a_warning_and_enforced_false(pve):
    secret = 'e3b0c442-datacenter-admin-secret'
    pve.control.add_token('dcadmin@pve!fw', secret, privs=['Sys.Audit', 'Sys.Modify'])
    admin = pve.client('dcadmin@pve!fw', secret)
    admin.put('cluster/firewall/options', enable=0)
    run, result = pve.firewall(rules=WEB)
    ok(run, result)
    assert result['enforced'] is False
    assert any('datacenter firewall is off' in w for w in result.get('warnings', [])), result.get('warnings')
    assert pve.state()['options']['enable'] == 1  # set all the same


def test_the_seed_role_suffices_and_a_missing_privilege_is_named(pve):
    secret = '4f1d2c3b-seed-role-secret'
    pve.control.add_token('seed@pve!fw', secret, privs=CLOUDPODS_PROV_PRIVILEGES)
    env = {'PROXMOX_API_TOKEN_ID': 'seed@pve!fw', 'PROXMOX_API_TOKEN_SECRET': secret}
    ok(*pve.firewall(rules=WEB, extra_env=env))
    secret2 = '9a8b7c6d-no-network-secret'
    pve.control.add_token('nonet@pve!fw', secret2, privs=[p for p in CLOUDPODS_PROV_PRIVILEGES
                                                          if p != 'VM.Config.Network'])
    run, result = pve.firewall(rules=WEB + [SSH], extra_env={'PROXMOX_API_TOKEN_ID': 'nonet@pve!fw',
                                                             'PROXMOX_API_TOKEN_SECRET': secret2})
    assert run.rc != 0 and result.get('failed')
    assert 'The token lacks privilege VM.Config.Network on /vms/%s' % pve.vmid in result['msg']
    assert secret2 not in run.stdout and secret2 not in run.stderr


def test_bad_rules_are_refused_before_anything_is_sent(pve):
    run, result = pve.firewall(rules=[{'name': 'x', 'dport': '80'}])
    assert run.rc != 0 and 'rules[0]: dport needs proto' in result['msg']
    run, result = pve.firewall(rules=[SSH, SSH])
    assert run.rc != 0 and 'two rules are named' in result['msg']
    assert pve.writes() == []
