"""Fault injection and the request log, both driven through ``/_lab``.

Request faults make the next N matching API calls fail. ``"after": true`` runs the
call first and then fails the response: the change happened but the client never
heard, the case an idempotent playbook must survive. ``"close": true`` drops the
connection without any response. Task faults end the next task of a type in an error
(or with warnings) after its normal duration. A task hold keeps the next task of a type
``running`` after its duration until a test releases it, so "while the task runs" is an
event a test can wait for and act in, not a guess at a sleep.
"""

import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from .tasks import TaskFault

MAX_LOGGED_REQUESTS = 5000
MAX_HOLD_SECONDS = 600.0
_SECRET_PARAMS = {"password", "ssh-public-keys", "secret", "token_value"}


@dataclass
class RequestFault:
    method: str | None = None
    path: str | None = None      # regex searched in the path below /api2/json
    count: int = 1               # -1: until cleared
    status: int = 500
    reason: str = "injected fault"
    after: bool = False          # run the request, then fail its response
    close: bool = False          # drop the connection without an answer

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return self.path is None or re.search(self.path, path) is not None


class TaskHold(TaskFault):
    """Holds one task of a type after its duration, before its work, until released.

    The task runner asks its fault for ``message`` once, in the task's own thread and outside
    the state lock, right before the work (see tasks._Runner._work). Here that question waits
    until the hold is released, or ``timeout`` seconds pass so a forgotten hold cannot wedge
    the lab, and then answers with the outcome of a task fault queued with it (if any).
    Meanwhile the task is ``running`` and its locks are held, as in a slow PVE worker.
    """

    def __init__(self, task_type: str, timeout: float = MAX_HOLD_SECONDS):
        # No TaskFault.__init__: here ``message`` and ``warnings`` are properties.
        self.task_type = task_type
        self.timeout = timeout
        self.then: TaskFault | None = None
        self.taken = False
        self.held_at: float | None = None
        self.released_at: float | None = None
        self.cancelled = False
        self.expired = False
        self._reached = threading.Event()
        self._released = threading.Event()

    @property
    def message(self) -> str | None:
        if self.held_at is None:
            self.held_at = time.time()
        self._reached.set()
        if not self._released.wait(self.timeout):
            self.expired = True
        if self.cancelled:
            return "interrupted: task hold cleared"
        return self.then.message if self.then is not None else None

    @property
    def warnings(self) -> int:
        return self.then.warnings if self.then is not None else 0

    def release(self, cancel: bool = False) -> None:
        if not self._released.is_set():
            self.cancelled = cancel
            self.released_at = time.time()
            self._released.set()

    def wait_held(self, timeout: float) -> bool:
        """Block until a task is held here (True) or ``timeout`` passes (False)."""
        return self._reached.wait(timeout)

    def state(self) -> str:
        if self._released.is_set():
            return "cancelled" if self.cancelled else "released"
        if self.expired:
            return "expired"
        if self._reached.is_set():
            return "holding"
        return "taken" if self.taken else "pending"

    def describe(self) -> dict:
        return {"type": self.task_type, "state": self.state(), "held_at": self.held_at,
                "released_at": self.released_at}

    def __repr__(self) -> str:  # the dataclass repr would read ``message`` and block
        return f"TaskHold({self.task_type!r}, {self.state()})"


class FaultInjector:
    """Thread-safe registry of pending faults and the added latency."""

    def __init__(self):
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Every fault gone; held tasks end in an error (cancelled), so none is left waiting."""
        with self._lock:
            for hold in getattr(self, "_holds", []):
                hold.release(cancel=True)
            self._request_faults: list[RequestFault] = []
            self._task_faults: dict[str, deque] = {}
            self._pending_holds: dict[str, deque] = {}
            self._holds: list[TaskHold] = []
            self.latency_ms = 0.0

    def add(self, spec: dict) -> None:
        """Add whatever ``spec`` describes; raise ValueError on a malformed spec."""
        spec = dict(spec)
        if "latency_ms" in spec:
            self.latency_ms = max(0.0, float(spec.pop("latency_ms")))
        if "task_fail" in spec:
            self._add_task_fault(spec.pop("task_fail"))
        if "task_hold" in spec:
            self._add_task_hold(spec.pop("task_hold"))
        if spec:
            self._add_request_fault(spec)

    def _add_request_fault(self, spec: dict) -> None:
        allowed = set(RequestFault.__dataclass_fields__)
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        fault = RequestFault(**spec)
        if fault.path is not None:
            re.compile(fault.path)
        if not 400 <= int(fault.status) <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        with self._lock:
            self._request_faults.append(fault)

    def _add_task_fault(self, spec: dict) -> None:
        task_type = spec["type"]
        fault = TaskFault(message=spec.get("message"), warnings=int(spec.get("warnings", 0)))
        if not fault.message and not fault.warnings:
            raise ValueError("task_fail needs a message or warnings")
        count = int(spec.get("count", 1))
        with self._lock:
            queue = self._task_faults.setdefault(task_type, deque())
            queue.extend([fault] * count)

    def _add_task_hold(self, spec: dict) -> None:
        unknown = set(spec) - {"type", "count", "timeout"}
        if unknown:
            raise ValueError(f"unknown task_hold keys: {', '.join(sorted(unknown))}")
        timeout = min(MAX_HOLD_SECONDS, max(0.0, float(spec.get("timeout", MAX_HOLD_SECONDS))))
        holds = [TaskHold(spec["type"], timeout) for _number in range(int(spec.get("count", 1)))]
        with self._lock:
            self._pending_holds.setdefault(spec["type"], deque()).extend(holds)
            self._holds.extend(holds)

    def holds(self, task_type: str | None = None) -> list[TaskHold]:
        with self._lock:
            return [hold for hold in self._holds if task_type is None or hold.task_type == task_type]

    def release_holds(self, task_type: str | None = None) -> list[dict]:
        """Release the holds (of one type): held tasks go on, pending holds hold nothing."""
        with self._lock:
            for kind, queue in self._pending_holds.items():
                if task_type is None or kind == task_type:
                    queue.clear()
            for hold in self._holds:
                if task_type is None or hold.task_type == task_type:
                    hold.release()
            return [hold.describe() for hold in self._holds]

    def take_request_fault(self, method: str, path: str) -> RequestFault | None:
        with self._lock:
            for fault in self._request_faults:
                if fault.matches(method, path):
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            self._request_faults.remove(fault)
                    return fault
        return None

    def take_task_fault(self, task_type: str) -> TaskFault | None:
        """The next task's injected outcome: a hold (wrapping a queued fault, if any), a fault, or None."""
        with self._lock:
            queue = self._task_faults.get(task_type)
            fault = queue.popleft() if queue else None
            holds = self._pending_holds.get(task_type)
            if not holds:
                return fault
            hold = holds.popleft()
            hold.then = fault
            hold.taken = True
            return hold

    def describe(self) -> dict:
        with self._lock:
            return {
                "requests": [asdict(fault) for fault in self._request_faults],
                "tasks": {kind: [asdict(f) for f in queue]
                          for kind, queue in self._task_faults.items() if queue},
                "latency_ms": self.latency_ms,
                "holds": [hold.describe() for hold in self._holds],
            }


class RequestLog:
    """The last requests the API answered; secrets never enter it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: deque = deque(maxlen=MAX_LOGGED_REQUESTS)

    def record(self, method: str, path: str, status: int, reason: str,
               token_id: str | None, params: dict) -> None:
        entry = {
            "time": time.time(), "method": method, "path": path, "status": status,
            "reason": reason, "token_id": token_id,
            "params": {k: ("********" if k in _SECRET_PARAMS else v) for k, v in params.items()},
        }
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
