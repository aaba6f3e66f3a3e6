# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the pod_welcome_mail action: the marker on a temporary directory through the local
connection (see conftest.py), the mail to a real SMTP server on loopback (aiosmtpd) or, for what
that server cannot show (STARTTLS, a refusal), to a stand-in client."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import smtplib
import stat

import pytest

from ansible.errors import AnsibleActionFail

from ansible_collections.mpanel.cloudpods.plugins.action.pod_welcome_mail import ActionModule
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import welcome_mail

PASSWORD = 'a-relay-password'


class FakeSMTP(object):
    """A stand-in smtplib client recording what it is asked; ``offers`` are the EHLO extensions."""

    sent = []
    offers = ()
    fail = None

    def __init__(self, host, port, timeout=None, context=None):
        self.steps = []

    def ehlo(self):
        self.steps.append('ehlo')

    def has_extn(self, name):
        return name in self.offers

    def starttls(self, context=None):
        self.steps.append('starttls')

    def login(self, user, password):
        self.steps.append(('login', user))
        if FakeSMTP.fail == 'login':
            raise smtplib.SMTPAuthenticationError(535, ('rejected %s for %s' % (password, user)).encode())

    def sendmail(self, sender, to, text):
        if FakeSMTP.fail == 'send':
            raise smtplib.SMTPRecipientsRefused({to[0]: (550, b'no')})
        FakeSMTP.sent.append(dict(sender=sender, to=to, text=text, steps=list(self.steps)))

    def quit(self):
        pass

    def close(self):
        pass


@pytest.fixture
def fake_smtp(monkeypatch):
    FakeSMTP.sent, FakeSMTP.offers, FakeSMTP.fail = [], (), None
    monkeypatch.setattr(welcome_mail.smtplib, 'SMTP', FakeSMTP)
    monkeypatch.setattr(welcome_mail.smtplib, 'SMTP_SSL', FakeSMTP)
    return FakeSMTP


@pytest.fixture
def args(tmp_path):
    return dict(marker=str(tmp_path / 'welcome-mail' / 'pod-a-101.sent'), host='smtp.test', port=2525,
                sender='Cloud Pods <noreply@example.net>', to=['jane@customer.test'],
                subject='Your Cloud Pod pod-a is ready', body=u'Hello,\n\n  Pod:  pod-a \u2013 ready\n')


@pytest.fixture
def run(action_runner):
    def run_action(args, check_mode=False, diff=False, answer=None):
        return action_runner(ActionModule, args, check_mode=check_mode, diff=diff, answer=answer,
                             name='mpanel.cloudpods.pod_welcome_mail')
    return run_action


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sends_once_through_a_real_server_and_writes_the_marker(run, args, smtp_server):
    # This server has no TLS: a login in the clear only with secure=never (TLS: tests/integration/test_smtp_tls.py).
    args.update(host='127.0.0.1', port=smtp_server.port, username=smtp_server.user, password=smtp_server.password,
                secure='never')
    first = run(args)
    assert first.result == dict(
        changed=True, sent=True, marker_existed=False,
        msg="sent 'Your Cloud Pod pod-a is ready' to jane@customer.test through 127.0.0.1:%d" % smtp_server.port)
    assert smtp_server.password not in json.dumps(first.result)
    [mail] = smtp_server.messages
    assert mail['sender'] == 'noreply@example.net' and mail['to'] == ['jane@customer.test']
    assert mail['login'] == b'relay'
    assert mail['message']['Subject'] == 'Your Cloud Pod pod-a is ready'
    assert mail['message'].get_payload(decode=True).decode('utf-8') == args['body']
    assert len(first.commands) == 2
    assert mode(args['marker']) == 0o640 and mode(os.path.dirname(args['marker'])) == 0o750

    again = run(args, diff=True)
    assert again.result == dict(changed=False, sent=False, marker_existed=True,
                                msg='the welcome mail was sent already (%s exists)' % args['marker'],
                                diff=dict(before_header=args['marker'], after_header=args['marker'],
                                          before='present\n', after='present\n'))
    assert len(smtp_server.messages) == 1 and len(again.commands) == 1


def test_check_mode_says_what_it_would_send(run, args, fake_smtp):
    checked = run(args, check_mode=True, diff=True)
    assert checked.result == dict(
        changed=True, sent=True, marker_existed=False,
        msg="would send 'Your Cloud Pod pod-a is ready' to jane@customer.test through smtp.test:2525",
        diff=dict(before_header=args['marker'], after_header=args['marker'], before='absent\n', after='present\n'))
    assert fake_smtp.sent == [] and not os.path.exists(args['marker']) and len(checked.commands) == 1


def test_starttls_when_offered_and_login(run, args, fake_smtp):
    fake_smtp.offers = ('STARTTLS',)
    run(args=dict(args, username='relay', password=PASSWORD))
    assert fake_smtp.sent[0]['steps'] == ['ehlo', 'starttls', 'ehlo', ('login', 'relay')]


def test_no_login_in_the_clear_with_secure_try(run, args, fake_smtp):
    # No STARTTLS offered (or a man in the middle removed it): the password is not sent.
    failed = run(dict(args, username='relay', password=PASSWORD))
    assert failed.result == dict(failed=True, sent=False, marker_existed=False,
                                 msg='could not send the welcome mail through smtp.test:2525: the server smtp.test '
                                     'offers no STARTTLS: the SMTP login is not sent without TLS (secure=never would '
                                     'send it in the clear)')
    assert fake_smtp.sent == [] and not os.path.exists(args['marker'])


def test_login_in_the_clear_only_with_secure_never(run, args, fake_smtp):
    run(dict(args, username='relay', password=PASSWORD, secure='never'))
    assert fake_smtp.sent[0]['steps'] == ['ehlo', ('login', 'relay')]


def test_no_starttls_with_secure_never(run, args, fake_smtp):
    fake_smtp.offers = ('STARTTLS',)
    run(dict(args, secure='never'))
    assert fake_smtp.sent[0]['steps'] == ['ehlo']


def test_starttls_required_but_not_offered_fails_without_marker(run, args, fake_smtp):
    failed = run(dict(args, secure='starttls'))
    assert failed.result == dict(failed=True, sent=False, marker_existed=False,
                                 msg='could not send the welcome mail through smtp.test:2525: '
                                     'the server smtp.test offers no STARTTLS')
    assert not os.path.exists(args['marker'])


def test_refused_mail_fails_and_writes_no_marker(run, args, fake_smtp):
    fake_smtp.fail = 'send'
    failed = run(args)
    assert failed.result['failed'] is True and 'could not send' in failed.result['msg']
    assert not os.path.exists(args['marker']) and len(failed.commands) == 1


def test_the_password_never_reaches_the_result(run, args, fake_smtp):
    fake_smtp.fail = 'login'
    fake_smtp.offers = ('STARTTLS',)
    failed = run(dict(args, username='relay', password=PASSWORD))
    assert failed.result['failed'] is True and 'rejected ******** for relay' in failed.result['msg']
    assert PASSWORD not in json.dumps(failed.result)


def test_a_marker_that_cannot_be_written_after_the_send_is_reported(run, args, fake_smtp, tmp_path):
    (tmp_path / 'a-file').write_text(u'')
    args['marker'] = str(tmp_path / 'a-file' / 'pod-a-101.sent')
    failed = run(args)
    assert len(fake_smtp.sent) == 1
    assert failed.result['failed'] is True and failed.result['changed'] is True and failed.result['sent'] is True
    assert failed.result['msg'].startswith('the welcome mail was sent, but the marker %s could not be written: '
                                           % args['marker'])


def test_a_host_that_cannot_be_asked_fails_and_sends_nothing(run, args, fake_smtp):
    failed = run(args, answer=lambda cmd: (255, b'', b'connection lost\n'))
    assert failed.result == dict(failed=True, msg='could not look for the marker %s: connection lost' % args['marker'])
    assert fake_smtp.sent == []


def test_bad_mode_fails_before_looking(run, args):
    failed = run(dict(args, marker_mode='rw-r-----'))
    assert failed.result == dict(failed=True, msg="marker_mode must be an octal mode such as 0640, got 'rw-r-----'")
    assert failed.commands == []


def test_missing_recipient_fails(run, args):
    del args['to']
    with pytest.raises(AnsibleActionFail, match='to'):
        run(args)


def test_message_fields():
    message = welcome_mail.build_message(dict(body=u'Gr\u00fc\u00dfe\n', charset='utf-8', sender='a@example.net',
                                              to=['b@example.org', 'c@example.org'], subject='Hi'))
    assert message['To'] == 'b@example.org, c@example.org' and message['Subject'] == 'Hi'
    assert message['Date'] and message['Message-ID']
    assert message.get_content_charset() == 'utf-8'
    assert message.get_payload(decode=True).decode('utf-8') == u'Gr\u00fc\u00dfe\n'


def test_a_body_with_private_key_material_is_refused_before_anything(run, args, fake_smtp):
    body = args['body'] + '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n'
    failed = run(dict(args, body=body))
    assert failed.result['failed'] and 'private key material' in failed.result['msg']
    assert 'b3BlbnNzaC1rZXktdjEAAAAA' not in json.dumps(failed.result)
    assert fake_smtp.sent == [] and failed.commands == [] and not os.path.exists(args['marker'])
