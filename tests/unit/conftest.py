# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.mpanel.cloudpods`` importable from the repository checkout.

The collection is the repository root; ``.build/collections/ansible_collections/mpanel/cloudpods``
is a relative symlink to it (created here when missing).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'mpanel', 'cloudpods')

if not os.path.lexists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(os.path.join('..', '..', '..', '..'), LINK)

# When run under ansible-test the collection is already importable from its own tree.
try:
    import ansible_collections.mpanel.cloudpods  # noqa: F401  pylint: disable=unused-import
except ImportError:
    sys.path.insert(0, COLLECTIONS)
