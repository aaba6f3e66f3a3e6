#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_backup_schedule
short_description: Backup directory and cron file of one Cloud Pod on a Proxmox VE host
version_added: 0.1.0
description:
  - In one module run, ensures the pod's backup directory (O(backup_dir)) and its cron file (O(cron_file)) with the
    given O(content), on the host the module runs on (the Proxmox VE host).
  - With O(state=absent) only the cron file is removed; the backup directory and the backups in it stay.
  - The action plugin of the same name does the work from the controller with two shell commands over the host's
    connection (one to look, one to change, only when something changes), so no module run is needed.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  cron_file:
    description:
      - Path of the cron file of the pod, for example C(/etc/cron.d/cloudpod-shop_example_com).
    type: path
    required: true
  content:
    description:
      - Full content of the cron file.
      - Required with O(state=present).
    type: str
  cron_mode:
    description:
      - Permissions of the cron file.
    type: str
    default: '0644'
  backup_dir:
    description:
      - The pod's backup directory; created with its parents when missing.
      - Required with O(state=present); not touched with O(state=absent).
    type: path
  backup_dir_mode:
    description:
      - Permissions of the backup directory.
    type: str
    default: '0750'
  state:
    description:
      - V(present) - the backup directory exists and the cron file has O(content).
      - V(absent) - the cron file does not exist (the backups stay).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be created or changed and changes nothing.
  diff_mode:
    support: full
    details: Shows the cron file content and the state of the backup directory before and after.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Backup directory and cron entry of a pod
  mpanel.cloudpods.pod_backup_schedule:
    backup_dir: /mnt/windows-backup/shop-example-com
    cron_file: /etc/cron.d/cloudpod-shop-example-com
    content: |
      SHELL=/bin/sh
      0 3 * * * root vzdump 123 --dumpdir /mnt/windows-backup/shop-example-com --quiet 1

- name: Remove the pod's cron entry (the backups stay)
  mpanel.cloudpods.pod_backup_schedule:
    cron_file: /etc/cron.d/cloudpod-shop-example-com
    state: absent
"""

RETURN = r"""
cron_file:
  description: Path of the cron file.
  returned: always
  type: str
  sample: /etc/cron.d/cloudpod-shop-example-com
backup_dir:
  description: Path of the backup directory (empty with O(state=absent) when not given).
  returned: always
  type: str
  sample: /mnt/windows-backup/shop-example-com
changes:
  description: What was (or in check mode would be) changed.
  returned: always
  type: list
  elements: str
  sample: [backup directory created, cron file written]
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text


def _read(path):
    try:
        with open(path, 'rb') as handle:
            return to_text(handle.read(), errors='surrogate_or_strict')
    except (IOError, OSError):
        return None


def _mode_of(path):
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def plan(params, read=_read, isdir=os.path.isdir, mode_of=_mode_of):
    """What to do: (changes, diff, actions); actions are tuples for apply()."""
    cron_file = params['cron_file']
    before_content = read(cron_file)
    changes, actions = [], []
    before, after = {}, {}
    if params['state'] == 'absent':
        if before_content is not None:
            changes.append('cron file removed')
            actions.append(('remove', cron_file))
        diff = dict(before=before_content or '', after='',
                    before_header=cron_file, after_header=cron_file)
        return changes, diff, actions

    backup_dir = params['backup_dir']
    dir_mode = int(params['backup_dir_mode'], 8)
    cron_mode = int(params['cron_mode'], 8)
    dir_exists = isdir(backup_dir)
    before['backup_dir'] = backup_dir if dir_exists else ''
    after['backup_dir'] = backup_dir
    if not dir_exists:
        changes.append('backup directory created')
        actions.append(('mkdir', backup_dir, dir_mode))
    elif mode_of(backup_dir) != dir_mode:
        changes.append('backup directory mode set')
        actions.append(('chmod', backup_dir, dir_mode))
    content = params['content']
    if before_content != content:
        changes.append('cron file written')
        actions.append(('write', cron_file, content, cron_mode))
    elif mode_of(cron_file) != cron_mode:
        changes.append('cron file mode set')
        actions.append(('chmod', cron_file, cron_mode))
    diff = [
        dict(before_header='%s (directory)' % backup_dir, after_header='%s (directory)' % backup_dir,
             before='present\n' if dir_exists else 'absent\n', after='present\n'),
        dict(before_header=cron_file, after_header=cron_file, before=before_content or '', after=content),
    ]
    return changes, diff, actions


def apply(module, actions):
    for action in actions:
        if action[0] == 'mkdir':
            os.makedirs(action[1])
            os.chmod(action[1], action[2])
        elif action[0] == 'chmod':
            os.chmod(action[1], action[2])
        elif action[0] == 'remove':
            os.remove(action[1])
        elif action[0] == 'write':
            path, content, mode = action[1:]
            directory = os.path.dirname(path) or '.'
            tmp = os.path.join(directory, '.%s.tmp%d' % (os.path.basename(path), os.getpid()))
            with open(tmp, 'wb') as handle:
                handle.write(to_bytes(content, errors='surrogate_or_strict'))
            os.chmod(tmp, mode)
            module.atomic_move(tmp, path)
            os.chmod(path, mode)


ARGUMENT_SPEC = dict(
    cron_file=dict(type='path', required=True),
    content=dict(type='str'),
    cron_mode=dict(type='str', default='0644'),
    backup_dir=dict(type='path'),
    backup_dir_mode=dict(type='str', default='0750'),
    state=dict(type='str', default='present', choices=['present', 'absent']),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[('state', 'present', ('content', 'backup_dir'))],
        supports_check_mode=True,
    )
    params = module.params
    for key in ('cron_mode', 'backup_dir_mode'):
        try:
            int(params[key], 8)
        except ValueError:
            module.fail_json(msg='%s must be an octal mode such as 0644, got %r' % (key, params[key]))
    changes, diff, actions = plan(params)
    if actions and not module.check_mode:
        try:
            apply(module, actions)
        except (IOError, OSError) as exc:
            module.fail_json(msg='could not change %s: %s' % (exc.filename or params['cron_file'], exc))
    result = dict(changed=bool(changes), changes=changes, cron_file=params['cron_file'],
                  backup_dir=params['backup_dir'] or '')
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
