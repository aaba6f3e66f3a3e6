# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Retention after terminate, against the lab (simulator): deprovision marks the pod's backup directory and
installs the daily prune job; the job (run as cron would run it) and prune_backups.yml remove a directory
once its keep_days have passed, and nothing else. Time passes by rewriting the marker's terminated_at."""

import datetime
import json
import os
import re
import shlex
import subprocess

from podplays import (  # pylint: disable=import-error
    assert_ok, changed_count, new_pod, pods_named, remove_pod, run_pod_playbook)

MARKER = '.terminated'
ARCHIVE = 'vzdump-lxc-101-2026_01_01-03_30_00.tar.zst'
CRON_LINE = re.compile(r'(?P<schedule>(\S+ ){5})root (?P<command>.+)\Z')


def provision(lab_env, dirs, pdns, request, name=None):
    name = name or new_pod('prn')
    values = dict(pod=name, plan='CLOUD_POD_STARTER', domain=name + '.test', customer_email=name + '@customer.test')
    assert_ok(run_pod_playbook('provision', lab_env, dirs, **values))
    request.addfinalizer(lambda: remove_pod(lab_env, name))
    request.addfinalizer(lambda: pdns.delete_zone(name + '.test'))
    return name


def marker_path(dirs, name):
    return os.path.join(dirs.backup_dir(name), MARKER)


def read_marker(dirs, name):
    with open(marker_path(dirs, name)) as handle:
        return json.load(handle)


def age_marker(dirs, name, days):
    """The marker as if deprovision had run ``days`` days ago (and keep_days unchanged)."""
    data = read_marker(dirs, name)
    then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
    data['terminated_at'] = then.strftime('%Y-%m-%dT%H:%M:%SZ')
    with open(marker_path(dirs, name), 'w') as handle:
        json.dump(data, handle)


def stale_pod_dir(dirs, name, marker=None, keep_days=1, days_ago=10):
    """A terminated pod's directory made by hand, with one archive and (unless ``marker`` is given as text) a due
    marker."""
    directory = dirs.backup_dir(name)
    os.makedirs(directory)
    with open(os.path.join(directory, ARCHIVE), 'w') as handle:
        handle.write('archive')
    if marker is None:
        then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago)
        marker = json.dumps(dict(pod=name, vmid=101, terminated_at=then.strftime('%Y-%m-%dT%H:%M:%SZ'),
                                 keep_days=keep_days))
    with open(os.path.join(directory, MARKER), 'w') as handle:
        handle.write(marker)
    return directory


def prune_cron(dirs):
    """The prune job's cron file: its environment lines and its one job line, parsed."""
    with open(os.path.join(dirs.cron_dir, 'cloudpods-prune-backups')) as handle:
        lines = [line for line in handle.read().splitlines() if line and not line.startswith('#')]
    env = dict(line.split('=', 1) for line in lines if re.match(r'[A-Z]+=', line))
    [job] = [CRON_LINE.match(line) for line in lines if not re.match(r'[A-Z]+=', line)]
    return env, job.group('schedule').split(), job.group('command')


def run_as_cron(dirs):
    """The prune job's command, as cron runs it: its SHELL with the file's PATH, nothing else inherited."""
    env, dummy, command = prune_cron(dirs)
    return subprocess.run([env['SHELL'], '-c', command], env=dict(PATH=env['PATH']), capture_output=True,
                          text=True, check=False, timeout=60)


def test_terminate_marks_and_the_daily_job_prunes_after_keep_days(lab_env, lab_control, pdns, dirs, request):
    name = provision(lab_env, dirs, pdns, request)
    [vmid] = pods_named(lab_control, name)
    assert not os.path.exists(marker_path(dirs, name))

    assert_ok(run_pod_playbook('deprovision', lab_env, dirs, check=True, pod=name,
                               cloudpods_terminated_backup_keep_days=5))
    assert not os.path.exists(marker_path(dirs, name))
    assert not os.path.exists(os.path.join(dirs.cron_dir, 'cloudpods-prune-backups'))

    assert_ok(run_pod_playbook('deprovision', lab_env, dirs, pod=name, cloudpods_terminated_backup_keep_days=5))
    assert pods_named(lab_control, name) == []
    marker = read_marker(dirs, name)
    assert sorted(marker) == ['keep_days', 'pod', 'terminated_at', 'vmid']
    assert marker['pod'] == name and marker['vmid'] == vmid and marker['keep_days'] == 5
    terminated_at = datetime.datetime.strptime(marker['terminated_at'], '%Y-%m-%dT%H:%M:%SZ')
    assert terminated_at <= datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    # a second terminate changes nothing and does not move terminated_at, even with another setting
    again = assert_ok(run_pod_playbook('deprovision', lab_env, dirs, pod=name, cloudpods_terminated_backup_keep_days=9))
    assert changed_count(again) == 0, again.stdout[-4000:]
    assert read_marker(dirs, name) == marker

    # the daily job: installed by terminate, run as cron runs it
    env, schedule, command = prune_cron(dirs)
    assert env['SHELL'] == '/bin/sh' and schedule == ['30', '4', '*', '*', '*']
    script = os.path.join(dirs.lib_dir, 'cloudpods-prune-backups.py')
    assert shlex.split(command.replace('>/dev/null', ''))[1:] == [script, 'prune', '--root', dirs.backup_root,
                                                                  '--syslog']
    live = stale_pod_dir(dirs, 'live-' + name, marker='')
    os.remove(os.path.join(live, MARKER))  # a live pod's directory has no marker

    age_marker(dirs, name, days=4)
    kept = run_as_cron(dirs)
    assert kept.returncode == 0, kept.stderr
    assert os.path.exists(marker_path(dirs, name)) and len(os.listdir(dirs.backup_dir(name))) > 1

    age_marker(dirs, name, days=5)
    pruned = run_as_cron(dirs)
    assert pruned.returncode == 0, pruned.stderr
    assert not os.path.exists(dirs.backup_dir(name))
    assert '%s: removed (terminated ' % dirs.backup_dir(name) in pruned.stderr
    assert os.listdir(live) == [ARCHIVE]


def test_a_pod_ordered_again_keeps_its_directory(lab_env, pdns, dirs, request):
    name = provision(lab_env, dirs, pdns, request)
    assert_ok(run_pod_playbook('deprovision', lab_env, dirs, pod=name, cloudpods_terminated_backup_keep_days=0))
    assert read_marker(dirs, name)['keep_days'] == 0
    archives = sorted(os.listdir(dirs.backup_dir(name)))

    provision(lab_env, dirs, pdns, request, name=name)
    assert not os.path.exists(marker_path(dirs, name))
    assert run_as_cron(dirs).returncode == 0
    assert sorted(os.listdir(dirs.backup_dir(name))) == sorted(f for f in archives if f != MARKER)


def test_prune_backups_playbook_removes_only_what_is_due(lab_env, dirs, tmp_path):
    due = stale_pod_dir(dirs, 'due-pod', keep_days=3, days_ago=3)
    young = stale_pod_dir(dirs, 'young-pod', keep_days=30, days_ago=3)
    malformed = stale_pod_dir(dirs, 'malformed-pod', marker='{"pod": "malformed-pod", "keep_days": "0"}')
    live = stale_pod_dir(dirs, 'live-pod')
    os.remove(os.path.join(live, MARKER))
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'precious').write_text(u'kept')
    (outside / MARKER).write_text(json.dumps(dict(pod='escape', vmid=1, terminated_at='2020-01-01T00:00:00Z',
                                                  keep_days=0)))
    escape = os.path.join(dirs.backup_root, 'escape')
    os.symlink(str(outside), escape)
    before = sorted(os.listdir(dirs.backup_root))

    checked = assert_ok(run_pod_playbook('prune_backups', lab_env, dirs, check=True, diff=True))
    assert sorted(os.listdir(dirs.backup_root)) == before and os.path.isdir(due)
    stats = checked.report['global_custom_stats']
    assert [(entry['host'], entry['pod'], entry['path']) for entry in stats['pruned']] == [('localhost', 'due-pod', due)]
    assert changed_count(checked) >= 1
    assert '"removed": [' in checked.stdout and due in checked.stdout

    run = assert_ok(run_pod_playbook('prune_backups', lab_env, dirs))
    stats = run.report['global_custom_stats']
    assert [entry['path'] for entry in stats['pruned']] == [due]
    assert stats['pruned'][0]['keep_days'] == 3 and stats['pruned'][0]['vmid'] == 101
    assert sorted((entry['path'], entry['reason'].split(':')[0]) for entry in stats['prune_refused']) == [
        (escape, 'a symbolic link'), (malformed, 'malformed marker')]
    assert sorted(os.listdir(dirs.backup_root)) == sorted(set(before) - {'due-pod'})
    for kept in (young, malformed, live):
        assert ARCHIVE in os.listdir(kept)
    assert sorted(os.listdir(str(outside))) == [MARKER, 'precious']

    again = assert_ok(run_pod_playbook('prune_backups', lab_env, dirs))
    assert changed_count(again) == 0 and again.report['global_custom_stats']['pruned'] == []


def test_deprovision_refuses_a_bad_keep_days_setting_before_anything(lab_env, dirs):
    for value in ('-1', 'thirty', '1.5'):
        run = run_pod_playbook('deprovision', lab_env, dirs, pod=new_pod('prn'), cloudpods_terminated_backup_keep_days=value)
        assert run.rc != 0
        assert 'cloudpods_terminated_backup_keep_days' in run.stdout
    run = run_pod_playbook('deprovision', dict(lab_env, CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS='soon'), dirs,
                           pod=new_pod('prn'))
    assert run.rc != 0 and 'CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS' in run.stdout and 'soon' in run.stdout
    assert dirs.files() == []
