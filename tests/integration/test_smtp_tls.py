# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The welcome mail over STARTTLS with a login, against the lab's SMTP server with TLS turned on.

A private ``smtplab.TlsSmtpServer`` per module: STARTTLS with the lab's server certificate (issued
by the lab's CA, ``.lab/ca.pem``), required before MAIL; AUTH offered only after STARTTLS, for
one user. The server records each login attempt (user, success, TLS version, never the password)
and stamps each message it keeps with the session's TLS version and login. The mail path is the
one the worker runs: ``SMTP_*`` in the environment of the playbook (runner_api hands every
``SMTP_*`` variable to it), the pod_mail role, the pod_welcome_mail action.
"""

import os
import secrets
from pathlib import Path

import pytest

from lab import CertificateAuthority  # pylint: disable=import-error
from playbooks import run_playbook  # pylint: disable=import-error
from podplays import assert_ok, new_pod, remove_pod, run_pod_playbook  # pylint: disable=import-error
from smtplab import Mailbox, TlsSmtpServer  # pylint: disable=import-error

USERNAME = 'cloudpods-relay'


def _server(directory, pki):
    return TlsSmtpServer(directory, pki.server_cert, pki.server_key, USERNAME, 'pw-' + secrets.token_urlsafe(18))


@pytest.fixture(scope='module')
def lab_pki(lab_env):
    """The lab's CA and its server certificate for 127.0.0.1 (``.lab/``)."""
    pki = CertificateAuthority(Path(lab_env['PROXMOX_CA_BUNDLE']).parent)
    assert pki.ca_cert.exists() and pki.server_cert.exists(), 'the lab has no CA: run tests/lab/lab up'
    return pki


@pytest.fixture(scope='module')
def smtp_tls(lab_pki, tmp_path_factory):
    """The TLS+login SMTP server, its certificate signed by the lab's CA."""
    with _server(tmp_path_factory.mktemp('smtp-tls'), lab_pki) as server:
        yield server


@pytest.fixture(scope='module')
def foreign_smtp(tmp_path_factory):
    """The same server with a certificate for 127.0.0.1 from another CA (a throwaway one)."""
    foreign = CertificateAuthority(tmp_path_factory.mktemp('foreign-ca'))
    foreign.ensure()
    with _server(tmp_path_factory.mktemp('smtp-foreign'), foreign) as server:
        yield server


@pytest.fixture(scope='module')
def cleartext_smtp(tmp_path_factory):
    """The same server without a certificate: no STARTTLS, AUTH in the clear (as after a downgrade)."""
    with TlsSmtpServer(tmp_path_factory.mktemp('smtp-clear'), None, None, USERNAME,
                       'pw-' + secrets.token_urlsafe(18)) as server:
        yield server


def mail_env(lab_env, server, lab_pki, **overrides):
    """The lab's settings with the mail going to ``server`` over STARTTLS with its login."""
    env = dict(lab_env, SMTP_HOST='127.0.0.1', SMTP_PORT=str(server.port), SMTP_USERNAME=server.username,
               SMTP_PASSWORD=server.password, SMTP_CA_BUNDLE=str(lab_pki.ca_cert))
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def run_mail_role(env, tmp_path, to):
    """The pod_mail role alone (as provision runs it), at -vvv so that any leak would show."""
    return run_playbook([{'ansible.builtin.include_role': {'name': 'mpanel.cloudpods.pod_mail'}}], env=env, verbosity=3,
                        vars=dict(pod_mail_to=to, pod_mail_pod='tls-pod', pod_mail_vmid=101, pod_mail_ip='10.98.0.5',
                                  pod_mail_plan_code='CLOUD_POD_STARTER', pod_mail_plan_name='Starter',
                                  pod_mail_state_dir=str(tmp_path / 'state')))


def mail_task(run):
    [result] = [t['result'] for t in run.tasks if (t['name'] or '').endswith('Send the welcome mail to the customer')]
    return result


def assert_no_password(run, *passwords):
    for password in passwords:
        assert password not in run.stdout and password not in run.stderr, 'an SMTP password is in the output'


def new_logins(server, before):
    return server.logins()[before:]


def test_provision_sends_the_welcome_mail_over_starttls_after_a_login(lab_env, lab_pki, smtp_tls, dirs):
    pod = new_pod('tls')
    customer = pod + '@customer.test'
    plain = Mailbox.from_env(lab_env)  # the lab's plain server must get nothing
    mark, plain_mark, logins = smtp_tls.mailbox.mark(), plain.mark(), len(smtp_tls.logins())
    try:
        run = assert_ok(run_pod_playbook('provision', mail_env(lab_env, smtp_tls, lab_pki), dirs, pod=pod,
                                         plan='CLOUD_POD_STARTER', customer_email=customer))
    finally:
        remove_pod(lab_env, pod)
    [mail] = smtp_tls.mailbox.messages(since=mark, to=customer)
    assert mail['Subject'] == 'Your Cloud Pod %s is ready' % pod
    # the server's own record of the session that carried the mail: TLS, then our login
    assert mail['X-Lab-TLS'] in ('TLSv1.2', 'TLSv1.3')
    assert mail['X-Lab-Login'] == USERNAME
    [login] = new_logins(smtp_tls, logins)
    assert login == {'login': USERNAME, 'mechanism': login['mechanism'], 'success': True, 'tls': mail['X-Lab-TLS']}
    plain.assert_no_mail(since=plain_mark, to=customer)
    assert_no_password(run, smtp_tls.password)
    assert smtp_tls.password not in smtp_tls.auth_log.read_text()


def test_a_wrong_password_fails_clearly_and_is_never_shown(lab_env, lab_pki, smtp_tls, tmp_path):
    wrong = 'wrong-' + secrets.token_urlsafe(12)
    mark, logins = smtp_tls.mailbox.mark(), len(smtp_tls.logins())
    run = run_mail_role(mail_env(lab_env, smtp_tls, lab_pki, SMTP_PASSWORD=wrong), tmp_path, 'jane@customer.test')
    result = mail_task(run)
    assert run.rc != 0 and result.get('failed'), result
    assert result['msg'].startswith('could not send the welcome mail through 127.0.0.1:%d: (535, ' % smtp_tls.port), result
    assert 'Authentication credentials invalid' in result['msg']
    assert_no_password(run, wrong, smtp_tls.password)
    # the server saw the login over TLS and refused it; nothing was kept, no marker written
    attempts = new_logins(smtp_tls, logins)
    assert attempts and all(a['login'] == USERNAME and not a['success'] and a['tls'].startswith('TLSv1.') for a in attempts)
    assert smtp_tls.mailbox.messages(since=mark) == []
    assert not os.path.exists(tmp_path / 'state' / 'tls-pod-101.sent')


def test_a_certificate_not_signed_by_the_configured_ca_fails_before_the_login(lab_env, lab_pki, foreign_smtp, tmp_path):
    run = run_mail_role(mail_env(lab_env, foreign_smtp, lab_pki), tmp_path, 'jane@customer.test')
    result = mail_task(run)
    assert run.rc != 0 and result.get('failed'), result
    assert 'certificate verify failed' in result['msg'], result
    assert_no_password(run, foreign_smtp.password)
    # the password never went to that server: no login attempt, no mail
    assert foreign_smtp.logins() == [] and foreign_smtp.mailbox.messages() == []
    assert not os.path.exists(tmp_path / 'state' / 'tls-pod-101.sent')


def test_without_a_ca_bundle_the_system_cas_decide(lab_env, lab_pki, smtp_tls, tmp_path):
    """No SMTP_CA_BUNDLE: the lab's CA is not among the system's, so the certificate is refused
    (verification is on by default, not skipped)."""
    logins = len(smtp_tls.logins())
    run = run_mail_role(mail_env(lab_env, smtp_tls, lab_pki, SMTP_CA_BUNDLE=None), tmp_path, 'jane@customer.test')
    result = mail_task(run)
    assert run.rc != 0 and 'certificate verify failed' in result['msg'], result
    assert new_logins(smtp_tls, logins) == []
    assert_no_password(run, smtp_tls.password)


def test_no_login_in_the_clear_when_starttls_is_missing(lab_env, lab_pki, cleartext_smtp, tmp_path):
    """pod_mail's default (secure=try) with a login: a server that offers no STARTTLS but AUTH in
    the clear (a stripped STARTTLS looks like this) never gets the password."""
    run = run_mail_role(mail_env(lab_env, cleartext_smtp, lab_pki), tmp_path, 'jane@customer.test')
    result = mail_task(run)
    assert run.rc != 0 and result.get('failed'), result
    assert result['msg'] == ('could not send the welcome mail through 127.0.0.1:%d: the server 127.0.0.1 offers no '
                             'STARTTLS: the SMTP login is not sent without TLS (secure=never would send it in the '
                             'clear)' % cleartext_smtp.port)
    assert cleartext_smtp.logins() == [] and cleartext_smtp.mailbox.messages() == []
    assert_no_password(run, cleartext_smtp.password)
