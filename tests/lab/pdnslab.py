# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's PowerDNS as tests and the benchmark see it.

* ``PowerDnsLab(env)``: the API directly (what an operator would do by hand, and how tests read
  the server's state), DNS questions to its DNS port (dnspython), and the server's own request
  log, to count what a run sent.
* ``PrivatePowerDns()``: a PowerDNS of one's own in a temporary directory (for tests that stop
  it, and for the benchmark), started with the lab's ``PowerDnsService``.
"""

import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SHARED_LOG = ROOT / '.lab' / 'powerdns' / 'pdns.log'
# the real-container part's own PowerDNS (``.lab/env.lxc``)
LXC_DIR = ROOT / '.lab' / 'powerdns-lxc'

# "[webserver] <uuid> 127.0.0.1:40000 "GET /api/v1/servers/localhost/zones/x. HTTP/1.1" 200 1234"
_REQUEST_LINE = re.compile(r'\[webserver\] \S+ \S+ "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')


class ApiRequest(object):
    def __init__(self, method, path, status):
        self.method = method
        self.path = path
        self.status = int(status)

    @property
    def is_write(self):
        return self.method in ('POST', 'PUT', 'PATCH', 'DELETE')

    def __repr__(self):
        return '%s %s %s' % (self.method, self.path, self.status)


class RequestLog(object):
    """The API requests PowerDNS logged after a mark (one line per request, loglevel 6).

    PowerDNS writes a request's line after its answer, so "the lines of what was answered before
    now" is an event, not a delay: ``probe(tag)`` sends a request of our own naming ``tag`` (a zone
    that does not exist), and once its line is in the log, so are the lines of the requests
    answered before it was sent. A mark is the end of such a line; ``since`` reads up to the next.
    """

    def __init__(self, path, probe):
        self.path = Path(path)
        self.probe = probe

    def mark(self):
        """The log's end, after the lines of every request answered before now."""
        return self._sentinel()[1]

    def since(self, mark):
        """Requests logged after ``mark`` and answered before now."""
        end = self._sentinel()[0]
        with open(self.path, 'rb') as handle:
            handle.seek(mark)
            text = handle.read(max(0, end - mark)).decode('utf-8', 'replace')
        return [ApiRequest(m.group('method'), m.group('path'), m.group('status'))
                for m in _REQUEST_LINE.finditer(text)]

    def _sentinel(self, timeout=60):
        """Log a request of our own; the offsets of the start and the end of its line."""
        tag = ('cloudpods-log-mark-%s' % uuid.uuid4().hex).encode()
        start = self._size()
        self.probe(tag.decode())
        deadline = time.monotonic() + timeout
        while True:
            with open(self.path, 'rb') as handle:
                handle.seek(start)
                data = handle.read()
            found = data.find(tag)
            line_end = data.find(b'\n', found) if found >= 0 else -1
            if line_end >= 0:
                return start + data.rfind(b'\n', 0, found) + 1, start + line_end + 1
            if time.monotonic() > deadline:
                raise AssertionError('PowerDNS did not log the request %s within %s s' % (tag.decode(), timeout))
            time.sleep(0.02)

    def _size(self):
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


class PowerDnsLab(object):
    """API, DNS and request log of one lab PowerDNS, from its env (``POWERDNS_*``)."""

    def __init__(self, env, log_path=None):
        self.env = env
        self.api_url = env['POWERDNS_API_URL'].rstrip('/')
        self.key = env['POWERDNS_API_KEY']
        self.server_id = env.get('POWERDNS_SERVER_ID', 'localhost')
        self.dns_port = int(env['POWERDNS_DNS_PORT'])
        self.log = RequestLog(log_path or _lab_log(self.api_url), probe=self.zone)

    # -- API ------------------------------------------------------------

    def _call(self, method, path, body=None):
        url = '%s/api/v1/servers/%s%s' % (self.api_url, self.server_id, path)
        return requests.request(method, url, json=body, timeout=10,
                                headers={'X-API-Key': self.key, 'Accept': 'application/json'})

    def zone(self, name):
        """The zone as the API returns it, or None."""
        reply = self._call('GET', '/zones/%s' % _dotted(name))
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return reply.json()

    def rrsets(self, name):
        """``{(name, type): (ttl, sorted contents)}`` of a zone, SOA included; None when absent."""
        data = self.zone(name)
        if data is None:
            return None
        return dict(((r['name'], r['type']), (r['ttl'], sorted(x['content'] for x in r['records'])))
                    for r in data['rrsets'])

    def create_zone(self, name, account='', rrsets=()):
        body = dict(name=_dotted(name), kind='Native', nameservers=[], account=account,
                    rrsets=[dict(name=n, type=t, ttl=ttl, records=[dict(content=c, disabled=False) for c in contents])
                            for n, t, ttl, contents in rrsets])
        reply = self._call('POST', '/zones', body)
        assert reply.status_code == 201, reply.text
        return reply.json()

    def set_rrset(self, zone, name, rtype, ttl, contents):
        reply = self._call('PATCH', '/zones/%s' % _dotted(zone), dict(rrsets=[dict(
            name=name, type=rtype, ttl=ttl, changetype='REPLACE',
            records=[dict(content=c, disabled=False) for c in contents])]))
        assert reply.status_code == 204, reply.text

    def delete_zone(self, name):
        reply = self._call('DELETE', '/zones/%s' % _dotted(name))
        assert reply.status_code in (204, 404), reply.text

    # -- DNS ------------------------------------------------------------

    def query(self, name, rtype):
        """Ask the server over UDP; returns ``(rcode text, answers)``.

        Answers are text: addresses, ``10 mail.example.net.`` for MX, and for TXT the
        concatenated character-strings (what a mail server reads), decoded as UTF-8.
        """
        message = dns.message.make_query(_dotted(name), rtype)
        reply = dns.query.udp(message, '127.0.0.1', port=self.dns_port, timeout=3)
        answers = []
        for rrset in reply.answer:
            if rrset.rdtype != dns.rdatatype.from_text(rtype):
                continue
            for rdata in rrset:
                if rrset.rdtype == dns.rdatatype.TXT:
                    answers.append(b''.join(rdata.strings).decode('utf-8', 'replace'))
                else:
                    answers.append(rdata.to_text())
        return dns.rcode.to_text(reply.rcode()), sorted(answers)

    def answers(self, name, rtype):
        rcode, answers = self.query(name, rtype)
        return answers if rcode == 'NOERROR' else rcode

    def txt_strings(self, name):
        """The TXT records of ``name`` as lists of character-strings (bytes)."""
        message = dns.message.make_query(_dotted(name), 'TXT')
        reply = dns.query.tcp(message, '127.0.0.1', port=self.dns_port, timeout=3)
        return sorted([list(rdata.strings) for rrset in reply.answer for rdata in rrset
                       if rrset.rdtype == dns.rdatatype.TXT])

    # -- requests -------------------------------------------------------

    def requests_since(self, mark, zone=None):
        """Logged API requests after ``mark``; with ``zone``, those about it (and zone creations)."""
        found = self.log.since(mark)
        if zone is None:
            return found
        suffix = '/zones/%s' % _dotted(zone)
        return [r for r in found if r.path.endswith(suffix) or (r.method == 'POST' and r.path.endswith('/zones'))]


def _lab_log(api_url):
    """The request log of the lab's PowerDNS at ``api_url``: the real-container part's, else the shared one."""
    try:
        settings = json.loads((LXC_DIR / 'settings.json').read_text())
    except (OSError, ValueError):
        return SHARED_LOG
    if api_url == 'http://127.0.0.1:%s' % settings.get('api_port'):
        return LXC_DIR / 'pdns.log'
    return SHARED_LOG


def _dotted(name):
    return name if name.endswith('.') else name + '.'


class PrivatePowerDns(object):
    """A PowerDNS of our own (the lab's PowerDnsService in a temporary directory)."""

    def __init__(self):
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        import lab as lab_module  # pylint: disable=import-outside-toplevel
        self._lab_module = lab_module
        self.tmp = tempfile.TemporaryDirectory(prefix='cloudpods-pdns-')
        self.lab = lab_module.Lab(Path(self.tmp.name))
        self.service = lab_module.PowerDnsService(self.lab)
        self.env = None

    def start(self):
        self.service.stop()
        self.service.start()
        deadline = time.monotonic() + self._lab_module.START_TIMEOUT
        while not self.service.healthy():
            if time.monotonic() > deadline:
                details = self.service.diagnostics()
                self.service.stop()
                raise RuntimeError('private PowerDNS did not start:\n%s' % details)
            time.sleep(0.1)
        self.env = self.service.env()
        return self.env

    def stop(self):
        self.service.stop()

    @property
    def log_path(self):
        return self.service.process.log_file

    def client(self):
        return PowerDnsLab(self.env, log_path=self.log_path)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()
        self.tmp.cleanup()
