"""All SQL of runner_api: migrations, tokens, subscriptions, the provisioning queue, events.

Every statement takes parameters (never string formatting). The queue follows the design's
"Queue semantics": claim with ``FOR UPDATE SKIP LOCKED``, attempts counted at claim, a lease
renewed by heartbeat, reclaim of expired leases, retries with backoff, one open task per pod
(a partial unique index), and ``NOTIFY cloud_pod_tasks`` to wake idle workers.

Webhooks: every change of a pod's status and every end of a task (COMPLETED, FAILED) writes its
webhook event to ``cloud_pod_webhook_outbox`` through the database's triggers (migration 0003), in
the transaction of the change: nothing here (or in a method added later) has to call anything.
"""

import hashlib
import logging
import math
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from . import operations

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
NOTIFY_CHANNEL = "cloud_pod_tasks"
LIVE_STATUSES = ("PROVISIONING", "ACTIVE", "SUSPENDED")
MIGRATION_LOCK = 0x636C6F7564706F64  # advisory lock key: one migrate at a time
# A lease counts as expired only once the server has been up for a lease period: a lease that ran
# out while PostgreSQL was down (restart) gives its worker, which may just be waiting to write the
# outcome of a finished playbook, the time to renew it before another worker takes the task over.
LEASE_EXPIRED = ("lease_expires_at < now() "
                 "AND pg_postmaster_start_time() < now() - make_interval(secs => %(lease_seconds)s)")

# The background HTTPS retry (operations.HTTPS_RETRY) is not "the pod's operation": the latest
# task, its progress and its error are those of the operations a person asked for.
SUBSCRIPTION_COLUMNS = """
    s.id, s.customer_id, s.customer_email, s.plan_code, s.domain, s.hostname, s.status, s.vmid, s.node,
    host(s.ip) AS ip, s.last_error, s.created_at, s.updated_at, s.activated_at,
    s.ssh_public_keys, s.ssh_host_keys, s.ssh_user, s.ssh_port,
    s.https_status, s.https_reason, s.https_not_after, s.https_pending_runs, s.suspend_reason, s.suspended_at,
    s.backups, s.backups_listed_at, s.transfer_rate_mbps,
    (SELECT u.bytes_in + u.bytes_out FROM cloud_pod_transfer_usage u WHERE u.subscription_id = s.id
     AND u.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS transfer_month_bytes,
    (SELECT max(lt.id) FROM cloud_pod_provisioning_tasks lt WHERE lt.subscription_id = s.id
     AND lt.task_type <> 'ISSUE_HTTPS') AS latest_task_id,
    (SELECT min(rt.run_at) FROM cloud_pod_provisioning_tasks rt WHERE rt.subscription_id = s.id
     AND rt.task_type = 'ISSUE_HTTPS' AND rt.status IN ('PENDING', 'RUNNING')) AS https_next_attempt_at
"""
# A task a worker may take now, besides being due (``t`` the task, ``s`` its pod): an operation a
# person asked for waits only while the pod's background retry RUNS (at most one heartbeat: the
# retry is cancelled when it sees the operation waiting); the retry runs only on an ACTIVE pod with
# no other open task, so a waiting operation always goes first and nothing runs beside it.
CLAIMABLE = """
    CASE WHEN t.task_type <> 'ISSUE_HTTPS' THEN NOT EXISTS (
             SELECT 1 FROM cloud_pod_provisioning_tasks o
             WHERE o.subscription_id = t.subscription_id AND o.id <> t.id AND o.status = 'RUNNING')
         ELSE s.status = 'ACTIVE' AND NOT EXISTS (
             SELECT 1 FROM cloud_pod_provisioning_tasks o
             WHERE o.subscription_id = t.subscription_id AND o.id <> t.id AND o.status IN ('PENDING', 'RUNNING'))
    END
"""
TASK_COLUMNS = """
    t.id, t.subscription_id, t.task_type, t.status, t.worker_id, t.attempts, t.max_attempts, t.run_at,
    t.lease_expires_at, t.last_error, t.created_at, t.started_at, t.finished_at, t.updated_at, t.params
"""


class DomainTaken(Exception):
    """The domain already belongs to a live pod."""


class OperationInProgress(Exception):
    """The pod already has an unfinished task: ``running`` is that task (id, task_type, status), or
    None when it ended before it could be read."""

    def __init__(self, subscription_id, running=None):
        super().__init__(subscription_id)
        self.running = running


class IdempotencyMismatch(Exception):
    """The Idempotency-Key was used before with a different request."""


class NotStartable(Exception):
    """The pod's status does not allow the operation (``status``: the pod's)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def https_retry_delay(pending_runs, base, cap):
    """Seconds until the next HTTPS retry after ``pending_runs`` runs in a row reported pending:
    ``base``, then doubling, at most ``cap`` (no jitter: one retry per pod)."""
    return min(cap, base * (2 ** max(0, pending_runs - 1)))


def token_digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _seconds(value):
    """A duration for ``make_interval(secs => ...)``: a float, or None (no expiry)."""
    return None if value is None else float(value)


def pending_migrations(connection):
    """The migrations (file names) this release has and the database has not recorded, in name order."""
    recorded = connection.execute("SELECT to_regclass('cloud_pod_schema_migrations') IS NOT NULL").fetchone()[0]
    done = {row[0] for row in connection.execute("SELECT name FROM cloud_pod_schema_migrations")} if recorded else set()
    return [path.name for path in sorted(MIGRATIONS_DIR.glob("*.sql")) if path.name not in done]


def migrate(database_url, upto=None):
    """Apply the migrations not yet recorded, in name order; return the names applied.

    ``upto`` (a file name) stops after that migration: tests build a database as an older
    release left it, then migrate it with data in it."""
    applied = []
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            connection.execute("""
                CREATE TABLE IF NOT EXISTS cloud_pod_schema_migrations (
                    name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {row[0]: row[1] for row in connection.execute(
                "SELECT name, sha256 FROM cloud_pod_schema_migrations")}
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                if upto is not None and path.name > upto:
                    break
                text = path.read_text()
                digest = hashlib.sha256(text.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != digest:
                        raise RuntimeError(f"migration {path.name} changed after it was applied")
                    continue
                with connection.transaction():
                    connection.execute(text)
                    connection.execute("INSERT INTO cloud_pod_schema_migrations (name, sha256) VALUES (%s, %s)",
                                       (path.name, digest))
                applied.append(path.name)
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


class _PoolReconnectNoise(logging.Filter):
    """psycopg_pool warns at every failed connection attempt: a dozen lines per pool during a short
    outage. The API (errors.py) and the worker (worker.DatabaseOutage) report an outage themselves."""

    NOISE = ("error connecting in ", "reconnection attempt in pool ")

    def filter(self, record):
        return not (isinstance(record.msg, str) and record.msg.startswith(self.NOISE))


_POOL_LOG_FILTER = _PoolReconnectNoise()


def connect_timeout(settings):
    """libpq's connect_timeout (whole seconds, at least 2) for a connection attempt."""
    return max(2, math.ceil(settings.db_timeout_seconds))


def open_pool(settings, name="runner_api", min_size=None, max_size=None):
    """A pool that fails fast while the database is away and recovers by itself when it is back.

    - ``timeout``: a caller waits at most ``db_timeout_seconds`` for a connection, then gets
      ``PoolTimeout`` (an ``OperationalError``: the API answers 503, the worker backs off).
    - ``check``: a connection is tested before it is handed out, so one the server closed (a
      restart) is replaced instead of failing the request.
    - ``reconnect_timeout``: the pool's own reconnection backoff (1, 2, 4 ... s) stops after
      ``db_retry_max_seconds``; the next request then tries afresh at once, so the pool notices
      a database that is back within seconds, not after a long doubling delay.
    - ``connect_timeout``: an attempt to an address that does not answer does not hang.
    """
    pool_logger = logging.getLogger("psycopg.pool")
    if _POOL_LOG_FILTER not in pool_logger.filters:
        pool_logger.addFilter(_POOL_LOG_FILTER)
    return ConnectionPool(settings.database_url, min_size=settings.pool_min if min_size is None else min_size,
                          max_size=settings.pool_max if max_size is None else max_size,
                          kwargs={"row_factory": dict_row, "application_name": name,
                                  "connect_timeout": connect_timeout(settings)},
                          timeout=settings.db_timeout_seconds, check=ConnectionPool.check_connection,
                          reconnect_timeout=settings.db_retry_max_seconds, open=True, name=name)


class Repository:
    """The database as runner_api uses it (a psycopg_pool.ConnectionPool underneath)."""

    def __init__(self, pool, https_retry_seconds=60.0, https_retry_max_seconds=3600.0):
        self.pool = pool
        self.https_retry_seconds = https_retry_seconds
        self.https_retry_max_seconds = https_retry_max_seconds

    def _one(self, sql, params=()):
        with self.pool.connection() as connection:
            return connection.execute(sql, params).fetchone()

    def _all(self, sql, params=()):
        with self.pool.connection() as connection:
            return connection.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ tokens

    def create_token(self, name, role, customer_id, token, expires_in=None):
        """A new token; ``expires_in`` (seconds) or None: it never expires."""
        return self._one("""
            INSERT INTO cloud_pod_api_tokens (name, role, customer_id, token_sha256, expires_at)
            VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))
            RETURNING id, name, role, customer_id, created_at, expires_at""",
                         (name, role, customer_id, token_digest(token), _seconds(expires_in)))

    def rotate_token(self, token_id, token, overlap, expires_in=None):
        """The successor of live token ``token_id`` (same name, role and customer) with secret ``token``;
        the old one stays valid for ``overlap`` seconds more (never longer than it would have). The
        successor expires after ``expires_in`` seconds, by default after the old token's own lifetime
        (none if it had none). ``(old, new)`` rows, or None when ``token_id`` is not a live token."""
        with self.pool.connection() as connection:
            old = connection.execute("""
                SELECT id, name, role, customer_id, created_at, expires_at FROM cloud_pod_api_tokens
                WHERE id = %s AND revoked_at IS NULL AND replaced_by IS NULL
                  AND (expires_at IS NULL OR expires_at > now()) FOR UPDATE""", (token_id,)).fetchone()
            if old is None:
                return None
            if expires_in is None and old["expires_at"] is not None:
                expires_in = (old["expires_at"] - old["created_at"]).total_seconds()
            new = connection.execute("""
                INSERT INTO cloud_pod_api_tokens (name, role, customer_id, token_sha256, expires_at)
                VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))
                RETURNING id, name, role, customer_id, created_at, expires_at""",
                                     (old["name"], old["role"], old["customer_id"], token_digest(token),
                                      _seconds(expires_in))).fetchone()
            old = connection.execute("""
                UPDATE cloud_pod_api_tokens
                SET replaced_by = %s,
                    expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => %s))
                WHERE id = %s RETURNING id, name, role, customer_id, created_at, expires_at""",
                                     (new["id"], _seconds(overlap), token_id)).fetchone()
            return old, new

    def revoke_token(self, token_id):
        return self._one("""
            UPDATE cloud_pod_api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL
            RETURNING id, name, role, customer_id""", (token_id,))

    def list_tokens(self):
        return self._all("""SELECT id, name, role, customer_id, created_at, last_used_at, revoked_at, expires_at,
                                   replaced_by, expires_at IS NOT NULL AND expires_at <= now() AS expired
                            FROM cloud_pod_api_tokens ORDER BY id""")

    def token_by_secret(self, token):
        """The unrevoked token with this secret (``expired`` says whether it is past its ``expires_at``);
        records the use of a live one (``last_used_at``, to the minute: one write per token and minute,
        not per request)."""
        return self._one("""
            WITH found AS (SELECT id, name, role, customer_id, last_used_at, expires_at,
                                  expires_at IS NOT NULL AND expires_at <= now() AS expired
                           FROM cloud_pod_api_tokens WHERE token_sha256 = %s AND revoked_at IS NULL),
                 used AS (UPDATE cloud_pod_api_tokens t SET last_used_at = now() FROM found
                          WHERE t.id = found.id AND NOT found.expired
                            AND (found.last_used_at IS NULL OR found.last_used_at < now() - interval '1 minute'))
            SELECT id, name, role, customer_id, expires_at, expired FROM found""", (token_digest(token),))

    # ------------------------------------------------------------------ subscriptions

    def create_order(self, order, max_attempts):  # pylint: disable=too-many-branches
        """Insert subscription + CREATE_CONTAINER task and notify workers, in one transaction.

        Returns ``(subscription, created)``; ``created`` is False when the Idempotency-Key names an
        earlier order of the same customer (then nothing is written).
        """
        key = order.get("idempotency_key")
        values = dict(order, ssh_public_keys=Jsonb(list(order.get("ssh_public_keys") or [])))
        with self.pool.connection() as connection:
            if key:
                existing = self._by_idempotency_key(connection, order["customer_id"], key)
                if existing:
                    return self._replay(existing, order), False
            try:
                with connection.transaction():
                    row = connection.execute(f"""
                        INSERT INTO cloud_pod_subscriptions AS s
                            (customer_id, customer_email, plan_code, domain, hostname, idempotency_key, request_digest,
                             ssh_public_keys)
                        VALUES (%(customer_id)s, %(customer_email)s, %(plan_code)s, %(domain)s, %(hostname)s,
                                %(idempotency_key)s, %(request_digest)s, %(ssh_public_keys)s)
                        RETURNING {SUBSCRIPTION_COLUMNS}, s.request_digest""", values).fetchone()
                    task = connection.execute("""
                        INSERT INTO cloud_pod_provisioning_tasks (subscription_id, task_type, max_attempts,
                                                                  idempotency_key)
                        VALUES (%s, 'CREATE_CONTAINER', %s, %s) RETURNING id""",
                                              (row["id"], max_attempts, key)).fetchone()
                    connection.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(task["id"])))
            except pg_errors.UniqueViolation as exc:
                constraint = exc.diag.constraint_name
                if constraint == "cloud_pod_subscriptions_idempotency":
                    existing = self._by_idempotency_key(connection, order["customer_id"], key)
                    return self._replay(existing, order), False
                if constraint == "cloud_pod_subscriptions_live_domain":
                    raise DomainTaken(order["domain"]) from None
                raise
        row.pop("request_digest", None)
        return row, True

    @staticmethod
    def _by_idempotency_key(connection, customer_id, key):
        return connection.execute(f"""
            SELECT {SUBSCRIPTION_COLUMNS}, s.request_digest FROM cloud_pod_subscriptions s
            WHERE s.customer_id = %s AND s.idempotency_key = %s""", (customer_id, key)).fetchone()

    @staticmethod
    def _replay(existing, order):
        if existing["request_digest"] != order["request_digest"]:
            raise IdempotencyMismatch(order["idempotency_key"])
        existing.pop("request_digest", None)
        return existing

    def list_subscriptions(self, customer_id=None, limit=500, after=None):
        """Pods, newest first (then by id), at most ``limit``; ``after`` = (created_at, id) of the
        last pod of the page before (a cursor): the pods that come after it."""
        created, last_id = after if after is not None else (None, None)
        return self._all(f"""
            SELECT {SUBSCRIPTION_COLUMNS} FROM cloud_pod_subscriptions s
            WHERE (%(customer)s::text IS NULL OR s.customer_id = %(customer)s)
              AND (%(created)s::timestamptz IS NULL OR s.created_at < %(created)s
                   OR (s.created_at = %(created)s AND s.id > %(id)s))
            ORDER BY s.created_at DESC, s.id LIMIT %(limit)s""",
                         {"customer": customer_id, "created": created, "id": last_id, "limit": limit})

    def get_subscription(self, subscription_id):
        return self._one(f"SELECT {SUBSCRIPTION_COLUMNS} FROM cloud_pod_subscriptions s WHERE s.id = %s",
                         (subscription_id,))

    def latest_task(self, subscription_id):
        """The pod's latest operation (the background HTTPS retry aside)."""
        return self._one(f"""SELECT {TASK_COLUMNS} FROM cloud_pod_provisioning_tasks t
                             WHERE t.subscription_id = %s AND t.task_type <> 'ISSUE_HTTPS'
                             ORDER BY t.id DESC LIMIT 1""", (subscription_id,))

    def task_events(self, task_id):
        return self._all("""SELECT id, attempt, step, host, status, duration_ms, message, created_at
                            FROM cloud_pod_events WHERE task_id = %s ORDER BY id""", (task_id,))

    def transfer_usage(self, subscription_id, months=12):
        """The pod's transfer per month (``cloudpods meter``), newest first, at most ``months`` rows."""
        return self._all("""SELECT month, bytes_in, bytes_out, restarts, quota_bytes, warned_at, exceeded_at, updated_at
                            FROM cloud_pod_transfer_usage WHERE subscription_id = %s
                            ORDER BY month DESC LIMIT %s""", (subscription_id, months))

    def count_rows(self):
        """Row counts of the tables a request may write (tests: "no row was written")."""
        return self._one("""SELECT (SELECT count(*) FROM cloud_pod_subscriptions) AS subscriptions,
                                   (SELECT count(*) FROM cloud_pod_provisioning_tasks) AS tasks,
                                   (SELECT count(*) FROM cloud_pod_events) AS events,
                                   (SELECT count(*) FROM cloud_pod_webhook_outbox) AS webhook_events""")

    @staticmethod
    def _insert_task(connection, subscription_id, task_type, max_attempts, params=None):
        """A new PENDING task (``params``: the operation's own arguments, migration 0005), announced
        on the queue's channel when the transaction commits. Another open task of the pod:
        ``OperationInProgress`` (the one-open-task index)."""
        try:
            with connection.transaction():  # a savepoint: the caller's transaction stays usable
                task = connection.execute(f"""
                    INSERT INTO cloud_pod_provisioning_tasks AS t (subscription_id, task_type, max_attempts, params)
                    VALUES (%s, %s, %s, %s) RETURNING {TASK_COLUMNS}""",
                                          (subscription_id, task_type, max_attempts, Jsonb(params or {}))).fetchone()
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "cloud_pod_provisioning_tasks_one_open":
                running = connection.execute("""
                    SELECT id, task_type, status FROM cloud_pod_provisioning_tasks
                    WHERE subscription_id = %s AND status IN ('PENDING', 'RUNNING') AND task_type <> 'ISSUE_HTTPS'
                    ORDER BY id LIMIT 1""", (subscription_id,)).fetchone()
                raise OperationInProgress(subscription_id, running) from None
            raise
        connection.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(task["id"])))
        return task

    def start_operation(self, subscription_id, task_type, max_attempts, start_states, suspend_reason=None,
                        params=None, check=None):
        """Queue an operation a person asked for, in one transaction with the pod's row locked:
        ``NotStartable`` when the pod's status is not one of ``start_states``, ``OperationInProgress``
        when another operation is open; both write nothing. ``suspend_reason`` (SUSPEND) is written
        on the subscription with the task; ``params`` are the operation's arguments (the task's
        ``params``). ``check(pod row)``, when given, runs under the lock before anything is written
        and may raise to refuse (CHANGE_PLAN: the plan the pod is on now; RESTORE: its listed archives).
        None if there is no such pod."""
        with self.pool.connection() as connection, connection.transaction():
            pod = connection.execute("SELECT status, plan_code, backups, backups_listed_at FROM cloud_pod_subscriptions "
                                     "WHERE id = %s FOR UPDATE", (subscription_id,)).fetchone()
            if pod is None:
                return None
            if pod["status"] not in start_states:
                raise NotStartable(pod["status"])
            if check is not None:
                check(pod)
            task = self._insert_task(connection, subscription_id, task_type, max_attempts, params)
            if suspend_reason is not None:
                connection.execute("UPDATE cloud_pod_subscriptions SET suspend_reason = %s, updated_at = now() "
                                   "WHERE id = %s", (suspend_reason, subscription_id))
            return task

    def retry_create(self, subscription_id, max_attempts):
        """An admin's retry of a FAILED order: the pod is PROVISIONING again with a new CREATE_CONTAINER
        task, in one transaction. provision.yml finds the container the failed run left by its host
        name and adopts it, so nothing is orphaned. ``NotStartable`` unless the pod is FAILED and its
        latest operation is a failed create; ``DomainTaken`` when another live pod holds its domain
        meanwhile. None if there is no such pod."""
        with self.pool.connection() as connection:
            try:
                with connection.transaction():
                    pod = connection.execute("SELECT status, domain FROM cloud_pod_subscriptions WHERE id = %s "
                                             "FOR UPDATE", (subscription_id,)).fetchone()
                    if pod is None:
                        return None
                    latest = connection.execute("""
                        SELECT task_type FROM cloud_pod_provisioning_tasks
                        WHERE subscription_id = %s AND task_type <> 'ISSUE_HTTPS' ORDER BY id DESC LIMIT 1""",
                                                (subscription_id,)).fetchone()
                    if pod["status"] != "FAILED" or latest is None or latest["task_type"] != "CREATE_CONTAINER":
                        raise NotStartable(pod["status"])
                    connection.execute("UPDATE cloud_pod_subscriptions SET status = 'PROVISIONING', last_error = NULL, "
                                       "updated_at = now() WHERE id = %s", (subscription_id,))
                    return self._insert_task(connection, subscription_id, "CREATE_CONTAINER", max_attempts)
            except pg_errors.UniqueViolation as exc:
                if exc.diag.constraint_name == "cloud_pod_subscriptions_live_domain":
                    raise DomainTaken(pod["domain"]) from None
                raise

    def enqueue_operation(self, subscription_id, task_type, max_attempts):
        """Queue an operation (RESTART, ...) on an existing pod; one open task per pod."""
        with self.pool.connection() as connection, connection.transaction():
            return self._insert_task(connection, subscription_id, task_type, max_attempts)

    def set_ssh_keys(self, subscription_id, lines, task_type, max_attempts, start_states=("ACTIVE",)):
        """Replace the pod's wanted SSH keys and queue the operation that applies them, in one
        transaction: ``NotStartable`` (pod status) or ``OperationInProgress`` leave both unchanged.
        None if there is no such pod."""
        with self.pool.connection() as connection, connection.transaction():
            pod = connection.execute("SELECT status FROM cloud_pod_subscriptions WHERE id = %s FOR UPDATE",
                                     (subscription_id,)).fetchone()
            if pod is None:
                return None
            if pod["status"] not in start_states:
                raise NotStartable(pod["status"])
            task = self._insert_task(connection, subscription_id, task_type, max_attempts)
            connection.execute("UPDATE cloud_pod_subscriptions SET ssh_public_keys = %s, updated_at = now() "
                               "WHERE id = %s", (Jsonb(list(lines)), subscription_id))
            return task

    def queue(self, include_finished=False, limit=500, before_id=None):
        """Tasks, newest first; ``before_id`` (a cursor: the last id of the page before) pages on."""
        statuses = ["PENDING", "RUNNING", "FAILED", "COMPLETED"] if include_finished else ["PENDING", "RUNNING"]
        return self._all(f"""SELECT {TASK_COLUMNS}, s.hostname, s.plan_code FROM cloud_pod_provisioning_tasks t
                             JOIN cloud_pod_subscriptions s ON s.id = t.subscription_id
                             WHERE t.status = ANY(%s) AND (%s::bigint IS NULL OR t.id < %s)
                             ORDER BY t.id DESC LIMIT %s""", (statuses, before_id, before_id, limit))

    # ------------------------------------------------------------------ the worker's side

    def fail_exhausted_leases(self, lease_seconds=30.0):
        """Tasks whose worker vanished on their last attempt: FAILED (their pods too, for creates)."""
        with self.pool.connection() as connection, connection.transaction():
            rows = connection.execute(f"""
                UPDATE cloud_pod_provisioning_tasks
                SET status = 'FAILED', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
                    last_error = concat_ws(': ', 'worker ' || worker_id || ' stopped responding', last_error)
                WHERE id IN (SELECT id FROM cloud_pod_provisioning_tasks
                             WHERE status = 'RUNNING' AND {LEASE_EXPIRED} AND attempts >= max_attempts
                             FOR UPDATE SKIP LOCKED)
                RETURNING id, subscription_id, task_type, last_error""",
                                      {"lease_seconds": lease_seconds}).fetchall()
            for row in rows:
                if row["task_type"] == operations.HTTPS_RETRY:
                    self._https_retry_failed(connection, row)
                else:
                    self._fail_subscription(connection, row)
        return rows

    def close_idle_https_retries(self):
        """Waiting HTTPS retries of pods that are no longer ACTIVE: closed (COMPLETED, result
        ``{"dropped": ...}``); a pod that is not ACTIVE is not retried."""
        with self.pool.connection() as connection, connection.transaction():
            return connection.execute("""
                UPDATE cloud_pod_provisioning_tasks t
                SET status = 'COMPLETED', finished_at = now(), updated_at = now(),
                    result = jsonb_build_object('dropped', 'the pod is ' || s.status)
                FROM cloud_pod_subscriptions s
                WHERE s.id = t.subscription_id AND t.task_type = 'ISSUE_HTTPS' AND t.status = 'PENDING'
                  AND s.status <> 'ACTIVE'
                RETURNING t.id, t.subscription_id, s.status""").fetchall()

    def operation_waiting(self, task):
        """True when another task of the pod is open: a running background retry then steps aside."""
        row = self._one("""SELECT 1 AS waiting FROM cloud_pod_provisioning_tasks
                           WHERE subscription_id = %s AND id <> %s AND status IN ('PENDING', 'RUNNING') LIMIT 1""",
                        (task["subscription_id"], task["id"]))
        return row is not None

    @staticmethod
    def _fail_subscription(connection, task):
        """A task failed for good: the pod takes its operation's failure status (operations.py;
        unchanged if it has none) and the error."""
        connection.execute("""UPDATE cloud_pod_subscriptions SET status = coalesce(%s, status), last_error = %s,
                              updated_at = now() WHERE id = %s""",
                           (operations.failure_status(task["task_type"]), task["last_error"],
                            task["subscription_id"]))

    # ------------------------------------------------------------------ the background HTTPS retry

    def _https_retry_failed(self, connection, task):
        """A retry run that failed (not one that reported pending): still pending, with a reason a
        customer can read and the task to look up; the next retry backs off further."""
        row = connection.execute("""
            UPDATE cloud_pod_subscriptions
            SET https_reason = %s, https_pending_runs = https_pending_runs + 1, updated_at = now()
            WHERE id = %s RETURNING id, status, https_status, https_pending_runs""",
                                 (f"The certificate request did not complete (reference task-{task['id']}); "
                                  "it is retried automatically.", task["subscription_id"])).fetchone()
        self._schedule_https_retry(connection, row, reported=True)

    def _schedule_https_retry(self, connection, pod, reported):
        """After a task of the pod ended: keep exactly one waiting retry while the pod is ACTIVE
        and its HTTPS pending, none otherwise. ``reported``: this run tried HTTPS (reported it, or
        was the retry itself), so the waiting retry moves to the next backoff step."""
        if pod is None:
            return
        if pod["status"] != "ACTIVE" or pod["https_status"] != "pending":
            connection.execute("""
                UPDATE cloud_pod_provisioning_tasks
                SET status = 'COMPLETED', finished_at = now(), updated_at = now(),
                    result = jsonb_build_object('dropped', %s::text)
                WHERE subscription_id = %s AND task_type = 'ISSUE_HTTPS' AND status = 'PENDING'""",
                               (f"the pod is {pod['status']}, HTTPS {pod['https_status'] or 'not reported'}",
                                pod["id"]))
            return
        delay = https_retry_delay(pod["https_pending_runs"], self.https_retry_seconds, self.https_retry_max_seconds)
        connection.execute("""
            INSERT INTO cloud_pod_provisioning_tasks AS t (subscription_id, task_type, max_attempts, run_at)
            VALUES (%(pod)s, 'ISSUE_HTTPS', 1, now() + make_interval(secs => %(delay)s))
            ON CONFLICT (subscription_id) WHERE status IN ('PENDING', 'RUNNING') AND task_type = 'ISSUE_HTTPS'
            DO UPDATE SET run_at = EXCLUDED.run_at, updated_at = now()
            WHERE t.status = 'PENDING' AND %(reported)s""", {"pod": pod["id"], "delay": delay, "reported": reported})

    # ------------------------------------------------------------------ claims

    def claim(self, worker_id, lease_seconds):
        """Claim the next runnable task (pending and due, or running with an expired lease).

        The pod's row is locked with the task: two workers never claim two tasks of one pod at
        once, and the check that nothing else of the pod runs is repeated under that lock (a new
        statement sees every claim committed before it). Operations go before background retries.
        """
        params = {"worker_id": worker_id, "lease_seconds": lease_seconds}
        with self.pool.connection() as connection, connection.transaction():
            candidate = connection.execute(f"""
                SELECT t.id, t.subscription_id, t.task_type FROM cloud_pod_provisioning_tasks t
                JOIN cloud_pod_subscriptions s ON s.id = t.subscription_id
                WHERE t.status IN ('PENDING', 'RUNNING')
                  AND ((t.status = 'PENDING' AND t.run_at <= now())
                       OR (t.status = 'RUNNING' AND {LEASE_EXPIRED} AND t.attempts < t.max_attempts))
                  AND {CLAIMABLE}
                ORDER BY t.task_type = 'ISSUE_HTTPS', t.run_at, t.id
                LIMIT 1
                FOR UPDATE OF t, s SKIP LOCKED""", params).fetchone()
            if candidate is None:
                return None
            busy = connection.execute("""
                SELECT 1 FROM cloud_pod_provisioning_tasks
                WHERE subscription_id = %s AND id <> %s
                  AND (status = 'RUNNING' OR (%s AND status = 'PENDING')) LIMIT 1""",
                                      (candidate["subscription_id"], candidate["id"],
                                       candidate["task_type"] == operations.HTTPS_RETRY)).fetchone()
            if busy is not None:
                return None  # another worker claimed a task of this pod meanwhile
            return connection.execute(f"""
                UPDATE cloud_pod_provisioning_tasks t
                SET status = 'RUNNING', worker_id = %(worker_id)s, attempts = t.attempts + 1,
                    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
                    started_at = now(), updated_at = now()
                FROM cloud_pod_subscriptions s
                WHERE t.id = %(id)s AND s.id = t.subscription_id
                RETURNING {TASK_COLUMNS}, s.plan_code, s.domain, s.hostname, s.customer_email, s.vmid, s.node,
                          s.ssh_public_keys, s.status AS pod_status""", dict(params, id=candidate["id"])).fetchone()

    def heartbeat(self, task, lease_seconds):
        """Extend our lease; False if the task is no longer ours (lease lost to another worker)."""
        row = self._one("""
            UPDATE cloud_pod_provisioning_tasks SET lease_expires_at = now() + make_interval(secs => %s),
                   updated_at = now()
            WHERE id = %s AND worker_id = %s AND attempts = %s AND status = 'RUNNING' RETURNING id""",
                        (lease_seconds, task["id"], task["worker_id"], task["attempts"]))
        return row is not None

    def add_event(self, task, step, status, host=None, duration_ms=None, message=None):
        """Record an event of our attempt; False (nothing written) once another worker has claimed the
        task: a worker that lost its lease adds nothing to the log of the new attempt."""
        with self.pool.connection() as connection:
            cursor = connection.execute("""
                INSERT INTO cloud_pod_events (task_id, subscription_id, attempt, worker_id, step, host, status,
                                              duration_ms, message)
                SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s
                WHERE EXISTS (SELECT 1 FROM cloud_pod_provisioning_tasks
                              WHERE id = %s AND worker_id = %s AND attempts = %s)""",
                                        (task["id"], task["subscription_id"], task["attempts"], task["worker_id"],
                                         step, host, status, duration_ms, message,
                                         task["id"], task["worker_id"], task["attempts"]))
            return cursor.rowcount == 1

    def complete(self, task, stats):
        """Mark our task COMPLETED and apply its outcome to the subscription; False if not ours any more.

        ``stats`` (checked by the worker): vmid, node, ip, ssh_host_keys, ssh_user, ssh_port, the
        HTTPS report (https_status, https_reason, https_not_after) and the pod's archives (backups,
        with the time they were read); what a run did not report stays.
        """
        background = task["task_type"] == operations.HTTPS_RETRY
        with self.pool.connection() as connection, connection.transaction():
            row = connection.execute("""
                UPDATE cloud_pod_provisioning_tasks
                SET status = 'COMPLETED', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
                    last_error = NULL, result = %s
                WHERE id = %s AND worker_id = %s AND attempts = %s AND status = 'RUNNING' RETURNING id""",
                                     (Jsonb(stats), task["id"], task["worker_id"], task["attempts"])).fetchone()
            if row is None:
                return False
            new_status = operations.success_status(task["task_type"])  # None: unchanged
            https = stats.get("https_status")
            pod = connection.execute("""
                UPDATE cloud_pod_subscriptions
                SET status = coalesce(%(status)s, status),
                    vmid = coalesce(%(vmid)s, vmid), node = coalesce(%(node)s, node),
                    ip = coalesce(%(ip)s::inet, ip), updated_at = now(),
                    last_error = CASE WHEN %(background)s THEN last_error END,
                    activated_at = CASE WHEN %(status)s = 'ACTIVE' THEN coalesce(activated_at, now())
                                   ELSE activated_at END,
                    suspended_at = CASE WHEN %(status)s = 'SUSPENDED' THEN now()
                                        WHEN %(status)s = 'ACTIVE' THEN NULL ELSE suspended_at END,
                    suspend_reason = CASE WHEN %(status)s = 'ACTIVE' THEN NULL ELSE suspend_reason END,
                    plan_code = coalesce(%(plan_code)s, plan_code),
                    ssh_host_keys = coalesce(%(ssh_host_keys)s, ssh_host_keys),
                    ssh_user = coalesce(%(ssh_user)s, ssh_user), ssh_port = coalesce(%(ssh_port)s, ssh_port),
                    https_status = coalesce(%(https)s, https_status),
                    https_reason = CASE WHEN %(https)s::text IS NULL THEN https_reason ELSE %(https_reason)s END,
                    https_not_after = CASE WHEN %(https)s::text IS NULL THEN https_not_after
                                      ELSE %(https_not_after)s::timestamptz END,
                    https_pending_runs = CASE WHEN %(https)s::text IS NULL THEN https_pending_runs
                                              WHEN %(https)s = 'pending' THEN https_pending_runs + 1 ELSE 0 END,
                    backups = coalesce(%(backups)s, backups),
                    backups_listed_at = CASE WHEN %(backups)s::jsonb IS NULL THEN backups_listed_at ELSE now() END
                WHERE id = %(id)s
                RETURNING id, status, https_status, https_pending_runs""",
                                     {"status": new_status, "plan_code": operations.plan_after(task),
                                      "vmid": stats.get("vmid"), "node": stats.get("node"),
                                      "ip": stats.get("ip") or None, "id": task["subscription_id"],
                                      "background": background,
                                      "ssh_host_keys": (Jsonb(stats["ssh_host_keys"]) if "ssh_host_keys" in stats
                                                        else None),
                                      "ssh_user": stats.get("ssh_user"), "ssh_port": stats.get("ssh_port"),
                                      "https": https, "https_reason": stats.get("https_reason", ""),
                                      "https_not_after": stats.get("https_not_after"),
                                      "backups": Jsonb(stats["backups"]) if "backups" in stats else None}).fetchone()
            self._schedule_https_retry(connection, pod, reported=https is not None or background)
            if task["task_type"] == "TRANSFER_QUOTA":
                self._transfer_quota_applied(connection, task)
        return True

    @staticmethod
    def _transfer_quota_applied(connection, task):
        """A TRANSFER_QUOTA that succeeded: the throttle it set (or lifted) and the mail it sent are
        recorded, so the meter's next pass does not ask again (runner_api/metering.py)."""
        params = task.get("params") or {}
        if params.get("rate_mbps") is not None:
            connection.execute("UPDATE cloud_pod_subscriptions SET transfer_rate_mbps = nullif(%s::numeric, 0) "
                               "WHERE id = %s", (params["rate_mbps"], task["subscription_id"]))
        if params.get("notice") and params.get("month"):
            connection.execute("""UPDATE cloud_pod_transfer_usage SET notified_level = greatest(notified_level, %s)
                                  WHERE subscription_id = %s AND month = to_date(%s, 'YYYY-MM')""",
                               (int(params.get("level") or 0), task["subscription_id"], params["month"]))

    def fail_attempt(self, task, error, retry_delay, give_up=False):
        """After a failed attempt: back to PENDING after ``retry_delay`` s, or FAILED (task and pod)
        when the attempts are used up. Returns the new task status, or None if not ours any more.

        A background HTTPS retry that failed leaves the pod alone: its HTTPS stays pending with a
        reason, and the next retry is scheduled further out."""
        with self.pool.connection() as connection, connection.transaction():
            row = connection.execute("""
                UPDATE cloud_pod_provisioning_tasks
                SET status = CASE WHEN attempts >= max_attempts OR %s THEN 'FAILED' ELSE 'PENDING' END,
                    finished_at = CASE WHEN attempts >= max_attempts OR %s THEN now() END,
                    -- a task that failed for good keeps the time it was due
                    run_at = CASE WHEN attempts >= max_attempts OR %s THEN run_at
                                  ELSE now() + make_interval(secs => %s) END,
                    lease_expires_at = NULL, last_error = %s, updated_at = now()
                WHERE id = %s AND worker_id = %s AND attempts = %s AND status = 'RUNNING'
                RETURNING id, subscription_id, task_type, status, last_error""",
                                     (give_up, give_up, give_up, retry_delay, error, task["id"], task["worker_id"],
                                      task["attempts"])).fetchone()
            if row is None:
                return None
            if row["task_type"] == operations.HTTPS_RETRY:
                if row["status"] == "FAILED":
                    self._https_retry_failed(connection, row)
            elif row["status"] == "FAILED":
                self._fail_subscription(connection, row)
            else:
                connection.execute("UPDATE cloud_pod_subscriptions SET last_error = %s, updated_at = now() "
                                   "WHERE id = %s", (error, task["subscription_id"]))
        return row["status"]

    def release(self, task, reason):
        """Give an interrupted task back to the queue at once; the attempt does not count."""
        with self.pool.connection() as connection, connection.transaction():
            row = connection.execute("""
                UPDATE cloud_pod_provisioning_tasks
                SET status = 'PENDING', worker_id = NULL, lease_expires_at = NULL, run_at = now(),
                    attempts = attempts - 1, updated_at = now()
                WHERE id = %s AND worker_id = %s AND attempts = %s AND status = 'RUNNING' RETURNING id""",
                                     (task["id"], task["worker_id"], task["attempts"])).fetchone()
            if row:
                connection.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(task["id"])))
                connection.execute("""
                    INSERT INTO cloud_pod_events (task_id, subscription_id, attempt, worker_id, step, status, message)
                    VALUES (%s, %s, %s, %s, 'worker', 'released', %s)""",
                                   (task["id"], task["subscription_id"], task["attempts"], task["worker_id"], reason))
        return row is not None

    # ------------------------------------------------------------------ periodic jobs (migration 0006)

    def claim_periodic(self, name, every_seconds):
        """Claim periodic job ``name`` for this period: its start time (the database's clock) when it is
        due and now ours, else None. The first call only starts the clock (the job is first due one
        period after the first worker started); workers never claim one period twice."""
        with self.pool.connection() as connection, connection.transaction():
            inserted = connection.execute("""
                INSERT INTO cloud_pod_maintenance (name, last_started_at) VALUES (%s, now())
                ON CONFLICT (name) DO NOTHING RETURNING name""", (name,)).fetchone()
            if inserted is not None:
                return None
            row = connection.execute("""
                UPDATE cloud_pod_maintenance SET last_started_at = now()
                WHERE name = %s AND last_started_at <= now() - make_interval(secs => %s)
                RETURNING last_started_at""", (name, every_seconds)).fetchone()
        return row["last_started_at"] if row else None

    def finish_periodic(self, name, error=None):
        self._one("""UPDATE cloud_pod_maintenance SET last_finished_at = now(), last_error = %s WHERE name = %s
                     RETURNING name""", (error, name))

    def store_backup_catalog(self, catalog, read_at):
        """Every pod's archives from one pass over the backup root (``catalog``: hostname -> the API's
        entries, checked by the worker), read from ``read_at`` on: a pod without an entry has none. A
        pod whose list a run wrote after ``read_at`` keeps that newer list. Returns the pods written."""
        with self.pool.connection() as connection, connection.transaction():
            cursor = connection.execute("""
                UPDATE cloud_pod_subscriptions
                SET backups = coalesce(%(catalog)s::jsonb -> hostname, '[]'::jsonb), backups_listed_at = %(read_at)s
                WHERE backups_listed_at IS NULL OR backups_listed_at < %(read_at)s""",
                                        {"catalog": Jsonb(catalog), "read_at": read_at})
            return cursor.rowcount

    def seconds_until_next_task(self, lease_seconds=30.0):
        """Seconds until the earliest task a worker could take is due or a lease expires (None: none).
        A task that waits for another task of its pod is not counted: the end of that one wakes us."""
        row = self._one(f"""
            SELECT extract(epoch FROM min(CASE WHEN t.status = 'PENDING' THEN t.run_at
                                               ELSE greatest(t.lease_expires_at, pg_postmaster_start_time()
                                                             + make_interval(secs => %s)) END)
                                      - now()) AS wait
            FROM cloud_pod_provisioning_tasks t JOIN cloud_pod_subscriptions s ON s.id = t.subscription_id
            WHERE t.status IN ('PENDING', 'RUNNING') AND (t.status = 'RUNNING' OR {CLAIMABLE})""",
                        (lease_seconds,))
        return None if row["wait"] is None else max(0.0, float(row["wait"]))
