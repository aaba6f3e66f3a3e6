# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The logic of mpanel.cloudpods.pod_backup_schedule, used by its action plugin (private to this collection).

The action looks at the host with one shell command (``probe_command()``, read by ``parse_probe()``),
decides with ``changes()`` and, only when something changes, runs ``script()`` of the actions it chose.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import shlex

from ansible_collections.mpanel.cloudpods.plugins.plugin_utils.file_modes import octal_mode_error

# Paths are on the target, so type str: a controller-side ``path`` would expand ``~`` there.
ARGUMENT_SPEC = dict(
    cron_file=dict(type='str', required=True),
    content=dict(type='str'),
    cron_mode=dict(type='str', default='0644'),
    backup_dir=dict(type='str'),
    backup_dir_mode=dict(type='str', default='0750'),
    state=dict(type='str', default='present', choices=['present', 'absent']),
    stale_file=dict(type='str'),
    script_file=dict(type='str'),
    script_content=dict(type='str'),
    script_mode=dict(type='str', default='0755'),
)
REQUIRED_IF = [('state', 'present', ('content', 'backup_dir'))]
REQUIRED_TOGETHER = [('script_file', 'script_content')]

_PROBE = ('if [ -e {s} ] || [ -L {s} ]; then echo stale; else echo -; fi; '
          'if [ -d {d} ]; then stat -c %a {d}; else echo -; fi; '
          'if [ -f {p} ]; then echo "$(stat -c %a {p}) $(sha256sum < {p})"; else echo -; fi; '
          'if [ -f {f} ]; then stat -c %a {f}; cat {f}; else echo -; fi')


def mode_error(params):
    """The message for a mode option that is not octal, or None."""
    return octal_mode_error(params, ('cron_mode', 'backup_dir_mode', 'script_mode'), '0644')


def probe_command(params):
    """One command printing whether the stale file is there, the backup directory's mode, the script's mode and
    SHA-256, the cron file's mode and its content."""
    return _PROBE.format(s=shlex.quote(params['stale_file'] or '/nonexistent/'),
                         d=shlex.quote(params['backup_dir'] or '/nonexistent/'),
                         p=shlex.quote(params.get('script_file') or '/nonexistent/'), f=shlex.quote(params['cron_file']))


def parse_probe(stdout):
    """'-\\n750\\n755 <sha256> -\\n644\\n<content>' -> (stale file there, dir mode or None,
    (script mode, script sha256) or None, cron mode or None, content or None)."""
    stale_line, dir_line, script_line, rest = stdout.split('\n', 3)
    cron_line, content = rest.split('\n', 1) if '\n' in rest else (rest, '')
    stale = stale_line.strip() == 'stale'
    dir_mode = None if dir_line.strip() == '-' else int(dir_line.strip(), 8)
    script = None
    if script_line.strip() != '-':
        words = script_line.split()
        script = (int(words[0], 8), words[1])
    if cron_line.strip() == '-':
        return stale, dir_mode, script, None, None
    return stale, dir_mode, script, int(cron_line.strip(), 8), content


def changes(params, dir_mode, cron_mode, before_content, stale=False, script=None):
    """What to do, given what the probe found (None for what is missing): (changes, diff, actions).

    ``stale``: the stale file (the marker of an earlier, terminated pod of this name) is there.
    ``script``: (mode, sha256) of the script file, or None when it is missing.

    ``actions`` are tuples for ``script()``.
    """
    cron_file = params['cron_file']
    changes, actions = [], []
    if params['state'] == 'absent':
        if before_content is not None:
            changes.append('cron file removed')
            actions.append(('remove', cron_file))
        diff = dict(before=before_content or '', after='',
                    before_header=cron_file, after_header=cron_file)
        return changes, diff, actions

    backup_dir = params['backup_dir']
    wanted_dir_mode = int(params['backup_dir_mode'], 8)
    wanted_cron_mode = int(params['cron_mode'], 8)
    dir_exists = dir_mode is not None
    if not dir_exists:
        changes.append('backup directory created')
        actions.append(('mkdir', backup_dir, wanted_dir_mode))
    elif dir_mode != wanted_dir_mode:
        changes.append('backup directory mode set')
        actions.append(('chmod', backup_dir, wanted_dir_mode))
    if stale:
        changes.append('terminated marker removed')
        actions.append(('remove', params['stale_file']))
    script_diff = None
    if params.get('script_file'):
        wanted_script_mode = int(params['script_mode'], 8)
        wanted_sum = hashlib.sha256(params['script_content'].encode('utf-8')).hexdigest()
        if script is None or script[1] != wanted_sum:
            changes.append('script written' if script is None else 'script updated')
            actions.append(('mkdir-parent', params['script_file']))
            actions.append(('write', params['script_file'], params['script_content'], wanted_script_mode))
            script_diff = dict(before_header=params['script_file'], after_header=params['script_file'],
                               before='absent\n' if script is None else 'sha256 %s\n' % script[1],
                               after='sha256 %s\n' % wanted_sum)
        elif script[0] != wanted_script_mode:
            changes.append('script mode set')
            actions.append(('chmod', params['script_file'], wanted_script_mode))
    content = params['content']
    if before_content != content:
        changes.append('cron file written')
        actions.append(('write', cron_file, content, wanted_cron_mode))
    elif cron_mode != wanted_cron_mode:
        changes.append('cron file mode set')
        actions.append(('chmod', cron_file, wanted_cron_mode))
    diff = [
        dict(before_header='%s (directory)' % backup_dir, after_header='%s (directory)' % backup_dir,
             before='present\n' if dir_exists else 'absent\n', after='present\n'),
        dict(before_header=cron_file, after_header=cron_file, before=before_content or '', after=content),
    ]
    if stale:
        diff.append(dict(before_header=params['stale_file'], after_header=params['stale_file'],
                         before='present\n', after='absent\n'))
    if script_diff:
        diff.append(script_diff)
    return changes, diff, actions


def script(actions):
    """The shell commands doing ``actions`` (see ``changes()``)."""
    quote = shlex.quote
    lines = ['set -e']
    for action in actions:
        if action[0] == 'mkdir':
            lines.append('mkdir -p %s; chmod %o %s' % (quote(action[1]), action[2], quote(action[1])))
        elif action[0] == 'chmod':
            lines.append('chmod %o %s' % (action[2], quote(action[1])))
        elif action[0] == 'mkdir-parent':
            lines.append('mkdir -p "$(dirname %s)"' % quote(action[1]))
        elif action[0] == 'remove':
            lines.append('rm -f %s' % quote(action[1]))
        elif action[0] == 'write':
            path, content, mode = action[1:]
            tmp = quote('%s.tmp%d' % (path, abs(hash(content)) % 100000))
            lines.append("printf '%%s' %s > %s; chmod %o %s; mv -f %s %s"
                         % (quote(content), tmp, mode, tmp, tmp, quote(path)))
    return '\n'.join(lines)
