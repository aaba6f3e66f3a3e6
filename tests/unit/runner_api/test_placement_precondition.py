# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""provision.yml's "no node has room" failure is a precondition for runner_api: the worker fails the order at
once (an admin retries it later) instead of retrying it five times. The play and the task are read from the
playbook itself, so moving the task out of the "Check ..." play breaks this test."""

import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runner_api.executors import _EventCollector  # noqa: E402  pylint: disable=wrong-import-position

NO_ROOM_TASK = 'Stop when no node has room for the pod (nothing was created)'


def no_room_task():
    with open(os.path.join(ROOT, 'playbooks', 'provision.yml'), encoding='utf-8') as handle:
        plays = yaml.safe_load(handle)
    for play in plays:
        for task in play.get('tasks') or []:
            if task.get('name') == NO_ROOM_TASK:
                action = [key for key in task if key.startswith('ansible.builtin.')][0]
                return play['name'], action
    raise AssertionError('provision.yml has no task %r' % NO_ROOM_TASK)


def test_no_room_fails_the_order_without_retries():
    play, action = no_room_task()
    events = []
    collector = _EventCollector([], events.append)
    message = ('no room for pod shop-example-com (plan CLOUD_POD_PREMIUM): no node has 2 GiB of memory free '
               '(the most: pve2: 1.5 GiB of memory and 40 GiB of disk free); nothing was created')
    collector.handle({'event': 'runner_on_failed',
                      'event_data': {'play': play, 'task': NO_ROOM_TASK, 'resolved_action': action,
                                     'host': 'localhost', 'res': {'failed': True, 'msg': message}}})
    assert collector.precondition_failed
    assert message in collector.first_failure
    assert events[0]['status'] == 'failed'
