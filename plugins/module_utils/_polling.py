# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PRIVATE to mpanel.cloudpods: waiting, the one way: ``poll()`` on a swappable clock.

Every wait of the Proxmox modules goes through ``poll()``: a task until it stops, a retry of
a transient API failure, a clone's ``create`` lock, a container's DHCP address. The delays
between attempts come from ``PollInterval`` (short and steady: looking) or ``Backoff``
(growing with jitter: retrying); the time from a ``Clock``, which tests replace with a fake
one so that nothing really sleeps. Knows nothing of Proxmox VE.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import random
import time


class _Pending(object):
    """What an attempt returns when there is nothing yet: poll again (None may be a result)."""

    def __repr__(self):
        return 'PENDING'


PENDING = _Pending()


class Clock(object):
    """Monotonic seconds and sleeping, as the waiting code sees them."""

    def __init__(self, now=time.monotonic, sleep=time.sleep):
        self.now = now
        self.sleep = sleep


class Backoff(object):
    """Growing delays with jitter: base, base*factor, ... capped, each scaled by a random 0.5..1."""

    def __init__(self, base=0.25, factor=2.0, cap=2.0, jitter=True, rand=random.random):
        self.base = base
        self.factor = factor
        self.cap = cap
        self.jitter = jitter
        self.rand = rand
        self.attempt = 0

    def next(self):
        delay = min(self.cap, self.base * (self.factor ** self.attempt))
        self.attempt += 1
        if self.jitter:
            delay *= 0.5 + 0.5 * self.rand()
        return delay


class PollInterval(object):
    """Short, growing, capped poll intervals (no jitter): 0.1, 0.15, 0.225 ... cap.

    The default cap trades requests for latency: at most four status GETs a second
    per waiting task (cheap for pveproxy), and a finished task is seen within a
    quarter second, where a 1 s poll loses half a second per task on average.
    """

    def __init__(self, start=0.1, factor=1.5, cap=0.25):
        self.value = start
        self.factor = factor
        self.cap = cap

    def next(self):
        value = self.value
        self.value = min(self.cap, self.value * self.factor)
        return value


def poll(attempt, timeout, delays, clock, on_timeout, before_wait=None, shorten_last_wait=True):
    """Call ``attempt()`` until it returns something other than PENDING, and return that.

    Between attempts wait ``delays.next()`` seconds (a PollInterval or a Backoff). The
    ``timeout`` counts from the first attempt that returned PENDING; once it is over,
    ``on_timeout()`` is returned instead (it usually raises). ``before_wait(delay)`` is called
    before each wait (to count retries). Looking (the default) shortens the last wait to end at
    the deadline and looks once more there; retrying (``shorten_last_wait=False``) gives up when
    the next full backoff would end past the deadline.
    """
    deadline = None
    while True:
        result = attempt()
        if result is not PENDING:
            return result
        now = clock.now()
        if deadline is None:
            deadline = now + timeout
        delay = delays.next()
        remaining = deadline - now
        if remaining <= 0 or (delay > remaining and not shorten_last_wait):
            return on_timeout()
        if before_wait is not None:
            before_wait(delay)
        clock.sleep(min(delay, remaining))
