# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The logic of mpanel.cloudpods.pod_welcome_mail, used by its action plugin (private to this collection).

The marker is looked for and written on the target with shell commands (``probe_command()``,
``marker_command()``); the mail is built and sent from the controller (``build_message()``, ``send()``).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import posixpath
import shlex
import smtplib
import ssl
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.mpanel.cloudpods.plugins.module_utils.redact import scrub_secrets
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils.file_modes import octal_mode_error

# The marker is a path on the target, so type str: a controller-side ``path`` would expand ``~`` there.
ARGUMENT_SPEC = dict(
    marker=dict(type='str', required=True),
    marker_dir_mode=dict(type='str', default='0750'),
    marker_mode=dict(type='str', default='0640'),
    host=dict(type='str', default='localhost'),
    port=dict(type='int', default=25),
    secure=dict(type='str', default='try', choices=['never', 'try', 'starttls', 'always']),
    ca_bundle=dict(type='path'),
    username=dict(type='str'),
    password=dict(type='str', no_log=True),
    timeout=dict(type='int', default=20),
    sender=dict(type='str', required=True),
    to=dict(type='list', elements='str', required=True),
    subject=dict(type='str', required=True),
    body=dict(type='str', required=True),
    charset=dict(type='str', default='utf-8'),
)

# Exceptions of a failed send, reported as the task's failure.
SEND_ERRORS = (smtplib.SMTPException, OSError, ssl.SSLError)


def mode_error(params):
    """The message for a mode option that is not octal, or None."""
    return octal_mode_error(params, ('marker_mode', 'marker_dir_mode'), '0640')


# What a private key looks like in text (PEM, OpenSSH, PuTTY): a mail is sent in the clear and kept
# in mailboxes, so a body with any of these is refused, whatever put it there.
PRIVATE_KEY_MARKERS = ('PRIVATE KEY-----', 'PuTTY-User-Key-File', 'BEGIN SSH2 ENCRYPTED PRIVATE KEY')


def secret_error(params):
    """The message for a body that carries private key material, or None."""
    if any(marker in params['body'] for marker in PRIVATE_KEY_MARKERS):
        return ('the welcome mail body holds private key material: nothing was sent '
                '(a mail carries public fingerprints only, never a key)')
    return None


def describe(params):
    """The mail in words, for the task's msg: subject, recipients and server."""
    return "'%s' to %s through %s:%s" % (params['subject'], ', '.join(params['to']), params['host'], params['port'])


def probe_command(params):
    """Exits 0 when the marker exists, 1 when it does not."""
    return 'test -e %s' % shlex.quote(params['marker'])


def marker_command(params):
    """Writes the marker (its directory first when missing) with the wanted modes."""
    marker = params['marker']
    return 'set -e; if [ ! -d {d} ]; then mkdir -p {d}; chmod {dm} {d}; fi; : >> {m}; chmod {mm} {m}'.format(
        d=shlex.quote(posixpath.dirname(marker) or '.'), m=shlex.quote(marker),
        dm=params['marker_dir_mode'], mm=params['marker_mode'])


def build_message(params):
    message = MIMEText(params['body'], 'plain', params['charset'])
    message['From'] = params['sender']
    message['To'] = ', '.join(params['to'])
    message['Subject'] = params['subject']
    message['Date'] = formatdate(localtime=True)
    message['Message-ID'] = make_msgid()
    return message


def tls_context(params):
    """Verifies the server's certificate and name: against ``ca_bundle`` only when given, else the system's CAs."""
    return ssl.create_default_context(cafile=params['ca_bundle'] or None)


def send(params, message):
    secure = params['secure']
    if secure == 'always':
        server = smtplib.SMTP_SSL(params['host'], params['port'], timeout=params['timeout'],
                                  context=tls_context(params))
    else:
        server = smtplib.SMTP(params['host'], params['port'], timeout=params['timeout'])
    try:
        server.ehlo()
        if secure in ('try', 'starttls'):
            if server.has_extn('STARTTLS'):
                server.starttls(context=tls_context(params))
                server.ehlo()
            elif secure == 'starttls':
                raise smtplib.SMTPException('the server %s offers no STARTTLS' % params['host'])
            elif params['username']:
                # A server that offers no STARTTLS, or a man in the middle that removed it: the password
                # is not sent in the clear unless secure=never says so.
                raise smtplib.SMTPException('the server %s offers no STARTTLS: the SMTP login is not sent without TLS '
                                            '(secure=never would send it in the clear)' % params['host'])
        if params['username']:
            server.login(params['username'], params['password'] or '')
        server.sendmail(message['From'], params['to'], message.as_string())
    finally:
        try:
            server.quit()
        except (smtplib.SMTPException, OSError):
            server.close()


def send_error(params, exc):
    """The task's message for a failed send; the SMTP password never appears in it."""
    return scrub_secrets('could not send the welcome mail through %s:%s: %s'
                         % (params['host'], params['port'], to_native(exc)), secrets=[params['password']])
