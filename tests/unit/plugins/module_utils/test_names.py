# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the host name and domain rule (module_utils/names.py), and that it is the playbooks' rule."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest
import yaml

from ansible_collections.mpanel.cloudpods.plugins.module_utils import names

SETTINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..',
                        'playbooks', 'vars', 'settings.yml')


def test_the_patterns_are_the_playbooks_patterns():
    if not os.path.exists(SETTINGS):
        pytest.skip('playbooks/vars/settings.yml is not part of this copy of the collection')
    with open(SETTINGS) as settings:
        data = yaml.safe_load(settings)
    assert names.HOSTNAME_PATTERN == data['cloudpods_hostname_pattern']
    assert names.DOMAIN_PATTERN == data['cloudpods_domain_pattern']


@pytest.mark.parametrize('name, hostname, domain', [
    ('shop-example-com', True, False),
    ('web1.shop.example.com', True, True),
    ('shop.example.com', True, True),
    ('xn--bcher-kva.de', True, True),
    ('shop.xn--p1ai', True, True),
    ('a' * 63 + '.com', True, True),
    ('.'.join(['a' * 63, 'b' * 63, 'c' * 63, 'd' * 57, 'com']), True, True),  # 253 characters
    ('.'.join(['a' * 63, 'b' * 63, 'c' * 63, 'd' * 58, 'com']), False, False),
    ('a' * 64 + '.com', False, False),
    ('localhost', True, False),
    ('shop.example.c0m', True, False),
    ('shop.example.c', True, False),
    ('1.2.3.4', True, False),
    ('Shop.example.com', False, False),  # lower case only: callers that ignore case lower it first
    ('-shop.example.com', False, False),
    ('shop-.example.com', False, False),
    ('shop_example.com', False, False),
    ('shop..example.com', False, False),
    ('shop.example.com.', False, False),
    ('shop.example.com\n', False, False),
    ('shop example.com', False, False),
    ('', False, False),
    (None, False, False),
])
def test_hostname_and_domain(name, hostname, domain):
    assert names.is_hostname(name) is hostname
    assert names.is_domain(name) is domain


def test_label_parts():
    assert names.has_label_chars('shop-1') and not names.has_label_chars('_dmarc')
    assert names.has_hyphen_at_end('-a') and names.has_hyphen_at_end('a-') and not names.has_hyphen_at_end('a-b')
    assert names.is_top_label('com') and names.is_top_label('xn--p1ai')
    assert not names.is_top_label('c') and not names.is_top_label('c0m')
