"""Benchmark: one metering pass (``cloudpods meter``, runner_api/metering.py) over N pods of the lab simulator,
against the way a meter without /cluster/resources would read the same counters: one status/current per pod.

Run with .venv/bin first on PATH (a private lab of its own, like bench_fleet_repair.py):
    python tests/bench/bench_metering.py [--pods 5000] [--rounds 3] [--parallel 8]

Set-up (not measured): N running CTs cloned from the template (task durations 0), a pod row for each in a
database of its own (the Student plan, metered), one pass to take the starting point, then between rounds a
tenth of the CTs move bytes (the control API).

Measured per round (medians printed):
- "pass": Meter.run_pass(): the GET /cluster/resources, the counting, the writes in one transaction; its wall
  time, the CPU time of this process during it (the meter's own CPU; PostgreSQL's and the simulator's are not
  in it) and the Proxmox API calls it made (from the simulator's request log);
- "per-pod reads": GET .../status/current for every pod with --parallel threads (the reads alone, no writes).
Targets (issue 16): one API call per pass, under 1 s of CPU for 5,000 pods.

Measured 2026-12-01 on this 2-core machine (shared with other work at the time), 5,000 pods, 3 rounds:

  round   pass wall   pass CPU   API calls   per-pod reads (5,000 calls, 8 threads)
  1        0.91 s      0.43 s        1              8.35 s
  2        1.16 s      0.45 s        1             10.40 s
  3        1.16 s      0.49 s        1              9.16 s

Median: a pass takes 1.16 s and 0.45 s of the meter's CPU with one call; reading the same counters pod by pod
takes 9.16 s and 5,000 calls before anything is written. Set-up (5,000 clones and starts): 458 s.
"""
import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests" / "lab", ROOT / "tests" / "integration", ROOT / "tests" / "support"):
    sys.path.insert(0, str(_path))

from cloudpods_testing import scratch_database  # noqa: E402  pylint: disable=wrong-import-position
from labcontrol import LabControl  # noqa: E402  pylint: disable=wrong-import-position
from playbooks import PrivateLab  # noqa: E402  pylint: disable=wrong-import-position
from runner_api import metering  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.plans import PlanCatalogue  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.repository import open_pool  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.settings import Settings  # noqa: E402  pylint: disable=wrong-import-position

PLANS_FILE = ROOT / "playbooks" / "vars" / "plans.yml"
TEMPLATE = 9000


class Pve:
    """requests sessions on the simulator, one per thread."""

    def __init__(self, env):
        self.url = env["PROXMOX_API_URL"].rstrip("/")
        self.node = env["PROXMOX_NODE_NAME"]
        self.verify = env["PROXMOX_CA_BUNDLE"]
        self.headers = {"Authorization": "PVEAPIToken=%s=%s" % (env["PROXMOX_API_TOKEN_ID"],
                                                                env["PROXMOX_API_TOKEN_SECRET"])}
        self.local = threading.local()

    def session(self):
        if getattr(self.local, "session", None) is None:
            self.local.session = requests.Session()
        return self.local.session

    def call(self, method, path, **params):
        response = self.session().request(method, self.url + path, headers=self.headers, verify=self.verify,
                                          data=params if method != "GET" else None, timeout=60)
        response.raise_for_status()
        return response.json()["data"]

    def wait(self, upid):
        for _attempt in range(600):
            status = self.call("GET", "/nodes/%s/tasks/%s/status" % (self.node, requests.utils.quote(upid, safe="")))
            if status["status"] == "stopped":
                if status.get("exitstatus") != "OK":
                    raise RuntimeError("task %s: %s" % (upid, status.get("exitstatus")))
                return
            time.sleep(0.02)
        raise RuntimeError("task %s did not end" % upid)

    def running_ct(self, vmid):
        hostname = "bench-%d" % vmid
        for _attempt in range(1000):  # the template is locked while another clone copies it, as on PVE
            try:
                upid = self.call("POST", "/nodes/%s/lxc/%d/clone" % (self.node, TEMPLATE), newid=vmid,
                                 hostname=hostname, full=1)
                break
            except requests.HTTPError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.005)
        self.wait(upid)
        self.wait(self.call("POST", "/nodes/%s/lxc/%d/status/start" % (self.node, vmid)))
        return vmid, hostname


def per_pod_reads(pve, vmids, parallel):
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda vmid: pve.call("GET", "/nodes/%s/lxc/%d/status/current" % (pve.node, vmid)), vmids))
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    with PrivateLab() as env:
        control = LabControl.from_env(env)
        control.config(default_task_duration=0, task_durations={}, dhcp_delay=0)
        pve = Pve(env)
        made = time.perf_counter()
        with ThreadPoolExecutor(args.parallel) as pool:
            cts = list(pool.map(pve.running_ct, range(1000, 1000 + args.pods)))
        print("set-up: %d running CTs in %.1f s" % (len(cts), time.perf_counter() - made), flush=True)
        with scratch_database(env["DATABASE_URL"], prefix="bench_metering") as url:
            settings = Settings.from_env({"DATABASE_URL": url, "CLOUDPODS_PLANS_FILE": str(PLANS_FILE)})
            pool = open_pool(settings, name="bench-metering", min_size=1, max_size=2)
            with pool.connection() as connection:
                connection.execute("""
                    INSERT INTO cloud_pod_subscriptions (customer_id, customer_email, plan_code, hostname, status,
                                                         vmid, node)
                    SELECT 'bench', 'bench@example.org', 'CLOUD_POD_STUDENT', h, 'ACTIVE', v, 'pve'
                    FROM unnest(%s::text[], %s::integer[]) AS t (h, v)""",
                                   ([hostname for _vmid, hostname in cts], [vmid for vmid, _hostname in cts]))
            meter = metering.Meter(pool, metering.ProxmoxResources(
                env["PROXMOX_API_URL"], env["PROXMOX_API_TOKEN_ID"], env["PROXMOX_API_TOKEN_SECRET"],
                env["PROXMOX_CA_BUNDLE"]), PlanCatalogue(PLANS_FILE))
            first = meter.run_pass()
            print("starting point: %d pods counted, %d missing" % (first.counted, first.missing), flush=True)
            rows = []
            for round_number in range(1, args.rounds + 1):
                moved = cts[round_number::10]
                for vmid, _hostname in moved:
                    control._call("POST", "/containers/%d/traffic" % vmid,  # pylint: disable=protected-access
                                  {"netin": 1000 * round_number, "netout": 3000 * round_number})
                control.clear_requests()
                wall, cpu = time.perf_counter(), time.process_time()
                result = meter.run_pass()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                calls = len(control.requests())
                assert result.counted == args.pods and result.bytes == 4000 * round_number * len(moved), result
                reads = per_pod_reads(pve, [vmid for vmid, _hostname in cts], args.parallel)
                rows.append((wall, cpu, calls, reads))
                print("round %d: pass %.2f s wall, %.2f s CPU, %d API call(s), %d pods, %d bytes counted; "
                      "per-pod reads %.2f s (%d calls, %d threads)"
                      % (round_number, wall, cpu, calls, result.counted, result.bytes, reads, args.pods,
                         args.parallel), flush=True)
            pool.close()
    wall, cpu, calls, reads = (statistics.median(column) for column in zip(*rows))
    print("\n%d pods, median of %d rounds:" % (args.pods, args.rounds))
    print("  pass:           %6.2f s wall  %5.2f s CPU  %d API call(s)   target: 1 call, under 1 s CPU"
          % (wall, cpu, calls))
    print("  per-pod reads:  %6.2f s wall                %d API calls (the reads alone)" % (reads, args.pods))


if __name__ == "__main__":
    main()
