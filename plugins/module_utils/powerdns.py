# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One PowerDNS Authoritative API client for every module of mpanel.cloudpods.

Three layers, each usable on its own:

* names and records: domain names validated and converted to the ASCII form PowerDNS
  stores (IDN to punycode, lower case, trailing dot), record contents put in canonical form
  (``10 mail.example.net.`` for MX, quoted strings for TXT, ...), so that a value compares
  equal however the user wrote it. Pure functions, no I/O.
* changes: the rrsets wanted against the rrsets PowerDNS has, giving the minimal list of
  rrset changes (one PATCH) and the before/after views used for diffs.
* HTTP: ``PowerDnsClient`` (requests), with error messages that say what to check and never
  contain the API key, and ``PowerDnsModule``, the base class of the modules.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import ipaddress
import json
import re
from urllib.parse import quote, urlunsplit

from ansible.module_utils.basic import env_fallback, missing_required_lib
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils import names
from ansible_collections.mpanel.cloudpods.plugins.module_utils._http import (
    HAS_REQUESTS,
    REQUEST_ERRORS,
    ApiSettings,
    environment_verify,
    require_requests,
    settle_environment,
    requests,
    split_api_url,
    transport_failure,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils.base import SecretSafeModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils.redact import scrub_secrets

try:
    import idna
    HAS_IDNA = True
except ImportError:  # the standard library's IDNA 2003 codec is used instead
    idna = None
    HAS_IDNA = False


API_PREFIX = '/api/v1'
ZONE_KINDS = ('Native', 'Master')
MAX_NAME_LENGTH = names.MAX_NAME_LENGTH
MAX_LABEL_LENGTH = names.MAX_LABEL_LENGTH
MAX_TXT_STRING = 255           # octets in one TXT character-string
MAX_TTL = 2147483647

# Types whose content is one domain name.
_NAME_TYPES = frozenset(('CNAME', 'NS', 'PTR', 'DNAME', 'ANAME', 'ALIAS'))
_TXT_TYPES = frozenset(('TXT', 'SPF'))
_TYPE_RE = re.compile(r'^[A-Z][A-Z0-9]*$')
# Zone names follow the domain rule of module_utils/names.py. Owner names of records, and the names records
# point to, are not host names: they may have '_' labels (_dmarc, mail._domainkey, SRV's _sip._tcp, a CNAME to
# a DKIM key), so their labels have a rule of their own, on purpose.
_OWNER_LABEL_RE = re.compile(r'^[a-z0-9_-]+$')
_CAA_TAG_RE = re.compile(r'^[a-z0-9]+$')
_DISABLED_SUFFIX = ' (disabled)'


class PowerDnsError(Exception):
    """An error to report to the user as is: ``msg`` is already explained and scrubbed."""

    def __init__(self, msg):
        super(PowerDnsError, self).__init__(msg)
        self.msg = msg


class PowerDnsApiError(PowerDnsError):
    """The API answered with an HTTP error (or did not answer: status_code None)."""

    def __init__(self, msg, status_code=None, error=None, method=None, path=None):
        super(PowerDnsApiError, self).__init__(msg)
        self.status_code = status_code
        self.error = error
        self.method = method
        self.path = path


class InvalidName(PowerDnsError):
    """A domain name broke one of the rules; the message names the rule."""


class InvalidRecord(PowerDnsError):
    """A record content could not be put in canonical form."""


# --------------------------------------------------------------------------
# Connection settings
# --------------------------------------------------------------------------

def powerdns_argument_spec():
    """Connection options shared by the PowerDNS modules (documented in the doc fragment)."""
    return dict(
        api_url=dict(type='str', required=True, fallback=(env_fallback, ['POWERDNS_API_URL'])),
        api_key=dict(type='str', required=True, no_log=True, fallback=(env_fallback, ['POWERDNS_API_KEY'])),
        server_id=dict(type='str', default='localhost', fallback=(env_fallback, ['POWERDNS_SERVER_ID'])),
        validate_certs=dict(type='bool', default=True, fallback=(env_fallback, ['POWERDNS_VALIDATE_CERTS'])),
        ca_path=dict(type='path', fallback=(env_fallback, ['POWERDNS_CA_BUNDLE'])),
        api_timeout=dict(type='int', default=30, fallback=(env_fallback, ['POWERDNS_API_TIMEOUT'])),
    )


def parse_api_url(url):
    """Normalise the API URL to ``scheme://host[:port][/prefix]`` (without ``/api/v1``)."""
    example = 'e.g. http://10.1.10.102:8081'
    parts, dummy_port = split_api_url(
        url, ('http', 'https'), 'must start with http:// or https://', example,
        'api_url is empty: set it (or POWERDNS_API_URL) to the PowerDNS webserver URL, %s' % example,
        'the API key goes in api_key', PowerDnsError)
    path = parts.path.rstrip('/')
    if path.endswith(API_PREFIX):
        path = path[:-len(API_PREFIX)]
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, '', ''))


class ConnectionSettings(ApiSettings):
    """Validated connection options, built from module parameters."""

    OPTIONS = ('api_url', 'api_key', 'server_id', 'validate_certs', 'ca_path', 'api_timeout')

    def __init__(self, api_url, api_key, server_id='localhost', validate_certs=True, ca_path=None, api_timeout=30):
        self.base_url = parse_api_url(api_url)
        if not api_key:
            raise PowerDnsError('api_key is empty: set it (or POWERDNS_API_KEY) to the api-key of the PowerDNS '
                                'server')
        self.api_key = api_key
        self.server_id = (server_id or 'localhost').strip()
        if not self.server_id or '/' in self.server_id:
            raise PowerDnsError('server_id must be the id of the PowerDNS server (almost always localhost); '
                                'got %r' % server_id)
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        if api_timeout is not None and api_timeout <= 0:
            raise PowerDnsError('api_timeout must be a positive number of seconds; got %r' % api_timeout)
        self.api_timeout = api_timeout or 30


# --------------------------------------------------------------------------
# Domain names
# --------------------------------------------------------------------------

def _label_to_ascii(label, name):
    """One label to its ASCII (punycode) form, lower case."""
    try:
        label.encode('ascii')
    except UnicodeEncodeError:
        try:
            if HAS_IDNA:
                ascii_label = idna.encode(label, uts46=True).decode('ascii')
            else:
                ascii_label = label.encode('idna').decode('ascii')
        except (UnicodeError, ValueError) as exc:
            raise InvalidName('%r: label %r is not a valid internationalized domain name label (%s)'
                              % (name, label, to_text(exc)))
        return ascii_label.lower()
    return label.lower()


def _split_labels(name, what):
    """Strip, drop one trailing dot, reject empty and whitespace; return the labels as given."""
    if name is None or not to_text(name).strip():
        raise InvalidName('%s is empty' % what)
    name = to_text(name).strip()
    if re.search(r'\s', name):
        raise InvalidName('%r: a domain name must not contain spaces or other whitespace' % name)
    if name.endswith('.'):
        name = name[:-1]
    if not name:
        raise InvalidName('%r: the root zone cannot be managed here' % (name + '.'))
    labels = name.split('.')
    if any(label == '' for label in labels):
        raise InvalidName('%r: empty label (two dots in a row, or a leading dot)' % name)
    return name, labels


def _check_lengths(shown, labels):
    for label in labels:
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidName('%r: label %r is %d characters long; a label may have at most %d'
                              % (shown, _shorten(label), len(label), MAX_LABEL_LENGTH))
    total = len('.'.join(labels))
    if total > MAX_NAME_LENGTH:
        raise InvalidName('%r: the name is %d characters long (in ASCII form); a domain name may have at most %d'
                          % (_shorten(shown, 60), total, MAX_NAME_LENGTH))


def _shorten(text, width=20):
    return text if len(text) <= width else text[:width - 3] + '...'


def _check_hyphens(shown, label):
    if names.has_hyphen_at_end(label):
        raise InvalidName('%r: label %r starts or ends with a hyphen' % (shown, label))


def _check_idna_label(shown, label):
    """An ``xn--`` label must decode as punycode."""
    if not label.startswith('xn--'):
        return
    try:
        if HAS_IDNA:
            idna.decode(label)
        else:
            label.encode('ascii').decode('idna')
    except (UnicodeError, ValueError) as exc:
        raise InvalidName('%r: label %r is not valid punycode (%s)' % (shown, label, to_text(exc)))


def normalize_zone_name(name):
    """Validate a zone (customer domain) name; return its ASCII form with a trailing dot.

    The rule is the domain rule of module_utils/names.py (``cloudpods_domain_pattern``), applied
    to the ASCII form; each part of it has its own message: not empty, no whitespace, no empty
    label, no wildcard, IDN converted to punycode, labels of letters, digits and hyphens (not at
    either end), at most 63 characters per label and 253 in all, at least two labels (no bare
    TLD), and a top-level label of letters (or an IDN one in xn-- form). An ``xn--`` label must
    also be valid punycode.
    """
    shown, labels = _split_labels(name, 'the zone name')
    if any('*' in label for label in labels):
        raise InvalidName('%r: wildcards are not allowed in a zone name' % shown)
    labels = [_label_to_ascii(label, shown) for label in labels]
    _check_lengths(shown, labels)
    for label in labels:
        if not names.has_label_chars(label):
            raise InvalidName('%r: label %r may only contain letters, digits and hyphens' % (shown, label))
        _check_hyphens(shown, label)
        _check_idna_label(shown, label)
    if len(labels) < 2:
        raise InvalidName('%r is a bare top-level domain; a zone needs at least two labels, such as example.com'
                          % shown)
    if labels[-1].isdigit():
        raise InvalidName('%r: the top-level label %r is all digits (an IP address is not a domain name)'
                          % (shown, labels[-1]))
    if not names.is_top_label(labels[-1]):
        raise InvalidName('%r: the top-level label %r must be 2 to 63 letters, or an internationalized one in its '
                          'xn-- form' % (shown, labels[-1]))
    ascii_name = '.'.join(labels)
    if not names.is_domain(ascii_name):  # the checks above are the rule's parts, for the messages
        raise InvalidName('%r is not a domain name' % shown)
    return ascii_name + '.'


def _normalize_labels(shown, labels, allow_wildcard):
    result = []
    for index, label in enumerate(labels):
        if '*' in label:
            if not allow_wildcard or label != '*' or index != 0:
                raise InvalidName('%r: a wildcard is only allowed as the whole leftmost label (*.example.com)'
                                  % shown)
            result.append(label)
            continue
        label = _label_to_ascii(label, shown)
        if not _OWNER_LABEL_RE.match(label):
            raise InvalidName('%r: label %r may only contain letters, digits, hyphens and underscores'
                              % (shown, label))
        _check_hyphens(shown, label)
        _check_idna_label(shown, label)
        result.append(label)
    _check_lengths(shown, result)
    return result


def normalize_owner_name(name, zone):
    """The absolute name of an rrset in ``zone`` (which is already normalised).

    ``@`` or empty is the apex; a name with a trailing dot, or one that is the zone or ends with
    ``.<zone>``, is absolute and must lie inside the zone; anything else is relative to the zone
    (``www``, ``_dmarc``, ``mail._domainkey``).
    """
    zone_labels = zone.rstrip('.').split('.')
    raw = to_text(name if name is not None else '').strip()
    if raw in ('', '@'):
        return zone
    absolute = raw.endswith('.')
    shown, labels = _split_labels(raw, 'the rrset name')
    labels = _normalize_labels(shown, labels, allow_wildcard=True)
    inside = labels[-len(zone_labels):] == zone_labels
    if absolute and not inside:
        raise InvalidName('%r is outside the zone %s: use a name relative to the zone (such as www) or a full '
                          'name ending in %s' % (raw, zone, zone))
    if not inside:
        labels = labels + zone_labels
    _check_lengths(shown, labels)
    return '.'.join(labels) + '.'


def normalize_target_name(name):
    """A domain name inside record content (CNAME, MX, NS, SRV targets): always absolute."""
    raw = to_text(name).strip()
    if raw == '.':
        return '.'
    shown, labels = _split_labels(raw, 'the target name')
    labels = _normalize_labels(shown, labels, allow_wildcard=False)
    return '.'.join(labels) + '.'


def zone_id(zone):
    """The id PowerDNS uses for a zone in URLs: its name, other characters as ``=XX``."""
    out = []
    for char in zone:
        if char.isascii() and (char.isalnum() or char in '.-'):
            out.append(char)
        else:
            out.extend('=%02X' % byte for byte in char.encode('utf-8'))
    result = ''.join(out)
    return result if result.endswith('.') else result + '.'


# --------------------------------------------------------------------------
# Record contents
# --------------------------------------------------------------------------

def _parse_txt_strings(content):
    """Split TXT content into character-strings (bytes).

    Content that starts with a double quote is zone-file syntax: one or more quoted strings
    with ``\\"``, ``\\\\`` and ``\\DDD`` escapes. Anything else is one plain text (a user who
    writes ``v=spf1 -all`` means exactly that text).
    """
    text = to_text(content)
    stripped = text.strip()
    if not stripped.startswith('"'):
        return [stripped.encode('utf-8')]
    data = stripped.encode('utf-8')
    strings = []
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] in (b' ', b'\t'):
            pos += 1
            continue
        if data[pos:pos + 1] != b'"':
            raise InvalidRecord('TXT content %r has text outside the quoted strings; quote all of it or none'
                                % _shorten(text, 60))
        pos += 1
        current = bytearray()
        closed = False
        while pos < len(data):
            byte = data[pos:pos + 1]
            if byte == b'\\':
                digits = data[pos + 1:pos + 4]
                if len(digits) == 3 and digits.isdigit():
                    value = int(digits)
                    if value > 255:
                        raise InvalidRecord('TXT content %r has an invalid escape \\%s'
                                            % (_shorten(text, 60), digits.decode()))
                    current.append(value)
                    pos += 4
                elif pos + 1 < len(data):
                    current += data[pos + 1:pos + 2]
                    pos += 2
                else:
                    break
            elif byte == b'"':
                closed = True
                pos += 1
                break
            else:
                current += byte
                pos += 1
        if not closed:
            raise InvalidRecord('TXT content %r has an unterminated quoted string' % _shorten(text, 60))
        strings.append(bytes(current))
    return strings


def _chunk(string):
    """Split one string into pieces of at most 255 octets, not inside a UTF-8 character."""
    pieces = []
    while len(string) > MAX_TXT_STRING:
        cut = MAX_TXT_STRING
        while cut > MAX_TXT_STRING - 4 and 0x80 <= string[cut] < 0xC0:
            cut -= 1
        if 0x80 <= string[cut] < 0xC0:
            cut = MAX_TXT_STRING
        pieces.append(string[:cut])
        string = string[cut:]
    pieces.append(string)
    return pieces


def _quote_txt(string):
    """One character-string in PowerDNS's zone form: quoted, UTF-8 kept, controls as \\DDD."""
    try:
        text = string.decode('utf-8')
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    out = []
    if utf8:
        for char in text:
            code = ord(char)
            if char in '"\\':
                out.append('\\' + char)
            elif code < 0x20 or code == 0x7f:
                out.append('\\%03d' % code)
            else:
                out.append(char)
    else:
        for code in bytearray(string):
            char = chr(code)
            if char in '"\\':
                out.append('\\' + char)
            elif code < 0x20 or code >= 0x7f:
                out.append('\\%03d' % code)
            else:
                out.append(char)
    return '"%s"' % ''.join(out)


def canonical_txt(content):
    strings = []
    for string in _parse_txt_strings(content):
        strings.extend(_chunk(string))
    return ' '.join(_quote_txt(s) for s in strings)


def _int_field(value, what, rtype, content, maximum=65535):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0 or number > maximum or not value.isdigit():
        raise InvalidRecord('%s record %r: %s must be a number from 0 to %d' % (rtype, content, what, maximum))
    return number


def _fields(content, count, rtype, form):
    parts = content.split()
    if len(parts) != count:
        raise InvalidRecord('%s record %r must have the form %r' % (rtype, content, form))
    return parts


def canonical_content(rtype, content):
    """``content`` of an ``rtype`` record in the canonical form PowerDNS stores.

    Raises InvalidRecord (or InvalidName) with a message saying what is wrong.
    """
    rtype = rtype.upper()
    raw = to_text(content).strip()
    if rtype in _TXT_TYPES:
        return canonical_txt(to_text(content))
    if not raw:
        raise InvalidRecord('%s record content is empty' % rtype)
    if rtype == 'A':
        try:
            return str(ipaddress.IPv4Address(raw))
        except ValueError:
            raise InvalidRecord('A record %r is not an IPv4 address' % raw)
    if rtype == 'AAAA':
        try:
            return ipaddress.IPv6Address(raw).compressed
        except ValueError:
            raise InvalidRecord('AAAA record %r is not an IPv6 address' % raw)
    if rtype in _NAME_TYPES:
        return normalize_target_name(raw)
    if rtype == 'MX':
        prio, host = _fields(raw, 2, rtype, '<priority> <mail host>, e.g. 10 mail.example.net')
        return '%d %s' % (_int_field(prio, 'the priority', rtype, raw), normalize_target_name(host))
    if rtype == 'SRV':
        prio, weight, port, target = _fields(raw, 4, rtype, '<priority> <weight> <port> <target>')
        return '%d %d %d %s' % (_int_field(prio, 'the priority', rtype, raw),
                                _int_field(weight, 'the weight', rtype, raw),
                                _int_field(port, 'the port', rtype, raw), normalize_target_name(target))
    if rtype == 'CAA':
        parts = raw.split(None, 2)
        if len(parts) != 3:
            raise InvalidRecord('CAA record %r must have the form <flags> <tag> <value>, e.g. 0 issue "letsencrypt.org"'
                                % raw)
        flags = _int_field(parts[0], 'the flags', rtype, raw, maximum=255)
        tag = parts[1].lower()
        if not _CAA_TAG_RE.match(tag):
            raise InvalidRecord('CAA record %r: the tag must be letters and digits (issue, issuewild, iodef)' % raw)
        value = _parse_txt_strings(parts[2])
        if len(value) != 1:
            raise InvalidRecord('CAA record %r: the value must be one string' % raw)
        return '%d %s %s' % (flags, tag, _quote_txt(value[0]))
    # Other types are sent as written (PowerDNS checks them); only spacing is normalised.
    return ' '.join(raw.split())


def canonical_current(rtype, content):
    """Canonical form of content read from PowerDNS; content we cannot parse is kept as is."""
    try:
        return canonical_content(rtype, content)
    except PowerDnsError:
        return ' '.join(to_text(content).split())


# --------------------------------------------------------------------------
# RRsets, changes and views
# --------------------------------------------------------------------------

RRset = collections.namedtuple('RRset', 'name type ttl records')


def rrset_key(name, rtype):
    return '%s %s' % (name, rtype)


def current_rrsets(zone_data):
    """``{(name, type): RRset}`` from a zone as returned by the API, SOA left out.

    Records are canonical and sorted; a disabled record carries a `` (disabled)`` suffix so that
    it compares unequal to the enabled record we would want.
    """
    result = {}
    for rrset in zone_data.get('rrsets') or []:
        rtype = to_text(rrset.get('type', '')).upper()
        if rtype == 'SOA':
            continue
        name = to_text(rrset.get('name', '')).lower()
        records = []
        for record in rrset.get('records') or []:
            content = canonical_current(rtype, record.get('content', ''))
            records.append(content + (_DISABLED_SUFFIX if record.get('disabled') else ''))
        if not records:
            continue  # an rrset with comments only
        result[(name, rtype)] = RRset(name, rtype, int(rrset.get('ttl') or 0), tuple(sorted(set(records))))
    return result


def desired_rrsets(zone, rrsets, default_ttl, nameservers=None):
    """Validate the module's ``rrsets`` (and ``nameservers``); return ``(wanted, unwanted)``.

    ``wanted`` maps ``(name, type)`` to RRset; ``unwanted`` is the set of ``(name, type)`` with
    ``state: absent``. Every error names the rrset it is about.
    """
    wanted = {}
    unwanted = set()
    seen = {}
    for index, item in enumerate(rrsets or []):
        label = 'rrsets[%d]' % index
        rtype = to_text(item.get('type') or '').strip().upper()
        if not _TYPE_RE.match(rtype):
            raise InvalidRecord('%s: type %r is not a DNS record type' % (label, item.get('type')))
        try:
            name = normalize_owner_name(item.get('name'), zone)
        except InvalidName as exc:
            raise InvalidName('%s (%s): %s' % (label, rtype, exc.msg))
        key = (name, rtype)
        label = '%s (%s %s)' % (label, name, rtype)
        if key in seen:
            raise InvalidRecord('%s: the same name and type is also given as rrsets[%d]; put all its records in '
                                'one rrset' % (label, seen[key]))
        seen[key] = index
        if rtype == 'SOA':
            raise InvalidRecord('%s: the SOA record is maintained by PowerDNS and cannot be set here' % label)
        if rtype == 'NS' and name == zone and nameservers:
            raise InvalidRecord('%s: the apex NS records are given by nameservers; do not list them in rrsets too'
                                % label)
        if item.get('state', 'present') == 'absent':
            unwanted.add(key)
            continue
        ttl = item.get('ttl')
        ttl = default_ttl if ttl is None else ttl
        if ttl < 0 or ttl > MAX_TTL:
            raise InvalidRecord('%s: ttl %s is out of range (0 to %d)' % (label, ttl, MAX_TTL))
        records = item.get('records') or []
        if not records:
            raise InvalidRecord('%s: records is empty; give at least one record, or state: absent to remove the '
                                'rrset' % label)
        try:
            contents = tuple(sorted(set(canonical_content(rtype, r) for r in records)))
        except PowerDnsError as exc:
            raise InvalidRecord('%s: %s' % (label, exc.msg))
        if rtype == 'CNAME' and len(contents) > 1:
            raise InvalidRecord('%s: a CNAME rrset can have only one record' % label)
        wanted[key] = RRset(name, rtype, ttl, contents)
    if nameservers:
        try:
            contents = tuple(sorted(set(normalize_target_name(ns) for ns in nameservers)))
        except InvalidName as exc:
            raise InvalidName('nameservers: %s' % exc.msg)
        wanted[(zone, 'NS')] = RRset(zone, 'NS', default_ttl, contents)
    for (name, rtype) in wanted:
        if rtype == 'CNAME':
            if name == zone:
                raise InvalidRecord('%s CNAME: a CNAME cannot be at the zone apex (it would hide SOA and NS)' % name)
            others = sorted(t for (n, t) in wanted if n == name and t != 'CNAME')
            if others:
                raise InvalidRecord('%s CNAME: a name with a CNAME can have no other records (also given: %s)'
                                    % (name, ', '.join(others)))
    return wanted, unwanted


def is_protected(key, zone):
    """Never removed by exclusive mode: SOA (not in our views anyway) and the apex NS."""
    name, rtype = key
    return rtype == 'SOA' or (rtype == 'NS' and name == zone)


Change = collections.namedtuple('Change', 'action name type ttl records before')


def rrset_changes(current, wanted, unwanted, zone, exclusive=False):
    """The rrset changes that turn ``current`` into what is wanted, in a stable order."""
    changes = []
    for key in sorted(wanted):
        want = wanted[key]
        have = current.get(key)
        if have is None:
            changes.append(Change('create', want.name, want.type, want.ttl, want.records, None))
        elif have.ttl != want.ttl or have.records != want.records:
            changes.append(Change('update', want.name, want.type, want.ttl, want.records, have))
    doomed = set(k for k in unwanted if k in current)
    if exclusive:
        doomed |= set(k for k in current if k not in wanted and not is_protected(k, zone))
    for key in sorted(doomed):
        have = current[key]
        changes.append(Change('delete', have.name, have.type, have.ttl, have.records, have))
    return changes


def patch_body(changes):
    """The one PATCH that applies ``changes`` (PowerDNS applies it in one transaction)."""
    rrsets = []
    for change in changes:
        if change.action == 'delete':
            rrsets.append(dict(name=change.name, type=change.type, changetype='DELETE'))
        else:
            rrsets.append(dict(name=change.name, type=change.type, ttl=change.ttl, changetype='REPLACE',
                               records=[dict(content=c, disabled=False) for c in change.records]))
    return dict(rrsets=rrsets)


def apply_changes(current, changes):
    """``current`` with ``changes`` applied (the predicted state, for check mode and results)."""
    after = dict(current)
    for change in changes:
        key = (change.name, change.type)
        if change.action == 'delete':
            after.pop(key, None)
        else:
            after[key] = RRset(change.name, change.type, change.ttl, change.records)
    return after


def change_to_dict(change):
    result = dict(action=change.action, name=change.name, type=change.type, ttl=change.ttl,
                  records=list(change.records))
    if change.before is not None and change.action == 'update':
        result['before'] = dict(ttl=change.before.ttl, records=list(change.before.records))
    return result


def rrsets_list(rrsets):
    """RRsets as a sorted list of dicts (name, type, ttl, records)."""
    return [dict(name=r.name, type=r.type, ttl=r.ttl, records=list(r.records))
            for dummy, r in sorted(rrsets.items())]


def zone_view(name, kind, account, rrsets):
    """What diffs show: zone attributes and every rrset (but SOA) as ``'NAME TYPE': {ttl, records}``."""
    return dict(name=name, kind=kind, account=account,
                rrsets=dict((rrset_key(r.name, r.type), dict(ttl=r.ttl, records=list(r.records)))
                            for r in rrsets.values()))


# --------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------

def describe_api_error(status_code, error, method, path, server_id):
    where = '%s %s' % (method, path)
    error = to_text(error or '').strip()
    if status_code == 401:
        return ('PowerDNS API authentication failed (%s: HTTP 401 %s): the API key was refused; check api_key '
                '(POWERDNS_API_KEY) against the api-key setting of the PowerDNS server'
                % (where, error or 'Unauthorized'))
    if status_code == 403:
        return ('PowerDNS API refused %s (HTTP 403 %s): check webserver-allow-from on the PowerDNS server'
                % (where, error or 'Forbidden'))
    if status_code == 404:
        return ('PowerDNS API answered 404 %s for %s: check api_url (the webserver base URL, e.g. '
                'http://10.1.10.102:8081) and server_id (%r, almost always localhost)'
                % (error or 'Not Found', where, server_id))
    if status_code == 409:
        return 'PowerDNS refused %s (HTTP 409 Conflict): %s' % (where, error or 'the zone already exists')
    if status_code == 422:
        return 'PowerDNS rejected %s (HTTP 422): %s' % (where, error or 'Unprocessable Entity')
    return 'PowerDNS API error on %s: HTTP %s %s' % (where, status_code, error)


class PowerDnsClient(object):
    """The PowerDNS Authoritative HTTP API (``/api/v1``) for one server id.

    Counts its requests by method in ``requests_made`` (the benchmark and tests read it).
    """

    def __init__(self, settings, session=None):
        if not HAS_REQUESTS:
            raise PowerDnsError(missing_required_lib('requests'))
        self.settings = settings
        self._verify = settings.verify
        if session is None:  # our own: the environment read once (a session given is used as it is)
            session = requests.Session()
            settle_environment(session, settings.base_url)
            self._verify = environment_verify(settings.verify)
        self.session = session
        self.requests_made = collections.Counter()

    def scrub(self, text):
        return scrub_secrets(text, [self.settings.api_key])

    def server_path(self, suffix=''):
        return '%s/servers/%s%s' % (API_PREFIX, quote(self.settings.server_id, safe=''), suffix)

    def zone_path(self, zone):
        return self.server_path('/zones/%s' % quote(zone_id(zone), safe='.=-'))

    def request(self, method, path, body=None, missing_ok=False, params=None):
        """One call; returns the decoded JSON (None for 204, or for 404 when ``missing_ok``)."""
        headers = {'X-API-Key': self.settings.api_key, 'Accept': 'application/json'}
        data = None
        if body is not None:
            headers['Content-Type'] = 'application/json'
            data = json.dumps(body)
        url = self.settings.base_url + path
        self.requests_made[method] += 1
        try:
            # verify= on every request: requests prefers REQUESTS_CA_BUNDLE over a session's verify.
            response = self.session.request(method, url, data=data, headers=headers, params=params,
                                            timeout=self.settings.api_timeout, verify=self._verify)
        except REQUEST_ERRORS as exc:
            raise PowerDnsApiError(self.scrub(self.describe_transport_error(exc, method, path)),
                                   method=method, path=path)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            error = self._error_text(response)
            msg = describe_api_error(response.status_code, error, method, path, self.settings.server_id)
            raise PowerDnsApiError(self.scrub(msg), status_code=response.status_code, error=self.scrub(error),
                                   method=method, path=path)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise PowerDnsApiError(self.scrub('PowerDNS API answered %s %s with something that is not JSON (HTTP %s, '
                                              '%s): is api_url the PowerDNS webserver?'
                                              % (method, path, response.status_code,
                                                 response.headers.get('Content-Type', 'no content type'))),
                                   status_code=response.status_code, method=method, path=path)

    @staticmethod
    def _error_text(response):
        try:
            body = response.json()
        except ValueError:
            return to_text(response.text or response.reason or '').strip()[:500]
        if isinstance(body, dict):
            return to_text(body.get('error') or body.get('errors') or response.reason or '')
        return to_text(body)[:500]

    def describe_transport_error(self, exc, method, path):
        where = '%s %s%s' % (method, self.settings.base_url, path)
        failure = transport_failure(exc)
        if failure == 'tls':
            if self.settings.ca_path:
                how = ('the certificate does not verify against ca_path %s (POWERDNS_CA_BUNDLE)'
                       % self.settings.ca_path)
            else:
                how = 'set ca_path (POWERDNS_CA_BUNDLE) to the CA that signed the API certificate'
            return 'TLS error talking to the PowerDNS API (%s): %s; %s' % (where, to_text(exc), how)
        if failure == 'timeout':
            return ('The PowerDNS API did not answer within %s s (%s): is the server overloaded, or api_timeout too '
                    'small?' % (self.settings.api_timeout, where))
        if failure == 'connection':
            text = to_text(exc)
            reason = 'connection refused' if 'refused' in text.lower() else text
            return ('Cannot connect to the PowerDNS API (%s): %s. Is PowerDNS running with api=yes and its webserver '
                    'listening there, and is api_url (POWERDNS_API_URL) right?' % (where, reason))
        return 'Request to the PowerDNS API failed (%s): %s' % (where, to_text(exc))

    # -- calls -----------------------------------------------------------

    def server(self):
        return self.request('GET', self.server_path())

    def get_zone(self, zone):
        """The zone with its rrsets, or None when it does not exist."""
        data = self.request('GET', self.zone_path(zone), missing_ok=True)
        if data is None:
            # A 404 also comes back for a wrong server id: make sure the server exists.
            self.server()
        return data

    def list_zones(self, name=None):
        """Zones of the server without rrsets; with ``name``, only that zone (or none)."""
        return self.request('GET', self.server_path('/zones'), params={'zone': name} if name else None) or []

    def enclosing_zones(self, zone):
        """Existing zones of which ``zone`` would be a part (``example.com.`` for
        ``shop.example.com.``), closest first; top-level domains are not asked about."""
        labels = zone.rstrip('.').split('.')
        found = []
        for start in range(1, len(labels) - 1):
            found.extend(self.list_zones('.'.join(labels[start:]) + '.'))
        return found

    def create_zone(self, body):
        return self.request('POST', self.server_path('/zones'), body=body)

    def patch_zone(self, zone, body):
        return self.request('PATCH', self.zone_path(zone), body=body)

    def update_zone(self, zone, attributes):
        return self.request('PUT', self.zone_path(zone), body=attributes)

    def delete_zone(self, zone):
        return self.request('DELETE', self.zone_path(zone), missing_ok=True)


# --------------------------------------------------------------------------
# Module base class
# --------------------------------------------------------------------------

class PowerDnsModule(SecretSafeModule):
    """Base class of the PowerDNS modules: connects, and turns PowerDnsError into fail_json.

    Subclasses implement ``run()`` returning the result dict. Nothing in any result,
    success or failure, can contain the API key.
    """

    expected_error = PowerDnsError

    def __init__(self, module):
        super(PowerDnsModule, self).__init__(module)
        self._secrets = [module.params.get('api_key')]
        require_requests(module)
        self.client = None
        try:
            self.settings = ConnectionSettings.from_params(module.params)
            self.client = PowerDnsClient(self.settings)
        except PowerDnsError as exc:
            self.fail(exc.msg)
