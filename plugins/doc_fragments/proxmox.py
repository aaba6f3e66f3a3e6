# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options of every mpanel.cloudpods Proxmox VE module.
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the Proxmox VE API, for example V(https://10.1.10.70:8006/api2/json).
      - Must use C(https) and end with the API path C(/api2/json). The port defaults to C(8006).
      - Uses the E(PROXMOX_API_URL) environment variable if not specified.
    type: str
    required: true
  api_token_id:
    description:
      - API token id in the form C(user@realm!tokenid), for example V(mpanel-api@pve!mpanel-token).
      - Uses the E(PROXMOX_API_TOKEN_ID) environment variable if not specified.
    type: str
    required: true
  api_token_secret:
    description:
      - Secret (UUID) of the API token.
      - Never shown in messages or results.
      - Uses the E(PROXMOX_API_TOKEN_SECRET) environment variable if not specified.
    type: str
    required: true
  node:
    description:
      - Proxmox VE node to create containers on and to address the API through.
      - Existing containers are found cluster-wide and handled on the node they live on.
      - Uses the E(PROXMOX_NODE_NAME) environment variable if not specified.
    type: str
    default: pve
  validate_certs:
    description:
      - Verify the TLS certificate of the API.
      - Set to V(false) only for throwaway test systems; prefer O(ca_path).
      - Uses the E(PROXMOX_VALIDATE_CERTS) environment variable if not specified.
    type: bool
    default: true
  ca_path:
    description:
      - Path to a CA bundle (PEM) used to verify the API certificate instead of the system CAs,
        for example the cluster's own C(/etc/pve/pve-root-ca.pem).
      - Uses the E(PROXMOX_CA_BUNDLE) environment variable if not specified.
    type: path
  api_timeout:
    description:
      - Seconds to wait for one HTTP answer from the API.
      - Long operations run as tasks and are bounded by the module's own timeout instead.
      - Uses the E(PROXMOX_API_TIMEOUT) environment variable if not specified.
    type: int
    default: 30
requirements:
  - proxmoxer >= 2.0
  - requests
notes:
  - Authentication is by API token only. The token needs the privileges of the C(CloudPodsProv) role
    (VM.Audit, VM.Allocate, VM.Clone, VM.Config.*, VM.PowerMgmt, Datastore.AllocateSpace,
    Datastore.Audit, Sys.Audit) and, on Proxmox VE 8, C(SDN.Use) on C(/sdn/zones/localnetwork/<bridge>)
    for the bridge of the pods' network device (see the collection's README).
  - Transient failures that Proxmox VE produces under concurrency (C(CT is locked), C(can't lock file ... got timeout),
    HTTP 595/596) are retried with exponential backoff and jitter; every other error fails at once.
    The module result reports the retries in C(api_retries).
"""

    ACTIONGROUP_PROXMOX = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/mpanel.cloudpods.proxmox) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - mpanel.cloudpods.proxmox
"""
