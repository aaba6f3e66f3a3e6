# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulator restores a CT archive as PVE 8's create_vm restore branch does (``pct restore``).

Memory backend: what the API shows (config merge, MAC, locks, refusals). With real containers the
files come back too: tests/integration/test_real_backups.py.
"""

import os
import tempfile

import pytest

from test_pvesim_api import UPID_RE, Pve, expect_error


@pytest.fixture
def pve(lab_env, lab_control):
    lab_control.reset()
    lab_control.config(default_task_duration=0.05, dhcp_delay=0.1)
    yield Pve(lab_env)
    lab_control.reset()


@pytest.fixture
def root(lab_env, lab_control, pve):
    lab_control.add_token('root@pam!lab', 'root-secret', privs=['*'])
    return Pve(lab_env, 'root@pam!lab', 'root-secret')


@pytest.fixture
def dumpdir():
    with tempfile.TemporaryDirectory(prefix='restore-') as directory:
        yield directory


def backup(root, vmid, dumpdir):
    root.ok(root.data('POST', '/nodes/{node}/vzdump', vmid=vmid, dumpdir=dumpdir, compress='zstd'))
    names = sorted(name for name in os.listdir(dumpdir) if name.endswith('.tar.zst'))
    return os.path.join(dumpdir, names[-1])


def restore(pve, vmid, archive, **params):
    params.setdefault('storage', 'local-lvm')
    return pve.call('POST', '/nodes/{node}/lxc', vmid=vmid, ostemplate=archive, restore=1, **params)


def test_restore_over_an_existing_ct_takes_the_archives_config_and_mac(root, dumpdir):
    root.cloned(101, description='Cloud Pod shop\ncloudpods-domain: shop.example\n')
    before = root.config(101)
    archive = backup(root, 101, dumpdir)
    root.data('PUT', '/nodes/{node}/lxc/101/config', memory=2048, description='changed')
    upid = restore(root, 101, archive, force=1).json()['data']
    assert UPID_RE.match(upid).group(5) == 'vzrestore'
    root.ok(upid)
    after = root.config(101)
    assert after['memory'] == before['memory'] and after['net0'] == before['net0']
    # a new volume of the archive's size on the given storage (the old one is gone)
    assert after['rootfs'].startswith('local-lvm:vm-101-disk-1,') and after['rootfs'].endswith('size=%s' % before['rootfs'].rsplit('=', 1)[1])
    assert after['description'] == 'Cloud Pod shop\ncloudpods-domain: shop.example\n'
    assert 'lock' not in after
    assert root.get('/nodes/{node}/lxc/101/status/current')['status'] == 'stopped'


def test_restore_refusals_are_pves(lab_control, root, pve, dumpdir):
    root.cloned(101)
    archive = backup(root, 101, dumpdir)
    expect_error(restore(root, 101, archive), 500, "CT 101 already exists on node 'pve'")
    root.running(101)
    expect_error(restore(root, 101, archive, force=1), 500, "can't overwrite running container")
    root.ok(root.data('POST', '/nodes/{node}/lxc/101/status/stop'))
    root.data('PUT', '/nodes/{node}/lxc/101/config', protection=1)
    expect_error(restore(root, 101, archive, force=1), 500, 'unable to restore CT 101 - protection mode enabled')
    root.data('PUT', '/nodes/{node}/lxc/101/config', protection=0)
    # A file path is for root only; the seed's API token has no way in.
    expect_error(restore(pve, 101, archive, force=1), 500, 'Only root can pass arbitrary filesystem paths.')
    expect_error(restore(root, 101, archive + '.missing', force=1), 500,
                 "unable to restore CT 101 - archive '%s.missing' does not exist" % archive)
    body = expect_error(pve.call('POST', '/nodes/{node}/lxc', vmid=101, ostemplate=archive, unique=1), 400,
                        'Parameter verification failed.')
    assert body['errors'] == {'restore': "missing property - 'unique' requires this property"}
    # pct restore's default storage is 'local', which holds no container directories here (as on most nodes)
    body = expect_error(restore(root, 101, archive, force=1, storage='local'), 400, 'Parameter verification failed.')
    assert body['errors'] == {'storage': "storage 'local' does not support container directories"}
    assert root.config(101).get('lock') is None  # nothing above touched it


def test_unique_gives_a_new_mac_and_a_missing_ct_is_created(root, dumpdir):
    root.cloned(101)
    net0 = root.config(101)['net0']
    archive = backup(root, 101, dumpdir)
    root.ok(restore(root, 101, archive, force=1, unique=1).json()['data'])
    assert root.config(101)['net0'] != net0
    root.ok(root.data('DELETE', '/nodes/{node}/lxc/101'))
    response = restore(root, 101, archive)
    assert response.status_code == 200, response.reason
    root.ok(response.json()['data'])
    assert root.config(101)['hostname'] == 'pod-101'


def test_a_file_that_is_no_ct_archive_is_refused_before_anything_changes(root, dumpdir):
    root.cloned(101)
    before = root.config(101)
    archive = os.path.join(dumpdir, 'vzdump-lxc-101-2026_01_01-00_00_00.tar.zst')
    with open(archive, 'wb') as handle:
        handle.write(b'not an archive')
    response = restore(root, 101, archive, force=1)
    assert response.status_code == 500
    assert response.reason.startswith("unable to restore CT 101 - unable to read the configuration of '%s'" % archive)
    assert root.config(101) == before


def test_a_failed_restore_task_leaves_no_ct_as_pves_does(lab_control, root, dumpdir):
    root.cloned(101)
    archive = backup(root, 101, dumpdir)
    lab_control.fault(task_fail={'type': 'vzrestore', 'message': 'command failed'})
    status = root.wait(restore(root, 101, archive, force=1).json()['data'])
    assert status['exitstatus'] == 'unable to restore CT 101 - command failed'
    assert root.call('GET', '/nodes/{node}/lxc/101/config').status_code == 500
    # the way back: the same archive onto the free VMID, no force needed
    root.ok(restore(root, 101, archive).json()['data'])
    assert root.config(101)['hostname'] == 'pod-101'
