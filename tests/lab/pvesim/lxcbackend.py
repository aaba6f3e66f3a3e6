"""The simulator's real-container backend: every CT is an LXC container on this machine.

Same interface as ``MemoryBackend`` (see ``backend.Backend``); the state machine still decides
what may happen, this class makes it happen with Debian's ``lxc`` tools:

- storage: each CT has a directory ``<lxc_path>/<vmid>/``. A CT created from an OS template or
  made by a full clone owns a plain root filesystem directory (``rootfs/``, a real copy).
  A linked clone is an overlay: the template's ``rootfs/`` is the read-only lower layer and the
  clone writes only its own ``delta/`` (copy-on-write, like a linked clone on LVM-thin or ZFS).
- the PVE config is kept in ``pve.json`` beside LXC's ``config``, so a restarted simulator
  finds its containers again (``existing``).
- limits: ``memory`` and ``swap`` become the memory cgroup limits, ``cores`` a cpuset of that
  many host CPUs (capped at what the host has), ``cpulimit`` a CFS quota; cgroup v1 and v2.
  A running CT gets new limits at once, as PVE applies them hot.
- disk size: the lab's storage is a directory with no quota, so ``resize`` only records the new
  size (as PVE's config does); nothing stops a CT from writing more. This is the one emulation.
- network: ``netN`` with ``bridge=`` is a veth pair on the lab bridge, its host end named as PVE
  names it, ``veth<vmid>i<N>`` (the counters and ``rate=`` are read and set there); so two LXC labs
  on one machine must not run CTs with the same VMID at the same time (one lab's start fails);
  before each start the backend writes what PVE's setup writes into the CT: ``/etc/hostname``,
  ``/etc/hosts`` and the interface configuration (systemd-networkd, DHCP or static).
  ``interfaces`` reads the addresses really configured inside the CT's network namespace
  (``nsenter ... ip --json a``, as PVE's ``get_interfaces``), so a DHCP address appears only once
  the CT has leased it. Destroy releases the leases.
- vzdump: a tar of the CT's root filesystem (of the running CT when it runs) plus
  ``./etc/vzdump/pct.conf``, compressed with zstd or gzip, as vzdump writes it.
- containers run privileged (this lab has no subordinate id maps); ``unprivileged`` is recorded
  but not enforced.
"""

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from . import nftfirewall
from .containers import render_config
from .backend import Backend, BackendError, _parse_net, pve_interface

COMMAND_TIMEOUT = 120
LOG = logging.getLogger("pvesim.lxc")


def _run(argv: list[str], timeout: float = COMMAND_TIMEOUT, check: bool = True, **kwargs):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{argv[0]} timed out after {timeout:.0f}s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise BackendError(f"{argv[0]} failed: {' '.join(detail) or f'exit {result.returncode}'}")
    return result


def host_veth_name(vmid: int, index: int) -> str:
    """PVE's name for the host end of a CT's ``net<index>``: ``veth<vmid>i<index>``."""
    return f"veth{vmid}i{index}"


def _nic_indexes(config: dict) -> list[int]:
    return sorted(int(key[3:]) for key in config if key.startswith("net") and key[3:].isdigit())


def _nic_rate(config: dict, index: int) -> float | None:
    rate = _parse_net(config[f"net{index}"]).get("rate")
    return float(rate) if rate not in (None, "") and float(rate) > 0 else None


def _tc(*argv: str, check: bool = True, netns_pid: int | None = None):
    prefix = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
    return _run(prefix + ["tc", *argv], check=check, timeout=10)


def set_rate_limit(iface: str, rate: float | None, police: bool = True) -> bool:
    """pve-common's ``tap_rate_limit`` on one host veth: ``rate`` MB/s becomes an htb class on
    egress (what the CT receives) and an ingress police that drops (what it sends), both
    ``int(rate * 1 MiB)`` bytes/s with a 1 MiB burst. Any earlier limit goes first (those
    deletions fail when there is none, as in PVE); no rate: no limit.

    Returns False when the kernel has no police action (``police`` False: not even tried), the
    ingress part then missing; the caller limits that direction another way (``shape_inside``).
    """
    for argv in (["class", "del", "dev", iface, "parent", "1:", "classid", "1:1"],
                 ["filter", "del", "dev", iface, "parent", "ffff:", "protocol", "all", "pref", "50", "u32"],
                 ["qdisc", "del", "dev", iface, "ingress"],
                 ["qdisc", "del", "dev", iface, "root"]):
        _tc(*argv, check=False)
    if not rate:
        return True
    speed, burst = _rate_and_burst(rate)
    _tc("qdisc", "add", "dev", iface, "root", "handle", "1:", "htb", "default", "1")
    _tc("class", "add", "dev", iface, "parent", "1:", "classid", "1:1", "htb", "rate", speed, "burst", burst)
    if not police:
        return False
    _tc("qdisc", "add", "dev", iface, "handle", "ffff:", "ingress")
    result = _tc("filter", "add", "dev", iface, "parent", "ffff:", "prio", "50", "basic", "police", "rate",
                 speed, "burst", burst, "mtu", "64kb", "drop", check=False)
    if result.returncode == 0:
        return True
    _tc("qdisc", "del", "dev", iface, "ingress", check=False)
    LOG.warning("no tc police here (%s): the rate of what CTs send is shaped inside them instead",
                (result.stderr or result.stdout).strip().replace("\n", " "))
    return False


def shape_inside(netns_pid: int, name: str, rate: float | None) -> None:
    """Where the kernel cannot police (cls_basic/act_police missing, as in some sandboxes), what a CT
    sends is limited on its own end of the veth instead: an htb class of the same rate and burst on
    the CT's ``name`` (a shaper that queues, where PVE's police drops). No rate: removed."""
    _tc("qdisc", "del", "dev", name, "root", check=False, netns_pid=netns_pid)
    if rate:
        speed, burst = _rate_and_burst(rate)
        _tc("qdisc", "add", "dev", name, "root", "handle", "1:", "htb", "default", "1", netns_pid=netns_pid)
        _tc("class", "add", "dev", name, "parent", "1:", "classid", "1:1", "htb", "rate", speed, "burst", burst,
            netns_pid=netns_pid)


def _rate_and_burst(rate: float) -> tuple[str, str]:
    """tc's ``bps`` is bytes per second: PVE's ``int(rate * 1024 * 1024)``, burst 1 MiB."""
    return f"{int(rate * 1024 * 1024)}bps", f"{1024 * 1024}b"


def _cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _host_cpus() -> int:
    return len(os.sched_getaffinity(0)) or 1


class LxcBackend(Backend):
    """Real LXC containers in ``lxc_path``, networked on ``bridge`` (DHCP from the lab's dnsmasq)."""

    name = "lxc"
    counts_in_simulator = False

    def __init__(self, lxc_path: str | Path, bridge: str, leases_file: str | Path | None = None):
        self.lxc_path = Path(lxc_path)
        self.lxc_path.mkdir(parents=True, exist_ok=True)
        self.bridge = bridge
        self.leases_file = Path(leases_file) if leases_file else None
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._adopted = False
        self._firewall_lock = threading.Lock()
        self._rates: dict[int, dict[int, float | None]] = {}  # the limits on each running CT's veths
        self._police: bool | None = None  # whether this kernel can police (known after the first rate)
        self.firewall_table = nftfirewall.table_name(bridge)
        if shutil.which("lxc-start") is None:
            raise BackendError("the lxc backend needs Debian's lxc package (lxc-start not found)")

    # ------------------------------------------------------------------ paths

    def _dir(self, vmid: int) -> Path:
        return self.lxc_path / str(vmid)

    def _lock(self, vmid: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(vmid, threading.Lock())

    def _storage(self, vmid: int) -> dict:
        try:
            return json.loads((self._dir(vmid) / "storage.json").read_text())
        except (OSError, ValueError):
            return {"kind": "dir"}

    def _rootfs(self, vmid: int) -> Path:
        return self._dir(vmid) / "rootfs"

    def _lxc(self, *args: str) -> list[str]:
        return [args[0], "-P", str(self.lxc_path), "-n", *args[1:]]

    # ------------------------------------------------------------------ persistence

    def save_config(self, vmid: int, config: dict) -> None:
        directory = self._dir(vmid)
        if not directory.exists():
            return
        partial = directory / "pve.json.partial"
        partial.write_text(json.dumps(config, indent=1, sort_keys=True))
        partial.replace(directory / "pve.json")

    def save_node(self, vmid: int, node: str) -> None:
        directory = self._dir(vmid)
        if directory.exists():
            partial = directory / "node.partial"
            partial.write_text(node + "\n")
            partial.replace(directory / "node")

    def existing(self) -> list[dict]:
        found = []
        for entry in sorted(self.lxc_path.iterdir()) if self.lxc_path.is_dir() else []:
            pve = entry / "pve.json"
            if entry.name.isdigit() and pve.exists():
                try:
                    config = json.loads(pve.read_text())
                except ValueError:
                    continue
                item = {"vmid": int(entry.name), "config": config, "running": self._running(int(entry.name))}
                if (entry / "node").exists():
                    item["node"] = (entry / "node").read_text().strip()
                found.append(item)
        return found

    def reset(self) -> None:
        """The simulator's first reset (its start) adopts what is there, as a restarted PVE API
        finds its guests; a later reset (the lab's /_lab/reset) keeps templates (the built CT 9000
        is expensive) and destroys every other container."""
        if not self._adopted:
            self._adopted = True
            return
        for item in self.existing():
            vmid = item["vmid"]
            if item["config"].get("template"):
                self.stop(vmid)
            else:
                self.destroy(vmid)
        for entry in list(self.lxc_path.iterdir()) if self.lxc_path.is_dir() else []:
            if entry.is_dir() and not (entry / "pve.json").exists():
                self._remove_dir(entry)  # a half-made CT from a crash

    # ------------------------------------------------------------------ create / clone / destroy

    def create(self, vmid: int, archive: Path, config: dict) -> None:
        with self._lock(vmid):
            directory = self._dir(vmid)
            if directory.exists():
                self._remove_dir(directory)
            rootfs = self._rootfs(vmid)
            rootfs.mkdir(parents=True)
            _run(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(rootfs)], timeout=600)
            (directory / "storage.json").write_text(json.dumps({"kind": "dir"}))
            self._write_lxc_config(vmid, config)
            self.save_config(vmid, config)

    def clone(self, src_vmid, new_vmid, full, storage, config):
        with self._lock(new_vmid):
            source = self._storage(src_vmid)
            directory = self._dir(new_vmid)
            if directory.exists():
                self._remove_dir(directory)
            directory.mkdir(parents=True)
            try:
                if full:
                    with self._mounted_root(src_vmid) as root:
                        _run(["cp", "-a", "--reflink=auto", f"{root}/.", str(self._rootfs(new_vmid))], timeout=900)
                    layout = {"kind": "dir"}
                else:
                    if source.get("kind") != "dir":
                        raise BackendError("linked clone needs a base volume (clone a template)")
                    (directory / "delta").mkdir()
                    layout = {"kind": "overlay", "lower": str(self._rootfs(src_vmid))}
                (directory / "storage.json").write_text(json.dumps(layout))
                self._write_lxc_config(new_vmid, config)
                self.save_config(new_vmid, config)
            except BaseException:
                self._remove_dir(directory)
                raise

    def restore(self, vmid: int, archive: Path, config: dict) -> None:
        """Unpack beside the CT (``.restore-<vmid>``), then swap directories: the old root
        filesystem is whole until the new one is in place (a failed unpack leaves it as it was)."""
        with self._lock(vmid):
            directory = self._dir(vmid)
            staging = self.lxc_path / f".restore-{vmid}"
            old = self.lxc_path / f".replaced-{vmid}"
            for leftover in (staging, old):
                if leftover.exists():
                    self._remove_dir(leftover)
            rootfs = staging / "rootfs"
            rootfs.mkdir(parents=True)
            try:
                # GNU tar recognises zstd and gzip archives by their contents.
                _run(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(rootfs)], timeout=1800)
                for name in ("pct.conf", "pct.fw"):  # PVE's restore_configuration unlinks both
                    (rootfs / "etc" / "vzdump" / name).unlink(missing_ok=True)
                (staging / "storage.json").write_text(json.dumps({"kind": "dir"}))
            except BaseException:
                self._remove_dir(staging)
                raise
            if directory.exists():
                self._stop(vmid, kill=True)
                directory.rename(old)
            staging.rename(directory)
            self._write_lxc_config(vmid, config)
            self.save_config(vmid, config)
            if old.exists():
                self._remove_dir(old)

    def destroy(self, vmid):
        with self._lock(vmid):
            directory = self._dir(vmid)
            if not directory.exists():
                return
            self._stop(vmid, kill=True)
            self._release_leases(vmid)
            self._remove_dir(directory)

    def make_template(self, vmid: int, config: dict) -> None:
        self.save_config(vmid, config)

    @staticmethod
    def _remove_dir(directory: Path) -> None:
        subprocess.run(["umount", "-l", str(directory / "merged")], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)

    def _release_leases(self, vmid: int) -> None:
        if not self.leases_file or shutil.which("dhcp_release") is None:
            return
        macs = self._macs(vmid)
        for line in self._read_leases():
            parts = line.split()
            if len(parts) >= 3 and parts[1].lower() in macs:
                subprocess.run(["dhcp_release", self.bridge, parts[2], parts[1]], capture_output=True,
                               check=False, timeout=10)

    def _read_leases(self) -> list[str]:
        try:
            return self.leases_file.read_text().splitlines()
        except OSError:
            return []

    def _macs(self, vmid: int) -> set:
        try:
            config = json.loads((self._dir(vmid) / "pve.json").read_text())
        except (OSError, ValueError):
            return set()
        return {_parse_net(value).get("hwaddr", "").lower() for key, value in config.items()
                if key.startswith("net") and key[3:].isdigit()} - {""}

    # ------------------------------------------------------------------ power

    def start(self, vmid, config):
        with self._lock(vmid):
            if not self._dir(vmid).exists():
                raise BackendError(f"CT {vmid}: no root filesystem in the lab (was it created by this simulator?)")
            self._write_lxc_config(vmid, config)
            self._setup_rootfs(vmid, config)
            log = self._dir(vmid) / "lxc.log"
            result = _run(self._lxc("lxc-start", str(vmid)) + ["-d", "-o", str(log), "-l", "WARN"], check=False)
            if result.returncode != 0:
                raise BackendError(f"startup for container '{vmid}' failed: {self._log_tail(log)}")
            wait = _run(self._lxc("lxc-wait", str(vmid)) + ["-s", "RUNNING", "-t", "20"], check=False)
            if wait.returncode != 0:
                raise BackendError(f"startup for container '{vmid}' failed: {self._log_tail(log)}")
            self._rates[vmid] = {}  # new veths, no limits yet
            self._apply_rates(vmid, config)

    def _apply_rates(self, vmid: int, config: dict) -> None:
        """Each NIC's ``rate`` on its host veth, where it differs from what is there (PVE's
        update_net does the same on a config change; the veth's start hook at start)."""
        applied = self._rates.setdefault(vmid, {})
        for index in _nic_indexes(config):
            rate = _nic_rate(config, index)
            if applied.get(index) == rate:
                continue
            policed = set_rate_limit(host_veth_name(vmid, index), rate, police=self._police is not False)
            if rate:
                self._police = policed
            if self._police is False:
                pid = self._init_pid(vmid)
                if pid is None:
                    raise BackendError(f"CT {vmid} not running")
                shape_inside(pid, _parse_net(config[f"net{index}"]).get("name", f"eth{index}"), rate)
            applied[index] = rate

    def stop(self, vmid):
        with self._lock(vmid):
            self._stop(vmid, kill=True)

    def shutdown(self, vmid, timeout):
        with self._lock(vmid):
            if self._running(vmid):
                result = _run(self._lxc("lxc-stop", str(vmid)) + ["-t", str(max(1, int(timeout)))],
                              check=False, timeout=timeout + 30)
                if self._running(vmid):
                    raise BackendError(f"shutdown of CT {vmid} timed out: {result.stderr.strip()}")

    def _stop(self, vmid: int, kill: bool) -> None:
        if self._running(vmid):
            _run(self._lxc("lxc-stop", str(vmid)) + (["-k"] if kill else []), check=False, timeout=60)
            _run(self._lxc("lxc-wait", str(vmid)) + ["-s", "STOPPED", "-t", "20"], check=False)

    def _running(self, vmid: int) -> bool:
        if not (self._dir(vmid) / "config").exists():
            return False
        result = _run(self._lxc("lxc-info", str(vmid)) + ["-s", "-H"], check=False, timeout=20)
        return result.stdout.strip() == "RUNNING"

    def _init_pid(self, vmid: int) -> int | None:
        result = _run(self._lxc("lxc-info", str(vmid)) + ["-p", "-H"], check=False, timeout=20)
        text = result.stdout.strip()
        return int(text) if text.isdigit() and int(text) > 0 else None

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no log"

    # ------------------------------------------------------------------ config

    def apply_config(self, vmid, config):
        with self._lock(vmid):
            if not self._dir(vmid).exists():
                return
            self._write_lxc_config(vmid, config)
            if self._running(vmid):
                # Two passes: cgroup v1 refuses a memory limit above memory+swap's (and the reverse), so
                # growing needs memsw first and shrinking memory first; what failed once goes again.
                pending = self._cgroup_settings(config)
                for _attempt in range(2):
                    failed = []
                    for key, value in pending:
                        result = _run(self._lxc("lxc-cgroup", str(vmid)) + [key, value], check=False, timeout=20)
                        if result.returncode != 0:
                            failed.append((key, value))
                    pending = failed
                if pending:
                    raise BackendError(f"CT {vmid}: could not set {', '.join(key for key, _value in pending)} live")
                self._apply_rates(vmid, config)

    def resize(self, vmid, disk, new_size):
        """Directory storage has no size: the new size lives in the config only (see module doc)."""
        return None

    def _cgroup_settings(self, config: dict) -> list[tuple[str, str]]:
        memory = int(config.get("memory", 512)) * 1024 * 1024
        swap = int(config.get("swap", 512)) * 1024 * 1024
        cores = min(int(config.get("cores") or _host_cpus()), _host_cpus())
        cpus = "0" if cores == 1 else f"0-{cores - 1}"
        cpulimit = float(config.get("cpulimit") or 0)
        settings = []
        if _cgroup_v2():
            settings += [("memory.max", str(memory)), ("memory.swap.max", str(swap)), ("cpuset.cpus", cpus)]
            if cpulimit:
                settings.append(("cpu.max", f"{int(cpulimit * 100000)} 100000"))
        else:
            settings += [("memory.limit_in_bytes", str(memory)), ("cpuset.cpus", cpus)]
            if Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists():
                settings.append(("memory.memsw.limit_in_bytes", str(memory + swap)))
            if cpulimit:
                settings += [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", str(int(cpulimit * 100000)))]
        return settings

    def _write_lxc_config(self, vmid: int, config: dict) -> None:
        layout = self._storage(vmid)
        if layout.get("kind") == "overlay":
            rootfs = f"overlay:{layout['lower']}:{self._dir(vmid) / 'delta'}"
        else:
            rootfs = f"dir:{self._rootfs(vmid)}"
        prefix = "lxc.cgroup2" if _cgroup_v2() else "lxc.cgroup"
        lines = [
            "# Written by the lab's pvesim LxcBackend from the CT's PVE config (pve.json)",
            "lxc.include = /usr/share/lxc/config/common.conf",
            f"lxc.arch = {config.get('arch', 'amd64')}",
            f"lxc.uts.name = {config.get('hostname', f'CT{vmid}')}",
            f"lxc.rootfs.path = {rootfs}",
            "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed",
            "lxc.apparmor.profile = unconfined",
            "lxc.tty.max = 2",
            "lxc.pty.max = 1024",
        ]
        lines += [f"{prefix}.{key} = {value}" for key, value in self._cgroup_settings(config)]
        for key in sorted(k for k in config if k.startswith("net") and k[3:].isdigit()):
            index = int(key[3:])
            net = _parse_net(config[key])
            lines += [
                f"lxc.net.{index}.type = veth",
                f"lxc.net.{index}.veth.pair = {host_veth_name(vmid, index)}",
                f"lxc.net.{index}.link = {self.bridge}",
                f"lxc.net.{index}.flags = up",
                f"lxc.net.{index}.name = {net.get('name', f'eth{index}')}",
            ]
            if net.get("hwaddr"):
                lines.append(f"lxc.net.{index}.hwaddr = {net['hwaddr'].lower()}")
            if net.get("mtu"):
                lines.append(f"lxc.net.{index}.mtu = {net['mtu']}")
        (self._dir(vmid) / "config").write_text("\n".join(lines) + "\n")

    def _setup_rootfs(self, vmid: int, config: dict) -> None:
        """What PVE writes into a Debian/Ubuntu CT before it starts: hostname, hosts, network."""
        layout = self._storage(vmid)
        target = self._dir(vmid) / "delta" if layout.get("kind") == "overlay" else self._rootfs(vmid)
        hostname = config.get("hostname", f"CT{vmid}")
        files = {
            "etc/hostname": f"{hostname}\n",
            "etc/hosts": ("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
                          f"# --- BEGIN PVE ---\n127.0.1.1 {hostname}\n# --- END PVE ---\n"),
        }
        for key in sorted(k for k in config if k.startswith("net") and k[3:].isdigit()):
            net = _parse_net(config[key])
            name = net.get("name", f"eth{key[3:]}")
            body = [f"[Match]\nName={name}\n", "[Network]"]
            ip_setting = net.get("ip", "")
            if ip_setting == "dhcp":
                body.append("DHCP=ipv4")
            elif "/" in ip_setting:
                body.append(f"Address={ip_setting}")
                if net.get("gw"):
                    body.append(f"Gateway={net['gw']}")
            body.append("IPv6AcceptRA=false\n")
            if ip_setting == "dhcp":
                body.append("[DHCPv4]\nClientIdentifier=mac\n")
            files[f"etc/systemd/network/{name}.network"] = "\n".join(body)
        for relative, text in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            path.write_text(text)

    # ------------------------------------------------------------------ reads

    def counters(self, vmid, config):
        """pve-container's vmstatus: over the CT's host veths, what they received is the CT's
        ``netout`` and what they sent its ``netin`` (a veth gone: nothing to add)."""
        netin = netout = 0
        for index in _nic_indexes(config):
            statistics = Path("/sys/class/net") / host_veth_name(vmid, index) / "statistics"
            try:
                received = int((statistics / "rx_bytes").read_text())
                sent = int((statistics / "tx_bytes").read_text())
            except (OSError, ValueError):
                continue
            netout += received
            netin += sent
        return netin, netout

    def interfaces(self, vmid, config):
        if not (self._dir(vmid) / "config").exists():
            return None
        pid = self._init_pid(vmid)
        if pid is None:
            return None
        result = _run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "addr", "show"], check=False, timeout=10)
        try:
            links = json.loads(result.stdout or "[]")
        except ValueError:
            return None
        return [pve_interface(link.get("ifname"), link.get("address"),
                              [info for info in link.get("addr_info", []) if info.get("local")])
                for link in links]

    # ------------------------------------------------------------------ firewall

    def apply_firewall(self, guests, enabled):
        """Every filtered interface's rules on its veth (see nftfirewall), the whole table replaced at once."""
        with self._firewall_lock:
            interfaces = []
            for guest, index, net in nftfirewall.filtered_interfaces(guests, enabled):
                veth = self._host_veth(guest["vmid"], net.get("name", f"eth{index}"))
                if veth:
                    interfaces.append((guest, index, net, veth))
            try:
                nftfirewall.apply(nftfirewall.ruleset(self.firewall_table, interfaces))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                raise BackendError(str(exc)) from exc

    def _host_veth(self, vmid: int, name: str) -> str | None:
        """The host end of the CT's interface ``name``: the host link whose index is the CT link's peer."""
        pid = self._init_pid(vmid) if (self._dir(vmid) / "config").exists() else None
        if pid is None:
            return None
        inside = _run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show", name], check=False, timeout=10)
        try:
            peer = json.loads(inside.stdout or "[]")[0].get("link_index")
        except (ValueError, IndexError):
            return None
        for link in Path("/sys/class/net").iterdir():
            try:
                if int((link / "ifindex").read_text()) == peer:
                    return link.name
            except (OSError, ValueError):
                continue
        return None

    def add_address(self, vmid, name, address):
        pid = self._init_pid(vmid) if (self._dir(vmid) / "config").exists() else None
        if pid is None:
            raise BackendError(f"CT {vmid} not running")
        _run(["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", address, "dev", name], timeout=10)

    # ------------------------------------------------------------------ backup

    def vzdump(self, vmid, config, archive, compress):
        conf_text = render_config({key: value for key, value in config.items() if key not in ("lock", "digest")})
        archive.parent.mkdir(parents=True, exist_ok=True)
        compressor = {"zstd": ["-I", "zstd -q -1 -T0"], "gzip": ["-I", "gzip -1"]}.get(compress, [])
        with tempfile.TemporaryDirectory(prefix="vzdump-") as extra:
            conf = Path(extra) / "etc" / "vzdump" / "pct.conf"
            conf.parent.mkdir(parents=True)
            conf.write_text(conf_text)
            with self._mounted_root(vmid) as root:
                result = _run(["tar", "--numeric-owner", "--one-file-system", "--warning=no-file-changed",
                               "--warning=no-file-removed", "--ignore-failed-read", *compressor,
                               "-cf", str(archive), "-C", str(root), ".", "-C", extra, "./etc/vzdump/pct.conf"],
                              check=False, timeout=1800)
            # tar exits 1 when a file changed while it was read (a running CT): the archive is complete.
            if result.returncode not in (0, 1):
                raise BackendError(f"tar failed: {result.stderr.strip()[-300:]}")

    # ------------------------------------------------------------------ helpers

    class _Root:
        def __init__(self, backend: "LxcBackend", vmid: int):
            self.backend, self.vmid, self.mounted = backend, vmid, None

        def __enter__(self) -> Path:
            backend, vmid = self.backend, self.vmid
            pid = backend._init_pid(vmid) if backend._running(vmid) else None
            if pid is not None:
                return Path(f"/proc/{pid}/root")
            layout = backend._storage(vmid)
            if layout.get("kind") != "overlay":
                return backend._rootfs(vmid)
            directory = backend._dir(vmid)
            merged, work = directory / "merged", directory / "olwork"
            merged.mkdir(exist_ok=True)
            work.mkdir(exist_ok=True)
            _run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={layout['lower']},upperdir={directory / 'delta'},workdir={work}", str(merged)])
            self.mounted = merged
            return merged

        def __exit__(self, *exc_info):
            if self.mounted is not None:
                _run(["umount", str(self.mounted)], check=False)
            return False

    def _mounted_root(self, vmid: int) -> "_Root":
        """The CT's whole root filesystem: the running CT's, the plain directory, or the overlay mounted."""
        return LxcBackend._Root(self, vmid)
