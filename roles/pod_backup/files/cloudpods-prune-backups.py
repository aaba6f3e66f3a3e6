# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cloudpods-prune-backups: the backups of terminated Cloud Pods, marked, kept for a while, then removed.

Runs on the Proxmox host, as root. Installed by the role mpanel.cloudpods.pod_backup (entry point
``terminated``) as /usr/local/lib/cloudpods-prune-backups.py and run daily by the cron file
/etc/cron.d/cloudpods-prune-backups; the playbooks deprovision and prune_backups run this same file
(ansible.builtin.script). Run it with python3 (no shebang: the collection's sanity rules allow none here).
Python 3 standard library only.

    python3 cloudpods-prune-backups.py mark --root R --pod P --vmid N --keep-days D [--dry-run]
        writes the marker R/P/.terminated, {"pod", "vmid", "terminated_at", "keep_days"}, unless a valid
        one is there (a second run keeps the first terminated_at). No directory R/P: nothing to mark.
    python3 cloudpods-prune-backups.py prune --root R [--dry-run] [--syslog]
        removes each directory R/<pod> whose marker's terminated_at is keep_days or more days ago.

Each prints one JSON object on stdout and logs what it removed, refused or marked on stderr (and with
--syslog to syslog, as the cron job does).

Rules of prune, so that it can only ever remove what deprovision marked:
- only the directories directly in R, never a symbolic link (neither R/<pod> nor its marker is followed);
- only a directory with a valid marker: a regular file of at most 4 KiB holding a JSON object whose pod is
  the directory's name, vmid a positive integer or null (not known any more), terminated_at
  "YYYY-MM-DDThh:mm:ssZ" (UTC) and keep_days an integer >= 0. Anything else is refused (logged, kept);
- the directory is first renamed to R/.pruning-<pod> (one atomic step: a run killed during the removal
  leaves no half-removed pod directory without its marker), then removed with a removal that does not
  follow symbolic links (shutil.rmtree, fd-based); a .pruning-* directory left by a killed run is removed
  by the next one.
"""

import argparse
import datetime
import json
import os
import shutil
import stat
import sys

MARKER = '.terminated'
PRUNING_PREFIX = '.pruning-'
MARKER_MAX_BYTES = 4096
TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'


class MarkerError(ValueError):
    """A marker that is not one deprovision would write."""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def format_time(moment):
    return moment.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def parse_time(text):
    if not isinstance(text, str) or len(text) != 20:
        raise MarkerError('terminated_at is not YYYY-MM-DDThh:mm:ssZ: %r' % (text,))
    try:
        moment = datetime.datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        raise MarkerError('terminated_at is not YYYY-MM-DDThh:mm:ssZ: %r' % (text,))
    return moment.replace(tzinfo=datetime.timezone.utc)


def is_plain_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_pod_name(pod):
    """A pod id is one plain path component (the playbooks check it against the host name grammar)."""
    if not pod or pod.startswith('.') or '/' in pod or '\0' in pod or len(pod) > 253:
        raise ValueError('not a pod id: %r' % (pod,))
    return pod


def marker_data(pod, vmid, keep_days, now):
    if vmid is not None and (not is_plain_int(vmid) or vmid <= 0):
        raise ValueError('vmid must be a positive integer: %r' % (vmid,))
    if not is_plain_int(keep_days) or keep_days < 0:
        raise ValueError('keep_days must be an integer >= 0: %r' % (keep_days,))
    return dict(pod=check_pod_name(pod), vmid=vmid, terminated_at=format_time(now), keep_days=keep_days)


def validate_marker(data, pod):
    """The marker's content, checked: (terminated_at as datetime, keep_days). Raises MarkerError."""
    if not isinstance(data, dict):
        raise MarkerError('not a JSON object')
    if data.get('pod') != pod:
        raise MarkerError('pod %r is not the directory name %r' % (data.get('pod'), pod))
    vmid = data.get('vmid')
    if vmid is not None and (not is_plain_int(vmid) or vmid <= 0):
        raise MarkerError('vmid is not a positive integer or null: %r' % (vmid,))
    keep_days = data.get('keep_days')
    if not is_plain_int(keep_days) or keep_days < 0 or keep_days > 36500:
        raise MarkerError('keep_days is not an integer from 0 to 36500: %r' % (keep_days,))
    return parse_time(data.get('terminated_at')), keep_days


def read_marker(directory, pod):
    """The validated marker of ``directory`` (a real directory), or None when it has none.

    Raises MarkerError for a marker that is there but not valid (a symbolic link, too big, not JSON ...).
    """
    path = os.path.join(directory, MARKER)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, 'O_NONBLOCK', 0))
    except FileNotFoundError:
        return None
    except OSError as error:  # ELOOP: a symbolic link
        raise MarkerError('cannot be read as a plain file: %s' % error.strerror)
    with os.fdopen(fd, 'rb') as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise MarkerError('not a regular file')
        raw = handle.read(MARKER_MAX_BYTES + 1)
    if len(raw) > MARKER_MAX_BYTES:
        raise MarkerError('larger than %d bytes' % MARKER_MAX_BYTES)
    try:
        data = json.loads(raw.decode('utf-8'))
    except ValueError:
        raise MarkerError('not JSON')
    terminated_at, keep_days = validate_marker(data, pod)
    return dict(data, terminated_at=format_time(terminated_at), keep_days=keep_days), terminated_at


class Log(object):
    """Lines for stderr, and for syslog when asked (the cron job)."""

    def __init__(self, use_syslog=False):
        self.syslog = None
        if use_syslog:
            import syslog  # pylint: disable=import-outside-toplevel
            syslog.openlog('cloudpods-prune-backups', 0, syslog.LOG_DAEMON)
            self.syslog = syslog

    def __call__(self, message, warning=False):
        sys.stderr.write('cloudpods-prune-backups: %s\n' % message)
        if self.syslog:
            self.syslog.syslog(self.syslog.LOG_WARNING if warning else self.syslog.LOG_INFO, message)


def real_directory(path):
    """True for a directory that is not a symbolic link."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def mark(root, pod, vmid, keep_days, dry_run=False, now=None, log=None):
    """Write the marker of a terminated pod (see the module docstring). Returns the JSON answer."""
    log = log or Log()
    now = now or utc_now()
    wanted = marker_data(pod, vmid, keep_days, now)
    directory = os.path.join(root, pod)
    path = os.path.join(directory, MARKER)
    answer = dict(changed=False, path=path, dry_run=dry_run, marker=None, reason='')
    if not os.path.lexists(directory):
        answer['reason'] = 'no backup directory: nothing to mark'
        return answer
    if not real_directory(directory):
        raise ValueError('%s is not a directory (a symbolic link is not followed): not marked' % directory)
    try:
        found = read_marker(directory, pod)
    except MarkerError as error:
        found = None
        answer['reason'] = 'a malformed marker replaced (%s)' % error
    if found:
        answer.update(marker=found[0], reason='already marked')
        return answer
    answer.update(changed=True, marker=wanted, reason=answer['reason'] or 'marked')
    if dry_run:
        return answer
    temporary = '%s.tmp-%d' % (path, os.getpid())
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, 'w') as handle:
        json.dump(wanted, handle, sort_keys=True)
        handle.write('\n')
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    log('%s: %s, terminated_at %s, kept %d days' % (directory, answer['reason'], wanted['terminated_at'], keep_days))
    return answer


def remove_tree(path):
    if not shutil.rmtree.avoids_symlink_attacks:
        raise OSError('this platform has no rmtree safe against symbolic links: nothing removed')
    shutil.rmtree(path)


def prune(root, dry_run=False, now=None, log=None):
    """Remove the directories of terminated pods kept long enough. Returns the JSON answer."""
    log = log or Log()
    now = now or utc_now()
    answer = dict(changed=False, dry_run=dry_run, root=root, pruned=[], kept=[], refused=[])
    if not real_directory(root):
        raise ValueError('backup root %s is not a directory' % root)
    with os.scandir(root) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        path = os.path.join(root, name)
        if name.startswith(PRUNING_PREFIX):
            if real_directory(path):
                # left by a run killed while removing: it was checked before the rename
                answer['changed'] = True
                if not dry_run:
                    remove_tree(path)
                    log('%s: removed (left by an earlier run)' % path)
            continue
        if name.startswith('.'):
            continue
        if os.path.islink(path):
            answer['refused'].append(dict(path=path, reason='a symbolic link: not followed'))
            log('%s: refused: a symbolic link: not followed' % path, warning=True)
            continue
        if not real_directory(path):
            continue
        try:
            found = read_marker(path, name)
        except MarkerError as error:
            answer['refused'].append(dict(path=path, reason='malformed marker: %s' % error))
            log('%s: refused: malformed marker %s: %s' % (path, MARKER, error), warning=True)
            continue
        if found is None:
            continue  # a live pod (or no pod of ours): never touched
        marker, terminated_at = found
        due = terminated_at + datetime.timedelta(days=marker['keep_days'])
        entry = dict(pod=name, path=path, vmid=marker.get('vmid'), terminated_at=marker['terminated_at'],
                     keep_days=marker['keep_days'], due=format_time(due))
        if now < due:
            answer['kept'].append(entry)
            continue
        answer['pruned'].append(entry)
        answer['changed'] = True
        if dry_run:
            log('%s: would be removed (terminated %s, kept %d days)' % (path, entry['terminated_at'], entry['keep_days']))
            continue
        doomed = os.path.join(root, PRUNING_PREFIX + name)
        os.rename(path, doomed)
        remove_tree(doomed)
        log('%s: removed (terminated %s, kept %d days)' % (path, entry['terminated_at'], entry['keep_days']))
    return answer


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='cloudpods-prune-backups', description=__doc__.split('\n', maxsplit=1)[0])
    commands = parser.add_subparsers(dest='command')
    commands.required = True
    marking = commands.add_parser('mark', help='mark the backup directory of a terminated pod')
    marking.add_argument('--root', required=True)
    marking.add_argument('--pod', required=True)
    marking.add_argument('--vmid', default='', help='the VMID the pod had (empty: not known)')
    marking.add_argument('--keep-days', type=int, required=True)
    marking.add_argument('--dry-run', action='store_true')
    pruning = commands.add_parser('prune', help='remove the directories of terminated pods kept long enough')
    pruning.add_argument('--root', required=True)
    pruning.add_argument('--dry-run', action='store_true')
    pruning.add_argument('--syslog', action='store_true')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log(getattr(args, 'syslog', False))
    try:
        if args.command == 'mark':
            vmid = int(args.vmid) if args.vmid.strip() else None
            answer = mark(args.root, args.pod, vmid, args.keep_days, dry_run=args.dry_run, log=log)
        else:
            answer = prune(args.root, dry_run=args.dry_run, log=log)
    except (OSError, ValueError) as error:
        log('failed: %s' % error, warning=True)
        return 1
    sys.stdout.write(json.dumps(answer, sort_keys=True) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
