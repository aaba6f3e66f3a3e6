# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Keeping secrets out of messages, shared by the Proxmox and PowerDNS clients."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text

REDACTED = '********'


def scrub_secrets(text, secrets=(), patterns=()):
    """Return ``text`` with every secret replaced by ``********``.

    Longer secrets go first, so a secret that contains another is masked whole.
    ``patterns`` are compiled regexes whose first group is kept and the rest of
    the match masked (e.g. an auth header's name with its value).
    """
    if text is None:
        return text
    text = to_text(text, errors='surrogate_or_replace')
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in patterns:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text
