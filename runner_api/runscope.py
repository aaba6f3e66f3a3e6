"""What one playbook run owns on the worker's machine, and how it is taken away again.

A ``RunScope`` gives each run:

- a private directory under the worker's run base (``CLOUDPODS_RUN_DIR``, mode 0700), holding a
  lock file the worker keeps ``flock``-ed while the run lives. When the worker dies, the run's guard
  (``playbook_guard.py``) kills the run and removes the directory; a worker that starts removes
  every directory still there whose lock it can take: its owner is dead (``sweep``).
- a cgroup v2 leaf (where the worker may create one: root, or a systemd unit with
  ``Delegate=yes``). The guard moves itself into it before it starts ``ansible-playbook``, so
  every process of the run stays inside, whatever ``setsid()`` its forks call; ``cgroup.kill``
  then ends them all at once. Without cgroup v2 the guard falls back to killing its process
  group, which misses forks that left it (the log says so once).
- a one-shot secret hand-off: the Proxmox and PowerDNS secrets never enter ansible-runner's
  environment (which it writes to ``artifacts/*/command``) nor any file. The guard asks for them
  over an abstract Unix socket, the worker checks with ``SO_PEERCRED`` that the caller is its own
  child and answers once.
"""

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

LOG = logging.getLogger(__name__)
LOCK_NAME = ".lock"
RUN_PREFIX = "run-"
# A run directory is made under this prefix, locked, then renamed to RUN_PREFIX + its suffix: sweep()
# never sees a run directory without its held lock. A NEW_PREFIX left by a worker killed in between is
# swept once it is older than NEW_STALE_SECONDS.
NEW_PREFIX = ".new-"
NEW_STALE_SECONDS = 60
CGROUP_GROUP = "cloudpods-runs"
_WARNED = set()


def _warn_once(key, message, *args):
    if key not in _WARNED:
        _WARNED.add(key)
        LOG.warning(message, *args)


def default_run_base():
    return Path(tempfile.gettempdir()) / f"cloudpods-runs-{os.geteuid()}"


# ---------------------------------------------------------------------- cgroup v2

def _cgroup2_mount():
    """Where the unified (v2) hierarchy is mounted, or None."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return None


def _own_cgroup2_path():
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def runs_cgroup_root():
    """The directory under which this worker makes one leaf per run (created), or None."""
    mount, own = _cgroup2_mount(), _own_cgroup2_path()
    if mount is None or own is None:
        return None
    root = mount / own.lstrip("/") / CGROUP_GROUP
    try:
        root.mkdir(exist_ok=True)
    except OSError as exc:
        _warn_once("cgroup", "no cgroup v2 leaf per run (%s: %s): a killed worker's playbook forks that "
                   "called setsid() may outlive it; give the worker a delegated cgroup (systemd Delegate=yes)",
                   root, exc.strerror)
        return None
    if not (root / "cgroup.kill").exists():
        _warn_once("cgroup.kill", "cgroup v2 without cgroup.kill (Linux < 5.14): runs are killed process by process")
    return root


def kill_cgroup(path, timeout=2.0):
    """Kill every process in the cgroup ``path`` and remove it; True when it is gone."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while path.exists():
        try:
            if (path / "cgroup.kill").exists():
                (path / "cgroup.kill").write_text("1")
            else:
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        except FileNotFoundError:
            return True
        except OSError as exc:
            LOG.warning("could not kill cgroup %s: %s", path, exc.strerror)
            return False
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                LOG.warning("cgroup %s still has processes after %.1f s", path, timeout)
                return False
            time.sleep(0.02)
    return True


# ---------------------------------------------------------------------- secret hand-off

class SecretHandoff:
    """Answers the first connection from a child of this process with ``values`` as JSON, then closes."""

    def __init__(self, values):
        self.values = dict(values)
        self.name = f"cloudpods-secrets-{secrets.token_hex(16)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind("\0" + self.name)
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="secret-handoff", daemon=True)
        self.thread.start()

    @staticmethod
    def _parent_of(pid):
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
        return None

    def _serve(self):
        while not self.done.is_set():
            try:
                connection, _address = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with connection:
                try:
                    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                    pid, uid, _gid = struct.unpack("3i", creds)
                    if uid != os.geteuid() or self._parent_of(pid) != os.getpid():
                        LOG.warning("secret hand-off refused to pid %s (not a child of this worker)", pid)
                        continue
                    connection.sendall(json.dumps(self.values).encode())
                    self.done.set()
                except OSError:
                    continue

    def close(self):
        self.done.set()
        self.sock.close()
        self.thread.join(timeout=2)


# ---------------------------------------------------------------------- the scope

class RunScope:
    """One run's directory, lock, cgroup leaf and secret hand-off; ``close()`` removes them all."""

    def __init__(self, base=None, secret_env=None):
        self.base = Path(base or default_run_base())
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.base, 0o700)
        self.path, self._lock = self._locked_directory()
        self.run_id = self.path.name
        self.cgroup = None
        root = runs_cgroup_root()
        if root is not None:
            try:
                (root / self.run_id).mkdir()
                self.cgroup = root / self.run_id
            except OSError as exc:
                _warn_once("cgroup-leaf", "could not create a cgroup per run under %s: %s", root, exc.strerror)
        self.handoff = SecretHandoff(secret_env) if secret_env else None

    def _locked_directory(self):
        """A new run directory whose lock is held before sweep() can see it: another worker starting
        meanwhile would otherwise take a directory without its lock yet for a dead worker's and remove it."""
        staging = Path(tempfile.mkdtemp(prefix=NEW_PREFIX, dir=self.base))
        lock = os.open(staging / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _attempt in range(10):
            path = self.base / (RUN_PREFIX + secrets.token_hex(6))
            try:
                # rename(2) would replace an empty directory of that name; a live run's never is empty
                # (its lock), and a name taken fails with ENOTEMPTY or EEXIST: another name then.
                if not path.exists():
                    os.rename(staging, path)
                    return path, lock
            except OSError:
                continue
        os.close(lock)
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(f"no free run directory name under {self.base}")

    def env(self):
        """What the guard needs to find the scope (no secret in it)."""
        env = {"CLOUDPODS_RUN_ID": self.run_id}
        if self.cgroup is not None:
            env["CLOUDPODS_RUN_CGROUP"] = str(self.cgroup)
        if self.handoff is not None:
            env["CLOUDPODS_SECRETS_SOCKET"] = self.handoff.name
        return env

    def kill(self):
        """Kill whatever of the run is still alive (a cancelled run's stragglers)."""
        if self.cgroup is not None and kill_cgroup(self.cgroup):
            self.cgroup = None

    def close(self):
        if self.handoff is not None:
            self.handoff.close()
            self.handoff = None
        self.kill()
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


def _older_than(path, seconds):
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def sweep(base=None):
    """Remove what dead workers left: run directories nobody holds locked, and their cgroups.

    Returns the run ids removed. Directories of runs still alive (another worker on this machine)
    are locked and stay.
    """
    base = Path(base or default_run_base())
    removed = []
    if base.is_dir():
        for path in sorted(base.iterdir()):
            if path.name.startswith(NEW_PREFIX) and path.is_dir() and _older_than(path, NEW_STALE_SECONDS):
                shutil.rmtree(path, ignore_errors=True)  # a worker died while making its run directory
                continue
            if not path.name.startswith(RUN_PREFIX) or not path.is_dir():
                continue
            try:
                handle = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                handle = None  # died before the lock existed
            except OSError:
                continue
            try:
                if handle is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            root = runs_cgroup_root()
            if root is not None and (root / path.name).exists():
                kill_cgroup(root / path.name)
            shutil.rmtree(path, ignore_errors=True)
            if handle is not None:
                os.close(handle)
            removed.append(path.name)
    return removed
