"""A private PostgreSQL cluster for the lab (``initdb`` + ``pg_ctl``), used by runner_api.

The data directory, the Unix socket and the log live in ``.lab/postgres/``; the server listens on a
free loopback TCP port with password (scram-sha-256) authentication for the superuser
``cloudpods`` and a generated password. PostgreSQL refuses to run as root, so when the lab runs
as root the cluster belongs to an unprivileged system user (``cloudpods-lab``, created when
missing) and every server command runs through ``runuser``.
"""

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

from labenv import free_port  # the lab's one free-port helper

LAB_USER = "cloudpods-lab"
SUPERUSER = "cloudpods"
DATABASE = "cloudpods"
PG_BIN_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]


def pg_binary(name: str, error=RuntimeError) -> str:
    found = shutil.which(name)
    for directory in PG_BIN_DIRS:
        if found:
            break
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            found = candidate
    if not found:
        raise error(f"{name} not found: install the Debian package postgresql (tools/install does)")
    return found


class PostgresService:
    """PostgreSQL on 127.0.0.1:<free port>; contributes ``DATABASE_URL``.

    A ``lab.Service`` by shape; it takes the lab's helpers from the module that defined the
    ``Lab`` it belongs to (importing ``lab`` here would be circular: lab.py registers this class).
    """

    name = "postgres"

    def __init__(self, lab):
        self.lab = lab
        self.directory = lab.directory / self.name
        self._labmod = sys.modules[type(lab).__module__]
        self.settings_file = self.directory / "settings.json"
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_file = self.directory / "postgres.log"

    def _bin(self, name: str) -> str:
        return pg_binary(name, self._labmod.LabError)

    # -- who runs the server

    @staticmethod
    def _owner() -> str | None:
        """The system user owning the cluster, or None to run as ourselves (not root)."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(LAB_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", LAB_USER], check=True, capture_output=True)
        return LAB_USER

    def _run(self, argv: list, check: bool = True) -> subprocess.CompletedProcess:
        owner = self._owner()
        if owner:
            argv = ["runuser", "-u", owner, "--"] + argv
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
        if check and result.returncode != 0:
            raise self._labmod.LabError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def _chown(self, path: Path) -> None:
        owner = self._owner()
        if owner:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- settings

    def _load_settings(self) -> dict:
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def _settings(self) -> dict:
        settings = self._load_settings()
        settings.setdefault("password", secrets.token_urlsafe(24))
        settings["port"] = free_port(settings.get("port"))
        self._labmod._write(self.settings_file, json.dumps(settings, indent=2).encode(), secret=True)
        return settings

    # -- Service interface

    def start(self) -> None:
        settings = self._settings()
        for path in (self.directory, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            self._chown(path)
        # The lab directory is root's; the server's user must be able to walk into it.
        for path in (self.lab.directory, self.directory):
            path.chmod(0o755)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(settings["password"])
        options = (f"-c listen_addresses=127.0.0.1 -p {settings['port']} -k {self.socket_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                   "-t", "20", "-o", options, "start"])
        self._create_database(settings)

    def _initdb(self, password: str) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        pwfile = self.directory / "pwfile"
        self._labmod._write(pwfile, password.encode(), secret=True)
        self._chown(pwfile)
        try:
            self._run([self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                       "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
                       "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)

    def _create_database(self, settings: dict) -> None:
        import psycopg  # pylint: disable=import-outside-toplevel
        with psycopg.connect(self._url(settings, "postgres"), autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], check=False)

    def healthy(self) -> bool:
        settings = self._load_settings()
        if not settings or not (self.data_dir / "postmaster.pid").exists():
            return False
        try:
            import psycopg  # pylint: disable=import-outside-toplevel
            with psycopg.connect(self._url(settings, DATABASE), connect_timeout=2) as connection:
                return connection.execute("SELECT 1").fetchone() == (1,)
        except Exception:  # pylint: disable=broad-except
            return False

    @staticmethod
    def _url(settings: dict, database: str) -> str:
        password = urllib.parse.quote(settings["password"], safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{settings['port']}/{database}"

    def env(self) -> dict:
        settings = self._load_settings()
        return {"DATABASE_URL": self._url(settings, DATABASE)} if settings else {}

    def describe(self) -> str:
        settings = self._load_settings()
        return f"postgresql://127.0.0.1:{settings.get('port')}/{DATABASE} log {self.log_file}"

    def diagnostics(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"
