"""The lab's real-container part: a bridge with DHCP, an sshd for ``pct``, the OS template.

Only used when the lab is brought up with ``--lxc`` (root on Linux with Debian's ``lxc``,
``dnsmasq-base``, ``openssh-server`` and ``debootstrap``). It adds three services to the lab:

- ``lxcnet``: a bridge (``cp`` + 6 hex digits, 10.98.N.1/24, both derived from the lab's directory)
  in the host's network namespace and a dnsmasq that only does DHCP on it (``--port=0``: no DNS).
  Containers lease from .10-.250 of that subnet; the lease file is ``.lab/lxcnet/leases``. The bridge has no route
  anywhere else and no NAT: containers can reach the host and each other, nothing more.
- ``sshd``: an OpenSSH server on a free loopback port with a key the lab generates, standing in
  for SSH to the Proxmox host. Its ForceCommand (``bin/pct-ssh-command``) runs only ``pct``
  commands, so ``community.proxmox.proxmox_pct_remote`` works against the lab unchanged.
- ``pvesim-lxc``: a second Proxmox VE simulator whose backend is ``LxcBackend``: clone, start,
  stop, vzdump and destroy act on real LXC containers in ``.lab/lxc/containers``.

The OS template the lab offers for ``pct create`` (``local:vztmpl/debian-12-cloudpods-lab_amd64.tar.zst``)
is a debootstrapped Debian bookworm that already carries the template's packages, because lab
containers have no route to a mirror. It is cached in ``.lab-cache/`` (or ``CLOUDPODS_LAB_CACHE``).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


class LabNetwork:
    """The bridge and subnet of one lab: ``cp<6 hex>`` and 10.98.N.0/24, both derived from the lab's
    directory, so two checkouts' labs on one machine (a CI run beside a session) do not collide."""

    def __init__(self, lab_directory: Path):
        digest = hashlib.sha256(str(Path(lab_directory).resolve()).encode()).hexdigest()
        self.bridge = f"cp{digest[:6]}"
        third = int(digest[6:10], 16) % 250
        self.network = f"10.98.{third}.0/24"
        self.gateway = f"10.98.{third}.1"
        self.dhcp_range = (f"10.98.{third}.10", f"10.98.{third}.250")


HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
BIN = HERE / "bin"

# What the lab's OS template carries: the seed's stack (nginx, PHP-FPM 8.2, MariaDB 10.11),
# what Ansible needs inside (python3), systemd as init, the tools PVE's own templates have, and the
# customer's way in: an SSH server (SFTP) and an ACME client (certbot) for the pod's certificate.
OS_TEMPLATE_PACKAGES = [
    "systemd-sysv", "dbus", "iproute2", "iputils-ping", "procps", "cron", "ca-certificates",
    "python3", "python3-apt", "nginx", "php-fpm", "php-mysql", "mariadb-server",
    "mariadb-client", "less", "curl", "zstd", "openssh-server", "certbot",
    # certbot needs python3-cryptography, whose dependency on python3-cffi-backend is through
    # virtual packages (python3-cffi-backend-api-*) that debootstrap does not resolve: named here.
    "python3-cffi-backend",
]
OS_TEMPLATE_SUITE = "bookworm"
OS_TEMPLATE_NAME = "debian-12-cloudpods-lab_amd64.tar.zst"


class LxcUnavailable(Exception):
    """Real containers cannot run here; the message says what is missing."""


def lxc_missing() -> str | None:
    """Why the LXC lab cannot run on this machine, or None if it can."""
    if sys.platform != "linux":
        return "real containers need Linux"
    if os.geteuid() != 0:
        return "real containers need root (the lab runs privileged LXC containers)"
    for tool in ("lxc-start", "lxc-attach", "dnsmasq", "debootstrap", "zstd", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian packages lxc, dnsmasq-base, debootstrap, zstd)"
    if not Path("/usr/sbin/sshd").exists():
        return "/usr/sbin/sshd not found (Debian package openssh-server)"
    return None


def cache_dir() -> Path:
    path = Path(os.environ.get("CLOUDPODS_LAB_CACHE") or REPO_ROOT / ".lab-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-800:]}")
    return result


# ---------------------------------------------------------------- bridge + DHCP

def bridge_up(net: LabNetwork) -> None:
    if run(["ip", "link", "show", net.bridge], check=False).returncode != 0:
        run(["ip", "link", "add", net.bridge, "type", "bridge"])
    addresses = run(["ip", "-4", "-o", "addr", "show", "dev", net.bridge]).stdout
    if f" {net.gateway}/" not in addresses:
        run(["ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge])
    run(["ip", "link", "set", net.bridge, "up"])


def bridge_down(net: LabNetwork) -> None:
    if run(["ip", "link", "show", net.bridge], check=False).returncode == 0:
        run(["ip", "link", "del", net.bridge], check=False)


def dnsmasq_argv(directory: Path, net: LabNetwork) -> list[str]:
    return [
        shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
        "--port=0", f"--interface={net.bridge}", "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range={net.dhcp_range[0]},{net.dhcp_range[1]},255.255.255.0,12h",
        f"--dhcp-leasefile={directory / 'leases'}", "--dhcp-authoritative",
        f"--dhcp-option=option:router,{net.gateway}", "--dhcp-option=option:dns-server",
        "--log-dhcp", "--log-facility=-",
    ]


def read_leases(path: Path) -> dict:
    """dnsmasq's lease file as {mac: ip}."""
    leases = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return leases
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            leases[parts[1].lower()] = parts[2]
    return leases


# ---------------------------------------------------------------- sshd

def ssh_keys(directory: Path) -> dict:
    """The lab's client key and the sshd host key (ed25519), generated once."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    client, host = directory / "id_ed25519", directory / "ssh_host_ed25519_key"
    for key, comment in ((client, "cloudpods-lab"), (host, "cloudpods-lab-host")):
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    authorized = directory / "authorized_keys"
    authorized.write_text(Path(f"{client}.pub").read_text())
    os.chmod(authorized, 0o600)
    return {"client_key": client, "host_key": host, "authorized_keys": authorized}


def sshd_config(directory: Path, port: int, lxc_path: Path) -> Path:
    keys = ssh_keys(directory)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    text = "\n".join([
        "# Written by tests/lab/lxclab.py: the lab's 'Proxmox host' login for pct",
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {keys['host_key']}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {keys['authorized_keys']}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PermitTunnel no",
        "AllowUsers root",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        f"SetEnv LAB_LXC_PATH={lxc_path}",
        f"ForceCommand {BIN / 'pct-ssh-command'}",
        "",
    ])
    path = directory / "sshd_config"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- OS template

def os_template_key() -> str:
    text = "\n".join([OS_TEMPLATE_SUITE, *sorted(OS_TEMPLATE_PACKAGES), Path(__file__).name, "v1"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_os_template(vztmpl_dir: Path, log) -> Path:
    """The lab's OS template archive in ``vztmpl_dir``, built with debootstrap once and cached."""
    vztmpl_dir.mkdir(parents=True, exist_ok=True)
    target = vztmpl_dir / OS_TEMPLATE_NAME
    cached = cache_dir() / f"os-template-{os_template_key()}.tar.zst"
    if not cached.exists():
        build_os_template(cached, log)
    if not target.exists() or target.stat().st_size != cached.stat().st_size:
        partial = target.with_suffix(".partial")
        shutil.copyfile(cached, partial)
        partial.rename(target)
    return target


def build_os_template(archive: Path, log) -> None:
    mirror = os.environ.get("CLOUDPODS_LAB_MIRROR", "http://deb.debian.org/debian")
    work = archive.parent / f"build-{os.getpid()}"
    rootfs = work / "rootfs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    log(f"building the lab's OS template with debootstrap {OS_TEMPLATE_SUITE} (about a minute, once)")
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(OS_TEMPLATE_PACKAGES)}",
             OS_TEMPLATE_SUITE, str(rootfs), mirror],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-2000:]}")
        # debootstrap can leave the host's /proc mounted in the rootfs (seen once: tar then read
        # the live /proc and failed); unmount it before packing, and never cross into another
        # file system while packing.
        run(["umount", "-R", str(rootfs / "proc")], check=False)
        _trim_rootfs(rootfs)
        partial = archive.with_suffix(".partial")
        run(["tar", "--numeric-owner", "--one-file-system", "-I", "zstd -T0 -3", "-C", str(rootfs),
             "-cf", str(partial), "."])
        partial.rename(archive)
        for stale in archive.parent.glob("os-template-*.tar.zst"):
            if stale != archive:
                stale.unlink()
    finally:
        run(["umount", "-R", str(rootfs / "proc")], check=False)
        shutil.rmtree(work, ignore_errors=True)
    log(f"OS template built in {time.monotonic() - started:.0f}s: {archive}")


def _trim_rootfs(rootfs: Path) -> None:
    """What distribution CT templates leave out: package caches, the host's identity."""
    for path in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        path.unlink()
    for name in ("var/lib/apt/lists",):
        for path in (rootfs / name).glob("*_*"):
            path.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/hostname").write_text("localhost\n")
    # systemd-networkd brings eth0 up with DHCP, as on PVE's Debian/Ubuntu templates.
    network = rootfs / "etc/systemd/network"
    network.mkdir(parents=True, exist_ok=True)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")


# ---------------------------------------------------------------- CT 9000, built by the playbook

TEMPLATE_VMID = 9000
TEMPLATE_INPUTS = ["playbooks/build_template.yml", "roles/pod_template"]


def template_key() -> str:
    """Changes when anything the template is built from changes: then the cache is not used."""
    digest = hashlib.sha256(os_template_key().encode())
    for item in TEMPLATE_INPUTS:
        path = REPO_ROOT / item
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                digest.update(str(file.relative_to(REPO_ROOT)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def template_cache() -> Path:
    return cache_dir() / f"template-{TEMPLATE_VMID}-{template_key()}.tar.zst"


def template_built(lxc_path: Path) -> bool:
    try:
        return bool(json.loads((lxc_path / str(TEMPLATE_VMID) / "pve.json").read_text()).get("template"))
    except (OSError, ValueError):
        return False


def restore_template(lxc_path: Path) -> bool:
    """Put the cached CT 9000 back (before the LXC simulator starts, so it finds it)."""
    cached = template_cache()
    target = lxc_path / str(TEMPLATE_VMID)
    if target.exists() or not cached.exists():
        return False
    partial = lxc_path / f".{TEMPLATE_VMID}.restore"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    run(["tar", "--numeric-owner", "-xpf", str(cached), "-C", str(partial)])
    partial.rename(target)
    return True


def ensure_template(lab_env: dict, lxc_path: Path, log_dir: Path, log) -> None:
    """CT 9000 exists as a template: restored from the cache, or built by playbooks/build_template.yml."""
    if template_built(lxc_path):
        return
    started = time.monotonic()
    log("building template CT 9000 with playbooks/build_template.yml (cached afterwards)")
    env = dict(os.environ)
    env.update(lab_env)
    collections = REPO_ROOT / ".build" / "collections"
    link = collections / "ansible_collections" / "mpanel" / "cloudpods"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(REPO_ROOT, link.parent))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("ANSIBLE_STDOUT_CALLBACK", "default")
    log_file = log_dir / "build_template.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as handle:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/build_template.yml",
             "-e", f"cloudpods_template_ostemplate=local:vztmpl/{OS_TEMPLATE_NAME}"],
            cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False, timeout=1800)
    if result.returncode != 0 or not template_built(lxc_path):
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"building the template failed (log {log_file}):\n{tail}")
    cached = template_cache()
    partial = cached.with_suffix(".partial")
    run(["tar", "--numeric-owner", "-I", "zstd -T0 -3", "-C", str(lxc_path / str(TEMPLATE_VMID)),
         "-cf", str(partial), "."])
    partial.rename(cached)
    for stale in cache_dir().glob(f"template-{TEMPLATE_VMID}-*.tar.zst"):
        if stale != cached:
            stale.unlink()  # built from inputs that changed since
    log(f"template CT 9000 built in {time.monotonic() - started:.0f}s, cached in {cached}")
