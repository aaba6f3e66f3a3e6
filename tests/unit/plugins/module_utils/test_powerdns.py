# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the PowerDNS client's pure parts: names, canonical records, rrset changes, errors."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest
import requests

from ansible_collections.mpanel.cloudpods.plugins.module_utils import powerdns as pd

KEY = 'k3y-0f-the-lab-9d55-7d3c2b1a0f99'
ZONE = 'example.com.'
LONGEST = '.'.join(['a' * 63, 'b' * 63, 'c' * 63, 'd' * 57, 'com'])  # 253 characters


# --------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------

@pytest.mark.parametrize('name, expected', [
    ('example.com', 'example.com.'),
    ('Example.COM.', 'example.com.'),
    ('  shop-1.example.co.uk ', 'shop-1.example.co.uk.'),
    ('bücher.de', 'xn--bcher-kva.de.'),
    ('BÜCHER.de', 'xn--bcher-kva.de.'),
    ('xn--bcher-kva.de', 'xn--bcher-kva.de.'),
    ('a' * 63 + '.com', 'a' * 63 + '.com.'),
    (LONGEST, LONGEST + '.'),
])
def test_zone_names_good(name, expected):
    assert pd.normalize_zone_name(name) == expected


@pytest.mark.parametrize('name, rule', [
    ('', 'is empty'),
    (None, 'is empty'),
    ('   ', 'is empty'),
    ('.', 'root zone'),
    ('-bad-.com', 'starts or ends with a hyphen'),
    ('bad-.com', 'starts or ends with a hyphen'),
    ('a' * 64 + '.com', 'is 64 characters long; a label may have at most 63'),
    ('.'.join(['a' * 63, 'b' * 63, 'c' * 63, 'd' * 58, 'com']), 'is 254 characters long'),
    ('*.example.com', 'wildcards are not allowed'),
    ('com', 'bare top-level domain'),
    ('com.', 'bare top-level domain'),
    ('ex ample.com', 'spaces'),
    ('example.com\t', None),  # surrounding whitespace is stripped, not an error
    ('a..example.com', 'empty label'),
    ('.example.com', 'empty label'),
    ('under_score.com', 'letters, digits and hyphens'),
    ('exa$mple.com', 'letters, digits and hyphens'),
    ('1.2.3.4', 'all digits'),
    ('example.c0m', 'must be 2 to 63 letters'),
    ('example.c', 'must be 2 to 63 letters'),
    ('xn--zz-.de', 'hyphen'),
    ('xn--a.de', 'not valid punycode'),
])
def test_zone_names_bad(name, rule):
    if rule is None:
        assert pd.normalize_zone_name(name) == 'example.com.'
        return
    with pytest.raises(pd.InvalidName) as err:
        pd.normalize_zone_name(name)
    assert rule in err.value.msg


def test_punycode_length_counts():
    # 30 umlauts fit a label as text but not as punycode
    with pytest.raises(pd.InvalidName) as err:
        pd.normalize_zone_name('ü' * 60 + '.de')
    assert 'a label may have at most 63' in err.value.msg or 'not a valid internationalized' in err.value.msg


@pytest.mark.parametrize('name, expected', [
    ('@', 'example.com.'),
    ('', 'example.com.'),
    (None, 'example.com.'),
    ('www', 'www.example.com.'),
    ('WWW', 'www.example.com.'),
    ('_dmarc', '_dmarc.example.com.'),
    ('mail._domainkey', 'mail._domainkey.example.com.'),
    ('www.example.com', 'www.example.com.'),
    ('www.example.com.', 'www.example.com.'),
    ('example.com', 'example.com.'),
    ('EXAMPLE.com.', 'example.com.'),
    ('*', '*.example.com.'),
    ('*.dev', '*.dev.example.com.'),
    ('www.example.org', 'www.example.org.example.com.'),  # relative: no trailing dot
    ('bücher', 'xn--bcher-kva.example.com.'),
])
def test_owner_names(name, expected):
    assert pd.normalize_owner_name(name, ZONE) == expected


@pytest.mark.parametrize('name, rule', [
    ('www.example.org.', 'outside the zone'),
    ('example.com.evil.', 'outside the zone'),
    ('com.', 'outside the zone'),
    ('a.*.b', 'leftmost label'),
    ('*x', 'leftmost label'),
    ('bad label', 'spaces'),
    ('-x', 'hyphen'),
    ('x' * 64, 'at most 63'),
    ('.'.join(['a' * 60] * 4), 'at most 253'),
])
def test_owner_names_bad(name, rule):
    with pytest.raises(pd.InvalidName) as err:
        pd.normalize_owner_name(name, ZONE)
    assert rule in err.value.msg


def test_zone_id():
    assert pd.zone_id('example.com.') == 'example.com.'
    assert pd.zone_id('example.com') == 'example.com.'
    assert pd.zone_id('a_b.example.') == 'a=5Fb.example.'


# --------------------------------------------------------------------------
# canonical record contents
# --------------------------------------------------------------------------

@pytest.mark.parametrize('rtype, written, canonical', [
    ('A', ' 192.0.2.1 ', '192.0.2.1'),
    ('AAAA', '2001:DB8:0:0::1', '2001:db8::1'),
    ('AAAA', '2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'),
    ('MX', '10 mail.example.net', '10 mail.example.net.'),
    ('MX', '10   MAIL.Example.NET.', '10 mail.example.net.'),
    ('mx', '0 .', '0 .'),
    ('CNAME', 'WWW.Example.com', 'www.example.com.'),
    ('NS', 'ns1.example.net', 'ns1.example.net.'),
    ('PTR', 'host.example.net.', 'host.example.net.'),
    ('SRV', '10 60 5060 SIP.example.net', '10 60 5060 sip.example.net.'),
    ('CAA', '0 issue letsencrypt.org', '0 issue "letsencrypt.org"'),
    ('CAA', '0 ISSUE "letsencrypt.org"', '0 issue "letsencrypt.org"'),
    ('TXT', 'v=spf1 mx -all', '"v=spf1 mx -all"'),
    ('TXT', '"v=spf1 mx -all"', '"v=spf1 mx -all"'),
    ('TXT', '  "a"   "b" ', '"a" "b"'),
    ('TXT', '"a\\;b"', '"a;b"'),
    ('TXT', '"say \\"hi\\""', '"say \\"hi\\""'),
    ('TXT', 'say "hi"', '"say \\"hi\\""'),
    ('TXT', 'back\\slash', '"back\\\\slash"'),
    ('TXT', '"caf\\195\\169"', '"café"'),
    ('TXT', 'café', '"café"'),
    ('TXT', '"tab\\009here"', '"tab\\009here"'),
    ('TXT', '', '""'),
    ('SPF', 'v=spf1 -all', '"v=spf1 -all"'),
    ('SSHFP', ' 1  1   abcdef ', '1 1 abcdef'),
])
def test_canonical_content(rtype, written, canonical):
    assert pd.canonical_content(rtype, written) == canonical


def test_long_txt_is_split_at_255_octets():
    text = 'v=DKIM1; k=rsa; p=' + 'A' * 600
    # the expected content written out: strings of 255 (18 + 237), 255 and 108 octets
    canonical = '"v=DKIM1; k=rsa; p=' + 'A' * 237 + '" "' + 'A' * 255 + '" "' + 'A' * 108 + '"'
    assert pd.canonical_content('TXT', text) == canonical
    # written pre-split, or as one quoted over-long string: the same canonical form
    assert pd.canonical_content('TXT', '"%s" "%s" "%s"' % (text[:255], text[255:510], text[510:])) == canonical
    assert pd.canonical_content('TXT', '"%s"' % text) == canonical


def test_long_utf8_txt_is_not_split_inside_a_character():
    text = 'x' + 'é' * 200  # 401 octets: 'é' is two
    # 1 + 127 * 2 = 255 octets, then the other 73 characters (146 octets); no '\195' left dangling
    assert pd.canonical_content('TXT', text) == '"x' + 'é' * 127 + '" "' + 'é' * 73 + '"'


@pytest.mark.parametrize('rtype, content, message', [
    ('A', '192.0.2.300', 'not an IPv4 address'),
    ('A', '', 'content is empty'),
    ('A', '192.0.2.01', 'not an IPv4 address'),
    ('AAAA', '192.0.2.1', 'not an IPv6 address'),
    ('MX', 'mail.example.net', 'must have the form'),
    ('MX', '70000 mail.example.net', 'from 0 to 65535'),
    ('MX', '-1 mail.example.net', 'from 0 to 65535'),
    ('SRV', '10 5060 sip.example.net', 'must have the form'),
    ('CNAME', 'bad host.example', 'spaces'),
    ('TXT', '"unterminated', 'unterminated'),
    ('TXT', '"a" b', 'outside the quoted strings'),
    ('TXT', '"\\999"', 'invalid escape'),
    ('CAA', '0 issue', 'must have the form'),
    ('CAA', '300 issue "x"', 'from 0 to 255'),
])
def test_canonical_content_bad(rtype, content, message):
    with pytest.raises(pd.PowerDnsError) as err:
        pd.canonical_content(rtype, content)
    assert message in err.value.msg


def test_current_content_that_cannot_be_parsed_is_kept():
    assert pd.canonical_current('MX', 'garbage  here') == 'garbage here'


# --------------------------------------------------------------------------
# desired rrsets and the changes to reach them
# --------------------------------------------------------------------------

def rrset(name, rtype, records, ttl=None, state='present'):
    return dict(name=name, type=rtype, records=records, ttl=ttl, state=state)


def api_zone(*rrsets, **attributes):
    data = dict(name=ZONE, kind='Native', account='pod-1', serial=2025010101, rrsets=[
        dict(name=ZONE, type='SOA', ttl=3600, records=[dict(content='ns1.example.net. hostmaster.example.com. '
                                                                    '2025010101 10800 3600 604800 3600',
                                                            disabled=False)], comments=[])])
    for name, rtype, ttl, contents in rrsets:
        data['rrsets'].append(dict(name=name, type=rtype, ttl=ttl, comments=[],
                                   records=[dict(content=c, disabled=False) for c in contents]))
    data.update(attributes)
    return data


def test_desired_rrsets_are_canonical_and_deduplicated():
    wanted, unwanted = pd.desired_rrsets(ZONE, [
        rrset('@', 'a', ['192.0.2.1', ' 192.0.2.1']),
        rrset('www', 'TXT', ['"x"', 'x'], ttl=60),
        rrset('old', 'CNAME', [], state='absent'),
    ], 3600, nameservers=['NS1.example.net', 'ns2.example.net.'])
    assert wanted == {
        (ZONE, 'A'): pd.RRset(ZONE, 'A', 3600, ('192.0.2.1',)),
        ('www.example.com.', 'TXT'): pd.RRset('www.example.com.', 'TXT', 60, ('"x"',)),
        (ZONE, 'NS'): pd.RRset(ZONE, 'NS', 3600, ('ns1.example.net.', 'ns2.example.net.')),
    }
    assert unwanted == {('old.example.com.', 'CNAME')}


@pytest.mark.parametrize('rrsets, nameservers, message', [
    ([rrset('@', 'SOA', ['x'])], None, 'SOA record is maintained by PowerDNS'),
    ([rrset('@', 'NS', ['ns1.example.net'])], ['ns1.example.net'], 'apex NS records are given by nameservers'),
    ([rrset('www', 'A', ['192.0.2.1']), rrset('WWW.example.com.', 'A', ['192.0.2.2'])], None, 'also given as rrsets[0]'),
    ([rrset('www', 'A', [])], None, 'records is empty'),
    ([rrset('www', 'A x', ['192.0.2.1'])], None, 'is not a DNS record type'),
    ([rrset('www', 'A', ['192.0.2.1'], ttl=-5)], None, 'out of range'),
    ([rrset('www', 'A', ['nope'])], None, 'rrsets[0] (www.example.com. A): A record \'nope\' is not an IPv4'),
    ([rrset('www.example.org.', 'A', ['192.0.2.1'])], None, 'rrsets[0] (A): \'www.example.org.\' is outside'),
    ([rrset('@', 'CNAME', ['x.example.net'])], None, 'cannot be at the zone apex'),
    ([rrset('w', 'CNAME', ['x.example.net']), rrset('w', 'TXT', ['t'])], None, 'can have no other records'),
    ([rrset('w', 'CNAME', ['x.example.net', 'y.example.net'])], None, 'only one record'),
    ([], ['bad name'], 'nameservers:'),
])
def test_desired_rrsets_bad(rrsets, nameservers, message):
    with pytest.raises(pd.PowerDnsError) as err:
        pd.desired_rrsets(ZONE, rrsets, 3600, nameservers)
    assert message in err.value.msg


def test_rrset_changes_only_what_differs():
    data = api_zone((ZONE, 'A', 3600, ['192.0.2.1']),
                    ('www.example.com.', 'A', 3600, ['192.0.2.1']),
                    (ZONE, 'MX', 3600, ['10 MAIL.example.net.']),
                    (ZONE, 'NS', 3600, ['ns1.example.net.']),
                    ('ftp.example.com.', 'A', 600, ['192.0.2.9']))
    current = pd.current_rrsets(data)
    assert (ZONE, 'SOA') not in current
    wanted, unwanted = pd.desired_rrsets(ZONE, [
        rrset('@', 'A', ['192.0.2.2']),
        rrset('www', 'A', ['192.0.2.1']),
        rrset('@', 'MX', ['10 mail.example.net']),
        rrset('_dmarc', 'TXT', ['v=DMARC1; p=none']),
    ], 3600)
    changes = pd.rrset_changes(current, wanted, unwanted, ZONE)
    assert [(c.action, c.name, c.type) for c in changes] == [
        ('create', '_dmarc.example.com.', 'TXT'), ('update', ZONE, 'A')]
    assert pd.patch_body(changes) == {'rrsets': [
        {'name': '_dmarc.example.com.', 'type': 'TXT', 'ttl': 3600, 'changetype': 'REPLACE',
         'records': [{'content': '"v=DMARC1; p=none"', 'disabled': False}]},
        {'name': ZONE, 'type': 'A', 'ttl': 3600, 'changetype': 'REPLACE',
         'records': [{'content': '192.0.2.2', 'disabled': False}]}]}
    # exclusive: ftp goes, the apex NS stays
    changes = pd.rrset_changes(current, wanted, unwanted, ZONE, exclusive=True)
    assert [(c.action, c.name, c.type) for c in changes][-1] == ('delete', 'ftp.example.com.', 'A')
    assert ('delete', ZONE, 'NS') not in [(c.action, c.name, c.type) for c in changes]
    assert pd.patch_body(changes)['rrsets'][-1] == {'name': 'ftp.example.com.', 'type': 'A', 'changetype': 'DELETE'}
    after = pd.apply_changes(current, changes)
    assert sorted(after) == sorted([(ZONE, 'A'), ('www.example.com.', 'A'), (ZONE, 'MX'), (ZONE, 'NS'),
                                    ('_dmarc.example.com.', 'TXT')])


def test_ttl_change_and_disabled_record_are_changes():
    data = api_zone(('www.example.com.', 'A', 3600, ['192.0.2.1']))
    data['rrsets'].append(dict(name='mail.example.com.', type='A', ttl=3600,
                               records=[dict(content='192.0.2.5', disabled=True)]))
    current = pd.current_rrsets(data)
    assert current[('mail.example.com.', 'A')].records == ('192.0.2.5 (disabled)',)
    wanted, dummy = pd.desired_rrsets(ZONE, [rrset('www', 'A', ['192.0.2.1'], ttl=300),
                                             rrset('mail', 'A', ['192.0.2.5'])], 3600)
    changes = pd.rrset_changes(current, wanted, set(), ZONE)
    assert [(c.action, c.name) for c in changes] == [('update', 'mail.example.com.'), ('update', 'www.example.com.')]
    assert pd.change_to_dict(changes[1]) == {'action': 'update', 'name': 'www.example.com.', 'type': 'A', 'ttl': 300,
                                             'records': ['192.0.2.1'],
                                             'before': {'ttl': 3600, 'records': ['192.0.2.1']}}


def test_zone_view_keys():
    current = pd.current_rrsets(api_zone(('www.example.com.', 'A', 60, ['192.0.2.1'])))
    assert pd.zone_view(ZONE, 'Native', 'pod-1', current) == {
        'name': ZONE, 'kind': 'Native', 'account': 'pod-1',
        'rrsets': {'www.example.com. A': {'ttl': 60, 'records': ['192.0.2.1']}}}


# --------------------------------------------------------------------------
# connection settings and HTTP errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize('url, base', [
    ('http://10.1.10.102:8081', 'http://10.1.10.102:8081'),
    ('http://10.1.10.102:8081/', 'http://10.1.10.102:8081'),
    ('http://10.1.10.102:8081/api/v1', 'http://10.1.10.102:8081'),
    ('HTTPS://dns.example.net/pdns/api/v1/', 'https://dns.example.net/pdns'),
])
def test_api_url(url, base):
    assert pd.parse_api_url(url) == base


@pytest.mark.parametrize('url, message', [
    ('', 'api_url is empty'),
    ('10.1.10.102:8081', 'must start with http'),
    ('http://user:pw@host:8081', 'must not contain credentials'),
    ('http://:8081', 'no host name'),
    ('http://host:99999', 'invalid port'),
    ('http://host:8081?x=1', 'query or fragment'),
])
def test_api_url_bad(url, message):
    with pytest.raises(pd.PowerDnsError) as err:
        pd.parse_api_url(url)
    assert message in err.value.msg


def test_argument_spec_env_fallbacks():
    spec = pd.powerdns_argument_spec()
    assert dict((k, v['fallback'][1]) for k, v in spec.items()) == {
        'api_url': ['POWERDNS_API_URL'], 'api_key': ['POWERDNS_API_KEY'], 'server_id': ['POWERDNS_SERVER_ID'],
        'validate_certs': ['POWERDNS_VALIDATE_CERTS'], 'ca_path': ['POWERDNS_CA_BUNDLE'],
        'api_timeout': ['POWERDNS_API_TIMEOUT']}
    assert spec['api_key']['no_log'] is True
    assert spec['server_id']['default'] == 'localhost'
    assert spec['validate_certs']['default'] is True


class FakeResponse(object):
    def __init__(self, status, body=None, text=None, content_type='application/json'):
        self.status_code = status
        self.reason = 'Reason'
        self.headers = {'Content-Type': content_type}
        if body is not None:
            self.text = json.dumps(body)
        else:
            self.text = text or ''
        self.content = self.text.encode()

    def json(self):
        return json.loads(self.text)


class FakeSession(object):
    """Answers each request with the next response (or raises it); records what was sent."""

    def __init__(self, *responses):
        self.responses = list(responses)
        self.sent = []

    def request(self, method, url, **kwargs):
        self.sent.append(dict(method=method, url=url, **kwargs))
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response


def client(*responses, **settings):
    options = dict(api_url='http://127.0.0.1:8081', api_key=KEY)
    options.update(settings)
    return pd.PowerDnsClient(pd.ConnectionSettings(**options), session=FakeSession(*responses))


def test_requests_carry_key_accept_and_verify():
    api = client(FakeResponse(200, {'name': ZONE, 'rrsets': []}), ca_path='/etc/ca.pem')
    assert api.get_zone('example.com.') == {'name': ZONE, 'rrsets': []}
    sent = api.session.sent[0]
    assert sent['url'] == 'http://127.0.0.1:8081/api/v1/servers/localhost/zones/example.com.'
    assert sent['headers']['Accept'] == 'application/json' and sent['headers']['X-API-Key'] == KEY
    assert sent['verify'] == '/etc/ca.pem'
    assert api.requests_made == {'GET': 1}


def test_enclosing_zones_asks_for_each_parent_but_the_tld():
    api = client(FakeResponse(200, []), FakeResponse(200, [{'name': 'example.co.uk.', 'account': 'x'}]))
    assert api.enclosing_zones('shop.example.co.uk.') == [{'name': 'example.co.uk.', 'account': 'x'}]
    assert [s['params'] for s in api.session.sent] == [{'zone': 'example.co.uk.'}, {'zone': 'co.uk.'}]
    api = client()
    assert api.enclosing_zones('example.com.') == [] and api.session.sent == []


def test_absent_zone_checks_the_server_once():
    api = client(FakeResponse(404, {'error': 'Not Found'}), FakeResponse(200, {'id': 'localhost'}))
    assert api.get_zone('example.com.') is None
    paths = [s['url'].rsplit('/v1', 1)[1] for s in api.session.sent]
    assert paths == ['/servers/localhost/zones/example.com.', '/servers/localhost']


@pytest.mark.parametrize('response, message', [
    (FakeResponse(401, text='Unauthorized', content_type='text/plain'), 'authentication failed'),
    (FakeResponse(422, {'error': 'Record x./A \'1.2.3\': unable to parse IP address'}),
     "HTTP 422): Record x./A '1.2.3': unable to parse IP address"),
    (FakeResponse(409, {'error': 'Conflict'}), 'HTTP 409 Conflict'),
    (FakeResponse(500, {'error': 'backend ' + KEY}), 'HTTP 500 backend ********'),
    (FakeResponse(200, text='<html>', content_type='text/html'), 'not JSON'),
    (requests.exceptions.ConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'),
     'connection refused'),
    (requests.exceptions.ReadTimeout('read timed out'), 'did not answer within 30 s'),
    (requests.exceptions.SSLError('certificate verify failed'), 'set ca_path'),
])
def test_errors_are_explained_and_scrubbed(response, message):
    api = client(response)
    with pytest.raises(pd.PowerDnsApiError) as err:
        api.patch_zone(ZONE, {'rrsets': []})
    assert message in err.value.msg
    assert KEY not in err.value.msg


def test_settings_validation():
    with pytest.raises(pd.PowerDnsError) as err:
        pd.ConnectionSettings('http://127.0.0.1:8081', '')
    assert 'api_key is empty' in err.value.msg
    with pytest.raises(pd.PowerDnsError) as err:
        pd.ConnectionSettings('http://127.0.0.1:8081', KEY, server_id='a/b')
    assert 'server_id' in err.value.msg
    assert pd.ConnectionSettings('http://h:1', KEY, validate_certs=False, ca_path='/x').verify is False
    assert pd.scrub_secrets('key=%s!' % KEY, [KEY]) == 'key=********!'
