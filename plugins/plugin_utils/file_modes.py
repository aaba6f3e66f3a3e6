# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""File mode options of the action plugins (private to this collection): octal strings such as ``0640``."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


def octal_mode_error(params, keys, example):
    """The message for the first of the options ``keys`` that is not an octal mode (such as ``example``), or None."""
    for key in keys:
        try:
            int(params[key], 8)
        except ValueError:
            return '%s must be an octal mode such as %s, got %r' % (key, example, params[key])
    return None
