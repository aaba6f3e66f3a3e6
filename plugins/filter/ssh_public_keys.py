# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter mpanel.cloudpods.ssh_public_keys: a customer's SSH public keys, checked and normalised.

The rule is module_utils/ssh_keys.py (the same file runner_api loads): this filter only turns its
verdict into key lines or a filter error. The error names the entry by its index and never quotes
it (what a customer pastes may be a private key).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.mpanel.cloudpods.plugins.module_utils import ssh_keys


def _checked(entries):
    # Extra vars arrive as Ansible's own subclasses of str and list (unsafe text, tagged values):
    # plain types for the rule.
    if isinstance(entries, (list, tuple)):
        entries = [str(entry) if isinstance(entry, str) else entry for entry in entries]
    keys, errors = ssh_keys.check(entries)
    if errors:
        raise AnsibleFilterError(str(errors[0]))
    return keys


def ssh_public_keys(entries):
    """The normalised lines (``<type> <base64> [comment]``) of ``entries``; AnsibleFilterError for the first bad one."""
    return [key.line for key in _checked(entries)]


def ssh_public_key_fingerprints(entries):
    """The ``SHA256:<b64>`` fingerprints of ``entries`` (checked the same way), for messages and reports."""
    return [key.fingerprint for key in _checked(entries)]


class FilterModule(object):

    def filters(self):
        return {
            'ssh_public_keys': ssh_public_keys,
            'ssh_public_key_fingerprints': ssh_public_key_fingerprints,
        }
