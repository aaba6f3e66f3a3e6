#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_welcome_mail
short_description: Send the welcome mail of one Cloud Pod once
version_added: 0.1.0
description:
  - In one module run, looks for the pod's marker file O(marker); when it is missing, sends the mail over SMTP
    and then writes the marker (creating its directory). When the marker exists nothing is sent.
  - A run killed between the send and the marker sends the mail again next time (at least once, never lost).
  - The marker is looked for and written on the host the task runs on (the Proxmox host in the playbooks), with two
    shell commands over its connection; the SMTP connection is made from the controller, so no module run is needed.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  marker:
    description:
      - Path of the marker file recording that the mail was sent.
    type: path
    required: true
  marker_dir_mode:
    description:
      - Permissions of the marker directory when it is created.
    type: str
    default: '0750'
  marker_mode:
    description:
      - Permissions of the marker file.
    type: str
    default: '0640'
  host:
    description:
      - SMTP server.
    type: str
    default: localhost
  port:
    description:
      - SMTP port.
    type: int
    default: 25
  secure:
    description:
      - V(never) - plain SMTP.
      - V(try) - STARTTLS when the server offers it.
      - V(starttls) - STARTTLS, fail when the server does not offer it.
      - V(always) - SMTP over TLS from the start.
    type: str
    choices: [never, try, starttls, always]
    default: try
  username:
    description:
      - SMTP user name; no login when omitted.
    type: str
  password:
    description:
      - SMTP password.
    type: str
  timeout:
    description:
      - Timeout of the SMTP connection in seconds.
    type: int
    default: 20
  sender:
    description:
      - Sender address, for example C(Cloud Pods <noreply@example.net>).
    type: str
    required: true
  to:
    description:
      - Recipient addresses.
    type: list
    elements: str
    required: true
  subject:
    description:
      - Subject of the mail.
    type: str
    required: true
  body:
    description:
      - Plain text body of the mail.
    type: str
    required: true
  charset:
    description:
      - Character set of the body.
    type: str
    default: utf-8
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Looks for the marker and reports the mail that would be sent; sends nothing and writes no marker.
  diff_mode:
    support: full
    details: Shows the marker file before and after.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Send the welcome mail of a pod once
  mpanel.cloudpods.pod_welcome_mail:
    marker: /var/lib/cloudpods/welcome-mail/shop-example-com-123.sent
    host: smtp.example.net
    sender: Cloud Pods <noreply@example.net>
    to: [jane@example.org]
    subject: Your Cloud Pod shop-example-com is ready
    body: "{{ lookup('ansible.builtin.template', 'welcome.txt.j2') }}"
"""

RETURN = r"""
sent:
  description: Whether the mail was sent (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
marker_existed:
  description: Whether the marker was there before the run.
  returned: always
  type: bool
  sample: false
msg:
  description: What was done or, in check mode, what would be sent.
  returned: always
  type: str
  sample: sent 'Your Cloud Pod shop-example-com is ready' to jane@example.org through smtp.example.net:25
"""

import os
import smtplib
import ssl
import traceback
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native


def build_message(params):
    message = MIMEText(params['body'], 'plain', params['charset'])
    message['From'] = params['sender']
    message['To'] = ', '.join(params['to'])
    message['Subject'] = params['subject']
    message['Date'] = formatdate(localtime=True)
    message['Message-ID'] = make_msgid()
    return message


def send(params, message):
    secure = params['secure']
    if secure == 'always':
        server = smtplib.SMTP_SSL(params['host'], params['port'], timeout=params['timeout'],
                                  context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(params['host'], params['port'], timeout=params['timeout'])
    try:
        server.ehlo()
        if secure in ('try', 'starttls'):
            if server.has_extn('STARTTLS'):
                server.starttls(context=ssl.create_default_context())
                server.ehlo()
            elif secure == 'starttls':
                raise smtplib.SMTPException('the server %s offers no STARTTLS' % params['host'])
        if params['username']:
            server.login(params['username'], params['password'] or '')
        server.sendmail(message['From'], params['to'], message.as_string())
    finally:
        try:
            server.quit()
        except (smtplib.SMTPException, OSError):
            server.close()


def write_marker(params):
    directory = os.path.dirname(params['marker'])
    if directory and not os.path.isdir(directory):
        os.makedirs(directory)
        os.chmod(directory, int(params['marker_dir_mode'], 8))
    with open(params['marker'], 'a'):
        pass
    os.chmod(params['marker'], int(params['marker_mode'], 8))


def run(module, sender=send):
    params = module.params
    for key in ('marker_mode', 'marker_dir_mode'):
        try:
            int(params[key], 8)
        except ValueError:
            module.fail_json(msg='%s must be an octal mode such as 0640, got %r' % (key, params[key]))
    existed = os.path.exists(params['marker'])
    what = "'%s' to %s through %s:%s" % (params['subject'], ', '.join(params['to']), params['host'], params['port'])
    result = dict(changed=not existed, sent=not existed, marker_existed=existed)
    if module._diff:
        result['diff'] = dict(before_header=params['marker'], after_header=params['marker'],
                              before='present\n' if existed else 'absent\n', after='present\n')
    if existed:
        result['msg'] = 'the welcome mail was sent already (%s exists)' % params['marker']
        return result
    if module.check_mode:
        result['msg'] = 'would send %s' % what
        return result
    try:
        sender(params, build_message(params))
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        module.fail_json(msg='could not send the welcome mail through %s:%s: %s'
                         % (params['host'], params['port'], to_native(exc)),
                         exception=traceback.format_exc())
    try:
        write_marker(params)
    except (IOError, OSError) as exc:
        module.fail_json(msg='the welcome mail was sent, but the marker %s could not be written: %s'
                         % (params['marker'], to_native(exc)))
    result['msg'] = 'sent %s' % what
    return result


ARGUMENT_SPEC = dict(
    marker=dict(type='path', required=True),
    marker_dir_mode=dict(type='str', default='0750'),
    marker_mode=dict(type='str', default='0640'),
    host=dict(type='str', default='localhost'),
    port=dict(type='int', default=25),
    secure=dict(type='str', default='try', choices=['never', 'try', 'starttls', 'always']),
    username=dict(type='str'),
    password=dict(type='str', no_log=True),
    timeout=dict(type='int', default=20),
    sender=dict(type='str', required=True),
    to=dict(type='list', elements='str', required=True),
    subject=dict(type='str', required=True),
    body=dict(type='str', required=True),
    charset=dict(type='str', default='utf-8'),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == '__main__':
    main()
