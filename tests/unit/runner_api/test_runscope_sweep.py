# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker that starts sweeps the run directories dead workers left (runscope.sweep). It must never take
the directory of a run another worker is making at that moment: the race CI saw once with 8 workers
starting together (a run directory whose lock was not there yet removed under its owner, whose task then
failed with FileNotFoundError and ran a second attempt)."""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner_api import runscope  # noqa: E402


def test_a_sweep_while_a_run_directory_is_made_leaves_it(tmp_path, monkeypatch):
    real_flock = runscope.fcntl.flock
    swept = []

    def flock_after_a_sweep(handle, operation):
        # Another worker starts and sweeps exactly between this run's lock file and its lock.
        if operation == runscope.fcntl.LOCK_EX and not swept:
            swept.append(runscope.sweep(tmp_path))
        return real_flock(handle, operation)

    monkeypatch.setattr(runscope.fcntl, 'flock', flock_after_a_sweep)
    scope = runscope.RunScope(tmp_path)
    try:
        assert swept == [[]], swept  # the sweep ran, and took nothing
        assert scope.path.is_dir() and (scope.path / runscope.LOCK_NAME).exists()
        assert scope.run_id.startswith(runscope.RUN_PREFIX)
        # the sweep of a worker starting now leaves the live run alone too
        assert runscope.sweep(tmp_path) == [] and scope.path.is_dir()
    finally:
        scope.close()
    assert not scope.path.exists()


def test_what_dead_workers_left_is_swept(tmp_path):
    unlocked = tmp_path / (runscope.RUN_PREFIX + 'dead')
    unlocked.mkdir()
    (unlocked / runscope.LOCK_NAME).touch()
    stale = tmp_path / (runscope.NEW_PREFIX + 'stale')
    stale.mkdir()
    old = time.time() - runscope.NEW_STALE_SECONDS - 5
    os.utime(stale, (old, old))
    young = tmp_path / (runscope.NEW_PREFIX + 'young')
    young.mkdir()
    assert runscope.sweep(tmp_path) == [unlocked.name]
    assert not unlocked.exists() and not stale.exists()
    assert young.is_dir()  # a run directory being made right now
