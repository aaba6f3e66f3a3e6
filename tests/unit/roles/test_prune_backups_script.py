# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/pod_backup/files/cloudpods-prune-backups.py on a temporary backup root: the marker it writes,
what it prunes and what it refuses. The clock is passed in (``now``), never slept on."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
SCRIPT = os.path.join(ROOT, 'roles', 'pod_backup', 'files', 'cloudpods-prune-backups.py')
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 30, 4, 30, 0, tzinfo=UTC)


def load_script():
    spec = importlib.util.spec_from_file_location('cloudpods_prune_backups', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prune_script = load_script()


@pytest.fixture
def root(tmp_path):
    path = tmp_path / 'backup'
    path.mkdir()
    return str(path)


def pod_dir(root, name, archives=('vzdump-lxc-101-2026_01_01-03_00_00.tar.zst',)):
    directory = os.path.join(root, name)
    os.makedirs(directory)
    for archive in archives:
        with open(os.path.join(directory, archive), 'w') as handle:
            handle.write('archive')
    return directory


def write_marker(directory, **fields):
    data = dict(pod=os.path.basename(directory), vmid=101, terminated_at='2026-10-01T00:00:00Z', keep_days=30)
    data.update(fields)
    with open(os.path.join(directory, prune_script.MARKER), 'w') as handle:
        handle.write(json.dumps(data))


def read_marker(directory):
    with open(os.path.join(directory, prune_script.MARKER)) as handle:
        return json.load(handle)


def test_mark_writes_the_marker_once(root):
    directory = pod_dir(root, 'pod-a')
    first = prune_script.mark(root, 'pod-a', 101, 30, now=NOW)
    assert first['changed'] is True
    assert read_marker(directory) == dict(pod='pod-a', vmid=101, terminated_at='2026-11-30T04:30:00Z', keep_days=30)
    again = prune_script.mark(root, 'pod-a', 101, 7, now=NOW + datetime.timedelta(days=3))
    assert again['changed'] is False and again['reason'] == 'already marked'
    assert read_marker(directory)['terminated_at'] == '2026-11-30T04:30:00Z'
    assert read_marker(directory)['keep_days'] == 30
    assert sorted(os.listdir(directory)) == ['.terminated', 'vzdump-lxc-101-2026_01_01-03_00_00.tar.zst']


def test_mark_in_a_dry_run_writes_nothing(root):
    directory = pod_dir(root, 'pod-a')
    answer = prune_script.mark(root, 'pod-a', None, 30, dry_run=True, now=NOW)
    assert answer['changed'] is True and answer['marker']['vmid'] is None
    assert not os.path.exists(os.path.join(directory, prune_script.MARKER))


def test_mark_without_a_directory_does_nothing(root):
    answer = prune_script.mark(root, 'pod-a', 101, 30, now=NOW)
    assert answer['changed'] is False and 'no backup directory' in answer['reason']
    assert os.listdir(root) == []


def test_mark_replaces_a_malformed_marker(root):
    directory = pod_dir(root, 'pod-a')
    write_marker(directory, keep_days='thirty')
    answer = prune_script.mark(root, 'pod-a', 101, 30, now=NOW)
    assert answer['changed'] is True and 'malformed' in answer['reason']
    assert read_marker(directory)['keep_days'] == 30


@pytest.mark.parametrize('pod, vmid, keep_days', [
    ('../etc', 101, 30), ('.hidden', 101, 30), ('a/b', 101, 30), ('pod-a', 0, 30), ('pod-a', 101, -1),
    ('pod-a', True, 30), ('pod-a', 101, '30')])
def test_mark_refuses_bad_input(root, pod, vmid, keep_days):
    pod_dir(root, 'pod-a')
    with pytest.raises(ValueError):
        prune_script.mark(root, pod, vmid, keep_days, now=NOW)
    assert not os.path.exists(os.path.join(root, 'pod-a', prune_script.MARKER))


def test_mark_refuses_a_symlinked_directory(root, tmp_path):
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    os.symlink(str(elsewhere), os.path.join(root, 'pod-a'))
    with pytest.raises(ValueError, match='symbolic link'):
        prune_script.mark(root, 'pod-a', 101, 30, now=NOW)
    assert os.listdir(str(elsewhere)) == []


def test_prune_removes_only_what_is_due(root):
    old = pod_dir(root, 'old-pod')
    write_marker(old, terminated_at='2026-10-31T04:30:00Z', keep_days=30)   # due exactly now
    young = pod_dir(root, 'young-pod')
    write_marker(young, terminated_at='2026-10-31T04:30:01Z', keep_days=30)  # due in a second
    zero = pod_dir(root, 'zero-pod')
    write_marker(zero, terminated_at='2026-11-30T04:30:00Z', keep_days=0)
    live = pod_dir(root, 'live-pod')

    answer = prune_script.prune(root, now=NOW)
    assert [entry['pod'] for entry in answer['pruned']] == ['old-pod', 'zero-pod']
    assert answer['pruned'][0] == dict(pod='old-pod', path=old, vmid=101, terminated_at='2026-10-31T04:30:00Z',
                                       keep_days=30, due='2026-11-30T04:30:00Z')
    assert [entry['pod'] for entry in answer['kept']] == ['young-pod']
    assert answer['refused'] == [] and answer['changed'] is True
    assert sorted(os.listdir(root)) == ['live-pod', 'young-pod']
    assert os.listdir(live) == ['vzdump-lxc-101-2026_01_01-03_00_00.tar.zst']

    again = prune_script.prune(root, now=NOW)
    assert again['changed'] is False and again['pruned'] == []


def test_prune_in_a_dry_run_removes_nothing(root):
    old = pod_dir(root, 'old-pod')
    write_marker(old)
    answer = prune_script.prune(root, dry_run=True, now=NOW)
    assert [entry['pod'] for entry in answer['pruned']] == ['old-pod'] and answer['changed'] is True
    assert os.path.isdir(old) and os.path.exists(os.path.join(old, prune_script.MARKER))


@pytest.mark.parametrize('content', [
    '', 'not json', '[]', '"old"',
    json.dumps(dict(pod='other-pod', vmid=101, terminated_at='2026-01-01T00:00:00Z', keep_days=0)),
    json.dumps(dict(pod='old-pod', vmid='101', terminated_at='2026-01-01T00:00:00Z', keep_days=0)),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01 00:00:00', keep_days=0)),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01T00:00:00+01:00', keep_days=0)),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01T00:00:00Z', keep_days=-1)),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01T00:00:00Z', keep_days=1.5)),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01T00:00:00Z', keep_days=False)),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01T00:00:00Z')),
    json.dumps(dict(pod='old-pod', vmid=101, terminated_at='2026-01-01T00:00:00Z', keep_days=0, pad='x' * 5000)),
])
def test_prune_refuses_a_malformed_marker(root, content):
    old = pod_dir(root, 'old-pod')
    with open(os.path.join(old, prune_script.MARKER), 'w') as handle:
        handle.write(content)
    answer = prune_script.prune(root, now=NOW)
    assert answer['pruned'] == [] and answer['changed'] is False
    assert [entry['path'] for entry in answer['refused']] == [old]
    assert answer['refused'][0]['reason'].startswith('malformed marker: ')
    assert os.path.isdir(old)


def test_prune_never_follows_symbolic_links(root, tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'precious').write_text(u'keep me')
    write_marker(str(outside), pod='escape')
    os.symlink(str(outside), os.path.join(root, 'escape'))       # a pod directory that is a link out of the root

    linked_marker = pod_dir(root, 'linked-marker')                # a marker that is a link to a valid one
    os.symlink(os.path.join(str(outside), prune_script.MARKER), os.path.join(linked_marker, prune_script.MARKER))

    inner = pod_dir(root, 'old-pod')                              # a due pod whose directory holds a link out
    write_marker(inner)
    os.symlink(str(outside), os.path.join(inner, 'link-out'))

    answer = prune_script.prune(root, now=NOW)
    assert sorted((entry['path'], entry['reason'].split(':')[0]) for entry in answer['refused']) == [
        (os.path.join(root, 'escape'), 'a symbolic link'), (linked_marker, 'malformed marker')]
    assert [entry['pod'] for entry in answer['pruned']] == ['old-pod']
    assert sorted(os.listdir(root)) == ['escape', 'linked-marker']
    assert sorted(os.listdir(str(outside))) == ['.terminated', 'precious']


def test_prune_finishes_a_removal_a_killed_run_left(root):
    leftover = pod_dir(root, prune_script.PRUNING_PREFIX + 'old-pod')
    hidden = pod_dir(root, '.something-else')
    answer = prune_script.prune(root, now=NOW)
    assert answer['changed'] is True
    assert not os.path.exists(leftover) and os.path.isdir(hidden)


def test_the_command_line_prints_json_and_logs(root):
    old = pod_dir(root, 'old-pod')
    run = subprocess.run([sys.executable, SCRIPT, 'mark', '--root', root, '--pod', 'old-pod', '--vmid', '',
                          '--keep-days', '0'], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)['marker']['vmid'] is None
    assert 'marked' in run.stderr
    run = subprocess.run([sys.executable, SCRIPT, 'prune', '--root', root], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert [entry['path'] for entry in json.loads(run.stdout)['pruned']] == [old]
    assert '%s: removed' % old in run.stderr
    assert os.listdir(root) == []


def test_the_command_line_fails_clearly_without_a_root(tmp_path):
    run = subprocess.run([sys.executable, SCRIPT, 'prune', '--root', str(tmp_path / 'missing')],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1 and run.stdout == ''
    assert 'is not a directory' in run.stderr
