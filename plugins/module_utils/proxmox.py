# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Proxmox VE client of mpanel.cloudpods, as plugins outside the modules import it (the pods inventory).

The client itself is in private modules, one job each, layered bottom to top:

* ``_proxmox_errors`` (errors, which failures are transient, messages) and ``_pve_formats``
  (UPIDs, property strings, sizes, tags, addresses: pure functions);
* ``_proxmox_settings`` (argument spec, validated connection options) and ``_polling``
  (the one way to wait: ``poll()`` on a swappable clock);
* ``_proxmox_client`` (``ProxmoxClient``: calls, retries, tasks, VMID allocation);
* ``_proxmox_module`` (``ProxmoxModule``, the base class of the modules).

This file only names what those plugins use; it has no logic of its own.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import HAS_PROXMOXER, ProxmoxClient
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import ProxmoxError
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings
from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import first_global_ipv4, parse_tags

__all__ = ('HAS_PROXMOXER', 'ConnectionSettings', 'ProxmoxClient', 'ProxmoxError', 'first_global_ipv4', 'parse_tags')
