# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every plan of playbooks/vars/plans.yml provisioned end to end: the container has the plan's
sizes and the cron entry its schedule and retention.

A private lab whose template has a 2G root disk (as the shared lab's since it has one too): Proxmox VE
only grows disks, so the template must not be larger than the smallest plan (Student, 2 GB).
"""

import os

import pytest
import yaml

from playbooks import PrivateLab  # pylint: disable=import-error
from podplays import ROOT, HostDirs, assert_ok, new_pod, pods_named, run_pod_playbook  # pylint: disable=import-error
from labcontrol import LabControl  # pylint: disable=import-error

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab

with open(os.path.join(ROOT, 'playbooks', 'vars', 'plans.yml')) as _handle:
    PLANS = yaml.safe_load(_handle)['cloudpods_plans']

# Each plan's cron schedule and vzdump --prune-backups, as the catalogue sells them, written out by
# hand (not rebuilt from plans.yml with the role's own joins).
CRON = {  # the plan's time, its window in minutes, its retention
    'CLOUD_POD_STUDENT': ('30 4 * * 0 120', 'keep-weekly=2'),
    'CLOUD_POD_STARTER': ('30 3 * * * 150', 'keep-daily=7'),
    'CLOUD_POD_PREMIUM': ('0 3 * * * 180', 'keep-daily=7,keep-weekly=4'),
    'CLOUD_POD_BUSINESS': ('30 2 * * * 180', 'keep-daily=14,keep-weekly=4,keep-monthly=3'),
}


def test_catalogue_has_the_seed_plans():
    assert list(PLANS) == ['CLOUD_POD_STUDENT', 'CLOUD_POD_STARTER', 'CLOUD_POD_PREMIUM', 'CLOUD_POD_BUSINESS']
    assert [(p['price'], p['vcpu'], p['memory_mb'], p['disk_gb'], p['storage_class']) for p in PLANS.values()] == [
        ('0.00', 1, 1024, 2, 'SSD'), ('1.49', 1, 1024, 30, 'NVMe'), ('2.49', 2, 2048, 75, 'NVMe'),
        ('3.99', 3, 4096, 100, 'NVMe')]
    kept = [sum(p['backups']['retention'].values()) for p in PLANS.values()]
    assert kept[0] == min(kept)  # the free tier keeps the fewest backups


def test_every_plan_provisions_with_its_sizes_backups_and_firewall(tmp_path):
    with PrivateLab() as env:
        control = LabControl.from_env(env)
        control.set_container(9000, rootfs='local-lvm:base-9000-disk-0,size=2G')
        dirs = HostDirs(tmp_path)
        for code, plan in PLANS.items():
            pod = new_pod(code.rsplit('_', 1)[-1].lower())
            # the Student pod's sshd on another port (the site setting): its rule follows
            ssh_port = 2222 if code == 'CLOUD_POD_STUDENT' else 22
            assert_ok(run_pod_playbook('provision', env, dirs, pod=pod, plan=code,
                                       customer_email=pod + '@customer.test', cloudpods_ssh_port=ssh_port))
            [vmid] = pods_named(control, pod)
            config = control.state()['containers'][str(vmid)]['config']
            assert (config['cores'], config['memory'], config['swap']) == \
                (plan['vcpu'], plan['memory_mb'], plan['swap_mb']), code
            assert 'size=%dG' % plan['disk_gb'] in config['rootfs'], code
            assert code.lower() in config['tags'].split(';')
            # every plan can upload over SFTP: its firewall opens the sshd port, then the web
            firewall = control.state()['containers'][str(vmid)]['firewall']
            assert firewall['options']['enable'] == 1 and firewall['options']['policy_in'] == 'DROP', code
            assert [(r['comment'], r['proto'], r['dport'], r['enable']) for r in firewall['rules']] == [
                ('cloudpods: ssh', 'tcp', str(ssh_port), 1), ('cloudpods: 80/tcp', 'tcp', '80', 1),
                ('cloudpods: 443/tcp', 'tcp', '443', 1)], code
            with open(dirs.cron_file(pod)) as handle:
                line = handle.read().splitlines()[-1]
            schedule, prune = CRON[code]
            assert line == dirs.backup_cron_line(pod, vmid, schedule, prune), code
