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
  - In one task, ensures the pod's backup directory (O(backup_dir)) and its cron file (O(cron_file)) with the
    given O(content), on the host the task runs on (the Proxmox VE host).
  - With O(state=absent) only the cron file is removed; the backup directory and the backups in it stay.
  - This is an action plugin with no module code. It works from the controller with two shell commands over the
    host's connection (one to look, one to change, only when something changes), so no module runs on the host.
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
  stale_file:
    description:
      - With O(state=present), this file is removed when it is there (a symbolic link is removed, not followed).
      - The role pod_backup passes the marker C(<backup_dir>/.terminated) that deprovision writes in the directory of
        a terminated pod. A pod ordered again under the same name so makes the directory its own again, and the job
        that prunes terminated pods' backups leaves it alone.
    type: path
    version_added: 0.2.0
  script_file:
    description:
      - With O(state=present), a program the cron entry runs, written with O(script_content) when it is missing or
        its content differs (compared by SHA-256), its directory created when missing.
      - The role pod_backup passes C(cloudpods-backup-slot.py), which starts a scheduled backup once a backup slot
        is free on the node and on the backup share.
      - Given together with O(script_content).
    type: path
    version_added: 0.2.0
  script_content:
    description:
      - Full content of O(script_file).
    type: str
    version_added: 0.2.0
  script_mode:
    description:
      - Permissions of O(script_file).
    type: str
    default: '0755'
    version_added: 0.2.0
  state:
    description:
      - V(present) - the backup directory exists and the cron file has O(content).
      - V(absent) - the cron file does not exist (the backups stay).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - mpanel.cloudpods.attributes.action_plugin
attributes:
  check_mode:
    support: full
    details: Reports what would be created or changed and changes nothing.
  diff_mode:
    support: full
    details: Shows the cron file content, the state of the backup directory and the script's SHA-256 before and after.
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
  sample: [backup directory created, terminated marker removed, script written, cron file written]
"""
