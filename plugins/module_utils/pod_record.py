# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pod record: what a Proxmox VE container says about the Cloud Pod it is.

A pod container carries the ``cloudpod`` tag and its plan tag (the lower-case plan code,
``cloud_pod_starter``), and its description holds one line per field of the record::

    Cloud Pod shop-example-com              <- free text, anyone may edit it
    cloudpods-plan: CLOUD_POD_STARTER
    cloudpods-domain: shop.example.com      <- only when the pod has a domain
    cloudpods-pod: shop-example-com

This is the one place that writes and reads that format (modules, inventory and, through
``pod_container_info``, the playbooks). Everything here is pure: no network, no templating.
Values read back from a container are data: the parser returns plain strings, and whoever
uses one (a domain for DNS, say) checks it first.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

from ansible_collections.mpanel.cloudpods.plugins.module_utils._pve_formats import normalize_description

# Tag every pod container carries, so that a container can be found again after a crash.
POD_TAG = 'cloudpod'
# A plan tag is the plan code in lower case; every plan code starts with CLOUD_POD_.
PLAN_TAG_PREFIX = 'cloud_pod_'

FIELDS = ('plan', 'domain', 'pod')  # in the order a new record's lines are written
LINE_KEYS = {'pod': 'cloudpods-pod', 'plan': 'cloudpods-plan', 'domain': 'cloudpods-domain'}

_BLANK_RE = re.compile(r'\s')
_PLAN_CODE_RE = re.compile(r'^%s[a-z0-9_]+\Z' % PLAN_TAG_PREFIX, re.IGNORECASE)


def _lines(description):
    text = normalize_description(description)
    return text.split('\n') if text else []


def _field_of(line):
    for field in FIELDS:
        if line.startswith(LINE_KEYS[field] + ':'):
            return field
    return None


def _value_of(line, field):
    value = line[len(LINE_KEYS[field]) + 1:].strip()
    return str(value) if value else None


def is_plan_code(plan):
    """True for a plan code such as CLOUD_POD_STARTER, whose lower-case form is its plan tag."""
    return bool(_PLAN_CODE_RE.match(plan or ''))


def plan_tag(plan):
    """The tag that names ``plan`` on a container: ``cloud_pod_starter``."""
    return plan.lower()


def is_plan_tag(tag):
    return tag.lower().startswith(PLAN_TAG_PREFIX)


def plan_from_tags(tags):
    """The plan code (CLOUD_POD_STARTER) named by a container's tags, or None."""
    plans = sorted(str(tag).upper() for tag in tags or () if is_plan_tag(tag))
    return plans[0] if plans else None


def tags_with_plan(tags, plan):
    """``tags`` plus the pod tag, with ``plan``'s tag instead of any other plan tag (plan None: plan tags kept)."""
    tags = set(tag.lower() for tag in tags or ())
    if plan is not None:
        tags = set(tag for tag in tags if not is_plan_tag(tag)) | set([plan_tag(plan)])
    return sorted(tags | set([POD_TAG]))


def parse_description(description):
    """The record lines of a description: ``{pod, plan, domain}``, each a str, or None when its line is missing.

    The first line of a field counts; its value is the rest of the line, as written (never templated).
    """
    record = dict((field, None) for field in FIELDS)
    for line in _lines(description):
        field = _field_of(line)
        if field and record[field] is None:
            record[field] = _value_of(line, field)
    return record


def read(description, tags):
    """The pod record of a container: pod and domain from the description, the plan from its plan tag
    (else from the ``cloudpods-plan`` line)."""
    record = parse_description(description)
    record['plan'] = plan_from_tags(tags) or record['plan']
    return record


def compose(description, pod=None, plan=None, domain=None):
    """``description`` with its record lines set to the given values; everything else is kept where it is.

    A field given as None is left as it is; a domain of '' removes the ``cloudpods-domain`` line (a pod
    without a domain). A record line already present is rewritten in place (duplicates of it dropped);
    a missing one is added at the end, in the order plan, domain, pod.
    """
    wanted = dict((field, value) for field, value in (('pod', pod), ('plan', plan), ('domain', domain))
                  if value is not None)
    for field, value in wanted.items():
        # A line break would let a value write another record line.
        if _BLANK_RE.search(value) or (field != 'domain' and not value):
            raise ValueError('the %s of a pod record must be one word; got %r' % (field, value))
    out = []
    placed = set()
    for line in _lines(description):
        field = _field_of(line)
        if field not in wanted:
            out.append(line)
            continue
        if field not in placed and wanted[field] != '':
            out.append('%s: %s' % (LINE_KEYS[field], wanted[field]))
        placed.add(field)
    for field in FIELDS:
        if field in wanted and field not in placed and wanted[field] != '':
            out.append('%s: %s' % (LINE_KEYS[field], wanted[field]))
    return '\n'.join(out).strip()
