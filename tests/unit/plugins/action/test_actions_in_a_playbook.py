# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Both actions by their FQCN in a real ansible-playbook run against localhost (no lab needed):
ansible-core finds the action plugins next to the documentation-only module files, check mode
changes nothing, and the SMTP password given through the environment (as the pod_mail role does)
appears nowhere in the output."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
CRON = 'SHELL=/bin/sh\n0 3 * * * root vzdump 101 --quiet 1\n'


def playbook(tmp_path, smtp_port):
    backup = {'mpanel.cloudpods.pod_backup_schedule': {
        'backup_dir': str(tmp_path / 'backup' / 'pod-a'), 'cron_file': str(tmp_path / 'cloudpod-pod-a'),
        'content': CRON}}
    mail = {'mpanel.cloudpods.pod_welcome_mail': {
        'marker': str(tmp_path / 'welcome-mail' / 'pod-a.sent'), 'host': '127.0.0.1', 'port': smtp_port,
        'secure': 'never', 'username': 'relay', 'password': "{{ lookup('ansible.builtin.env', 'SMTP_PASSWORD') }}",
        'sender': 'noreply@example.net', 'to': ['jane@customer.test'], 'subject': 'Pod pod-a', 'body': 'Hello\n'}}
    return [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [backup, mail]}]


def run_playbook(tmp_path, smtp_server, *options):
    path = tmp_path / 'playbook.yml'
    path.write_text(json.dumps(playbook(tmp_path, smtp_server.port)))  # JSON is YAML
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
               ANSIBLE_NOCOLOR='1', SMTP_PASSWORD=smtp_server.password)
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
         '-c', 'local', str(path)] + list(options),
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert smtp_server.password not in done.stdout + done.stderr
    return [task['hosts']['localhost'] for task in json.loads(done.stdout)['plays'][0]['tasks']]


def test_check_mode_then_a_real_run(tmp_path, smtp_server):
    backup, mail = run_playbook(tmp_path, smtp_server, '--check', '--diff')
    assert backup['changed'] is True and backup['diff'][1]['after'] == CRON
    assert mail['changed'] is True and mail['msg'].startswith("would send 'Pod pod-a'")
    assert sorted(os.listdir(str(tmp_path))) == ['playbook.yml'] and smtp_server.messages == []

    backup, mail = run_playbook(tmp_path, smtp_server)
    assert backup['changes'] == ['backup directory created', 'cron file written']
    assert mail['sent'] is True and [m['login'] for m in smtp_server.messages] == [b'relay']
    with open(str(tmp_path / 'cloudpod-pod-a')) as handle:
        assert handle.read() == CRON

    backup, mail = run_playbook(tmp_path, smtp_server)
    assert backup['changed'] is False and mail['changed'] is False and len(smtp_server.messages) == 1
