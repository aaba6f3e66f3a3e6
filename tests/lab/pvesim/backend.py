"""Container backends: the only code that would touch real containers.

The state machine decides *whether* an operation may happen (locks, status, ACLs) and
records its result; a backend *does* it. ``MemoryBackend`` only pretends, so the lab
runs anywhere as any user. A later ``LxcBackend`` implements the same methods with
real LXC containers. Backend methods run in task threads outside the state lock, and
signal failure by raising ``BackendError`` (its text becomes the task's exitstatus).

Configs handed to a backend are copies of PVE configs (``pct.conf`` keys: ``rootfs``,
``net0``, ``hostname``, ...; ``template: 1`` for a template); a backend may keep them.
"""

import gzip
import hashlib
import io
import ipaddress
import struct
import tarfile
import threading
import time
from pathlib import Path

from .containers import render_config


class BackendError(Exception):
    """The backend could not do what was asked; the task fails with this text."""


class Backend:
    """The interface the state machine relies on. Every method is called without the
    state lock held, from a task thread (except ``interfaces`` and ``usage``, which
    answer API reads and must be quick)."""

    name = "abstract"
    # True: the simulator keeps each CT's traffic counters (tests set them, /_lab/.../traffic);
    # False: ``counters`` measures them.
    counts_in_simulator = True

    def create(self, vmid: int, archive: Path, config: dict) -> None:
        """Make the root filesystem of the new CT ``vmid`` from an OS template archive.

        ``archive`` is the template file (``.tar.gz``/``.tar.xz``/``.tar.zst``/``.tar.bz2``),
        known to exist; ``config`` is the CT's final config (``rootfs`` with its new volume
        and size, NICs with their MAC addresses, no ``lock``). Called in the ``vzcreate``
        task's thread without the state lock. On ``BackendError`` the state machine calls
        ``destroy(vmid)`` to clean up and the task fails ``unable to create CT <vmid> - <text>``.
        """
        raise NotImplementedError

    def clone(self, src_vmid: int, new_vmid: int, full: bool, storage: str | None,
              config: dict) -> None:
        raise NotImplementedError

    def destroy(self, vmid: int) -> None:
        raise NotImplementedError

    def start(self, vmid: int, config: dict) -> None:
        raise NotImplementedError

    def stop(self, vmid: int) -> None:
        raise NotImplementedError

    def shutdown(self, vmid: int, timeout: int) -> None:
        self.stop(vmid)

    def suspend(self, vmid: int) -> None:
        self.stop(vmid)

    def resume(self, vmid: int, config: dict) -> None:
        self.start(vmid, config)

    def apply_config(self, vmid: int, config: dict) -> None:
        raise NotImplementedError

    def resize(self, vmid: int, disk: str, new_size: int) -> None:
        raise NotImplementedError

    def counters(self, vmid: int, config: dict) -> tuple[int, int] | None:
        """``(netin, netout)`` of a running CT since it started, or None when the simulator keeps
        them. Answers API reads: must be quick."""
        return None

    def interfaces(self, vmid: int, config: dict) -> list | None:
        """What ``ip -j a`` inside the CT shows, PVE-shaped (``pve_interface``); None while stopped."""
        raise NotImplementedError

    def add_address(self, vmid: int, name: str, address: str) -> None:
        """``ip addr add <address> dev <name>`` inside the running CT (a lab control: an alias
        added by hand in the pod). Gone when the CT stops, as in the kernel."""
        raise NotImplementedError

    def vzdump(self, vmid: int, config: dict, archive: Path, compress: str) -> None:
        """Write the backup archive of ``vmid`` to ``archive``."""
        raise NotImplementedError

    def restore(self, vmid: int, archive: Path, config: dict) -> None:
        """Replace the root filesystem of CT ``vmid`` (stopped, or not there yet) by the contents
        of the backup ``archive`` (a vzdump tar, known to exist), and take ``config`` (merged
        by the state machine from the archive's ``etc/vzdump/pct.conf``) as its config.

        Called in the ``vzrestore`` task's thread without the state lock. Until it returns, the
        old root filesystem stays whole (the archive is unpacked beside it and swapped in), so a
        failure leaves the CT as it was. The default does nothing.
        """

    def make_template(self, vmid: int, config: dict) -> None:
        """Turn the stopped CT ``vmid`` into a template (``POST .../template``).

        Called in the ``vztemplate`` task's thread without the state lock; ``config`` is
        the config the CT will have: rootfs volume ``base-N-disk-M`` instead of
        ``vm-N-disk-M`` and ``template: 1``. When it returns, the state machine commits that
        config and calls ``save_config``; on ``BackendError`` the CT stays as it was.
        The default does nothing.
        """

    def save_config(self, vmid: int, config: dict) -> None:
        """Persist the committed config of CT ``vmid`` (a copy; the backend may keep it).

        Called by the state machine after every committed change of a CT's config: a
        finished create, a finished clone (the new CT), ``PUT .../config``, a finished
        resize, a template conversion. Not after destroy (``destroy`` is the signal).
        It may be called with the state lock held, so it must be cheap and must not call
        back into the state machine; an exception is logged and otherwise ignored.
        The default does nothing.
        """

    def save_node(self, vmid: int, node: str) -> None:
        """Persist which node CT ``vmid`` is on (called with ``save_config``, same rules), so that
        ``existing()`` can say it again (``"node"``). The default does nothing."""

    def existing(self) -> list[dict]:
        """The CTs this backend already has, for start-up and ``reset``.

        Each entry is ``{"vmid": int, "config": dict}`` with the PVE config as last given
        to ``save_config`` (``template: 1`` for a template), and ``"node"`` as given to
        ``save_node`` (none or an unknown one: the first node). ``Cluster.reset()`` calls
        ``reset()`` first, then this, and registers each CT as stopped; the built-in
        template CT is seeded only when the config's ``seed_template`` is true and no
        entry has ``template_vmid``. The default has none.
        """
        return []

    def apply_firewall(self, guests: list[dict], enabled: bool) -> None:
        """Enforce the guests' firewalls (``guests``: vmid, config, running, options, rules, ipsets;
        ``enabled``: the datacenter firewall). The memory backend has no traffic to filter."""

    def set_dhcp_delay(self, seconds: float) -> None:
        """How long after start a DHCP lease appears (simulated backends only)."""

    def reset(self) -> None:
        """Forget every container except what the state machine recreates.

        Called first by ``Cluster.reset()`` (start-up and ``POST /_lab/reset``); a backend
        that keeps CTs across resets reports them afterwards through ``existing()``.
        """


class MemoryBackend(Backend):
    """Pretends: containers are entries in dicts, DHCP is a timer, IPs come from a hash.

    Addresses are handed out from 10.99.0.0/16, stable per MAC address, and nothing
    ever listens on them.
    """

    name = "memory"
    NETWORK = ipaddress.IPv4Network("10.99.0.0/16")

    def __init__(self, dhcp_delay: float = 1.0):
        self._lock = threading.Lock()
        self._started_at: dict[int, float] = {}
        self._added: dict[int, list[tuple[str, str]]] = {}  # (interface, address/prefix) added by hand
        self._leases: dict[str, ipaddress.IPv4Address] = {}
        self._dhcp_delay = dhcp_delay

    def create(self, vmid, archive, config):
        return None

    def clone(self, src_vmid, new_vmid, full, storage, config):
        return None

    def make_template(self, vmid, config):
        return None

    def save_config(self, vmid, config):
        return None

    def existing(self):
        return []

    def destroy(self, vmid):
        self.stop(vmid)

    def start(self, vmid, config):
        with self._lock:
            self._started_at[vmid] = time.monotonic()

    def stop(self, vmid):
        with self._lock:
            self._started_at.pop(vmid, None)
            self._added.pop(vmid, None)

    def apply_config(self, vmid, config):
        return None

    def resize(self, vmid, disk, new_size):
        return None

    def set_dhcp_delay(self, seconds):
        self._dhcp_delay = float(seconds)

    def reset(self):
        with self._lock:
            self._started_at.clear()
            self._added.clear()

    def add_address(self, vmid, name, address):
        ipaddress.ip_interface(address)  # ValueError on a bad address, as ip(8) refuses it
        with self._lock:
            if vmid not in self._started_at:
                raise BackendError(f"CT {vmid} not running")
            self._added.setdefault(vmid, []).append((name, address))

    def interfaces(self, vmid, config):
        with self._lock:
            started_at = self._started_at.get(vmid)
            added = list(self._added.get(vmid, []))
        if started_at is None:
            return None
        leased = time.monotonic() - started_at >= self._dhcp_delay
        result = [pve_interface("lo", "00:00:00:00:00:00", [_addr("127.0.0.1/8"), _addr("::1/128")])]
        for key in sorted(k for k in config if k.startswith("net") and k[3:].isdigit()):
            net = _parse_net(config[key])
            name = net.get("name", f"eth{key[3:]}")
            extra = [address for interface, address in added if interface == name]
            result.append(self._interface(name, net, leased, extra))
        return result

    def _interface(self, name: str, net: dict, leased: bool, extra: list[str]) -> dict:
        """The kernel's order: IPv4 first (the configured or leased address, then the ones
        added later), then IPv6 (the newest first, the link-local address last)."""
        mac = net.get("hwaddr", "").lower()
        ipv4, ipv6 = [], [f"{link_local_address(mac)}/64"]
        ip_setting = net.get("ip", "")
        if ip_setting == "dhcp" and leased:
            ipv4.append(f"{self.lease_for(mac)}/{self.NETWORK.prefixlen}")
        elif "/" in ip_setting:
            ipv4.append(ip_setting)
        for address in extra:
            if ipaddress.ip_interface(address).version == 4:
                ipv4.append(address)
            else:
                ipv6.insert(0, address)
        return pve_interface(name, mac, [_addr(address) for address in ipv4 + ipv6])

    def lease_for(self, mac: str) -> ipaddress.IPv4Address:
        """A stable address per MAC: hash into the network, probe past collisions."""
        mac = mac.lower()
        with self._lock:
            if mac in self._leases:
                return self._leases[mac]
            used = set(self._leases.values())
            hosts = self.NETWORK.num_addresses - 3  # skip network, .0.1 gateway, broadcast
            index = int.from_bytes(hashlib.sha256(mac.encode()).digest()[:4], "big") % hosts
            while True:
                address = self.NETWORK.network_address + 2 + index
                if address not in used:
                    self._leases[mac] = address
                    return address
                index = (index + 1) % hosts

    def vzdump(self, vmid, config, archive, compress):
        payload = build_container_tar(vmid, config)
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(compress_archive(payload, compress))


def _parse_net(value: str) -> dict:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def _addr(address: str) -> dict:
    """One ``addr_info`` entry of ``ip --json a`` for ``address/prefix``."""
    interface = ipaddress.ip_interface(address)
    family = "inet" if interface.version == 4 else "inet6"
    return {"family": family, "local": str(interface.ip), "prefixlen": interface.network.prefixlen}


def pve_interface(name: str, hwaddr: str | None, addr_info: list) -> dict:
    """One entry of ``GET /nodes/{node}/lxc/{vmid}/interfaces`` from one link of ``ip --json a``,
    as PVE 8 builds it (pve-container stable-bookworm, src/PVE/LXC.pm ``get_interfaces``, since
    commit 5f9f011 "api: return all addresses of an interface", pve-container 5.2.6):
    ``ip-addresses`` lists every address in the kernel's order (``ip-address``,
    ``ip-address-type`` inet|inet6, ``prefix`` an integer); ``inet``/``inet6`` are kept for
    compatibility and hold the *last* address of their family (each one overwrites the key);
    ``hardware-address`` and ``hwaddr`` are the MAC address."""
    entry = {"name": name}
    listed = []
    for info in addr_info:
        entry[info["family"]] = f"{info['local']}/{info['prefixlen']}"
        listed.append({"ip-address-type": info["family"], "ip-address": info["local"],
                       "prefix": info["prefixlen"]})
    entry["ip-addresses"] = listed
    entry["hardware-address"] = hwaddr
    entry["hwaddr"] = hwaddr
    return entry


def link_local_address(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address the kernel derives from a MAC address."""
    octets = bytearray(int(part, 16) for part in mac.split(":"))
    octets[0] ^= 0x02
    interface_id = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + interface_id)


def build_container_tar(vmid: int, config: dict) -> bytes:
    """A tiny but genuine vzdump-style tar: ``./etc/vzdump/pct.conf`` plus a marker."""
    conf_text = render_config({key: value for key, value in config.items() if key not in ("lock", "digest")})
    files = {
        "./etc/vzdump/pct.conf": conf_text.encode(),
        "./etc/hostname": f"{config.get('hostname', f'CT{vmid}')}\n".encode(),
        "./var/www/cloudpod/public/index.html": b"<h1>Cloud Pod</h1>\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress_archive(payload: bytes, compress: str) -> bytes:
    """Compress like vzdump's ``compress`` option; lzo is stored uncompressed."""
    if compress == "gzip":
        return gzip.compress(payload)
    if compress == "zstd":
        return zstd_store(payload)
    return payload


def zstd_store(payload: bytes) -> bytes:
    """A valid zstd frame holding ``payload`` in raw (uncompressed) blocks.

    The standard library has no zstd, but the format allows raw blocks, so
    ``zstd -d`` and ``tar --zstd`` read the archive like one from real vzdump.
    """
    block_max = 128 * 1024
    frame = bytearray(struct.pack("<I", 0xFD2FB528))
    frame.append(0x00)           # frame header: no content size, no checksum, no dictionary
    frame.append(7 << 3)         # window descriptor: 2**(10+7) = 128 KiB
    chunks = [payload[i:i + block_max] for i in range(0, len(payload), block_max)] or [b""]
    for index, chunk in enumerate(chunks):
        last = 1 if index == len(chunks) - 1 else 0
        header = last | (0 << 1) | (len(chunk) << 3)  # block type 0 = raw
        frame += header.to_bytes(3, "little") + chunk
    return bytes(frame)
