# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of pod_backup_schedule: backup directory and cron file in one run, on a temporary directory."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import stat

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.mpanel.cloudpods.plugins.modules import pod_backup_schedule as pbs

CONTENT = 'SHELL=/bin/sh\n0 3 * * * root vzdump 101 --quiet 1\n'


def run_module(monkeypatch, capsys, **args):
    args.setdefault('_ansible_check_mode', False)
    args.setdefault('_ansible_diff', True)
    monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': args})))
    monkeypatch.setattr(basic, '_ANSIBLE_PROFILE', 'legacy', raising=False)
    with pytest.raises(SystemExit):
        pbs.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def paths(tmp_path):
    return dict(backup_dir=str(tmp_path / 'backup' / 'pod-a'), cron_file=str(tmp_path / 'cloudpod-pod-a'))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_directory_and_cron_file_then_changes_nothing(monkeypatch, capsys, paths):
    result = run_module(monkeypatch, capsys, content=CONTENT, **paths)
    assert result['changed'] is True
    assert result['changes'] == ['backup directory created', 'cron file written']
    assert os.path.isdir(paths['backup_dir']) and mode(paths['backup_dir']) == 0o750
    with open(paths['cron_file']) as handle:
        assert handle.read() == CONTENT
    assert mode(paths['cron_file']) == 0o644
    assert result['diff'][1]['before'] == '' and result['diff'][1]['after'] == CONTENT

    again = run_module(monkeypatch, capsys, content=CONTENT, **paths)
    assert again['changed'] is False and again['changes'] == []


def test_check_mode_changes_nothing_and_shows_the_diff(monkeypatch, capsys, paths):
    result = run_module(monkeypatch, capsys, content=CONTENT, _ansible_check_mode=True, **paths)
    assert result['changed'] is True
    assert 'vzdump 101' in result['diff'][1]['after']
    assert result['diff'][0]['before'] == 'absent\n'
    assert not os.path.exists(paths['backup_dir']) and not os.path.exists(paths['cron_file'])


def test_rewrites_changed_content_and_fixes_modes(monkeypatch, capsys, paths):
    run_module(monkeypatch, capsys, content=CONTENT, **paths)
    os.chmod(paths['backup_dir'], 0o755)
    result = run_module(monkeypatch, capsys, content=CONTENT.replace('101', '102'), **paths)
    assert result['changes'] == ['backup directory mode set', 'cron file written']
    assert result['diff'][1]['before'] == CONTENT
    assert mode(paths['backup_dir']) == 0o750
    os.chmod(paths['cron_file'], 0o600)
    result = run_module(monkeypatch, capsys, content=CONTENT.replace('101', '102'), **paths)
    assert result['changes'] == ['cron file mode set'] and mode(paths['cron_file']) == 0o644


def test_absent_removes_only_the_cron_file(monkeypatch, capsys, paths):
    run_module(monkeypatch, capsys, content=CONTENT, **paths)
    checked = run_module(monkeypatch, capsys, cron_file=paths['cron_file'], state='absent', _ansible_check_mode=True)
    assert checked['changed'] is True and os.path.exists(paths['cron_file'])
    result = run_module(monkeypatch, capsys, cron_file=paths['cron_file'], state='absent')
    assert result['changed'] is True and result['diff']['before'] == CONTENT
    assert not os.path.exists(paths['cron_file']) and os.path.isdir(paths['backup_dir'])
    again = run_module(monkeypatch, capsys, cron_file=paths['cron_file'], state='absent')
    assert again['changed'] is False


def test_present_needs_content_and_directory(monkeypatch, capsys, paths):
    result = run_module(monkeypatch, capsys, cron_file=paths['cron_file'])
    assert result['failed'] is True and 'content' in result['msg']


def test_bad_mode_fails(monkeypatch, capsys, paths):
    result = run_module(monkeypatch, capsys, content=CONTENT, cron_mode='rw', **paths)
    assert result['failed'] is True and 'cron_mode' in result['msg']


def sh(command):
    import subprocess  # pylint: disable=import-outside-toplevel
    return subprocess.run(['/bin/sh', '-c', command], check=True, stdout=subprocess.PIPE).stdout.decode('utf-8')


def test_action_shell_commands_do_what_the_plan_says(paths):
    """The action plugin's probe and change commands, run with /bin/sh here."""
    from ansible_collections.mpanel.cloudpods.plugins.action import pod_backup_schedule as action  # pylint: disable=import-outside-toplevel
    import shlex  # pylint: disable=import-outside-toplevel

    def probe():
        return action.parse_probe(sh(action.PROBE.format(d=shlex.quote(paths['backup_dir']),
                                                         f=shlex.quote(paths['cron_file']))))
    assert probe() == (None, None, None)
    content = CONTENT + "# it's 100% 'quoted' $HOME `x`\n"
    params = dict(state='present', content=content, cron_mode='0644', backup_dir_mode='0750', **paths)
    dir_mode, cron_mode, before = probe()
    changes, dummy, actions = pbs.plan(params, read=lambda path: before, isdir=lambda path: dir_mode is not None,
                                       mode_of={paths['backup_dir']: dir_mode, paths['cron_file']: cron_mode}.get)
    assert changes == ['backup directory created', 'cron file written']
    sh(action.script(actions))
    assert probe() == (0o750, 0o644, content)
    assert sorted(os.listdir(os.path.dirname(paths['cron_file']))) == ['backup', 'cloudpod-pod-a']
    params['state'] = 'absent'
    dummy, dummy, actions = pbs.plan(params, read=lambda path: content)
    sh(action.script(actions))
    assert probe() == (0o750, None, None)
