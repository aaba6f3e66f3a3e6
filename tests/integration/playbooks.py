# -*- coding: utf-8 -*-
# Copyright (c) 2025, mPanel Cloud Pods team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run real ``ansible-playbook`` processes from tests and read their per-task results.

A playbook is written to a temporary directory and run with the JSON stdout callback
(``ansible.posix.json``) against ``localhost`` (local connection, this venv's Python), with the
collection importable through ``.build/collections`` and the lab's settings in the environment.

    run = run_playbook([{'mpanel.cloudpods.pod_container': {'hostname': 'p1', 'state': 'started'}}],
                       env=lab_env, check=True, diff=True)
    run.rc, run.result(0)['vmid'], run.stdout

``start_playbook()`` returns a handle without waiting, for runs in parallel.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
COLLECTION_LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'mpanel', 'cloudpods')


def ensure_collection_link():
    """``.build/collections/ansible_collections/mpanel/cloudpods`` -> the repository root (relative)."""
    if not os.path.lexists(COLLECTION_LINK):
        os.makedirs(os.path.dirname(COLLECTION_LINK), exist_ok=True)
        os.symlink(os.path.join('..', '..', '..', '..'), COLLECTION_LINK)


class PlaybookRun(object):
    """The outcome of one ansible-playbook run."""

    def __init__(self, rc, stdout, stderr, started, ended, playbook_path):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.started = started
        self.ended = ended
        self.duration = ended - started
        self.playbook_path = playbook_path
        self.report = self._parse(stdout)
        self.tasks = self._tasks()

    @staticmethod
    def _parse(stdout):
        start = stdout.find('{')
        if start < 0:
            return {}
        try:
            return json.loads(stdout[start:])
        except ValueError:
            return {}

    def _tasks(self):
        tasks = []
        for play in self.report.get('plays', []):
            for task in play.get('tasks', []):
                info = task.get('task', {})
                hosts = task.get('hosts', {})
                result = hosts.get('localhost', next(iter(hosts.values()), {}))
                tasks.append(dict(name=info.get('name'), duration=info.get('duration', {}), result=result))
        return tasks

    @property
    def results(self):
        return [t['result'] for t in self.tasks]

    def result(self, index=0):
        """The result dict of the index-th task (raises with the output when there is none)."""
        try:
            return self.tasks[index]['result']
        except IndexError:
            raise AssertionError('no result for task %d; rc=%s\nstdout:\n%s\nstderr:\n%s'
                                 % (index, self.rc, self.stdout[-4000:], self.stderr[-4000:]))

    def task_times(self, index=0):
        """Wall-clock (start, end) of the index-th task as seen by the controller (epoch seconds; None if absent)."""
        from datetime import datetime, timezone
        duration = self.tasks[index]['duration']
        return tuple(datetime.strptime(duration[key].replace('Z', ''), '%Y-%m-%dT%H:%M:%S.%f')
                     .replace(tzinfo=timezone.utc).timestamp() if duration.get(key) else None
                     for key in ('start', 'end'))

    def task_end(self, index=0):
        """Wall-clock end of the index-th task as seen by the controller (epoch seconds), or None."""
        return self.task_times(index)[1]

    def __repr__(self):
        return '<PlaybookRun rc=%s tasks=%d %.2fs>' % (self.rc, len(self.tasks), self.duration)


class PlaybookHandle(object):
    """A started ansible-playbook process; its output is collected in the background so that
    the end time of each of several parallel runs is its own, not when wait() was called."""

    def __init__(self, process, started, playbook_path, workdir):
        self.process = process
        self.started = started
        self.playbook_path = playbook_path
        self.workdir = workdir
        self._output = None
        self._ended = None
        self._reader = threading.Thread(target=self._collect)
        self._reader.daemon = True
        self._reader.start()

    def _collect(self):
        self._output = self.process.communicate()
        self._ended = time.time()

    @property
    def pid(self):
        return self.process.pid

    def wait(self, timeout=600):
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.process.kill()
            self._reader.join()
            raise AssertionError('ansible-playbook %s did not finish within %s s' % (self.playbook_path, timeout))
        stdout, stderr = self._output
        run = PlaybookRun(self.process.returncode, stdout, stderr, self.started, self._ended, self.playbook_path)
        self.workdir.cleanup()
        return run


def build_playbook(tasks, name='test', vars=None, module_defaults=None):
    play = {'name': name, 'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}
    if vars:
        play['vars'] = vars
    if module_defaults:
        play['module_defaults'] = module_defaults
    return [play]


def playbook_env(env=None, extra_env=None):
    """os.environ + the lab settings + what makes ansible-playbook use this checkout and this venv."""
    ensure_collection_link()
    result = dict(os.environ)
    result.update(env or {})
    result.update({
        'PATH': VENV_BIN + os.pathsep + result.get('PATH', ''),
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
        'ANSIBLE_STDOUT_CALLBACK': 'ansible.posix.json',
        'ANSIBLE_CALLBACK_RESULT_FORMAT': 'json',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
        'ANSIBLE_DEPRECATION_WARNINGS': 'False',
        'ANSIBLE_RETRY_FILES_ENABLED': 'False',
        'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
    })
    result.update(extra_env or {})
    return dict((k, v) for k, v in result.items() if v is not None)


def start_playbook(tasks=None, playbook=None, env=None, extra_env=None, check=False, diff=False, extra_vars=None,
                   verbosity=0, vars=None, module_defaults=None):
    """Write the playbook (``tasks`` for one localhost play, or a whole ``playbook`` list) and start it."""
    workdir = tempfile.TemporaryDirectory(prefix='cloudpods-playbook-')
    path = os.path.join(workdir.name, 'playbook.yml')
    with open(path, 'w') as handle:
        json.dump(playbook if playbook is not None else build_playbook(tasks, vars=vars,
                                                                       module_defaults=module_defaults),
                  handle, indent=2)  # JSON is YAML
    inventory = os.path.join(workdir.name, 'inventory.ini')
    with open(inventory, 'w') as handle:
        handle.write('localhost ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable)
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory, path]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    if extra_vars:
        cmd.extend(['-e', json.dumps(extra_vars)])
    if verbosity:
        cmd.append('-' + 'v' * verbosity)
    started = time.time()
    process = subprocess.Popen(cmd, cwd=workdir.name, env=playbook_env(env, extra_env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True)
    return PlaybookHandle(process, started, path, workdir)


def run_playbook(tasks=None, timeout=600, **kwargs):
    """Run a playbook to the end; see start_playbook() for the arguments."""
    return start_playbook(tasks, **kwargs).wait(timeout=timeout)


def assert_task_ok(run, result):
    """A one-task playbook run and its task result both succeeded."""
    assert run.rc == 0 and not result.get('failed'), 'run failed: %s\n%s' % (result.get('msg'), run.stderr[-2000:])
    return result


def assert_task_failed(run, result):
    assert run.rc != 0 and result.get('failed'), 'expected a failure, got %r' % (result,)
    return result


def write_requests(requests):
    """The requests of a recorded API log that change something."""
    return [r for r in requests if r.is_write]


class PrivateLab(object):
    """A simulator of our own (``tests/lab/lab.py``'s Lab in a temporary directory).

    The shared lab (``tests/lab/lab up``) may be used by other test sessions at the same time;
    tests that reset it, inject faults or change task durations run against a private one.
    """

    def __init__(self, nodes=None):
        """``nodes``: a cluster of that many nodes (``lab up --nodes``); None: the launcher's default."""
        self.tmp = tempfile.TemporaryDirectory(prefix='cloudpods-lab-')
        lab_dir = os.path.join(ROOT, 'tests', 'lab')
        if lab_dir not in sys.path:
            sys.path.insert(0, lab_dir)
        import lab as lab_module  # pylint: disable=import-outside-toplevel
        from pathlib import Path  # pylint: disable=import-outside-toplevel
        self.lab = lab_module.Lab(Path(self.tmp.name), nodes=nodes)

    def __enter__(self):
        self.lab.up()
        return self.lab.env()

    def __exit__(self, *exc_info):
        self.lab.down()
        self.tmp.cleanup()
