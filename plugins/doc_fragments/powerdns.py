# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options of every mpanel.cloudpods PowerDNS module.
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the PowerDNS Authoritative webserver that serves the HTTP API, for example
        V(http://10.1.10.102:8081) (dns-core). A trailing C(/api/v1) is accepted and ignored.
      - Uses the E(POWERDNS_API_URL) environment variable if not specified.
    type: str
    required: true
  api_key:
    description:
      - The API key (the C(api-key) setting of the PowerDNS server), sent as the C(X-API-Key) header.
      - Never shown in messages or results.
      - Uses the E(POWERDNS_API_KEY) environment variable if not specified.
    type: str
    required: true
  server_id:
    description:
      - Id of the server in the API path C(/api/v1/servers/{server_id}); PowerDNS Authoritative always calls
        itself V(localhost).
      - Uses the E(POWERDNS_SERVER_ID) environment variable if not specified.
    type: str
    default: localhost
  validate_certs:
    description:
      - Verify the TLS certificate when O(api_url) uses C(https) (PowerDNS itself speaks plain HTTP; HTTPS
        means a proxy in front of it).
      - Uses the E(POWERDNS_VALIDATE_CERTS) environment variable if not specified.
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle (PEM) to verify the API certificate with, instead of the system CAs.
      - Uses the E(POWERDNS_CA_BUNDLE) environment variable if not specified.
    type: path
  api_timeout:
    description:
      - Seconds to wait for one HTTP answer from the API.
      - Uses the E(POWERDNS_API_TIMEOUT) environment variable if not specified.
    type: int
    default: 30
requirements:
  - requests
  - idna (optional; without it the standard library's IDNA 2003 codec converts internationalized names)
"""

    ACTIONGROUP_POWERDNS = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/mpanel.cloudpods.powerdns) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - mpanel.cloudpods.powerdns
"""
