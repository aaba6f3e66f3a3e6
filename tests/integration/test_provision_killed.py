# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A provision run killed halfway (SIGKILL on ansible-playbook and every process under it, as an
OOM kill or a lost worker would), then run again: it finishes, with exactly one container.

Each test has a private lab (its own simulator, PowerDNS and SMTP server): the clone or the
resize is held running there until the run is killed, so the kill lands during the clone or
right after it (during the resize that follows it) by construction, not by a race.
"""

import os
import signal

import pytest

from playbooks import PrivateLab  # pylint: disable=import-error
from podplays import (  # pylint: disable=import-error
    HostDirs, assert_ok, changed_count, new_pod, pods_named, run_pod_playbook, start_pod_playbook)
from labcontrol import LabControl  # pylint: disable=import-error
from pdnslab import PowerDnsLab  # pylint: disable=import-error
from smtplab import Mailbox  # pylint: disable=import-error

# a lab of its own: tools/test runs it in the real-container lane, beside the shared simulator
pytestmark = pytest.mark.own_lab


def process_tree(pid):
    """pid and all its descendants, from /proc."""
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def kill_tree(pid):
    for member in process_tree(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize('moment, task_type', [
    ('during the clone', 'vzclone'),
    ('right after the clone', 'resize'),
])
def test_killed_provision_is_finished_by_the_next_run(tmp_path, moment, task_type):
    with PrivateLab() as env:
        control = LabControl.from_env(env)
        control.hold(task_type)
        dirs = HostDirs(tmp_path)
        pod = new_pod('kill')
        order = dict(pod=pod, plan='CLOUD_POD_STARTER', domain=pod + '.test', customer_email=pod + '@customer.test')

        handle = start_pod_playbook('provision', env, dirs, **order)
        try:
            control.wait_held(task_type, timeout=180)
            assert handle.process.poll() is None, 'the first run ended before the kill'
            kill_tree(handle.pid)
            assert handle.process.wait(timeout=60) == -9
            assert [hold['state'] for hold in control.holds()] == ['holding'], moment  # killed mid-task
        finally:
            control.release()
        handle.wait()  # its output: a process of the killed run may hold the pipe until the task ends
        assert len(pods_named(control, pod)) == 1  # the clone was made ...
        assert not os.path.exists(dirs.cron_file(pod))  # ... and the run got no further than the container

        run = assert_ok(run_pod_playbook('provision', env, dirs, **order))
        [vmid] = pods_named(control, pod)
        assert run.report['global_custom_stats']['vmid'] == vmid
        assert len([r for r in control.requests() if r['path'].endswith('/clone')]) == 1
        ct = control.state()['containers'][str(vmid)]
        assert ct['status'] == 'running' and ct['config']['memory'] == 1024 and 'size=30G' in ct['config']['rootfs']
        assert PowerDnsLab(env).answers(pod + '.test', 'A') == [ct['ip']]
        assert os.path.exists(dirs.cron_file(pod))
        assert len(Mailbox.from_env(env).messages(to=order['customer_email'])) == 1
        assert changed_count(assert_ok(run_pod_playbook('provision', env, dirs, **order))) == 0
