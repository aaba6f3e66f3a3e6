# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one place where a module's run ends: result or clear failure, never with a secret in it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import traceback

from ansible.module_utils.common.text.converters import to_text

from ansible_collections.mpanel.cloudpods.plugins.module_utils.redact import scrub_secrets


class _NothingExpected(Exception):
    """Placeholder until a subclass names its client's error class."""

    msg = ''


class SecretSafeModule(object):
    """Base of the API module classes.

    Subclasses set ``expected_error`` (their client's error class, whose ``msg`` is
    already written for the user), fill ``self._secrets`` and implement ``run()``
    returning the result dict; ``result_extras()`` adds keys to every result.
    """

    expected_error = _NothingExpected

    def __init__(self, module):
        self.module = module
        self._secrets = []

    def scrub(self, text):
        return scrub_secrets(text, self._secrets)

    def result_extras(self):
        return {}

    def fail(self, msg, **result):
        result.update(self.result_extras())
        self.module.fail_json(msg=self.scrub(msg), **result)

    def run(self):
        raise NotImplementedError

    def execute(self):
        try:
            result = self.run()
        except self.expected_error as exc:
            self.fail(exc.msg)
        except Exception as exc:  # a bug: report it, but never with a secret in it
            self.fail('Unexpected error: %s: %s' % (type(exc).__name__, to_text(exc)),
                      exception=self.scrub(traceback.format_exc()))
        result.update(self.result_extras())
        self.module.exit_json(**result)
