"""UPID tasks: background workers with PVE's status and log semantics.

A task sleeps its configured duration, runs its ``work`` (backend calls, outside the
state lock), then commits the result and flips to ``stopped`` in one step under the
state lock. So whoever sees ``status: stopped`` also sees the finished state, and a
failed task is visible the moment it ends.
"""

import itertools
import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from .backend import BackendError

LOG = logging.getLogger("pvesim.tasks")
MAX_FINISHED_TASKS = 2000
_BOOT_TIME = time.time() - 3600  # pretend the node booted an hour ago


class TaskError(Exception):
    """Ends a task with this text as its exitstatus."""


@dataclass
class TaskFault:
    """Injected outcome for the next task of a type: an error text or N warnings."""

    message: str | None = None
    warnings: int = 0


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str  # the full token id, as in the UPID
    generation: int
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    lines: list = field(default_factory=list)
    abort: threading.Event = field(default_factory=threading.Event)
    warnings: int = 0

    def log(self, text: str) -> None:
        self.lines.append(text)

    def pause(self, seconds: float) -> None:
        """Simulated work time; a stop request (DELETE task) interrupts it."""
        if seconds > 0 and self.abort.wait(seconds):
            raise TaskError("interrupted by signal")
        if self.abort.is_set():
            raise TaskError("interrupted by signal")

    def warn(self, text: str) -> None:
        self.warnings += 1
        self.lines.append(f"WARN: {text}")

    def finish(self, exitstatus: str) -> None:
        self.exitstatus = exitstatus
        self.endtime = int(time.time())
        self.status = "stopped"
        if exitstatus == "OK":
            self.log("TASK OK")
        elif exitstatus.startswith("WARNINGS"):
            self.log(f"TASK {exitstatus}")
        else:
            self.log(f"TASK ERROR: {exitstatus}")

    def _identity(self) -> dict:
        """PVE splits a token owner into ``user`` and ``tokenid``."""
        user, _sep, token = self.user.partition("!")
        identity = {"upid": self.upid, "node": self.node, "pid": self.pid,
                    "pstart": self.pstart, "starttime": self.starttime, "type": self.type,
                    "id": self.id, "user": user}
        if token:
            identity["tokenid"] = token
        return identity

    def status_view(self) -> dict:
        view = self._identity()
        view["status"] = self.status
        if self.status == "stopped":
            view["exitstatus"] = self.exitstatus
        return view

    def list_view(self) -> dict:
        view = self._identity()
        if self.status == "stopped":
            view["status"] = self.exitstatus
            view["endtime"] = self.endtime
        return view

    def state_view(self) -> dict:
        view = self.status_view()
        view["log"] = list(self.lines)
        view["endtime"] = self.endtime
        return view


def make_upid(node: str, pid: int, pstart: int, starttime: int, task_type: str,
              task_id: str, user: str) -> str:
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{task_id}:{user}:"


class TaskManager:
    """Creates, runs and remembers tasks for one node."""

    def __init__(self, node: str, state_lock, duration_for: Callable[[str], float],
                 take_fault: Callable[[str], TaskFault | None]):
        self.node = node
        self.state_lock = state_lock
        self.duration_for = duration_for
        self.take_fault = take_fault
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.generation = 0
        self._pids = itertools.count(random.randint(0x10000, 0x3FFFFF))

    def start(self, task_type: str, task_id, user: str, work: Callable[[Task], object],
              on_success: Callable | None = None, on_failure: Callable | None = None,
              error_prefix: str = "", prepare: Callable[[Task], None] | None = None,
              duration: float | None = None, node: str | None = None) -> Task:
        """Create a task (on ``node``, default the manager's) and run it in a thread. Call with the state lock held.

        In the thread: ``prepare`` (the checks and locks a PVE worker takes first; it
        takes the state lock itself), then the task type's duration, then an injected
        fault if one is queued, then ``work`` (outside the lock), then ``on_success`` or
        ``on_failure`` and the status flip, together under the state lock.
        """
        now = time.time()
        pid = next(self._pids)
        pstart = int((now - _BOOT_TIME) * 100)
        task_id = "" if task_id is None else str(task_id)
        node = node or self.node
        upid = make_upid(node, pid, pstart, int(now), task_type, task_id, user)
        task = Task(upid=upid, node=node, pid=pid, pstart=pstart, starttime=int(now),
                    type=task_type, id=task_id, user=user, generation=self.generation)
        self.tasks[upid] = task
        self._forget_old()
        if duration is None:
            duration = self.duration_for(task_type)
        runner = _Runner(self, task, prepare, work, on_success, on_failure, error_prefix,
                         self.take_fault(task_type), duration)
        threading.Thread(target=runner.run, name=f"task-{task_type}-{task_id}", daemon=True).start()
        return task

    def get(self, upid: str) -> Task | None:
        return self.tasks.get(upid)

    def stop(self, upid: str) -> None:
        task = self.tasks.get(upid)
        if task is not None and task.status == "running":
            task.abort.set()

    def running(self) -> list[Task]:
        return [task for task in self.tasks.values() if task.status == "running"]

    def reset(self) -> None:
        """Forget every task; running ones finish without touching the new state."""
        self.generation += 1
        for task in self.tasks.values():
            task.abort.set()
        self.tasks.clear()

    def _forget_old(self) -> None:
        finished = [upid for upid, task in self.tasks.items() if task.status == "stopped"]
        for upid in finished[:max(0, len(finished) - MAX_FINISHED_TASKS)]:
            del self.tasks[upid]


class _Runner:
    """The body of one task thread."""

    def __init__(self, manager, task, prepare, work, on_success, on_failure, error_prefix, fault,
                 duration):
        self.manager = manager
        self.task = task
        self.prepare = prepare
        self.work = work
        self.on_success = on_success
        self.on_failure = on_failure
        self.error_prefix = error_prefix
        self.fault = fault
        self.duration = duration

    def run(self) -> None:
        result, error = self._work()
        with self.manager.state_lock:
            if self.task.generation != self.manager.generation:
                self.task.finish("interrupted by lab reset")
                return
            if error is None:
                error = self._commit(result)
            if error is not None:
                self._rollback(error)

    def _work(self):
        try:
            if self.prepare is not None:
                with self.manager.state_lock:
                    if self.task.generation != self.manager.generation:
                        raise TaskError("interrupted by lab reset")
                    self.prepare(self.task)
            self.task.pause(self.duration)
            if self.fault is not None and self.fault.message:
                raise TaskError(self.fault.message)
            return self.work(self.task), None
        except (TaskError, BackendError) as exc:  # the text is the exitstatus, as in PVE
            return None, str(exc)
        except Exception as exc:  # a backend bug must still end the task visibly
            LOG.exception("task %s crashed", self.task.upid)
            return None, f"{type(exc).__name__}: {exc}"

    def _commit(self, result) -> str | None:
        try:
            if self.on_success is not None:
                self.on_success(self.task, result)
        except TaskError as exc:
            return str(exc)
        warnings = self.task.warnings
        if self.fault is not None and self.fault.warnings:
            for _number in range(self.fault.warnings):
                self.task.warn("injected warning")
            warnings = self.task.warnings
        self.task.finish(f"WARNINGS: {warnings}" if warnings else "OK")
        return None

    def _rollback(self, error: str) -> None:
        try:
            if self.on_failure is not None:
                self.on_failure(self.task, error)
        except Exception:  # cleanup errors are warnings in PVE too
            LOG.exception("cleanup of task %s failed", self.task.upid)
        self.task.finish(self.error_prefix + error)
