# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: pod_converge
short_description: Files and one command inside a Cloud Pod, in a single round trip
version_added: 0.2.0
description:
  - Converges the files O(files), runs O(command), then converges O(files_after), all in ONE command on the
    target. Through C(community.proxmox.proxmox_pct_remote) that is one SSH session and one C(pct exec), where
    a template, copy or command task costs about six (temporary directory, transfer, chmod, run, clean-up).
  - Each file is compared with the target first (content, owner, group, mode) and written only when it differs,
    atomically (a temporary file in the same directory, renamed over it). A file that exists and is not a regular
    file (a symbolic link, a directory) is refused and left alone.
  - The command is an argv list, run without a shell, with a fixed environment (C(PATH), C(LANG), C(HOME)).
    The C(changed_flag) of every file of O(files) that changed is appended to it, then O(check_flag) in check mode.
  - This is an action plugin with no module code. The program that runs on the target (Python 3, standard library
    only) is sent with the parameters as one JSON document on the stdin of C(python3 -c <a constant>); nothing of
    the parameters ever becomes code or a command line.
author:
  - mPanel Cloud Pods team (@mpanel)
options:
  files:
    description:
      - Files converged before the command, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: Absolute path of the file on the target. Its directory must exist.
        type: str
        required: true
      content:
        description: The file's whole content (text, written as UTF-8).
        type: str
        required: true
      owner:
        description: User owning the file.
        type: str
        default: root
      group:
        description: Group owning the file.
        type: str
        default: root
      mode:
        description: Permissions, an octal string.
        type: str
        default: '0644'
      force:
        description: When false, a file that exists is left exactly as it is (content, owner and mode).
        type: bool
        default: true
      changed_flag:
        description: An argument appended to O(command) when this file changed (or would change in check mode).
        type: str
  command:
    description:
      - The command run after O(files), as an argv list (no shell). Empty for none.
      - A non-zero exit status fails the task; its output is returned in RV(command).
      - In check mode the command still runs, with O(check_flag) appended (it must then change nothing). When the
        path of a file of O(files) that would change is one of its arguments (the command is installed by this
        task), it is not run in check mode.
    type: list
    elements: str
    default: []
  check_flag:
    description: The argument that makes O(command) report what it would do and change nothing, appended in check mode.
    type: str
  stdin:
    description: Text given to O(command) on its standard input.
    type: str
  files_after:
    description: Files converged after the command (for example files whose owner the command creates), in order.
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: Absolute path of the file on the target. Its directory must exist.
        type: str
        required: true
      content:
        description: The file's whole content (text, written as UTF-8).
        type: str
        required: true
      owner:
        description: User owning the file.
        type: str
        default: root
      group:
        description: Group owning the file.
        type: str
        default: root
      mode:
        description: Permissions, an octal string.
        type: str
        default: '0644'
      force:
        description: When false, a file that exists is left exactly as it is (content, owner and mode).
        type: bool
        default: true
  boot_timeout:
    description:
      - Before anything, wait at most this many seconds until systemd on the target has finished booting
        (C(systemctl is-system-running --wait)); a pod still booting then fails the task and nothing is changed.
      - For a pod started a moment ago, whose services and SSH host keys are still being made. 0 does not wait; a
        target without systemd is not waited for.
    type: int
    default: 0
  python:
    description: Absolute path of the Python 3 interpreter on the target.
    type: str
    default: /usr/bin/python3
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - mpanel.cloudpods.attributes.action_plugin
attributes:
  check_mode:
    support: full
    details: Compares every file and writes none; runs the command with O(check_flag) (it must change nothing), or not at
      all when this task would install it.
  diff_mode:
    support: full
    details: Shows the content of every file that differs, before and after (at most 100 KiB of each).
notes:
  - The task's C(changed) covers the files only; what the command did is the caller's to judge from its output
    (C(changed_when)), as the roles of this collection do.
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.command
"""

EXAMPLES = r"""
- name: Nginx server block, then a script that reloads Nginx when the block changed
  mpanel.cloudpods.pod_converge:
    files:
      - dest: /etc/nginx/conf.d/site.conf
        content: "{{ lookup('ansible.builtin.template', 'site.conf.j2') }}"
        changed_flag: --reload-nginx
    command: [/usr/local/sbin/converge-site, --pod, shop-example-com]
    check_flag: --check
  register: site
  changed_when: site.changed or site.command.stdout_lines[-1] != 'unchanged'
"""

RETURN = r"""
boot_wait:
  description: Seconds spent waiting for the target to finish booting.
  returned: when O(boot_timeout) is above 0 and the target runs systemd
  type: float
  sample: 0.84
files:
  description: Every file of O(files) and O(files_after) looked at, in order.
  returned: always
  type: list
  elements: dict
  contains:
    dest:
      description: The file.
      type: str
    changed:
      description: Whether it was (or in check mode would be) written or given its owner or mode.
      type: bool
    changes:
      description: What differed, such as C(created), C(content), C(owner web:web), C(mode 0644).
      type: list
      elements: str
    changed_flag:
      description: The file's C(changed_flag).
      type: str
  sample: [{"dest": "/etc/nginx/conf.d/site.conf", "changed": true, "changes": ["content"], "changed_flag": "--reload-nginx"}]
command:
  description: The command's argv as run, exit status and output; or C(skipped) and C(reason).
  returned: when O(command) is given and the files before it converged
  type: dict
  sample: {"argv": ["/usr/local/sbin/converge-site", "--pod", "shop-example-com"], "rc": 0, "stdout": "unchanged\n",
           "stdout_lines": ["unchanged"], "stderr": "", "stderr_lines": []}
"""
