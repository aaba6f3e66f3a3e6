# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/pod_backup/files/cloudpods-backup-slot.py, the program every backup cron entry runs vzdump through,
as real processes on temporary directories: at most N backups at once per node and M on the share, a night
of 1,000 pods on three nodes included (the role's own start times, on a clock where a minute lasts 0.1 s)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils import backup_window

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
SCRIPT = os.path.join(ROOT, 'roles', 'pod_backup', 'files', 'cloudpods-backup-slot.py')
STARTER = {'minute': '30', 'hour': '3', 'day': '*', 'month': '*', 'weekday': '*', 'window_minutes': 150}


def load_script():
    spec = importlib.util.spec_from_file_location('cloudpods_backup_slot', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slot_script = load_script()


def slot_args(base, node, log, label, seconds, node_slots=1, share_slots=2, wait_minutes=60.0, poll=0.005):
    """The wrapper's arguments around a stand-in backup that writes when it really ran (after the wrapper took
    its slots)."""
    backup = ('echo "start %s %s $EPOCHREALTIME" >> %s; sleep %s; echo "end %s %s $EPOCHREALTIME" >> %s'
              % (label, node, log, seconds, label, node, log))
    return ['--lock-dir', os.path.join(base, node), '--node-slots', str(node_slots),
            '--share', os.path.join(base, 'share'), '--share-slots', str(share_slots),
            '--wait-minutes', str(wait_minutes), '--poll-seconds', str(poll), '--', '/bin/bash', '-c', backup]


def slot_command(*args, **kwargs):
    """The wrapper as cron runs it: its own process."""
    return [sys.executable, SCRIPT] + slot_args(*args, **kwargs)


def fork_slot(argv):
    """The wrapper's main() in a forked child (a new interpreter per pod would cost 1,000 starts): its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        code = 1
        try:
            code = slot_script.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            os._exit(code)  # pylint: disable=protected-access
    return pid


def intervals(log):
    """{label: (node, start ns, end ns)} from the stand-in backups' lines."""
    seen = {}
    with open(log, encoding='ascii') as handle:
        for line in handle:
            kind, label, node, stamp = line.split()
            entry = seen.setdefault(label, [node, None, None])
            entry[1 if kind == 'start' else 2] = int(stamp.replace('.', '').replace(',', '')) * 1000  # us -> ns
    return dict((label, tuple(entry)) for label, entry in seen.items())


def most_at_once(spans):
    """The largest number of (start, end) spans running at the same time."""
    events = sorted([(start, 1) for start, end in spans] + [(end, -1) for start, end in spans])
    running = peak = 0
    for dummy, step in events:  # an end sorts before a start at the same nanosecond
        running += step
        peak = max(peak, running)
    return peak


def test_a_night_of_a_thousand_pods_on_three_nodes_keeps_to_the_limits(tmp_path):
    base, log = str(tmp_path), str(tmp_path / 'backups.log')
    minute = 0.05  # seconds of this test per minute of the night: the 150-minute window in 7.5 s
    pods = ['cp-%05d' % index for index in range(1000)]
    offsets = sorted((backup_window.backup_start(pod, STARTER)['offset'], pod) for pod in pods)
    node_of = dict((pod, 'node%d' % (index % 3)) for index, pod in enumerate(pods))
    started, children, launched_at = time.monotonic(), {}, {}
    for offset, pod in offsets:
        delay = started + offset * minute - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        launched_at[pod] = time.time_ns()
        children[fork_slot(slot_args(base, node_of[pod], log, pod, 0.01))] = pod
    codes = {}
    deadline = time.monotonic() + 300
    while len(codes) < len(children):
        assert time.monotonic() < deadline, 'backups still waiting: %d' % (len(children) - len(codes))
        pid, status = os.waitpid(-1, 0)
        if pid in children:
            codes[children[pid]] = os.waitstatus_to_exitcode(status)
    assert set(codes.values()) == {0}, collections.Counter(codes.values())
    ran = intervals(log)
    assert sorted(ran) == sorted(pods)  # every backup ran, once
    assert all(start >= launched_at[pod] and end > start for pod, (dummy, start, end) in ran.items())
    per_node = collections.defaultdict(list)
    for node, start, end in ran.values():
        per_node[node].append((start, end))
    assert sorted(per_node) == ['node0', 'node1', 'node2']
    assert [most_at_once(spans) for node, spans in sorted(per_node.items())] == [1, 1, 1]
    assert most_at_once([(start, end) for dummy, start, end in ran.values()]) == 2  # the share: 2, and it was busy
    # The role's start times spread the night: at most a few pods a minute, where all 1,000 used to start at once.
    assert max(collections.Counter(offset for offset, dummy in offsets).values()) <= 20


def test_more_slots_let_more_run_at_once_and_never_more(tmp_path):
    base, log = str(tmp_path), str(tmp_path / 'backups.log')
    processes = [subprocess.Popen(slot_command(base, 'node0', log, 'b%d' % index, 0.3, node_slots=3, share_slots=2))
                 for index in range(8)]
    assert [process.wait(timeout=60) for process in processes] == [0] * 8
    ran = intervals(log)
    assert len(ran) == 8 and most_at_once([(start, end) for dummy, start, end in ran.values()]) == 2
    os.remove(log)
    processes = [subprocess.Popen(slot_command(base, 'node0', log, 'c%d' % index, 0.3, node_slots=3, share_slots=5))
                 for index in range(8)]
    assert [process.wait(timeout=60) for process in processes] == [0] * 8
    assert most_at_once([(start, end) for dummy, start, end in intervals(log).values()]) == 3


def test_a_killed_wrapper_keeps_its_slot_until_its_backup_ends(tmp_path):
    base, log = str(tmp_path), str(tmp_path / 'backups.log')
    first = subprocess.Popen(slot_command(base, 'node0', log, 'first', 2.0), start_new_session=True)
    deadline = time.monotonic() + 30
    while not (os.path.exists(log) and 'start first' in open(log, encoding='ascii').read()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # the wrapper only: its backup goes on, holding the slot
    first.wait(timeout=10)
    second = subprocess.run(slot_command(base, 'node0', log, 'second', 0.0), timeout=60, check=False)
    assert second.returncode == 0
    ran = intervals(log)
    assert ran['second'][1] >= ran['first'][2]  # after the first backup ended, not when its wrapper died
    with open(os.path.join(base, 'node0', 'node-slot-0'), encoding='utf-8') as handle:
        note = handle.read()
    assert note.startswith('pid ') and 'echo "start second node0' in note  # who holds it, for an operator


def test_no_slot_in_time_starts_nothing_exits_75_and_says_why(tmp_path):
    base, log = str(tmp_path), str(tmp_path / 'backups.log')
    holder = subprocess.Popen(slot_command(base, 'node0', log, 'holder', 3.0))
    deadline = time.monotonic() + 30
    while not (os.path.exists(log) and 'start holder' in open(log, encoding='ascii').read()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    late = subprocess.run(slot_command(base, 'node0', log, 'late', 0.0, wait_minutes=0.01), capture_output=True,
                          text=True, timeout=60, check=False)
    assert late.returncode == 75
    assert 'no free node backup slot (1 in %s) in 0.01 minutes: not started' % os.path.join(base, 'node0') in late.stderr
    assert holder.wait(timeout=60) == 0
    assert 'late' not in intervals(log)


@pytest.mark.parametrize('args, message', [
    (['--lock-dir', 'x', '--share', 'y', '--'], 'the backup command is missing'),
    (['--lock-dir', 'x', '--share', 'y', '--node-slots', '0', '--', 'true'], 'must be 1 or more'),
    (['--share', 'y', '--', 'true'], 'the following arguments are required: --lock-dir'),
    (['--lock-dir', 'x', '--share', 'y', '--wait-minutes', '-1', '--', 'true'], 'must be 0 or more'),
])
def test_bad_arguments_exit_2_and_run_nothing(tmp_path, args, message):
    result = subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, cwd=str(tmp_path),
                            timeout=60, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert os.listdir(str(tmp_path)) == []
