"""The Cloud Pods lab: stand-ins for the company's servers on one machine.

    tests/lab/lab up       start every service (idempotent), write .lab/env, .lab/inventory, .lab/site.yml
    tests/lab/lab status   report each service's health (exit 1 if one is down)
    tests/lab/lab restart  restart the services (same ports and secrets, so .lab/env holds)
    tests/lab/lab down     stop what ``up`` started and remove .lab/
    tests/lab/lab up --lxc also real LXC containers (root on Linux): see lxclab.py
    tests/lab/lab lxc-check  exit 0 if this machine can run the lab's real containers

Everything lives in ``.lab/`` at the repository root: a throwaway CA, the server
certificate, each service's config, pid file and log, and ``.lab/env`` with the
seed's settings (``set -a; . .lab/env`` exports them). Each service is a small class
with ``start``/``stop``/``healthy`` and the ``env`` it contributes: the Proxmox VE simulator
(pvesim), a real PowerDNS Authoritative (pdnslab.py), an SMTP server that keeps what it receives
(smtplab.py), a private PostgreSQL (pglab.py) and nginx in front of runner_api (nginxlab.py);
with ``--lxc`` a second simulator whose containers are real (lxclab.py) and Pebble, the ACME test
CA the pods get their certificates from.
"""

import argparse
import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from smtplab import SmtpService  # the lab's SMTP server (aiosmtpd)
from pglab import PostgresService  # the lab's PostgreSQL cluster (runner_api's database)
from nginxlab import NginxService  # the shipped nginx site in front of a test's gunicorn
import lxclab  # the real-container part (--lxc)
from labenv import ENV_FILE, LAB_DIR, REPO_ROOT, free_port  # .lab/env and loopback ports, one way
from pvesim.config import CLOUDPODS_PROV_PRIVILEGES, bridge_acl, numbered_nodes  # the seed's role, SDN.Use
from pvesim import nftfirewall  # the pods' firewall on the lab bridge (nft tables removed at down)

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 20.0
MAX_LAB_NODES = 16
# The checkout as the collection mpanel.cloudpods (tools/lib.sh's link_collection makes the same link).
COLLECTIONS_DIR = REPO_ROOT / ".build" / "collections"
COLLECTION_LINK = COLLECTIONS_DIR / "ansible_collections" / "mpanel" / "cloudpods"
# .lab/inventory: inventory.example for the lab. localhost is listed, so it needs its local
# connection; the interpreter is the one ansible-playbook runs with (the project's venv).
LAB_INVENTORY = """\
# Written by tests/lab/lab up: inventory.example for the lab (this machine is the Proxmox VE node).
#   ansible-playbook -i .lab/inventory -e @.lab/site.yml mpanel.cloudpods.<playbook> -e pod=...
#   CLOUDPODS_INVENTORY=.lab/inventory CLOUDPODS_EXTRA_VARS_FILE=.lab/site.yml cloudpods worker
[proxmox_hosts]
localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"
"""
LAB_SITE_HEADER = """\
---
# Written by tests/lab/lab up: site.example.yml for the lab. The node's paths are under
# .lab/proxmox-host, vzdump and pct are the lab's stand-ins (tests/lab/bin)."""


class LabError(Exception):
    """A lab step failed; the message says which and where to look."""


# ---------------------------------------------------------------- certificates

class CertificateAuthority:
    """A private CA and a loopback server certificate, made with ``cryptography``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.ca_cert = directory / "ca.pem"
        self.ca_key = directory / "ca-key.pem"
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server-key.pem"

    def ensure(self) -> None:
        if all(path.exists() for path in (self.ca_cert, self.ca_key, self.server_cert, self.server_key)):
            return
        try:
            from cryptography import x509  # noqa: F401 - only checking availability
        except ImportError as exc:
            raise LabError("the lab needs the 'cryptography' package (run tools/install or "
                           "use .venv/bin/python)") from exc
        self._issue()

    def _issue(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cloud Pods Lab CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

        def private(key) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        _write(self.ca_key, private(ca_key), secret=True)
        _write(self.server_key, private(server_key), secret=True)
        _write(self.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        _write(self.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))

    def issue_for(self, cert_path: Path, key_path: Path, ips: list[str]) -> None:
        """A server certificate from this CA for the given IP addresses (SANs), e.g. Pebble's listener."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.ensure()
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ips[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
        _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), secret=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the server certificate, as PVE shows ``ssl_fingerprint``."""
        der = ssl.PEM_cert_to_DER_cert(self.server_cert.read_text())
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def link_collection() -> None:
    """``.build/collections/ansible_collections/mpanel/cloudpods`` -> the repository root (relative)."""
    if not COLLECTION_LINK.is_symlink():
        COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
        COLLECTION_LINK.symlink_to(Path("..", "..", "..", ".."))


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Write a whole file at once (a temporary file renamed over it): ``lab up`` run again while tests
    read ``.lab/env`` (README.md's first block does) never shows them a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(partial, flags, 0o600 if secret else 0o644), "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


# ---------------------------------------------------------------- processes

class BackgroundProcess:
    """A daemon started by the lab: pid file, log file, and a marker in its command
    line so ``stop`` never signals an unrelated process that reused the pid."""

    def __init__(self, directory: Path, name: str, marker: str):
        self.pid_file = directory / f"{name}.pid"
        self.log_file = directory / f"{name}.log"
        self.marker = marker

    def start(self, argv: list[str], cwd: Path, env: dict) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        return self.marker in cmdline

    def running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._is_ours(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.1)
            if self._is_ours(pid):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our child (it is when up/down share a run)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------- services

class Service:
    """One stand-in server. Subclasses keep their files under ``.lab/<name>/``."""

    name = "service"

    def __init__(self, lab: "Lab"):
        self.lab = lab
        self.directory = lab.directory / self.name

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict:
        return {}

    def describe(self) -> str:
        return ""


class PveSimService(Service):
    """The Proxmox VE API simulator (``tests/lab/pvesim``) over HTTPS on loopback."""

    name = "pvesim"
    TOKEN_ID = "mpanel-api@pve!mpanel-token"
    NODE = "pve"
    TEMPLATE_VMID = 9000
    STORAGE = "local-lvm"
    BRIDGE = "vmbr0"

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.settings_file = self.directory / "settings.json"
        self.config_file = self.directory / "config.json"
        self.process = BackgroundProcess(self.directory, "pvesim", marker=str(self.config_file))

    def _settings(self) -> dict:
        """Port and secrets survive a restart of the simulator, so .lab/env stays valid."""
        settings = {}
        if self.settings_file.exists():
            settings = json.loads(self.settings_file.read_text())
        settings.setdefault("token_secret", secrets.token_hex(16))
        settings.setdefault("control_key", secrets.token_urlsafe(24))
        settings["port"] = free_port(settings.get("port"))
        _write(self.settings_file, json.dumps(settings, indent=2).encode(), secret=True)
        return settings

    def _load_settings(self) -> dict:
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def start(self) -> None:
        settings = self._settings()
        pki = self.lab.pki
        config = {
            "listen_host": "127.0.0.1", "listen_port": settings["port"],
            "tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key),
            "node": self.NODE, "template_vmid": self.TEMPLATE_VMID, "bridge": self.BRIDGE,
            "control_key": settings["control_key"],
            "storage_root": str(self.directory / "storage"),
            "log_file": str(self.directory / "pvesim-app.log"),
            # exactly what README.md's Proxmox VE setup grants: the seed's CloudPodsProv role at /
            # and SDN.Use on the bridge, so a missing privilege shows up here before production
            "tokens": [{"token_id": self.TOKEN_ID, "secret": settings["token_secret"],
                        "privs": CLOUDPODS_PROV_PRIVILEGES, "acl": bridge_acl(self.BRIDGE)}],
            "default_task_duration": 0.2, "dhcp_delay": 1.0,
            # The datacenter firewall on (a fresh PVE has it off): without it PVE enforces no pod's
            # firewall (pod_firewall then warns, enforced=false). Back on after every /_lab/reset.
            "cluster_firewall": {"enable": 1},
        }
        config.update(self.lab.cluster_config(self.NODE))
        config.update(self.extra_config())
        _write(self.config_file, json.dumps(config, indent=2).encode(), secret=True)
        env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process.start([sys.executable, "-m", "pvesim", "--config", str(self.config_file)],
                           cwd=HERE, env=env)

    def extra_config(self) -> dict:
        """Simulator settings a subclass adds (the LXC one: its backend)."""
        return {}

    def _has_wanted_nodes(self) -> bool:
        """A running simulator with another node count than asked for (``--nodes``) is restarted."""
        try:
            running = json.loads(self.config_file.read_text()).get("nodes")
        except (OSError, ValueError):
            return False
        return running == self.lab.cluster_config(self.NODE).get("nodes")

    def stop(self) -> None:
        self.process.stop()

    def healthy(self) -> bool:
        settings = self._load_settings()
        if not settings or not self.process.running() or not self._has_wanted_nodes():
            return False
        request = urllib.request.Request(f"https://127.0.0.1:{settings['port']}/_lab/health",
                                         headers={"X-Lab-Key": settings["control_key"]})
        try:
            with urllib.request.urlopen(request, timeout=2, context=self.lab.pki.client_context()) as reply:
                return json.load(reply)["data"]["ok"] is True
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            return False

    def env(self) -> dict:
        settings = self._load_settings()
        base = f"https://127.0.0.1:{settings['port']}"
        return {
            "PROXMOX_API_URL": f"{base}/api2/json",
            "PROXMOX_API_TOKEN_ID": self.TOKEN_ID,
            "PROXMOX_API_TOKEN_SECRET": settings["token_secret"],
            "PROXMOX_NODE_NAME": self.NODE,
            "CLOUDPODS_LAB_NODES": str(self.lab.nodes),
            "PROXMOX_CLOUDPOD_TEMPLATE_ID": str(self.TEMPLATE_VMID),
            "PROXMOX_CLOUDPOD_STORAGE": self.STORAGE,
            "PROXMOX_CLOUDPOD_BRIDGE": self.BRIDGE,
            "PROXMOX_CA_BUNDLE": str(self.lab.pki.ca_cert),
            "PVESIM_CONTROL_URL": f"{base}/_lab",
            "PVESIM_CONTROL_KEY": settings["control_key"],
            # The simulator's containers are records, there is nothing to enter: the playbooks
            # skip pod_first_boot here (the LXC lab, .lab/env.lxc, turns it on).
            "CLOUDPODS_FIRST_BOOT": "false",
        }

    def describe(self) -> str:
        settings = self._load_settings()
        return (f"https://127.0.0.1:{settings.get('port')} pid {self.process.pid()} "
                f"log {self.process.log_file}")

    def diagnostics(self) -> str:
        return self.process.log_tail()


PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


class PowerDnsService(Service):
    """PowerDNS Authoritative (Debian's pdns-server + pdns-backend-sqlite3) on loopback.

    Its own sqlite database (created from the package's schema on first start, kept across
    restarts), DNS on a free UDP+TCP port, the HTTP API on another, a random API key. Caches are
    off so that a test sees a change over DNS at once; ``security-poll-suffix`` is empty so the
    server makes no outbound query. Every API request is logged (``loglevel=6``), which the tests
    and the benchmark read to count requests.
    """

    name = "powerdns"
    SERVER_ID = "localhost"
    SOA_CONTENT = "ns1.example.net. hostmaster.@ 0 10800 3600 604800 3600"

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.settings_file = self.directory / "settings.json"
        self.config_file = self.directory / "pdns.conf"
        self.database = self.directory / "pdns.sqlite3"
        # The config dir in the command line is the marker: it names this lab's instance only.
        self.process = BackgroundProcess(self.directory, "pdns", marker=f"--config-dir={self.directory}")

    @staticmethod
    def binary() -> str:
        found = shutil.which("pdns_server")
        if not found and os.path.exists("/usr/sbin/pdns_server"):
            found = "/usr/sbin/pdns_server"  # sbin is not on every user's PATH
        if not found:
            raise LabError("pdns_server not found: install the Debian packages pdns-server and pdns-backend-sqlite3 "
                           "(tools/install does)")
        return found

    def _settings(self) -> dict:
        settings = self._load_settings()
        settings.setdefault("api_key", secrets.token_urlsafe(24))
        settings["api_port"] = free_port(settings.get("api_port"))
        settings["dns_port"] = free_port(settings.get("dns_port"), udp=True)
        while settings["dns_port"] == settings["api_port"]:
            settings["dns_port"] = free_port(udp=True)
        _write(self.settings_file, json.dumps(settings, indent=2).encode(), secret=True)
        return settings

    def _load_settings(self) -> dict:
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def _create_database(self) -> None:
        if self.database.exists():
            return
        if not PDNS_SCHEMA.exists():
            raise LabError(f"{PDNS_SCHEMA} is missing: install the Debian package pdns-backend-sqlite3")
        import sqlite3  # pylint: disable=import-outside-toplevel
        partial = self.database.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        connection = sqlite3.connect(partial)
        try:
            connection.executescript(PDNS_SCHEMA.read_text())
            connection.commit()
        finally:
            connection.close()
        partial.rename(self.database)

    def start(self) -> None:
        binary = self.binary()
        settings = self._settings()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._create_database()
        config = "\n".join([
            "# Written by tests/lab/lab.py",
            "launch=gsqlite3",
            f"gsqlite3-database={self.database}",
            "gsqlite3-pragma-synchronous=0",
            "local-address=127.0.0.1",
            f"local-port={settings['dns_port']}",
            "api=yes",
            f"api-key={settings['api_key']}",
            "webserver=yes",
            "webserver-address=127.0.0.1",
            f"webserver-port={settings['api_port']}",
            "webserver-allow-from=127.0.0.1,::1",
            "webserver-loglevel=normal",
            "loglevel=6",
            "security-poll-suffix=",
            f"socket-dir={self.directory}",
            f"default-soa-content={self.SOA_CONTENT}",
            "cache-ttl=0",
            "negquery-cache-ttl=0",
            "query-cache-ttl=0",
            "",
        ])
        _write(self.config_file, config.encode(), secret=True)
        self.process.start([binary, f"--config-dir={self.directory}", "--daemon=no", "--guardian=no",
                            "--disable-syslog", "--write-pid=no"], cwd=self.directory, env=dict(os.environ))

    def stop(self) -> None:
        self.process.stop()

    def healthy(self) -> bool:
        settings = self._load_settings()
        if not settings or not self.process.running():
            return False
        request = urllib.request.Request(
            f"http://127.0.0.1:{settings['api_port']}/api/v1/servers/{self.SERVER_ID}",
            headers={"X-API-Key": settings["api_key"], "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                return json.load(reply).get("id") == self.SERVER_ID
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def env(self) -> dict:
        settings = self._load_settings()
        return {
            "POWERDNS_API_URL": f"http://127.0.0.1:{settings['api_port']}",
            "POWERDNS_API_KEY": settings["api_key"],
            "POWERDNS_SERVER_ID": self.SERVER_ID,
            "POWERDNS_DNS_PORT": str(settings["dns_port"]),
        }

    def describe(self) -> str:
        settings = self._load_settings()
        return (f"API http://127.0.0.1:{settings.get('api_port')} DNS 127.0.0.1:{settings.get('dns_port')} "
                f"pid {self.process.pid()} log {self.process.log_file}")

    def diagnostics(self) -> str:
        return self.process.log_tail()


class PowerDnsLxcService(PowerDnsService):
    """A second PowerDNS, for the real-container part (``.lab/env.lxc``) and the ACME server.

    The real-container lane runs beside the simulator lane; tests of the simulator lane count the
    zone writes PowerDNS logs, and a ``POST /zones`` line does not name its zone. With a server of
    its own, a real pod's zone never shows up in the other lane's counts.
    """

    name = "powerdns-lxc"
    lxc_only = True


# ---------------------------------------------------------------- the lab

class LxcNetService(Service):
    """The lab bridge (lxclab.LabNetwork: cpXXXXXX, 10.98.N.1/24) with dnsmasq answering DHCP on it, nothing else."""

    name = "lxcnet"
    lxc_only = True

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.leases = self.directory / "leases"
        self.process = BackgroundProcess(self.directory, "dnsmasq", marker=f"--dhcp-leasefile={self.leases}")

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lxclab.bridge_up(self.lab.network)
        self.process.start(lxclab.dnsmasq_argv(self.directory, self.lab.network), cwd=self.directory,
                           env=dict(os.environ))

    def stop(self) -> None:
        self.process.stop()
        # the pods' firewall (pvesim/nftfirewall.py): this lab's nft tables, named after its bridge
        nftfirewall.remove(nftfirewall.table_name(self.lab.network.bridge))

    def healthy(self) -> bool:
        return self.process.running() and Path(f"/sys/class/net/{self.lab.network.bridge}").exists()

    def env(self) -> dict:
        return {"LAB_BRIDGE": self.lab.network.bridge, "LAB_BRIDGE_NETWORK": self.lab.network.network,
                "LAB_DHCP_LEASES": str(self.leases)}

    def describe(self) -> str:
        return f"bridge {self.lab.network.bridge} {self.lab.network.network}, dnsmasq pid {self.process.pid()}"

    def diagnostics(self) -> str:
        return self.process.log_tail()


class SshdService(Service):
    """OpenSSH on loopback: the 'Proxmox host' login for pct (forced command, lab key only)."""

    name = "sshd"
    lxc_only = True

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.settings_file = self.directory / "settings.json"
        self.config_file = self.directory / "sshd_config"
        self.process = BackgroundProcess(self.directory, "sshd", marker=str(self.config_file))

    def _load_settings(self) -> dict:
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def start(self) -> None:
        settings = self._load_settings()
        settings["port"] = free_port(settings.get("port"))
        self.directory.mkdir(parents=True, exist_ok=True)
        _write(self.settings_file, json.dumps(settings).encode())
        lxclab.sshd_config(self.directory, settings["port"], self.lab.lxc_path)
        self.process.start(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config_file)], cwd=self.directory,
                           env=dict(os.environ))

    def stop(self) -> None:
        self.process.stop()

    def healthy(self) -> bool:
        port = self._load_settings().get("port")
        if not port or not self.process.running():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                return connection.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def env(self) -> dict:
        return {"PROXMOX_SSH_HOST": "127.0.0.1", "PROXMOX_SSH_PORT": str(self._load_settings().get("port")),
                "PROXMOX_SSH_USER": "root", "PROXMOX_SSH_KEY_FILE": str(self.directory / "id_ed25519"),
                # The lab's host key is new on every machine; a real site keeps checking on.
                "PROXMOX_SSH_HOST_KEY_CHECKING": "false"}

    def describe(self) -> str:
        return f"127.0.0.1:{self._load_settings().get('port')} pid {self.process.pid()} log {self.process.log_file}"

    def diagnostics(self) -> str:
        return self.process.log_tail()


class PebbleService(Service):
    """Let's Encrypt's test CA, Pebble (Debian's ``pebble``), for the pods' certificates (role pod_https).

    It listens on the lab bridge's gateway address, the one address both sides have: the pods
    reach its ACME directory there, and the tests and the host reach it too. Its listener
    certificate comes from the lab CA (Debian's package ships none), with the gateway address and
    127.0.0.1 as SANs; pods trust that CA for the directory's TLS only (CLOUDPODS_ACME_CA_BUNDLE).
    Validation is real: ``-dnsserver`` is the lab's PowerDNS, so Pebble resolves the pod's domain
    through the zone pod_dns published, and fetches the HTTP-01 challenge from the pod on port 80.
    Pebble makes new roots on every start: tests read the current one from the management port
    (``LAB_PEBBLE_MANAGEMENT_URL``/roots/0).
    """

    name = "pebble"
    lxc_only = True

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.settings_file = self.directory / "settings.json"
        self.config_file = self.directory / "pebble-config.json"
        self.cert = self.directory / "listener.pem"
        self.key = self.directory / "listener-key.pem"
        self.process = BackgroundProcess(self.directory, "pebble", marker=str(self.config_file))

    def _load_settings(self) -> dict:
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def start(self) -> None:
        binary = shutil.which("pebble") or "/usr/bin/pebble"
        if not os.path.exists(binary):
            raise LabError("pebble not found: install the Debian package pebble (tools/install does)")
        settings = self._load_settings()
        settings["port"] = free_port(settings.get("port"))
        settings["management_port"] = free_port(settings.get("management_port"))
        while settings["management_port"] == settings["port"]:
            settings["management_port"] = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        _write(self.settings_file, json.dumps(settings).encode())
        gateway = self.lab.network.gateway
        if not self.cert.exists():
            self.lab.pki.issue_for(self.cert, self.key, [gateway, "127.0.0.1"])
        config = {"pebble": {
            "listenAddress": f"{gateway}:{settings['port']}",
            "managementListenAddress": f"{gateway}:{settings['management_port']}",
            "certificate": str(self.cert), "privateKey": str(self.key),
            # the VA fetches http://<domain>/.well-known/acme-challenge/ from the pod on the real port
            "httpPort": 80, "tlsPort": 443,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        _write(self.config_file, json.dumps(config, indent=2).encode())
        # the VA resolves the pods' names, whose zones are on the real-container part's PowerDNS
        dns_port = next(service for service in self.lab.services
                        if isinstance(service, PowerDnsLxcService))._load_settings()["dns_port"]
        env = dict(os.environ,
                   # no random 0-5 s sleep before each validation: the tests' timing stays deterministic
                   PEBBLE_VA_NOSLEEP="1",
                   # Pebble rejects 5 % of good nonces by default to exercise clients' retries; certbot
                   # retries, but a test must not depend on that chance
                   PEBBLE_WFE_NONCEREJECT="0")
        self.process.start([binary, "-config", str(self.config_file), "-dnsserver", f"127.0.0.1:{dns_port}"],
                           cwd=self.directory, env=env)

    def stop(self) -> None:
        self.process.stop()

    def healthy(self) -> bool:
        settings = self._load_settings()
        if not settings.get("port") or not self.process.running():
            return False
        try:
            with urllib.request.urlopen(f"https://{self.lab.network.gateway}:{settings['port']}/dir", timeout=2,
                                        context=self.lab.pki.client_context()) as reply:
                return "newOrder" in json.load(reply)
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def env(self) -> dict:
        settings = self._load_settings()
        gateway = self.lab.network.gateway
        return {"CLOUDPODS_ACME_DIRECTORY": f"https://{gateway}:{settings.get('port')}/dir",
                "CLOUDPODS_ACME_CA_BUNDLE": str(self.lab.pki.ca_cert),
                "LAB_PEBBLE_MANAGEMENT_URL": f"https://{gateway}:{settings.get('management_port')}"}

    def describe(self) -> str:
        settings = self._load_settings()
        return (f"ACME https://{self.lab.network.gateway}:{settings.get('port')}/dir management "
                f":{settings.get('management_port')} pid {self.process.pid()} log {self.process.log_file}")

    def diagnostics(self) -> str:
        return self.process.log_tail()


class PveSimLxcService(PveSimService):
    """A second simulator whose containers are real LXC containers (tests/lab/pvesim/lxcbackend.py)."""

    name = "pvesim-lxc"
    lxc_only = True

    def extra_config(self) -> dict:
        return {
            "backend": "lxc", "seed_template": False,
            "vztmpl_dir": str(self.lab.vztmpl_dir),
            "lxc": {"lxc_path": str(self.lab.lxc_path), "bridge": self.lab.network.bridge,
                    "leases_file": str(self.lab.directory / "lxcnet" / "leases")},
            # Real tasks take real time now; no artificial durations on top.
            "default_task_duration": 0.0, "dhcp_delay": 0.0,
        }

    def env(self) -> dict:
        values = super().env()
        values["LAB_LXC_PATH"] = str(self.lab.lxc_path)
        values["CLOUDPODS_FIRST_BOOT"] = "true"
        values["CLOUDPODS_TEMPLATE_OSTEMPLATE"] = f"local:vztmpl/{lxclab.OS_TEMPLATE_NAME}"
        return values

    def stop(self) -> None:
        super().stop()

    def stop_containers(self) -> None:
        """Stop every lab container (``down``): nothing may keep the lab's files busy."""
        if not self.lab.lxc_path.is_dir():
            return
        for entry in self.lab.lxc_path.iterdir():
            if entry.name.isdigit():
                subprocess.run(["lxc-stop", "-P", str(self.lab.lxc_path), "-n", entry.name, "-k"],
                               capture_output=True, check=False, timeout=60)


class AwxSimService(Service):
    """The AWX API v2 stand-in (``tests/lab/awxsim``) over HTTP on loopback, its jobs run by ansible-runner.

    One superuser ``admin`` (password and a write token are random, kept across restarts) and the
    projects root ``.lab/awxsim/projects`` holding one manual project directory, ``cloudpods``: a link
    to this checkout, so a job template's playbook is any path of it (``playbooks/provision.yml``,
    ``tests/support/awx_project/ok.yml``). The jobs' environment (AWX's ``AWX_TASK_ENV``) carries the
    lab's site settings that are not credentials (the node name, template, storage, bridge, the lab
    flag, the collection path); everything secret comes from the job's credentials. Plain HTTP: it
    listens on 127.0.0.1 only, and awx.awx and awxkit then need no CA of the lab.
    """

    name = "awxsim"
    PROJECT = "cloudpods"
    SITE_SETTINGS = ("PROXMOX_NODE_NAME", "PROXMOX_CLOUDPOD_TEMPLATE_ID", "PROXMOX_CLOUDPOD_STORAGE",
                     "PROXMOX_CLOUDPOD_BRIDGE", "CLOUDPODS_FIRST_BOOT")

    def __init__(self, lab: "Lab"):
        super().__init__(lab)
        self.settings_file = self.directory / "settings.json"
        self.config_file = self.directory / "config.json"
        self.process = BackgroundProcess(self.directory, "awxsim", marker=str(self.config_file))

    def _settings(self) -> dict:
        settings = self._load_settings()
        for key in ("control_key", "admin_password", "admin_token"):
            settings.setdefault(key, secrets.token_urlsafe(24))
        settings["port"] = free_port(settings.get("port"))
        _write(self.settings_file, json.dumps(settings, indent=2).encode(), secret=True)
        return settings

    def _load_settings(self) -> dict:
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def start(self) -> None:
        settings = self._settings()
        projects = self.directory / "projects"
        projects.mkdir(parents=True, exist_ok=True)
        link = projects / self.PROJECT
        if not link.is_symlink():
            link.symlink_to(REPO_ROOT)
        (self.directory / "jobs").mkdir(mode=0o700, exist_ok=True)
        site = {}
        for service in self.lab.services:
            if isinstance(service, PveSimService) and not isinstance(service, PveSimLxcService):
                site = {key: value for key, value in service.env().items() if key in self.SITE_SETTINGS}
        task_env = dict(site, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_DIR), CLOUDPODS_LAB="true")
        config = {"listen_host": "127.0.0.1", "listen_port": settings["port"], "control_key": settings["control_key"],
                  "users": [{"username": "admin", "password": settings["admin_password"], "is_superuser": True}],
                  "tokens": [{"token": settings["admin_token"], "user": "admin", "scope": "write"}],
                  "projects_root": str(projects), "jobs_dir": str(self.directory / "jobs"), "awx_task_env": task_env}
        _write(self.config_file, json.dumps(config, indent=2).encode(), secret=True)
        env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process.start([sys.executable, "-m", "awxsim", "--config", str(self.config_file)], cwd=HERE, env=env)

    def stop(self) -> None:
        self.process.stop()

    def healthy(self) -> bool:
        settings = self._load_settings()
        if not settings or not self.process.running():
            return False
        request = urllib.request.Request(f"http://127.0.0.1:{settings['port']}/_lab/health",
                                         headers={"X-Lab-Key": settings["control_key"]})
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                return json.load(reply)["ok"] is True
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            return False

    def env(self) -> dict:
        settings = self._load_settings()
        base = f"http://127.0.0.1:{settings['port']}"
        # awx.awx (controller_api.py) and awxkit's awx CLI both read CONTROLLER_HOST and CONTROLLER_OAUTH_TOKEN
        return {"CONTROLLER_HOST": base, "CONTROLLER_OAUTH_TOKEN": settings["admin_token"],
                "CONTROLLER_VERIFY_SSL": "false",
                "AWXSIM_CONTROL_URL": f"{base}/_lab", "AWXSIM_CONTROL_KEY": settings["control_key"],
                "AWXSIM_PROJECT_LOCAL_PATH": self.PROJECT}

    def describe(self) -> str:
        return f"http://127.0.0.1:{self._load_settings().get('port')} pid {self.process.pid()} log {self.process.log_file}"

    def diagnostics(self) -> str:
        return self.process.log_tail()


class Lab:
    """All services, started in order and stopped in reverse.

    With ``lxc`` (``lab up --lxc``, remembered in ``.lab/lxc.enabled``), more services make
    containers real: the bridge with DHCP, an sshd for pct, a second PowerDNS, Pebble, and the
    LXC-backed simulator, whose
    settings go to ``.lab/env.lxc`` (the same file as ``.lab/env`` with PROXMOX_* pointing to it, and
    POWERDNS_* to a PowerDNS of its own).
    """

    SERVICE_CLASSES = [PveSimService, PowerDnsService, SmtpService, PostgresService, NginxService, AwxSimService]
    LXC_SERVICE_CLASSES = [LxcNetService, SshdService, PowerDnsLxcService, PebbleService, PveSimLxcService]

    def __init__(self, directory: Path = LAB_DIR, lxc: bool | None = None, nodes: int | None = None):
        self.directory = directory
        self.pki = CertificateAuthority(directory)
        self.lxc_marker = directory / "lxc.enabled"
        self.lxc = self.lxc_marker.exists() if lxc is None else lxc
        self.nodes_file = directory / "nodes"
        self.nodes = self._node_count(nodes)
        self.lxc_path = directory / "lxc" / "containers"
        self.vztmpl_dir = directory / "lxc" / "vztmpl"
        self.network = lxclab.LabNetwork(directory)
        classes = self.SERVICE_CLASSES + (self.LXC_SERVICE_CLASSES if self.lxc else [])
        self.services = [cls(self) for cls in classes]

    def _node_count(self, asked: int | None) -> int:
        """``--nodes``, else ``CLOUDPODS_LAB_NODES``, else what ``up`` remembered, else 1."""
        if asked is None and os.environ.get("CLOUDPODS_LAB_NODES"):
            try:
                asked = int(os.environ["CLOUDPODS_LAB_NODES"])
            except ValueError as exc:
                raise LabError("CLOUDPODS_LAB_NODES must be a number of nodes") from exc
        if asked is None and self.nodes_file.exists():
            asked = int(self.nodes_file.read_text().strip() or 1)
        asked = 1 if asked is None else asked
        if not 1 <= asked <= MAX_LAB_NODES:
            raise LabError(f"--nodes: 1 to {MAX_LAB_NODES}")
        return asked

    def cluster_config(self, first: str) -> dict:
        """The simulators' ``nodes`` (``first``, pve2, pve3, ...) and, for more than one node, the
        shared storage ``shared-nfs`` a CT needs to be cloned to another node. One node: nothing,
        the simulator's single-node default."""
        if self.nodes == 1:
            return {}
        return {"nodes": numbered_nodes(first, self.nodes),
                "shared_storages": [{"storage": "shared-nfs", "type": "nfs",
                                     "content": "rootdir,images,backup"}]}

    def up(self) -> bool:
        """Start what is not healthy; return True if everything already was."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        _write(self.nodes_file, f"{self.nodes}\n".encode())
        if self.lxc:
            missing = lxclab.lxc_missing()
            if missing:
                raise LabError(f"--lxc: {missing}")
            self.lxc_marker.touch()
            self.lxc_path.mkdir(parents=True, exist_ok=True)
            lxclab.ensure_os_template(self.vztmpl_dir, log=lambda text: print(f"lab: {text}", flush=True))
            lxclab.restore_template(self.lxc_path)
        already = True
        for service in self.services:
            if service.healthy():
                continue
            already = False
            service.stop()  # clear a stale pid file or a half-dead daemon first
            service.start()
            self._wait_healthy(service)
        self.write_env()
        if self.lxc:
            lxclab.ensure_template(self.env(lxc=True), self.lxc_path, self.directory / "lxc",
                                   log=lambda text: print(f"lab: {text}", flush=True))
        return already

    def _wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if service.healthy():
                return
            time.sleep(0.2)
        details = getattr(service, "diagnostics", lambda: "")()
        service.stop()
        raise LabError(f"{service.name} did not become healthy in {START_TIMEOUT:.0f}s\n{details}")

    def restart(self) -> None:
        """Restart every service with the same ports and secrets (new code, same env)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        for service in self.services:
            service.stop()
            service.start()
            self._wait_healthy(service)
        self.write_env()

    def down(self) -> None:
        for service in reversed(self.services):
            if isinstance(service, PveSimLxcService):
                service.stop_containers()
            service.stop()
        if self.lxc:
            lxclab.bridge_down(self.network)
        shutil.rmtree(self.directory, ignore_errors=True)

    def status(self) -> dict:
        return {service.name: service.healthy() for service in self.services}

    def env(self, lxc: bool = False) -> dict:
        """Every service's settings; with ``lxc`` the LXC services' override (PROXMOX_* of pvesim-lxc)."""
        values = {}
        for service in self.services:
            if lxc or not getattr(service, "lxc_only", False):
                values.update(service.env())
        # The collection as it is in this checkout, for ansible-playbook and runner_api alike
        # (tools/lib.sh sets the same): no stale copy in ~/.ansible/collections is ever used.
        values["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS_DIR)
        # The playbooks' explicit lab flag (cloudpods_lab, vars/settings.yml): only the lab sets it, and
        # with it cloudpods_company_domain may stay unset (the placeholder example.net).
        values["CLOUDPODS_LAB"] = "true"
        return values

    def write_env(self) -> None:
        """``.lab/env`` (and ``.lab/env.lxc``), then the lab's inventory and site file beside them."""
        link_collection()
        files = [("env", False)] + ([("env.lxc", True)] if self.lxc else [])
        for name, lxc in files:
            lines = [f"# Written by tests/lab/lab up; load with: set -a; . .lab/{name}; set +a"]
            lines += [f"{key}={shlex.quote(value)}" for key, value in self.env(lxc).items()]
            _write(self.directory / name, ("\n".join(lines) + "\n").encode(), secret=True)
        self.write_site_files()

    def write_site_files(self) -> None:
        """``.lab/inventory`` and ``.lab/site.yml``: inventory.example and site.example.yml for the lab.

        This machine is the Proxmox VE node (local connection, as root or not); its backup root,
        cron, state and lib directories are under ``.lab/proxmox-host``; vzdump and pct are the
        lab's stand-ins, which reach the simulator of the environment they run in (``.lab/env`` or
        ``.lab/env.lxc``), so one site file serves both.
        """
        host = self.directory / "proxmox-host"
        for name in ("backup", "cron.d", "lib"):  # they exist on every node (the backup storage: mounted)
            (host / name).mkdir(parents=True, exist_ok=True)
        _write(self.directory / "inventory", LAB_INVENTORY.encode())
        site = {
            "cloudpods_backup_root": str(host / "backup"),
            "cloudpods_cron_dir": str(host / "cron.d"),
            "cloudpods_state_dir": str(host / "state"),
            "cloudpods_lib_dir": str(host / "lib"),
            "cloudpods_backup_lock_dir": str(host / "run" / "cloudpods-backup"),
            "cloudpods_vzdump": str(HERE / "bin" / "vzdump"),
            "cloudpods_pct": str(HERE / "bin" / "pct"),
            "cloudpods_company_domain": "example.net",
        }
        lines = [LAB_SITE_HEADER] + [f"{key}: {json.dumps(value)}" for key, value in site.items()]
        _write(self.directory / "site.yml", ("\n".join(lines) + "\n").encode())


@contextmanager
def exclusive(directory: Path):
    """One lab command at a time per checkout (parallel test runs call ``up`` too)."""
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"cloudpods-lab-{digest}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tests/lab/lab", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--nodes", type=int, default=None,
                        help="simulate a cluster of N nodes (pve, pve2, ...; CLOUDPODS_LAB_NODES); "
                             "remembered until 'down'")
    parser.add_argument("--lxc", action="store_true",
                        help="also run real LXC containers (root, Linux): bridge+DHCP, sshd for pct, "
                             "the LXC-backed simulator, template CT 9000; remembered until 'down'")
    args = parser.parse_args(argv)
    try:
        lab = Lab(lxc=True if args.lxc else None, nodes=args.nodes)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    try:
        with exclusive(lab.directory):
            return COMMANDS[args.command](lab)
    except (LabError, RuntimeError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


def _cmd_up(lab: Lab) -> int:
    already = lab.up()
    print("lab already up" if already else "lab up")
    for service in lab.services:
        print(f"  {service.name}: {service.describe()}")
    print(f"  env: {ENV_FILE}  (set -a; . {ENV_FILE.relative_to(REPO_ROOT)}; set +a)")
    print(f"  playbooks: -i {(lab.directory / 'inventory').relative_to(REPO_ROOT)}"
          f" -e @{(lab.directory / 'site.yml').relative_to(REPO_ROOT)}"
          "  (runner_api: CLOUDPODS_INVENTORY, CLOUDPODS_EXTRA_VARS_FILE)")
    if lab.lxc:
        print(f"  env with real containers: {lab.directory / 'env.lxc'}  (PROXMOX_* of pvesim-lxc, PROXMOX_SSH_*)")
    return 0


def _cmd_restart(lab: Lab) -> int:
    lab.restart()
    print("lab restarted")
    return 0


def _cmd_down(lab: Lab) -> int:
    lab.down()
    print("lab down")
    return 0


def _cmd_status(lab: Lab) -> int:
    if not lab.directory.exists():
        print("lab is down")
        return 1
    states = lab.status()
    for service in lab.services:
        state = "healthy" if states[service.name] else "NOT healthy"
        print(f"{service.name}: {state}  {service.describe()}")
    return 0 if all(states.values()) else 1


def _cmd_env(lab: Lab) -> int:
    if not ENV_FILE.exists():
        print("lab is down", file=sys.stderr)
        return 1
    sys.stdout.write(ENV_FILE.read_text())
    return 0


def _cmd_lxc_check(_lab: Lab) -> int:
    missing = lxclab.lxc_missing()
    print(f"no real containers here: {missing}" if missing else "real containers: yes (root, lxc, dnsmasq, debootstrap, sshd)")
    return 1 if missing else 0


COMMANDS = {"lxc-check": _cmd_lxc_check, "up": _cmd_up, "down": _cmd_down, "restart": _cmd_restart, "status": _cmd_status,
            "env": _cmd_env}

if __name__ == "__main__":
    sys.exit(main())
