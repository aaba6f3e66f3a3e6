# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a valid host name and a valid domain name are: the one rule of the collection's Python code.

The patterns mirror ``cloudpods_hostname_pattern`` and ``cloudpods_domain_pattern`` in
``playbooks/vars/settings.yml``, with which the playbooks (and runner_api, which reads them from
there) check the same names; change them together (tests/unit/plugins/module_utils/test_names.py
compares them). Both are lower-case ASCII: an internationalized name is checked in its ``xn--``
form. The label helpers say which part of the rule a name breaks, for messages.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

# A host name: labels of a-z, 0-9 and '-' (not at either end), at most 63 characters each, at most 253 in all.
HOSTNAME_PATTERN = r'^(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z'
# A domain: the same labels, at least two, the last alphabetic (or an IDN top-level label in xn-- form).
DOMAIN_PATTERN = r'^(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})\Z'

MAX_NAME_LENGTH = 253  # characters of the dotted form without the final dot (255 octets on the wire)
MAX_LABEL_LENGTH = 63

_HOSTNAME_RE = re.compile(HOSTNAME_PATTERN)
_DOMAIN_RE = re.compile(DOMAIN_PATTERN)
_LABEL_CHARS_RE = re.compile(r'^[a-z0-9-]+\Z')
_TOP_LABEL_RE = re.compile(r'^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})\Z')


def is_hostname(name):
    """True for a host name such as ``shop-example-com`` or ``web1.example.com`` (lower case)."""
    return isinstance(name, str) and bool(_HOSTNAME_RE.match(name))


def is_domain(name):
    """True for a domain such as ``shop.example.com`` (lower case, xn-- form, no final dot)."""
    return isinstance(name, str) and bool(_DOMAIN_RE.match(name))


def has_label_chars(label):
    """True when a label has only the characters of the rule: a-z, 0-9 and '-'."""
    return bool(_LABEL_CHARS_RE.match(label))


def has_hyphen_at_end(label):
    return label.startswith('-') or label.endswith('-')


def is_top_label(label):
    """True for the last label of a domain: 2 to 63 letters, or an IDN label in xn-- form."""
    return bool(_TOP_LABEL_RE.match(label))
