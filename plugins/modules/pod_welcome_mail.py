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
  - In one task, looks for the pod's marker file O(marker); when it is missing, sends the mail over SMTP
    and then writes the marker (creating its directory). When the marker exists nothing is sent.
  - A run killed between the send and the marker sends the mail again next time (at least once, never lost).
  - This is an action plugin with no module code. The marker is looked for and written on the host the task runs on
    (the Proxmox host in the playbooks), with two shell commands over its connection; the SMTP connection is made
    from the controller, so no module runs on the host.
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
      - V(try) - STARTTLS when the server offers it. With a O(username), a server that offers no STARTTLS is an
        error, so that the login is never sent in the clear with V(try).
      - V(starttls) - STARTTLS, fail when the server does not offer it.
      - V(always) - SMTP over TLS from the start.
    type: str
    choices: [never, try, starttls, always]
    default: try
  ca_bundle:
    description:
      - CA certificates (PEM file on the controller) that the server's TLS certificate must be signed by, with
        V(try), V(starttls) and V(always). Only these CAs are trusted then.
      - When omitted, the system's CAs. The certificate and the server's name are always verified.
    type: path
  username:
    description:
      - SMTP user name; no login when omitted. The login is made only over TLS unless O(secure=never).
    type: str
  password:
    description:
      - SMTP password, used for the login only; it is never in the task's result or messages.
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
  - ansible.builtin.action_common_attributes.flow
  - mpanel.cloudpods.attributes.action_plugin
attributes:
  check_mode:
    support: full
    details: Looks for the marker and reports the mail that would be sent; sends nothing and writes no marker.
  diff_mode:
    support: full
    details: Shows the marker file before and after.
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
