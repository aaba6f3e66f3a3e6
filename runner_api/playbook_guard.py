"""Runs ``ansible-playbook`` so that it cannot outlive the worker that started it.

ansible-runner starts this file (copied into the run's private directory) as its "binary".

- Containment: with ``CLOUDPODS_RUN_CGROUP`` (a cgroup v2 leaf the worker made for this run) the
  guard moves itself into that cgroup before anything else starts, so ansible-playbook, its forks
  (which call ``setsid()`` and so leave the process group) and the modules they run are all in
  it. On SIGTERM (sent by the kernel when the worker dies: ``PR_SET_PDEATHSIG``), SIGHUP (the
  worker's end of the terminal closed) or SIGINT it steps out into the parent cgroup and writes the
  run's ``cgroup.kill``: every other process of the run ends at once. Without a cgroup it kills the
  rest of its process group (what setsid() escapes). (ansible-runner's own cancel and timeout
  SIGKILL the guard's process group; the worker then kills the cgroup itself.)
- Clean-up: when the worker is dead (the guard was handed to another parent), nobody else will
  remove the run's private directory, so the guard does, once every other process of the run has
  ended, and exits. A worker that starts still removes what nobody removed (``runscope.sweep``:
  a guard killed with its worker's whole machine, say).
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
import shutil
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
CGROUP = os.environ.pop("CLOUDPODS_RUN_CGROUP", "")
SECRETS_SOCKET = os.environ.pop("CLOUDPODS_SECRETS_SOCKET", "")
WORKER_PID = os.environ.get("CLOUDPODS_WORKER_PID", "")
RUN_ID = os.environ.get("CLOUDPODS_RUN_ID", "")
# The guard is copied into the run's private directory (runner_api/executors.py).
RUN_DIR = os.path.dirname(os.path.abspath(__file__))
ORPHAN_WAIT_SECONDS = 3.0  # a SIGHUP may come just before the kernel hands the guard to a new parent
EMPTY_WAIT_SECONDS = 10.0  # for the killed processes of the run to be gone


def _write(path, text):
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)


def _reap():
    """Collect exited children (ansible-playbook) so that none stays a zombie."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _cgroup_empty():
    try:
        with open(os.path.join(CGROUP, "cgroup.procs"), encoding="ascii") as handle:
            return not handle.read().split()
    except FileNotFoundError:
        return True


def _kill_cgroup_but_me():
    """Step out into the parent cgroup, kill the run's cgroup, wait until it is empty; False if the guard cannot."""
    try:
        _write(os.path.join(os.path.dirname(CGROUP), "cgroup.procs"), str(os.getpid()))
        _write(os.path.join(CGROUP, "cgroup.kill"), "1")
    except OSError:
        return False
    deadline = time.monotonic() + EMPTY_WAIT_SECONDS
    while not _cgroup_empty() and time.monotonic() < deadline:
        _reap()
        time.sleep(0.02)
    try:
        os.rmdir(CGROUP)
    except OSError:
        pass  # the worker (or the next one's sweep) removes it
    return True


def _kill_group_but_me():
    """Without a cgroup: SIGKILL the other members of the guard's process group."""
    me, group = os.getpid(), os.getpgrp()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                if os.getpgid(int(entry)) == group:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue
    _reap()


def _worker_gone():
    """True once the guard's parent is no longer the worker that started it."""
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while str(os.getppid()) == WORKER_PID:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return bool(WORKER_PID)


def _remove_run_dir():
    # Only the directory the worker made for this run: its name is the run id, it holds the lock file.
    if RUN_ID and os.path.basename(RUN_DIR) == RUN_ID and os.path.exists(os.path.join(RUN_DIR, ".lock")):
        shutil.rmtree(RUN_DIR, ignore_errors=True)


def _kill_run(_signum, _frame):
    """End every other process of the run; if the worker is dead, remove the run's directory too."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # once is enough (the worker's death sends SIGHUP and SIGTERM)
    if CGROUP and _kill_cgroup_but_me():
        if _worker_gone():
            _remove_run_dir()
        os._exit(1)
    if CGROUP:  # the guard cannot leave the cgroup: the directory first, then the whole run, the guard included
        if WORKER_PID and str(os.getppid()) != WORKER_PID:
            _remove_run_dir()
        try:
            _write(os.path.join(CGROUP, "cgroup.kill"), "1")
            return
        except OSError:
            pass
    _kill_group_but_me()
    if _worker_gone():
        _remove_run_dir()
    os._exit(1)


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
    for signum in SIGNALS:
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
