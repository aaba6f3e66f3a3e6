# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""powerdns_zone and powerdns_zone_info through real ansible-playbook runs against a real PowerDNS.

Most tests use the shared lab's PowerDNS with zones of their own; the ones that stop the server
use a private PowerDNS (the lab's PowerDnsService in a temporary directory).
"""

import os
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab')):
    if path not in sys.path:
        sys.path.insert(0, path)

from playbooks import run_playbook  # noqa: E402
from playbooks import assert_task_failed as assert_failed, assert_task_ok as assert_ok  # noqa: E402
from playbooks import write_requests as writes  # noqa: E402
from pdnslab import PrivatePowerDns  # noqa: E402

MODULE = 'mpanel.cloudpods.powerdns_zone'
INFO = 'mpanel.cloudpods.powerdns_zone_info'
DMARC = 'v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test'
SPF = 'v=spf1 mx include:_spf.example.net -all'
LONG_TXT = 'v=DKIM1; k=rsa; p=' + 'Q' * 400


def zone_task(**options):
    return {'name': 'zone %s' % options.get('name'), MODULE: options}


def run_zone(env, check=False, diff=True, extra_env=None, verbosity=0, **options):
    run = run_playbook([zone_task(**options)], env=env, check=check, diff=diff, extra_env=extra_env,
                       verbosity=verbosity)
    return run, run.result(0)


def canonical_rrsets(zone):
    return [
        {'name': '@', 'type': 'A', 'records': ['192.0.2.10']},
        {'name': 'www', 'type': 'A', 'records': ['192.0.2.10']},
        {'name': '@', 'type': 'AAAA', 'records': ['2001:db8::10']},
        {'name': '@', 'type': 'MX', 'records': ['10 mail.example.net.', '20 backup-mx.example.net.']},
        {'name': '@', 'type': 'TXT', 'records': [SPF]},
        {'name': '_dmarc', 'type': 'TXT', 'records': [DMARC]},
        {'name': 'sel._domainkey', 'type': 'TXT', 'records': [LONG_TXT]},
        {'name': 'shop', 'type': 'CNAME', 'records': ['www.%s.' % zone]},
        {'name': '_sip._tcp', 'type': 'SRV', 'records': ['10 60 5060 sip.example.net.']},
        {'name': '@', 'type': 'CAA', 'records': ['0 issue "letsencrypt.org"']},
    ]


def written_differently(zone):
    """The same rrsets as canonical_rrsets(), written the way people write them."""
    upper = zone.upper()
    return [
        {'name': upper, 'type': 'a', 'records': [' 192.0.2.10 ']},
        {'name': 'WWW.%s.' % upper, 'type': 'A', 'records': ['192.0.2.10', '192.0.2.10']},
        {'name': '@', 'type': 'AAAA', 'records': ['2001:DB8:0:0:0:0:0:10']},
        {'name': '@', 'type': 'MX', 'records': ['20  BACKUP-MX.Example.NET', '10 mail.example.net']},
        {'name': '@', 'type': 'TXT', 'records': ['"%s"' % SPF]},
        {'name': '_DMARC', 'type': 'TXT', 'records': ['"v=DMARC1; " "p=quarantine; rua=mailto:postmaster@example.test"'
                                                      .replace('"v=DMARC1; " "', '"v=DMARC1; ')]},
        {'name': 'SEL._domainkey.%s' % zone, 'type': 'TXT',
         'records': ['"%s" "%s"' % (LONG_TXT[:255], LONG_TXT[255:])]},
        {'name': 'Shop', 'type': 'CNAME', 'records': ['WWW.%s' % upper]},
        {'name': '_SIP._TCP', 'type': 'SRV', 'records': ['10 60 5060 SIP.example.net']},
        {'name': '@', 'type': 'CAA', 'records': ['0 ISSUE letsencrypt.org']},
    ]


# --------------------------------------------------------------------------
# canonical comparison
# --------------------------------------------------------------------------

def test_same_records_written_differently_change_nothing(lab_env, pdns, new_zone):
    zone = new_zone('canon')
    run, result = run_zone(lab_env, name=zone, account='pod-canon', rrsets=canonical_rrsets(zone))
    assert_ok(run, result)
    assert result['created'] is True
    assert pdns.answers('sel._domainkey.' + zone, 'TXT') == [LONG_TXT]
    assert pdns.answers('shop.' + zone, 'CNAME') == ['www.%s.' % zone]
    assert pdns.answers(zone, 'MX') == ['10 mail.example.net.', '20 backup-mx.example.net.']
    assert pdns.answers('_sip._tcp.' + zone, 'SRV') == ['10 60 5060 sip.example.net.']

    mark = pdns.log.mark()
    run, result = run_zone(lab_env, name=zone.upper() + '.', account='pod-canon', rrsets=written_differently(zone))
    assert_ok(run, result)
    assert result['changed'] is False, result['changes']
    assert result['diff']['before'] == result['diff']['after']
    assert writes(pdns.requests_since(mark, zone)) == []

    # Content PowerDNS stores as somebody typed it (upper case) equals our lower-case form.
    pdns.set_rrset(zone, zone + '.', 'MX', 3600, ['10 MAIL.Example.NET.', '20 backup-mx.example.net.'])
    run, result = run_zone(lab_env, name=zone, account='pod-canon', rrsets=canonical_rrsets(zone))
    assert_ok(run, result)
    assert result['changed'] is False, result['changes']


def test_rrset_state_absent_and_ttl(lab_env, pdns, new_zone):
    zone = new_zone('ttl')
    assert_ok(*run_zone(lab_env, name=zone, account='pod-t', rrsets=canonical_rrsets(zone)))
    run, result = run_zone(lab_env, name=zone, account='pod-t', rrsets=[
        {'name': 'shop', 'type': 'CNAME', 'state': 'absent'},
        {'name': 'www', 'type': 'A', 'ttl': 60, 'records': ['192.0.2.10']},
        {'name': 'gone', 'type': 'A', 'state': 'absent'}])
    assert_ok(run, result)
    assert [(c['action'], c['name'], c['type'], c['ttl']) for c in result['changes']] == [
        ('update', 'www.%s.' % zone, 'A', 60), ('delete', 'shop.%s.' % zone, 'CNAME', 3600)]
    assert pdns.query('shop.' + zone, 'CNAME')[0] == 'NXDOMAIN'
    assert pdns.rrsets(zone)[('www.%s.' % zone, 'A')] == (60, ['192.0.2.10'])
    assert pdns.answers(zone, 'A') == ['192.0.2.10']  # not listed: kept


def test_rejected_patch_changes_nothing(lab_env, pdns, new_zone):
    """PowerDNS checks what we do not (here an SSHFP record) and applies a PATCH all or nothing."""
    zone = new_zone('tx')
    assert_ok(*run_zone(lab_env, name=zone, account='pod-tx', rrsets=canonical_rrsets(zone)))
    before = pdns.rrsets(zone)
    run, result = run_zone(lab_env, name=zone, account='pod-tx', rrsets=[
        {'name': '@', 'type': 'A', 'records': ['192.0.2.77']},
        {'name': 'host', 'type': 'SSHFP', 'records': ['1 1 not-hex']}])
    assert_failed(run, result)
    assert 'HTTP 422' in result['msg'] and 'SSHFP' in result['msg'], result['msg']
    assert pdns.rrsets(zone) == before
    assert pdns.answers(zone, 'A') == ['192.0.2.10']


# --------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------

BAD_NAMES = [
    ('', 'the zone name is empty'),
    ('-bad-.com', "label '-bad-' starts or ends with a hyphen"),
    ('a' * 64 + '.com', 'is 64 characters long; a label may have at most 63'),
    ('.'.join(['a' * 63, 'b' * 63, 'c' * 63, 'd' * 58, 'com']), 'is 254 characters long'),
    ('*.example.com', 'wildcards are not allowed in a zone name'),
    ('com', 'is a bare top-level domain'),
    ('ex ample.com', 'must not contain spaces'),
    ('under_score.com', 'may only contain letters, digits and hyphens'),
    ('1.2.3.4', 'is all digits'),
]


def test_bad_domain_names_fail_before_any_call_and_idn_works(lab_env, pdns):
    idn_zone = 'bücher.de'
    pdns.delete_zone('xn--bcher-kva.de')
    a_record = [{'name': '@', 'type': 'A', 'records': ['192.0.2.1']}]
    tasks = [dict(zone_task(name=name, account='pod-names', rrsets=a_record), ignore_errors=True)
             for name, dummy in BAD_NAMES]
    tasks.append(zone_task(name=idn_zone, account='pod-names', rrsets=[
        {'name': '@', 'type': 'A', 'records': ['192.0.2.1']},
        {'name': 'wWw.Bücher.DE.', 'type': 'A', 'records': ['192.0.2.1']}]))
    tasks.append(dict(zone_task(name='example-names.test', account='pod-names', rrsets=[
        {'name': 'www.example.org.', 'type': 'A', 'records': ['192.0.2.1']}]), ignore_errors=True))
    mark = pdns.log.mark()
    try:
        run = run_playbook(tasks, env=lab_env)
        for index, (name, expected) in enumerate(BAD_NAMES):
            result = run.result(index)
            assert result.get('failed') and expected in result['msg'], (name, result.get('msg'))
        created = run.result(len(BAD_NAMES))
        assert not created.get('failed'), created.get('msg')
        assert created['zone']['name'] == 'xn--bcher-kva.de.'
        assert pdns.answers('xn--bcher-kva.de', 'A') == ['192.0.2.1']
        assert pdns.answers('www.xn--bcher-kva.de', 'A') == ['192.0.2.1']
        outside = run.result(len(BAD_NAMES) + 1)
        assert outside.get('failed') and "'www.example.org.' is outside the zone example-names.test." in outside['msg']
        # only the IDN zone reached PowerDNS: one look (and the server check), one creation
        # (other tests may share this PowerDNS: look only at requests about these names)
        sent = pdns.requests_since(mark)
        idn = [r for r in sent if 'xn--bcher-kva.de' in r.path or r.path.endswith('/zones')]
        assert [r.method for r in writes(idn)] == ['POST']
        refused = ['/zones/%s.' % name for name, dummy in BAD_NAMES if name] + ['/zones/example-names.test.']
        assert not [r for r in sent if r.path.endswith(tuple(refused))]
    finally:
        pdns.delete_zone('xn--bcher-kva.de')


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

def test_wrong_api_key_gives_a_clear_401_without_any_key(lab_env, pdns, new_zone):
    zone = new_zone('key')
    wrong = 'wrong-' + uuid.uuid4().hex
    run, result = run_zone(lab_env, name=zone, account='pod-k', extra_env={'POWERDNS_API_KEY': wrong}, verbosity=3,
                           rrsets=[{'name': '@', 'type': 'A', 'records': ['192.0.2.1']}])
    assert_failed(run, result)
    assert 'HTTP 401' in result['msg'] and 'api_key (POWERDNS_API_KEY)' in result['msg']
    assert wrong not in run.stdout + run.stderr
    assert pdns.key not in run.stdout + run.stderr
    # the key given as an option instead of the environment: hidden as well
    run, result = run_zone(lab_env, name=zone, account='pod-k', api_key=wrong, verbosity=3)
    assert_failed(run, result)
    assert 'HTTP 401' in result['msg']
    assert wrong not in run.stdout + run.stderr
    assert pdns.zone(zone) is None


@pytest.fixture(scope='module')
def private_pdns():
    with PrivatePowerDns() as server:
        yield server


def test_powerdns_stopped_gives_a_clear_error_and_writes_nothing(private_pdns):
    env = private_pdns.env
    api = private_pdns.client()
    assert_ok(*run_zone(env, name='stopped.test', account='pod-s', rrsets=[
        {'name': '@', 'type': 'A', 'records': ['192.0.2.1']}]))
    before = api.rrsets('stopped.test')
    private_pdns.stop()
    try:
        run = run_playbook([
            dict(zone_task(name='stopped.test', account='pod-s', exclusive=True,
                           rrsets=[{'name': '@', 'type': 'A', 'records': ['192.0.2.2']}]), ignore_errors=True),
            zone_task(name='never.test', account='pod-s', rrsets=[{'name': '@', 'type': 'A', 'records': ['192.0.2.3']}]),
        ], env=env)
        assert run.rc != 0
        for index in (0, 1):
            result = run.result(index)
            assert result.get('failed')
            assert 'Cannot connect to the PowerDNS API' in result['msg'] and 'connection refused' in result['msg']
            assert env['POWERDNS_API_URL'] in result['msg']
        assert env['POWERDNS_API_KEY'] not in run.stdout + run.stderr
    finally:
        private_pdns.start()
    assert api.rrsets('stopped.test') == before
    assert api.zone('never.test') is None
    assert api.answers('stopped.test', 'A') == ['192.0.2.1']


def test_wrong_server_id_and_api_url_are_named(lab_env):
    run, result = run_zone(lab_env, name='sid.test', extra_env={'POWERDNS_SERVER_ID': 'nosuch'})
    assert_failed(run, result)
    assert "server_id ('nosuch'" in result['msg'] and '404' in result['msg']
    run, result = run_zone(lab_env, name='sid.test', extra_env={'POWERDNS_API_URL': 'ftp://127.0.0.1'})
    assert_failed(run, result)
    assert 'api_url must start with http:// or https://' in result['msg']


# --------------------------------------------------------------------------
# powerdns_zone_info
# --------------------------------------------------------------------------

def test_zone_info(lab_env, pdns, new_zone):
    zone = new_zone('info')
    other = new_zone('info')
    assert_ok(*run_zone(lab_env, name=zone, account='pod-info-' + zone[5:13], rrsets=canonical_rrsets(zone)))
    run = run_playbook([{INFO: {'name': zone.upper()}}, {INFO: {'name': other}},
                        {INFO: {'account': 'pod-info-' + zone[5:13]}}], env=lab_env)
    found = run.result(0)
    assert found['exists'] is True
    assert found['zone']['account'] == 'pod-info-' + zone[5:13]
    assert found['zone']['soa'].startswith('ns1.example.net. hostmaster.%s. ' % zone)
    rrsets = dict(((r['name'], r['type']), r['records']) for r in found['zone']['rrsets'])
    assert rrsets[(zone + '.', 'MX')] == ['10 mail.example.net.', '20 backup-mx.example.net.']
    assert rrsets[('sel._domainkey.%s.' % zone, 'TXT')] == ['"%s" "%s"' % (LONG_TXT[:255], LONG_TXT[255:])]
    assert (zone + '.', 'SOA') not in rrsets
    assert run.result(1)['exists'] is False and run.result(1)['zone'] == {}
    assert [z['name'] for z in run.result(2)['zones']] == [zone + '.']
