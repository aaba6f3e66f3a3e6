# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The part of mpanel.cloudpods.pod_converge that runs inside the pod (Python 3 standard library only).

The action plugin sends this file's source and the task's parameters as one JSON document on the
stdin of ONE command (``python3 -c BOOTSTRAP``): no temporary directory, no file transfer, one
``pct exec``. Nothing of the parameters is ever code: they are JSON values, the command is an argv
list (no shell), file contents are written as bytes.

``run(params)`` waits until the pod has booted (``boot_timeout``), then converges, in this order: ``files`` (each compared first, written atomically only
when its content, owner, group or mode differ), then ``command`` (its argv, plus the ``changed_flag``
of every file that changed, plus ``check_flag`` in check mode), then ``files_after`` (files whose
owner or directory the command makes). It returns a dict the action plugin hands to Ansible.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import grp
import os
import pwd
import stat
import subprocess
import tempfile
import time

# A diff shows at most this much of a file (as the copy module's diff limit does).
MAX_DIFF_BYTES = 104448
# The command's environment: no variable of the connection leaks in.
COMMAND_ENV = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8',
               'HOME': '/root'}


class ConvergeError(Exception):
    """A file or the command could not be converged: the message says which and why."""


def _owner_ids(spec):
    """(uid, gid) of the file's owner and group, None for one that does not exist (yet)."""
    try:
        uid = pwd.getpwnam(spec['owner']).pw_uid
    except KeyError:
        uid = None
    try:
        gid = grp.getgrnam(spec['group']).gr_gid
    except KeyError:
        gid = None
    return uid, gid


def _text_for_diff(data):
    if data is None:
        return ''
    if len(data) > MAX_DIFF_BYTES or b'\0' in data:
        return '(%d bytes, not shown)\n' % len(data)
    return data.decode('utf-8', 'replace')


def _write_atomically(dest, data, mode, uid, gid):
    directory = os.path.dirname(dest)
    handle, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(dest), dir=directory)
    try:
        with os.fdopen(handle, 'wb') as out:
            out.write(data)
            out.flush()
            os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def converge_file(spec, check):
    """Converge one file; {dest, changed, changes, diff} (diff: before/after of the content)."""
    dest = spec['dest']
    data = spec['content'].encode('utf-8')
    mode = int(spec['mode'], 8)
    entry = {'dest': dest, 'changed': False, 'changes': []}
    try:
        current = os.lstat(dest)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise ConvergeError('%s: cannot look at it: %s' % (dest, exc.strerror))
        current = None
    if current is not None and not stat.S_ISREG(current.st_mode):
        raise ConvergeError('%s exists and is not a regular file (a link or a directory): left alone' % dest)
    if current is not None and not spec.get('force', True):
        return entry
    uid, gid = _owner_ids(spec)
    before = None
    if current is not None:
        with open(dest, 'rb') as handle:
            before = handle.read()
    content_differs = before != data
    if current is None:
        entry['changes'].append('created')
    elif content_differs:
        entry['changes'].append('content')
    if current is not None:
        if uid is None or current.st_uid != uid or gid is None or current.st_gid != gid:
            entry['changes'].append('owner %s:%s' % (spec['owner'], spec['group']))
        if stat.S_IMODE(current.st_mode) != mode:
            entry['changes'].append('mode %04o' % mode)
    if not entry['changes']:
        return entry
    entry['changed'] = True
    if content_differs:
        entry['diff'] = {'before_header': dest, 'after_header': dest, 'before': _text_for_diff(before),
                         'after': _text_for_diff(data)}
    if check:
        return entry
    if uid is None or gid is None:
        raise ConvergeError('%s: owner %s or group %s does not exist in the pod' % (dest, spec['owner'], spec['group']))
    if not os.path.isdir(os.path.dirname(dest)):
        raise ConvergeError('%s: its directory does not exist' % dest)
    if content_differs:
        _write_atomically(dest, data, mode, uid, gid)
    else:
        os.chown(dest, uid, gid)
        os.chmod(dest, mode)
    return entry


def run_command(params, changed_files, check):
    """Run the command (argv, no shell); {argv, rc, stdout, stderr} or {skipped, reason}."""
    argv = list(params['command'])
    pending = [entry['dest'] for entry in changed_files if entry['dest'] in argv]
    if check and pending:
        return {'skipped': True, 'reason': 'dry run: %s would be installed first' % ', '.join(pending)}
    for entry in changed_files:
        flag = entry.get('changed_flag')
        if flag and flag not in argv:
            argv.append(flag)
    if check and params.get('check_flag'):
        argv.append(params['check_flag'])
    stdin = params.get('stdin')
    try:
        proc = subprocess.run(argv, input=(stdin or '').encode('utf-8'), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=COMMAND_ENV, cwd='/', check=False)
    except OSError as exc:
        raise ConvergeError('cannot run %s: %s' % (argv[0], exc.strerror))
    stdout = proc.stdout.decode('utf-8', 'replace')
    stderr = proc.stderr.decode('utf-8', 'replace')
    return {'argv': argv, 'rc': proc.returncode, 'stdout': stdout, 'stdout_lines': stdout.splitlines(),
            'stderr': stderr, 'stderr_lines': stderr.splitlines()}


def wait_for_boot(timeout):
    """Until systemd finished starting the pod (a pod just started is still starting its services and
    making its SSH host keys): None, or how long it took in seconds; no systemd, no wait."""
    if timeout <= 0 or not os.path.isdir('/run/systemd/system'):
        return None
    started = time.monotonic()
    try:
        proc = subprocess.run(['systemctl', 'is-system-running', '--wait'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=COMMAND_ENV, cwd='/', timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConvergeError('the pod is still booting after %d s (systemctl is-system-running --wait): nothing was '
                            'changed' % timeout)
    except OSError as exc:
        raise ConvergeError('cannot ask systemd whether the pod has booted: %s' % exc.strerror)
    state = proc.stdout.decode('utf-8', 'replace').strip()
    if state in ('initializing', 'starting', 'stopping'):
        raise ConvergeError('the pod is %s (systemctl is-system-running): nothing was changed' % state)
    return round(time.monotonic() - started, 3)


def _converge_all(specs, check, result):
    changed = []
    for spec in specs:
        entry = converge_file(spec, check)
        entry['changed_flag'] = spec.get('changed_flag')
        result['files'].append({key: value for key, value in entry.items() if key != 'diff'})
        if entry.get('diff'):
            result['diff'].append(entry['diff'])
        if entry['changed']:
            changed.append(entry)
    return changed


def run(params):
    """Converge files, run the command, converge files_after; the result for Ansible."""
    check = bool(params.get('check_mode'))
    result = {'changed': False, 'files': [], 'diff': []}
    try:
        waited = wait_for_boot(int(params.get('boot_timeout') or 0))
        if waited is not None:
            result['boot_wait'] = waited
        changed = _converge_all(params.get('files') or [], check, result)
        if params.get('command'):
            result['command'] = run_command(params, changed, check)
            if result['command'].get('rc', 0) != 0:
                result['failed'] = True
                result['msg'] = '%s exited %d: %s' % (params['command'][0], result['command']['rc'],
                                                      ' '.join(result['command']['stderr_lines'][-3:]) or 'no message')
                result['changed'] = bool(changed)
                return result
        changed += _converge_all(params.get('files_after') or [], check, result)
    except ConvergeError as exc:
        result.update(failed=True, msg=str(exc))
        changed = [entry for entry in result['files'] if entry['changed']]
    except OSError as exc:
        result.update(failed=True, msg='%s: %s' % (exc.filename or 'pod_converge', exc.strerror))
        changed = [entry for entry in result['files'] if entry['changed']]
    result['changed'] = bool(changed)
    return result
