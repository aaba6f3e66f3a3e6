"""Benchmark: order to ACTIVE with real containers, and where the time goes.

Needs the lab's LXC part (``tests/lab/lab up --lxc``, root on Linux). Run with .venv/bin first on PATH:
    python tests/bench/bench_real_pods.py [--pods 3] [--orders 3]

Two measurements, each for linked clones (overlay on the template, copy-on-write) next to full
clones (a real copy of the template's root filesystem), in the same run and on equal terms:

* the two modes alternate, the order swapped every round (linked, full; full, linked; ...), so
  neither always goes first or always finds what the other left behind;
* the page cache is warm for both: before every sample the template's root filesystem is read
  once (untimed), so a full clone copies from memory just as a linked clone's first boot reads
  the template through its overlay from memory. (Cold on both would need dropping the whole
  machine's page cache, which would disturb everything else running here.)
* every pod is deprovisioned right after its sample, so each sample starts with the same
  containers running (none of the benchmark's);
* at least three samples per mode and measurement (``--pods``, ``--orders``) back each median.

1. The split: ``mpanel.cloudpods.provision`` run by hand (ansible-playbook) for ``--pods`` Starter
   pods with a domain, one after another. From the module's own ``timings`` and the per-task
   durations of the ansible.posix.json callback: clone (the clone task), start, DHCP (from the end
   of the start until the address shows inside the CT), rest of the container step (config,
   resize, finding the pod), firewall (pod_firewall: the plan's rules through the API), first boot
   (pod_first_boot inside the pod, through pct over SSH), access (its tasks for sshd and the
   customer's keys; the account and host keys come with first-boot.sh, counted in first boot), DNS,
   HTTPS (pod_https: the certificate from the lab's Pebble, issued inside the pod), backup, mail,
   and "outside tasks" (ansible-playbook start, plays, inventory, gaps). "issue 12 steps" sums
   firewall, access and HTTPS, the customer's way in (target: at most 3 s of order to ACTIVE).
2. Order to ACTIVE: ``POST /api/cloud-pods/order`` to runner_api (gunicorn + one worker on a scratch
   database) until the pod is ACTIVE, ``--orders`` times per clone mode: the split plus the queue
   and the worker. The worker is restarted (with the clone mode in its site variables) before
   every order, for both modes, and the order is posted once it logs that it is ready.

Medians are printed with the number of samples and their range; the step that dominates is named.
A failed provision, order or deprovision fails the run (exit status 1, or SystemExit).

Measured 2026-11-26 on this 2-core machine with the earlier version of this benchmark, NOT on
equal terms: all linked clones first, then all full clones (which found the template in a page
cache the linked clones had warmed), pods kept running until the end, and "order to ACTIVE" one
sample per mode (3 pods per mode for the rest, medians in seconds). To be measured again:

    step               linked clone   full clone
    clone                      0.01         3.02   (a 700 MB root filesystem copied; 9.9 s cold)
    start                      0.11         0.11
    DHCP                       3.39         3.40   (systemd boots, networkd leases from dnsmasq)
    container (rest)           0.77         0.75
    first boot                 7.56         8.63
    DNS                        0.65         0.82
    backup                     0.17         0.18
    mail                       0.13         0.18
    outside tasks              1.54         1.64
    playbook wall             14.36        19.05
    order to ACTIVE           16.15        18.77   (API + queue + worker + the playbook)

First boot dominates (about half). Why: it runs inside the pod through
community.proxmox.proxmox_pct_remote, which opens a new SSH connection to the Proxmox host for
every task and makes about six ``pct exec`` calls per module run (home dir, temp dir, put the
module, chmod, run, clean up), each a new SSH session; one module run there costs about 1.5 s
against 0.3 s on the controller. The role is therefore three tasks (server block, first-boot.sh,
starter page: five module runs on a first boot, three on a re-run). Its first version had a task
per step: 13 module runs, about 20 s of first boot, 27.3 s per provision and 24.8 s for a re-run
that changes nothing (9.9 s now). Next is DHCP: the container's systemd boots and networkd asks
for a lease; a full clone adds the copy of the template, which only copy-on-write storage avoids.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests" / "lab", ROOT / "tests" / "integration", ROOT / "tests" / "bench"):
    sys.path.insert(0, str(_path))

from bench_provision import role_of, seconds  # noqa: E402  pylint: disable=wrong-import-position
from podplays import HostDirs, run_pod_playbook  # noqa: E402  pylint: disable=wrong-import-position
from realpods import ENV_LXC, Service, drop_zone  # noqa: E402  pylint: disable=wrong-import-position
from labenv import read_env as read_lab_env  # noqa: E402  pylint: disable=wrong-import-position

PLAN = "CLOUD_POD_STARTER"
STEPS = ["clone", "start", "DHCP", "container (rest)", "firewall", "first boot", "access", "DNS", "HTTPS", "backup", "mail",
         "outside tasks"]
ROLE_STEP = {"pod_firewall": "firewall", "pod_first_boot": "first boot", "pod_dns": "DNS", "pod_https": "HTTPS",
             "pod_backup": "backup", "pod_mail": "mail"}
# The customer's way in (issue 12): pod_first_boot's own tasks for sshd and the keys. The account and
# the host keys are made by first-boot.sh together with the rest of the first boot: counted there.
ACCESS_TASK_WORDS = ("sshd", "SSH public keys", "SSH host key")
# The steps issue 12 added, summed for its target (at most 3 s of order -> ACTIVE).
NEW_STEPS = ("firewall", "access", "HTTPS")


def provision_split(env, base, linked):
    pod = "bench-%s" % uuid.uuid4().hex[:8]
    dirs = HostDirs(Path(base) / pod)
    run = run_pod_playbook("provision", env, dirs, pod=pod, plan=PLAN, domain=pod + ".test",
                           customer_email=pod + "@customer.test", cloudpods_linked_clones=linked)
    if run.rc != 0:
        deprovision(env, dirs, pod, pod + ".test")
        raise SystemExit("provision failed:\n%s\n%s" % (run.stdout[-4000:], run.stderr[-2000:]))
    split = dict.fromkeys(STEPS, 0.0)
    in_tasks = 0.0
    for task in run.tasks:
        took = seconds(task["duration"])
        in_tasks += took
        role = role_of(task["name"])
        role = None if role == "playbook tasks" else role
        timings = (task["result"] or {}).get("timings")
        if role == "pod_container" and timings:
            split["clone"] += timings.get("clone", 0.0)
            split["start"] += timings.get("start", 0.0)
            split["DHCP"] += timings.get("address", 0.0)
            split["container (rest)"] += took - timings.get("clone", 0.0) - timings.get("start", 0.0) \
                - timings.get("address", 0.0)
        elif role == "pod_container" or role is None:
            split["container (rest)" if role else "outside tasks"] += took
        elif role == "pod_first_boot" and any(word in task["name"] for word in ACCESS_TASK_WORDS) \
                and "first-boot.sh" not in task["name"]:
            split["access"] += took
        else:
            split[ROLE_STEP.get(role, "outside tasks")] += took
    split["outside tasks"] += run.duration - in_tasks
    return pod, dirs, run.duration, split


ORDER_TIMEOUT = 600
READY_TIMEOUT = 60


def order_to_active(service, domain):
    started = time.monotonic()
    status, body = service.call("POST", "/order", {"plan_code": PLAN, "domain": domain,
                                                   "customer_email": "bench@customer.test"})
    if status not in (201, 202):
        raise SystemExit("order refused: %s %s" % (status, body))
    pod = body
    while time.monotonic() - started < ORDER_TIMEOUT:
        _status, pod = service.call("GET", "/" + body["id"])
        if pod["status"] in ("ACTIVE", "FAILED"):
            break
        time.sleep(0.2)
    return time.monotonic() - started, pod


def template_rootfs(env):
    return Path(env["LAB_LXC_PATH"]) / env.get("PROXMOX_CLOUDPOD_TEMPLATE_ID", "9000") / "rootfs"


def warm_template(rootfs):
    """Read every regular file of the template's root filesystem once: the page cache holds it."""
    total = 0
    for top, _dirs, files in os.walk(rootfs):
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    while True:
                        chunk = handle.read(1 << 20)
                        if not chunk:
                            break
                        total += len(chunk)
            except OSError:
                pass
    return total


def wait_worker_ready(service, ready_before):
    """Until the worker log has one more "worker e2e ready" than ``ready_before`` (the restarted worker)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if ready_lines(service) > ready_before:
            return
        time.sleep(0.1)
    raise SystemExit("the restarted worker did not log ready within %d s\n%s" % (READY_TIMEOUT, service.logs()))


def ready_lines(service):
    path = Path(service.tmp_path) / "worker.log"
    return path.read_text(errors="replace").count("worker e2e ready") if path.exists() else 0


def deprovision(env, dirs, pod, zone):
    """Remove the pod (and its zone, should the playbook have left it); False when that failed."""
    run = run_pod_playbook("deprovision", env, dirs, pod=pod)
    try:
        drop_zone(env, zone)
    except requests.RequestException:
        pass
    if run.rc != 0:
        print("deprovision of %s failed (rc %s):\n%s" % (pod, run.rc, run.stdout[-2000:]), file=sys.stderr)
        return False
    return True


def modes_of_round(index):
    """Round 0: linked, full; round 1: full, linked; ... (True = linked clone)."""
    return (True, False) if index % 2 == 0 else (False, True)


def label_of(linked):
    return "linked clone" if linked else "full clone"


def spread(values):
    return "n=%d, %.2f-%.2f" % (len(values), min(values), max(values))


def measure_splits(env, base, rounds, rootfs, failures):
    """``rounds`` provisions per clone mode, alternating; {label: (walls, splits)}."""
    results = {label_of(True): ([], []), label_of(False): ([], [])}
    for index in range(rounds):
        for linked in modes_of_round(index):
            warm_template(rootfs)
            pod, dirs, wall, split = provision_split(env, base, linked)
            walls, splits = results[label_of(linked)]
            walls.append(wall)
            splits.append(split)
            print("  %s %s: %.2f s  %s" % (label_of(linked), pod, wall, json.dumps({k: round(v, 2) for k, v in split.items()})),
                  flush=True)
            if not deprovision(env, dirs, pod, pod + ".test"):
                failures.append("deprovision of " + pod)
    return results


def measure_orders(env, base, rounds, rootfs, failures):
    """``rounds`` orders per clone mode through runner_api, alternating; {label: [seconds]}."""
    orders = {label_of(True): [], label_of(False): []}
    service = Service(env, Path(base) / "service")
    try:
        base_vars = json.loads(Path(service.env["CLOUDPODS_EXTRA_VARS_FILE"]).read_text())
        for index in range(rounds):
            for linked in modes_of_round(index):
                site = Path(base) / ("site-%s.json" % ("linked" if linked else "full"))
                site.write_text(json.dumps(dict(base_vars, cloudpods_linked_clones=linked)))
                service.env["CLOUDPODS_EXTRA_VARS_FILE"] = str(site)
                ready_before = ready_lines(service)
                service.restart_worker()
                wait_worker_ready(service, ready_before)
                warm_template(rootfs)
                domain = "order-%s.test" % uuid.uuid4().hex[:8]
                wall, pod = order_to_active(service, domain)
                if pod.get("hostname") and pod["status"] != "PROVISIONING":
                    if not deprovision(env, service.dirs, pod["hostname"], domain):
                        failures.append("deprovision of " + pod["hostname"])
                if pod["status"] != "ACTIVE":
                    raise SystemExit("order %s ended %s after %.0f s: %s\n%s" % (
                        domain, pod["status"], wall, pod.get("last_error"), service.logs()))
                orders[label_of(linked)].append(wall)
                print("  order %s %s: %.2f s to ACTIVE" % (label_of(linked), pod["hostname"], wall), flush=True)
    finally:
        service.close()
    return orders


def report(results, orders):
    labels = list(results)
    print("\nprovision of one Starter pod with a domain, real LXC containers; medians in s of %s provisions and %s orders "
          "per clone mode, modes alternating, page cache warm for both"
          % ("/".join(str(len(results[label][0])) for label in labels),
             "/".join(str(len(orders[label])) for label in labels)))
    print("%-18s" % "step" + "".join("%16s" % label for label in labels))
    for step in STEPS:
        print("%-18s" % step + "".join("%16.2f" % statistics.median(s[step] for s in results[label][1])
                                       for label in labels))
    added = {label: statistics.median(sum(s[step] for step in NEW_STEPS) for s in results[label][1]) for label in labels}
    print("%-18s" % "issue 12 steps" + "".join("%16.2f" % added[label] for label in labels)
          + "   (firewall + access + HTTPS; target: at most 3 s)")
    print("%-18s" % "playbook wall" + "".join("%16.2f" % statistics.median(results[label][0]) for label in labels))
    print("%-18s" % "order to ACTIVE" + "".join("%16.2f" % statistics.median(orders[label]) for label in labels))
    for label in labels:
        walls, splits = results[label]
        medians = {step: statistics.median(s[step] for s in splits) for step in STEPS}
        top = max(medians, key=medians.get)
        wall = statistics.median(walls)
        print("%s: %s dominates (%.2f s of %.2f s, %.0f%%); playbook wall %s s, order to ACTIVE %s s"
              % (label, top, medians[top], wall, 100 * medians[top] / wall, spread(walls), spread(orders[label])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--pods", type=int, default=3, help="provisions per clone mode (at least 3)")
    parser.add_argument("--orders", type=int, default=3, help="orders to ACTIVE per clone mode (at least 3)")
    args = parser.parse_args()
    if args.pods < 3 or args.orders < 3:
        parser.error("a median needs at least three samples: --pods and --orders must be 3 or more")
    if not os.path.exists(ENV_LXC):
        raise SystemExit("bench_real_pods: the lab's LXC part is not up (tests/lab/lab up --lxc)")
    env = read_lab_env(ENV_LXC)
    rootfs = template_rootfs(env)
    if not rootfs.is_dir():
        raise SystemExit("bench_real_pods: no template root filesystem at %s" % rootfs)
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench-real-pods-") as base:
        started = time.monotonic()
        size = warm_template(rootfs)
        print("template root filesystem %s: %.0f MB read in %.1f s (page cache warm-up)"
              % (rootfs, size / 1e6, time.monotonic() - started), flush=True)
        results = measure_splits(env, base, args.pods, rootfs, failures)
        orders = measure_orders(env, base, args.orders, rootfs, failures)
    report(results, orders)
    if failures:
        print("FAILED: %s" % ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
