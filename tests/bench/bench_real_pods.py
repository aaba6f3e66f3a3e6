"""Benchmark: order to ACTIVE with real containers, and where the time goes.

Needs the lab's LXC part (``tests/lab/lab up --lxc``, root on Linux). Run with .venv/bin first on PATH:
    python tests/bench/bench_real_pods.py [--pods 3]

Two measurements, each for linked clones (overlay on the template, copy-on-write) next to full
clones (a real copy of the template's root filesystem), in the same run:

1. The split: ``mpanel.cloudpods.provision`` run by hand (ansible-playbook) for ``--pods`` Starter
   pods with a domain, one after another. From the module's own ``timings`` and the per-task
   durations of the ansible.posix.json callback: clone (the clone task), start, DHCP (from the end
   of the start until the address shows inside the CT), rest of the container step (config,
   resize, finding the pod), first boot (pod_first_boot inside the pod, through pct over SSH), DNS,
   backup, mail, and "outside tasks" (ansible-playbook start, plays, inventory, gaps).
2. Order to ACTIVE: ``POST /api/cloud-pods/order`` to runner_api (gunicorn + one worker on a scratch
   database) until the pod is ACTIVE, once per clone mode: the split plus the queue and the worker.

Every pod is deprovisioned afterwards. Medians are printed; the step that dominates is named.

Measured 2026-11-26 on this 2-core machine (3 pods per mode, medians in seconds):

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

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests" / "lab", ROOT / "tests" / "integration", ROOT / "tests" / "bench"):
    sys.path.insert(0, str(_path))

from bench_provision import role_of, seconds  # noqa: E402  pylint: disable=wrong-import-position
from podplays import HostDirs, run_pod_playbook  # noqa: E402  pylint: disable=wrong-import-position
from realpods import ENV_LXC, Service, drop_zone  # noqa: E402  pylint: disable=wrong-import-position
from labenv import read_env as read_lab_env  # noqa: E402  pylint: disable=wrong-import-position

PLAN = "CLOUD_POD_STARTER"
STEPS = ["clone", "start", "DHCP", "container (rest)", "first boot", "DNS", "backup", "mail", "outside tasks"]
ROLE_STEP = {"pod_first_boot": "first boot", "pod_dns": "DNS", "pod_backup": "backup", "pod_mail": "mail"}


def provision_split(env, base, linked):
    pod = "bench-%s" % uuid.uuid4().hex[:8]
    dirs = HostDirs(Path(base) / pod)
    run = run_pod_playbook("provision", env, dirs, pod=pod, plan=PLAN, domain=pod + ".test",
                           customer_email=pod + "@customer.test", cloudpods_linked_clones=linked)
    if run.rc != 0:
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
        else:
            split[ROLE_STEP.get(role, "outside tasks")] += took
    split["outside tasks"] += run.duration - in_tasks
    return pod, dirs, run.duration, split


def order_to_active(service, linked):
    domain = "order-%s.test" % uuid.uuid4().hex[:8]
    started = time.monotonic()
    status, body = service.call("POST", "/order", {"plan_code": PLAN, "domain": domain,
                                                   "customer_email": "bench@customer.test"})
    assert status in (201, 202), body
    while time.monotonic() - started < 600:
        _status, pod = service.call("GET", "/" + body["id"])
        if pod["status"] in ("ACTIVE", "FAILED"):
            break
        time.sleep(0.2)
    if pod["status"] != "ACTIVE":
        raise SystemExit("order ended %s: %s\n%s" % (pod["status"], pod.get("last_error"), service.logs()))
    return time.monotonic() - started, pod["hostname"], linked


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--pods", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(ENV_LXC):
        raise SystemExit("bench_real_pods: the lab's LXC part is not up (tests/lab/lab up --lxc)")
    env = read_lab_env(ENV_LXC)
    results = {}
    made = []
    with tempfile.TemporaryDirectory(prefix="bench-real-pods-") as base:
        try:
            for linked in (True, False):
                label = "linked clone" if linked else "full clone"
                walls, splits = [], []
                for _index in range(args.pods):
                    pod, dirs, wall, split = provision_split(env, base, linked)
                    made.append((pod, dirs))
                    walls.append(wall)
                    splits.append(split)
                    print("  %s %s: %.2f s  %s" % (label, pod, wall, json.dumps({k: round(v, 2) for k, v in split.items()})),
                          flush=True)
                results[label] = (walls, splits)
            service = Service(env, Path(base) / "service")
            try:
                orders = {}
                for linked in (True, False):
                    site = Path(base) / ("site-%s.json" % linked)
                    variables = json.loads(Path(service.env["CLOUDPODS_EXTRA_VARS_FILE"]).read_text())
                    variables["cloudpods_linked_clones"] = linked
                    site.write_text(json.dumps(variables))
                    service.env["CLOUDPODS_EXTRA_VARS_FILE"] = str(site)
                    service.restart_worker()
                    wall, hostname, _linked = order_to_active(service, linked)
                    orders["linked clone" if linked else "full clone"] = wall
                    made.append((hostname, service.dirs))
            finally:
                service.close()
        finally:
            for pod, dirs in made:
                run = run_pod_playbook("deprovision", env, dirs, pod=pod)
                if run.rc != 0:
                    print("deprovision of %s failed (rc %s)" % (pod, run.rc), file=sys.stderr)
            for pod, _dirs in made:
                drop_zone(env, pod + ".test")

    print("\nprovision of one Starter pod with a domain, real LXC containers, %d pods per clone mode (medians, s)"
          % args.pods)
    header = "%-18s" % "step" + "".join("%16s" % label for label in results)
    print(header)
    for step in STEPS:
        print("%-18s" % step + "".join("%16.2f" % statistics.median(s[step] for s in splits)
                                       for walls, splits in results.values()))
    print("%-18s" % "playbook wall" + "".join("%16.2f" % statistics.median(walls) for walls, _s in results.values()))
    print("%-18s" % "order to ACTIVE" + "".join("%16.2f" % orders[label] for label in results))
    for label, (walls, splits) in results.items():
        medians = {step: statistics.median(s[step] for s in splits) for step in STEPS}
        top = max(medians, key=medians.get)
        wall = statistics.median(walls)
        print("%s: %s dominates (%.2f s of %.2f s, %.0f%%)" % (label, top, medians[top], wall, 100 * medians[top] / wall))


if __name__ == "__main__":
    main()
