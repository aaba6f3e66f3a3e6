"""All SQL of runner_api: migrations, tokens, subscriptions, the provisioning queue, events.

Every statement takes parameters (never string formatting). The queue follows the design's
"Queue semantics": claim with ``FOR UPDATE SKIP LOCKED``, attempts counted at claim, a lease
renewed by heartbeat, reclaim of expired leases, retries with backoff, one open task per pod
(a partial unique index), and ``NOTIFY cloud_pod_tasks`` to wake idle workers.
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

SUBSCRIPTION_COLUMNS = """
    s.id, s.customer_id, s.customer_email, s.plan_code, s.domain, s.hostname, s.status, s.vmid, s.node,
    host(s.ip) AS ip, s.last_error, s.created_at, s.updated_at, s.activated_at,
    (SELECT max(lt.id) FROM cloud_pod_provisioning_tasks lt WHERE lt.subscription_id = s.id) AS latest_task_id
"""
TASK_COLUMNS = """
    t.id, t.subscription_id, t.task_type, t.status, t.worker_id, t.attempts, t.max_attempts, t.run_at,
    t.lease_expires_at, t.last_error, t.created_at, t.started_at, t.finished_at, t.updated_at
"""


class DomainTaken(Exception):
    """The domain already belongs to a live pod."""


class OperationInProgress(Exception):
    """The pod already has an unfinished task."""


class IdempotencyMismatch(Exception):
    """The Idempotency-Key was used before with a different request."""


def token_digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def migrate(database_url):
    """Apply the migrations not yet recorded, in name order; return the names applied."""
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

    def __init__(self, pool):
        self.pool = pool

    def _one(self, sql, params=()):
        with self.pool.connection() as connection:
            return connection.execute(sql, params).fetchone()

    def _all(self, sql, params=()):
        with self.pool.connection() as connection:
            return connection.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ tokens

    def create_token(self, name, role, customer_id, token):
        return self._one("""
            INSERT INTO cloud_pod_api_tokens (name, role, customer_id, token_sha256)
            VALUES (%s, %s, %s, %s) RETURNING id, name, role, customer_id, created_at""",
                         (name, role, customer_id, token_digest(token)))

    def revoke_token(self, token_id):
        return self._one("""
            UPDATE cloud_pod_api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL
            RETURNING id, name, role, customer_id""", (token_id,))

    def list_tokens(self):
        return self._all("""SELECT id, name, role, customer_id, created_at, last_used_at, revoked_at
                            FROM cloud_pod_api_tokens ORDER BY id""")

    def token_by_secret(self, token):
        """The live token with this secret; records its use (``last_used_at``, to the minute: one
        write per token and minute, not per request)."""
        return self._one("""
            WITH found AS (SELECT id, name, role, customer_id, last_used_at FROM cloud_pod_api_tokens
                           WHERE token_sha256 = %s AND revoked_at IS NULL),
                 used AS (UPDATE cloud_pod_api_tokens t SET last_used_at = now() FROM found
                          WHERE t.id = found.id
                            AND (found.last_used_at IS NULL OR found.last_used_at < now() - interval '1 minute'))
            SELECT id, name, role, customer_id FROM found""", (token_digest(token),))

    # ------------------------------------------------------------------ subscriptions

    def create_order(self, order, max_attempts):  # pylint: disable=too-many-branches
        """Insert subscription + CREATE_CONTAINER task and notify workers, in one transaction.

        Returns ``(subscription, created)``; ``created`` is False when the Idempotency-Key names an
        earlier order of the same customer (then nothing is written).
        """
        key = order.get("idempotency_key")
        with self.pool.connection() as connection:
            if key:
                existing = self._by_idempotency_key(connection, order["customer_id"], key)
                if existing:
                    return self._replay(existing, order), False
            try:
                with connection.transaction():
                    row = connection.execute(f"""
                        INSERT INTO cloud_pod_subscriptions AS s
                            (customer_id, customer_email, plan_code, domain, hostname, idempotency_key, request_digest)
                        VALUES (%(customer_id)s, %(customer_email)s, %(plan_code)s, %(domain)s, %(hostname)s,
                                %(idempotency_key)s, %(request_digest)s)
                        RETURNING {SUBSCRIPTION_COLUMNS}, s.request_digest""", order).fetchone()
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

    def list_subscriptions(self, customer_id=None, limit=500):
        if customer_id is None:
            return self._all(f"SELECT {SUBSCRIPTION_COLUMNS} FROM cloud_pod_subscriptions s "
                             "ORDER BY s.created_at DESC, s.id LIMIT %s", (limit,))
        return self._all(f"SELECT {SUBSCRIPTION_COLUMNS} FROM cloud_pod_subscriptions s WHERE s.customer_id = %s "
                         "ORDER BY s.created_at DESC, s.id LIMIT %s", (customer_id, limit))

    def get_subscription(self, subscription_id):
        return self._one(f"SELECT {SUBSCRIPTION_COLUMNS} FROM cloud_pod_subscriptions s WHERE s.id = %s",
                         (subscription_id,))

    def latest_task(self, subscription_id):
        return self._one(f"""SELECT {TASK_COLUMNS} FROM cloud_pod_provisioning_tasks t
                             WHERE t.subscription_id = %s ORDER BY t.id DESC LIMIT 1""", (subscription_id,))

    def task_events(self, task_id):
        return self._all("""SELECT id, attempt, step, host, status, duration_ms, message, created_at
                            FROM cloud_pod_events WHERE task_id = %s ORDER BY id""", (task_id,))

    def count_rows(self):
        """Row counts of the four tables (tests: "no row was written")."""
        return self._one("""SELECT (SELECT count(*) FROM cloud_pod_subscriptions) AS subscriptions,
                                   (SELECT count(*) FROM cloud_pod_provisioning_tasks) AS tasks,
                                   (SELECT count(*) FROM cloud_pod_events) AS events""")

    def enqueue_operation(self, subscription_id, task_type, max_attempts):
        """Queue an operation (RESTART, ...) on an existing pod; one open task per pod."""
        try:
            with self.pool.connection() as connection, connection.transaction():
                task = connection.execute(f"""
                    INSERT INTO cloud_pod_provisioning_tasks AS t (subscription_id, task_type, max_attempts)
                    VALUES (%s, %s, %s) RETURNING {TASK_COLUMNS}""",
                                          (subscription_id, task_type, max_attempts)).fetchone()
                connection.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(task["id"])))
                return task
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "cloud_pod_provisioning_tasks_one_open":
                raise OperationInProgress(subscription_id) from None
            raise

    def queue(self, include_finished=False, limit=500):
        statuses = ["PENDING", "RUNNING", "FAILED", "COMPLETED"] if include_finished else ["PENDING", "RUNNING"]
        return self._all(f"""SELECT {TASK_COLUMNS}, s.hostname, s.plan_code FROM cloud_pod_provisioning_tasks t
                             JOIN cloud_pod_subscriptions s ON s.id = t.subscription_id
                             WHERE t.status = ANY(%s) ORDER BY t.id DESC LIMIT %s""", (statuses, limit))

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
                self._fail_subscription(connection, row)
        return rows

    @staticmethod
    def _fail_subscription(connection, task):
        """A task failed for good: the pod takes its operation's failure status (operations.py;
        unchanged if it has none) and the error."""
        connection.execute("""UPDATE cloud_pod_subscriptions SET status = coalesce(%s, status), last_error = %s,
                              updated_at = now() WHERE id = %s""",
                           (operations.failure_status(task["task_type"]), task["last_error"],
                            task["subscription_id"]))

    def claim(self, worker_id, lease_seconds):
        """Claim the next runnable task (pending and due, or running with an expired lease)."""
        return self._one(f"""
            WITH next AS (
                SELECT id FROM cloud_pod_provisioning_tasks
                WHERE status IN ('PENDING', 'RUNNING')
                  AND ((status = 'PENDING' AND run_at <= now())
                       OR (status = 'RUNNING' AND {LEASE_EXPIRED} AND attempts < max_attempts))
                ORDER BY run_at, id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
            UPDATE cloud_pod_provisioning_tasks t
            SET status = 'RUNNING', worker_id = %(worker_id)s, attempts = t.attempts + 1,
                lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
                started_at = now(), updated_at = now()
            FROM next, cloud_pod_subscriptions s
            WHERE t.id = next.id AND s.id = t.subscription_id
            RETURNING {TASK_COLUMNS}, s.plan_code, s.domain, s.hostname, s.customer_email, s.vmid, s.node""",
                         {"worker_id": worker_id, "lease_seconds": lease_seconds})

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
        """Mark our task COMPLETED and apply its outcome to the subscription; False if not ours any more."""
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
            connection.execute("""
                UPDATE cloud_pod_subscriptions
                SET status = coalesce(%(status)s, status),
                    vmid = coalesce(%(vmid)s, vmid), node = coalesce(%(node)s, node),
                    ip = coalesce(%(ip)s::inet, ip), last_error = NULL, updated_at = now(),
                    activated_at = CASE WHEN %(status)s = 'ACTIVE' THEN coalesce(activated_at, now())
                                   ELSE activated_at END
                WHERE id = %(id)s""", {"status": new_status, "vmid": stats.get("vmid"), "node": stats.get("node"),
                                       "ip": stats.get("ip") or None, "id": task["subscription_id"]})
        return True

    def fail_attempt(self, task, error, retry_delay, give_up=False):
        """After a failed attempt: back to PENDING after ``retry_delay`` s, or FAILED (task and pod)
        when the attempts are used up. Returns the new task status, or None if not ours any more."""
        with self.pool.connection() as connection, connection.transaction():
            row = connection.execute("""
                UPDATE cloud_pod_provisioning_tasks
                SET status = CASE WHEN attempts >= max_attempts OR %s THEN 'FAILED' ELSE 'PENDING' END,
                    finished_at = CASE WHEN attempts >= max_attempts OR %s THEN now() END,
                    run_at = now() + make_interval(secs => %s), lease_expires_at = NULL,
                    last_error = %s, updated_at = now()
                WHERE id = %s AND worker_id = %s AND attempts = %s AND status = 'RUNNING'
                RETURNING id, subscription_id, task_type, status, last_error""",
                                     (give_up, give_up, retry_delay, error, task["id"], task["worker_id"],
                                      task["attempts"])).fetchone()
            if row is None:
                return None
            if row["status"] == "FAILED":
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

    def seconds_until_next_task(self, lease_seconds=30.0):
        """Seconds until the earliest pending task is due or a lease expires (None: queue empty)."""
        row = self._one("""
            SELECT extract(epoch FROM min(CASE WHEN status = 'PENDING' THEN run_at
                                               ELSE greatest(lease_expires_at, pg_postmaster_start_time()
                                                             + make_interval(secs => %s)) END)
                                      - now()) AS wait
            FROM cloud_pod_provisioning_tasks WHERE status IN ('PENDING', 'RUNNING')""", (lease_seconds,))
        return None if row["wait"] is None else max(0.0, float(row["wait"]))
