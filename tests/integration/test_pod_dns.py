# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pod_dns role through real ansible-playbook runs against the lab's real PowerDNS.

Answers are checked over DNS (dnspython against the lab PowerDNS's DNS port), the zone's state
through its API, and what a run sent through PowerDNS's own request log. Every test uses zones
of its own (``<test>-<random>.test``) and deletes them afterwards.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab')):
    if path not in sys.path:
        sys.path.insert(0, path)

from playbooks import run_playbook  # noqa: E402
from playbooks import assert_task_failed as assert_failed, assert_task_ok as assert_ok  # noqa: E402
from playbooks import write_requests as writes  # noqa: E402

ROLE = 'mpanel.cloudpods.pod_dns'
MODULE_TASK = 'Converge the DNS zone of the pod on PowerDNS'
SPF = 'v=spf1 mx include:_spf.example.net -all'


def role_run(env, domain, pod_id='pod-1', ipv4='192.0.2.10', check=False, diff=True, **role_vars):
    role_vars.update(pod_dns_domain=domain, pod_dns_pod_id=pod_id, pod_dns_ipv4=ipv4)
    play = [{'name': 'pod dns', 'hosts': 'localhost', 'gather_facts': False,
             'roles': [{'role': ROLE, 'vars': role_vars}]}]
    run = run_playbook(playbook=play, env=env, check=check, diff=diff)
    return run, module_result(run)


def module_result(run):
    for task in run.tasks:
        if task['name'] and task['name'].endswith(MODULE_TASK):
            return task['result']
    raise AssertionError('the role did not run its module task; rc=%s\n%s\n%s'
                         % (run.rc, run.stdout[-3000:], run.stderr[-3000:]))


def pod_answers(pdns, zone):
    """What the world sees of a pod's zone, over DNS."""
    return {
        'A': pdns.answers(zone, 'A'),
        'www A': pdns.answers('www.' + zone, 'A'),
        'MX': pdns.answers(zone, 'MX'),
        'TXT': pdns.answers(zone, 'TXT'),
        '_dmarc TXT': pdns.answers('_dmarc.' + zone, 'TXT'),
        'NS': pdns.answers(zone, 'NS'),
    }


def expected_answers(zone, ipv4='192.0.2.10'):
    return {
        'A': [ipv4],
        'www A': [ipv4],
        'MX': ['10 mail.example.net.'],
        'TXT': [SPF],
        '_dmarc TXT': ['v=DMARC1; p=quarantine; rua=mailto:postmaster@%s' % zone],
        'NS': ['ns1.example.net.'],
    }


# --------------------------------------------------------------------------
# create, re-run, check mode
# --------------------------------------------------------------------------

def test_create_zone_answers_over_dns_and_rerun_changes_nothing(lab_env, pdns, new_zone):
    zone = new_zone('shop')
    mark = pdns.log.mark()
    run, result = role_run(lab_env, zone)
    assert_ok(run, result)
    assert result['changed'] is True and result['created'] is True
    assert pod_answers(pdns, zone) == expected_answers(zone)
    assert pdns.query(zone, 'SOA')[0] == 'NOERROR'
    assert pdns.zone(zone)['account'] == 'pod-1'
    # the diff shows the whole new zone
    assert result['diff']['before'] == {}
    after = result['diff']['after']
    assert after['account'] == 'pod-1' and after['name'] == zone + '.'
    assert sorted(after['rrsets']) == sorted([
        '%s. A' % zone, 'www.%s. A' % zone, '%s. MX' % zone, '%s. TXT' % zone, '_dmarc.%s. TXT' % zone,
        '%s. NS' % zone])
    assert after['rrsets']['%s. MX' % zone] == {'ttl': 3600, 'records': ['10 mail.example.net.']}
    # one GET (and the server check of an absent zone), one POST with everything
    sent = pdns.requests_since(mark, zone)
    assert [r.method for r in writes(sent)] == ['POST']

    mark = pdns.log.mark()
    run, result = role_run(lab_env, zone)
    assert_ok(run, result)
    assert result['changed'] is False and result['changes'] == []
    assert result['diff']['before'] == result['diff']['after']
    sent = pdns.requests_since(mark, zone)
    assert [(r.method, r.path) for r in sent] == [('GET', '/api/v1/servers/localhost/zones/%s.' % zone)]


def test_check_mode_on_new_zone_creates_nothing_and_reports_changes(lab_env, pdns, new_zone):
    zone = new_zone('check')
    mark = pdns.log.mark()
    run, result = role_run(lab_env, zone, check=True)
    assert_ok(run, result)
    assert result['changed'] is True and result['created'] is True
    assert sorted((c['action'], c['name'], c['type']) for c in result['changes']) == sorted([
        ('create', zone + '.', 'A'), ('create', 'www.%s.' % zone, 'A'), ('create', zone + '.', 'MX'),
        ('create', zone + '.', 'TXT'), ('create', '_dmarc.%s.' % zone, 'TXT'), ('create', zone + '.', 'NS')])
    assert result['diff']['before'] == {}
    assert result['diff']['after']['rrsets']['www.%s. A' % zone] == {'ttl': 3600, 'records': ['192.0.2.10']}
    assert pdns.zone(zone) is None
    assert pdns.query(zone, 'A')[0] == 'REFUSED'  # not served: PowerDNS has no such zone
    assert writes(pdns.requests_since(mark, zone)) == []


def test_check_mode_on_existing_zone_reports_the_change_and_sends_nothing(lab_env, pdns, new_zone):
    zone = new_zone('checkip')
    assert_ok(*role_run(lab_env, zone))
    mark = pdns.log.mark()
    run, result = role_run(lab_env, zone, ipv4='192.0.2.99', check=True)
    assert_ok(run, result)
    assert result['changed'] is True and result['created'] is False
    assert sorted((c['action'], c['name'], c['records'][0]) for c in result['changes']) == [
        ('update', zone + '.', '192.0.2.99'), ('update', 'www.%s.' % zone, '192.0.2.99')]
    assert pod_answers(pdns, zone) == expected_answers(zone)
    assert writes(pdns.requests_since(mark, zone)) == []


# --------------------------------------------------------------------------
# repairs
# --------------------------------------------------------------------------

def test_ip_change_updates_exactly_the_two_a_records(lab_env, pdns, new_zone):
    zone = new_zone('move')
    assert_ok(*role_run(lab_env, zone))
    before = pdns.rrsets(zone)
    mark = pdns.log.mark()
    run, result = role_run(lab_env, zone, ipv4='198.51.100.20')
    assert_ok(run, result)
    assert result['changed'] is True
    assert [(c['action'], c['name'], c['type'], c['records'], c['before']['records']) for c in result['changes']] == [
        ('update', zone + '.', 'A', ['198.51.100.20'], ['192.0.2.10']),
        ('update', 'www.%s.' % zone, 'A', ['198.51.100.20'], ['192.0.2.10'])]
    diff_before, diff_after = result['diff']['before']['rrsets'], result['diff']['after']['rrsets']
    assert sorted(k for k in diff_after if diff_after[k] != diff_before.get(k)) == ['%s. A' % zone, 'www.%s. A' % zone]
    # on the server: the two A rrsets changed, everything else but the SOA serial is as it was
    after = pdns.rrsets(zone)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [(zone + '.', 'A'), (zone + '.', 'SOA'), ('www.%s.' % zone, 'A')]
    assert pod_answers(pdns, zone) == expected_answers(zone, ipv4='198.51.100.20')
    assert [r.method for r in writes(pdns.requests_since(mark, zone))] == ['PATCH']


def test_hand_added_rrset_survives_a_repair_and_goes_with_exclusive(lab_env, pdns, new_zone):
    zone = new_zone('hand')
    assert_ok(*role_run(lab_env, zone))
    pdns.set_rrset(zone, 'ftp.%s.' % zone, 'A', 600, ['203.0.113.5'])
    pdns.set_rrset(zone, '%s.' % zone, 'A', 3600, ['203.0.113.66'])  # and somebody broke the pod's A record

    run, result = role_run(lab_env, zone)
    assert_ok(run, result)
    assert [(c['action'], c['name'], c['type']) for c in result['changes']] == [('update', zone + '.', 'A')]
    assert pdns.answers('ftp.' + zone, 'A') == ['203.0.113.5']
    assert pod_answers(pdns, zone) == expected_answers(zone)

    run, result = role_run(lab_env, zone, pod_dns_exclusive=True)
    assert_ok(run, result)
    assert [(c['action'], c['name'], c['type']) for c in result['changes']] == [('delete', 'ftp.%s.' % zone, 'A')]
    assert 'ftp.%s. A' % zone in result['diff']['before']['rrsets']
    assert 'ftp.%s. A' % zone not in result['diff']['after']['rrsets']
    assert pdns.query('ftp.' + zone, 'A')[0] == 'NXDOMAIN'
    assert pod_answers(pdns, zone) == expected_answers(zone)  # NS (and SOA) are never removed
    assert pdns.query(zone, 'SOA')[0] == 'NOERROR'


def test_dkim_and_ipv6_and_extra_txt(lab_env, pdns, new_zone):
    zone = new_zone('dkim')
    key = 'MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA' + 'x' * 300 + 'IDAQAB'
    run, result = role_run(lab_env, zone, pod_dns_ipv6='2001:DB8:0:0::10', pod_dns_dkim_public_key=key,
                           pod_dns_apex_txt_extra=['google-site-verification=abc'], pod_dns_ttl=300)
    assert_ok(run, result)
    dkim = 'default._domainkey.' + zone
    assert pdns.answers(dkim, 'TXT') == ['v=DKIM1; k=rsa; p=' + key]
    strings = pdns.txt_strings(dkim)[0]
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)  # split for the 255-octet limit
    assert pdns.answers(zone, 'AAAA') == ['2001:db8::10']
    assert pdns.answers('www.' + zone, 'AAAA') == ['2001:db8::10']
    assert pdns.answers(zone, 'TXT') == sorted([SPF, 'google-site-verification=abc'])
    ttls = dict((key, ttl) for key, (ttl, dummy) in pdns.rrsets(zone).items() if key[1] != 'SOA')
    assert set(ttls.values()) == {300} and (zone + '.', 'NS') in ttls
    run, result = role_run(lab_env, zone, pod_dns_ipv6='2001:db8::10', pod_dns_dkim_public_key=key,
                           pod_dns_apex_txt_extra=['google-site-verification=abc'], pod_dns_ttl=300)
    assert_ok(run, result)
    assert result['changed'] is False, result['changes']


# --------------------------------------------------------------------------
# ownership
# --------------------------------------------------------------------------

def test_zone_of_another_pod_is_refused_and_absent_removes_only_our_own(lab_env, pdns, new_zone):
    zone = new_zone('owned')
    assert_ok(*role_run(lab_env, zone, pod_id='pod-a'))
    before = pdns.rrsets(zone)
    mark = pdns.log.mark()

    run, result = role_run(lab_env, zone, pod_id='pod-b', ipv4='203.0.113.13')
    assert_failed(run, result)
    assert "belongs to pod 'pod-a'" in result['msg'] and "'pod-b'" in result['msg']
    run, result = role_run(lab_env, zone, pod_id='pod-b', pod_dns_state='absent')
    assert_failed(run, result)
    assert "belongs to pod 'pod-a'" in result['msg']
    assert writes(pdns.requests_since(mark, zone)) == []
    assert pdns.rrsets(zone) == before
    assert pod_answers(pdns, zone) == expected_answers(zone)

    run, result = role_run(lab_env, zone, pod_id='pod-a', pod_dns_state='absent')
    assert_ok(run, result)
    assert result['changed'] is True
    assert result['diff']['after'] == {} and result['diff']['before']['account'] == 'pod-a'
    assert pdns.zone(zone) is None
    assert pdns.query(zone, 'A')[0] == 'REFUSED'
    run, result = role_run(lab_env, zone, pod_id='pod-a', pod_dns_state='absent')
    assert_ok(run, result)
    assert result['changed'] is False


def test_unowned_zone_is_refused_unless_taken_over(lab_env, pdns, new_zone):
    zone = new_zone('unowned')
    pdns.create_zone(zone, account='', rrsets=[(zone + '.', 'A', 3600, ['203.0.113.1'])])
    run, result = role_run(lab_env, zone, pod_id='pod-c')
    assert_failed(run, result)
    assert 'belongs to no pod' in result['msg'] and 'take_over' in result['msg']
    assert pdns.answers(zone, 'A') == ['203.0.113.1']
    assert pdns.zone(zone)['account'] == ''

    run, result = role_run(lab_env, zone, pod_id='pod-c', pod_dns_take_over=True)
    assert_ok(run, result)
    assert result['diff']['before']['account'] == '' and result['diff']['after']['account'] == 'pod-c'
    assert pdns.zone(zone)['account'] == 'pod-c'
    assert pod_answers(pdns, zone) == expected_answers(zone)


def test_zone_inside_another_pods_domain_is_refused(lab_env, pdns, new_zone):
    parent = new_zone('parent')
    child = 'shop.' + parent
    assert_ok(*role_run(lab_env, parent, pod_id='pod-p'))
    try:
        mark = pdns.log.mark()
        run, result = role_run(lab_env, child, pod_id='pod-q', ipv4='203.0.113.66')
        assert_failed(run, result)
        assert 'lies inside zone %s., which belongs to pod \'pod-p\'' % parent in result['msg']
        assert writes(pdns.requests_since(mark, child)) + writes(pdns.requests_since(mark, parent)) == []
        assert pdns.zone(child) is None
        assert pdns.answers(child, 'A') == 'NXDOMAIN'  # still answered from the parent zone
        # the owner of the domain may split off a zone of its own
        run, result = role_run(lab_env, child, pod_id='pod-p', ipv4='203.0.113.67')
        assert_ok(run, result)
        assert pdns.answers(child, 'A') == ['203.0.113.67']
    finally:
        pdns.delete_zone(child)


def test_role_requires_an_address_when_present(lab_env, new_zone):
    zone = new_zone('noip')
    run = run_playbook(playbook=[{'hosts': 'localhost', 'gather_facts': False, 'roles': [
        {'role': ROLE, 'vars': {'pod_dns_domain': zone, 'pod_dns_pod_id': 'pod-1'}}]}], env=lab_env)
    assert run.rc != 0
    assert 'pod_dns_ipv4 is required' in run.stdout
