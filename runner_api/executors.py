"""Executors: how a queued operation becomes a playbook run.

``Executor.run(request, on_event, cancel)`` is the whole interface: run the operation's playbook
with the request's extra vars, report each step through ``on_event`` (a dict ready for the events
table, secrets already scrubbed), stop early when ``cancel()`` turns true, and return a
``RunResult`` with the ``set_stats`` data. ``LocalAnsibleRunner`` runs ansible-runner on this
machine; an AWX executor (launch a job template, follow its events) fits the same interface.
"""

import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .settings import REPO_ROOT, scrub

PLAYBOOKS = {
    "CREATE_CONTAINER": "provision.yml",
    "RESTART": "restart.yml",
    "SUSPEND": "suspend.yml",
    "RESUME": "resume.yml",
    "TERMINATE": "deprovision.yml",
}
MESSAGE_LIMIT = 1000
RESULT_EVENTS = {
    "runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable", "runner_item_on_failed": None,
}
GUARD_SOURCE = Path(__file__).resolve().parent / "playbook_guard.py"


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


class LocalAnsibleRunner(Executor):
    """ansible-runner in a fresh private directory per run (mode 0700, deleted afterwards)."""

    def __init__(self, settings):
        self.settings = settings
        self.secrets = settings.secrets()

    def _environment(self, private_dir):
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        path = bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or str(REPO_ROOT / ".build" / "collections")
        env = dict(self.settings.playbook_env)  # secrets as environment, never as extra vars
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

    def _inventory(self, private_dir):
        configured = os.environ.get("CLOUDPODS_INVENTORY")
        if configured:
            return configured
        path = os.path.join(private_dir, "inventory", "hosts")
        os.makedirs(os.path.dirname(path))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        return path

    @staticmethod
    def _operator_vars():
        """Site settings for the playbooks (not secrets, not per order): CLOUDPODS_EXTRA_VARS_FILE."""
        path = os.environ.get("CLOUDPODS_EXTRA_VARS_FILE")
        if not path:
            return {}
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}

    def run(self, request, on_event, cancel=lambda: False):
        import ansible_runner  # pylint: disable=import-outside-toplevel
        name = PLAYBOOKS.get(request.operation)
        playbook = self.settings.playbook_dir / name if name else None
        if playbook is None or not playbook.is_file():
            return RunResult("error", None, error=f"no playbook for {request.operation} ({playbook})",
                             retryable=False)
        private_dir = tempfile.mkdtemp(prefix="cloudpods-run-")
        try:
            guard = os.path.join(private_dir, "ansible-playbook-guard")
            with open(guard, "w", encoding="utf-8") as handle:
                handle.write(f"#!{sys.executable}\n" + GUARD_SOURCE.read_text(encoding="utf-8"))
            os.chmod(guard, 0o700)
            collector = _EventCollector(self.secrets, on_event, with_diff=request.check)
            extra_vars = self._operator_vars()
            extra_vars.update(request.extra_vars)
            # With the guard as "binary" ansible-runner passes no playbook itself: it goes first in cmdline.
            cmdline = [str(playbook)] + (["--check", "--diff"] if request.check else [])
            runner = ansible_runner.run(
                private_data_dir=private_dir, inventory=self._inventory(private_dir),
                extravars=extra_vars, envvars=self._environment(private_dir), binary=guard,
                cmdline=shlex.join(cmdline), quiet=True,
                event_handler=collector.handle, cancel_callback=cancel,
                timeout=self.settings.playbook_timeout_seconds,
                settings={"pexpect_timeout": 0.5, "suppress_ansible_output": True})
            status = runner.status
            error = None
            if status != "successful":
                error = collector.first_failure or f"the playbook ended {status} (rc {runner.rc})"
                if status == "failed" and not collector.first_failure:
                    tail = scrub(runner.stdout.read()[-600:], self.secrets) if runner.stdout else ""
                    error += ": " + " ".join(tail.split())[-400:] if tail else ""
            return RunResult(status, runner.rc, collector.stats, error)
        finally:
            shutil.rmtree(private_dir, ignore_errors=True)


class _EventCollector:
    """Turns ansible-runner events into event rows; keeps the first failure and the set_stats data."""

    def __init__(self, secrets, on_event, with_diff=False):
        self.secrets = secrets
        self.with_diff = with_diff
        self.on_event = on_event
        self.first_failure = None
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
