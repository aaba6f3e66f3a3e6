# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: plan_catalogue
short_description: The Cloud Pods plan catalogue (playbooks/vars/plans.yml of this collection)
version_added: 0.1.0
author:
  - mPanel Cloud Pods team (@mpanel)
description:
  - Returns the plan catalogue, the mapping under C(cloudpods_plans) in the collection's C(playbooks/vars/plans.yml)
    (plan code to name, price, sizes, backups, firewall), or in another file of the same form.
  - The file is read once per process and again only when it changes (its modification time or size), so that
    C(playbooks/vars/settings.yml) can define C(cloudpods_plans) with it. As a C(vars_files) entry, ansible-core
    parsed the catalogue again for every task (it caches only vaulted vars files).
  - The file is data, never a template; a file without a C(cloudpods_plans) mapping is an error.
options:
  _terms:
    description:
      - The catalogue file; none for the collection's own C(playbooks/vars/plans.yml).
    type: list
    elements: path
    required: false
"""

EXAMPLES = r"""
- name: List the plan codes
  ansible.builtin.debug:
    msg: "{{ lookup('mpanel.cloudpods.plan_catalogue') | list }}"
"""

RETURN = r"""
_raw:
  description:
    - One element, the catalogue (plan code to its entry).
  type: list
  elements: dict
"""

import copy
import os

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.lookup import LookupBase

import yaml  # a requirement of ansible-core

DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       'playbooks', 'vars', 'plans.yml')

# path -> ((mtime_ns, size), catalogue), for this process (forks of ansible-playbook inherit it).
_CACHE = {}


def read_catalogue(path):
    """The catalogue in ``path``, parsed once per (modification time, size)."""
    try:
        status = os.stat(path)
    except OSError as exc:
        raise AnsibleLookupError('cannot read the plan catalogue %s: %s' % (path, to_native(exc.strerror or exc)))
    stamp = (status.st_mtime_ns, status.st_size)
    cached = _CACHE.get(path)
    if cached is None or cached[0] != stamp:
        loader = getattr(yaml, 'CSafeLoader', None) or yaml.SafeLoader
        try:
            with open(path, 'rb') as handle:
                data = yaml.load(handle, Loader=loader)  # nosec: a safe loader
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleLookupError('cannot read the plan catalogue %s: %s' % (path, to_native(exc)))
        plans = data.get('cloudpods_plans') if isinstance(data, dict) else None
        if not isinstance(plans, dict) or not plans:
            raise AnsibleLookupError('the plan catalogue %s has no cloudpods_plans mapping' % path)
        cached = _CACHE[path] = (stamp, plans)
    # A copy: no caller can change what the next one gets.
    return copy.deepcopy(cached[1])


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) > 1:
            raise AnsibleLookupError('plan_catalogue takes at most one file, got %d' % len(terms))
        return [read_catalogue(terms[0] if terms else DEFAULT)]
