# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The README's command blocks run as written, against the lab.

Every shell block of README.md (a fenced block tagged bash, sh, shell or console) is preceded by a
marker, an HTML comment GitHub does not show:

    <!-- readme-block: run -->
    <!-- readme-block: not run: <the reason> -->

``run`` blocks are run in the README's order, each in a fresh ``bash -e`` from the repository root
with the environment of a new login shell (no venv on PATH, no ANSIBLE_COLLECTIONS_PATH, none of the
lab's settings: a block sets up what it needs) and a HOME of its own, which holds a stale copy of
the collection in ~/.ansible/collections whose playbooks fail: a block that picked it up instead of
the checkout would fail. Each must exit 0 and print what EXPECTED says it shows; a ``run`` block
that EXPECTED does not know fails the test, so a new block comes with its proof. The pods the
blocks make are removed before and after (the lab's PowerDNS zones and its "Proxmox host" files
too), so the blocks start from a fresh lab each time. Everything they reach is on loopback.
"""

import os
import re
import shutil
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (HERE, os.path.join(ROOT, 'tests', 'lab')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from podplays import pods_named, remove_pod  # noqa: E402  pylint: disable=wrong-import-position

README = os.path.join(ROOT, 'README.md')
LAB_DIR = os.path.join(ROOT, '.lab')
SHELL_LANGUAGES = ('bash', 'sh', 'shell', 'console')
MARKER = re.compile(r'^<!-- readme-block: (run|not run: (?P<reason>\S.*?)) -->$')
FENCE = re.compile(r'^```(?P<lang>\S*)\s*$')
# The pods and zones the blocks make (removed before and after).
PODS = {'my-pod': 'my-pod.test', 'shop-example-com': 'shop-example.com'}
IP = r'(?:\d{1,3}\.){3}\d{1,3}'
RECAP_OK = r'localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0'

# A unique part of each run block -> what its output must show (regular expressions, multiline).
EXPECTED = {
    'ansible-playbook tools/demo.yml -e pod=my-pod': [
        r'pod my-pod: VMID \d+ on node \S+, IP (?P<ip>%s)' % IP, r'my-pod\.test MX: 10 mail\.example\.net\.',
        r'^{ip}$',  # dig's answer: the pod's address, as the playbook reported it
    ],
    'mpanel.cloudpods.provision --check --diff': [
        r'TASK \[mpanel\.cloudpods\.pod_container : ', RECAP_OK,
        r'CUSTOM STATS: .*\n\s*RUN: .*"vmid": \d+', r'"ip": "%s"' % IP,
    ],
    'mpanel.cloudpods.change_plan': [r'"plan": "CLOUD_POD_PREMIUM"', r'"plan_before": "CLOUD_POD_STARTER"', RECAP_OK],
    'mpanel.cloudpods.backup_now': [r'"backups": \[', r'"name": "vzdump-lxc-\d+-[0-9_-]+\.tar\.zst"',
                                    r'"kind": "manual"', RECAP_OK],
    'mpanel.cloudpods.prune_backups --check': [r'"pruned": \[\]', RECAP_OK],
    'cloudpods migrate': [
        r'^(applied: 0001_cloud_pods\.sql|database is up to date)', r'\bcpt_[A-Za-z0-9_-]{20,}', r'"role": "admin"',
        r'revoked token \d+', r'"code": ?"CLOUD_POD_STARTER"', r'worker \S+ ready',
        r'changed\s+pod_container\b', r'dry run successful',
    ],
}


def readme_blocks(text):
    """Every fenced block: (line number, language, marker or None, body)."""
    blocks = []
    lines = text.split('\n')
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != '```':
            end += 1
        before = [line for line in lines[:index] if line.strip()]
        marker = MARKER.match(before[-1].strip()) if before else None
        blocks.append((index + 1, fence.group('lang'), marker, '\n'.join(lines[index + 1:end]) + '\n'))
        index = end + 1
    return blocks


def indented_code_lines(text):
    """Lines of indented (4 spaces) code blocks outside fences: shell commands hide there unmarked."""
    found = []
    in_fence = False
    previous = ''
    for number, line in enumerate(text.split('\n'), 1):
        if FENCE.match(line) or line.rstrip() == '```':
            in_fence = not in_fence
        elif not in_fence and line.startswith('    ') and line.strip() and not previous.strip():
            found.append((number, line))
        previous = line
    return found


def shell_blocks():
    with open(README, encoding='utf-8') as handle:
        return [block for block in readme_blocks(handle.read()) if block[1] in SHELL_LANGUAGES]


def run_blocks():
    return [(line, body) for line, _lang, marker, body in shell_blocks() if marker and marker.group(1) == 'run']


def test_every_shell_block_is_marked_run_or_not_run_with_a_reason():
    with open(README, encoding='utf-8') as handle:
        text = handle.read()
    blocks = readme_blocks(text)
    assert [(line, lang) for line, lang, _marker, _body in blocks if not lang] == [], \
        'a fenced block without a language (bash, yaml, text, ...)'
    unmarked = [(line, body.split('\n')[0]) for line, lang, marker, body in blocks
                if lang in SHELL_LANGUAGES and not marker]
    assert unmarked == [], 'shell blocks without <!-- readme-block: run --> or <!-- readme-block: not run: ... -->'
    assert indented_code_lines(text) == [], 'indented code blocks: make them fenced blocks (with a marker if shell)'
    runs = run_blocks()
    not_run = [marker.group('reason') for _l, lang, marker, _b in blocks if lang in SHELL_LANGUAGES
               and marker.group(1) != 'run']
    assert len(runs) >= 5 and all(not_run), (runs, not_run)
    # Each run block has its expectation, and each expectation its one block.
    for key in EXPECTED:
        assert len([body for _line, body in runs if key in body]) == 1, key
    for line, body in runs:
        assert [key for key in EXPECTED if key in body], 'README.md line %d: a run block EXPECTED does not know' % line


def _fresh_shell_env(home):
    """A new login shell's environment: none of this test process's venv, Ansible or lab settings."""
    env = {'HOME': home, 'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
           'LANG': 'C.UTF-8', 'USER': os.environ.get('USER', 'root'), 'SHELL': '/bin/bash'}
    if os.environ.get('TMPDIR'):
        env['TMPDIR'] = os.environ['TMPDIR']
    return env


def _stale_collection(home):
    """~/.ansible/collections with an old mpanel.cloudpods whose every playbook fails, as a stale copy would mislead."""
    base = os.path.join(home, '.ansible', 'collections', 'ansible_collections', 'mpanel', 'cloudpods')
    os.makedirs(os.path.join(base, 'playbooks'))
    os.makedirs(os.path.join(base, 'meta'))
    with open(os.path.join(base, 'meta', 'runtime.yml'), 'w', encoding='utf-8') as handle:
        handle.write('---\nrequires_ansible: ">=2.15"\n')
    with open(os.path.join(base, 'galaxy.yml'), 'w', encoding='utf-8') as handle:
        handle.write('namespace: mpanel\nname: cloudpods\nversion: 0.0.1\n')
    for name in ('provision', 'change_plan', 'backups', 'backup_now', 'prune_backups'):
        with open(os.path.join(base, 'playbooks', name + '.yml'), 'w', encoding='utf-8') as handle:
            handle.write('- hosts: localhost\n  gather_facts: false\n  tasks:\n'
                         '    - ansible.builtin.fail:\n        msg: STALE COPY OF THE COLLECTION USED\n')


def _clean(env, pdns):
    """The blocks' pods, zones and Proxmox-host files go, so that they run on a fresh lab."""
    for pod, zone in PODS.items():
        remove_pod(env, pod)
        pdns.delete_zone(zone)
    for path in ('proxmox-host/state', 'demo-host'):
        shutil.rmtree(os.path.join(LAB_DIR, path), ignore_errors=True)
    # Emptied, not removed: lab up makes them, as they exist on a node (the backup storage mounted).
    for path in ('proxmox-host/backup', 'proxmox-host/cron.d', 'proxmox-host/lib'):
        directory = os.path.join(LAB_DIR, path)
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if os.path.isdir(os.path.join(directory, name)) and not os.path.islink(os.path.join(directory, name)):
                shutil.rmtree(os.path.join(directory, name))
            else:
                os.unlink(os.path.join(directory, name))


def _run_block(body, env):
    """``bash -e`` with the block, in a session of its own: whatever it left running is stopped."""
    process = subprocess.Popen(['bash', '-e', '-c', body], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ignored = process.communicate(timeout=420)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        process.wait()
    return process.returncode, output


def test_the_run_blocks_exit_0_and_show_what_they_should(lab_env, lab_control, pdns, tmp_path):
    home = str(tmp_path / 'home')
    _stale_collection(home)
    env = _fresh_shell_env(home)
    _clean(lab_env, pdns)
    try:
        for line, body in run_blocks():
            [key] = [key for key in EXPECTED if key in body]
            status, output = _run_block(body, env)
            where = 'README.md line %d (%s) exited %s:\n%s' % (line, key, status, output[-6000:])
            assert status == 0, where
            assert 'STALE COPY' not in output, where
            matched = {}
            for pattern in EXPECTED[key]:
                if '{ip}' in pattern:
                    pattern = pattern.replace('{ip}', re.escape(matched['ip']))
                found = re.search(pattern, output, re.M)
                assert found, 'no %r in the output of %s' % (pattern, where)
                matched.update(found.groupdict())
        # What they did, seen in the lab: the pods exist, shop-example-com on its new plan.
        assert len(pods_named(lab_control, 'my-pod')) == 1
        [vmid] = pods_named(lab_control, 'shop-example-com')
        config = lab_control.state()['containers'][str(vmid)]['config']
        assert 'cloud_pod_premium' in config['tags'], config
        assert pdns.zone('shop-example.com') is not None
    finally:
        _clean(lab_env, pdns)
