"""The provisioning worker: claim a task, run its playbook, record the outcome.

Many workers may run on many machines against one database. Each claims one task at a time
(``FOR UPDATE SKIP LOCKED``), holds a lease that a heartbeat thread renews while the playbook
runs, and writes results only while the task is still its own (worker id and attempt number
fence every update and every event row). Idle workers sleep on ``LISTEN cloud_pod_tasks`` and poll as a fallback.

SIGTERM/SIGINT: stop claiming; a running playbook gets ``CLOUDPODS_SHUTDOWN_GRACE_SECONDS`` to
finish, after which it is cancelled and its task released to the queue (the attempt does not
count). Either way nothing is lost.

The database going away (a restart, a failover, a network cut) stops nothing for good: the loop
backs off (capped exponential delay with jitter, ``CLOUDPODS_DB_RETRY_MAX_SECONDS``) and goes on
when it is back; a running playbook goes on meanwhile, its event rows are kept in memory and
written later, and its outcome is written as soon as the database answers again (still fenced by
the lease: if another worker took the task over meanwhile, the write finds it is not ours). One
warning when the database goes away, one line when it is back.

Backup lists: when the queue is empty, one worker every ``CLOUDPODS_BACKUP_LIST_SECONDS`` reads
every pod's archives on the Proxmox hosts (playbooks/backup_catalog.yml) for GET .../backups.

Metrics: with ``CLOUDPODS_WORKER_METRICS_PORT`` set, each worker serves its own ``/metrics``
(runner_api/metrics.py): how long the attempts of each operation took by how they ended, and which
step failed. The queue itself is read from the database by the API's ``/metrics``.

Webhooks: with ``CLOUDPODS_WEBHOOK_URL`` set, each worker also delivers the webhook outbox in a
thread of its own with its own database connection (``webhooks.Deliverer``); it stops with the
worker, after the delivery in flight.
"""

import collections
import dataclasses
import datetime
import logging
import os
import random
import re
import signal
import socket
import threading
import time

import psycopg

from . import metrics, operations, runscope, webhooks
from .executors import LocalAnsibleRunner, RunRequest, RunResult, make_executor
from .logging_setup import install_secret_filter
from .repository import NOTIFY_CHANNEL, Repository, connect_timeout, open_pool
from .secrets_file import SecretsFile

LOG = logging.getLogger(__name__)
# Connection refused or lost, server shutting down, no pooled connection in time (PoolTimeout).
DB_ERRORS = (psycopg.OperationalError,)
DB_RETRY_BASE_SECONDS = 0.5
PENDING_EVENTS_LIMIT = 10000  # event rows kept in memory during an outage
GAVE_UP = object()  # _until_written: the database stayed away past the shutdown grace period


def retry_delay(attempt, base, cap):
    """Exponential backoff with jitter: half of base*2^(attempt-1) (capped) fixed, half random."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


HOST_KEY_LIMIT = 16  # fingerprints kept per pod (a pod has three or four host keys)
TEXT_LIMIT = 500  # characters kept of a reported string
BACKUP_LIMIT = 1000  # archives kept in a pod's list (a daily job with a year's retention: 365)
# vzdump's CT archive names (playbooks/tasks/list_backups.yml finds the same ones).
ARCHIVE_NAME = re.compile(r"vzdump-lxc-[0-9]{3,9}-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}"
                          r"\.tar(\.(zst|gz|lzo))?\Z")


def _text(value, limit=TEXT_LIMIT):
    return " ".join(value.split())[:limit] if isinstance(value, str) else None


def _timestamp(value):
    """An ISO 8601 time as the playbooks report it ("" or anything else unreadable: None)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def reported_stats(stats):
    """What a run's ``set_stats`` tell about the pod, checked and flattened for the subscription row.

    The contract with the playbooks (playbooks/common/report.yml, https.yml, ssh_keys.yml): ``vmid``,
    ``node``, ``ip``; ``ssh_host_keys`` a list of "SHA256:<b64> (ED25519|ECDSA|RSA)"; ``ssh``
    {"user", "port"}; ``https`` {"status": active|pending|none, "reason", "not_after": ISO 8601 or ""};
    ``backups`` the pod's archives (``reported_backups``).
    A value of the wrong shape is left out (the pod keeps what it had) and logged.
    """
    out = {key: stats.get(key) for key in ("vmid", "node", "ip") if stats.get(key) not in (None, "")}
    if "vmid" in out:
        out["vmid"] = int(out["vmid"])
    host_keys = stats.get("ssh_host_keys")
    if host_keys is not None:
        if isinstance(host_keys, list) and all(isinstance(k, str) for k in host_keys):
            out["ssh_host_keys"] = [_text(k, 200) for k in host_keys[:HOST_KEY_LIMIT]]
        else:
            LOG.warning("set_stats ssh_host_keys is not a list of strings; ignored")
    ssh = stats.get("ssh")
    if ssh is not None:
        port = ssh.get("port") if isinstance(ssh, dict) else None
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = None
        if isinstance(ssh, dict) and isinstance(ssh.get("user"), str) and port and 0 < port < 65536:
            out["ssh_user"], out["ssh_port"] = _text(ssh["user"], 64), port
        else:
            LOG.warning("set_stats ssh is not {user, port}; ignored")
    https = stats.get("https")
    if https is not None:
        if isinstance(https, dict) and https.get("status") in ("active", "pending", "none"):
            out["https_status"] = https["status"]
            out["https_reason"] = _text(https.get("reason")) or ""
            not_after = _timestamp(https.get("not_after"))
            out["https_not_after"] = not_after.isoformat() if not_after else None
        else:
            LOG.warning("set_stats https is not {status: active|pending|none, ...}; ignored")
    # The archive a BACKUP or REINSTALL wrote, the safety archive of a RESTORE: named in the task's result.
    written = {"archive": _archive_name(stats.get("backup"), "name") or _archive_name(stats.get("reinstalled"), "backup"),
               "safety_archive": _archive_name(stats.get("restored"), "safety")}
    out.update({key: name for key, name in written.items() if name})
    if "backups" in stats:
        backups = reported_backups(stats.get("backups"))
        if backups is None:
            LOG.warning("set_stats backups is not a list; ignored")
        else:
            out["backups"] = backups
    return out


def _archive_name(report, key):
    """The archive file name in ``report[key]`` (a name or a host path), when it is a vzdump CT archive's."""
    value = report.get(key) if isinstance(report, dict) else None
    name = value.rsplit("/", 1)[-1] if isinstance(value, str) else None
    return name if name and ARCHIVE_NAME.match(name) else None


def reported_backups(listed):
    """A pod's archives as a playbook lists them (playbooks/tasks/list_backups.yml: {volid, name, ctime,
    size, kind}) in the API's shape, newest first: [{name, created_at, size_bytes, kind}]. The host
    path (volid) stays out. None when ``listed`` is not a list; an entry of the wrong shape is left out
    and logged."""
    if not isinstance(listed, list):
        return None
    out = []
    for entry in listed:
        name = entry.get("name") if isinstance(entry, dict) else None
        created = _timestamp(entry.get("ctime")) if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if (not isinstance(name, str) or not ARCHIVE_NAME.match(name) or created is None
                or not isinstance(size, int) or isinstance(size, bool) or size < 0 or kind not in ("manual", "scheduled")):
            LOG.warning("a listed backup archive is not {name, ctime, size, kind}; left out")
            continue
        out.append({"name": name, "created_at": created.astimezone(datetime.timezone.utc).isoformat(),
                    "size_bytes": size, "kind": kind})
    out.sort(key=lambda archive: (archive["created_at"], archive["name"]), reverse=True)
    return out[:BACKUP_LIMIT]


def extra_vars_for(task):
    """The playbook's extra vars for a task (the same names ops use by hand and AWX passes), as its
    operation builds them (runner_api/operations.py); ``operations.UnknownOperation`` for a type
    the registry does not define."""
    return operations.extra_vars(task)


class Worker:  # pylint: disable=too-many-instance-attributes
    def __init__(self, settings, worker_id=None, executor=None, repository=None, metrics_port=None):
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.executor = executor or make_executor(settings)
        self.repository = repository
        self.stopping = threading.Event()
        self.stop_requested_at = None
        self.listener = None
        self.outage = DatabaseOutage(self.worker_id, settings.db_retry_max_seconds)
        self.events = None
        self.catalog_checked_at = None
        # CLOUDPODS_SECRETS_FILE: read again before each task when it changed (see _reread_secrets).
        self.secrets_file = SecretsFile(settings.secrets_file) if settings.secrets_file else None
        self.builds_executor = executor is None
        self.known_secrets = set(settings.secrets())
        self.metrics = metrics.WorkerMetrics()
        self.metrics_port = settings.worker_metrics_port if metrics_port is None else metrics_port
        self.attempt_started = None

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
        if self.metrics_port:
            self._serve_metrics()
        for run_id in runscope.sweep(self.settings.run_dir):
            LOG.info("removed run %s left behind by a worker that died", run_id)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        pool = None
        if self.repository is None:
            pool = open_pool(self.settings, name=f"cloudpods-worker {self.worker_id}"[:60], min_size=1, max_size=3)
            self.repository = Repository(pool, https_retry_seconds=self.settings.https_retry_seconds,
                                         https_retry_max_seconds=self.settings.https_retry_max_seconds)
        ready = False
        deliverer = None
        if self.settings.webhook_url and not once:
            deliverer = webhooks.Deliverer(self.settings, name=f"cloudpods-webhooks {self.worker_id}").start()
        try:
            while not self.stopping.is_set():
                try:
                    if self.listener is None:
                        self._listen()
                        if not ready:
                            LOG.info("worker %s ready", self.worker_id)
                            ready = True
                    if self.run_one():
                        if once:
                            break
                        continue
                    if once:
                        break
                    self._backup_catalog()
                    self._idle()
                except DB_ERRORS as exc:
                    # Claim, lease sweep, LISTEN or the idle query failed: nothing is lost (a
                    # claimed task's lease expires); wait, then start the round again.
                    self._close_listener()
                    self.outage.failed(exc)
                    self.stopping.wait(self.outage.delay())
        finally:
            if deliverer is not None:
                deliverer.stop()
            self.metrics.stop()
            self._close_listener()
            if pool is not None:
                pool.close()
        LOG.info("worker %s stopped", self.worker_id)
        return 0

    def _serve_metrics(self):
        """This worker's /metrics. An address it cannot listen on (a port in use) stops no provisioning: it is
        logged, and Prometheus shows the target down."""
        host = self.settings.worker_metrics_host
        try:
            host, port = self.metrics.serve(host, self.metrics_port, self.settings.metrics_token)
        except OSError as exc:
            LOG.error("worker %s: no metrics: cannot listen on %s port %s (CLOUDPODS_WORKER_METRICS_HOST, "
                      "CLOUDPODS_WORKER_METRICS_PORT): %s", self.worker_id, host, self.metrics_port, exc.strerror or exc)
            return
        LOG.info("worker %s: metrics on %s port %s (%s)", self.worker_id, host, port, metrics.METRICS_PATH)

    def _listen(self):
        listener = psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=connect_timeout(
            self.settings), application_name=f"cloudpods-listen {self.worker_id}"[:60])
        try:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            listener.close()
            raise
        self.listener = listener
        self.outage.recovered()

    def _close_listener(self):
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.close()
            except psycopg.Error:
                pass

    def _backup_catalog(self):
        """When the queue is empty: every CLOUDPODS_BACKUP_LIST_SECONDS one worker (whichever claims the
        period first) reads every pod's archives (playbooks/backup_catalog.yml) and stores them for
        GET .../backups, so the scheduled archives of the night show there too. A failed run changes
        no list (logged; the next period tries again)."""
        every = self.settings.backup_list_seconds
        now = time.monotonic()
        if not every or (self.catalog_checked_at is not None and now - self.catalog_checked_at < min(every, 10.0)):
            return
        self.catalog_checked_at = now
        started = self.repository.claim_periodic("backup_catalog", every)
        if started is None:
            return
        self._reread_secrets()
        try:
            result = self.executor.run(RunRequest(operations.BACKUP_CATALOG, {}), lambda event: None, self.stopping.is_set)
        except Exception as exc:  # pylint: disable=broad-except
            LOG.exception("backup catalog: executor error")
            result = RunResult("error", None, error=f"internal error while running the playbook ({type(exc).__name__})")
        catalog = result.stats.get("backup_catalog") if result.ok else None
        if not isinstance(catalog, dict):
            error = result.error or "the playbook reported no backup_catalog"
            LOG.warning("backup catalog not read: %s", error)
            self.repository.finish_periodic("backup_catalog", error[:TEXT_LIMIT])
            return
        checked = {pod: reported_backups(listed) or [] for pod, listed in catalog.items() if isinstance(pod, str)}
        written = self.repository.store_backup_catalog(checked, started)
        self.repository.finish_periodic("backup_catalog")
        LOG.info("backup catalog: %s pods' archives read, %s lists written", len(checked), written)

    def _idle(self):
        """Sleep until a NOTIFY, the next due task, or the poll interval; wake for a stop within 1 s."""
        due = self.repository.seconds_until_next_task(self.settings.lease_seconds)
        self.outage.recovered()
        wait = self.settings.poll_seconds if due is None else min(self.settings.poll_seconds, due)
        deadline = time.monotonic() + wait
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                for _notify in self.listener.notifies(timeout=min(remaining, 1.0), stop_after=1):
                    return
            except DB_ERRORS as exc:
                # The run loop connects again (and backs off if the database is away).
                LOG.info("worker %s: LISTEN connection lost (%s); reconnecting", self.worker_id,
                         " ".join(str(exc).split())[:200])
                self._close_listener()
                return

    # ------------------------------------------------------------------ one task

    def run_one(self):
        """Claim and run one task; False if there was none."""
        for lost in self.repository.fail_exhausted_leases(self.settings.lease_seconds):
            LOG.warning("task %s FAILED: %s", lost["id"], lost["last_error"])
        for dropped in self.repository.close_idle_https_retries():
            LOG.info("task %s (HTTPS retry) dropped: the pod is %s", dropped["id"], dropped["status"])
        task = self.repository.claim(self.worker_id, self.settings.lease_seconds)
        self.outage.recovered()
        if task is None:
            return False
        LOG.info("task %s %s for %s: attempt %s/%s", task["id"], task["task_type"], task["hostname"],
                 task["attempts"], task["max_attempts"])
        self._reread_secrets()
        # From here on the task is ours: a database outage must not lose it (see TaskEvents and _until_written).
        self.events = TaskEvents(self, task)
        self.events.add(step="worker", status="claimed",
                        message=f"attempt {task['attempts']} of {task['max_attempts']} on {self.worker_id}")
        try:
            self._execute(task)
        finally:
            self.events = None
        return True

    def _reread_secrets(self):
        """A changed secrets file (a rotated Proxmox token) counts from this task on; a run already going on
        keeps what it started with. A bad file keeps the last good values (secrets_file logs why)."""
        values = self.secrets_file.changed() if self.secrets_file is not None else None
        if not values:
            return
        self.settings = dataclasses.replace(self.settings, playbook_env=dict(self.settings.playbook_env, **values))
        # The old values stay masked too: a run that started with them may still report them.
        self.known_secrets.update(self.settings.secrets())
        install_secret_filter(sorted(self.known_secrets, key=len, reverse=True))
        # Only the local runner hands the worker's settings to the playbook; another executor (AWX) takes its
        # credentials from where it runs them (rotate_token.yml updates the AWX credential itself).
        if self.builds_executor and isinstance(self.executor, LocalAnsibleRunner):
            self.executor = LocalAnsibleRunner(self.settings)
        LOG.info("worker %s: %s read (%s); the next playbooks run with it", self.worker_id, self.settings.secrets_file,
                 ", ".join(sorted(values)))

    def _execute(self, task):
        self.attempt_started = time.monotonic()
        # Set by the heartbeat when the lease could not be renewed, or by the first event row refused:
        # another worker owns the task now, and the run is cancelled at once.
        lease_lost = self.events.lost
        # Set by the heartbeat of a background task (the HTTPS retry) when an operation of its pod
        # is waiting: the retry is cancelled and released, the operation goes first.
        preempted = threading.Event()
        done = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(task, lease_lost, done, preempted), daemon=True)
        heartbeat.start()

        def cancel():
            if lease_lost.is_set() or preempted.is_set():
                return True
            return (self.stopping.is_set() and
                    time.monotonic() - self.stop_requested_at > self.settings.shutdown_grace_seconds)

        failed_step = []  # the first step that failed (not an ignored failure): the failures' label

        def on_event(event):
            if event.get("status") in ("failed", "unreachable") and not failed_step:
                failed_step.append(event.get("step"))
            self.events.add(**event)  # never raises for an outage; kept in order until written

        try:
            result = self.executor.run(RunRequest(task["task_type"], extra_vars_for(task)), on_event, cancel)
        except operations.UnknownOperation as exc:
            # No playbook to run: retrying cannot help.
            result = RunResult("error", None, error=str(exc), retryable=False)
        except Exception as exc:  # pylint: disable=broad-except
            LOG.exception("task %s: executor error", task["id"])
            result = None
            error = f"internal error while running the playbook ({type(exc).__name__})"
        finally:
            done.set()
            heartbeat.join()
        if self._until_written(task, "its event rows", self.events.flush) is GAVE_UP:
            return
        if lease_lost.is_set():
            LOG.warning("task %s: lease lost; another worker owns it now", task["id"])
            self._ended(task, "lost")
            return
        if result is not None and result.status == "canceled" and (self.stopping.is_set() or preempted.is_set()):
            reason = (f"worker {self.worker_id} shut down before the playbook finished" if self.stopping.is_set()
                      else "an operation on this pod is waiting: it goes first")
            if self._until_written(task, "its release", self.repository.release, task, reason) is True:
                LOG.info("task %s released (%s)", task["id"], reason)
                self._ended(task, "released")
            return
        if result is not None and result.ok:
            self._succeeded(task, result)
            return
        retryable = True
        if result is not None:
            error, retryable = result.error, result.retryable
        self._failed(task, error, retryable, failed_step[0] if failed_step else None)

    def _ended(self, task, outcome):
        """An attempt ended (``metrics.OUTCOMES``): its duration from its start to its outcome written, by operation
        and outcome."""
        self.metrics.ended(task["task_type"], outcome, time.monotonic() - self.attempt_started)

    def _heartbeat(self, task, lease_lost, done, preempted=None):
        background = operations.find(task["task_type"]) is not None and operations.get(task["task_type"]).background
        while not done.wait(self.settings.heartbeat_seconds):
            try:
                renewed = self.repository.heartbeat(task, self.settings.lease_seconds)
                if renewed and background and preempted is not None and self.repository.operation_waiting(task):
                    LOG.info("task %s: an operation on its pod is waiting; cancelling this background run",
                             task["id"])
                    preempted.set()
            except DB_ERRORS as exc:
                self.outage.failed(exc)  # the lease may expire meanwhile; the fenced writes tell
                continue
            except psycopg.Error as exc:
                LOG.warning("task %s: heartbeat failed (%s); retrying", task["id"], exc)
                continue
            self.outage.recovered()
            if not renewed:
                lease_lost.set()
                return

    def _succeeded(self, task, result):
        stats = reported_stats(result.stats)
        completed = self._until_written(task, "its outcome (COMPLETED)", self.repository.complete, task, stats)
        if completed is GAVE_UP:
            return
        if not completed:
            LOG.warning("task %s finished but is no longer ours", task["id"])
            self._ended(task, "lost")
            return
        self._ended(task, "completed")
        summary = ", ".join([f"{key} {value}" for key, value in stats.items()
                             if key in ("vmid", "node", "ip", "https_status")]
                            + [f"{key} {stats[key]}" for key in ("archive", "safety_archive") if stats.get(key)])
        operation = operations.find(task["task_type"])
        message = operation.success_message if operation else f"{task['task_type']} done"
        self.events.add(step="worker", status="completed", message=message + (f": {summary}" if summary else ""))
        self._until_written(task, "its event rows", self.events.flush)
        LOG.info("task %s COMPLETED (%s)", task["id"], summary)

    def _failed(self, task, error, retryable, step=None):
        delay = retry_delay(task["attempts"], self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        status = self._until_written(task, "its outcome (failed attempt)", self.repository.fail_attempt, task, error,
                                     delay, give_up=not retryable)
        if status is GAVE_UP:
            return
        if status is None:
            LOG.warning("task %s failed but is no longer ours", task["id"])
            self._ended(task, "lost")
            return
        self.metrics.failed(task["task_type"], step)
        self._ended(task, "failed" if status == "FAILED" else "retry")
        if status == "FAILED":
            self.events.add(step="worker", status="failed", message=error)
            LOG.warning("task %s FAILED after %s attempts: %s", task["id"], task["attempts"], error)
        else:
            self.events.add(step="worker", status="retry", message=f"retry in {delay:.1f} s: {error}")
            LOG.info("task %s: attempt %s failed, retry in %.1f s: %s", task["id"], task["attempts"], delay, error)
        self._until_written(task, "its event rows", self.events.flush)

    def _until_written(self, task, what, call, *args, **kwargs):
        """``call(*args, **kwargs)``, retried through a database outage until it succeeds: the
        outcome of a playbook that ran must not be lost. The writes are fenced (worker id and
        attempt), so a task another worker took over meanwhile is not overwritten. Gives up
        (returns GAVE_UP) only when a stop was requested and the shutdown grace period is over;
        the lease then expires and the task runs again (the playbooks are convergent)."""
        while True:
            try:
                result = call(*args, **kwargs)
            except DB_ERRORS as exc:
                self.outage.failed(exc)
                if self.stopping.is_set() and (time.monotonic() - self.stop_requested_at >
                                               self.settings.shutdown_grace_seconds):
                    LOG.error("task %s: stopping while the database is unavailable; %s not written, the task "
                              "runs again once its lease expires", task["id"], what)
                    return GAVE_UP
                # At least as often as a heartbeat: the lease must be ours when the database is back.
                time.sleep(min(self.outage.delay(), self.settings.heartbeat_seconds))
                continue
            self.outage.recovered()
            return result


class DatabaseOutage:
    """Whether the database is away, shared by the worker's threads: one warning when it goes away,
    one line when it is back (and how long it was away), and the backoff delay meanwhile."""

    def __init__(self, worker_id, cap):
        self.worker_id = worker_id
        self.cap = cap
        self.lock = threading.Lock()
        self.since = None
        self.failures = 0

    def failed(self, exc):
        with self.lock:
            self.failures += 1
            if self.since is not None:
                return
            self.since = time.monotonic()
        LOG.warning("worker %s: database unavailable (%s: %s); retrying with backoff (at most %.1f s apart)",
                    self.worker_id, type(exc).__name__, " ".join(str(exc).split())[:300], self.cap)

    def recovered(self):
        if self.since is None:  # the usual case: no lock needed
            return
        with self.lock:
            if self.since is None:
                return
            away, self.since, self.failures = time.monotonic() - self.since, None, 0
        LOG.info("worker %s: database reachable again after %.1f s; going on", self.worker_id, away)

    def delay(self):
        """Capped exponential backoff with jitter, by the failures of this outage so far."""
        return retry_delay(max(1, self.failures), DB_RETRY_BASE_SECONDS, self.cap)


class TaskEvents:
    """A task's event rows, in order. Written at once while the database answers; while it is away
    they wait in memory (the playbook goes on, and a write is tried again after the backoff delay,
    not at every event) until ``flush()`` gets them through."""

    def __init__(self, worker, task):
        self.worker = worker
        self.task = task
        self.pending = collections.deque()
        self.dropped = 0
        self.lost = threading.Event()  # a row was refused: another worker took the task over
        self.retry_at = 0.0

    def add(self, **event):
        if len(self.pending) >= PENDING_EVENTS_LIMIT:
            self.dropped += 1
        else:
            self.pending.append(event)
        if time.monotonic() < self.retry_at:
            return
        try:
            self.flush()
        except DB_ERRORS as exc:
            self.worker.outage.failed(exc)
            self.retry_at = time.monotonic() + self.worker.outage.delay()
            return
        self.worker.outage.recovered()

    def flush(self):
        """Write the waiting rows, oldest first; an outage error propagates (the rest keep waiting)."""
        while self.pending:
            try:
                stored = self.worker.repository.add_event(self.task, **self.pending[0])
            except DB_ERRORS:
                raise
            except psycopg.Error as exc:  # this row cannot be stored (bad data): skip it, keep the rest
                LOG.warning("task %s: event row not stored (%s: %s)", self.task["id"], type(exc).__name__, exc)
                stored = None
            if stored is False and not self.lost.is_set():
                LOG.warning("task %s: event rows refused: another worker owns the task now", self.task["id"])
                self.lost.set()
            self.pending.popleft()
        if self.dropped:
            self.worker.repository.add_event(self.task, "worker", "events-lost", message=(
                f"{self.dropped} event rows were dropped while the database was unavailable"))
            self.dropped = 0
        self.retry_at = 0.0
