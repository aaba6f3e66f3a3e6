"""LXC container configs: the ``pct.conf`` keys PVE accepts, how it stores them, and
the status views (status/current, cluster/resources) derived from them.
"""

import base64
import binascii
import hashlib
import random
import re
import struct
import time
from dataclasses import dataclass, field

from . import schema
from .errors import fail
from .firewall import Firewall
from .schema import P

MAX_NETS = 10
OSTYPES = ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux",
           "alpine", "gentoo", "nixos", "unmanaged")

# Keys PUT /config accepts (besides node, vmid, delete, revert, digest).
CONFIG_SPEC = {
    "arch": P(enum=("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64")),
    "cmode": P(enum=("shell", "console", "tty")),
    "console": P(type="boolean"),
    "cores": P(type="integer", minimum=1, maximum=8192),
    "cpulimit": P(type="number", minimum=0, maximum=8192),
    "cpuunits": P(type="integer", minimum=0, maximum=500000),
    "debug": P(type="boolean"),
    "description": P(max_length=8192),
    "features": P(format=schema.features_config),
    "hookscript": P(),
    "hostname": P(format=schema.dns_name, max_length=255),
    "memory": P(type="integer", minimum=16),
    "nameserver": P(format=schema.ip_list),
    "onboot": P(type="boolean"),
    "ostype": P(enum=OSTYPES),
    "protection": P(type="boolean"),
    "rootfs": P(format=schema.rootfs_config),
    "searchdomain": P(),
    "startup": P(format=schema.startup_config),
    "swap": P(type="integer", minimum=0),
    "tags": P(format=schema.tag_list),
    "template": P(type="boolean"),
    "timezone": P(),
    "tty": P(type="integer", minimum=0, maximum=6),
    "unprivileged": P(type="boolean"),
    **{f"net{i}": P(format=schema.net_config) for i in range(MAX_NETS)},
}

READ_ONLY_KEYS = {"unprivileged", "template"}
REQUIRED_KEYS = {"rootfs"}
LOCK_NAMES = ("backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted",
              "rollback", "snapshot", "snapshot-delete")

# Which privilege each key needs (PVE's check_ct_modify_config_perm); the rest need
# VM.Config.Options.
_KEY_PRIVILEGE = {
    "cores": "VM.Config.CPU", "cpulimit": "VM.Config.CPU", "cpuunits": "VM.Config.CPU",
    "memory": "VM.Config.Memory", "swap": "VM.Config.Memory",
    "rootfs": "VM.Config.Disk",
    "hostname": "VM.Config.Network", "nameserver": "VM.Config.Network",
    "searchdomain": "VM.Config.Network",
}
ROOT_ONLY_KEYS = {"hookscript": "changing the hookscript is only allowed for root@pam"}
CONFIG_PRIVILEGES = ["VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory",
                     "VM.Config.Network", "VM.Config.Options"]


# A mount point volume PVE allocates: ``[STORAGE:]SIZE_IN_GiB`` (pve-container's NEW_DISK_RE).
NEW_DISK_RE = re.compile(r"(?:([^\s:]+):)?(\d+(?:\.\d+)?)")
# What POST /nodes/{node}/lxc takes besides the config keys; none of it is stored.
CREATE_ONLY_KEYS = ("ostemplate", "password", "storage", "force", "restore", "unique", "pool",
                    "ignore-unpack-errors", "ssh-public-keys", "bwlimit", "start")
_SSH_KEY_TYPES = ("ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                  "sk-ecdsa-sha2-nistp256@openssh.com")


def check_ssh_public_keys(text: str) -> None:
    """PVE runs ``ssh-keygen -l`` on each non-blank line; the same verdict, without it."""
    for line in text.split("\n"):
        if line.strip() and not _is_public_key_line(line.strip()):
            raise fail("SSH public key validation error")


def _is_public_key_line(line: str) -> bool:
    fields = line.split()
    for index, word in enumerate(fields[:-1]):  # an authorized_keys line may start with options
        if word in _SSH_KEY_TYPES:
            try:
                blob = base64.b64decode(fields[index + 1], validate=True)
            except (binascii.Error, ValueError):
                return False
            if len(blob) < 4:
                return False
            (length,) = struct.unpack(">I", blob[:4])
            return blob[4:4 + length].decode("ascii", "replace") == word
    return False


def guess_ostype(template_name: str) -> str:
    """PVE detects the distribution inside the unpacked template; the simulator reads it
    from the template's name (``debian-12-standard_...``), ``unmanaged`` when unknown."""
    prefix = re.split(r"[-_.]", template_name.lower(), maxsplit=1)[0]
    aliases = {"rockylinux": "centos", "almalinux": "centos", "rocky": "centos", "alma": "centos",
               "arch": "archlinux", "opensuse": "opensuse"}
    prefix = aliases.get(prefix, prefix)
    return prefix if prefix in OSTYPES else "unmanaged"


def guess_arch(template_name: str) -> str:
    """The architecture PVE would detect: from the template's name, amd64 otherwise."""
    for arch in ("arm64", "armhf", "i386", "riscv64", "riscv32"):
        if f"_{arch}." in template_name or f"-{arch}." in template_name:
            return arch
    return "amd64"


def key_privilege(key: str) -> str:
    if key.startswith("net"):
        return "VM.Config.Network"
    return _KEY_PRIVILEGE.get(key, "VM.Config.Options")


def random_mac() -> str:
    """A MAC with Proxmox's OUI (BC:24:11), as PVE 8 generates them."""
    return "BC:24:11:" + ":".join(f"{random.randint(0, 255):02X}" for _octet in range(3))


def normalize_net(value: str, name: str) -> str:
    """Parse and re-print a netN value; PVE generates a MAC when none is given."""
    net = schema.parse_property_string(value, schema.NET_PROPS, name)
    net.setdefault("hwaddr", random_mac())
    return schema.print_property_string(net, schema.NET_PROPS)


def with_new_mac(value: str, name: str) -> str:
    net = schema.parse_property_string(value, schema.NET_PROPS, name)
    net["hwaddr"] = random_mac()
    return schema.print_property_string(net, schema.NET_PROPS)


def net_settings(value: str) -> dict:
    return schema.parse_property_string(value, schema.NET_PROPS, "net")


def parse_rootfs(value: str) -> dict:
    return schema.parse_property_string(value, schema.ROOTFS_PROPS, "rootfs", default_key="volume")


def print_rootfs(rootfs: dict) -> str:
    return schema.print_property_string(rootfs, schema.ROOTFS_PROPS, default_key="volume")


def rootfs_size(config: dict, disk: str = "rootfs") -> int:
    """Size in bytes of ``rootfs`` (or a mount point), from its ``size=`` option."""
    size = parse_rootfs(config[disk]).get("size", "0")
    return schema.parse_size(size)


def render_config(config: dict) -> str:
    """The text of ``/etc/pve/lxc/<vmid>.conf``: description as comments, then keys."""
    lines = [f"#{line}" for line in str(config.get("description", "")).splitlines()] \
        if config.get("description") else []
    lines += [f"{key}: {_text(value)}" for key, value in sorted(config.items())
              if key != "description"]
    return "\n".join(lines) + "\n"


def is_volume_key(key: str) -> bool:
    """``mpN`` and ``unusedN``: volumes a restore does not take over from the archive."""
    return re.fullmatch(r"(mp|unused)\d+", key) is not None


def parse_config(text: str) -> dict:
    """The inverse of ``render_config`` (``parse_pct_config`` for the keys we keep): ``#`` lines
    are the description, ``key: value`` lines the keys; integers come back as numbers."""
    config, description = {}, []
    for line in text.splitlines():
        if line.startswith("["):  # a snapshot section: not kept by a restore
            break
        if line.startswith("#"):
            description.append(line[1:] + "\n")
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            continue
        value = value.strip()
        config[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value) else value
    if description:
        config["description"] = "".join(description)
    return config


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def store_value(key: str, value):
    """How PVE returns a key after parsing the config file: numbers as numbers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class Container:
    """One CT: its config (``lock`` included, as in PVE) and runtime state."""

    vmid: int
    config: dict
    status: str = "stopped"
    started_at: float | None = None
    suspended: bool = False
    pool: str | None = None
    firewall: Firewall = field(default_factory=Firewall)
    node: str = ""
    # Bytes since the CT started (PVE: the host-side veths' counters, gone with the veth at stop):
    # netin is what the CT received, netout what it sent.
    netin: int = 0
    netout: int = 0

    @property
    def lock(self) -> str | None:
        return self.config.get("lock")

    @property
    def is_template(self) -> bool:
        return bool(self.config.get("template"))

    @property
    def name(self) -> str:
        return self.config.get("hostname") or f"CT{self.vmid}"

    @property
    def digest(self) -> str:
        return hashlib.sha1(render_config(self.config).encode()).hexdigest()

    def config_view(self) -> dict:
        view = dict(self.config)
        view["digest"] = self.digest
        return view

    def uptime(self) -> int:
        return int(time.time() - self.started_at) if self.status == "running" and self.started_at else 0

    def status_view(self) -> dict:
        """PVE's vmstatus entry: ``lock``, ``tags`` and ``template`` only when set."""
        mib = 1024 * 1024
        running = self.status == "running"
        memory = int(self.config.get("memory", 512)) * mib
        view = {
            "vmid": self.vmid, "name": self.name, "status": self.status, "type": "lxc",
            "cpus": self.config.get("cpulimit") or self.config.get("cores") or 1,
            "maxmem": memory, "maxswap": int(self.config.get("swap", 512)) * mib,
            "maxdisk": rootfs_size(self.config) if "rootfs" in self.config else 0,
            "mem": memory // 8 if running else 0, "swap": 0,
            "disk": 0, "cpu": 0.01 if running else 0, "uptime": self.uptime(),
            "netin": self.netin if running else 0, "netout": self.netout if running else 0,
            "diskread": 0, "diskwrite": 0,
        }
        if running:
            view["pid"] = 100000 + self.vmid
        if self.lock:
            view["lock"] = self.lock
        if self.config.get("tags"):
            view["tags"] = self.config["tags"]
        if self.is_template:
            view["template"] = 1
        return view

    def resource_view(self, node: str) -> dict:
        """A ``/cluster/resources`` entry: ``template`` is always 0 or 1 there."""
        status = self.status_view()
        view = {"id": f"lxc/{self.vmid}", "type": "lxc", "vmid": self.vmid, "node": node,
                "name": self.name, "status": self.status,
                "template": 1 if self.is_template else 0,
                "maxcpu": status["cpus"], "maxmem": status["maxmem"],
                "maxdisk": status["maxdisk"], "mem": status["mem"], "disk": status["disk"],
                "cpu": status["cpu"], "uptime": status["uptime"], "netin": status["netin"],
                "netout": status["netout"], "diskread": 0, "diskwrite": 0}
        for key in ("lock", "tags"):
            if key in status:
                view[key] = status[key]
        if self.pool:
            view["pool"] = self.pool
        return view


def template_config(hostname: str, bridge: str, vmid: int) -> dict:
    """CT 9000 as the seed's setup step 2 leaves it: an Ubuntu template.

    Its root disk is 2G, the smallest plan's (Student): Proxmox VE only grows a clone's disk, so a
    larger template could not serve every plan (build_template.yml makes it 2 GB for that reason).
    """
    net = f"name=eth0,bridge={bridge},hwaddr={random_mac()},ip=dhcp,type=veth"
    return {
        "arch": "amd64", "cores": 1, "features": "nesting=1", "hostname": hostname,
        "memory": 512, "net0": net, "ostype": "ubuntu",
        "rootfs": f"local-lvm:base-{vmid}-disk-0,size=2G", "swap": 512, "template": 1,
        "unprivileged": 1,
        "description": "Cloud Pods base: Ubuntu 22.04, nginx, PHP-FPM 8.2, MariaDB 10.11\n",
    }
