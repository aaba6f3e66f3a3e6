# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs one scheduled backup (vzdump, from a pod's cron entry) once a backup slot is free on this node
and on the backup share, so that at most --node-slots backups run at once on a node and at most
--share-slots on the share, whatever the number of pods whose backups are due.

Installed on the Proxmox host by the role mpanel.cloudpods.pod_backup; the cron entries call it:

    cloudpods-backup-slot.py --lock-dir /run/lock/cloudpods-backup --node-slots 1 \\
        --share /mnt/windows-backup --share-slots 2 --wait-minutes 360 --syslog -- vzdump 101 ...

- A slot is an flock(2) on a file: <lock-dir>/node-slot-<k> on the node, <share>/.cloudpods-backup-slots/slot-<k>
  on the share (several nodes mount the same share; its file system must support locks, as NFSv4 and SMB do).
  The command inherits the locks, so a slot stays taken as long as the backup runs, even if this program is
  killed, and is free again when the backup ends, even after kill -9: the kernel drops the locks with the
  last process holding them. Nothing stale is left to clean up.
- The node's slot is taken first, then the share's; nobody waits for a node slot while holding a share
  slot, so no two backups can wait for each other. Backups waiting for a slot queue behind one lock file
  per kind (``queue``): only the first in line looks for a free slot, the others sleep in flock(2).
- A backup that finds no slot within --wait-minutes is not started: one line says so (stderr, and syslog
  with --syslog) and the exit status is 75 (EX_TEMPFAIL), which cron reports like any failure.
- A holder's lock file names the command it runs (pid, time, argv), for an operator looking at a busy night.
- Exit status: the command's, 75 when no slot came in time, 2 for bad arguments.

Standard library only. vzdump itself takes a node-wide lock (/var/run/vzdump.lock, one vzdump at a time
per node, the others wait up to its lockwait of 180 minutes): with more than one node slot the extra
backups would wait inside vzdump instead of here, so --node-slots 1 is the default.
"""

import argparse
import errno
import fcntl
import os
import signal
import subprocess
import sys
import syslog
import time

EX_TEMPFAIL = 75
SHARE_SUBDIR = '.cloudpods-backup-slots'


class NoSlot(Exception):
    """No slot came free before the deadline."""


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):  # pylint: disable=unused-argument
    raise _Timeout()


def _open(path):
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _lock_blocking(fd, deadline):
    """flock(fd, LOCK_EX) until ``deadline`` (time.monotonic()); False when the deadline came first."""
    if _try_lock(fd):
        return True
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, remaining)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except _Timeout:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise


def take_slot(directory, prefix, slots, deadline, poll_seconds):
    """An fd holding one of ``slots`` slot files ``<directory>/<prefix><k>`` (locked), or NoSlot."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = [os.path.join(directory, '%s%d' % (prefix, index)) for index in range(slots)]
    queue = _open(os.path.join(directory, prefix + 'queue'))
    try:
        if not _lock_blocking(queue, deadline):
            raise NoSlot()
        # First in line: look for a free slot until one comes or the deadline passes.
        while True:
            for path in paths:
                fd = _open(path)
                if _try_lock(fd):
                    return fd
                os.close(fd)
            if time.monotonic() >= deadline:
                raise NoSlot()
            time.sleep(max(0.0, min(poll_seconds, deadline - time.monotonic())))
    finally:
        os.close(queue)  # the next in line looks now


def _note(fd, argv):
    text = 'pid %d since %s: %s\n' % (os.getpid(), time.strftime('%Y-%m-%dT%H:%M:%S%z'), ' '.join(argv))
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode('utf-8', 'replace'), 0)


def _say(message, use_syslog):
    sys.stderr.write('cloudpods-backup-slot: %s\n' % message)
    if use_syslog:
        syslog.openlog('cloudpods-backup-slot', syslog.LOG_PID, syslog.LOG_CRON)
        syslog.syslog(syslog.LOG_WARNING, message)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be 1 or more, got %s' % text)
    return value


def _minutes(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError('must be 0 or more, got %s' % text)
    return value


def parse(argv):
    parser = argparse.ArgumentParser(prog='cloudpods-backup-slot.py', description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--lock-dir', required=True, help="this node's slot files (e.g. /run/lock/cloudpods-backup)")
    parser.add_argument('--node-slots', type=_positive, default=1, help='backups at once on this node (default 1)')
    parser.add_argument('--share', required=True, help='the backup share (its slot files: %s/)' % SHARE_SUBDIR)
    parser.add_argument('--share-slots', type=_positive, default=2, help='backups at once on the share (default 2)')
    parser.add_argument('--wait-minutes', type=_minutes, default=360.0,
                        help='how long to wait for a slot before giving up (default 360)')
    parser.add_argument('--poll-seconds', type=float, default=5.0,
                        help='how often the first in line looks for a free slot (default 5)')
    parser.add_argument('--syslog', action='store_true', help='also say to syslog why a backup did not start')
    parser.add_argument('command', nargs=argparse.REMAINDER, help='-- then the backup command and its arguments')
    args = parser.parse_args(argv)
    if args.command and args.command[0] == '--':
        args.command = args.command[1:]
    if not args.command:
        parser.error('the backup command is missing (after --)')
    if args.poll_seconds <= 0:
        parser.error('--poll-seconds must be more than 0')
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    deadline = time.monotonic() + args.wait_minutes * 60
    what = ' '.join(args.command)
    try:
        node = take_slot(args.lock_dir, 'node-slot-', args.node_slots, deadline, args.poll_seconds)
    except NoSlot:
        _say('no free node backup slot (%d in %s) in %g minutes: not started: %s'
             % (args.node_slots, args.lock_dir, args.wait_minutes, what), args.syslog)
        return EX_TEMPFAIL
    try:
        share = take_slot(os.path.join(args.share, SHARE_SUBDIR), 'slot-', args.share_slots, deadline,
                          args.poll_seconds)
    except NoSlot:
        _say('no free share backup slot (%d on %s) in %g minutes: not started: %s'
             % (args.share_slots, args.share, args.wait_minutes, what), args.syslog)
        return EX_TEMPFAIL
    for fd in (node, share):
        _note(fd, args.command)
    try:
        # The command inherits both locks: the slots stay taken while it runs, whatever happens to us.
        return subprocess.call(args.command, pass_fds=(node, share))
    except OSError as exc:
        _say('could not start %s: %s' % (what, exc), args.syslog)
        return 127


if __name__ == '__main__':
    sys.exit(main())
