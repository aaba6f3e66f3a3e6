#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: proxmox_access
short_description: Converge a Proxmox VE role, user, ACL entries and API token
version_added: 0.2.0
description:
  - Makes, through the Proxmox VE API, a custom role with exactly O(privileges), a user, ACL entries and a
    privilege-separated API token, each only when it is missing or differs. A second run changes nothing.
  - Before it changes anything it asks C(/access/permissions) whether the connecting token holds every privilege
    the changes need (C(Sys.Modify) on C(/access) for a role, C(Realm.AllocateUser) on C(/access/realm/<realm>) and
    C(User.Modify) on C(/access/groups) for a user and its token, C(Permissions.Modify) on each ACL path) and fails
    with Proxmox VE's own C(403 Permission check failed (<path>, <privilege>)) text when one is missing, so a
    token that cannot finish the job leaves nothing half made.
  - An API token's secret exists only in the answer that creates it. The module returns it once, in
    RV(token_secret), when it creates the token; an existing token is never replaced (rotating a token is not
    this module's job). Run the task that creates a token with C(no_log=true) and show the secret yourself.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  role:
    description: Name of the custom role to converge (not one of Proxmox VE's built-in roles).
    type: str
  privileges:
    description: The role's privileges, exactly; privileges not listed are taken away. Required with O(role).
    type: list
    elements: str
  user:
    description: The user (C(name@realm)) to make if missing; also the owner of O(token).
    type: str
  user_comment:
    description: The user's comment; set when it differs.
    type: str
  token:
    description:
      - Name of the API token of O(user) to make if missing, always with privilege separation (C(privsep=1)).
        The token has only what the ACL entries naming it grant, and never more than its user.
    type: str
  token_comment:
    description: Comment of a token the module creates.
    type: str
  acl:
    description:
      - ACL entries to add. An entry that exists with another propagation flag is updated; entries not listed are
        kept.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The ACL path, e.g. C(/) or C(/sdn/zones/localnetwork/vmbr0).
        type: str
        required: true
      role:
        description: The role granted on O(acl[].path).
        type: str
        required: true
      principal:
        description: Whom the entry names, O(user) or its token O(token) (C(user@realm!token)).
        type: str
        choices: [user, token]
        default: user
      propagate:
        description: Whether the grant propagates to the paths below.
        type: bool
        default: true
extends_documentation_fragment:
  - mpanel.cloudpods.proxmox
  - mpanel.cloudpods.proxmox.actiongroup_proxmox
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the role, user, token and ACL, reports what it would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the role's privileges, the user, whether the token exists and the ACL entries, before and after.
      Never a secret.
  platform:
    platforms: all
notes:
  - Connect with an administrator's token (C(root@pam) or a token whose ACL grants the privileges above), never
    with the provisioning token the module makes.
"""

EXAMPLES = r"""
- name: Role, user and ACL for provisioning
  mpanel.cloudpods.proxmox_access:
    api_url: https://pve.example.net:8006
    api_token_id: root@pam!bootstrap
    api_token_secret: "{{ admin_secret }}"
    role: CloudPodsProv
    privileges: [VM.Audit, VM.Allocate, VM.Clone]
    user: mpanel-api@pve
    acl:
      - {path: /, role: CloudPodsProv}

- name: The privilege-separated token (its secret is in the result once)
  mpanel.cloudpods.proxmox_access:
    api_url: https://pve.example.net:8006
    api_token_id: root@pam!bootstrap
    api_token_secret: "{{ admin_secret }}"
    user: mpanel-api@pve
    token: mpanel-token
  no_log: true
  register: made
"""

RETURN = r"""
token_id:
  description: The full id of O(token) (C(user@realm!token)).
  returned: when O(token) is given
  type: str
  sample: mpanel-api@pve!mpanel-token
token_created:
  description: Whether this run made the token (in check mode, whether it would).
  returned: when O(token) is given
  type: bool
token_secret:
  description: The new token's secret, returned only by the run that creates it and never again.
  returned: when the module created the token (not in check mode)
  type: str
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

from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_module import ProxmoxModule
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import proxmox_argument_spec
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError


def argument_spec():
    spec = proxmox_argument_spec()
    spec.update(
        role=dict(type='str'),
        privileges=dict(type='list', elements='str'),
        user=dict(type='str'),
        user_comment=dict(type='str'),
        token=dict(type='str', no_log=False),
        token_comment=dict(type='str'),
        acl=dict(type='list', elements='dict', default=[], options=dict(
            path=dict(type='str', required=True),
            role=dict(type='str', required=True),
            principal=dict(type='str', choices=['user', 'token'], default='user'),
            propagate=dict(type='bool', default=True),
        )),
    )
    return spec


def _modify_privileges(path):
    """What PVE's ``perm-modify`` check accepts on an ACL path (RPCEnvironment check_perm_modify)."""
    if path.startswith('/vms/'):
        return ['Permissions.Modify', 'VM.Allocate']
    if path.startswith('/storage/'):
        return ['Permissions.Modify', 'Datastore.Allocate']
    return ['Permissions.Modify']


class ProxmoxAccess(ProxmoxModule):

    def run(self):
        params = self.module.params
        self.changes = []
        self._current_user = None
        before, after = {}, {}
        plan = []  # (check path, [privileges, any of]), (callable) pairs, run after the check

        if params['role']:
            self._role(params['role'], params['privileges'] or [], before, after, plan)
        user_exists = True
        if params['user']:
            user_exists = self._user(params['user'], params['user_comment'], before, after, plan)
        token_id, token_exists = None, False
        if params['token']:
            token_id = '%s!%s' % (params['user'], params['token'])
            token_exists = self._token(params['user'], params['token'], user_exists, before, after, plan)
        if params['acl']:
            self._acl(params['acl'], params['user'], token_id, before, after, plan)

        self._check_privileges([need for need, dummy in plan])
        result = dict(changed=bool(self.changes), changes=list(self.changes))
        if token_id:
            result.update(token_id=token_id, token_created=not token_exists)
        if not self.module.check_mode:
            for dummy, action in plan:
                made = action()
                if made:
                    result['token_secret'] = made
        if self.module._diff:
            result['diff'] = dict(before=before, after=after)
        return result

    # -- parts ----------------------------------------------------------

    def _role(self, name, privileges, before, after, plan):
        wanted = sorted(set(privileges))
        current = None
        for entry in self.client.get('access/roles') or []:
            if entry.get('roleid') == name:
                if entry.get('special'):
                    raise ProxmoxError("role %r is one of Proxmox VE's built-in roles; choose another name" % name)
                current = sorted(p for p in (entry.get('privs') or '').split(',') if p)
        before['role'] = {'name': name, 'privileges': current} if current is not None else None
        after['role'] = {'name': name, 'privileges': wanted}
        privs = ','.join(wanted)
        if current is None:
            self.changes.append('create role %s' % name)
            plan.append((('/access', ['Sys.Modify']), lambda: self.client.post('access/roles', roleid=name, privs=privs)))
        elif current != wanted:
            self.changes.append('set the privileges of role %s' % name)
            plan.append((('/access', ['Sys.Modify']), lambda: self.client.put('access/roles/%s' % name, privs=privs)))

    def _users(self):
        return dict((entry['userid'], entry) for entry in self.client.get('access/users', full=1) or [])

    def _user(self, userid, comment, before, after, plan):
        realm = userid.rsplit('@', 1)[-1]
        current = self._users().get(userid)
        self._current_user = current
        before['user'] = None if current is None else {'userid': userid, 'comment': current.get('comment')}
        after['user'] = {'userid': userid, 'comment': comment if comment is not None else (current or {}).get('comment')}
        if current is None:
            self.changes.append('create user %s' % userid)
            extra = {'comment': comment} if comment else {}
            plan.append((('/access/realm/%s' % realm, ['Realm.AllocateUser']), lambda: None))
            plan.append((('/access/groups', ['User.Modify']),
                         lambda: self.client.post('access/users', userid=userid, **extra)))
            return False
        if comment is not None and current.get('comment') != comment:
            self.changes.append('set the comment of user %s' % userid)
            plan.append((('/access/groups', ['User.Modify']),
                         lambda: self.client.put('access/users/%s' % userid, comment=comment)))
        return True

    def _token(self, userid, name, user_exists, before, after, plan):
        tokens = []
        if user_exists and self._current_user is not None:
            tokens = [entry.get('tokenid') for entry in self._current_user.get('tokens') or []]
        exists = name in tokens
        before['token'] = {'token_id': '%s!%s' % (userid, name), 'exists': exists}
        after['token'] = {'token_id': '%s!%s' % (userid, name), 'exists': True, 'privsep': True}
        if not exists:
            self.changes.append('create the privilege-separated token %s!%s' % (userid, name))
            comment = self.module.params['token_comment']
            extra = {'comment': comment} if comment else {}

            def create():
                answer = self.client.post('access/users/%s/token/%s' % (userid, name), privsep=1, **extra) or {}
                secret = answer.get('value')
                if secret:
                    self._secrets.append(secret)
                return secret
            plan.append((('/access/groups', ['User.Modify']), create))
        return exists

    def _acl(self, entries, userid, token_id, before, after, plan):
        if not userid:
            raise ProxmoxError('acl needs user (and token for principal=token)')
        current = dict(((e['path'], e['type'], e['ugid'], e['roleid']), int(e.get('propagate', 1)))
                       for e in self.client.get('access/acl') or [])
        shown_before, shown_after = [], []
        for entry in entries:
            if entry['principal'] == 'token' and not token_id:
                raise ProxmoxError('an acl entry with principal=token needs the token option')
            ugid = token_id if entry['principal'] == 'token' else userid
            key = (entry['path'], entry['principal'], ugid, entry['role'])
            propagate = 1 if entry['propagate'] else 0
            line = '%s %s %s %s propagate=%d' % (entry['path'], entry['principal'], ugid, entry['role'], propagate)
            if key in current:
                shown_before.append('%s %s %s %s propagate=%d' % (key + (current[key],)))
            shown_after.append(line)
            if current.get(key) == propagate:
                continue
            self.changes.append('grant %s' % line)
            kind = 'tokens' if entry['principal'] == 'token' else 'users'
            args = {'path': entry['path'], 'roles': entry['role'], kind: ugid, 'propagate': propagate}
            plan.append(((entry['path'], _modify_privileges(entry['path'])),
                         lambda args=args: self._call('PUT', 'access/acl', args)))
        before['acl'] = sorted(shown_before)
        after['acl'] = sorted(shown_after)

    def _call(self, method, api_path, params):
        """A call whose parameters include ``path`` (which ProxmoxClient.request takes as its own argument)."""
        return self.client._call_once(method, api_path, params)  # pylint: disable=protected-access

    def _check_privileges(self, needs):
        """Fail before any change if the connecting token lacks a privilege one of them needs."""
        held = {}
        for path, privileges in needs:
            if path not in held:
                answer = self._call('GET', 'access/permissions', {'path': path}) or {}
                held[path] = set(answer.get(path) or {})
            if not held[path] & set(privileges):
                raise ProxmoxError(
                    '403 Permission check failed (%s, %s): the token %s lacks this privilege, so nothing was changed '
                    '(checked through /access/permissions before any change). Connect with an administrator token.'
                    % (path, '|'.join(privileges), self.settings.token_id))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_together=[('role', 'privileges')],
                           required_by={'token': 'user', 'user_comment': 'user', 'token_comment': 'token'})
    ProxmoxAccess(module).execute()


if __name__ == '__main__':
    main()
