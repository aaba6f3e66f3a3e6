# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mpanel.cloudpods.deprovision against the lab: final backup, then zone, cron entry and container gone."""

import os
import re

from podplays import (  # pylint: disable=import-error
    assert_no_secret, assert_ok, changed_count, new_pod, pods_named, remove_pod, run_pod_playbook)


def provision(lab_env, dirs, pdns, request, domain=True):
    name = new_pod('dep')
    values = dict(pod=name, plan='CLOUD_POD_STARTER', customer_email=name + '@customer.test')
    if domain:
        values['domain'] = name + '.test'
    assert_ok(run_pod_playbook('provision', lab_env, dirs, **values))
    request.addfinalizer(lambda: remove_pod(lab_env, name))
    request.addfinalizer(lambda: pdns.delete_zone(name + '.test'))
    return values


def test_deprovision_backs_up_then_removes_zone_cron_and_container(lab_env, lab_control, pdns, dirs, request):
    order = provision(lab_env, dirs, pdns, request)
    name, domain = order['pod'], order['domain']
    [vmid] = pods_named(lab_control, name)
    # an older backup in the pod's directory must survive too
    older = os.path.join(dirs.backup_dir(name), 'vzdump-lxc-%d-2026_01_01-03_30_00.tar.zst' % vmid)
    with open(older, 'w') as handle:
        handle.write('old')

    run = assert_ok(run_pod_playbook('deprovision', lab_env, dirs, pod=name))
    assert pods_named(lab_control, name) == []
    assert pdns.zone(domain) is None
    assert not os.path.exists(dirs.cron_file(name))
    archives = sorted(f for f in os.listdir(dirs.backup_dir(name)) if f.endswith('.tar.zst'))
    assert len(archives) == 2 and os.path.basename(older) in archives
    assert all(re.match(r'vzdump-lxc-%d-\d{4}_' % vmid, f) for f in archives)
    assert_no_secret(lab_env, run.stdout, run.stderr)

    again = assert_ok(run_pod_playbook('deprovision', lab_env, dirs, pod=name))
    assert changed_count(again) == 0, again.stdout[-4000:]
    assert sorted(f for f in os.listdir(dirs.backup_dir(name)) if f.endswith('.tar.zst')) == archives


def test_deprovision_keeps_a_zone_this_pod_does_not_own(lab_env, lab_control, pdns, dirs, request):
    order = provision(lab_env, dirs, pdns, request, domain=False)
    name = order['pod']
    zone = name + '.test'
    pdns.create_zone(zone, account='another-pod')
    run = assert_ok(run_pod_playbook('deprovision', lab_env, dirs, pod=name, domain=zone))
    assert pods_named(lab_control, name) == []
    assert pdns.zone(zone)['account'] == 'another-pod'
    assert 'kept' in run.stdout


def test_deprovision_removes_nothing_when_the_final_backup_fails(lab_env, lab_control, pdns, dirs, request):
    order = provision(lab_env, dirs, pdns, request)
    name, domain = order['pod'], order['domain']
    run = run_pod_playbook('deprovision', lab_env, dirs, pod=name, cloudpods_vzdump='/bin/false')
    assert run.rc != 0
    assert len(pods_named(lab_control, name)) == 1
    assert pdns.zone(domain) is not None
    assert os.path.exists(dirs.cron_file(name))
