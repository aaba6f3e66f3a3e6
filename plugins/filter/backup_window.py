# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter mpanel.cloudpods.backup_start: the cron time of a pod's scheduled backup in its plan's window
(plugin_utils/backup_window.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_window


def _plain(value):
    # Variables arrive as Ansible's own subclasses of str and dict (unsafe text, tagged values).
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return dict((_plain(k), _plain(v)) for k, v in value.items())
    return value


def backup_start(pod, schedule):
    """The cron fields of the pod's backup; AnsibleFilterError says what in the schedule cannot be spread."""
    try:
        return backup_window.backup_start(_plain(pod), _plain(schedule))
    except backup_window.WindowError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):

    def filters(self):
        return {'backup_start': backup_start}
