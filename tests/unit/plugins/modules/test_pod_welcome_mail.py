# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pod_welcome_mail: marker, send, marker again, with a stand-in for the SMTP server."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import smtplib
import stat

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.mpanel.cloudpods.plugins.modules import pod_welcome_mail as pwm


class FakeSMTP(object):
    """Records what a client does; ``offers`` are the EHLO extensions."""

    sent = []
    offers = ()
    fail = False

    def __init__(self, host, port, timeout=None, context=None):
        self.host, self.port = host, port
        self.steps = []

    def ehlo(self):
        self.steps.append('ehlo')

    def has_extn(self, name):
        return name in self.offers

    def starttls(self, context=None):
        self.steps.append('starttls')

    def login(self, user, password):
        self.steps.append(('login', user))

    def sendmail(self, sender, to, text):
        if FakeSMTP.fail:
            raise smtplib.SMTPRecipientsRefused({to[0]: (550, b'no')})
        FakeSMTP.sent.append(dict(sender=sender, to=to, text=text, steps=list(self.steps)))

    def quit(self):
        pass

    def close(self):
        pass


@pytest.fixture(autouse=True)
def fake_smtp(monkeypatch):
    FakeSMTP.sent, FakeSMTP.offers, FakeSMTP.fail = [], (), False
    monkeypatch.setattr(pwm.smtplib, 'SMTP', FakeSMTP)
    monkeypatch.setattr(pwm.smtplib, 'SMTP_SSL', FakeSMTP)
    return FakeSMTP


def run_module(monkeypatch, capsys, **args):
    args.setdefault('_ansible_check_mode', False)
    args.setdefault('_ansible_diff', False)
    monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': args})))
    monkeypatch.setattr(basic, '_ANSIBLE_PROFILE', 'legacy', raising=False)
    with pytest.raises(SystemExit):
        pwm.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def args(tmp_path):
    return dict(marker=str(tmp_path / 'welcome-mail' / 'pod-a-101.sent'), host='smtp.test', port=2525,
                sender='Cloud Pods <noreply@example.net>', to=['jane@customer.test'],
                subject='Your Cloud Pod pod-a is ready', body='Hello,\n\n  Pod:  pod-a\n')


def test_sends_once_and_writes_the_marker(monkeypatch, capsys, args, fake_smtp):
    result = run_module(monkeypatch, capsys, **args)
    assert result['changed'] is True and result['sent'] is True and result['marker_existed'] is False
    [mail] = fake_smtp.sent
    assert mail['to'] == ['jane@customer.test'] and mail['sender'] == 'Cloud Pods <noreply@example.net>'
    assert 'Subject: Your Cloud Pod pod-a is ready' in mail['text']
    assert os.path.exists(args['marker'])
    assert stat.S_IMODE(os.stat(args['marker']).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(os.path.dirname(args['marker'])).st_mode) == 0o750

    again = run_module(monkeypatch, capsys, **args)
    assert again['changed'] is False and again['sent'] is False and len(fake_smtp.sent) == 1


def test_check_mode_says_what_it_would_send(monkeypatch, capsys, args, fake_smtp):
    result = run_module(monkeypatch, capsys, _ansible_check_mode=True, _ansible_diff=True, **args)
    assert result['changed'] is True
    assert result['msg'] == "would send 'Your Cloud Pod pod-a is ready' to jane@customer.test through smtp.test:2525"
    assert result['diff']['before'] == 'absent\n' and result['diff']['after'] == 'present\n'
    assert fake_smtp.sent == [] and not os.path.exists(args['marker'])


def test_starttls_when_offered_and_login(monkeypatch, capsys, args, fake_smtp):
    fake_smtp.offers = ('STARTTLS',)
    run_module(monkeypatch, capsys, username='relay', password='s3cret', **args)
    assert fake_smtp.sent[0]['steps'] == ['ehlo', 'starttls', 'ehlo', ('login', 'relay')]


def test_starttls_required_but_not_offered_fails_without_marker(monkeypatch, capsys, args, fake_smtp):
    result = run_module(monkeypatch, capsys, secure='starttls', **args)
    assert result['failed'] is True and 'STARTTLS' in result['msg']
    assert not os.path.exists(args['marker'])


def test_refused_mail_fails_and_writes_no_marker(monkeypatch, capsys, args, fake_smtp):
    fake_smtp.fail = True
    result = run_module(monkeypatch, capsys, **args)
    assert result['failed'] is True and 'could not send' in result['msg']
    assert not os.path.exists(args['marker'])


def test_message_fields():
    message = pwm.build_message(dict(body=u'Gr\u00fc\u00dfe\n', charset='utf-8', sender='a@example.net',
                                     to=['b@example.org', 'c@example.org'], subject='Hi'))
    assert message['To'] == 'b@example.org, c@example.org' and message['Subject'] == 'Hi'
    assert message.get_content_charset() == 'utf-8'
    assert message.get_payload(decode=True).decode('utf-8') == u'Gr\u00fc\u00dfe\n'
