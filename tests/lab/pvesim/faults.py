"""Fault injection and the request log, both driven through ``/_lab``.

Request faults make the next N matching API calls fail. ``"after": true`` runs the
call first and then fails the response: the change happened but the client never
heard, the case an idempotent playbook must survive. ``"close": true`` drops the
connection without any response. Task faults end the next task of a type in an error
(or with warnings) after its normal duration.
"""

import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from .tasks import TaskFault

MAX_LOGGED_REQUESTS = 5000
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


class FaultInjector:
    """Thread-safe registry of pending faults and the added latency."""

    def __init__(self):
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._request_faults: list[RequestFault] = []
            self._task_faults: dict[str, deque] = {}
            self.latency_ms = 0.0

    def add(self, spec: dict) -> None:
        """Add whatever ``spec`` describes; raise ValueError on a malformed spec."""
        spec = dict(spec)
        if "latency_ms" in spec:
            self.latency_ms = max(0.0, float(spec.pop("latency_ms")))
        if "task_fail" in spec:
            self._add_task_fault(spec.pop("task_fail"))
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
        with self._lock:
            queue = self._task_faults.get(task_type)
            return queue.popleft() if queue else None

    def describe(self) -> dict:
        with self._lock:
            return {
                "requests": [asdict(fault) for fault in self._request_faults],
                "tasks": {kind: [asdict(f) for f in queue]
                          for kind, queue in self._task_faults.items() if queue},
                "latency_ms": self.latency_ms,
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
