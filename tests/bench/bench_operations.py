"""Benchmark: wall time of each lifecycle playbook on one provisioned pod against its floor, a plain
Python function making the same Proxmox API calls (and the same PowerDNS calls and host-side
commands: the lab's vzdump and pct stand-ins, tar, the pod's files in its backup directory and cron
file) directly, against the lab simulator with zero task durations (and no DHCP delay).

Run with .venv/bin first on PATH (a private lab of its own, like bench_provision.py):
    python tests/bench/bench_operations.py [--rounds 3] [--only suspend,resume,...]

Every round provisions two fresh Starter pods with a domain (mpanel.cloudpods.provision, not
measured): one for the playbooks, one for the floor. On them, in this order, each operation runs as
its playbook (ansible-playbook mpanel.cloudpods.<playbook> -e pod=...) and then as its floor:
    suspend, resume, change_plan (Starter -> Premium: cores, memory, swap, disk grown, pod record,
    firewall read, cron entry), change_plan_back (-e plan back to Starter: refused before anything
    changes, the disk would shrink; PVE cannot shrink a disk, so every "back" is this refusal),
    backup_now, backups (the list), restore (-e archive= the backup_now archive), reinstall, repair,
    deprovision (terminate; the next round's pods are fresh ones).
With --only, an operation that needs another one's result (resume a suspended pod, change_plan_back
a Premium pod, restore an archive) gets it from the floor, unmeasured. Medians over the rounds; the
target is each playbook within 3 s of its floor. For each operation that misses it, where the time
goes: the per-role split of the ansible.posix.json callback's task durations (as bench_provision.py),
"outside tasks" (interpreter and plugin loading, parsing, plays, forks, the gaps between tasks), the
number of tasks and module runs (tasks that ran a module on a host, not controller-side ones) and the
slowest tasks.

"pb CPU" / "floor CPU": CPU seconds (user + system) of the ansible-playbook process tree (workers,
modules, the stand-ins it runs) and of the floor (with its stand-ins); the simulator, PowerDNS and
the other lab services count on neither side. Close to the wall time on a quiet machine (the
playbooks are CPU-bound); under load it grows too (Ansible polls its workers every millisecond).

Measured 2026-11-30 on this 2-core machine, shared with four other sessions, 3 rounds, after the
restore fix below (1-minute load average 1.3-2.3 during the run):

  operation          playbook     floor      diff  <= 3 s    pb CPU   module runs  tasks
  suspend              5.38 s    0.02 s    5.36 s  NO        5.39 s        2         12
  resume               5.34 s    0.02 s    5.32 s  NO        5.16 s        2         13
  change_plan          8.54 s    0.03 s    8.50 s  NO        8.56 s        3         27
  change_plan_back     3.68 s    0.01 s    3.68 s  NO        3.69 s        1          9
  backup_now           9.95 s    0.32 s    9.63 s  NO        9.81 s        7         20
  backups              5.32 s    0.01 s    5.31 s  NO        5.15 s        3         11
  restore             22.91 s    0.60 s   22.32 s  NO       22.55 s       16         60
  reinstall           19.81 s    0.47 s   19.34 s  NO       19.37 s       12         55
  repair              10.68 s    0.03 s   10.65 s  NO       10.52 s        4         43
  deprovision          9.82 s    0.32 s    9.50 s  NO        9.72 s        6         22
  this machine then: one module run (ping) 0.58 s, an ansible-playbook run doing nothing 1.58 s

No operation meets the target, and provision no longer does either on this machine today:
bench_provision.py --rounds 3 right after (load 2.3-3.2) gave provision 13.02 s against a floor of
0.11 s (difference 12.91 s; one module run 0.94 s, an empty ansible-playbook run 1.94 s), where its
docstring has 2.67 s from 2026-11-26 (one module run then about 0.3 s). An earlier run of this
benchmark at load 3.6-5.8, before the restore fix, gave 2-3 times these walls (suspend 8.51 s, resume
9.19, change_plan 12.73, change_plan_back 6.77, backup_now 18.01, backups 13.37, restore 47.44,
reinstall 42.27, repair 17.07, deprovision 23.38; floors the same as here); the CPU column moved
much less (suspend 5.55 s, restore 27.28 s).

Where the time goes: not in Proxmox (every floor is at most 0.62 s; the vzdump and pct stand-ins
take most of that) but in Ansible itself. Each run of one of the collection's API modules
(pod_container_info, pod_container, pod_firewall, powerdns_zone) costs 1.0-1.5 s here, a find 0.6-1.1 s,
a copy with content two module runs (stat, then copy: 1.3-1.9 s for the notes file of a manual
backup; restore and reinstall write their journals the same way); ansible-playbook's own start and
its plays ("outside tasks") 1.9-3.8 s, more with more plays (restore has 13, reinstall 11, repair 8);
the controller-side tasks (assert, set_fact) about 0.05-0.1 s each. Even the cheapest operation, the
refused downgrade (one module run), is 3.7 s. The floor reads the pod once where the playbooks read it
twice (find_pod's pod_container_info, then the role's pod_container), and lists the backup directory
once where backup_now lists it three times (before vzdump, after, and for the report).

Fixed here: restore read the pod twice before anything else (find_pod, then pod_container_info again
with details only for the storage of the root disk); find_pod's find_pod_details now gives that
storage from the one read: 17 -> 16 module runs, one pod_container_info run (about 1.2 s here) less.
Not changed, because each is a restructuring rather than a needless module run: backup_now's three
listings and its notes file copy (the role pod_backup's backup_now entry point, shared by restore and
reinstall), the journals written with copy, deprovision's directory task before the final vzdump
(deprovision.yml belongs to another change).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

# bench_provision puts tests/lab and tests/integration on sys.path for the three after it.
from bench_provision import PLAN, ROOT, Floor, module_run_cost, role_of, seconds
from labcontrol import LabControl
from playbooks import PrivateLab
from podplays import PCT, VZDUMP, HostDirs, failed_count, run_pod_playbook

UP_PLAN = "CLOUD_POD_PREMIUM"
OPERATIONS = ("suspend", "resume", "change_plan", "change_plan_back", "backup_now", "backups", "restore",
              "reinstall", "repair", "deprovision")
PLAYBOOK = {"change_plan_back": "change_plan"}
TARGET = 3.0
WAIT = 120  # seconds any one wait of the floor may take (a bound, never reached with zero task durations)
ARCHIVE_PREFIX = "vzdump-lxc-"
MANUAL_MARK = "cloudpods: manual"
# Actions that run on the controller only; any other task that ran (not skipped) is a module run on a host.
CONTROLLER_ACTIONS = {"ansible.builtin.assert", "ansible.builtin.set_fact", "ansible.builtin.debug",
                      "ansible.builtin.set_stats", "ansible.builtin.meta", "ansible.builtin.include_role",
                      "ansible.builtin.import_tasks", "ansible.builtin.include_tasks", "ansible.builtin.add_host",
                      "ansible.builtin.validate_argument_spec", "assert", "set_fact", "debug", "set_stats", "meta",
                      "include_role", "add_host", "validate_argument_spec", "mpanel.cloudpods.pod_backup_schedule"}


class OpsFloor(Floor):
    """bench_provision's Floor (its Proxmox and PowerDNS sessions, call()) plus what the lifecycle needs."""

    def __init__(self, env, plans):
        super().__init__(env)
        self.plans = plans
        self.host_env = dict(os.environ, **env)

    def task(self, upid):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            status = self.call("GET", "/nodes/%s/tasks/%s/status" % (self.node, upid))
            if status["status"] == "stopped":
                assert status["exitstatus"] == "OK", status
                return
            time.sleep(0.05)
        raise SystemExit("task %s did not end within %d s" % (upid, WAIT))

    def find(self, pod):
        """The pod's guest entry, its API path and its config (one look, where the playbooks look twice)."""
        [guest] = [g for g in self.call("GET", "/cluster/resources", type="vm") if g.get("name") == pod]
        ct = "/nodes/%s/lxc/%d" % (guest["node"], guest["vmid"])
        return guest, ct, self.call("GET", ct + "/config")

    def address(self, ct):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for iface in self.call("GET", ct + "/interfaces") or []:
                address = iface.get("inet", "").split("/")[0]
                if address and not address.startswith(("127.", "169.254.")):
                    return address
            time.sleep(0.05)
        raise SystemExit("%s got no address within %d s" % (ct, WAIT))

    def firewall(self, ct, ip=None, plan=None):
        """Read the pod's firewall as pod_firewall does; with ip and plan, make it (a new container)."""
        self.call("GET", "/cluster/firewall/options")
        self.call("GET", ct + "/firewall/options")
        self.call("GET", ct + "/firewall/rules")
        sets = self.call("GET", ct + "/firewall/ipset")
        if plan is None:
            assert [s for s in sets if s["name"] == "ipfilter-net0"], sets
            self.call("GET", ct + "/firewall/ipset/ipfilter-net0")
            return
        self.call("POST", ct + "/firewall/ipset", name="ipfilter-net0", comment="cloudpods: anti-spoofing")
        self.call("POST", ct + "/firewall/ipset/ipfilter-net0", cidr=ip, comment="cloudpods:")
        for entry in reversed(self.plans[plan]["firewall"]["allow_in"]):
            port, proto = ("22", "tcp") if entry == "ssh" else entry.split("/")
            self.call("POST", ct + "/firewall/rules", type="in", action="ACCEPT", enable=1, proto=proto, dport=port,
                      comment="cloudpods: " + entry)
        self.call("PUT", ct + "/firewall/options", enable=1, policy_in="DROP", policy_out="ACCEPT", ipfilter=1, dhcp=1)

    def zone(self, domain):
        reply = self.pdns.get("%s/zones/%s." % (self.pdns_url, domain), timeout=10)
        return reply.json() if reply.status_code == 200 else None

    def schedule(self, pod, vmid, plan):
        """The backup directory and cron entry of the plan: look, write only what differs."""
        backups = self.plans[plan]["backups"]
        when = backups["schedule"]
        prune = ",".join("%s=%s" % item for item in backups["retention"].items())
        content = ("# Backups of Cloud Pod %s (%s plan)\nSHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
                   "%s %s %s %s %s root %s %d --dumpdir %s --mode snapshot --compress zstd --prune-backups %s --quiet 1\n"
                   % (pod.name, self.plans[plan]["name"], when["minute"], when["hour"], when["day"], when["month"],
                      when["weekday"], VZDUMP, vmid, pod.dirs.backup_dir(pod.name), prune))
        Path(pod.dirs.backup_dir(pod.name)).mkdir(mode=0o750, parents=True, exist_ok=True)
        cron = Path(pod.dirs.cron_file(pod.name))
        if not cron.exists() or cron.read_text() != content:
            cron.write_text(content)

    @staticmethod
    def archives(pod):
        """[{volid, name, ctime, size, kind}] of the pod's directory, as backups.yml lists them."""
        found = []
        with os.scandir(pod.dirs.backup_dir(pod.name)) as entries:
            for entry in entries:
                if entry.name.startswith(ARCHIVE_PREFIX) and entry.name.endswith((".tar", ".tar.zst", ".tar.gz")):
                    info = entry.stat()
                    notes = Path(entry.path + ".notes")
                    manual = notes.exists() and notes.read_text().startswith(MANUAL_MARK)
                    found.append({"volid": entry.path, "name": entry.name, "size": info.st_size,
                                  "ctime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime)),
                                  "kind": "manual" if manual else "scheduled"})
        return sorted(found, key=lambda found_entry: found_entry["name"], reverse=True)

    def vzdump(self, pod, vmid, note):
        """One backup now with the lab's vzdump (a command on the Proxmox host), marked manual with a note
        (deprovision's final one, note None, is not); its path."""
        directory = Path(pod.dirs.backup_dir(pod.name))
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        before = set(os.listdir(directory))
        subprocess.run([VZDUMP, str(vmid), "--dumpdir", str(directory), "--mode", "snapshot", "--compress", "zstd",
                        "--prune-backups", "keep-all=1"], check=True, env=self.host_env, capture_output=True,
                       timeout=WAIT)
        [archive] = [name for name in set(os.listdir(directory)) - before
                     if name.startswith(ARCHIVE_PREFIX) and name.endswith(".tar.zst")]
        path = directory / archive
        if note is not None:
            Path(str(path) + ".notes").write_text("%s %s\n" % (MANUAL_MARK, note))
        return str(path)

    def converge(self, pod, ct, vmid, plan):
        """What repair and restore make sure of on a pod that is as it should be: running with its address,
        firewall, zone, backup schedule."""
        status = self.call("GET", ct + "/status/current")
        if status["status"] != "running":
            self.task(self.call("POST", ct + "/status/start"))
        ip = self.address(ct)
        self.firewall(ct)
        assert self.zone(pod.domain)["account"] == pod.name
        self.schedule(pod, vmid, plan)
        return ip

    # -- the operations, on a Pod; backup_now returns its archive's name

    def suspend(self, pod):
        dummy, ct, dummy = self.find(pod.name)
        self.call("PUT", ct + "/config", onboot=0)
        self.task(self.call("POST", ct + "/status/shutdown", forceStop=1, timeout=60))

    def resume(self, pod):
        dummy, ct, dummy = self.find(pod.name)
        self.call("PUT", ct + "/config", onboot=1)
        self.task(self.call("POST", ct + "/status/start"))
        self.address(ct)

    def change_plan(self, pod, plan=UP_PLAN):
        guest, ct, config = self.find(pod.name)
        new = self.plans[plan]
        size = int(config["rootfs"].split("size=")[1].split(",")[0].rstrip("G"))
        if new["disk_gb"] < size:
            return  # refused: the root disk would shrink
        description = "\n".join("cloudpods-plan: " + plan if line.startswith("cloudpods-plan: ") else line
                                for line in config["description"].split("\n"))
        self.call("PUT", ct + "/config", cores=new["vcpu"], memory=new["memory_mb"], swap=new["swap_mb"],
                  description=description, tags="%s;cloudpod" % plan.lower())
        if new["disk_gb"] > size:
            self.task(self.call("PUT", ct + "/resize", disk="rootfs", size="%dG" % new["disk_gb"]))
        if guest.get("status") == "running":
            self.address(ct)
        self.firewall(ct)
        self.schedule(pod, guest["vmid"], plan)

    def change_plan_back(self, pod):
        self.change_plan(pod, plan=PLAN)

    def backup_now(self, pod):
        guest, dummy, dummy = self.find(pod.name)
        path = self.vzdump(pod, guest["vmid"], "(backup_now)")
        assert [a for a in self.archives(pod) if a["volid"] == path]
        return os.path.basename(path)

    def backups(self, pod):
        self.find(pod.name)
        self.archives(pod)

    def restore(self, pod):
        guest, ct, config = self.find(pod.name)
        directory = Path(pod.dirs.backup_dir(pod.name))
        archive = directory / pod.archive
        assert archive.is_file()
        # it holds a CT config: the command the playbook runs on the Proxmox host
        subprocess.run(["tar", "--occurrence=1", "-xOf", str(archive), "./etc/vzdump/pct.conf"], check=True,
                       capture_output=True, timeout=WAIT)
        journal = directory / ".restore"
        assert not journal.exists()
        safety = self.vzdump(pod, guest["vmid"], "(safety backup before restoring %s)" % archive.name)
        storage = config["rootfs"].split(":")[0]
        journal.write_text(json.dumps({"archive": archive.name, "vmid": guest["vmid"], "storage": storage,
                                       "safety": safety}) + "\n")
        self.task(self.call("POST", ct + "/status/shutdown", forceStop=1, timeout=60))
        subprocess.run([PCT, "restore", str(guest["vmid"]), str(archive), "--storage", storage, "--force", "1"],
                       check=True, env=self.host_env, capture_output=True, timeout=WAIT)
        self.converge(pod, ct, guest["vmid"], plan_of(self.call("GET", ct + "/config")))
        journal.unlink()

    def reinstall(self, pod):
        guest, ct, config = self.find(pod.name)
        vmid, node, plan = guest["vmid"], guest["node"], plan_of(config)
        hwaddr = config["net0"].split("hwaddr=")[1].split(",")[0]
        journal = Path(pod.dirs.backup_dir(pod.name)) / ".reinstall"
        assert not journal.exists()
        backup = self.vzdump(pod, vmid, "(backup before reinstall)")
        journal.write_text(json.dumps({"vmid": vmid, "hwaddr": hwaddr, "backup": backup, "ssh_public_keys": None}) + "\n")
        self.task(self.call("POST", ct + "/status/stop"))
        self.task(self.call("DELETE", ct, purge=1, **{"destroy-unreferenced-disks": 1}))
        self.call("GET", "/nodes/%s/lxc/9000/config" % node)
        self.task(self.call("POST", "/nodes/%s/lxc/9000/clone" % node, newid=vmid, hostname=pod.name, full=1,
                            storage=config["rootfs"].split(":")[0],
                            description="Cloud Pod %s\ncloudpods-plan: %s\ncloudpods-domain: %s\ncloudpods-pod: %s"
                            % (pod.name, plan, pod.domain, pod.name)))
        new = self.call("GET", ct + "/config")
        net0 = ",".join("hwaddr=" + hwaddr if part.startswith("hwaddr=") else part for part in new["net0"].split(","))
        sizes = self.plans[plan]
        self.call("PUT", ct + "/config", cores=sizes["vcpu"], memory=sizes["memory_mb"], swap=sizes["swap_mb"],
                  onboot=1, net0=net0, tags="%s;cloudpod" % plan.lower())
        self.task(self.call("POST", ct + "/status/start"))
        self.task(self.call("PUT", ct + "/resize", disk="rootfs", size="%dG" % sizes["disk_gb"]))
        self.firewall(ct, self.address(ct), plan)
        assert self.zone(pod.domain)["account"] == pod.name
        self.schedule(pod, vmid, plan)
        journal.unlink()

    def repair(self, pod):
        guest, ct, config = self.find(pod.name)
        self.converge(pod, ct, guest["vmid"], plan_of(config))

    def deprovision(self, pod):
        guest, ct, dummy = self.find(pod.name)
        self.vzdump(pod, guest["vmid"], None)
        Path(pod.dirs.cron_file(pod.name)).unlink()
        if self.zone(pod.domain)["account"] == pod.name:
            assert self.pdns.delete("%s/zones/%s." % (self.pdns_url, pod.domain), timeout=10).status_code == 204
        self.task(self.call("POST", ct + "/status/stop"))
        self.task(self.call("DELETE", ct, purge=1, **{"destroy-unreferenced-disks": 1}))


def plan_of(config):
    """CLOUD_POD_STARTER from the container's tag cloud_pod_starter."""
    return [tag for tag in config["tags"].split(";") if tag.startswith("cloud_pod_")][0].upper()


class Pod:
    """One pod of a round and what the operations left on it."""

    def __init__(self, name, dirs):
        self.name, self.domain, self.dirs = name, name + ".test", dirs
        self.archive = None


def cpu_seconds():
    """CPU time (user + system) of this process and of its children that ended: the ansible-playbook
    process tree, the stand-ins the floor runs. Unlike wall time, hardly affected by the load."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def playbook_op(env, operation, pod):
    extra = {}
    if operation in ("change_plan", "change_plan_back"):
        extra["plan"] = UP_PLAN if operation == "change_plan" else PLAN
    if operation == "restore":
        extra["archive"] = pod.archive
    cpu = cpu_seconds()
    run = run_pod_playbook(PLAYBOOK.get(operation, operation), env, pod.dirs, pod=pod.name, **extra)
    run.cpu = cpu_seconds() - cpu
    if operation == "change_plan_back":
        if run.rc == 0 or "plan change refused: the root disk would shrink" not in run.stdout:
            raise SystemExit("change_plan back was not refused:\n%s\n%s" % (run.stdout[-4000:], run.stderr[-2000:]))
    elif run.rc != 0 or failed_count(run):
        raise SystemExit("%s failed:\n%s\n%s" % (operation, run.stdout[-4000:], run.stderr[-2000:]))
    if operation == "backup_now":
        pod.archive = run.report["global_custom_stats"]["backup"]["name"]
    return run


def floor_op(floor, operation, pod):
    """Wall and CPU seconds of the floor of ``operation`` on ``pod``."""
    started, cpu = time.perf_counter(), cpu_seconds()
    result = getattr(floor, operation)(pod)
    elapsed = time.perf_counter() - started, cpu_seconds() - cpu
    if operation == "backup_now":
        pod.archive = result
    return elapsed


def prepare(floor, operation, pods, state):
    """Unmeasured, through the floor: what an operation needs that another one, left out by --only,
    would have left (a stopped pod for resume, a running one for the others, a Premium pod for
    change_plan_back, an archive for restore). ``state`` is what the pods are now; updated."""
    def on_both(name):
        for pod in pods:
            floor_op(floor, name, pod)
    if operation == "resume" and state["running"]:
        on_both("suspend")
    elif operation != "resume" and not state["running"]:
        on_both("resume")
    if operation == "change_plan_back" and state["plan"] == PLAN:
        on_both("change_plan")
    if operation == "restore" and not all(pod.archive for pod in pods):
        on_both("backup_now")
    state["running"] = operation != "suspend"
    if operation == "change_plan":
        state["plan"] = UP_PLAN


def split_of(run):
    roles, tasks, modules = {}, [], 0
    for task in run.tasks:
        took = seconds(task["duration"])
        roles[role_of(task["name"])] = roles.get(role_of(task["name"]), 0.0) + took
        tasks.append((task["name"], took))
        result = task["result"] or {}
        if not result.get("skipped") and result.get("action") and result["action"] not in CONTROLLER_ACTIONS:
            modules += 1
    return roles, tasks, modules


def where_the_time_goes(operation, runs, wall):
    splits = [split_of(run) for run in runs]
    print("  %s: %d tasks, %d module runs (medians); per role:" % (
        operation, statistics.median(len(s[1]) for s in splits), statistics.median(s[2] for s in splits)))
    in_tasks = 0.0
    for role in sorted({role for s in splits for role in s[0]}):
        value = statistics.median(s[0].get(role, 0.0) for s in splits)
        in_tasks += value
        print("      %-30s %6.2f s" % (role, value))
    print("      %-30s %6.2f s" % ("outside tasks", wall - in_tasks))
    by_task = {}
    for s in splits:
        for name, took in s[1]:
            by_task.setdefault(name, []).append(took)
    slowest = sorted(((statistics.median(v) * len(v) / len(splits), k) for k, v in by_task.items()), reverse=True)[:5]
    print("      slowest tasks: " + "; ".join("%s %.2f s" % (name.split(" : ")[-1][:60], took) for took, name in slowest))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(OPERATIONS),
                        help="comma-separated operations, of: " + ", ".join(OPERATIONS))
    args = parser.parse_args()
    selected = [op.strip() for op in args.only.split(",") if op.strip()]
    unknown = sorted(set(selected) - set(OPERATIONS))
    if unknown or not 1 <= args.rounds <= 50:
        parser.error("unknown operations %s (known: %s) or --rounds not in 1..50" % (unknown, ", ".join(OPERATIONS)))
    selected = [op for op in OPERATIONS if op in selected]
    plans = yaml.safe_load((ROOT / "playbooks" / "vars" / "plans.yml").read_text())["cloudpods_plans"]
    floors = {op: [] for op in selected}
    runs = {op: [] for op in selected}
    loads = [os.getloadavg()[0]]
    with PrivateLab() as env, tempfile.TemporaryDirectory(prefix="bench-operations-") as base:
        control = LabControl.from_env(env)
        control.config(default_task_duration=0, task_durations={}, dhcp_delay=0, task_jitter=0)
        floor = OpsFloor(env, plans)
        for index in range(1, args.rounds + 1):
            dirs = HostDirs(Path(base) / ("round-%d" % index))
            pods = [Pod("ops-%d-%d-%s" % (os.getpid(), index, side), dirs) for side in ("pb", "fl")]
            for pod in pods:
                run = run_pod_playbook("provision", env, dirs, pod=pod.name, plan=PLAN, domain=pod.domain,
                                       customer_email=pod.name + "@customer.test")
                if run.rc != 0:
                    raise SystemExit("provision failed:\n%s\n%s" % (run.stdout[-4000:], run.stderr[-2000:]))
            state = {"running": True, "plan": PLAN}
            for operation in selected:
                prepare(floor, operation, pods, state)
                run = playbook_op(env, operation, pods[0])
                runs[operation].append(run)
                floors[operation].append(floor_op(floor, operation, pods[1]))
                print("round %d %-17s playbook %6.2f s (CPU %5.2f s)  floor %5.2f s (CPU %4.2f s)  load %.1f" % (
                    (index, operation, run.duration, run.cpu) + floors[operation][-1] + (os.getloadavg()[0],)),
                    flush=True)
            loads.append(os.getloadavg()[0])
        per_module, empty_playbook = module_run_cost(env, base)
    print()
    print("lifecycle operations on one Starter pod with a domain, %d rounds (medians), zero task durations, "
          "1-min load average %.1f-%.1f" % (args.rounds, min(loads), max(loads)))
    print("  %-17s %9s %9s %9s  %-8s %9s %9s" % (
        "operation", "playbook", "floor", "diff", "<= %g s" % TARGET, "pb CPU", "floor CPU"))
    missed = []
    for operation in selected:
        wall = statistics.median(run.duration for run in runs[operation])
        low = statistics.median(wall_cpu[0] for wall_cpu in floors[operation])
        met = wall - low <= TARGET
        if not met:
            missed.append((operation, wall))
        print("  %-17s %7.2f s %7.2f s %7.2f s  %-8s %7.2f s %7.2f s   (playbook min %.2f max %.2f)" % (
            operation, wall, low, wall - low, "yes" if met else "NO",
            statistics.median(run.cpu for run in runs[operation]),
            statistics.median(wall_cpu[1] for wall_cpu in floors[operation]),
            min(run.duration for run in runs[operation]), max(run.duration for run in runs[operation])))
    print("this machine: one module run %.2f s, an ansible-playbook run doing nothing %.2f s"
          % (per_module, empty_playbook))
    if missed:
        print("where the time goes in those that miss:")
        for operation, wall in missed:
            where_the_time_goes(operation, runs[operation], wall)


if __name__ == "__main__":
    main()
