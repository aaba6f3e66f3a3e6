# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the one way to wait: poll() on a fake clock, PollInterval and Backoff (_polling.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.mpanel.cloudpods.plugins.module_utils import _polling as polling


class TimeUp(Exception):
    pass


def fake_clock():
    """A Clock whose sleeps only move its time on, and are recorded."""
    now = [1000.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds
    return polling.Clock(now=lambda: now[0], sleep=sleep), sleeps


def attempts(*answers):
    """An attempt returning the answers in order (PENDING for None), and the list of its calls."""
    answers = list(answers)
    calls = []

    def attempt():
        calls.append(1)
        answer = answers.pop(0)
        return polling.PENDING if answer is None else answer
    return attempt, calls


def time_up():
    raise TimeUp()


def test_poll_returns_the_first_answer_that_is_not_pending():
    clock, sleeps = fake_clock()
    attempt, calls = attempts(None, None, 'done')
    assert polling.poll(attempt, 10, polling.PollInterval(), clock, time_up) == 'done'
    assert len(calls) == 3
    assert sleeps == pytest.approx([0.1, 0.15])


def test_poll_may_return_none_as_an_answer():
    clock, sleeps = fake_clock()
    assert polling.poll(lambda: None, 10, polling.PollInterval(), clock, time_up) is None
    assert sleeps == []


def test_poll_shortens_the_last_wait_to_look_once_more_at_the_deadline():
    clock, sleeps = fake_clock()
    with pytest.raises(TimeUp):
        polling.poll(lambda: polling.PENDING, 1, polling.PollInterval(start=0.4, factor=1, cap=0.4), clock, time_up)
    assert sleeps == pytest.approx([0.4, 0.4, 0.2])


def test_retrying_gives_up_before_a_backoff_that_would_end_past_the_deadline():
    clock, sleeps = fake_clock()
    waited = []
    with pytest.raises(TimeUp):
        polling.poll(lambda: polling.PENDING, 2, polling.Backoff(base=0.5, cap=8, jitter=False), clock, time_up,
                     before_wait=waited.append, shorten_last_wait=False)
    assert sleeps == [0.5, 1.0]
    assert waited == sleeps


def test_the_timeout_counts_from_the_first_pending_attempt():
    clock, sleeps = fake_clock()
    slow_first = [True]

    def attempt():
        if slow_first[0]:  # e.g. a task that ran for a while before it failed on a lock
            slow_first[0] = False
            clock.sleep(50)
        return polling.PENDING
    with pytest.raises(TimeUp):
        polling.poll(attempt, 1, polling.PollInterval(start=0.5, factor=1, cap=0.5), clock, time_up)
    assert sleeps == [50, 0.5, 0.5]


def test_poll_interval_grows_to_its_cap():
    interval = polling.PollInterval()
    assert [interval.next() for dummy in range(5)] == pytest.approx([0.1, 0.15, 0.225, 0.25, 0.25])


def test_backoff_jitter_stays_within_half_to_full_delay():
    backoff = polling.Backoff(base=1.0, factor=2.0, cap=4.0, rand=lambda: 0.0)
    assert [backoff.next() for dummy in range(4)] == [0.5, 1.0, 2.0, 2.0]
    backoff = polling.Backoff(base=1.0, factor=2.0, cap=4.0, rand=lambda: 1.0)
    assert [backoff.next() for dummy in range(4)] == [1.0, 2.0, 4.0, 4.0]
