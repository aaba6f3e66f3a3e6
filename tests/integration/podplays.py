# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the collection's playbooks (``mpanel.cloudpods.provision`` ...) against the lab from tests.

The Proxmox host is ``localhost``; its backup root, cron directory and state directory are the
temporary directories of a ``HostDirs``; ``vzdump`` is the lab's stand-in (``tests/lab/bin``).
"""

import hashlib
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (HERE, os.path.join(ROOT, 'tests', 'lab')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from playbooks import run_playbook, start_playbook  # noqa: E402  pylint: disable=wrong-import-position

VZDUMP = os.path.join(ROOT, 'tests', 'lab', 'bin', 'vzdump')
PCT = os.path.join(ROOT, 'tests', 'lab', 'bin', 'pct')
SECRET_KEYS = ('PROXMOX_API_TOKEN_SECRET', 'POWERDNS_API_KEY', 'PVESIM_CONTROL_KEY')


def backup_time(pod, schedule):
    """The cron time of a pod's backup, worked out here by hand: the plan's time (``schedule``: 'minute hour
    day month weekday window', the window in minutes) moved by the pod's offset, SHA-256 of its id modulo
    the window."""
    minute, hour, day, month, weekday, window = schedule.split()
    offset = int.from_bytes(hashlib.sha256(pod.encode()).digest()[:8], 'big') % int(window)
    start = int(hour) * 60 + int(minute) + offset
    assert start < 1440, 'no plan of the lab has a window past midnight'
    return '%d %d %s %s %s' % (start % 60, start // 60, day, month, weekday)


class HostDirs(object):
    """The "Proxmox host" paths of one test, under a temporary directory."""

    def __init__(self, base):
        self.base = str(base)
        self.backup_root = os.path.join(self.base, 'backup')
        self.cron_dir = os.path.join(self.base, 'cron.d')
        self.state_dir = os.path.join(self.base, 'state')
        self.lib_dir = os.path.join(self.base, 'lib')
        self.lock_dir = os.path.join(self.base, 'run', 'cloudpods-backup')  # the node's backup slots
        os.makedirs(self.cron_dir)  # /etc/cron.d exists on every host
        os.makedirs(self.lib_dir)  # as /usr/local/lib does

    def extra_vars(self):
        return dict(cloudpods_proxmox_hosts='localhost', cloudpods_backup_root=self.backup_root,
                    cloudpods_cron_dir=self.cron_dir, cloudpods_state_dir=self.state_dir, cloudpods_vzdump=VZDUMP,
                    cloudpods_pct=PCT, cloudpods_lib_dir=self.lib_dir, cloudpods_backup_lock_dir=self.lock_dir)

    def backup_cron_line(self, pod, vmid, schedule, prune):
        """The backup cron line the role should write, worked out here by hand: the plan's time
        (``schedule``: 'minute hour day month weekday', plus the window in minutes after a space) moved by
        the pod's offset (SHA-256 of its id modulo the window), then the slot program and vzdump."""
        return ('%s root python3 %s --lock-dir %s --node-slots 1 --share %s --share-slots 2 '
                '--wait-minutes 360 --syslog -- %s %d --dumpdir %s --mode snapshot --compress zstd '
                '--prune-backups %s --quiet 1'
                % (backup_time(pod, schedule), os.path.join(self.lib_dir, 'cloudpods-backup-slot.py'),
                   self.lock_dir, self.backup_root, VZDUMP, vmid, self.backup_dir(pod), prune))

    def cron_file(self, pod):
        return os.path.join(self.cron_dir, 'cloudpod-' + pod.replace('.', '_'))

    def backup_dir(self, pod):
        return os.path.join(self.backup_root, pod)

    def files(self):
        """Every file and directory created under the host paths (the cron and lib dirs themselves excluded)."""
        found = []
        for top, dirs, files in os.walk(self.base):
            found.extend(os.path.join(top, name) for name in dirs + files)
        return sorted(path for path in found if path not in (self.cron_dir, self.lib_dir))


def new_pod(prefix='pod'):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def playbook_args(name, env, dirs, extra_vars, check=False, diff=False):
    variables = dirs.extra_vars()
    variables.update(extra_vars)
    return dict(playbook=[{'import_playbook': 'mpanel.cloudpods.%s' % name}], env=env, check=check, diff=diff,
                extra_vars=variables, extra_env={'ANSIBLE_SHOW_CUSTOM_STATS': 'true'})


def run_pod_playbook(name, env, dirs, check=False, diff=False, timeout=600, **extra_vars):
    return run_playbook(timeout=timeout, **playbook_args(name, env, dirs, extra_vars, check=check, diff=diff))


def start_pod_playbook(name, env, dirs, **extra_vars):
    return start_playbook(**playbook_args(name, env, dirs, extra_vars))


def changed_count(run):
    """Sum of the PLAY RECAP's changed= over all hosts."""
    return sum(host.get('changed', 0) for host in run.report.get('stats', {}).values())


def failed_count(run):
    return sum(host.get('failures', 0) + host.get('unreachable', 0) for host in run.report.get('stats', {}).values())


# pod_first_boot's one task in the pod (pod_converge): its result has the files it wrote and first-boot.sh's output.
FIRST_BOOT_TASK = "Server block, sshd's settings, first-boot.sh, starter page and SSH keys, in one command in the pod"


def first_boot_changes(run):
    """What the first boot changed in the pod: (paths of the files written, first-boot.sh's lines of what it did)."""
    result = task(run, FIRST_BOOT_TASK)
    files = [entry['dest'] for entry in result.get('files', []) if entry['changed']]
    done = [line for line in result.get('command', {}).get('stdout_lines', [])
            if not line.startswith('ssh host key: ') and line != 'unchanged']
    return files, done


def task(run, suffix):
    """The result of the (last) task whose name ends with ``suffix``."""
    found = [t['result'] for t in run.tasks if (t['name'] or '').endswith(suffix)]
    if not found:
        raise AssertionError('no task %r ran; rc=%s\n%s\n%s' % (suffix, run.rc, run.stdout[-3000:], run.stderr[-3000:]))
    return found[-1]


def ran(run, suffix):
    return any((t['name'] or '').endswith(suffix) for t in run.tasks)


def assert_ok(run):
    assert run.rc == 0 and failed_count(run) == 0, 'run failed rc=%s\n%s\n%s' % (
        run.rc, run.stdout[-6000:], run.stderr[-3000:])
    return run


def assert_no_secret(env, *texts):
    for key in SECRET_KEYS:
        secret = env.get(key)
        if secret:
            for text in texts:
                assert secret not in text, '%s leaked' % key


def pods_named(lab_control, hostname):
    """VMIDs of the simulator's containers with this host name."""
    return sorted(int(vmid) for vmid, ct in lab_control.state()['containers'].items()
                  if ct['config'].get('hostname') == hostname)


def container(lab_control, hostname):
    [vmid] = pods_named(lab_control, hostname)
    return lab_control.state()['containers'][str(vmid)]


def remove_pod(env, hostname):
    """Cleanup: the container goes (whatever a test left)."""
    run_playbook([{'mpanel.cloudpods.pod_container': {'hostname': hostname, 'state': 'absent'}}], env=env)


def changed_tasks(run):
    """Names (without the role prefix) of the tasks that reported a change."""
    return sorted((t['name'] or '').split(' : ')[-1] for t in run.tasks if t['result'].get('changed'))


def delete_rrset(pdns, zone, name, rtype):
    """Delete one rrset behind the playbooks' back (PowerDNS API, changetype DELETE)."""
    # pylint: disable=protected-access
    reply = pdns._call('PATCH', '/zones/%s.' % zone.rstrip('.'), dict(rrsets=[dict(
        name=name, type=rtype, changetype='DELETE')]))
    assert reply.status_code == 204, reply.text
