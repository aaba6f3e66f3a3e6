# -*- coding: utf-8 -*-
# Copyright (c) 2026, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the pod_converge action through ansible-core's local connection (see conftest.py):
the program really runs in a python3 on this machine, on files in a temporary directory. Every test
counts the commands the action sent: one, whatever the number of files."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import grp
import os
import pwd
import stat
import sys

import pytest

from ansible_collections.mpanel.cloudpods.plugins.action.pod_converge import ActionModule

PYTHON = sys.executable
OTHER_USER = 'nobody'
OTHER_GROUP = grp.getgrgid(pwd.getpwnam(OTHER_USER).pw_gid).gr_name


@pytest.fixture
def converge(action_runner):
    def run(args, **kwargs):
        return action_runner(ActionModule, dict(args, python=PYTHON), name='mpanel.cloudpods.pod_converge', **kwargs)
    return run


def recorder(tmp_path):
    """A command that appends its arguments and its stdin to a file, then says 'ran'."""
    log = tmp_path / 'command.log'
    script = 'import sys; open(%r, "a").write(repr(sys.argv[1:]) + " " + repr(sys.stdin.read()) + "\\n"); print("ran")' % str(log)
    return [PYTHON, '-c', script], log


def test_files_then_command_then_files_after_in_one_command(tmp_path, converge):
    command, log = recorder(tmp_path)
    args = dict(files=[dict(dest=str(tmp_path / 'a.conf'), content='a\n', changed_flag='--reload-a'),
                       dict(dest=str(tmp_path / 'b.conf'), content='b\n', mode='0600', changed_flag='--reload-b')],
                command=command + ['--pod', 'p1'], check_flag='--check',
                files_after=[dict(dest=str(tmp_path / 'index.php'), content='<?php\n', owner=OTHER_USER, group=OTHER_GROUP,
                                  force=False)])
    first = converge(args, diff=True)
    assert len(first.commands) == 1
    result = first.result
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert [entry['changes'] for entry in result['files']] == [['created'], ['created'], ['created']]
    assert result['command']['argv'][-4:] == ['--pod', 'p1', '--reload-a', '--reload-b']
    assert result['command']['stdout_lines'] == ['ran']
    assert (tmp_path / 'a.conf').read_text() == 'a\n'
    assert stat.S_IMODE((tmp_path / 'b.conf').stat().st_mode) == 0o600
    page = (tmp_path / 'index.php').stat()
    assert (page.st_uid, page.st_gid) == (pwd.getpwnam(OTHER_USER).pw_uid, grp.getgrnam(OTHER_GROUP).gr_gid)
    assert [d['after_header'] for d in result['diff']] == [str(tmp_path / name) for name in ('a.conf', 'b.conf', 'index.php')]

    second = converge(args, diff=True)
    assert len(second.commands) == 1
    assert second.result['changed'] is False
    assert 'diff' not in second.result
    assert second.result['command']['argv'][-2:] == ['--pod', 'p1']
    assert len(log.read_text().splitlines()) == 2


def test_check_mode_writes_nothing_and_runs_the_command_with_its_check_flag(tmp_path, converge):
    command, log = recorder(tmp_path)
    (tmp_path / 'a.conf').write_text('old\n')
    run = converge(dict(files=[dict(dest=str(tmp_path / 'a.conf'), content='new\n', changed_flag='--reload-a')],
                        command=command, check_flag='--check',
                        files_after=[dict(dest=str(tmp_path / 'later' / 'keys'), content='k\n')]),
                   check_mode=True, diff=True)
    result = run.result
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert (tmp_path / 'a.conf').read_text() == 'old\n'
    assert not (tmp_path / 'later').exists()
    assert result['command']['argv'][-2:] == ['--reload-a', '--check']
    assert log.read_text().startswith("['--reload-a', '--check']")
    assert result['diff'][0]['before'] == 'old\n' and result['diff'][0]['after'] == 'new\n'


def test_check_mode_does_not_run_a_command_this_task_would_install(tmp_path, converge):
    script = tmp_path / 'tool.py'
    run = converge(dict(files=[dict(dest=str(script), content='raise SystemExit(3)\n')],
                        command=[PYTHON, str(script), 'configure'], check_flag='--check'), check_mode=True)
    assert run.result['command'] == {'skipped': True, 'reason': 'dry run: %s would be installed first' % script}
    assert not script.exists()


def test_force_false_keeps_a_file_that_exists_as_it_is(tmp_path, converge):
    page = tmp_path / 'index.php'
    page.write_text('the customer wrote this\n')
    page.chmod(0o600)
    run = converge(dict(files=[dict(dest=str(page), content='starter\n', force=False)]))
    assert run.result['changed'] is False
    assert page.read_text() == 'the customer wrote this\n'
    assert stat.S_IMODE(page.stat().st_mode) == 0o600


def test_owner_and_mode_drift_is_repaired_without_rewriting_the_content(tmp_path, converge):
    conf = tmp_path / 'a.conf'
    conf.write_text('a\n')
    os.chown(conf, pwd.getpwnam(OTHER_USER).pw_uid, -1)
    conf.chmod(0o666)
    inode = conf.stat().st_ino
    run = converge(dict(files=[dict(dest=str(conf), content='a\n')]), diff=True)
    assert run.result['files'][0]['changes'] == ['owner root:root', 'mode 0644']
    assert (conf.stat().st_uid, stat.S_IMODE(conf.stat().st_mode), conf.stat().st_ino) == (0, 0o644, inode)
    assert 'diff' not in run.result


def test_a_link_is_refused_and_left_alone(tmp_path, converge):
    target = tmp_path / 'elsewhere'
    target.write_text('keep\n')
    (tmp_path / 'a.conf').symlink_to(target)
    run = converge(dict(files=[dict(dest=str(tmp_path / 'a.conf'), content='x\n')]))
    assert run.result['failed'] is True
    assert 'is not a regular file' in run.result['msg']
    assert target.read_text() == 'keep\n'


def test_a_failing_command_fails_the_task_and_writes_no_file_after_it(tmp_path, converge):
    run = converge(dict(files=[dict(dest=str(tmp_path / 'a.conf'), content='a\n')],
                        command=[PYTHON, '-c', 'import sys; sys.stderr.write("no database\\n"); sys.exit(4)'],
                        files_after=[dict(dest=str(tmp_path / 'after'), content='x\n')]))
    assert run.result['failed'] is True
    assert run.result['msg'].endswith('exited 4: no database')
    assert run.result['changed'] is True
    assert (tmp_path / 'a.conf').exists() and not (tmp_path / 'after').exists()


def test_an_owner_that_does_not_exist_fails_unless_dry_run(tmp_path, converge):
    spec = dict(dest=str(tmp_path / 'page'), content='x\n', owner='no-such-customer', group='no-such-customer')
    dry = converge(dict(files=[spec]), check_mode=True)
    assert dry.result['changed'] is True and not dry.result.get('failed')
    real = converge(dict(files=[spec]))
    assert real.result['failed'] is True
    assert 'owner no-such-customer or group no-such-customer does not exist' in real.result['msg']
    assert not (tmp_path / 'page').exists()


def test_values_are_data_never_shell(tmp_path, converge):
    """Shell syntax in a content, an argument or stdin is written and passed as it is, never run."""
    command, log = recorder(tmp_path)
    trap = tmp_path / 'pwned'
    nasty = '$(touch %s); `touch %s` \' " ; touch %s' % (trap, trap, trap)
    run = converge(dict(files=[dict(dest=str(tmp_path / 'a.conf'), content=nasty)], command=command + [nasty], stdin=nasty))
    assert not run.result.get('failed'), run.result
    assert (tmp_path / 'a.conf').read_text() == nasty
    assert repr(nasty) in log.read_text()
    assert not trap.exists()
    assert nasty not in run.commands[0]


@pytest.mark.parametrize('args, message', [
    (dict(files=[dict(dest='relative/a.conf', content='x')]), 'files[0].dest must be an absolute path'),
    (dict(files_after=[dict(dest='/tmp/x', content='x', mode='rw-r--r--')]), 'files_after[0]: mode must be an octal mode'),
    (dict(check_flag='--check'), 'check_flag needs a command'),
    (dict(stdin='x'), 'stdin needs a command'),
])
def test_bad_parameters_are_refused_before_anything_runs(converge, args, message):
    run = converge(args)
    assert run.result['failed'] is True
    assert run.result['msg'].startswith(message)
    assert run.commands == []


def test_no_python_on_the_target_is_a_clear_failure(tmp_path, action_runner):
    run = action_runner(ActionModule, dict(python=str(tmp_path / 'no-python')), name='mpanel.cloudpods.pod_converge')
    assert run.result['failed'] is True
    assert run.result['msg'].startswith('pod_converge did not run in the target (rc 127)')
