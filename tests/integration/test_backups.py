# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.backups, backup_now and restore against the lab (simulator): the archives a pod
has, one more now, and one put back after a safety backup; refusals change nothing."""

import os
import re
import subprocess

import pytest

from podplays import (  # pylint: disable=import-error
    VZDUMP, HostDirs, assert_ok, container, new_pod, pods_named, remove_pod, run_pod_playbook, start_pod_playbook)
from test_provision_killed import kill_tree  # pylint: disable=import-error

ARCHIVE_RE = re.compile(r'vzdump-lxc-(\d+)-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.tar\.zst\Z')


@pytest.fixture(scope='module')
def module_dirs(tmp_path_factory):
    return HostDirs(tmp_path_factory.mktemp('proxmox-host'))


@pytest.fixture
def dirs(module_dirs):
    return module_dirs


@pytest.fixture(scope='module')
def pod(lab_env, pdns, module_dirs):
    """One pod for the module's tests, which run in order and leave it converged and running."""
    dirs = module_dirs
    name = new_pod('bak')
    values = dict(pod=name, plan='CLOUD_POD_STARTER', domain=name + '.test', customer_email=name + '@customer.test')
    assert_ok(run_pod_playbook('provision', lab_env, dirs, **values))
    yield values
    remove_pod(lab_env, name)
    pdns.delete_zone(values['domain'])


def stats(run, key):
    data = run.report.get('global_custom_stats') or {}
    assert key in data, run.stdout[-3000:]
    return data[key]


def archives(dirs, name):
    directory = dirs.backup_dir(name)
    return sorted(f for f in os.listdir(directory) if ARCHIVE_RE.match(f)) if os.path.isdir(directory) else []


def scheduled_backup(lab_env, dirs, name, vmid):
    """What the cron job does: vzdump into the pod's directory, no notes."""
    subprocess.run([VZDUMP, str(vmid), '--dumpdir', dirs.backup_dir(name), '--compress', 'zstd'],
                   check=True, env=dict(os.environ, **lab_env), capture_output=True)


def test_list_and_backup_now_tell_manual_from_scheduled(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    [vmid] = pods_named(lab_control, name)
    assert stats(assert_ok(run_pod_playbook('backups', lab_env, dirs, pod=name)), 'backups') == []
    scheduled_backup(lab_env, dirs, name, vmid)
    [scheduled] = archives(dirs, name)

    run = assert_ok(run_pod_playbook('backup_now', lab_env, dirs, pod=name))
    new = stats(run, 'backup')
    assert new['kind'] == 'manual' and new['name'] != scheduled and ARCHIVE_RE.match(new['name'])
    assert new['volid'] == os.path.join(dirs.backup_dir(name), new['name'])
    assert sorted(archives(dirs, name)) == sorted([scheduled, new['name']])

    listed = stats(assert_ok(run_pod_playbook('backups', lab_env, dirs, pod=name)), 'backups')
    assert {entry['name']: entry['kind'] for entry in listed} == {scheduled: 'scheduled', new['name']: 'manual'}
    for entry in listed:
        assert entry['size'] == os.path.getsize(entry['volid']) > 0
        assert re.fullmatch(r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z', entry['ctime'])


def test_backup_now_in_check_mode_writes_nothing(lab_env, dirs, pod):
    before = archives(dirs, pod['pod'])
    run = assert_ok(run_pod_playbook('backup_now', lab_env, dirs, pod=pod['pod'], check=True))
    assert archives(dirs, pod['pod']) == before
    assert stats(run, 'backup') == {}


def test_restore_takes_a_safety_backup_then_puts_the_archive_back(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    [vmid] = pods_named(lab_control, name)
    before = container(lab_control, name)
    chosen = stats(assert_ok(run_pod_playbook('backup_now', lab_env, dirs, pod=name)), 'backup')
    archives_before = archives(dirs, name)
    # a hand edit after the backup (the pod record lines stay: without them the container is no pod of ours)
    lab_control.set_container(vmid, description=container(lab_control, name)['config']['description'] + 'changed after the backup\n')

    run = assert_ok(run_pod_playbook('restore', lab_env, dirs, pod=name, archive=chosen['name']))
    restored = stats(run, 'restored')
    assert restored['archive'] == chosen['volid']
    assert os.path.exists(restored['safety']) and restored['safety'] != chosen['volid']
    assert os.path.basename(restored['safety']) not in archives_before
    with open(restored['safety'] + '.notes') as handle:
        assert handle.read().startswith('cloudpods: manual (safety backup before restoring %s)' % chosen['name'])
    after = container(lab_control, name)
    assert pods_named(lab_control, name) == [vmid]
    assert after['status'] == 'running'
    assert after['config']['description'] == before['config']['description']
    assert after['config']['net0'] == before['config']['net0'] and after['ip'] == before['ip']
    assert not os.path.exists(os.path.join(dirs.backup_dir(name), '.restore'))
    assert len(archives(dirs, name)) == len(archives_before) + 1


def test_restore_refuses_what_is_not_one_of_the_pods_archives(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    before, listed = container(lab_control, name), archives(dirs, name)
    not_an_archive = os.path.join(dirs.backup_dir(name), 'vzdump-lxc-101-2026_01_01-00_00_00.tar.zst')
    with open(not_an_archive, 'w') as handle:
        handle.write('not a vzdump archive')
    try:
        for archive in ('vzdump-lxc-101-2026_01_02-00_00_00.tar.zst',   # not among the pod's archives
                        '../other-pod/vzdump-lxc-101-2026_01_01-00_00_00.tar.zst', '/etc/passwd', 'not-an-archive',
                        os.path.basename(not_an_archive)):                # no CT configuration in it
            run = run_pod_playbook('restore', lab_env, dirs, pod=name, archive=archive)
            assert run.rc != 0, archive
            assert container(lab_control, name) == before
            assert archives(dirs, name) == sorted(listed + [os.path.basename(not_an_archive)])
    finally:
        os.remove(not_an_archive)


def test_restore_refuses_an_archive_of_another_pod(lab_env, lab_control, dirs, pod, request):
    other = new_pod('bako')
    assert_ok(run_pod_playbook('provision', lab_env, dirs, pod=other, plan='CLOUD_POD_STARTER',
                               customer_email=other + '@customer.test'))
    request.addfinalizer(lambda: remove_pod(lab_env, other))
    theirs = stats(assert_ok(run_pod_playbook('backup_now', lab_env, dirs, pod=other)), 'backup')
    name = pod['pod']
    before, listed = container(lab_control, name), archives(dirs, name)
    for archive in (theirs['volid'], theirs['name']):
        run = run_pod_playbook('restore', lab_env, dirs, pod=name, archive=archive)
        assert run.rc != 0
        assert "nothing was changed" in run.stdout
    assert container(lab_control, name) == before
    assert archives(dirs, name) == listed


def test_a_restore_killed_halfway_is_finished_by_the_next_run(lab_env, lab_control, dirs, pod):
    """SIGKILL on ansible-playbook while PVE's restore task runs (held by the simulator): the task goes on
    without it; the CT is the old pod or the restored one, the safety archive is there, and the re-run
    (finding the journal) takes no second safety backup and ends with exactly one, running, restored pod."""
    name = pod['pod']
    [vmid] = pods_named(lab_control, name)
    chosen = stats(assert_ok(run_pod_playbook('backup_now', lab_env, dirs, pod=name)), 'backup')
    listed = archives(dirs, name)
    # a hand edit after the backup (the pod record lines stay: without them the container is no pod of ours)
    lab_control.set_container(vmid, description=container(lab_control, name)['config']['description'] + 'changed after the backup\n')
    lab_control.hold('vzrestore')
    handle = start_pod_playbook('restore', lab_env, dirs, pod=name, archive=chosen['name'])
    try:
        lab_control.wait_held('vzrestore', timeout=180)
        assert handle.process.poll() is None, 'the first run ended before the kill'
        kill_tree(handle.pid)
        assert handle.process.wait(timeout=60) == -9
    finally:
        lab_control.release()
    handle.wait()
    journal = os.path.join(dirs.backup_dir(name), '.restore')
    assert os.path.exists(journal)
    [safety] = [f for f in archives(dirs, name) if f not in listed]
    assert pods_named(lab_control, name) == [vmid]  # one container, never none

    run = assert_ok(run_pod_playbook('restore', lab_env, dirs, pod=name, archive=chosen['name']))
    assert stats(run, 'restored')['safety'] == os.path.join(dirs.backup_dir(name), safety)
    assert archives(dirs, name) == sorted(listed + [safety])  # no second safety backup
    ct = container(lab_control, name)
    assert pods_named(lab_control, name) == [vmid] and ct['status'] == 'running'
    assert 'changed after the backup' not in ct['config']['description']
    assert not os.path.exists(journal)


def test_restore_in_check_mode_changes_nothing(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    chosen = archives(dirs, name)[0]
    before, listed = container(lab_control, name), archives(dirs, name)
    assert_ok(run_pod_playbook('restore', lab_env, dirs, pod=name, archive=chosen, check=True, diff=True))
    assert container(lab_control, name) == before
    assert archives(dirs, name) == listed
    assert not os.path.exists(os.path.join(dirs.backup_dir(name), '.restore'))


def test_reinstall_in_check_mode_changes_nothing(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    before, listed = container(lab_control, name), archives(dirs, name)
    writes = [r for r in lab_control.requests() if r['method'] != 'GET']
    run = assert_ok(run_pod_playbook('reinstall', lab_env, dirs, pod=name, check=True, diff=True))
    assert container(lab_control, name) == before
    assert archives(dirs, name) == listed
    assert [r for r in lab_control.requests() if r['method'] != 'GET'] == writes, 'check mode wrote to Proxmox'
    assert not os.path.exists(os.path.join(dirs.backup_dir(name), '.reinstall'))
    assert 'Stop and destroy the old container' in run.stdout  # the run went through, not stopped early


def test_reinstall_keeps_vmid_mac_address_and_domain(lab_env, lab_control, pdns, dirs, pod):
    name, domain = pod['pod'], pod['domain']
    [vmid] = pods_named(lab_control, name)
    before = container(lab_control, name)
    clones = len([r for r in lab_control.requests() if r['path'].endswith('/clone')])
    run = assert_ok(run_pod_playbook('reinstall', lab_env, dirs, pod=name))
    assert len([r for r in lab_control.requests() if r['path'].endswith('/clone')]) == clones + 1  # made again
    after = container(lab_control, name)
    assert pods_named(lab_control, name) == [vmid] and after['status'] == 'running'
    assert after['config']['net0'] == before['config']['net0'] and after['ip'] == before['ip']
    assert pdns.answers(domain, 'A') == [after['ip']]
    backup = stats(run, 'reinstalled')['backup']
    assert os.path.basename(backup) in archives(dirs, name)
    with open(backup + '.notes') as handle:
        assert handle.read().startswith('cloudpods: manual (backup before reinstall)')
    assert not os.path.exists(os.path.join(dirs.backup_dir(name), '.reinstall'))


def test_reinstall_killed_after_the_old_container_went_is_finished_by_the_next_run(lab_env, lab_control, dirs, pod):
    name = pod['pod']
    [vmid] = pods_named(lab_control, name)
    before, listed = container(lab_control, name), archives(dirs, name)
    lab_control.hold('vzclone')
    handle = start_pod_playbook('reinstall', lab_env, dirs, pod=name)
    try:
        lab_control.wait_held('vzclone', timeout=180)
        kill_tree(handle.pid)
        assert handle.process.wait(timeout=60) == -9
    finally:
        lab_control.release()
    handle.wait()
    [backup] = [f for f in archives(dirs, name) if f not in listed]
    assert os.path.exists(os.path.join(dirs.backup_dir(name), '.reinstall'))
    assert_ok(run_pod_playbook('reinstall', lab_env, dirs, pod=name))
    after = container(lab_control, name)
    assert pods_named(lab_control, name) == [vmid] and after['status'] == 'running'
    assert after['config']['net0'] == before['config']['net0']
    assert archives(dirs, name) == sorted(listed + [backup])  # no second backup of a half-made pod
