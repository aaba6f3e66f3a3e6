# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""When a pod's scheduled backup starts: the plan's start time plus the pod's own offset in the plan's
window (private to this collection; the filter mpanel.cloudpods.backup_start wraps it).

A plan's ``backups.schedule`` has the cron fields (``minute``, ``hour``, ``day``, ``month``, ``weekday``)
and ``window_minutes``: the backups of the plan's pods start spread over that many minutes from the
plan's time, instead of all at the same minute. The offset of a pod is a hash of its id (SHA-256), so it
is the same on every run, on every controller and in every Python, and does not move when other pods
come or go. ``window_minutes`` 0 (or unset) keeps the plan's time for every pod.

A window that goes past midnight moves the pods that start after it to the next day: ``weekday`` (one
day, 0-7) moves with them; a plan with a ``day`` or ``month`` other than ``*``, or a list or range of
weekdays, may not have such a window (the message says so).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import re

FIELDS = ('minute', 'hour', 'day', 'month', 'weekday')
DEFAULTS = {'minute': '0', 'hour': '3', 'day': '*', 'month': '*', 'weekday': '*'}
MAX_WINDOW = 1440  # a day
_NUMBER = re.compile(r'^[0-9]{1,2}$')
_FIELD = re.compile(r'^[0-9*,/-]{1,40}$')


class WindowError(ValueError):
    """A schedule this cannot spread (the message says why)."""


def pod_offset(pod, window_minutes):
    """The pod's offset in minutes, 0 <= offset < window_minutes (0 for no window)."""
    if window_minutes <= 0:
        return 0
    digest = hashlib.sha256(pod.encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big') % window_minutes


def _window(schedule):
    value = schedule.get('window_minutes', 0)
    if isinstance(value, bool):
        raise WindowError('backups.schedule.window_minutes must be a whole number of minutes, got %r' % (value,))
    try:
        window = int(str(value).strip())
    except (TypeError, ValueError):
        raise WindowError('backups.schedule.window_minutes must be a whole number of minutes, got %r' % (value,))
    if not 0 <= window <= MAX_WINDOW:
        raise WindowError('backups.schedule.window_minutes must be 0 to %d (a day), got %d' % (MAX_WINDOW, window))
    return window


def backup_start(pod, schedule):
    """The cron fields of ``pod``'s scheduled backup: a dict with ``minute``, ``hour``, ``day``, ``month``,
    ``weekday`` (strings), and ``offset`` (the minutes added to the plan's time)."""
    if not isinstance(pod, str) or not pod:
        raise WindowError('a pod id is needed to place its backup in the window, got %r' % (pod,))
    if not isinstance(schedule, dict):
        raise WindowError('backups.schedule must be a mapping of cron fields, got %r' % (schedule,))
    unknown = sorted(set(schedule) - set(FIELDS) - {'window_minutes'})
    if unknown:
        raise WindowError('backups.schedule has unknown keys: %s (known: %s, window_minutes)'
                          % (', '.join(unknown), ', '.join(FIELDS)))
    fields = dict((name, str(schedule.get(name, DEFAULTS[name])).strip()) for name in FIELDS)
    for name, value in fields.items():
        if not _FIELD.match(value):
            raise WindowError('backups.schedule.%s must be a cron field (digits, *, ",", "-", "/"), got %r'
                              % (name, value))
    window = _window(schedule)
    offset = pod_offset(pod, window)
    if window == 0:
        return dict(fields, offset=0)
    if not (_NUMBER.match(fields['minute']) and _NUMBER.match(fields['hour'])):
        raise WindowError('a backup window needs one start time: backups.schedule.minute and hour must be numbers, '
                          'got %r and %r' % (fields['minute'], fields['hour']))
    minute, hour = int(fields['minute']), int(fields['hour'])
    if minute > 59 or hour > 23:
        raise WindowError('backups.schedule: %02d:%02d is not a time of day' % (hour, minute))
    crosses = hour * 60 + minute + window > 1440  # checked for the plan, whatever this pod's offset
    if crosses and (fields['day'] != '*' or fields['month'] != '*'):
        raise WindowError('backups.schedule: a window past midnight moves backups to the next day, which a '
                          'day or month other than "*" cannot follow (day %r, month %r)'
                          % (fields['day'], fields['month']))
    if crosses and fields['weekday'] != '*' and not (_NUMBER.match(fields['weekday']) and int(fields['weekday']) <= 7):
        raise WindowError('backups.schedule: a window past midnight needs weekday "*" or one day (0-7), '
                          'got %r' % (fields['weekday'],))
    days, start = divmod(hour * 60 + minute + offset, 1440)
    result = dict(fields, minute=str(start % 60), hour=str(start // 60), offset=offset)
    if days and fields['weekday'] != '*':
        result['weekday'] = str((int(fields['weekday']) + days) % 7)
    return result
