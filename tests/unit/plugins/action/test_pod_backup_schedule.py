# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the pod_backup_schedule action: backup directory and cron file, on a temporary
directory of this machine through the local connection (see conftest.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import stat

import pytest

from ansible.errors import AnsibleActionFail

from ansible_collections.mpanel.cloudpods.plugins.action.pod_backup_schedule import ActionModule

CONTENT = 'SHELL=/bin/sh\n0 3 * * * root vzdump 101 --quiet 1\n'


@pytest.fixture
def paths(tmp_path):
    return dict(backup_dir=str(tmp_path / 'backup' / 'pod-a'), cron_file=str(tmp_path / 'cloudpod-pod-a'))


@pytest.fixture
def run(action_runner):
    def run_action(check_mode=False, diff=True, answer=None, **args):
        return action_runner(ActionModule, args, check_mode=check_mode, diff=diff, answer=answer,
                             name='mpanel.cloudpods.pod_backup_schedule')
    return run_action


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path):
    with open(path) as handle:
        return handle.read()


def test_creates_directory_and_cron_file_then_only_looks(run, paths):
    first = run(content=CONTENT, **paths)
    assert first.result == dict(
        changed=True, changes=['backup directory created', 'cron file written'], diff=[
            dict(before_header='%s (directory)' % paths['backup_dir'], after_header='%s (directory)' % paths['backup_dir'],
                 before='absent\n', after='present\n'),
            dict(before_header=paths['cron_file'], after_header=paths['cron_file'], before='', after=CONTENT)],
        **paths)
    assert len(first.commands) == 2
    assert os.path.isdir(paths['backup_dir']) and mode(paths['backup_dir']) == 0o750
    assert read(paths['cron_file']) == CONTENT and mode(paths['cron_file']) == 0o644

    again = run(content=CONTENT, **paths)
    assert again.result['changed'] is False and again.result['changes'] == []
    assert len(again.commands) == 1


def test_check_mode_changes_nothing_and_shows_the_diff(run, paths):
    checked = run(content=CONTENT, check_mode=True, **paths)
    assert checked.result['changed'] is True
    assert checked.result['changes'] == ['backup directory created', 'cron file written']
    assert 'vzdump 101' in checked.result['diff'][1]['after']
    assert checked.result['diff'][0]['before'] == 'absent\n'
    assert len(checked.commands) == 1
    assert not os.path.exists(paths['backup_dir']) and not os.path.exists(paths['cron_file'])


def test_no_diff_without_diff_mode(run, paths):
    assert 'diff' not in run(content=CONTENT, diff=False, **paths).result


def test_rewrites_changed_content_and_fixes_modes(run, paths):
    run(content=CONTENT, **paths)
    os.chmod(paths['backup_dir'], 0o755)
    result = run(content=CONTENT.replace('101', '102'), **paths).result
    assert result['changes'] == ['backup directory mode set', 'cron file written']
    assert result['diff'][1]['before'] == CONTENT
    assert mode(paths['backup_dir']) == 0o750 and 'vzdump 102' in read(paths['cron_file'])
    os.chmod(paths['cron_file'], 0o600)
    result = run(content=CONTENT.replace('101', '102'), **paths).result
    assert result['changes'] == ['cron file mode set'] and mode(paths['cron_file']) == 0o644


def test_content_with_shell_characters_is_written_as_given(run, paths):
    content = CONTENT + "# it's 100% 'quoted' $HOME `x` \\n %s\n"
    assert run(content=content, **paths).result['changed'] is True
    assert read(paths['cron_file']) == content
    assert sorted(os.listdir(os.path.dirname(paths['cron_file']))) == ['backup', 'cloudpod-pod-a']
    assert run(content=content, **paths).result['changed'] is False


def test_absent_removes_only_the_cron_file(run, paths):
    run(content=CONTENT, **paths)
    checked = run(cron_file=paths['cron_file'], state='absent', check_mode=True)
    assert checked.result['changed'] is True and checked.result['changes'] == ['cron file removed']
    assert os.path.exists(paths['cron_file'])
    removed = run(cron_file=paths['cron_file'], state='absent').result
    assert removed == dict(changed=True, changes=['cron file removed'], cron_file=paths['cron_file'], backup_dir='',
                           diff=dict(before=CONTENT, after='', before_header=paths['cron_file'],
                                     after_header=paths['cron_file']))
    assert not os.path.exists(paths['cron_file']) and os.path.isdir(paths['backup_dir'])
    again = run(cron_file=paths['cron_file'], state='absent')
    assert again.result['changed'] is False and len(again.commands) == 1


def test_present_needs_content_and_directory(run, paths):
    with pytest.raises(AnsibleActionFail, match='content, backup_dir'):
        run(cron_file=paths['cron_file'])


def test_unknown_option_fails(run, paths):
    with pytest.raises(AnsibleActionFail, match='Unsupported parameters.*owner'):
        run(content=CONTENT, owner='root', **paths)


def test_bad_mode_fails_before_looking(run, paths):
    failed = run(content=CONTENT, cron_mode='rw', **paths)
    assert failed.result == dict(failed=True, msg="cron_mode must be an octal mode such as 0644, got 'rw'")
    assert failed.commands == []


def test_a_host_that_cannot_be_read_fails(run, paths):
    failed = run(content=CONTENT, answer=lambda cmd: (1, b'', b'stat: permission denied\n'), **paths)
    assert failed.result == dict(failed=True, msg='could not look at %s: stat: permission denied' % paths['cron_file'])


def test_a_change_that_fails_is_reported(run, paths, tmp_path):
    (tmp_path / 'a-file').write_text(u'')
    paths['backup_dir'] = str(tmp_path / 'a-file' / 'pod-a')
    failed = run(content=CONTENT, **paths)
    assert failed.result['failed'] is True
    assert failed.result['msg'].startswith('could not change %s: ' % paths['cron_file'])
    assert not os.path.exists(paths['cron_file'])


def test_present_removes_the_marker_of_a_terminated_pod_of_the_same_name(run, paths):
    run(content=CONTENT, **paths)
    stale = os.path.join(paths['backup_dir'], '.terminated')
    with open(stale, 'w') as handle:
        handle.write('{"pod": "pod-a"}\n')
    checked = run(content=CONTENT, stale_file=stale, check_mode=True, **paths).result
    assert checked['changes'] == ['terminated marker removed'] and os.path.exists(stale)
    assert checked['diff'][2] == dict(before_header=stale, after_header=stale, before='present\n', after='absent\n')
    removed = run(content=CONTENT, stale_file=stale, **paths)
    assert removed.result['changed'] is True and removed.result['changes'] == ['terminated marker removed']
    assert not os.path.exists(stale)
    again = run(content=CONTENT, stale_file=stale, **paths)
    assert again.result['changed'] is False and len(again.commands) == 1 and len(again.result['diff']) == 2


def test_a_stale_marker_that_is_a_symlink_is_removed_not_followed(run, paths, tmp_path):
    run(content=CONTENT, **paths)
    target = tmp_path / 'elsewhere'
    target.write_text(u'kept')
    stale = os.path.join(paths['backup_dir'], '.terminated')
    os.symlink(str(target), stale)
    assert run(content=CONTENT, stale_file=stale, **paths).result['changes'] == ['terminated marker removed']
    assert not os.path.lexists(stale) and target.read_text() == u'kept'


SCRIPT = "#!/usr/bin/env python3\nprint('slot')  # it's $HOME `x` 100%\n"


def test_the_script_is_written_once_updated_when_it_differs_and_its_mode_kept(run, paths, tmp_path):
    script = str(tmp_path / 'lib' / 'cloudpods-backup-slot.py')
    first = run(content=CONTENT, script_file=script, script_content=SCRIPT, **paths)
    assert first.result['changes'] == ['backup directory created', 'script written', 'cron file written']
    assert read(script) == SCRIPT and mode(script) == 0o755
    assert first.result['diff'][2]['before'] == 'absent\n' and first.result['diff'][2]['after'].startswith('sha256 ')
    again = run(content=CONTENT, script_file=script, script_content=SCRIPT, **paths)
    assert again.result['changed'] is False and len(again.commands) == 1

    newer = SCRIPT + "print('newer')\n"
    checked = run(content=CONTENT, script_file=script, script_content=newer, check_mode=True, **paths)
    assert checked.result['changes'] == ['script updated'] and read(script) == SCRIPT
    assert run(content=CONTENT, script_file=script, script_content=newer, **paths).result['changes'] == ['script updated']
    assert read(script) == newer
    os.chmod(script, 0o700)
    assert run(content=CONTENT, script_file=script, script_content=newer, **paths).result['changes'] == ['script mode set']
    assert mode(script) == 0o755


def test_script_file_and_content_go_together(run, paths, tmp_path):
    with pytest.raises(AnsibleActionFail, match='script_content|script_file'):
        run(content=CONTENT, script_file=str(tmp_path / 'x.py'), **paths)
    assert not os.path.exists(paths['backup_dir'])
