# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""When a pod's scheduled backup starts (plugin_utils/backup_window.py, filter mpanel.cloudpods.backup_start):
spread over the plan's window, the same on every run, and refused where cron cannot follow."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import hashlib
import os
import subprocess
import sys

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.mpanel.cloudpods.plugins.filter import pod_plan as filters
from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_window

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
STARTER = {'minute': '30', 'hour': '3', 'day': '*', 'month': '*', 'weekday': '*', 'window_minutes': 150}
PODS = ['cp-%05d' % index for index in range(1000)]


def minutes(start):
    return int(start['hour']) * 60 + int(start['minute'])


def test_the_offset_is_the_pods_sha256_modulo_the_window():
    start = backup_window.backup_start('shop-example-com', STARTER)
    offset = int.from_bytes(hashlib.sha256(b'shop-example-com').digest()[:8], 'big') % 150
    assert start['offset'] == offset
    assert minutes(start) == 3 * 60 + 30 + offset
    assert (start['day'], start['month'], start['weekday']) == ('*', '*', '*')


def test_the_same_in_another_python_process_whatever_its_hash_seed():
    # Python's own hash() of a str changes from one process to the next; the offset must not.
    collections = backup_window.__file__.split(os.sep + 'ansible_collections' + os.sep, maxsplit=1)[0]
    code = ('import sys; sys.path.insert(0, %r); '
            'from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_window as w; '
            'print(w.backup_start("shop-example-com", %r)["offset"])') % (collections, STARTER)
    outputs = set()
    for seed in ('1', '2', '3'):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.add(subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip())
    assert outputs == {str(backup_window.backup_start('shop-example-com', STARTER)['offset'])}


def test_a_thousand_pods_start_inside_the_window_spread_over_it():
    starts = [minutes(backup_window.backup_start(pod, STARTER)) for pod in PODS]
    assert min(starts) >= 210 and max(starts) < 210 + 150
    per_minute = collections.Counter(starts)
    # 1000 pods over 150 minutes: 6.7 a minute on average; all at once (the old schedule) was 1000 in one minute.
    assert len(per_minute) >= 145 and max(per_minute.values()) <= 20, per_minute.most_common(3)
    # another pod coming or going moves nobody else
    assert [minutes(backup_window.backup_start(pod, STARTER)) for pod in PODS[:10]] == starts[:10]


def test_no_window_keeps_the_plans_time_and_fields():
    plan = {'minute': '*/15', 'hour': '1-3', 'day': '1', 'month': '*', 'weekday': '*'}
    assert backup_window.backup_start('a', plan) == dict(plan, offset=0)
    assert backup_window.backup_start('a', dict(plan, window_minutes=0)) == dict(plan, offset=0)
    assert backup_window.backup_start('a', {}) == dict(backup_window.DEFAULTS, offset=0)


def test_a_window_past_midnight_moves_the_weekday_of_those_after_it():
    weekly = {'minute': '0', 'hour': '23', 'day': '*', 'month': '*', 'weekday': '6', 'window_minutes': 180}
    seen = set()
    for pod in PODS[:200]:
        start = backup_window.backup_start(pod, weekly)
        at = 23 * 60 + start['offset']
        assert minutes(start) == at % 1440
        assert start['weekday'] == ('6' if at < 1440 else '0')
        seen.add(start['weekday'])
    assert seen == {'6', '0'}
    daily = dict(weekly, weekday='*')
    assert {backup_window.backup_start(pod, daily)['weekday'] for pod in PODS[:50]} == {'*'}


@pytest.mark.parametrize('schedule, message', [
    (dict(STARTER, hour='23', day='1'), 'a day or month other than'),
    (dict(STARTER, hour='23', weekday='1-5'), 'needs weekday "\\*" or one day'),
    (dict(STARTER, minute='*/5'), 'must be numbers'),
    (dict(STARTER, hour='24'), 'not a time of day'),
    (dict(STARTER, window_minutes=1441), '0 to 1440'),
    (dict(STARTER, window_minutes=-1), '0 to 1440'),
    (dict(STARTER, window_minutes='soon'), 'whole number of minutes'),
    (dict(STARTER, window_minutes=True), 'whole number of minutes'),
    (dict(STARTER, minutes='5'), 'unknown keys: minutes'),
    (dict(STARTER, weekday='0; rm -rf /'), 'must be a cron field'),
])
def test_what_cron_cannot_follow_is_refused_for_every_pod(schedule, message):
    # Refused for the plan, not only for the pods whose offset would cross midnight.
    for pod in ('a', 'b', 'c'):
        with pytest.raises(backup_window.WindowError, match=message):
            backup_window.backup_start(pod, schedule)


def test_the_filter_takes_ansibles_own_types_and_says_what_is_wrong():
    start = filters.backup_start(wrap_var('shop-example-com'), wrap_var(STARTER))
    assert start == backup_window.backup_start('shop-example-com', STARTER)
    with pytest.raises(AnsibleFilterError, match='must be numbers'):
        filters.backup_start('a', dict(STARTER, hour='*'))


def test_every_plan_of_the_catalogue_can_be_spread():
    with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml'), encoding='utf-8') as handle:
        plans = yaml.safe_load(handle)['cloudpods_plans']
    for code, plan in plans.items():
        schedule = plan['backups']['schedule']
        assert schedule.get('window_minutes', 0) > 0, code
        start = backup_window.backup_start('shop-example-com', schedule)
        assert 0 <= start['offset'] < schedule['window_minutes'], code
