"""Benchmark: create N pods one after another with mpanel.cloudpods.pod_container
and with community.proxmox.proxmox (clone + config + start) against the same lab
simulator with the same task durations; print both medians and their ratio.

Run with .venv/bin first on PATH (it starts a private lab of its own, so it
neither disturbs nor is disturbed by anyone using the shared one):
    python tests/bench/bench_pod_container.py [--pods 20]

Per pod, the time is the sum of the durations of that pod's tasks as reported
by the ansible.posix.json callback, so interpreter start-up is excluded for
both. Ours also grows the root disk to the plan's size and waits for the
pod's DHCP address; the community module does neither.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from labcontrol import LabControl  # noqa: E402  pylint: disable=wrong-import-position
from playbooks import PrivateLab  # noqa: E402  pylint: disable=wrong-import-position

OURS_POD_TASKS = """\
- name: Create the pod with pod_container
  mpanel.cloudpods.pod_container:
    hostname: "{{ pod_name }}"
    state: started
    cores: 1
    memory: 1024
    swap: 512
    disk: 30
"""

COMMUNITY_POD_TASKS = """\
- name: Clone, configure and start with community.proxmox
  module_defaults:
    community.proxmox.proxmox:
      api_host: "{{ api_host }}"
      api_port: "{{ api_port }}"
      api_user: "{{ api_user }}"
      api_token_id: "{{ api_token_name }}"
      api_token_secret: "{{ lookup('ansible.builtin.env', 'PROXMOX_API_TOKEN_SECRET') }}"
      node: "{{ lookup('ansible.builtin.env', 'PROXMOX_NODE_NAME') }}"
  block:
    - name: Clone the template with community.proxmox
      community.proxmox.proxmox:
        clone: 9000
        clone_type: full
        storage: local-lvm
        hostname: "{{ pod_name }}"
        state: present
        timeout: 120
      register: cloned

    - name: Configure the clone with community.proxmox
      community.proxmox.proxmox:
        vmid: "{{ cloned.vmid }}"
        hostname: "{{ pod_name }}"
        update: true
        cores: 1
        memory: 1024
        swap: 512
        state: present

    - name: Start the clone with community.proxmox
      community.proxmox.proxmox:
        vmid: "{{ cloned.vmid }}"
        state: started
        timeout: 120
"""

PLAYBOOK = """\
- name: Benchmark {label}
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: One pod after another
      ansible.builtin.include_tasks: pod_tasks.yml
      loop: "{{{{ pods }}}}"
      loop_control:
        loop_var: pod_name
"""


def task_seconds(result):
    duration = result.get("duration") or {}
    start, end = duration.get("start"), duration.get("end")
    if not (start and end):
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def run_side(label, pod_tasks, pods, env, extra_vars):
    """Runs one side's playbook; returns the seconds per pod, in pod order."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        Path(tmp, "pod_tasks.yml").write_text(pod_tasks)
        Path(tmp, "bench.yml").write_text(PLAYBOOK.format(label=label))
        run_env = dict(os.environ, **env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                       ANSIBLE_CALLBACK_RESULT_FORMAT="json")
        run_env.setdefault("REQUESTS_CA_BUNDLE", env["PROXMOX_CA_BUNDLE"])
        proc = subprocess.run(
            ["ansible-playbook", "bench.yml", "-e", json.dumps(dict(extra_vars, pods=pods))],
            cwd=tmp, env=run_env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{label} playbook failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    per_pod = []
    # a block is not a task in the report: only its tasks are
    tasks_per_pod = pod_tasks.count("- name:") - pod_tasks.count("  block:")
    timed = [task for task in report["plays"][0]["tasks"]
             if not task["task"]["name"].startswith("One pod after another")]
    for index in range(len(pods)):
        chunk = timed[index * tasks_per_pod:(index + 1) * tasks_per_pod]
        per_pod.append(sum(task_seconds(task["task"]) for task in chunk))
    return per_pod


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--clone-seconds", type=float, default=4.0)
    parser.add_argument("--start-seconds", type=float, default=1.5)
    parser.add_argument("--dhcp-seconds", type=float, default=1.0)
    parser.add_argument("--jitter", type=float, default=0.3,
                        help="each task takes its duration times uniform(1-j, 1+j), as real tasks vary")
    args = parser.parse_args()

    with PrivateLab() as env:
        run_benchmark(args, env)


def run_benchmark(args, env):
    control = LabControl.from_env(env)
    durations = {"vzclone": args.clone_seconds, "vzstart": args.start_seconds,
                 "resize": 0.2, "vzstop": 0.5, "vzdestroy": 0.2}
    control.reset()
    control.config(task_durations=durations, dhcp_delay=args.dhcp_seconds, task_jitter=args.jitter)
    api = env["PROXMOX_API_URL"].split("//", 1)[1].split("/", 1)[0]
    host, port = api.rsplit(":", 1)
    user, token_name = env["PROXMOX_API_TOKEN_ID"].split("!", 1)
    community_vars = {"api_host": host, "api_port": int(port), "api_user": user, "api_token_name": token_name}

    ours = run_side("pod_container", OURS_POD_TASKS,
                    [f"bench-ours-{i:02d}" for i in range(args.pods)], env, {})
    control.reset()
    control.config(task_durations=durations, dhcp_delay=args.dhcp_seconds, task_jitter=args.jitter)
    community = run_side("community.proxmox.proxmox", COMMUNITY_POD_TASKS,
                         [f"bench-comm-{i:02d}" for i in range(args.pods)], env, community_vars)
    control.reset()

    ours_median, community_median = statistics.median(ours), statistics.median(community)
    print(f"simulated task durations: clone {args.clone_seconds}s, start {args.start_seconds}s "
          f"(each +-{args.jitter:.0%}), DHCP {args.dhcp_seconds}s; {args.pods} pods per side, one after another")
    rows = [("pod_container: clone, config, resize, start, wait for IP", ours),
            ("community.proxmox.proxmox: clone, config, start", community)]
    print(f"{'seconds per pod':<58}{'median':>8}{'min':>8}{'max':>8}")
    for label, values in rows:
        print(f"{label:<58}{statistics.median(values):>8.2f}{min(values):>8.2f}{max(values):>8.2f}")
    print(f"ratio ours/community: {ours_median / community_median:.2f} (target <= 1.00)")


if __name__ == "__main__":
    main()
