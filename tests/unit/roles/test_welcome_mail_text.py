# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The text of the welcome mail (roles/pod_mail/templates/welcome.txt.j2), rendered by Ansible's own
template lookup with the role's defaults and vars, as the role renders it: how to connect and the
host key fingerprints, with and without a domain, keys and host keys."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
HOST_KEYS = ['SHA256:0Bq1mGdJ2rJ0p2kZB8w4bq2u3yW3Qh3x2m0KJ0t8Q1c (ED25519)',
             'SHA256:Yq2d5b0jQy1n8z3x0p2kZB8w4bq2u3yW3Qh3x2m0KJ0 (ECDSA)']
BASE = dict(pod_mail_to='jane@customer.test', pod_mail_pod='pod-a', pod_mail_vmid=101, pod_mail_ip='10.98.0.5',
            pod_mail_plan_code='CLOUD_POD_STARTER', pod_mail_plan_name='Starter')


def render(tmp_path, **variables):
    """The body the role would send: the role in check mode on localhost, its 'would send' debug skipped,
    the body taken from the task's arguments by a lookup of the same template."""
    play = [{'hosts': 'localhost', 'gather_facts': False, 'vars': dict(BASE, **variables), 'tasks': [
        {'ansible.builtin.include_role': {'name': 'mpanel.cloudpods.pod_mail', 'tasks_from': 'main',
                                          'public': True},
         'vars': {'pod_mail_state_dir': str(tmp_path / 'state')}},
        {'name': 'body', 'ansible.builtin.debug': {
            'msg': "{{ lookup('ansible.builtin.template', role_path_mail ~ '/templates/welcome.txt.j2') }}"},
         'vars': {'role_path_mail': os.path.join(ROOT, 'roles', 'pod_mail')}}]}]
    path = tmp_path / 'playbook.yml'
    path.write_text(json.dumps(play))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1',
               SMTP_HOST='127.0.0.1', SMTP_PORT='9')
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
                           '-c', 'local', '--check', str(path)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    tasks = json.loads(done.stdout)['plays'][0]['tasks']
    return [task for task in tasks if task['task']['name'] == 'body'][0]['hosts']['localhost']['msg']


def test_how_to_connect_with_a_domain_keys_and_host_keys(tmp_path):
    text = render(tmp_path, pod_mail_domain='shop.test', pod_mail_ssh_user='web', pod_mail_ssh_port=2222,
                  pod_mail_ssh_host_keys=HOST_KEYS, pod_mail_ssh_key_fingerprints=['SHA256:abc', 'SHA256:def'])
    assert 'sftp -P 2222 web@shop.test\n' in text
    assert 'sftp -P 2222 web@10.98.0.5   (until shop.test points at your pod)' in text
    assert 'Web root:   /var/www/cloudpod/public' in text
    assert 'SSH keys only (no password)' in text
    assert 'Your keys:  SHA256:abc\n              SHA256:def\n' in text
    for key in HOST_KEYS:
        assert '\n  %s\n' % key in text


@pytest.mark.parametrize('domain', ['', 'shop.test'])
def test_without_keys_or_host_keys_the_mail_points_to_the_panel(tmp_path, domain):
    text = render(tmp_path, pod_mail_domain=domain)
    assert ('sftp -P 22 web@%s\n' % (domain or '10.98.0.5')) in text
    assert 'none yet: add your SSH public key in the control panel' in text
    assert 'host keys are shown in the control panel' in text
    assert 'SHA256:' not in text and 'PRIVATE' not in text
