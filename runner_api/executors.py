"""Executors: how a queued operation becomes a playbook run.

``Executor.run(request, on_event, cancel)`` is the whole interface: run the operation's playbook
with the request's extra vars, report each step through ``on_event`` (a dict ready for the events
table, secrets already scrubbed), stop early when ``cancel()`` turns true, and return a
``RunResult`` with the ``set_stats`` data. ``LocalAnsibleRunner`` runs ansible-runner on this
machine; ``awx_executor.AwxExecutor`` launches the operation's AWX job template and follows its
events. ``make_executor`` picks one by ``CLOUDPODS_EXECUTOR``.
"""

import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

from . import operations, preflight
from .runscope import RunScope
from .settings import SECRET_NAME_PATTERN, scrub

# Operation -> playbook file, from the registry (runner_api/operations.py); read-only.
PLAYBOOKS = MappingProxyType(operations.playbooks())
MESSAGE_LIMIT = 1000
RESULT_EVENTS = {
    "runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable", "runner_item_on_failed": None,
}
GUARD_SOURCE = Path(__file__).resolve().parent / "playbook_guard.py"
# The playbook's environment besides our own variables (see playbook_environment).
BASE_ENV_NAMES = ("HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SSL_CERT_FILE", "SSL_CERT_DIR",
                  "REQUESTS_CA_BUNDLE")
BASE_ENV_PREFIXES = ("LC_", "ANSIBLE_")
RUNNER_ENV_PREFIXES = ("AWX_", "RUNNER_", "ANSIBLE_")
RUNNER_ENV_NAMES = ("ORIGINAL_STDOUT_CALLBACK", "AD_HOC_COMMAND_ID")
# A failed assert in a play named "Check ..." is a precondition of the playbook (bad input, missing
# settings): retrying cannot help, so the task fails at once.
PRECONDITION_PLAY_PREFIX = "Check "
PRECONDITION_ACTIONS = ("ansible.builtin.assert", "assert", "ansible.builtin.fail", "fail")
# A site setting (cloudpods_*) a task needs and nobody set: the configuration, not the moment, is wrong.
UNDEFINED_SETTING = re.compile(r"'(cloudpods_[a-z0-9_]+)' is undefined")
# A task that fails on what is installed (a role or module the collection path does not hold) fails again.
NOT_INSTALLED = re.compile(r"the role '[^']+' was not found|couldn't resolve module/action '[^']+'")


@dataclass
class RunRequest:
    operation: str
    extra_vars: dict
    check: bool = False


@dataclass
class RunResult:
    status: str  # successful | failed | canceled | timeout | error
    rc: int | None
    stats: dict = field(default_factory=dict)
    error: str | None = None
    retryable: bool = True

    @property
    def ok(self):
        return self.status == "successful"


class Executor:
    """The interface; see the module docstring."""

    def run(self, request, on_event, cancel=lambda: False):
        raise NotImplementedError


def make_executor(settings):
    """The executor CLOUDPODS_EXECUTOR names: ``LocalAnsibleRunner`` (local) or ``AwxExecutor`` (awx)."""
    if settings.executor == "awx":
        from .awx_executor import AwxExecutor  # pylint: disable=import-outside-toplevel
        return AwxExecutor(settings)
    return LocalAnsibleRunner(settings)


def _message(result):
    """What a failed or changed step says, in one line (no_log results are already censored)."""
    if not isinstance(result, dict):
        return None
    for key in ("msg", "reason", "stderr", "message"):
        value = result.get(key)
        if value:
            text = value if isinstance(value, str) else str(value)
            return " ".join(text.split())[:MESSAGE_LIMIT]
    return None


class _UntrustedDumper(yaml.SafeDumper):
    """YAML where every string is ``!unsafe``: Ansible carries it as data and never templates it."""


def _unsafe_str(dumper, value):
    if not value:
        # ansible-core 2.19 loads `!unsafe ""` as None; an empty string holds no template anyway.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("!unsafe", value, style='"')


_UntrustedDumper.add_representer(str, _unsafe_str)


def write_untrusted_vars(path, variables):
    """Write extra vars that came from outside (an order, a caller) as ``!unsafe`` YAML (mode 0600).

    ansible-core 2.19 trusts templates in values loaded with ``-e @file`` and on the command line:
    a ``{{ lookup('pipe', ...) }}`` in an order field would run on the worker. Tagged unsafe, a
    value is carried literally through every template, filter and module argument.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.dump(dict(variables), handle, Dumper=_UntrustedDumper, allow_unicode=False, default_flow_style=False)
    return path


def playbook_environment(runner_env, ours):
    """The environment ansible-playbook gets: ours, what ansible-runner set up, a few basics; nothing else.

    ``runner_env`` is ansible-runner's (seeded from the worker's whole environment); anything the
    worker's environment holds besides the allow-list (another service's password, a variable
    planted for a probe) stays out of the playbook and out of ansible-runner's artifacts.
    """
    env = {}
    for name, value in runner_env.items():
        inherited = os.environ.get(name) == value and name not in ours
        if (name in ours or name in BASE_ENV_NAMES or name.startswith(BASE_ENV_PREFIXES)
                or (not inherited and name.startswith(RUNNER_ENV_PREFIXES)) or name in RUNNER_ENV_NAMES):
            env[name] = value
    return env


class LocalAnsibleRunner(Executor):
    """ansible-runner in a private directory per run (``runscope.RunScope``), removed afterwards.

    Order data reaches the playbook only as ``!unsafe`` extra vars; the playbook's environment is
    an allow-list; secrets reach ansible-playbook through the guard's hand-off, never a file; the
    whole run lives in a cgroup that is killed with the worker.
    """

    def __init__(self, settings):
        self.settings = settings
        self.secrets = settings.secrets()
        self.secret_env = {name: value for name, value in settings.playbook_env.items()
                           if SECRET_NAME_PATTERN.search(name)}
        self.public_env = {name: value for name, value in settings.playbook_env.items()
                           if name not in self.secret_env}

    def _environment(self, private_dir, scope):
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        path = bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        # The collections the playbooks run with: the settings' (ANSIBLE_COLLECTIONS_PATH, in a checkout
        # .build/collections, else Ansible's default), where the installed mpanel.cloudpods was found.
        collections = preflight.collections_path(self.settings)
        env = dict(self.public_env)  # secrets go through the guard's hand-off, never as variables
        env.update(scope.env())
        env.update({
            "PATH": path,
            "ANSIBLE_COLLECTIONS_PATH": collections,
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": os.path.join(private_dir, "tmp"),
            "CLOUDPODS_WORKER_PID": str(os.getpid()),
            "CLOUDPODS_ANSIBLE_PLAYBOOK": shutil.which("ansible-playbook", path=path) or "ansible-playbook",
        })
        return env

    @staticmethod
    def _inventory(private_dir):
        configured = preflight.inventory_file()
        if configured:
            return configured
        path = os.path.join(private_dir, "inventory", "hosts")
        os.makedirs(os.path.dirname(path))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(preflight.default_inventory_text())
        return path

    @staticmethod
    def _operator_vars_args():
        """Site settings for the playbooks (the operator's file, trusted): CLOUDPODS_EXTRA_VARS_FILE."""
        path = preflight.extra_vars_file()
        return ["-e", "@" + str(path)] if path else []

    def run(self, request, on_event, cancel=lambda: False):
        operation = operations.find(request.operation)
        if operation is None:
            return RunResult("error", None, error=str(operations.UnknownOperation(request.operation)),
                             retryable=False)
        playbook = self.settings.playbook_dir / operation.playbook
        if not playbook.is_file():
            return RunResult("error", None, error=f"no playbook for {request.operation} ({playbook})",
                             retryable=False)
        # A configuration error (site file, inventory, collection) fails the task at once, named.
        problem = preflight.run_problem(self.settings, request.operation)
        if problem:
            return RunResult("error", None, error=scrub(problem, self.secrets), retryable=False)
        from ansible_runner.interface import init_runner  # pylint: disable=import-outside-toplevel
        scope = RunScope(self.settings.run_dir, secret_env=self.secret_env)
        try:
            private_dir = str(scope.path)
            guard = os.path.join(private_dir, "ansible-playbook-guard")
            with open(guard, "w", encoding="utf-8") as handle:
                handle.write(f"#!{sys.executable}\n" + GUARD_SOURCE.read_text(encoding="utf-8"))
            os.chmod(guard, 0o700)
            collector = _EventCollector(self.secrets, on_event, with_diff=request.check)
            order_vars = write_untrusted_vars(os.path.join(private_dir, "order-vars.yml"), request.extra_vars)
            # With the guard as "binary" ansible-runner passes no playbook itself: it goes first in cmdline.
            # Operator settings first, then the order's (untrusted) values, which win as before.
            cmdline = ([str(playbook)] + self._operator_vars_args() + ["-e", "@" + order_vars]
                       + (["--check", "--diff"] if request.check else []))
            ours = self._environment(private_dir, scope)
            runner = init_runner(
                private_data_dir=private_dir, inventory=self._inventory(private_dir),
                envvars=ours, binary=guard, cmdline=shlex.join(cmdline), quiet=True,
                suppress_env_files=True, event_handler=collector.handle, cancel_callback=cancel,
                timeout=self.settings.playbook_timeout_seconds,
                settings={"pexpect_timeout": 0.5, "suppress_ansible_output": True})
            runner.config.env = playbook_environment(runner.config.env, ours)
            runner.run()
            status = runner.status
            error = None
            retryable = True
            if status != "successful":
                error = collector.first_failure or f"the playbook ended {status} (rc {runner.rc})"
                refused = False  # ansible-playbook itself refused before its first task (a missing role, bad YAML)
                if status == "failed" and not collector.first_failure:
                    output = scrub(runner.stdout.read(), self.secrets) if runner.stdout else ""
                    error += ": " + preflight.error_lines(output) if output.strip() else ""
                    refused = not collector.started and preflight.ansible_refused(output)
                retryable = not (collector.precondition_failed or collector.config_error or refused)
            return RunResult(status, runner.rc, collector.stats, error, retryable)
        finally:
            scope.close()


class _EventCollector:
    """Turns ansible-runner events into event rows; keeps the first failure and the set_stats data."""

    def __init__(self, secrets, on_event, with_diff=False):
        self.secrets = secrets
        self.with_diff = with_diff
        self.on_event = on_event
        self.first_failure = None
        self.precondition_failed = False
        self.config_error = False  # the failure is one of the configuration: retrying cannot help
        self.stats = {}
        self.started = {}

    def handle(self, event):
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            self.stats = data.get("artifact_data") or {}
            return False
        if kind == "playbook_on_task_start":
            self.started[data.get("task_uuid")] = time.monotonic()
            self._emit(data, None, "started", None, None)
            return False
        if kind not in RESULT_EVENTS or kind == "runner_item_on_failed":
            return False
        result = data.get("res") or {}
        status = RESULT_EVENTS[kind]
        if status == "ok" and result.get("changed"):
            status = "changed"
        if status == "failed" and data.get("ignore_errors"):
            status = "ignored"
        message = scrub(_message(result), self.secrets) if status in ("failed", "unreachable", "changed") else None
        duration = data.get("duration")
        duration_ms = int(duration * 1000) if isinstance(duration, (int, float)) else None
        diff = None
        if self.with_diff and status == "changed" and result.get("diff"):
            diff = scrub(json.dumps(result["diff"], sort_keys=True, default=str), self.secrets)
        step = self._emit(data, data.get("host"), status, duration_ms, message, diff)
        if status in ("failed", "unreachable") and self.first_failure is None:
            self.first_failure = f"Step '{step}' failed" + (f": {message}" if message else "")
            action = data.get("resolved_action") or data.get("task_action")
            self.precondition_failed = (status == "failed" and action in PRECONDITION_ACTIONS
                                        and str(data.get("play") or "").startswith(PRECONDITION_PLAY_PREFIX))
            undefined = UNDEFINED_SETTING.search(message or "") if status == "failed" else None
            if undefined:
                self.config_error = True
                self.first_failure += (f" (site setting {undefined.group(1)}: set it in the file "
                                       f"{preflight.EXTRA_VARS_SETTING} names)")
            elif status == "failed" and NOT_INSTALLED.search(message or ""):
                self.config_error = True
                self.first_failure += " (ANSIBLE_COLLECTIONS_PATH: is the current collection installed there?)"
        return False  # nothing needs to stay in the (soon deleted) artifacts

    def _emit(self, data, host, status, duration_ms, message, diff=None):
        task = data.get("task") or data.get("name") or "?"
        role = data.get("role")
        step = scrub(f"{role} : {task}" if role else task, self.secrets)[:300]
        event = {"step": step, "host": host, "status": status, "duration_ms": duration_ms, "message": message}
        if diff is not None:
            event["diff"] = diff  # dry runs only; never stored
        self.on_event(event)
        return step
