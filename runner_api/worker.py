"""The provisioning worker: claim a task, run its playbook, record the outcome.

Many workers may run on many machines against one database. Each claims one task at a time
(``FOR UPDATE SKIP LOCKED``), holds a lease that a heartbeat thread renews while the playbook
runs, and writes results only while the task is still its own (worker id and attempt number
fence every update). Idle workers sleep on ``LISTEN cloud_pod_tasks`` and poll as a fallback.

SIGTERM/SIGINT: stop claiming; a running playbook gets ``CLOUDPODS_SHUTDOWN_GRACE_SECONDS`` to
finish, after which it is cancelled and its task released to the queue (the attempt does not
count). Either way nothing is lost.
"""

import logging
import os
import random
import signal
import socket
import threading
import time

import psycopg

from . import runscope
from .executors import LocalAnsibleRunner, RunRequest
from .logging_setup import install_secret_filter
from .repository import NOTIFY_CHANNEL, Repository, open_pool

LOG = logging.getLogger(__name__)


def retry_delay(attempt, base, cap):
    """Exponential backoff with jitter: half of base*2^(attempt-1) (capped) fixed, half random."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def extra_vars_for(task):
    """The playbook's extra vars for a task (the same names ops use by hand and AWX passes)."""
    variables = {"pod": task["hostname"]}
    if task["task_type"] == "CREATE_CONTAINER":
        variables.update(plan=task["plan_code"], domain=task["domain"] or "", customer_email=task["customer_email"])
    elif task["task_type"] == "TERMINATE" and task["domain"]:
        variables["domain"] = task["domain"]
    return variables


class Worker:
    def __init__(self, settings, worker_id=None, executor=None, repository=None):
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.executor = executor or LocalAnsibleRunner(settings)
        self.repository = repository
        self.stopping = threading.Event()
        self.stop_requested_at = None
        self.listener = None

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self, signum=None, _frame=None):
        if not self.stopping.is_set():
            LOG.info("worker %s: signal %s, no new tasks", self.worker_id, signum)
            self.stop_requested_at = time.monotonic()
            self.stopping.set()

    def run(self, once=False):
        install_secret_filter(self.settings.secrets())
        # The playbooks must not inherit the database credentials.
        os.environ.pop("DATABASE_URL", None)
        for run_id in runscope.sweep(self.settings.run_dir):
            LOG.info("removed run %s left behind by a worker that died", run_id)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        pool = None
        if self.repository is None:
            pool = open_pool(self.settings, name=f"cloudpods-worker {self.worker_id}"[:60], min_size=1, max_size=3)
            self.repository = Repository(pool)
        try:
            self._listen()
            LOG.info("worker %s ready", self.worker_id)
            while not self.stopping.is_set():
                if self.run_one():
                    if once:
                        break
                    continue
                if once:
                    break
                self._idle()
        finally:
            if self.listener is not None:
                self.listener.close()
            if pool is not None:
                pool.close()
        LOG.info("worker %s stopped", self.worker_id)
        return 0

    def _listen(self):
        self.listener = psycopg.connect(self.settings.database_url, autocommit=True,
                                        application_name=f"cloudpods-listen {self.worker_id}"[:60])
        self.listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def _idle(self):
        """Sleep until a NOTIFY, the next due task, or the poll interval; wake for a stop within 1 s."""
        due = self.repository.seconds_until_next_task()
        wait = self.settings.poll_seconds if due is None else min(self.settings.poll_seconds, due)
        deadline = time.monotonic() + wait
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                for _notify in self.listener.notifies(timeout=min(remaining, 1.0), stop_after=1):
                    return
            except psycopg.OperationalError:
                LOG.warning("worker %s: LISTEN connection lost; reconnecting", self.worker_id)
                time.sleep(1)
                self._listen()
                return

    # ------------------------------------------------------------------ one task

    def run_one(self):
        """Claim and run one task; False if there was none."""
        for lost in self.repository.fail_exhausted_leases():
            LOG.warning("task %s FAILED: %s", lost["id"], lost["last_error"])
        task = self.repository.claim(self.worker_id, self.settings.lease_seconds)
        if task is None:
            return False
        LOG.info("task %s %s for %s: attempt %s/%s", task["id"], task["task_type"], task["hostname"],
                 task["attempts"], task["max_attempts"])
        self.repository.add_event(task, "worker", "claimed",
                                  message=f"attempt {task['attempts']} of {task['max_attempts']} on {self.worker_id}")
        self._execute(task)
        return True

    def _execute(self, task):
        lease_lost = threading.Event()
        done = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(task, lease_lost, done), daemon=True)
        heartbeat.start()

        def cancel():
            if lease_lost.is_set():
                return True
            return (self.stopping.is_set() and
                    time.monotonic() - self.stop_requested_at > self.settings.shutdown_grace_seconds)

        def on_event(event):
            self.repository.add_event(task, **event)

        try:
            result = self.executor.run(RunRequest(task["task_type"], extra_vars_for(task)), on_event, cancel)
        except Exception as exc:  # pylint: disable=broad-except
            LOG.exception("task %s: executor error", task["id"])
            result = None
            error = f"internal error while running the playbook ({type(exc).__name__})"
        finally:
            done.set()
            heartbeat.join()
        if lease_lost.is_set():
            LOG.warning("task %s: lease lost; another worker owns it now", task["id"])
            return
        if result is not None and result.status == "canceled" and self.stopping.is_set():
            self.repository.release(task, f"worker {self.worker_id} shut down before the playbook finished")
            LOG.info("task %s released", task["id"])
            return
        if result is not None and result.ok:
            self._succeeded(task, result)
            return
        retryable = True
        if result is not None:
            error, retryable = result.error, result.retryable
        self._failed(task, error, retryable)

    def _heartbeat(self, task, lease_lost, done):
        while not done.wait(self.settings.heartbeat_seconds):
            try:
                if not self.repository.heartbeat(task, self.settings.lease_seconds):
                    lease_lost.set()
                    return
            except psycopg.Error:
                LOG.warning("task %s: heartbeat failed; retrying", task["id"])

    def _succeeded(self, task, result):
        stats = {key: result.stats.get(key) for key in ("vmid", "node", "ip") if result.stats.get(key) not in
                 (None, "")}
        if "vmid" in stats:
            stats["vmid"] = int(stats["vmid"])
        if not self.repository.complete(task, stats):
            LOG.warning("task %s finished but is no longer ours", task["id"])
            return
        summary = ", ".join(f"{key} {value}" for key, value in stats.items())
        message = {"CREATE_CONTAINER": "pod is ACTIVE"}.get(task["task_type"], f"{task['task_type']} done")
        self.repository.add_event(task, "worker", "completed", message=f"{message}" + (f": {summary}" if summary
                                                                                       else ""))
        LOG.info("task %s COMPLETED (%s)", task["id"], summary)

    def _failed(self, task, error, retryable):
        delay = retry_delay(task["attempts"], self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        status = self.repository.fail_attempt(task, error, delay, give_up=not retryable)
        if status is None:
            LOG.warning("task %s failed but is no longer ours", task["id"])
            return
        if status == "FAILED":
            self.repository.add_event(task, "worker", "failed", message=error)
            LOG.warning("task %s FAILED after %s attempts: %s", task["id"], task["attempts"], error)
        else:
            self.repository.add_event(task, "worker", "retry", message=f"retry in {delay:.1f} s: {error}")
            LOG.info("task %s: attempt %s failed, retry in %.1f s: %s", task["id"], task["attempts"], delay, error)
