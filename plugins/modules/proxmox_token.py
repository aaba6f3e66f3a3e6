#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: proxmox_token
short_description: Make a privilege-separated Proxmox VE API token with another token's ACL entries, or remove one
version_added: 0.3.0
description:
  - O(state=present) makes the API token O(user)!O(token) with privilege separation (C(privsep=1)) when it is
    missing, and gives it every ACL entry that names O(acl_from), the token it replaces (a privilege-separated token
    has only what ACL entries naming it grant, never its user's). With O(verify_vmid) it then reads that container's
    configuration with the NEW token (C(VM.Audit)), proving that the token works. If granting or the proof fails,
    the token it just made is removed again and the module fails, so nothing is half made.
  - O(state=absent) removes the ACL entries naming the token, then the token. A removed token is refused by
    Proxmox VE at once (401).
  - An API token's secret exists only in the answer that creates it; the module returns it once, in
    RV(token_secret). Run the task with C(no_log=true).
  - Used by C(playbooks/rotate_token.yml). Connect with an administrator's token (C(User.Modify) on
    C(/access/groups), C(Permissions.Modify) on the ACL paths), never with the token being replaced.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  user:
    description: The token's user (C(name@realm)); it must exist.
    type: str
    required: true
  token:
    description: The token's name (without the user).
    type: str
    required: true
  state:
    description: Whether the token should exist.
    type: str
    choices: [present, absent]
    default: present
  acl_from:
    description:
      - Name of another token of O(user) whose ACL entries the token gets (with the same roles and propagation).
        It must exist, else the module fails and changes nothing. Only with O(state=present).
    type: str
  comment:
    description: Comment of a token the module creates.
    type: str
  verify_vmid:
    description:
      - With O(state=present), a container (e.g. the template) whose configuration is read with the token the module
        made, to prove that it works; needs C(VM.Audit) on C(/vms/<vmid>) through the token's ACL.
    type: int
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the user, its tokens and the ACL, reports what it would change and changes nothing.
  diff_mode:
    support: full
    details: Shows whether the token exists and its ACL entries, before and after. Never a secret.
  platform:
    platforms: all
"""

EXAMPLES = r"""
- name: A new token with the ACL entries of the one it replaces (its secret is in the result once)
  mpanel.cloudpods.proxmox_token:
    api_token_id: root@pam!bootstrap
    api_token_secret: "{{ admin_secret }}"
    user: mpanel-api@pve
    token: mpanel-token-20250101-1
    acl_from: mpanel-token
    verify_vmid: 9000
  no_log: true
  register: made

- name: Remove the old token
  mpanel.cloudpods.proxmox_token:
    api_token_id: root@pam!bootstrap
    api_token_secret: "{{ admin_secret }}"
    user: mpanel-api@pve
    token: mpanel-token
    state: absent
"""

RETURN = r"""
token_id:
  description: The full id of the token (C(user@realm!token)).
  returned: always
  type: str
  sample: mpanel-api@pve!mpanel-token-20250101-1
token_created:
  description: Whether this run made the token (in check mode, whether it would).
  returned: always
  type: bool
token_secret:
  description: The new token's secret, returned only by the run that creates it and never again.
  returned: when the module created the token (not in check mode)
  type: str
acl:
  description: The ACL entries naming the token afterwards, C(path role propagate=0|1) each.
  returned: always
  type: list
  elements: str
verified:
  description: Whether the new token read the configuration of O(verify_vmid).
  returned: with O(verify_vmid), not in check mode
  type: bool
changes:
  description: What was (or in check mode would be) changed, one line each.
  returned: always
  type: list
  elements: str
api_retries:
  description: Retried API calls per reason.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import (
    ConnectionSettings,
    proxmox_argument_spec,
)


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        user=dict(type='str', required=True),
        token=dict(type='str', required=True, no_log=False),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        acl_from=dict(type='str'),
        comment=dict(type='str'),
        verify_vmid=dict(type='int'),
    )
    return spec


def _line(entry):
    return '%s %s propagate=%d' % (entry['path'], entry['roleid'], int(entry.get('propagate', 1)))


class ProxmoxToken(ProxmoxModule):

    def run(self):
        params = self.module.params
        user, name = params['user'], params['token']
        token_id = '%s!%s' % (user, name)
        if token_id == self.settings.token_id:
            raise ProxmoxError('token %s is the one this task connects with: connect with an administrator token' % token_id)
        tokens = self._tokens(user)
        acl = self._acl()
        before = dict(token_id=token_id, exists=name in tokens, acl=sorted(_line(e) for e in acl.get(token_id, [])))
        self.changes = []
        if params['state'] == 'absent':
            result = self._absent(user, name, token_id, tokens, acl)
        else:
            result = self._present(user, name, token_id, tokens, acl)
        after = dict(token_id=token_id, exists=params['state'] == 'present', acl=result['acl'])
        result.update(changed=bool(self.changes), changes=list(self.changes), token_id=token_id)
        if self.module._diff:
            result['diff'] = dict(before=before, after=after)
        return result

    # -- reads ----------------------------------------------------------

    def _tokens(self, user):
        """The user's token names (PVE's GET /access/users/{userid}: fails with "no such user")."""
        info = self.client.get('access/users/%s' % user) or {}
        return set(info.get('tokens') or {})

    def _acl(self):
        """ACL entries naming tokens, by token id."""
        entries = {}
        for entry in self.client.get('access/acl') or []:
            if entry.get('type') == 'token':
                entries.setdefault(entry['ugid'], []).append(entry)
        return entries

    # -- present --------------------------------------------------------

    def _present(self, user, name, token_id, tokens, acl):
        params = self.module.params
        wanted = []
        if params['acl_from']:
            source = '%s!%s' % (user, params['acl_from'])
            if params['acl_from'] not in tokens:
                raise ProxmoxError('token %s (acl_from, the token being replaced) does not exist; nothing was changed'
                                   % source)
            wanted = acl.get(source, [])
            if not wanted:
                raise ProxmoxError('token %s has no ACL entries to copy (a privilege-separated token without any '
                                   'can do nothing); nothing was changed' % source)
        have = set(_line(e) for e in acl.get(token_id, []))
        missing = [entry for entry in wanted if _line(entry) not in have]
        created = name not in tokens
        if created:
            self.changes.append('create the privilege-separated token %s' % token_id)
        self.changes.extend('grant %s to %s' % (_line(entry), token_id) for entry in missing)
        result = dict(token_created=created, acl=sorted(have | set(_line(e) for e in missing)))
        if self.module.check_mode:
            return result
        secret = None
        if created:
            extra = {'comment': params['comment']} if params['comment'] else {}
            answer = self.client.post('access/users/%s/token/%s' % (user, name), privsep=1, **extra) or {}
            secret = answer.get('value')
            if not secret:
                raise ProxmoxError('Proxmox VE made token %s but returned no secret' % token_id)
            # Kept out of every message (scrub); NOT in no_log_values, which would mask it in the result too.
            self._secrets.append(secret)
        try:
            for entry in missing:
                self.client._call_once('PUT', 'access/acl', {  # pylint: disable=protected-access
                    'path': entry['path'], 'roles': entry['roleid'], 'tokens': token_id,
                    'propagate': int(entry.get('propagate', 1))})
            if params['verify_vmid'] and secret:
                self._verify(token_id, secret, params['verify_vmid'])
                result['verified'] = True
        except ProxmoxError as exc:
            if created:
                self._remove(user, name, token_id, self._acl())
                raise ProxmoxError('%s; the new token %s was removed again, nothing was changed' % (exc.msg, token_id))
            raise
        if secret:
            result['token_secret'] = secret
        return result

    def _verify(self, token_id, secret, vmid):
        """Read the CT's configuration with the new token (VM.Audit on /vms/<vmid>): the token works."""
        settings = ConnectionSettings(self.settings.api_url, token_id, secret, node=self.settings.node,
                                      validate_certs=self.settings.validate_certs, ca_path=self.settings.ca_path,
                                      api_timeout=self.settings.api_timeout)
        client = ProxmoxClient(settings, retry_timeout=30)
        try:
            client.get('nodes/%s/lxc/%d/config' % (self.settings.node, vmid))
        except ProxmoxError as exc:
            raise ProxmoxError('the new token %s could not read the configuration of CT %d: %s'
                               % (token_id, vmid, exc.msg))

    # -- absent ---------------------------------------------------------

    def _absent(self, user, name, token_id, tokens, acl):
        if name not in tokens:
            return dict(token_created=False, acl=[])
        self.changes.extend('revoke %s from %s' % (_line(entry), token_id) for entry in acl.get(token_id, []))
        self.changes.append('remove the token %s' % token_id)
        if not self.module.check_mode:
            self._remove(user, name, token_id, acl)
        return dict(token_created=False, acl=[])

    def _remove(self, user, name, token_id, acl):
        for entry in acl.get(token_id, []):
            self.client._call_once('PUT', 'access/acl', {  # pylint: disable=protected-access
                'path': entry['path'], 'roles': entry['roleid'], 'tokens': token_id, 'delete': 1})
        self.client.delete('access/users/%s/token/%s' % (user, name))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ProxmoxToken(module).execute()


if __name__ == '__main__':
    main()
