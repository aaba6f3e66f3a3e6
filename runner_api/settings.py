"""Settings from the environment (the seed's ``.env`` names), validated once at start-up.

``Settings.from_env()`` collects every problem and raises one ``SettingsError`` naming each
missing or malformed variable, so an operator fixes them all in one go.
"""

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Variables the playbooks read (module defaults); handed to ansible-runner as environment.
PLAYBOOK_ENV_PREFIXES = ("PROXMOX_", "POWERDNS_", "SMTP_", "CLOUDPODS_MAIL_", "CLOUDPODS_FIRST_BOOT")
# Never handed to a playbook even though a prefix would match.
PLAYBOOK_ENV_EXCLUDED = ("DATABASE_URL",)
SECRET_NAME_PATTERN = re.compile(r"(SECRET|PASSWORD|API_KEY|PRIVATE_KEY|TOKEN(?!_ID))", re.IGNORECASE)
TOKEN_ID_PATTERN = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$")


class SettingsError(Exception):
    """One or more settings are missing or malformed; the message names each one."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class Settings:  # pylint: disable=too-many-instance-attributes
    database_url: str
    plans_file: Path
    playbook_dir: Path
    pool_min: int = 1
    pool_max: int = 10
    max_body_bytes: int = 16384
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    max_attempts: int = 5
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    poll_seconds: float = 5.0
    shutdown_grace_seconds: float = 60.0
    playbook_timeout_seconds: int = 3600
    run_dir: Path | None = None
    db_timeout_seconds: float = 2.0
    db_retry_max_seconds: float = 10.0
    playbook_env: dict = field(default_factory=dict, repr=False)

    def secrets(self):
        """Every secret value this process knows: scrubbed from events, errors and logs."""
        values = [value for name, value in self.playbook_env.items() if SECRET_NAME_PATTERN.search(name)]
        password = urllib.parse.urlsplit(self.database_url).password
        if password:
            values += [password, urllib.parse.unquote(password)]
        return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def __repr__(self):
        return f"Settings(database={redact_url(self.database_url)}, playbook_dir={self.playbook_dir})"

    @classmethod
    def from_env(cls, environ=None, worker=False):
        """Read and check the settings; ``worker`` also requires what the playbooks need."""
        env = dict(os.environ if environ is None else environ)
        problems = []
        reader = _Reader(env, problems)
        database_url = reader.database_url("DATABASE_URL")
        values = dict(
            plans_file=reader.path("CLOUDPODS_PLANS_FILE", REPO_ROOT / "playbooks" / "vars" / "plans.yml"),
            playbook_dir=reader.path("CLOUDPODS_PLAYBOOK_DIR", REPO_ROOT / "playbooks", must_be_dir=worker),
            pool_min=reader.integer("CLOUDPODS_DB_POOL_MIN", 1, minimum=0),
            pool_max=reader.integer("CLOUDPODS_DB_POOL_MAX", 10, minimum=1),
            max_body_bytes=reader.integer("CLOUDPODS_MAX_BODY_BYTES", 16384, minimum=256),
            lease_seconds=reader.number("CLOUDPODS_LEASE_SECONDS", 30.0, minimum=1.0),
            heartbeat_seconds=reader.number("CLOUDPODS_HEARTBEAT_SECONDS", 10.0, minimum=0.1),
            max_attempts=reader.integer("CLOUDPODS_MAX_ATTEMPTS", 5, minimum=1),
            retry_base_seconds=reader.number("CLOUDPODS_RETRY_BASE_SECONDS", 5.0, minimum=0.0),
            retry_max_seconds=reader.number("CLOUDPODS_RETRY_MAX_SECONDS", 300.0, minimum=0.0),
            poll_seconds=reader.number("CLOUDPODS_POLL_SECONDS", 5.0, minimum=0.1),
            shutdown_grace_seconds=reader.number("CLOUDPODS_SHUTDOWN_GRACE_SECONDS", 60.0, minimum=0.0),
            playbook_timeout_seconds=reader.integer("CLOUDPODS_PLAYBOOK_TIMEOUT_SECONDS", 3600, minimum=10),
            run_dir=reader.path("CLOUDPODS_RUN_DIR", None),
            # How long a request (or a worker's query) waits for a database connection before it
            # gives up (the API answers 503), and the cap of the backoff while the database is away.
            db_timeout_seconds=reader.number("CLOUDPODS_DB_TIMEOUT_SECONDS", 2.0, minimum=0.1),
            db_retry_max_seconds=reader.number("CLOUDPODS_DB_RETRY_MAX_SECONDS", 10.0, minimum=0.1),
        )
        if worker:
            for name in ("PROXMOX_API_URL", "PROXMOX_API_TOKEN_ID", "PROXMOX_API_TOKEN_SECRET", "PROXMOX_NODE_NAME"):
                reader.required(name)
            reader.url("PROXMOX_API_URL")
            reader.pattern("PROXMOX_API_TOKEN_ID", TOKEN_ID_PATTERN, "user@realm!tokenid")
            reader.integer("PROXMOX_CLOUDPOD_TEMPLATE_ID", 9000, minimum=100)
            reader.url("POWERDNS_API_URL")
        if values["lease_seconds"] and values["heartbeat_seconds"] >= values["lease_seconds"]:
            problems.append("CLOUDPODS_HEARTBEAT_SECONDS must be shorter than CLOUDPODS_LEASE_SECONDS")
        if problems:
            raise SettingsError(problems)
        playbook_env = {name: value for name, value in env.items()
                        if name.startswith(PLAYBOOK_ENV_PREFIXES) and name not in PLAYBOOK_ENV_EXCLUDED}
        return cls(database_url=database_url, playbook_env=playbook_env, **values)


class _Reader:
    def __init__(self, env, problems):
        self.env = env
        self.problems = problems

    def _raw(self, name):
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def required(self, name):
        value = self._raw(name)
        if value is None:
            self.problems.append(f"{name} is not set")
        return value

    def database_url(self, name):
        value = self.required(name)
        if value is None:
            return ""
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.path.strip("/")):
            # Never echo the value: it may carry the password.
            self.problems.append(f"{name} must be a postgresql:// URL (postgresql://user:password@host:port/db)")
        return value

    def url(self, name):
        value = self._raw(name)
        if value is not None:
            parts = urllib.parse.urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.problems.append(f"{name} must be an http(s) URL, got {value!r}")
        return value

    def pattern(self, name, regex, form):
        value = self._raw(name)
        if value is not None and not regex.match(value):
            self.problems.append(f"{name} must have the form {form}")
        return value

    def integer(self, name, default, minimum=None):
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {value!r}")
            return default
        if minimum is not None and number < minimum:
            self.problems.append(f"{name} must be at least {minimum}, got {number}")
        return number

    def number(self, name, default, minimum=None):
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {value!r}")
            return default
        if minimum is not None and number < minimum:
            self.problems.append(f"{name} must be at least {minimum}, got {number}")
        return number

    def path(self, name, default, must_be_dir=False):
        value = self._raw(name)
        path = Path(value) if value else default
        if must_be_dir and not path.is_dir():
            self.problems.append(f"{name}: {path} is not a directory")
        return path


def redact_url(url):
    """A database URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def scrub(text, secrets):
    """``text`` with every known secret value replaced by ``***``."""
    if text is None:
        return None
    text = str(text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
