"""The lab's nginx: the shipped site file ``deploy/nginx/cloudpods-api.conf``, run on loopback.

As a lab service (``NginxService``, registered in ``lab.py``) it runs Debian's nginx in the
foreground with a configuration GENERATED from the shipped site: the same file, with only its
``listen`` lines (-> 127.0.0.1:<free port>), the upstream's ``server 127.0.0.1:8080`` (-> another
free port, where a test starts gunicorn), the certificate (-> the lab's loopback certificate) and
the log paths (-> ``.lab/nginx/``) replaced. Each replacement must match exactly as often as
expected, so a change to the site file that the lab cannot follow fails here rather than testing
something else. Around it, a minimal main ``nginx.conf`` (foreground, pid, temp paths in
``.lab/nginx/``).

``.lab/env`` gets ``CLOUDPODS_NGINX_URL`` (https://127.0.0.1:<port>), ``CLOUDPODS_NGINX_UPSTREAM_PORT``,
``CLOUDPODS_NGINX_CA_BUNDLE`` (the lab CA), ``CLOUDPODS_NGINX_ACCESS_LOG`` and
``CLOUDPODS_NGINX_ERROR_LOG``. Nothing answers on the upstream port until a test starts gunicorn
there (tests/integration/test_slow_clients.py).

A test without the lab's nginx can run its own with ``NginxInstance`` (same generator).
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from labenv import free_port  # the lab's one free-port helper

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SITE_FILE = REPO_ROOT / "deploy" / "nginx" / "cloudpods-api.conf"


class NginxConfigError(Exception):
    """The shipped site file no longer has a line the lab replaces."""


def nginx_binary():
    found = shutil.which("nginx")
    if not found and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"  # sbin is not on every user's PATH
    if not found:
        raise NginxConfigError("nginx not found: install the Debian package nginx (tools/install does)")
    return found


def render_site(site_text, listen_port, upstream_port, cert, key, directory):
    """The shipped site with the lab's ports, certificate and log paths."""
    directory = Path(directory)
    replacements = [
        # (pattern, replacement, how many times the site file must have it)
        (r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{listen_port} ssl;", 1),
        (r"^\s*listen \[::\]:443 ssl;\n", "", 1),
        (r"^(\s*)server 127\.0\.0\.1:8080;", rf"\1server 127.0.0.1:{upstream_port};", 1),
        (r"^(\s*)ssl_certificate \S+;", rf"\1ssl_certificate {cert};", 1),
        (r"^(\s*)ssl_certificate_key \S+;", rf"\1ssl_certificate_key {key};", 1),
        (r"^(\s*)access_log \S+ cloudpods_api;", rf"\1access_log {directory / 'access.log'} cloudpods_api;", 1),
        (r"^(\s*)error_log \S+;", rf"\1error_log {directory / 'error.log'};", 1),
    ]
    text = site_text
    for pattern, replacement, count in replacements:
        text, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if found != count:
            raise NginxConfigError(f"{SITE_FILE}: expected {count} line(s) matching {pattern!r}, found {found}")
    return text


def render_main(directory, site_path):
    """A minimal main configuration around the site (what Debian's nginx.conf gives it)."""
    directory = Path(directory)
    temp = directory / "tmp"
    lines = [
        "# Written by tests/lab/nginxlab.py around deploy/nginx/cloudpods-api.conf",
        "daemon off;",
        "worker_processes 1;",
        # Under root the workers would become nobody, who may not enter a private temp directory:
        # they stay the lab's own user (a loopback-only test server).
        *(["user root root;"] if os.geteuid() == 0 else []),
        f"pid {directory / 'nginx.pid'};",
        f"error_log {directory / 'error.log'};",
        "events { worker_connections 1024; }",
        "http {",
        "    default_type application/octet-stream;",
        f"    access_log {directory / 'other-access.log'};",
    ]
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append(f"    {kind}_temp_path {temp / kind};")
    lines += [f"    include {site_path};", "}", ""]
    return "\n".join(lines)


class NginxInstance:
    """nginx running the shipped site from ``directory``: config, pid, logs and temp files there."""

    def __init__(self, directory, ca_cert, cert, key):
        self.directory = Path(directory).resolve()
        self.ca_cert = Path(ca_cert).resolve()
        self.cert = Path(cert).resolve()
        self.key = Path(key).resolve()
        self.settings_file = self.directory / "settings.json"
        self.config_file = self.directory / "nginx.conf"
        self.site_file = self.directory / "cloudpods-api.conf"
        self.pid_file = self.directory / "nginx.pid"
        self.log_file = self.directory / "nginx.log"
        self.access_log = self.directory / "access.log"
        self.error_log = self.directory / "error.log"

    def load_settings(self):
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def _settings(self):
        """The ports survive a restart, so .lab/env stays valid."""
        settings = self.load_settings()
        settings["port"] = free_port(settings.get("port"))
        settings["upstream_port"] = settings.get("upstream_port") or free_port()
        while settings["upstream_port"] == settings["port"]:
            settings["upstream_port"] = free_port()
        self.settings_file.write_text(json.dumps(settings, indent=2))
        return settings

    def write_config(self):
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        settings = self._settings()
        self.site_file.write_text(render_site(SITE_FILE.read_text(), settings["port"], settings["upstream_port"],
                                              self.cert, self.key, self.directory))
        self.config_file.write_text(render_main(self.directory, self.site_file))
        return settings

    def pid(self):
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            return None
        # The config path in the master's command line marks it as this instance's.
        return pid if str(self.config_file) in cmdline else None

    def start(self):
        binary = nginx_binary()
        self.write_config()
        argv = [binary, "-e", str(self.error_log), "-p", str(self.directory), "-c", str(self.config_file)]
        check = subprocess.run(argv + ["-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise NginxConfigError(f"nginx -t on the generated {self.config_file} failed:\n{check.stderr}")
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(argv, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        # nginx writes the pid file itself a moment later; write it now so stop() finds it meanwhile.
        self.pid_file.write_text(f"{process.pid}\n")
        return process

    def stop(self):
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # fast shutdown of the master and its worker
            deadline = time.monotonic() + 10
            while self.pid() == pid and time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            if self.pid() == pid:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def healthy(self):
        """Running and completing a TLS handshake with the lab's certificate (no request: nothing is logged)."""
        port = self.load_settings().get("port")
        if not port or self.pid() is None:
            return False
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return True
        except (OSError, ssl.SSLError):
            return False

    def wait_healthy(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            time.sleep(0.1)
        return False

    def env(self):
        settings = self.load_settings()
        return {"CLOUDPODS_NGINX_URL": f"https://127.0.0.1:{settings.get('port')}",
                "CLOUDPODS_NGINX_UPSTREAM_PORT": str(settings.get("upstream_port")),
                "CLOUDPODS_NGINX_CA_BUNDLE": str(self.ca_cert),
                "CLOUDPODS_NGINX_ACCESS_LOG": str(self.access_log),
                "CLOUDPODS_NGINX_ERROR_LOG": str(self.error_log)}

    def diagnostics(self):
        text = []
        for path in (self.log_file, self.error_log):
            try:
                text.append("\n".join(path.read_text(errors="replace").splitlines()[-20:]))
            except OSError:
                pass
        return "\n".join(text) or "(no log)"


class NginxService:
    """The shipped nginx site on loopback, as a lab service (same interface as lab.Service)."""

    name = "nginx"

    def __init__(self, lab):
        self.lab = lab
        self.directory = lab.directory / self.name
        self.instance = NginxInstance(self.directory, lab.pki.ca_cert, lab.pki.server_cert, lab.pki.server_key)

    def start(self):
        try:
            self.instance.start()
        except NginxConfigError as exc:
            raise RuntimeError(str(exc)) from exc

    def stop(self):
        self.instance.stop()

    def healthy(self):
        return self.instance.healthy()

    def env(self):
        return self.instance.env()

    def describe(self):
        settings = self.instance.load_settings()
        return (f"https://127.0.0.1:{settings.get('port')} -> upstream 127.0.0.1:{settings.get('upstream_port')} "
                f"pid {self.instance.pid()} log {self.instance.error_log}")

    def diagnostics(self):
        return self.instance.diagnostics()
