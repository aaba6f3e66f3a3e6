"""Runs ``ansible-playbook`` so that it cannot outlive the worker that started it.

ansible-runner starts this file (copied into the run's private directory) as its "binary".

- Containment: with ``CLOUDPODS_RUN_CGROUP`` (a cgroup v2 leaf the worker made for this run) the
  guard moves itself into that cgroup before anything else starts, so ansible-playbook, its forks
  (which call ``setsid()`` and so leave the process group) and the modules they run are all in
  it. On SIGTERM (sent by the kernel when the worker dies: ``PR_SET_PDEATHSIG``), SIGHUP or
  SIGINT (ansible-runner's cancel) it writes ``cgroup.kill``: every process of the run ends at
  once, the guard included. Without a cgroup it kills its process group (what setsid() escapes).
- Secrets: with ``CLOUDPODS_SECRETS_SOCKET`` it fetches the Proxmox and PowerDNS secrets from the
  worker over that abstract Unix socket (answered once, to a child of the worker only) and hands
  them to ansible-playbook as environment. They are in no file and not in ansible-runner's
  environment, which it writes to ``artifacts/*/command``.

Standard library only.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys

PR_SET_PDEATHSIG = 1
CGROUP = os.environ.pop("CLOUDPODS_RUN_CGROUP", "")
SECRETS_SOCKET = os.environ.pop("CLOUDPODS_SECRETS_SOCKET", "")


def _kill_run(_signum, _frame):
    if CGROUP:
        try:
            with open(os.path.join(CGROUP, "cgroup.kill"), "w", encoding="ascii") as handle:
                handle.write("1")
            return
        except OSError:
            pass
    os.killpg(0, signal.SIGKILL)


def _enter_cgroup():
    if not CGROUP:
        return
    try:
        with open(os.path.join(CGROUP, "cgroup.procs"), "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))
    except OSError as exc:
        sys.stderr.write(f"cloudpods guard: cannot enter the run's cgroup {CGROUP}: {exc.strerror}\n")
        sys.exit(70)


def _fetch_secrets():
    if not SECRETS_SOCKET:
        return {}
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect("\0" + SECRETS_SOCKET)
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
        values = json.loads(data.decode())
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"cloudpods guard: could not get the playbook's secrets from the worker ({exc})\n")
        sys.exit(70)
    return {str(key): str(value) for key, value in values.items()}


def main():
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _kill_run)
    _enter_cgroup()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get("CLOUDPODS_WORKER_PID", str(os.getppid())):
        _kill_run(None, None)  # the worker died before prctl took effect
    env = dict(os.environ)
    env.update(_fetch_secrets())
    binary = env.get("CLOUDPODS_ANSIBLE_PLAYBOOK", "ansible-playbook")
    sys.exit(subprocess.call([binary] + sys.argv[1:], env=env))


if __name__ == "__main__":
    main()
