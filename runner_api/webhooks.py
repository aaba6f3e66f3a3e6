"""Webhooks to mPanel: the outbox (migration 0003) delivered to ``CLOUDPODS_WEBHOOK_URL``.

Writing: the database's triggers write one outbox row per event (a pod created or changing
status, an operation ending COMPLETED or FAILED) in the transaction that makes the change, so
every code path that changes a pod, today's and any added later, is covered without code here.

Delivering: a thread of each ``cloudpods worker`` (no extra service), when a URL is configured.
It takes the earliest undelivered event of a pod whose turn it is (``FOR UPDATE SKIP LOCKED``,
and no earlier undelivered event of the same pod), POSTs it while holding that row lock (so two
workers never send one event at the same time, and a pod's next event waits until this one is
accepted), and records the outcome in the same transaction:

- 2xx: delivered;
- anything else (other status, timeout, connection refused, TLS error): attempts + 1, the next
  attempt after a capped exponential backoff with jitter (``retry_delay``); never given up, so
  a receiver that is down for an hour (or a day) loses nothing.

At least once: a worker that dies after the receiver accepted but before its commit leaves the
row undelivered and it is sent again; receivers drop duplicates by ``X-CloudPods-Event-Id``.
Each attempt is signed afresh with the time of sending (``sign``): a receiver may reject
anything older than five minutes without losing the events that waited for it.

Without ``CLOUDPODS_WEBHOOK_URL`` the rows are still written (and readable in the admin API) but
not sent; once a URL is configured, the backlog is delivered, oldest first per pod.
"""

import base64
import hashlib
import hmac
import http.client
import json
import logging
import random
import ssl
import threading
import time
import urllib.parse
import uuid

import psycopg

from .repository import open_pool
from .settings import scrub

LOG = logging.getLogger(__name__)
SIGNATURE_VERSION = "v1"
USER_AGENT = "cloudpods-webhooks/1"
RESPONSE_READ_LIMIT = 65536  # bytes of a receiver's answer read (and thrown away) before closing
ERROR_LIMIT = 300  # characters of an error kept in last_error
PRUNE_EVERY_SECONDS = 3600.0  # how often a deliverer deletes old delivered events (and once at start)
STATUSES = ("pending", "failed", "delivered")

# The next event a deliverer may send: undelivered, due, and the earliest undelivered one of its pod.
CLAIM = """
    SELECT o.id, o.event_id, o.subscription_id, o.sequence, o.event_type, o.payload, o.created_at, o.attempts
    FROM cloud_pod_webhook_outbox o
    WHERE o.delivered_at IS NULL AND o.next_attempt_at <= now()
      AND NOT EXISTS (SELECT 1 FROM cloud_pod_webhook_outbox e
                      WHERE e.subscription_id = o.subscription_id AND e.delivered_at IS NULL
                        AND e.sequence < o.sequence)
    ORDER BY o.next_attempt_at, o.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""
DELIVERY_COLUMNS = """
    o.id, o.event_id, o.subscription_id, o.sequence, o.event_type, o.payload, o.created_at, o.attempts,
    o.next_attempt_at, o.last_attempt_at, o.last_status, o.last_error, o.delivered_at
"""


# ---------------------------------------------------------------------------- the wire format

def envelope(row):
    """The JSON document POSTed for an outbox row (openapi.yaml, webhooks)."""
    return {"id": str(row["event_id"]), "type": row["event_type"], "pod_id": str(row["subscription_id"]),
            "sequence": row["sequence"], "created_at": row["created_at"].isoformat(), "data": row["payload"]}


def body(row):
    """The exact bytes sent (and signed) for an outbox row: compact JSON, keys sorted."""
    return json.dumps(envelope(row), separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret, timestamp, raw_body):
    """``X-CloudPods-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"<timestamp>.<raw body>"`` with the secret."""
    message = str(int(timestamp)).encode() + b"." + raw_body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret, timestamp_header, signature_header, raw_body, now=None, tolerance=300):
    """True when the headers sign ``raw_body`` with ``secret`` and the timestamp is within
    ``tolerance`` seconds of ``now`` (a receiver's check, as in the README; tests use it too)."""
    try:
        timestamp = int(timestamp_header)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, raw_body)
    # A later version may send "v1=..., v2=..."; any v1 part that matches will do.
    return any(hmac.compare_digest(expected, part.strip()) for part in str(signature_header or "").split(","))


def headers(secret, row, raw_body, timestamp=None):
    timestamp = int(time.time() if timestamp is None else timestamp)
    return {"Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-CloudPods-Event-Id": str(row["event_id"]), "X-CloudPods-Event-Type": row["event_type"],
            "X-CloudPods-Timestamp": str(timestamp), "X-CloudPods-Signature": sign(secret, timestamp, raw_body)}


def retry_delay(attempts, base, cap):
    """Seconds before the next attempt after ``attempts`` failed ones: base * 2^(attempts-1), at
    most ``cap``; half of it fixed, half random (jitter: workers and pods do not retry in step)."""
    ceiling = min(cap, base * (2 ** min(max(0, attempts - 1), 62)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def target(url):
    """(scheme, host, port, request path, Authorization header or None) of the webhook URL."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authorization = None
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    return parts.scheme, parts.hostname, parts.port, path, authorization


def post(url, raw_body, request_headers, timeout):
    """POST once; ``(status or None, error or None)``: error None only for a 2xx answer. No
    redirect is followed (a 3xx is a failed attempt). ``timeout`` bounds connecting and each read."""
    scheme, host, port, path, authorization = target(url)
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    if authorization:
        request_headers = dict(request_headers, Authorization=authorization)
    try:
        connection.request("POST", path, body=raw_body, headers=request_headers)
        response = connection.getresponse()
        response.read(RESPONSE_READ_LIMIT)
        if 200 <= response.status < 300:
            return response.status, None
        return response.status, f"HTTP {response.status} {' '.join(str(response.reason).split())}"[:ERROR_LIMIT]
    except (OSError, http.client.HTTPException) as exc:
        return None, (f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": "))[:ERROR_LIMIT]
    finally:
        connection.close()


# ---------------------------------------------------------------------------- delivery

class Deliverer:
    """Delivers the outbox in a thread (``start``/``stop``); ``deliver_one`` does one event.
    ``pool``: rows as dicts (``repository.open_pool``); None: its own pool of one connection."""

    def __init__(self, settings, name="cloudpods-webhooks", pool=None):
        self.settings = settings
        self.name = name
        self.pool = pool
        self.own_pool = pool is None
        self.stopping = threading.Event()
        self.thread = None
        self.secrets = settings.secrets()
        self.host = urllib.parse.urlsplit(settings.webhook_url or "").hostname

    def start(self):
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout=None):
        """Stop after the attempt in flight (at most the HTTP timeout, then its commit)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(self.settings.webhook_timeout_seconds + 10 if timeout is None else timeout)

    def run(self):
        failures = 0
        pruned_at = None
        LOG.info("webhooks: delivering to %s", self.host)
        try:
            while not self.stopping.is_set():
                try:
                    if self.pool is None:
                        self.pool = open_pool(self.settings, name=self.name[:60], min_size=1, max_size=1)
                    if pruned_at is None or time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                        self.prune()
                        pruned_at = time.monotonic()
                    if self.deliver_one():
                        failures = 0
                        continue
                    wait = self.seconds_until_due()
                    failures = 0
                    self.stopping.wait(self.settings.webhook_poll_seconds if wait is None
                                       else min(self.settings.webhook_poll_seconds, wait))
                except psycopg.OperationalError as exc:
                    failures += 1
                    if failures == 1:
                        LOG.warning("webhooks: database unavailable (%s); retrying",
                                    scrub(" ".join(str(exc).split())[:200], self.secrets))
                    self.stopping.wait(retry_delay(failures, 0.5, self.settings.db_retry_max_seconds))
                except Exception as exc:  # pylint: disable=broad-except
                    # A bug must not end delivery for good: log it, wait, go on.
                    failures += 1
                    LOG.error("webhooks: %s", scrub(f"{type(exc).__name__}: {exc}", self.secrets))
                    self.stopping.wait(retry_delay(failures, 0.5, self.settings.db_retry_max_seconds))
        finally:
            if self.own_pool and self.pool is not None:
                self.pool.close()
        LOG.info("webhooks: stopped")

    def prune(self):
        """Delete delivered events older than ``webhook_keep_days`` (CLOUDPODS_WEBHOOK_KEEP_DAYS); the
        number deleted. Undelivered events are never deleted, whatever their age."""
        with self.pool.connection() as connection:
            deleted = connection.execute("""
                DELETE FROM cloud_pod_webhook_outbox
                WHERE delivered_at IS NOT NULL AND delivered_at < now() - make_interval(secs => %s)""",
                                         (self.settings.webhook_keep_days * 86400,)).rowcount
        if deleted:
            LOG.info("webhooks: %s delivered events older than %g days deleted", deleted,
                     self.settings.webhook_keep_days)
        return deleted

    def seconds_until_due(self):
        with self.pool.connection() as connection:
            row = connection.execute("""SELECT extract(epoch FROM min(next_attempt_at) - now()) AS wait
                                        FROM cloud_pod_webhook_outbox WHERE delivered_at IS NULL""").fetchone()
        return None if row["wait"] is None else max(0.0, float(row["wait"]))

    def deliver_one(self):
        """Send the next due event; False if there was none. The row stays locked while it is sent."""
        settings = self.settings
        with self.pool.connection() as connection, connection.transaction():
            row = connection.execute(CLAIM).fetchone()
            if row is None:
                return False
            raw_body = body(row)
            status, error = post(settings.webhook_url, raw_body, headers(settings.webhook_secret, row, raw_body),
                                 settings.webhook_timeout_seconds)
            if error is None:
                connection.execute("""
                    UPDATE cloud_pod_webhook_outbox
                    SET attempts = attempts + 1, last_attempt_at = now(), last_status = %s, last_error = NULL,
                        delivered_at = now()
                    WHERE id = %s""", (status, row["id"]))
                LOG.info("webhooks: event %s (%s, pod %s #%s) delivered", row["event_id"], row["event_type"],
                         row["subscription_id"], row["sequence"])
                return True
            error = scrub(error, self.secrets)
            delay = retry_delay(row["attempts"] + 1, settings.webhook_retry_base_seconds,
                                settings.webhook_retry_max_seconds)
            connection.execute("""
                UPDATE cloud_pod_webhook_outbox
                SET attempts = attempts + 1, last_attempt_at = now(), last_status = %s, last_error = %s,
                    next_attempt_at = now() + make_interval(secs => %s)
                WHERE id = %s""", (status, error, delay, row["id"]))
            LOG.warning("webhooks: event %s (pod %s #%s) to %s: %s; attempt %s, next in %.1f s", row["event_id"],
                        row["subscription_id"], row["sequence"], self.host, error, row["attempts"] + 1, delay)
            return True


# ---------------------------------------------------------------------------- the admin API

def delivery_status(row):
    if row["delivered_at"] is not None:
        return "delivered"
    return "failed" if row["attempts"] > 0 else "pending"


def delivery_view(row):
    """An outbox row as the admin API shows it (openapi.yaml, WebhookDelivery)."""
    def when(value):
        return value.isoformat() if value is not None else None
    return {"event_id": str(row["event_id"]), "pod_id": str(row["subscription_id"]), "sequence": row["sequence"],
            "type": row["event_type"], "status": delivery_status(row), "created_at": when(row["created_at"]),
            "attempts": row["attempts"], "next_attempt_at": None if row["delivered_at"] else when(row["next_attempt_at"]),
            "last_attempt_at": when(row["last_attempt_at"]), "last_status": row["last_status"],
            "last_error": row["last_error"], "delivered_at": when(row["delivered_at"]), "event": envelope(row)}


def list_deliveries(pool, status=None, pod_id=None, before=None, limit=100):
    """Outbox rows, newest first: ``status`` pending (not delivered yet: includes failed), failed
    (not delivered, at least one attempt failed; still retried) or delivered; ``pod_id`` one pod's;
    ``before`` an id (the cursor: rows older than it). Returns ``limit`` + 1 rows at most (the
    caller knows from the extra one that there is a next page)."""
    conditions, params = [], []
    if status == "delivered":
        conditions.append("o.delivered_at IS NOT NULL")
    elif status == "pending":
        conditions.append("o.delivered_at IS NULL")
    elif status == "failed":
        conditions.append("o.delivered_at IS NULL AND o.attempts > 0")
    if pod_id is not None:
        conditions.append("o.subscription_id = %s")
        params.append(pod_id if isinstance(pod_id, uuid.UUID) else uuid.UUID(str(pod_id)))
    if before is not None:
        conditions.append("o.id < %s")
        params.append(before)
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    with pool.connection() as connection:
        return connection.execute(f"SELECT {DELIVERY_COLUMNS} FROM cloud_pod_webhook_outbox o {where} "
                                  "ORDER BY o.id DESC LIMIT %s", (*params, limit + 1)).fetchall()
