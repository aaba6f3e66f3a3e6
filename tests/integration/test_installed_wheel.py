# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""runner_api as a new operator installs it, not as the checkout runs it.

A fresh venv gets ``pip install '.[worker]'`` (a wheel, not editable; its dependencies from the
package index); the collection is built and installed with that venv's ``ansible-galaxy`` into a
directory of its own, which is ``ANSIBLE_COLLECTIONS_PATH``. Then that venv's ``cloudpods api`` and
``cloudpods worker`` run outside the checkout (no PYTHONPATH, another working directory) and one
order placed over HTTP becomes an ACTIVE pod in a real container of the lab (first boot over SSH
with paramiko). Also: without the collection, or with a missing catalogue, ``cloudpods api``
stops at start-up naming the setting.

The collection's dependency community.proxmox comes from the project's venv (the ``ansible``
package) because this machine reaches no Galaxy server; an operator's ``ansible-galaxy collection
install`` fetches it. Needs the lab's real containers (``tests/lab/lab up --lxc``); about two minutes.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid

import pytest
import requests

from cloudpods_testing import scratch_database
from labenv import ENV_LXC_FILE, free_port, read_env
from podplays import HostDirs, run_pod_playbook
from realpods import drop_zone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the wheel and the collection build need from the checkout; the rest stays behind.
NOT_COPIED = shutil.ignore_patterns('.git', '.venv', '.lab', '.lab-cache', '.build', '.ansible', 'tests', 'build',
                                    'dist', '*.egg-info', '__pycache__', '.pytest_cache', '*.tar.gz')

pytestmark = pytest.mark.real_containers


def _run(argv, **kwargs):
    timeout = kwargs.pop('timeout', 300)
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)
    assert result.returncode == 0, '%s failed (%s):\n%s\n%s' % (
        ' '.join(argv), result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope='module')
def lxc_env():
    return read_env(ENV_LXC_FILE)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(venv bin directory, collections path): the wheel with its [worker] extra, the built collection."""
    base = tmp_path_factory.mktemp('wheel')
    source = base / 'source'
    shutil.copytree(ROOT, str(source), ignore=NOT_COPIED, symlinks=True)
    venv = base / 'venv'
    _run([sys.executable, '-m', 'venv', str(venv)])
    bin_dir = venv / 'bin'
    _run([str(bin_dir / 'pip'), 'install', '-q', str(source) + '[worker]'], timeout=600)
    collections = base / 'collections'
    proxmox = os.path.join(sysconfig.get_paths()['purelib'], 'ansible_collections', 'community', 'proxmox')
    shutil.copytree(proxmox, str(collections / 'ansible_collections' / 'community' / 'proxmox'))
    galaxy_env = dict(_clean_environ(bin_dir), ANSIBLE_COLLECTIONS_PATH=str(collections))
    _run([str(bin_dir / 'ansible-galaxy'), 'collection', 'build', str(source), '--output-path', str(base / 'dist')],
         env=galaxy_env, cwd=str(base))
    tarball = [name for name in os.listdir(str(base / 'dist')) if name.endswith('.tar.gz')][0]
    _run([str(bin_dir / 'ansible-galaxy'), 'collection', 'install', str(base / 'dist' / tarball), '-p',
          str(collections)], env=galaxy_env, cwd=str(base))
    return bin_dir, collections


def _clean_environ(bin_dir):
    """The machine's environment without the checkout: no PYTHONPATH, no project venv, no lab settings."""
    env = {name: value for name, value in os.environ.items()
           if name not in ('PYTHONPATH', 'VIRTUAL_ENV', 'DATABASE_URL')
           and not name.startswith(('ANSIBLE_', 'CLOUDPODS_', 'PROXMOX_', 'POWERDNS_', 'SMTP_', 'PVESIM_', 'LAB_'))}
    path = [entry for entry in env.get('PATH', '/usr/bin:/bin').split(os.pathsep) if not entry.startswith(ROOT)]
    env['PATH'] = os.pathsep.join([str(bin_dir)] + path)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def test_the_wheel_carries_runner_api_only(installed, tmp_path):
    bin_dir, dummy = installed
    out = _run([str(bin_dir / 'python'), '-c', 'import importlib.util as u, runner_api; print(runner_api.__file__); '
                'print(u.find_spec("runner_api.testing"), u.find_spec("runner_api.demo"))'],
               env=_clean_environ(bin_dir), cwd=str(tmp_path))
    location, specs = out.splitlines()
    assert location.startswith(str(bin_dir.parent)) and specs == 'None None'


def test_without_the_collection_or_its_catalogue_the_api_does_not_start(installed, lxc_env, tmp_path):
    bin_dir, collections = installed
    env = dict(_clean_environ(bin_dir), DATABASE_URL=lxc_env['DATABASE_URL'], ANSIBLE_COLLECTIONS_PATH=str(tmp_path))
    argv = [str(bin_dir / 'cloudpods'), 'api', '--port', str(free_port())]
    result = subprocess.run(argv, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'CLOUDPODS_PLANS_FILE is not set and the mpanel.cloudpods collection is not installed in ' \
           'ANSIBLE_COLLECTIONS_PATH (%s)' % tmp_path in result.stderr
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), CLOUDPODS_PLANS_FILE=str(tmp_path / 'plans.yml'))
    result = subprocess.run(argv, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'CLOUDPODS_PLANS_FILE: the plan catalogue %s does not exist' % (tmp_path / 'plans.yml') in result.stderr


def test_an_order_becomes_an_active_real_pod(installed, lxc_env, tmp_path):
    bin_dir, collections = installed
    dirs = HostDirs(str(tmp_path / 'proxmox-host'))
    site = tmp_path / 'site.json'
    site.write_text(json.dumps(dirs.extra_vars()))
    domain = 'wheel-%s.test' % uuid.uuid4().hex[:8]
    drop_zone(lxc_env, domain)
    processes, pod = [], {}
    with scratch_database(lxc_env['DATABASE_URL'], prefix='cloudpods_wheel') as database_url:
        env = _clean_environ(bin_dir)
        env.update({name: value for name, value in lxc_env.items() if not name.startswith('CLOUDPODS_NGINX')})
        env.update(DATABASE_URL=database_url, ANSIBLE_COLLECTIONS_PATH=str(collections),
                   CLOUDPODS_EXTRA_VARS_FILE=str(site), CLOUDPODS_POLL_SECONDS='1')
        cloudpods = str(bin_dir / 'cloudpods')
        _run([cloudpods, 'migrate'], env=env, cwd=str(tmp_path))
        token = _run([cloudpods, 'token', 'create', '--name', 'wheel', '--role', 'service'], env=env,
                     cwd=str(tmp_path)).strip()
        port = free_port()
        try:
            for name, argv in (('api', [cloudpods, 'api', '--port', str(port)]),
                               ('worker', [cloudpods, 'worker', '--worker-id', 'wheel'])):
                with open(str(tmp_path / (name + '.log')), 'ab') as log:
                    processes.append(subprocess.Popen(argv, env=env, cwd=str(tmp_path), stdout=log,
                                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            base = 'http://127.0.0.1:%d/api/cloud-pods' % port
            headers = {'Authorization': 'Bearer ' + token, 'X-Customer-Id': 'cust-wheel'}
            plans = _wait_for_plans(base, tmp_path)
            assert 'CLOUD_POD_STARTER' in [plan['code'] for plan in plans]
            reply = requests.post(base + '/order', headers=headers, timeout=30, json={
                'plan_code': 'CLOUD_POD_STARTER', 'domain': domain, 'customer_email': 'jane@example.org'})
            assert reply.status_code in (201, 202), reply.text
            pod = reply.json()
            deadline = time.monotonic() + 900  # bounded; minutes when other lanes load the machine
            while time.monotonic() < deadline and pod['status'] not in ('ACTIVE', 'FAILED'):
                time.sleep(1)
                pod = requests.get(base + '/' + pod['id'], headers=headers, timeout=30).json()
            assert pod['status'] == 'ACTIVE', 'pod ended %s: %s\n%s' % (
                pod['status'], pod.get('last_error'), _logs(tmp_path))
            assert pod['vmid'] and pod['ip']
            steps = {step['step']: step['status'] for step in pod['progress']['steps']}
            assert steps.get('pod_first_boot') == 'done', pod['progress']  # inside the container, over SSH
            assert os.path.isdir(os.path.join(lxc_env['LAB_LXC_PATH'], str(pod['vmid'])))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    process.kill()
            if pod.get('vmid') and os.path.exists(os.path.join(lxc_env['LAB_LXC_PATH'], str(pod['vmid']))):
                run_pod_playbook('deprovision', lxc_env, dirs, pod=pod['hostname'], timeout=600)
            drop_zone(lxc_env, domain)


def _wait_for_plans(base, tmp_path):
    deadline = time.monotonic() + 180  # its workers load the app first: slow on a loaded machine
    while time.monotonic() < deadline:
        try:
            reply = requests.get(base + '/plans', timeout=10)
        except requests.RequestException:  # refused while binding, or no answer while loading
            time.sleep(0.2)
            continue
        assert reply.status_code == 200, reply.text
        return reply.json()['plans']
    raise AssertionError('the API did not answer at %s\n%s' % (base, _logs(tmp_path)))


def _logs(tmp_path):
    return '\n'.join('== %s\n%s' % (name, (tmp_path / name).read_text(errors='replace')[-4000:])
                     for name in ('api.log', 'worker.log') if (tmp_path / name).exists())
