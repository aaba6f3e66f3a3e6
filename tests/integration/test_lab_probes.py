# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tests' own "nothing there" checks fail on a dead service instead of passing.

``realpods.dns_a`` returns ``[]`` only for a real empty answer (NXDOMAIN, NODATA) and raises
when no nameserver answered; ``smtplab.Mailbox.assert_no_mail`` proves the SMTP server alive
with a probe before it concludes that no mail was sent.
"""

import os
import smtplib
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for path in (HERE, os.path.join(ROOT, 'tests', 'lab')):
    if path not in sys.path:
        sys.path.insert(0, path)

from labenv import free_port  # noqa: E402
from realpods import DnsNotAnswered, dns_a, dns_no_zone  # noqa: E402
from smtplab import Mailbox  # noqa: E402

SMTPLAB = os.path.join(ROOT, 'tests', 'lab', 'smtplab.py')


# ---------------------------------------------------------------- DNS

def test_dns_a_raises_when_no_nameserver_answers():
    closed = {'POWERDNS_DNS_PORT': str(free_port(udp=True))}  # nobody listens there
    started = time.monotonic()
    with pytest.raises(DnsNotAnswered, match='no nameserver answered'):
        dns_a(closed, 'www.example.test', timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(DnsNotAnswered):
        dns_no_zone(closed, 'example.test')


def test_dns_a_is_empty_only_for_nxdomain_and_nodata(lab_env, pdns, new_zone):
    zone = new_zone('probe')
    pdns.create_zone(zone, account='', rrsets=[('www.%s.' % zone, 'A', 3600, ['192.0.2.10']),
                                               ('txt.%s.' % zone, 'TXT', 3600, ['"only text"'])])
    assert dns_a(lab_env, 'www.' + zone) == ['192.0.2.10']
    assert dns_a(lab_env, 'nothing.' + zone) == []  # NXDOMAIN
    assert dns_a(lab_env, 'txt.' + zone) == []  # NODATA: the name exists, without A records
    # a zone the server does not host: an answer, but none about the name
    gone = new_zone('gone')
    with pytest.raises(DnsNotAnswered, match='REFUSED'):
        dns_a(lab_env, 'www.' + gone)
    assert dns_no_zone(lab_env, 'www.' + gone) and not dns_no_zone(lab_env, 'www.' + zone)


# ---------------------------------------------------------------- SMTP

def wait_listening(port, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, 'the SMTP server did not start on port %d' % port
            time.sleep(0.05)


@pytest.fixture
def smtp_server(tmp_path):
    """A private lab SMTP server (smtplab.py serve): (port, mailbox directory, process)."""
    port = free_port()
    mailbox = tmp_path / 'mailbox'
    process = subprocess.Popen([sys.executable, SMTPLAB, 'serve', '--port', str(port), '--mailbox', str(mailbox)],
                               cwd=os.path.dirname(SMTPLAB), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield port, mailbox, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)


def test_no_mail_is_concluded_only_from_a_live_server(smtp_server):
    port, directory, process = smtp_server
    mailbox = Mailbox(directory, '127.0.0.1', port)
    mark = mailbox.mark()
    mailbox.assert_no_mail(since=mark)  # alive: the probe arrived, and it is no mail
    assert len(mailbox.files()) == 1 and mailbox.messages() == []

    with smtplib.SMTP('127.0.0.1', port, timeout=10) as client:
        client.sendmail('noreply@example.net', ['jane@example.org'], 'Subject: welcome\r\n\r\nhello\r\n')
    with pytest.raises(AssertionError, match='unexpected mail'):
        mailbox.assert_no_mail(since=mark)
    mailbox.assert_no_mail(since=mark, to='joe@example.org')
    # another lane's mail does not count for a test that names its pod; the text is searched too
    mailbox.assert_no_mail(since=mark, mentioning='pod-of-another-test')
    with pytest.raises(AssertionError, match='unexpected mail'):
        mailbox.assert_no_mail(since=mark, mentioning='HELLO')

    process.terminate()
    process.wait(timeout=15)
    with pytest.raises(AssertionError, match='did not take a probe message'):
        mailbox.assert_no_mail(since=mailbox.mark())


def test_no_mail_fails_without_a_server_or_with_another_mailbox(smtp_server, tmp_path):
    port, dummy_directory, dummy_process = smtp_server
    nowhere = Mailbox(tmp_path / 'elsewhere', '127.0.0.1', port)  # the server writes to another directory
    with pytest.raises(AssertionError, match='never reached the mailbox'):
        nowhere.prove_alive(timeout=1)
    with pytest.raises(AssertionError, match='did not take a probe message'):
        Mailbox(tmp_path / 'mailbox', '127.0.0.1', free_port()).assert_no_mail(since=set())
    with pytest.raises(AssertionError, match='no SMTP server to probe'):
        Mailbox(tmp_path / 'mailbox').assert_no_mail(since=set())
