# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The documentation-only module files describe the argument specs their actions validate.

ansible-test's validate-modules compares docs and argument spec only for modules with code, so
for these the comparison is made here (suboptions included).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
import yaml

from ansible_collections.mpanel.cloudpods.plugins.action import pod_converge
from ansible_collections.mpanel.cloudpods.plugins.modules import pod_backup_schedule as backup_schedule_doc
from ansible_collections.mpanel.cloudpods.plugins.modules import pod_converge as pod_converge_doc
from ansible_collections.mpanel.cloudpods.plugins.modules import pod_welcome_mail as welcome_mail_doc
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_schedule, welcome_mail

# Documented as paths; the action takes them as str because they are paths on the target.
TARGET_PATHS = {'cron_file', 'backup_dir', 'marker', 'stale_file', 'script_file'}


def as_documented(name, option):
    wanted = dict(type=option['type'])
    if name in TARGET_PATHS and wanted['type'] == 'str':
        wanted['type'] = 'path'
    for key in ('default', 'choices', 'elements'):
        if key in option:
            wanted[key] = option[key]
    if option.get('required'):
        wanted['required'] = True
    return wanted


@pytest.mark.parametrize('doc, spec', [
    (backup_schedule_doc, backup_schedule.ARGUMENT_SPEC),
    (welcome_mail_doc, welcome_mail.ARGUMENT_SPEC),
    (pod_converge_doc, pod_converge.ARGUMENT_SPEC),
], ids=['pod_backup_schedule', 'pod_welcome_mail', 'pod_converge'])
def test_documented_options_are_the_argument_spec(doc, spec):
    assert_same_options(yaml.safe_load(doc.DOCUMENTATION)['options'], spec)


def assert_same_options(documented, spec, prefix=''):
    assert sorted(documented) == sorted(spec), prefix
    for name, option in documented.items():
        described = dict((key, option[key]) for key in ('type', 'default', 'choices', 'elements', 'required')
                         if key in option and option[key] is not False)
        assert described == as_documented(name, spec[name]), prefix + name
        assert ('suboptions' in option) == ('options' in spec[name]), prefix + name
        if 'options' in spec[name]:
            assert_same_options(option['suboptions'], spec[name]['options'], prefix + name + '.')


def test_module_files_hold_documentation_only():
    for doc in (backup_schedule_doc, welcome_mail_doc, pod_converge_doc):
        code = [name for name in vars(doc) if not name.startswith('__') and name not in (
            'DOCUMENTATION', 'EXAMPLES', 'RETURN', 'absolute_import', 'division', 'print_function')]
        assert code == [], doc.__name__
