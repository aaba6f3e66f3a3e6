"""Prometheus metrics of the API and the worker (README, "Metrics"), with ``prometheus_client``.

Two kinds of values, read two ways:

- What lives in the database (the queue by operation and state, the oldest waiting task's age, the
  webhook backlog) is read when Prometheus scrapes, by ``DatabaseCollector``: a few cheap queries on
  the queue's partial indexes, so every process that answers tells the same truth and nothing has
  to be summed. Only the API's ``/metrics`` serves them (the workers would repeat the same series).
  A new database gauge is one ``Reading``: its query and the families it fills.
- What a process observes: the worker's operation durations (by operation and outcome) and failures
  (by operation and step), observed where an operation ends; the API's requests (by endpoint,
  method and status). The API runs as several gunicorn processes: gunicorn_conf.py gives them a
  fresh ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums their files (``MultiProcessCollector``).

Label values are bounded: operation names (operations.py, the tasks table's CHECK), outcomes and
states listed here, route templates, and step names of the playbooks (at most ``STEP_LABELS_LIMIT``
of them, then "other"); never a pod, a host name, a customer or an error text.

Access: ``/metrics`` tells order volumes. The API serves it only with ``CLOUDPODS_METRICS_TOKEN``
set, to requests bearing that token; a worker's endpoint is on loopback unless that token is set
and then asks for it too (deploy/prometheus/cloudpods.yml scrapes both).
"""

import hmac
import logging
import os
import socket
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from . import operations

LOG = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
# Prometheus' text format 0.0.4, which every Prometheus reads (the names here are all plain ones, so the
# body is the same in the 1.0.0 format newer prometheus_client releases label it with).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Operation durations: a restart takes seconds, a provisioning minutes, a backup of a big pod an hour.
OPERATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
# How an attempt of an operation ended (worker.py): completed; failed for good; failed and queued
# again (retry); given back to the queue unfinished (released: a shutdown, or an operation of the pod
# goes first); taken over by another worker after this one lost its lease (lost).
OUTCOMES = ("completed", "failed", "retry", "released", "lost")
# The failure of an attempt that no playbook step reported (executor error, unknown operation, timeout).
WORKER_STEP = "worker"
OTHER = "other"  # an operation or a step past the bounds below
# Distinct step labels a worker reports: more than the collection's named tasks (some 330), so a label
# that is not one of them (a task name templated with a pod's data) cannot grow the series for ever.
STEP_LABELS_LIMIT = 500
STEP_LABEL_LENGTH = 120
# Queue states: PENDING tasks that are due (waiting for a worker) or not yet (a retry's delay, the
# background HTTPS retry's next run: scheduled), and RUNNING ones.
QUEUE_STATES = ("waiting", "scheduled", "running")
DB_STATEMENT_TIMEOUT_MS = 2000  # a scrape never hangs on a locked or slow database
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


# ---------------------------------------------------------------- database gauges (read at scrape time)

@dataclass(frozen=True)
class Gauge:
    """One gauge family filled from a ``Reading``'s rows: ``labels`` and ``column`` are column names."""

    name: str
    documentation: str
    column: str
    labels: tuple = ()
    zero: object = None  # () -> the label values that read 0 when the query has no row for them


@dataclass(frozen=True)
class Reading:
    """One query and the gauge families its rows fill."""

    sql: str
    gauges: tuple


def _queued_operations():
    return sorted(op.name for op in operations.OPERATIONS.values() if op.queued)


READINGS = (
    # The queue's open tasks (the partial index cloud_pod_provisioning_tasks_claimable covers exactly them).
    Reading("""
        SELECT task_type AS operation,
               CASE WHEN status = 'RUNNING' THEN 'running' WHEN run_at <= now() THEN 'waiting' ELSE 'scheduled' END
                   AS state,
               count(*) AS tasks,
               coalesce(max(extract(epoch FROM now() - run_at)) FILTER (WHERE status = 'PENDING' AND run_at <= now()),
                        0) AS oldest_waiting
        FROM cloud_pod_provisioning_tasks WHERE status IN ('PENDING', 'RUNNING')
        GROUP BY 1, 2""", (
        Gauge("cloudpods_queue_tasks", "Open tasks by operation and state: waiting (due, not claimed yet), "
              "scheduled (due later: a retry's delay), running.", "tasks", ("operation", "state"),
              zero=lambda: [(op, state) for op in _queued_operations() for state in QUEUE_STATES]),
        Gauge("cloudpods_queue_oldest_waiting_seconds", "How long the oldest waiting task of an operation has been "
              "due without a worker claiming it (0: none waiting).", "oldest_waiting", ("operation",),
              zero=lambda: [(op,) for op in _queued_operations()]),
    )),
    # The webhook outbox's undelivered rows (the partial index cloud_pod_webhook_outbox_due covers them).
    Reading("""
        SELECT count(*) AS backlog, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
        FROM cloud_pod_webhook_outbox WHERE delivered_at IS NULL""", (
        Gauge("cloudpods_webhook_backlog_events", "Webhook events written but not delivered to mPanel yet.", "backlog"),
        Gauge("cloudpods_webhook_oldest_undelivered_seconds", "Age of the oldest undelivered webhook event "
              "(0: none).", "oldest"),
    )),
    # `cloudpods meter` (runner_api/metering.py, migration 0008): how old the counted transfer is, per Proxmox
    # cluster (its API URL); no series before the first pass that read the counters.
    Reading("""
        SELECT cluster, extract(epoch FROM now() - last_success_at) AS lag, pods
        FROM cloud_pod_meter_state WHERE last_success_at IS NOT NULL""", (
        Gauge("cloudpods_metering_lag_seconds", "Seconds since cloudpods meter last read the pods' transfer "
              "counters (its interval is CLOUDPODS_METER_INTERVAL_SECONDS).", "lag", ("cluster",)),
        Gauge("cloudpods_metering_pods", "Pods whose counters the last metering pass read.", "pods", ("cluster",)),
    )),
    # Each node as the meter's last pass saw it in /cluster/resources: free memory and disk while it is online
    # (PVE reports usage only then), and whether it is.
    Reading("""
        SELECT node, r.resource, r.free, (status = 'online')::int AS online
        FROM cloud_pod_nodes
        CROSS JOIN LATERAL (VALUES ('memory', maxmem - mem), ('disk', maxdisk - disk)) AS r (resource, free)
        WHERE status = 'online' AND r.free IS NOT NULL""", (
        Gauge("cloudpods_node_free_bytes", "Free memory and root disk of each online Proxmox node (maxmem - mem, "
              "maxdisk - disk of /cluster/resources), as the last metering pass read them.", "free",
              ("node", "resource")),
    )),
    Reading("SELECT node, (status = 'online')::int AS online FROM cloud_pod_nodes", (
        Gauge("cloudpods_node_online", "1 when the Proxmox node was online at the last metering pass.", "online",
              ("node",)),
    )),
)


class DatabaseCollector:
    """The database gauges, read at each scrape in one read-only transaction with a statement timeout.

    A database that does not answer gives ``cloudpods_database_up 0`` and none of the gauges (an
    empty series rather than a wrong 0); the first failure of an outage is logged, not each scrape.
    """

    def __init__(self, pool, readings=READINGS):
        self.pool = pool
        self.readings = readings
        self.failing = False

    def describe(self):
        return []  # never queried at registration time

    def collect(self):
        try:
            results = self._read()
        except Exception as exc:  # pylint: disable=broad-except
            if not self.failing:
                LOG.warning("metrics: the database gauges cannot be read (%s: %s)", type(exc).__name__,
                            " ".join(str(exc).split())[:200])
            self.failing = True
            results = None
        else:
            self.failing = False
        up = GaugeMetricFamily("cloudpods_database_up", "1 when the API read the database gauges of this scrape.")
        up.add_metric([], 0 if results is None else 1)
        yield up
        for reading, rows in results or ():
            yield from (_family(gauge, rows) for gauge in reading.gauges)

    def _read(self):
        with self.pool.connection() as connection, connection.transaction():
            connection.execute("SET TRANSACTION READ ONLY")
            connection.execute(f"SET LOCAL statement_timeout = {DB_STATEMENT_TIMEOUT_MS}")
            return [(reading, connection.execute(reading.sql).fetchall()) for reading in self.readings]


def _family(gauge, rows):
    family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)
    values = {tuple(str(row[label]) for label in gauge.labels): float(row[gauge.column]) for row in rows}
    for labels in gauge.zero() if gauge.zero else ():
        values.setdefault(tuple(labels), 0.0)
    for labels, value in sorted(values.items()):
        family.add_metric(list(labels), value)
    return family


# ---------------------------------------------------------------- the API's own (multi-process) metrics

API_REQUESTS = Counter("cloudpods_api_requests", "API requests answered, by route, method and status.",
                       ("endpoint", "method", "status"))
API_LATENCY = Histogram("cloudpods_api_request_duration_seconds", "API request durations by route and method.",
                        ("endpoint", "method"), buckets=API_BUCKETS)


def observe_request(endpoint, method, status, seconds):
    """One answered request; ``endpoint`` is the route's template (``/v1/pods/<pod_id>``), never the path."""
    API_REQUESTS.labels(endpoint, method, str(status)).inc()
    API_LATENCY.labels(endpoint, method).observe(seconds)


def api_exposition(pool):
    """The API's ``/metrics`` body: this process's (or, under gunicorn, every process's) metrics and the
    database gauges, read once for this scrape."""
    from prometheus_client import REGISTRY, multiprocess  # pylint: disable=import-outside-toplevel
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
        sources = [registry]
    else:
        sources = [REGISTRY, registry]
    registry.register(DatabaseCollector(pool))
    return b"".join(generate_latest(source) for source in sources)


def token_matches(header, token):
    """Whether an Authorization header is ``Bearer <token>`` (compared in constant time)."""
    scheme, _sep, sent = (header or "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())


# ---------------------------------------------------------------- the worker's metrics and endpoint

class WorkerMetrics:
    """A worker's operation durations and failures, in a registry of its own, served by ``serve``."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.durations = Histogram("cloudpods_operation_duration_seconds", "Attempts of operations by how they "
                                   "ended, from the start of the run to the outcome written.",
                                   ("operation", "outcome"), buckets=OPERATION_BUCKETS, registry=self.registry)
        self.failures = Counter("cloudpods_operation_failures", "Failed attempts of operations by the step that failed "
                                "(worker: no playbook step failed, e.g. an executor error or a timeout).",
                                ("operation", "step"), registry=self.registry)
        self.steps = set()
        self.lock = threading.Lock()
        self.server = None

    def ended(self, operation, outcome, seconds):
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        self.durations.labels(self._operation(operation), outcome).observe(seconds)

    def failed(self, operation, step):
        self.failures.labels(self._operation(operation), self._step(step)).inc()

    @staticmethod
    def _operation(name):
        return name if operations.find(name) is not None else OTHER

    def _step(self, step):
        """A playbook step's name as a label: bounded in length and in number (then "other")."""
        if not step:
            return WORKER_STEP
        step = " ".join(str(step).split())[:STEP_LABEL_LENGTH]
        with self.lock:
            if step in self.steps:
                return step
            if len(self.steps) >= STEP_LABELS_LIMIT:
                return OTHER
            self.steps.add(step)
            return step

    def serve(self, host, port, token=None):
        """Serve ``/metrics`` on ``host:port`` in a daemon thread (``token``: required as a bearer token);
        the address served, or OSError when it cannot listen there (a port in use)."""
        app = _wsgi_app(self.registry, token)
        server_class = _Server6 if ":" in host else ThreadingWSGIServer
        self.server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True).start()
        return self.server.server_address[:2]

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _wsgi_app(registry, token):
    def app(environ, start_response):
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics here\n"]
        if token is not None and not token_matches(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"a bearer token is required (CLOUDPODS_METRICS_TOKEN)\n"]
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [body]
    return app


class _Server6(ThreadingWSGIServer):
    """The same server on an IPv6 address (``::1``)."""

    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape (wsgiref writes one to stderr for each request)."""

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass
