# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pod record (tags and description lines of a pod container): compose, parse, hand edits."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import pod_record as rec

# What playbooks/templates/description.j2 plus the module's pod line wrote before the record had a home.
NEW_POD = 'Cloud Pod shop\ncloudpods-plan: CLOUD_POD_STARTER\ncloudpods-domain: shop.example.com\ncloudpods-pod: shop'
NEW_POD_WITHOUT_DOMAIN = 'Cloud Pod shop\ncloudpods-plan: CLOUD_POD_STARTER\ncloudpods-pod: shop'


def test_a_new_pod_gets_the_same_description_as_before():
    assert rec.compose('Cloud Pod shop', pod='shop', plan='CLOUD_POD_STARTER', domain='shop.example.com') == NEW_POD
    assert rec.compose('Cloud Pod shop', pod='shop', plan='CLOUD_POD_STARTER', domain='') == NEW_POD_WITHOUT_DOMAIN
    assert rec.compose(None, pod='p1') == 'cloudpods-pod: p1'


def test_parse_what_compose_wrote():
    assert rec.parse_description(NEW_POD + '\n') == {'pod': 'shop', 'plan': 'CLOUD_POD_STARTER',
                                                     'domain': 'shop.example.com'}
    assert rec.parse_description(NEW_POD_WITHOUT_DOMAIN) == {'pod': 'shop', 'plan': 'CLOUD_POD_STARTER',
                                                             'domain': None}
    assert rec.parse_description(None) == {'pod': None, 'plan': None, 'domain': None}
    assert rec.parse_description('no record here') == {'pod': None, 'plan': None, 'domain': None}


def test_composing_again_changes_nothing():
    assert rec.compose(NEW_POD, pod='shop', plan='CLOUD_POD_STARTER', domain='shop.example.com') == NEW_POD
    assert rec.compose(NEW_POD + '\n\n', pod='shop') == NEW_POD


HAND_EDITED = ('Customer asked for a bigger disk, ticket #4711\n'
               'Cloud Pod shop\n'
               'cloudpods-plan: CLOUD_POD_STARTER\n'
               'cloudpods: this line is not a record line\n'
               '  cloudpods-domain: indented, so hand-written too\n'
               'cloudpods-domain: shop.example.com\n'
               '\n'
               'Between the lines: {{ lookup("pipe", "id") }}\n'
               'cloudpods-pod: shop\n'
               'after the record')


def test_hand_written_text_before_between_and_after_the_record_is_kept():
    assert rec.compose(HAND_EDITED, pod='shop', plan='CLOUD_POD_STARTER', domain='shop.example.com') == HAND_EDITED
    changed = rec.compose(HAND_EDITED, pod='shop', plan='CLOUD_POD_PREMIUM', domain='shop.example.org')
    assert changed == (HAND_EDITED.replace('cloudpods-plan: CLOUD_POD_STARTER', 'cloudpods-plan: CLOUD_POD_PREMIUM')
                       .replace('cloudpods-domain: shop.example.com', 'cloudpods-domain: shop.example.org'))
    assert rec.parse_description(changed) == {'pod': 'shop', 'plan': 'CLOUD_POD_PREMIUM',
                                              'domain': 'shop.example.org'}
    # Removing the domain takes its line only.
    without = rec.compose(HAND_EDITED, domain='')
    assert without == HAND_EDITED.replace('cloudpods-domain: shop.example.com\n', '')
    assert rec.parse_description(without)['domain'] is None


def test_missing_record_lines_are_added_at_the_end():
    old = 'hand text\ncloudpods-pod: shop\nmore hand text'
    assert rec.compose(old, pod='shop', plan='CLOUD_POD_STARTER', domain='a.test') == (
        'hand text\ncloudpods-pod: shop\nmore hand text\ncloudpods-plan: CLOUD_POD_STARTER\ncloudpods-domain: a.test')


def test_the_first_line_of_a_field_counts_and_duplicates_go_when_it_is_written():
    twice = 'cloudpods-pod: first\nnote\ncloudpods-pod: second'
    assert rec.parse_description(twice)['pod'] == 'first'
    assert rec.compose(twice, pod='first') == 'cloudpods-pod: first\nnote'
    assert rec.compose(twice) == twice  # nothing to write: nothing touched


def test_values_read_back_are_plain_strings_as_written():
    payload = "{{ lookup('pipe', 'touch /tmp/CANARY') }}"
    record = rec.parse_description('cloudpods-pod: p\ncloudpods-domain: %s\ncloudpods-plan:\t x y \n' % payload)
    assert record == {'pod': 'p', 'domain': payload, 'plan': 'x y'}
    assert all(value.__class__ is str for value in record.values())  # str itself, no subclass carrying trust
    assert rec.parse_description('cloudpods-domain:   \n')['domain'] is None


@pytest.mark.parametrize('field, value', [
    ('domain', 'a.test\ncloudpods-pod: other'),
    ('domain', 'a b'),
    ('plan', 'CLOUD_POD_STARTER\r'),
    ('pod', 'p\u2028cloudpods-plan: X'),
    ('pod', ''),
    ('plan', ''),
])
def test_a_value_cannot_write_another_line(field, value):
    with pytest.raises(ValueError, match=field):
        rec.compose('text', **{field: value})


def test_read_takes_the_plan_from_its_tag_first():
    desc = 'cloudpods-pod: p\ncloudpods-plan: CLOUD_POD_STUDENT\ncloudpods-domain: d.test'
    assert rec.read(desc, ['cloudpod', 'cloud_pod_premium']) == {'pod': 'p', 'plan': 'CLOUD_POD_PREMIUM',
                                                                 'domain': 'd.test'}
    assert rec.read(desc, ['cloudpod'])['plan'] == 'CLOUD_POD_STUDENT'
    assert rec.read('', []) == {'pod': None, 'plan': None, 'domain': None}


@pytest.mark.parametrize('tags, plan', [
    (['cloudpod', 'cloud_pod_starter'], 'CLOUD_POD_STARTER'),
    (['cloud_pod_business', 'cloudpod'], 'CLOUD_POD_BUSINESS'),
    (['cloudpod'], None),
    ([], None),
    (None, None),
    (['cloudpod', 'starter'], None),
])
def test_plan_from_tags(tags, plan):
    assert rec.plan_from_tags(tags) == plan


def test_tags_with_plan():
    premium = rec.tags_with_plan(['web', 'cloud_pod_starter'], 'CLOUD_POD_PREMIUM')
    assert premium == ['cloud_pod_premium', 'cloudpod', 'web']
    assert rec.tags_with_plan(['web', 'cloud_pod_starter'], None) == ['cloud_pod_starter', 'cloudpod', 'web']
    assert rec.tags_with_plan(None, 'CLOUD_POD_STARTER') == ['cloud_pod_starter', 'cloudpod']


@pytest.mark.parametrize('plan, ok', [
    ('CLOUD_POD_STARTER', True),
    ('cloud_pod_student', True),
    ('STARTER', False),
    ('CLOUD_POD_', False),
    ('CLOUD_POD_STARTER\n', False),
    ('CLOUD_POD_A-B', False),
    (None, False),
])
def test_is_plan_code(plan, ok):
    assert rec.is_plan_code(plan) is ok
