# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: the base class of the Proxmox modules, the top layer of the client."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mpanel.cloudpods.plugins.module_utils._http import require_requests
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import (
    HAS_PROXMOXER,
    PROXMOXER_IMPORT_ERROR,
    ProxmoxClient,
)
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_errors import RETRY_REASONS, ProxmoxError, scrub_secrets
from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings
from ansible_collections.mpanel.cloudpods.plugins.module_utils.base import SecretSafeModule


class ProxmoxModule(SecretSafeModule):
    """Base class of the Proxmox modules: connects, and turns ProxmoxError into fail_json.

    Subclasses implement ``run()`` returning the result dict; ``execute()``
    calls it and exits. Every result, success or failure, carries
    ``api_retries``; nothing in it can contain the token secret.
    """

    retry_timeout_param = 'timeout'
    expected_error = ProxmoxError

    def __init__(self, module):
        super(ProxmoxModule, self).__init__(module)
        require_requests(module)
        if not HAS_PROXMOXER:
            module.fail_json(msg=missing_required_lib('proxmoxer'), exception=PROXMOXER_IMPORT_ERROR)
        self._secrets = [module.params.get('api_token_secret')]
        token_id = module.params.get('api_token_id') or ''
        if '=' in token_id:
            # "id=secret" pasted into api_token_id: keep that secret out of the result's invocation too.
            pasted = token_id.split('=', 1)[1].strip()
            if pasted:
                module.no_log_values.add(pasted)
                self._secrets.append(pasted)
        self.client = None
        try:
            self.settings = ConnectionSettings.from_params(module.params)
            retry_timeout = module.params.get(self.retry_timeout_param) or 300
            self.client = ProxmoxClient(self.settings, retry_timeout=retry_timeout)
        except ProxmoxError as exc:
            self.fail(exc.msg)

    @property
    def node(self):
        return self.settings.node

    def api_retries(self):
        return dict(self.client.retries) if self.client else dict((r, 0) for r in RETRY_REASONS)

    def scrub(self, text):
        return scrub_secrets(text, self._secrets)

    def result_extras(self):
        return {'api_retries': self.api_retries()}
