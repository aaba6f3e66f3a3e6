"""Transfer metering and quotas: ``cloudpods meter`` (README, "Transfer metering and quotas").

A pass:

1. one ``GET /cluster/resources`` for the whole cluster: every CT's ``netin``/``netout``/``uptime``
   and every node (never a call per pod);
2. in one transaction, under an advisory lock so that two meters never count the same bytes: each
   live pod's bytes since the counters the last pass stored, added to this month's row of
   ``cloud_pod_transfer_usage`` (migration 0008), and the new counters stored;
3. the plan's quota: at 80% and at 100% the row's ``warned_at`` / ``exceeded_at`` are set once and a
   ``pod.transfer_quota`` webhook event is written; the site's policy is then reconciled (``reconcile``)
   by queueing an operation: TRANSFER_QUOTA (the customer's mail, and the throttle on net0) or
   SUSPEND / RESUME (reason ``transfer-quota``);
4. the nodes' capacity and the pass itself (metering lag) are recorded.

A pass that fails or dies before its commit changes nothing: the next one counts from the same
stored counters, so nothing is lost and nothing is counted twice.

The counters (FACTS.md A3) are bytes since the CT started, summed over its veths:

- first reading of a pod: it only becomes the starting point (what the CT moved before the meter
  knew it, provisioning included, is not the customer's month);
- the CT started again (its start time, the read time minus ``uptime``, moved later than the stored
  one by more than ``RESTART_SLACK``, or a counter is lower than the stored one and not near the top of
  64 bits: a quick restart moves the start by less than the slack): the counters began again at zero,
  so all of them are new bytes;
- a lower counter within ``MAX_STEP`` of 2^64 and no restart: the counter wrapped (``WRAP``), counted
  modulo;
- a leap above ``MAX_STEP`` (a broken counter, no link moves that much in an interval): not counted,
  logged, and read on from there;
- a CT that is not running: nothing is counted and the starting point becomes zero, so the bytes of
  its next run are counted from its start.

What counters cannot tell: bytes a CT moved after the last reading and before it stopped. A pass
every ``CLOUDPODS_METER_INTERVAL_SECONDS`` (60 s by default) bounds that to one interval per stop.
"""

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import requests
from psycopg.types.json import Jsonb

from .repository import OperationInProgress, Repository
from .settings import scrub

LOG = logging.getLogger(__name__)
METER_LOCK = 0x636C6F75646D7472  # advisory lock key: one counting pass at a time
WRAP = 2 ** 64
RESTART_SLACK = timedelta(seconds=15)  # uptime has a 1 s resolution and /cluster/resources lags a few seconds
# More than any link moves between two passes (1 PiB; 100 Gbit/s for a day is 1.1 PB): a counter that leaps
# further is broken, not busy. It is not counted (it would also overflow a month's bigint), only re-read.
MAX_STEP = 2 ** 50
WARN_PERCENT = 80
LIVE = ("PROVISIONING", "ACTIVE", "SUSPENDED")
ERROR_LIMIT = 300
FAILED_BACKOFF = timedelta(hours=1)  # after a queued operation failed for good, before asking again


class MeterError(Exception):
    """The Proxmox API did not give the counters (its address and the reason; never the token)."""


@dataclass(frozen=True)
class Reading:
    """One CT as ``/cluster/resources`` showed it."""
    vmid: int
    name: str
    running: bool
    netin: int
    netout: int
    started_at: datetime


@dataclass(frozen=True)
class Counted:
    """What one reading adds to the month, and the counters to store for the next pass."""
    bytes_in: int
    bytes_out: int
    restarted: bool
    netin: int
    netout: int
    started_at: datetime
    anomaly: bool = False  # a leap above MAX_STEP: not counted


def _int(value):
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def readings(resources, read_at):
    """The CTs of a ``/cluster/resources`` answer by vmid (templates left out) and its node entries."""
    guests, nodes = {}, []
    for entry in resources:
        kind = entry.get("type")
        if kind == "lxc" and not _int(entry.get("template")) and entry.get("vmid") is not None:
            running = entry.get("status") == "running"
            uptime = _int(entry.get("uptime")) if running else 0
            guests[int(entry["vmid"])] = Reading(
                vmid=int(entry["vmid"]), name=str(entry.get("name") or ""), running=running,
                netin=_int(entry.get("netin")) if running else 0, netout=_int(entry.get("netout")) if running else 0,
                started_at=read_at - timedelta(seconds=uptime))
        elif kind == "node" and entry.get("node"):
            nodes.append(entry)
    return guests, nodes


def count(previous, reading):
    """The bytes ``reading`` adds since ``previous`` (the stored counters: netin, netout, started_at;
    None for a pod read for the first time), by the rules in the module's docstring."""
    if not reading.running:
        return Counted(0, 0, False, 0, 0, reading.started_at)
    if previous is None:
        return Counted(0, 0, False, reading.netin, reading.netout, reading.started_at)
    last_in, last_out = int(previous["netin"]), int(previous["netout"])
    # A lower counter is a wrap only near the top of 64 bits; lower anywhere else, the counters began again.
    fell = any(now < last and last <= WRAP - MAX_STEP
               for now, last in ((reading.netin, last_in), (reading.netout, last_out)))
    restarted = fell or reading.started_at > previous["started_at"] + RESTART_SLACK
    if restarted:
        return Counted(reading.netin, reading.netout, True, reading.netin, reading.netout, reading.started_at)
    # Same run: a lower counter has wrapped. The stored start stays: a later reading that drifts by a
    # second (uptime's resolution) must not add up to a false restart.
    bytes_in = (reading.netin - last_in) % WRAP
    bytes_out = (reading.netout - last_out) % WRAP
    if bytes_in > MAX_STEP or bytes_out > MAX_STEP:
        return Counted(0, 0, False, reading.netin, reading.netout, previous["started_at"], anomaly=True)
    return Counted(bytes_in, bytes_out, False, reading.netin, reading.netout, previous["started_at"])


def month_of(moment):
    moment = moment.astimezone(timezone.utc)
    return date(moment.year, moment.month, 1)


class ProxmoxResources:
    """``GET /cluster/resources`` with the API token (the same token and CA the playbooks use)."""

    def __init__(self, url, token_id, token_secret, ca_bundle=None, timeout=30.0):
        self.base_url = url.rstrip("/")
        self.url = self.base_url + "/cluster/resources"
        self.use_token(token_id, token_secret)
        self.verify = ca_bundle or True
        self.timeout = timeout
        self.calls = 0
        self.session = requests.Session()

    def use_token(self, token_id, token_secret):
        """The token of the next calls (CLOUDPODS_SECRETS_FILE changed: rotate_token.yml made a new one)."""
        self._headers = {"Authorization": f"PVEAPIToken={token_id}={token_secret}"}
        self._secret = token_secret

    @classmethod
    def from_settings(cls, settings):
        env = settings.playbook_env
        return cls(env["PROXMOX_API_URL"], env["PROXMOX_API_TOKEN_ID"], env["PROXMOX_API_TOKEN_SECRET"],
                   env.get("PROXMOX_CA_BUNDLE"))

    def get(self):
        self.calls += 1
        try:
            response = self.session.get(self.url, headers=self._headers, verify=self.verify, timeout=self.timeout)
        except requests.RequestException as exc:
            raise MeterError(scrub(f"GET {self.url}: {type(exc).__name__}: {exc}", [self._secret])) from None
        if response.status_code != 200:
            raise MeterError(f"GET {self.url}: {response.status_code} {scrub(response.reason or '', [self._secret])}")
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            raise MeterError(f"GET {self.url}: the answer is not PVE's JSON envelope") from None
        if not isinstance(data, list):
            raise MeterError(f"GET {self.url}: 'data' is not a list")
        return data


@dataclass
class PassResult:
    counted: int = 0  # pods whose counters were read
    missing: int = 0  # live pods with a vmid whose CT the cluster did not list
    restarts: int = 0
    anomalies: int = 0  # counters that leapt above MAX_STEP (logged, not counted)
    bytes: int = 0
    crossed: int = 0  # thresholds reached (webhook events written)
    queued: int = 0  # operations queued by the policy
    api_calls: int = 0
    skipped: bool = False  # another meter held the lock


# quota_failed_at: when an operation the meter queues last failed for good on the pod (it is not asked
# again before FAILED_BACKOFF has passed, so a mail server that is down does not make a failed task a minute).
POD_QUERY = """
    SELECT s.id, s.customer_id, s.hostname, s.domain, s.vmid, s.plan_code, s.status, s.suspend_reason,
           s.transfer_rate_mbps, c.netin, c.netout, c.started_at, c.vmid AS counted_vmid,
           (SELECT max(t.finished_at) FROM cloud_pod_provisioning_tasks t
            WHERE t.subscription_id = s.id AND t.status = 'FAILED'
              AND t.task_type IN ('TRANSFER_QUOTA', 'SUSPEND', 'RESUME')) AS quota_failed_at
    FROM cloud_pod_subscriptions s LEFT JOIN cloud_pod_traffic_counters c ON c.subscription_id = s.id
    WHERE s.vmid IS NOT NULL AND s.status = ANY(%s)
"""
STORE_COUNTERS = """
    INSERT INTO cloud_pod_traffic_counters AS c (subscription_id, vmid, netin, netout, started_at, read_at)
    SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::numeric[], %s::numeric[], %s::timestamptz[],
                         %s::timestamptz[])
    ON CONFLICT (subscription_id) DO UPDATE SET vmid = excluded.vmid, netin = excluded.netin,
        netout = excluded.netout, started_at = excluded.started_at, read_at = excluded.read_at
"""
ADD_USAGE = """
    INSERT INTO cloud_pod_transfer_usage AS u (subscription_id, month, bytes_in, bytes_out, restarts, quota_bytes,
                                               updated_at)
    SELECT id, %s::date, bytes_in, bytes_out, restarts, quota, %s::timestamptz
    FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::integer[], %s::bigint[])
         AS n (id, bytes_in, bytes_out, restarts, quota)
    ON CONFLICT (subscription_id, month) DO UPDATE SET bytes_in = u.bytes_in + excluded.bytes_in,
        bytes_out = u.bytes_out + excluded.bytes_out, restarts = u.restarts + excluded.restarts,
        quota_bytes = excluded.quota_bytes, updated_at = excluded.updated_at
    RETURNING subscription_id, bytes_in, bytes_out, quota_bytes, warned_at, exceeded_at, notified_level
"""
STORE_NODES = """
    INSERT INTO cloud_pod_nodes AS n (node, status, maxmem, mem, maxdisk, disk, maxcpu, cpu, sampled_at)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                         %s::integer[], %s::double precision[], %s::timestamptz[])
    ON CONFLICT (node) DO UPDATE SET status = excluded.status, maxmem = excluded.maxmem, mem = excluded.mem,
        maxdisk = excluded.maxdisk, disk = excluded.disk, maxcpu = excluded.maxcpu, cpu = excluded.cpu,
        sampled_at = excluded.sampled_at
"""
RECORD_PASS = """
    INSERT INTO cloud_pod_meter_state AS m (cluster, last_pass_at, last_success_at, pods, api_calls, last_error)
    VALUES (%(cluster)s, %(at)s, %(success)s, %(pods)s, %(calls)s, %(error)s)
    ON CONFLICT (cluster) DO UPDATE SET last_pass_at = excluded.last_pass_at,
        last_success_at = coalesce(excluded.last_success_at, m.last_success_at),
        pods = CASE WHEN excluded.last_error IS NULL THEN excluded.pods ELSE m.pods END,
        api_calls = excluded.api_calls, last_error = excluded.last_error
"""


def _node_row(entry):
    online = entry.get("status") == "online"

    def value(key, convert=int):
        raw = entry.get(key)
        return convert(raw) if raw is not None else None

    return (str(entry["node"]), str(entry.get("status") or "unknown"), value("maxmem"),
            value("mem") if online else None, value("maxdisk"), value("disk") if online else None,
            value("maxcpu"), value("cpu", float) if online else None)


class Meter:
    """Counting passes against one Proxmox cluster (``cluster``: its API URL, the meter state's key)."""

    def __init__(self, pool, api, catalogue, policy="throttle", throttle_mbps=1.0, max_attempts=5, cluster=None):
        self.pool = pool
        self.api = api
        self.catalogue = catalogue
        self.policy = policy
        self.throttle_mbps = float(throttle_mbps)
        self.max_attempts = max_attempts
        self.cluster = cluster or getattr(api, "base_url", "proxmox")

    def run_pass(self, now=None):
        """One pass; ``now`` (default: the real time) decides the month and stamps thresholds, so a
        test moves the calendar. The counters' own time is always the real clock: a restart is told by
        the CT's start time, which must be compared with the time it was read at."""
        read_at = datetime.now(timezone.utc)
        now = now or read_at
        calls_before = self.api.calls
        try:
            resources = self.api.get()
        except MeterError as exc:
            self._record_failure(now, str(exc), self.api.calls - calls_before)
            raise
        guests, nodes = readings(resources, read_at)
        result = PassResult(api_calls=self.api.calls - calls_before)
        with self.pool.connection() as connection, connection.transaction():
            locked = connection.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (METER_LOCK,)).fetchone()
            if not locked["locked"]:
                result.skipped = True
                return result
            pods = {row["id"]: row for row in connection.execute(POD_QUERY, (list(LIVE),))}
            counted = self._count(pods, guests, read_at, result)
            usage = self._add_usage(connection, counted, pods, month_of(now), now)
            result.crossed = self._thresholds(connection, usage, pods, month_of(now), now)
            result.queued = self._reconcile(connection, usage, pods, month_of(now))
            if nodes:
                columns = list(zip(*[_node_row(entry) for entry in nodes]))
                connection.execute(STORE_NODES, [list(column) for column in columns] + [[now] * len(nodes)])
            connection.execute(RECORD_PASS, {"cluster": self.cluster, "at": now, "success": now,
                                             "pods": result.counted, "calls": result.api_calls, "error": None})
        return result

    def _record_failure(self, now, error, calls):
        with self.pool.connection() as connection, connection.transaction():
            connection.execute(RECORD_PASS, {"cluster": self.cluster, "at": now, "success": None, "pods": 0,
                                             "calls": calls, "error": error[:ERROR_LIMIT]})

    def _count(self, pods, guests, read_at, result):
        """pod id -> Counted, for the live pods whose CT the cluster listed under their vmid and host name
        (a vmid given to another CT since is not this pod's)."""
        counted = {}
        for pod_id, pod in pods.items():
            reading = guests.get(pod["vmid"])
            if reading is None or reading.name != pod["hostname"]:
                result.missing += 1
                continue
            same_ct = pod["counted_vmid"] == pod["vmid"]
            previous = pod if same_ct and pod["started_at"] is not None else None
            counted[pod_id] = count(previous, reading)
            if counted[pod_id].anomaly:
                result.anomalies += 1
                LOG.warning("pod %s (CT %s): its counters leapt by more than %d bytes since the last pass; not counted",
                            pod["hostname"], pod["vmid"], MAX_STEP)
            result.counted += 1
            result.restarts += counted[pod_id].restarted
            result.bytes += counted[pod_id].bytes_in + counted[pod_id].bytes_out
        return counted

    def _add_usage(self, connection, counted, pods, month, now):
        if not counted:
            return []
        ids = list(counted)
        rows = [counted[pod_id] for pod_id in ids]
        connection.execute(STORE_COUNTERS, (ids, [pods[pod_id]["vmid"] for pod_id in ids],
                                            [Decimal(row.netin) for row in rows], [Decimal(row.netout) for row in rows],
                                            [row.started_at for row in rows], [datetime.now(timezone.utc)] * len(ids)))
        quotas = [self.catalogue.quota_bytes(pods[pod_id]["plan_code"]) for pod_id in ids]
        return connection.execute(ADD_USAGE, (month, now, ids, [row.bytes_in for row in rows],
                                              [row.bytes_out for row in rows],
                                              [int(row.restarted) for row in rows], quotas)).fetchall()

    def _thresholds(self, connection, usage, pods, month, now):
        """80% and 100% reached: stamp the row and write the webhook event, once per month each. A quota
        that grew (plan change) above the usage clears the stamps, and the mail level with them."""
        crossed = 0
        for row in usage:
            used, quota = row["bytes_in"] + row["bytes_out"], row["quota_bytes"]
            warned, exceeded, notified = row["warned_at"], row["exceeded_at"], row["notified_level"]
            if quota is None or used * 100 < quota * WARN_PERCENT:
                warned, exceeded, notified = None, None, 0
            elif used < quota:
                exceeded, notified = None, min(notified, WARN_PERCENT)
            for level, stamp in ((WARN_PERCENT, warned), (100, exceeded)):
                if quota is not None and stamp is None and used * 100 >= quota * level:
                    if level == WARN_PERCENT:
                        warned = now
                    else:
                        exceeded = now
                    crossed += 1
                    self._event(connection, pods[row["subscription_id"]], month, used, quota, level)
            if (warned, exceeded, notified) != (row["warned_at"], row["exceeded_at"], row["notified_level"]):
                connection.execute("""UPDATE cloud_pod_transfer_usage SET warned_at = %s, exceeded_at = %s,
                                      notified_level = %s WHERE subscription_id = %s AND month = %s""",
                                   (warned, exceeded, notified, row["subscription_id"], month))
                row.update(warned_at=warned, exceeded_at=exceeded, notified_level=notified)
        return crossed

    def _event(self, connection, pod, month, used, quota, level):
        action = ("none" if level < 100 else "throttle" if self.policy == "throttle" else "suspend")
        connection.execute("SELECT cloud_pod_webhook_enqueue(%s, 'pod.transfer_quota', %s)", (pod["id"], Jsonb({
            "pod": {"id": str(pod["id"]), "customer_id": pod["customer_id"], "hostname": pod["hostname"],
                    "domain": pod["domain"], "plan_code": pod["plan_code"]},
            "transfer": {"month": month.strftime("%Y-%m"), "used_bytes": used, "quota_bytes": quota,
                         "level": level, "action": action,
                         "throttle_mbps": self.throttle_mbps if action == "throttle" else None}})))

    def wanted(self, row, pod):
        """The operation the policy wants queued for a counted pod now: (task type, params, suspend
        reason), or None when the pod is as it should be."""
        used, quota = row["bytes_in"] + row["bytes_out"], row["quota_bytes"]
        over = quota is not None and used >= quota
        quota_suspended = pod["status"] == "SUSPENDED" and pod["suspend_reason"] == "transfer-quota"
        if self.policy == "suspend" and over and pod["status"] == "ACTIVE":
            return "SUSPEND", {}, "transfer-quota"
        if quota_suspended and not (self.policy == "suspend" and over):
            return "RESUME", {}, None
        if pod["status"] not in ("ACTIVE", "SUSPENDED"):
            return None
        rate = self.throttle_mbps if self.policy == "throttle" and over else None
        current = float(pod["transfer_rate_mbps"]) if pod["transfer_rate_mbps"] is not None else None
        level = 100 if row["exceeded_at"] else WARN_PERCENT if row["warned_at"] else 0
        notice = {WARN_PERCENT: "warning", 100: "exceeded"}.get(level) if level > row["notified_level"] else None
        if rate == current and notice is None:
            return None
        params = {"notice": notice, "level": level if notice else 0, "used_bytes": used, "quota_bytes": quota,
                  "action": self.policy, "throttle_mbps": self.throttle_mbps}
        if rate != current:
            params["rate_mbps"] = rate if rate is not None else 0
        return "TRANSFER_QUOTA", params, None

    def _reconcile(self, connection, usage, pods, month):
        queued = 0
        for row in usage:
            pod = pods[row["subscription_id"]]
            wanted = self.wanted(row, pod)
            failed_at = pod["quota_failed_at"]
            if wanted is None or (failed_at is not None and failed_at > datetime.now(timezone.utc) - FAILED_BACKOFF):
                continue
            task_type, params, reason = wanted
            if task_type == "TRANSFER_QUOTA":
                params["month"] = month.strftime("%Y-%m")
            try:
                Repository._insert_task(connection, pod["id"], task_type, self.max_attempts,  # pylint: disable=protected-access
                                        params)
            except OperationInProgress:
                continue  # the pod is busy: the next pass asks again
            if reason is not None:
                connection.execute("UPDATE cloud_pod_subscriptions SET suspend_reason = %s, updated_at = now() "
                                   "WHERE id = %s", (reason, pod["id"]))
            queued += 1
        return queued


def run(meter, interval, stop, once=False, before_pass=None):
    """Passes every ``interval`` seconds until ``stop`` (a threading.Event) is set; one with ``once``.
    A pass that fails is logged (scrubbed) and the next one tries again. ``before_pass()`` runs before
    each (the secrets file read again). Exit status for ``once``."""
    while True:
        started = time.monotonic()
        if before_pass is not None:
            before_pass()
        try:
            result = meter.run_pass()
        except (MeterError, psycopg.Error) as exc:
            # MeterError is scrubbed already; a database error names no secret (the pool's errors
            # are logged through the secret filter anyway).
            LOG.error("metering pass failed: %s", " ".join(str(exc).split())[:ERROR_LIMIT])
            if once:
                return 1
        else:
            LOG.info("metering pass: %d pods counted, %d missing, %d restarts, %d bytes, %d thresholds, "
                     "%d operations queued, %d API calls%s", result.counted, result.missing, result.restarts,
                     result.bytes, result.crossed, result.queued, result.api_calls,
                     " (skipped: another meter holds the lock)" if result.skipped else "")
            if once:
                return 0
        if stop.wait(max(0.0, interval - (time.monotonic() - started))):
            return 0
