# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A minimal harness that runs an action plugin as the task executor would, in-process.

The action gets ansible-core's real ``local`` connection (its shell commands run on this machine
with /bin/sh, as they would on the Proxmox host over SSH), a real PlayContext, DataLoader and
Templar, and a stand-in task carrying the args, check mode and diff mode. Each shell command the
action runs is recorded, and a test can answer one in its place (to stand in for a host that fails).

    run = action_runner(ActionModule, dict(cron_file=...), check_mode=True, diff=True)
    run.result, run.commands
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import email
import socket

import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
from ansible.template import Templar


class FakeTask(object):
    """What ActionBase reads from a task: its action, args, check and diff mode, async."""

    def __init__(self, action, args, check_mode=False, diff=False):
        self.action = action
        self.args = args
        self.check_mode = check_mode
        self.diff = diff
        self.async_val = 0


class ActionRun(object):

    def __init__(self, result, commands):
        self.result = result
        self.commands = commands


def record_commands(connection, commands, answer=None):
    """Make ``connection`` record every command in ``commands``; ``answer`` may reply instead of the host."""
    execute = connection.exec_command

    def exec_command(cmd, in_data=None, sudoable=True):
        commands.append(cmd)
        answered = answer(cmd) if answer else None
        return answered if answered is not None else execute(cmd, in_data=in_data, sudoable=sudoable)
    connection.exec_command = exec_command
    return connection


@pytest.fixture
def action_runner(tmp_path):
    """``run(ActionModule, args, check_mode=False, diff=False, answer=None)`` -> ActionRun.

    ``answer(cmd)`` may return ``(rc, stdout_bytes, stderr_bytes)`` to reply for the host, or None.
    """
    def run(action_class, args, check_mode=False, diff=False, answer=None, name='mpanel.cloudpods.action'):
        play_context = PlayContext()
        commands = []
        connection = record_commands(connection_loader.get('local', play_context, None), commands, answer)
        loader = DataLoader()
        loader.set_basedir(str(tmp_path))
        action = action_class(FakeTask(name, dict(args), check_mode=check_mode, diff=diff), connection,
                              play_context, loader, Templar(loader=loader), None)
        return ActionRun(action.run(task_vars={}), commands)
    return run


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


class SmtpServer(object):
    """An aiosmtpd handler keeping each message with its envelope and the user that logged in."""

    user = 'relay'
    password = 's3cret-relay-password'

    def __init__(self, port):
        self.port = port
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # pylint: disable=invalid-name,unused-argument
        self.messages.append(dict(sender=envelope.mail_from, to=list(envelope.rcpt_tos),
                                  login=session.auth_data.login if session.authenticated else None,
                                  message=email.message_from_bytes(envelope.original_content)))
        return '250 OK'

    def authenticate(self, server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
        from aiosmtpd.smtp import AuthResult  # pylint: disable=import-outside-toplevel
        accepted = auth_data.login == self.user.encode() and auth_data.password == self.password.encode()
        return AuthResult(success=accepted, auth_data=auth_data if accepted else None)


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback (aiosmtpd, AUTH without TLS for ``user``/``password``): a SmtpServer."""
    from aiosmtpd.controller import Controller  # pylint: disable=import-outside-toplevel

    server = SmtpServer(free_port())
    controller = Controller(server, hostname='127.0.0.1', port=server.port,
                            authenticator=server.authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
