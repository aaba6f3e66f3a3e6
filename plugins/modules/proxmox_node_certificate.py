#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: proxmox_node_certificate
short_description: Install a custom TLS certificate for a Proxmox VE node's API (pveproxy)
version_added: 0.2.0
description:
  - Uploads O(certificate) and O(private_key) through C(POST /nodes/{node}/certificates/custom) with C(restart=1)
    (C(systemctl reload-or-restart pveproxy)), only when the node's custom certificate (C(pveproxy-ssl.pem) in
    C(GET /nodes/{node}/certificates/info)) or the certificate the API presents differs from O(certificate) by
    its SHA-256 fingerprint. A second run changes nothing.
  - Afterwards it opens new TLS connections to the API until it presents O(certificate) (up to O(verify_timeout)
    seconds) and fails when it does not.
  - Proxmox VE refuses a key that does not match the certificate (C(Setting certificate files failed - key does not
    match the certificate (chain))) and keeps the old files; the module reports that error and nothing changed.
  - Needs C(Sys.Modify) on C(/nodes/<node>); without it Proxmox VE answers C(403 Permission check failed).
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  certificate:
    description: The certificate chain, PEM (the server certificate first, then intermediates).
    type: str
    required: true
  private_key:
    description: The certificate's private key, PEM. Never shown in the module's output or diff.
    type: str
    required: true
  verify_timeout:
    description: How long to wait for the API to present the new certificate after the upload (seconds).
    type: int
    default: 30
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Compares the fingerprints and reports whether it would upload; uploads nothing.
  diff_mode:
    support: full
    details: Shows the fingerprint and subject of the custom and the presented certificate, before and after. Never the key.
  platform:
    platforms: all
notes:
  - The connection's own certificate check (O(validate_certs), O(ca_path)) applies to the API calls; the
    check of the presented certificate compares SHA-256 fingerprints on a connection of its own.
  - O(api_url) must reach pveproxy itself. Behind a reverse proxy that terminates TLS, the presented certificate is
    the proxy's, and the check after the upload fails.
  - Connect with a token that has C(Sys.Modify) on C(/nodes/<node>), e.g. the administrator token of
    C(bootstrap_node.yml); the provisioning token does not have it.
"""

EXAMPLES = r"""
- name: Serve our own certificate on the node's API
  mpanel.cloudpods.proxmox_node_certificate:
    api_url: https://pve.example.net:8006
    api_token_id: root@pam!bootstrap
    api_token_secret: "{{ admin_secret }}"
    certificate: "{{ lookup('ansible.builtin.file', 'pve.example.net.pem') }}"
    private_key: "{{ lookup('ansible.builtin.file', 'pve.example.net.key') }}"
"""

RETURN = r"""
fingerprint:
  description: SHA-256 fingerprint of O(certificate) (C(AA:BB:...), as Proxmox VE writes it).
  returned: always
  type: str
presented_fingerprint:
  description: SHA-256 fingerprint of the certificate the API presented last (after the upload when there was one).
  returned: always
  type: str
info:
  description: Proxmox VE's certificate info of the uploaded certificate (subject, issuer, san, notbefore, notafter, ...).
  returned: when the module uploaded the certificate
  type: dict
api_retries:
  description: Retried API calls per reason.
  returned: always
  type: dict
"""

import hashlib
import re
import socket
import ssl
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError

PEM_CERT_RE = re.compile(r'-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----')
CUSTOM_FILE = 'pveproxy-ssl.pem'


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        certificate=dict(type='str', required=True),
        private_key=dict(type='str', required=True, no_log=True),
        verify_timeout=dict(type='int', default=30),
    )
    return spec


def fingerprint_of_der(der):
    digest = hashlib.sha256(der).hexdigest().upper()
    return ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))


def first_certificate_fingerprint(pem):
    found = PEM_CERT_RE.search(pem or '')
    if not found:
        raise ProxmoxError('certificate: no PEM certificate (-----BEGIN CERTIFICATE-----) found')
    try:
        der = ssl.PEM_cert_to_DER_cert(found.group(0))
    except ValueError:
        raise ProxmoxError('certificate: the first PEM certificate cannot be decoded')
    return fingerprint_of_der(der)


class ProxmoxNodeCertificate(ProxmoxModule):

    def presented_fingerprint(self):
        """The certificate the API presents on a new connection (no verification: the fingerprint is compared)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((self.settings.host, self.settings.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=self.settings.host) as tls:
                    der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError) as exc:
            raise ProxmoxError('could not read the certificate the API presents at %s:%s: %s'
                               % (self.settings.host, self.settings.port, exc))
        return fingerprint_of_der(der)

    def run(self):
        params = self.module.params
        self._secrets.append(params['private_key'])  # scrubbed from every message, like the token secret
        wanted = first_certificate_fingerprint(params['certificate'])
        infos = self.client.get('nodes/%s/certificates/info' % self.node) or []
        custom = dict((entry.get('filename'), entry) for entry in infos).get(CUSTOM_FILE)
        presented = self.presented_fingerprint()
        custom_fp = (custom or {}).get('fingerprint')
        before = {'custom_fingerprint': custom_fp, 'custom_subject': (custom or {}).get('subject'),
                  'presented_fingerprint': presented}
        after = {'custom_fingerprint': wanted, 'presented_fingerprint': wanted}
        changed = custom_fp != wanted or presented != wanted
        result = dict(changed=changed, fingerprint=wanted, presented_fingerprint=presented)
        if changed and not self.module.check_mode:
            info = self.client.post('nodes/%s/certificates/custom' % self.node, certificates=params['certificate'],
                                    key=params['private_key'], force=1 if custom else 0, restart=1) or {}
            result['info'] = dict((k, v) for k, v in info.items() if k != 'pem')
            result['presented_fingerprint'] = self.wait_presented(wanted, params['verify_timeout'])
        if self.module._diff:
            result['diff'] = dict(before=before, after=after)
        return result

    def wait_presented(self, wanted, timeout):
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            presented = self.presented_fingerprint()
            if presented == wanted:
                return presented
            if time.monotonic() >= deadline:
                raise ProxmoxError('the certificate was uploaded, but the API at %s:%s still presents %s instead of %s'
                                   % (self.settings.host, self.settings.port, presented, wanted))
            time.sleep(1)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ProxmoxNodeCertificate(module).execute()


if __name__ == '__main__':
    main()
