# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A playbook run by hand, as an operator outside the lab would: the settings it needs are checked
first and every missing one is named in one failure (playbooks/tasks/check_settings.yml); outside
the lab (no CLOUDPODS_LAB / cloudpods_lab) an unset cloudpods_company_domain is refused, a set one
is what the zone's MX and NS name; a missing Proxmox host group points at an inventory; a provision
ends with one line saying where the pod is. Against the lab's simulator and PowerDNS.
"""

import os

import pytest

from podplays import (  # pylint: disable=import-error
    assert_no_secret, assert_ok, container, new_pod, pods_named, ran, remove_pod, run_pod_playbook, task)

SETTINGS_TASK = 'Check the settings the run needs (environment and site)'
CONTAINER_TASK = "Converge the pod's container on Proxmox VE"
SUMMARY_TASK = 'Say where the pod is'
# What a shell without the lab's env has none of.
LAB_PREFIXES = ('PROXMOX_', 'POWERDNS_', 'SMTP_', 'PVESIM_', 'CLOUDPODS_')


def without_lab(lab_env, keep=()):
    """The environment of an operator's shell: none of the lab's settings (None removes a variable
    inherited from the test's own environment too), except the names in ``keep``."""
    names = set(lab_env) | set(os.environ)
    env = dict((name, None) for name in names if name.startswith(LAB_PREFIXES) and name not in keep)
    env.update((name, lab_env[name]) for name in keep if name in lab_env)
    return env


def outside_lab(lab_env):
    """The lab's connection settings, but not its lab flag: a production site's environment."""
    env = dict(lab_env)
    env['CLOUDPODS_LAB'] = None
    return env


def in_lab(lab_env):
    """The lab's environment with the lab flag .lab/env carries."""
    return dict(lab_env, CLOUDPODS_LAB='true')


@pytest.fixture
def order(lab_env, pdns):
    pod = new_pod('settings')
    values = dict(pod=pod, plan='CLOUD_POD_STARTER', domain=pod + '.test', customer_email=pod + '@customer.test')
    yield values
    remove_pod(lab_env, pod)
    pdns.delete_zone(values['domain'])


def assert_stopped_first(run, lab_control, pdns, dirs, order):
    """The settings check failed, as the run's first and only task: nothing else ran, nothing exists."""
    assert run.rc != 0
    assert [t['name'] for t in run.tasks] == [SETTINGS_TASK], [t['name'] for t in run.tasks]
    result = run.tasks[0]['result']
    assert result.get('failed') is True
    assert pods_named(lab_control, order['pod']) == []
    assert pdns.zone(order['domain']) is None
    assert dirs.files() == []
    return result['msg']


@pytest.mark.parametrize('check', [False, True], ids=['run', 'check-mode'])
def test_without_the_labs_env_every_missing_setting_is_named_first(lab_env, lab_control, pdns, dirs, order, check):
    # A bad pod id as well: the settings are checked before anything else, the pod id included.
    run = run_pod_playbook('provision', without_lab(lab_env), dirs, check=check, **dict(order, pod='Bad_Pod!'))
    msg = assert_stopped_first(run, lab_control, pdns, dirs, dict(order))
    for name in ('PROXMOX_API_URL', 'PROXMOX_API_TOKEN_ID', 'PROXMOX_API_TOKEN_SECRET', 'POWERDNS_API_URL',
                 'POWERDNS_API_KEY', 'PROXMOX_SSH_HOST', 'cloudpods_company_domain'):
        assert name in msg, (name, msg)
    assert "'pod'" not in msg


def test_only_the_missing_ones_are_named(lab_env, lab_control, pdns, dirs, order):
    env = without_lab(lab_env, keep=('PROXMOX_API_URL', 'PROXMOX_API_TOKEN_ID', 'PROXMOX_CA_BUNDLE',
                                     'POWERDNS_API_URL', 'CLOUDPODS_FIRST_BOOT', 'CLOUDPODS_LAB'))
    env['CLOUDPODS_LAB'] = 'true'
    run = run_pod_playbook('provision', env, dirs, **order)
    msg = assert_stopped_first(run, lab_control, pdns, dirs, order)
    assert 'PROXMOX_API_TOKEN_SECRET' in msg and 'POWERDNS_API_KEY' in msg
    for name in ('PROXMOX_API_URL', 'PROXMOX_API_TOKEN_ID ', 'POWERDNS_API_URL', 'PROXMOX_SSH_HOST',
                 'cloudpods_company_domain'):
        assert name not in msg, (name, msg)
    assert_no_secret(lab_env, run.stdout, run.stderr)


def test_first_boot_on_needs_the_ssh_host(lab_env, lab_control, pdns, dirs, order):
    env = dict(in_lab(lab_env), CLOUDPODS_FIRST_BOOT='true', PROXMOX_SSH_HOST=None)
    run = run_pod_playbook('provision', env, dirs, **order)
    msg = assert_stopped_first(run, lab_control, pdns, dirs, order)
    assert 'PROXMOX_SSH_HOST' in msg and 'PROXMOX_API_URL' not in msg


def test_outside_the_lab_an_unset_company_domain_is_refused(lab_env, lab_control, pdns, dirs, order):
    run = run_pod_playbook('provision', outside_lab(lab_env), dirs, check=True, **order)
    msg = assert_stopped_first(run, lab_control, pdns, dirs, order)
    assert 'cloudpods_company_domain' in msg and 'CLOUDPODS_LAB' in msg
    assert 'environment variables not set' not in msg
    # the other playbooks that publish the company's names refuse the same way
    for name, extra in (('repair', {}), ('https', {}), ('reinstall', {}),
                        ('restore', {'archive': 'vzdump-lxc-101-2026_11_30-03_00_02.tar.zst'})):
        run = run_pod_playbook(name, outside_lab(lab_env), dirs, check=True, pod=order['pod'], **extra)
        assert run.rc != 0 and [t['name'] for t in run.tasks] == [SETTINGS_TASK], name
        assert 'cloudpods_company_domain' in run.tasks[0]['result']['msg'], name
    # those that publish nothing of the company's do not ask for it
    for name in ('deprovision', 'suspend', 'backups'):
        run = run_pod_playbook(name, outside_lab(lab_env), dirs, check=True, pod=order['pod'])
        assert task(run, SETTINGS_TASK).get('failed') is not True, (name, task(run, SETTINGS_TASK))


@pytest.mark.parametrize('company', ['Example.COM', 'no-dot', 'a b.test'])
def test_a_malformed_company_domain_is_refused(lab_env, lab_control, pdns, dirs, order, company):
    run = run_pod_playbook('provision', in_lab(lab_env), dirs, check=True, cloudpods_company_domain=company, **order)
    msg = assert_stopped_first(run, lab_control, pdns, dirs, order)
    assert 'cloudpods_company_domain must be a domain name' in msg


def test_bad_backup_slots_are_refused_before_anything_all_named(lab_env, lab_control, pdns, dirs, order):
    run = run_pod_playbook('provision', in_lab(lab_env), dirs, cloudpods_backup_node_slots=0,
                           cloudpods_backup_share_slots='two', cloudpods_backup_wait_minutes=-5, **order)
    msg = assert_stopped_first(run, lab_control, pdns, dirs, order)
    assert 'cloudpods_backup_node_slots must be a whole number, 1 or more (backups at once per node); got 0' in msg
    assert 'cloudpods_backup_share_slots must be a whole number, 1 or more (backups at once on the share); got "two"' in msg
    assert 'cloudpods_backup_wait_minutes must be a whole number of minutes, 0 or more; got -5' in msg
    assert not os.path.exists(dirs.cron_file(order['pod']))


def test_bad_placement_settings_are_refused_before_anything_all_named(lab_env, lab_control, pdns, dirs, order):
    run = run_pod_playbook('provision', in_lab(lab_env), dirs, cloudpods_placement_policy='pinned',
                           cloudpods_placement_groups={'CLOUD_POD_NOPE': ['pve2']}, cloudpods_memory_overcommit='lots',
                           cloudpods_disk_overcommit=0, cloudpods_placement_attempts=11, **order)
    msg = assert_stopped_first(run, lab_control, pdns, dirs, order)
    assert ('cloudpods_placement_node must name the node new pods go to when cloudpods_placement_policy is pinned '
            '(a node name, e.g. pve2); got ""') in msg
    assert ('cloudpods_placement_groups must map plan codes of vars/plans.yml to lists of node names '
            '(e.g. {"CLOUD_POD_STUDENT": ["pve2", "pve3"]}); got {"CLOUD_POD_NOPE": ["pve2"]}') in msg
    assert 'cloudpods_memory_overcommit must be a number more than 0 and at most 20' in msg and 'got "lots"' in msg
    assert 'cloudpods_disk_overcommit must be a number more than 0 and at most 20' in msg
    assert 'cloudpods_placement_attempts must be a whole number from 1 to 10' in msg and 'got 11' in msg
    run = run_pod_playbook('provision', in_lab(lab_env), dirs, cloudpods_placement_policy='random', **order)
    assert 'cloudpods_placement_policy must be most_free or pinned' in assert_stopped_first(
        run, lab_control, pdns, dirs, order)


def test_outside_the_lab_the_company_domain_is_published_and_the_run_ends_saying_where_the_pod_is(
        lab_env, lab_control, pdns, dirs, order):
    pod, domain = order['pod'], order['domain']
    run = assert_ok(run_pod_playbook('provision', outside_lab(lab_env), dirs,
                                     cloudpods_company_domain='hosting-company.test', **order))
    assert pdns.answers(domain, 'MX') == ['10 mail.hosting-company.test.']
    assert pdns.answers(domain, 'NS') == ['ns1.hosting-company.test.']
    # the last task says where the pod is, in one line
    [vmid] = pods_named(lab_control, pod)
    ip = container(lab_control, pod)['ip']
    assert run.tasks[-1]['name'] == SUMMARY_TASK
    assert run.tasks[-1]['result']['msg'] == 'pod %s: VMID %s, node pve, IP %s, domain %s, HTTPS none' % (
        pod, vmid, ip, domain)


def test_in_the_lab_the_company_domain_may_stay_unset(lab_env, lab_control, pdns, dirs, order):
    # the flag as an extra var (cloudpods_lab) and, in the dry run, from the environment (CLOUDPODS_LAB)
    dry = assert_ok(run_pod_playbook('provision', in_lab(lab_env), dirs, check=True, diff=True, **order))
    assert dry.tasks[-1]['name'] == SUMMARY_TASK
    assert dry.tasks[-1]['result']['msg'] == 'pod %s: VMID (new, dry run), node pve, IP (none yet), domain %s, HTTPS none' % (
        order['pod'], order['domain'])
    assert pods_named(lab_control, order['pod']) == []
    run = assert_ok(run_pod_playbook('provision', outside_lab(lab_env), dirs, cloudpods_lab=True, **order))
    assert ran(run, CONTAINER_TASK)
    assert pdns.answers(order['domain'], 'MX') == ['10 mail.example.net.']
    assert task(run, SUMMARY_TASK)['msg'].startswith('pod %s: VMID %s, node pve, IP ' % (
        order['pod'], pods_named(lab_control, order['pod'])[0]))


def test_without_a_proxmox_host_the_hint_is_an_inventory(lab_env, lab_control, pdns, dirs, order):
    run = run_pod_playbook('provision', in_lab(lab_env), dirs, check=True,
                           **dict(order, cloudpods_proxmox_hosts='proxmox_hosts'))
    assert run.rc != 0
    failed = [t for t in run.tasks if t['result'].get('failed')]
    assert [t['name'] for t in failed] == ['Check that the Proxmox host group has a host (cloudpods_proxmox_hosts)']
    msg = failed[0]['result']['msg']
    assert 'inventory.example' in msg and "group 'proxmox_hosts'" in msg
    # never a hint that would run the Proxmox host's part (/etc/cron.d ...) on the operator's machine
    assert '-e cloudpods_proxmox_hosts' not in msg and 'localhost' not in msg
    assert not ran(run, CONTAINER_TASK)
    assert pods_named(lab_control, order['pod']) == []
