"""Settings from the environment (the seed's ``.env`` names), validated once at start-up.

``Settings.from_env()`` collects every problem and raises one ``SettingsError`` naming each
missing or malformed variable, so an operator fixes them all in one go.

Files of the collection: the plan catalogue (``playbooks/vars/plans.yml``), the order rules
(``playbooks/vars/settings.yml``) and the playbooks belong to the ``mpanel.cloudpods`` collection,
not to this package. runner_api reads them from the collection it runs: in a checkout (the
repository root is the collection) the checkout's own files; from an installed wheel, the
collection that ``ansible-galaxy collection install`` put in a directory of
``ANSIBLE_COLLECTIONS_PATH`` (Ansible's default ``~/.ansible/collections:/usr/share/ansible/collections``
when unset), the same one the worker's playbooks run with. ``CLOUDPODS_PLANS_FILE`` and
``CLOUDPODS_PLAYBOOK_DIR`` override the catalogue and the playbook directory. A missing or unreadable
catalogue stops start-up with a message naming the setting (never an error per request).
"""

import ipaddress
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ("mpanel", "cloudpods")
# Ansible's default for ANSIBLE_COLLECTIONS_PATH (COLLECTIONS_PATHS) when it is not set.
ANSIBLE_DEFAULT_COLLECTIONS_PATH = "~/.ansible/collections:/usr/share/ansible/collections"
# What a secret becomes in events, errors, logs and URLs. The collection masks with the same
# string (plugins/module_utils/redact.py, REDACTED); runner_api does not import the collection
# (an installed wheel may run beside any copy of it), so the constant is repeated there and here.
MASK = "********"

# Variables the playbooks read (module defaults); handed to ansible-runner as environment.
PLAYBOOK_ENV_PREFIXES = ("PROXMOX_", "POWERDNS_", "SMTP_", "CLOUDPODS_MAIL_", "CLOUDPODS_FIRST_BOOT", "CLOUDPODS_ACME_")
# Site settings the playbooks read from the environment (their env fallback), none of them a secret.
PLAYBOOK_ENV_NAMES = ("CLOUDPODS_SSH_PORT", "CLOUDPODS_CUSTOMER_USER", "CLOUDPODS_HTTPS_WAIT", "CLOUDPODS_HTTPS_RETRY",
                      "CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS",
                      # the lab's flag: there, cloudpods_company_domain may stay example.net
                      "CLOUDPODS_LAB")
# Never handed to a playbook even though a prefix would match.
PLAYBOOK_ENV_EXCLUDED = ("DATABASE_URL",)
SECRET_NAME_PATTERN = re.compile(r"(SECRET|PASSWORD|API_KEY|PRIVATE_KEY|TOKEN(?!_ID))", re.IGNORECASE)
KEY_RULE = Path("plugins") / "module_utils" / "ssh_keys.py"
TOKEN_ID_PATTERN = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$")
EXECUTORS = ("local", "awx")
# The AWX executor's job template for an operation, unless CLOUDPODS_AWX_JOB_TEMPLATES names another:
# "Cloud Pods: " and the playbook's name without .yml ("Cloud Pods: provision" for CREATE_CONTAINER).
AWX_TEMPLATE_PREFIX = "Cloud Pods: "
METRICS_TOKEN_MIN_LENGTH = 24


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
    collections_path: str | None = None  # ANSIBLE_COLLECTIONS_PATH for the playbooks; None: as the worker's
    grammar_file: Path | None = None  # playbooks/vars/settings.yml (order rules); None: the checkout's
    ssh_keys_file: Path | None = None  # plugins/module_utils/ssh_keys.py (the key rule); None: the checkout's
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
    https_retry_seconds: float = 60.0
    backup_list_seconds: float = 3600.0  # every pod's archives read again (playbooks/backup_catalog.yml); 0: never
    https_retry_max_seconds: float = 3600.0
    # Webhooks to mPanel (runner_api/webhooks.py; README, "Webhooks to mPanel").
    webhook_url: str | None = None  # None: events are written to the outbox but not sent
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout_seconds: float = 10.0
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_max_seconds: float = 600.0
    webhook_poll_seconds: float = 1.0
    webhook_keep_days: float = 30.0  # delivered events older than this are deleted by the deliverer
    # The executor (runner_api/executors.py; README, "runner_api's AWX executor"): local ansible-runner or AWX.
    executor: str = "local"
    awx_url: str | None = None
    awx_token: str | None = field(default=None, repr=False)
    awx_ca_file: Path | None = None  # CA bundle for AWX's certificate; None: the system's
    awx_verify: bool = True
    awx_templates: dict = field(default_factory=dict)  # operation -> job template name
    awx_timeout_seconds: float = 10.0  # one HTTP request to AWX
    awx_poll_seconds: float = 1.0  # between two looks at a running job
    awx_outage_seconds: float = 120.0  # AWX away this long while following a job: the attempt fails (retried)
    awx_cancel_wait_seconds: float = 30.0  # after POST cancel/, how long to wait for the job to be canceled
    playbook_env: dict = field(default_factory=dict, repr=False)
    # CLOUDPODS_SECRETS_FILE (runner_api/secrets_file.py): NAME=VALUE lines over the environment, read at
    # start by the worker and again before each task when it changed (rotate_token.yml writes it).
    secrets_file: Path | None = None
    # Transfer metering (runner_api/metering.py; README, "Transfer metering and quotas"): `cloudpods meter`
    # reads every pod's counters every CLOUDPODS_METER_INTERVAL_SECONDS; a pod over its plan's monthly
    # quota is throttled to CLOUDPODS_TRANSFER_THROTTLE_MBPS (net0 rate=, MB/s) or suspended.
    meter_interval_seconds: float = 60.0
    transfer_quota_policy: str = "throttle"
    transfer_throttle_mbps: float = 1.0
    # Metrics (runner_api/metrics.py; README, "Metrics"): the bearer token Prometheus sends to the API's
    # /metrics (None: the API serves no metrics) and to a worker's; a worker's endpoint, 0: none.
    metrics_token: str | None = field(default=None, repr=False)
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 0

    def secrets(self):
        """Every secret value this process knows: scrubbed from events, errors and logs."""
        values = [value for name, value in self.playbook_env.items() if SECRET_NAME_PATTERN.search(name)]
        password = urllib.parse.urlsplit(self.database_url).password
        if password:
            values += [password, urllib.parse.unquote(password)]
        if self.webhook_secret:
            values.append(self.webhook_secret)
        if self.awx_token:
            values.append(self.awx_token)
        if self.metrics_token:
            values.append(self.metrics_token)
        webhook_password = urllib.parse.urlsplit(self.webhook_url or "").password
        if webhook_password:
            values += [webhook_password, urllib.parse.unquote(webhook_password)]
        return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def __repr__(self):
        return f"Settings(database={redact_url(self.database_url)}, playbook_dir={self.playbook_dir})"

    @classmethod
    def from_env(cls, environ=None, worker=False, catalogue=True, meter=False):  # pylint: disable=too-many-locals
        """Read and check the settings; ``worker`` also requires what the playbooks need, ``meter`` what
        ``cloudpods meter`` needs (the Proxmox API and its token, from CLOUDPODS_SECRETS_FILE too).

        ``catalogue`` (the API and the worker): the plan catalogue and the order rules must be
        there and readable. ``cloudpods migrate`` and ``token`` need neither.
        """
        env = dict(os.environ if environ is None else environ)
        problems = []
        reader = _Reader(env, problems)
        database_url = reader.database_url("DATABASE_URL")
        secrets_file = reader.path("CLOUDPODS_SECRETS_FILE", None)
        if (worker or meter) and secrets_file is not None:
            env.update(_read_secrets_file(secrets_file, problems))
        checkout = source_checkout()
        collections_path = reader.raw("ANSIBLE_COLLECTIONS_PATH") or default_collections_path()
        collection = checkout or find_collection(collections_path)
        playbooks = collection / "playbooks" if collection else None
        values = dict(
            plans_file=reader.path("CLOUDPODS_PLANS_FILE", playbooks / "vars" / "plans.yml" if playbooks else None),
            playbook_dir=reader.path("CLOUDPODS_PLAYBOOK_DIR", playbooks, must_be_dir=worker),
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
            # The background HTTPS retry (README, "HTTPS retries"): the first retry after
            # CLOUDPODS_HTTPS_RETRY_SECONDS, doubling after each run that still reports pending, at
            # most CLOUDPODS_HTTPS_RETRY_MAX_SECONDS apart, for as long as the pod is ACTIVE.
            https_retry_seconds=reader.number("CLOUDPODS_HTTPS_RETRY_SECONDS", 60.0, minimum=0.1),
            backup_list_seconds=reader.number("CLOUDPODS_BACKUP_LIST_SECONDS", 3600.0, minimum=0.0),
            https_retry_max_seconds=reader.number("CLOUDPODS_HTTPS_RETRY_MAX_SECONDS", 3600.0, minimum=0.1),
            # Webhooks (README, "Webhooks to mPanel"): each worker delivers the outbox to
            # CLOUDPODS_WEBHOOK_URL, signed with CLOUDPODS_WEBHOOK_SECRET; a failed delivery is retried
            # after CLOUDPODS_WEBHOOK_RETRY_BASE_SECONDS, doubling, at most CLOUDPODS_WEBHOOK_RETRY_MAX_SECONDS
            # apart (with jitter), and never given up.
            webhook_url=reader.url("CLOUDPODS_WEBHOOK_URL", echo=False),
            webhook_secret=reader.raw("CLOUDPODS_WEBHOOK_SECRET"),
            webhook_timeout_seconds=reader.number("CLOUDPODS_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            webhook_retry_base_seconds=reader.number("CLOUDPODS_WEBHOOK_RETRY_BASE_SECONDS", 5.0, minimum=0.01),
            webhook_retry_max_seconds=reader.number("CLOUDPODS_WEBHOOK_RETRY_MAX_SECONDS", 600.0, minimum=0.01),
            webhook_poll_seconds=reader.number("CLOUDPODS_WEBHOOK_POLL_SECONDS", 1.0, minimum=0.05),
            webhook_keep_days=reader.number("CLOUDPODS_WEBHOOK_KEEP_DAYS", 30.0, minimum=0.0),
            meter_interval_seconds=reader.number("CLOUDPODS_METER_INTERVAL_SECONDS", 60.0, minimum=1.0),
            transfer_quota_policy=reader.choice("CLOUDPODS_TRANSFER_QUOTA_POLICY", "throttle", ("throttle", "suspend")),
            transfer_throttle_mbps=reader.number("CLOUDPODS_TRANSFER_THROTTLE_MBPS", 1.0, minimum=0.01),
        )
        values.update(_awx_settings(reader, problems, worker))
        values.update(_metrics_settings(reader, problems))
        if values["webhook_url"] and not values["webhook_secret"]:
            problems.append("CLOUDPODS_WEBHOOK_SECRET is not set: webhooks to CLOUDPODS_WEBHOOK_URL are signed "
                            "with it (README, \"Webhooks to mPanel\")")
        elif values["webhook_secret"] and len(values["webhook_secret"]) < 16:
            problems.append("CLOUDPODS_WEBHOOK_SECRET must be at least 16 characters long")
        reader.integer("CLOUDPODS_SSH_PORT", 22, minimum=1, maximum=65535)
        # deprovision.yml checks it too (^[0-9]{1,5}$), but only once a pod is terminated: refused here at start.
        reader.integer("CLOUDPODS_TERMINATED_BACKUP_KEEP_DAYS", 30, minimum=0, maximum=99999)
        if worker and values["executor"] == "local":
            # With CLOUDPODS_EXECUTOR=awx the playbooks run in AWX with its credentials, not these.
            for name in ("PROXMOX_API_URL", "PROXMOX_API_TOKEN_ID", "PROXMOX_API_TOKEN_SECRET", "PROXMOX_NODE_NAME"):
                reader.required(name)
            reader.url("PROXMOX_API_URL")
            reader.pattern("PROXMOX_API_TOKEN_ID", TOKEN_ID_PATTERN, "user@realm!tokenid")
            reader.integer("PROXMOX_CLOUDPOD_TEMPLATE_ID", 9000, minimum=100)
            reader.url("POWERDNS_API_URL")
        if meter:
            for name in ("PROXMOX_API_URL", "PROXMOX_API_TOKEN_ID", "PROXMOX_API_TOKEN_SECRET"):
                reader.required(name)
            reader.url("PROXMOX_API_URL")
            reader.pattern("PROXMOX_API_TOKEN_ID", TOKEN_ID_PATTERN, "user@realm!tokenid")
            reader.path("PROXMOX_CA_BUNDLE", None)
        if values["lease_seconds"] and values["heartbeat_seconds"] >= values["lease_seconds"]:
            problems.append("CLOUDPODS_HEARTBEAT_SECONDS must be shorter than CLOUDPODS_LEASE_SECONDS")
        rules_dir = playbooks or values["playbook_dir"]
        values["grammar_file"] = rules_dir / "vars" / "settings.yml" if rules_dir else None
        # The key rule is a file of the collection (beside its playbooks directory).
        values["ssh_keys_file"] = rules_dir.parent / KEY_RULE if rules_dir else None
        not_found = (f"the {'.'.join(COLLECTION)} collection is not installed in ANSIBLE_COLLECTIONS_PATH "
                     f"({collections_path}): install it with ansible-galaxy collection install, or set")
        if catalogue and values["plans_file"] is None:
            problems.append(f"CLOUDPODS_PLANS_FILE is not set and {not_found} CLOUDPODS_PLANS_FILE to the "
                            "plan catalogue (playbooks/vars/plans.yml of the collection)")
        elif catalogue:
            problems.extend(_check_catalogue(values["plans_file"]))
        if values["playbook_dir"] is None and (worker or catalogue):
            problems.append(f"CLOUDPODS_PLAYBOOK_DIR is not set and {not_found} CLOUDPODS_PLAYBOOK_DIR to the "
                            "collection's playbooks directory (the worker runs them; the API reads the order "
                            "rules in its vars/settings.yml)")
        elif catalogue:
            problems.extend(_check_grammar(values["grammar_file"], from_collection=playbooks is not None))
            problems.extend(_check_key_rule(values["ssh_keys_file"], from_collection=playbooks is not None))
        if problems:
            raise SettingsError(problems)
        playbook_env = {name: value for name, value in env.items()
                        if (name.startswith(PLAYBOOK_ENV_PREFIXES) or name in PLAYBOOK_ENV_NAMES)
                        and name not in PLAYBOOK_ENV_EXCLUDED}
        return cls(database_url=database_url, playbook_env=playbook_env, collections_path=collections_path,
                   secrets_file=secrets_file, **values)


def _read_secrets_file(path, problems):
    """The values of CLOUDPODS_SECRETS_FILE (they win over the environment's), or a problem naming it."""
    from . import secrets_file  # pylint: disable=import-outside-toplevel
    try:
        return secrets_file.read(path)
    except secrets_file.SecretsFileError as exc:
        problems.append(str(exc))
        return {}


def _metrics_settings(reader, problems):
    """CLOUDPODS_METRICS_TOKEN and a worker's metrics address (CLOUDPODS_WORKER_METRICS_HOST, _PORT; the port is
    the first of the workers': ``cloudpods worker --metrics-port-offset N`` adds N). An address other than
    loopback needs the token: the counts tell order volumes."""
    values = dict(
        metrics_token=reader.raw("CLOUDPODS_METRICS_TOKEN"),
        worker_metrics_host=reader.raw("CLOUDPODS_WORKER_METRICS_HOST") or "127.0.0.1",
        worker_metrics_port=reader.integer("CLOUDPODS_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535),
    )
    token = values["metrics_token"]
    if token is not None and (len(token) < METRICS_TOKEN_MIN_LENGTH or not token.isprintable() or " " in token):
        problems.append(f"CLOUDPODS_METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_LENGTH} printable characters "
                        "without spaces (e.g. openssl rand -hex 32)")
    if values["worker_metrics_port"] and token is None and not is_loopback(values["worker_metrics_host"]):
        problems.append(f"CLOUDPODS_WORKER_METRICS_HOST is {values['worker_metrics_host'][:64]!r}, not a loopback "
                        "address: set CLOUDPODS_METRICS_TOKEN too (the worker then asks Prometheus for it)")
    return values


def is_loopback(host):
    """Whether a listen address is a loopback one (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _awx_settings(reader, problems, worker):
    """CLOUDPODS_EXECUTOR and, for awx, CLOUDPODS_AWX_*: the values, problems appended (AWX's address and
    token are required of a worker only: the API, migrate and token never call AWX)."""
    executor = (reader.raw("CLOUDPODS_EXECUTOR") or "local").lower()
    if executor not in EXECUTORS:
        problems.append(f"CLOUDPODS_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {executor[:40]!r}")
        executor = "local"
    values = dict(
        executor=executor,
        awx_url=reader.url("CLOUDPODS_AWX_URL", echo=False),
        awx_token=reader.raw("CLOUDPODS_AWX_TOKEN"),
        awx_ca_file=reader.path("CLOUDPODS_AWX_CA_FILE", None),
        awx_verify=reader.boolean("CLOUDPODS_AWX_VERIFY_SSL", True),
        awx_templates=_awx_templates(reader.raw("CLOUDPODS_AWX_JOB_TEMPLATES"), problems),
        awx_timeout_seconds=reader.number("CLOUDPODS_AWX_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        awx_poll_seconds=reader.number("CLOUDPODS_AWX_POLL_SECONDS", 1.0, minimum=0.01),
        awx_outage_seconds=reader.number("CLOUDPODS_AWX_OUTAGE_SECONDS", 120.0, minimum=0.0),
        awx_cancel_wait_seconds=reader.number("CLOUDPODS_AWX_CANCEL_WAIT_SECONDS", 30.0, minimum=0.0),
    )
    if executor == "awx" and worker:
        if not values["awx_url"]:
            problems.append("CLOUDPODS_AWX_URL is not set (CLOUDPODS_EXECUTOR=awx): AWX's address, e.g. https://awx.example.net")
        if not values["awx_token"]:
            problems.append("CLOUDPODS_AWX_TOKEN is not set (CLOUDPODS_EXECUTOR=awx): an AWX OAuth2 token with write scope")
    ca_file = values["awx_ca_file"]
    if ca_file is not None and not ca_file.is_file():
        problems.append(f"CLOUDPODS_AWX_CA_FILE: {ca_file} is not a file")
    return values


def awx_template_name(playbook):
    """The default job template name for a playbook file (``provision.yml`` -> ``Cloud Pods: provision``)."""
    return AWX_TEMPLATE_PREFIX + playbook.rsplit("/", 1)[-1].removesuffix(".yml")


def _awx_templates(text, problems):
    """CLOUDPODS_AWX_JOB_TEMPLATES: a JSON object {operation: job template name}; the others keep the default."""
    if text is None:
        return {}
    from . import operations  # pylint: disable=import-outside-toplevel
    setting = "CLOUDPODS_AWX_JOB_TEMPLATES"
    try:
        mapping = json.loads(text)
    except ValueError:
        problems.append(f'{setting} must be a JSON object {{"OPERATION": "job template name"}}')
        return {}
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v.strip() for v in mapping.values()):
        problems.append(f'{setting} must be a JSON object {{"OPERATION": "job template name"}} (names non-empty)')
        return {}
    unknown = sorted(name for name in mapping if operations.find(name) is None)
    if unknown:
        problems.append(f"{setting}: unknown operations {', '.join(unknown)[:200]} (known: "
                        f"{', '.join(sorted(operations.playbooks()))})")
        return {}
    return {name: value.strip() for name, value in mapping.items()}


def source_checkout():
    """The repository root when runner_api runs from a checkout (the root is the collection), else None."""
    if (REPO_ROOT / "galaxy.yml").is_file() and (REPO_ROOT / "playbooks").is_dir():
        return REPO_ROOT
    return None


def default_collections_path():
    """ANSIBLE_COLLECTIONS_PATH when unset: a checkout's .build/collections (tools/lib.sh), else Ansible's default."""
    checkout = source_checkout()
    return str(checkout / ".build" / "collections") if checkout else ANSIBLE_DEFAULT_COLLECTIONS_PATH


def find_collection(collections_path):
    """The installed mpanel.cloudpods collection in a directory of ``collections_path``, else None.

    Each directory holds ``ansible_collections/mpanel/cloudpods`` (as ``ansible-galaxy collection
    install -p DIR`` leaves it), or is that ``ansible_collections`` directory itself, as Ansible allows.
    """
    for entry in (collections_path or "").split(os.pathsep):
        if not entry.strip():
            continue
        base = Path(entry.strip()).expanduser()
        if base.name != "ansible_collections":
            base = base / "ansible_collections"
        candidate = base.joinpath(*COLLECTION)
        if (candidate / "playbooks").is_dir():
            return candidate
    return None


def _check_catalogue(path):
    """Problems with the plan catalogue at ``path`` (CLOUDPODS_PLANS_FILE): missing, unreadable, empty."""
    from .plans import PlanCatalogue  # pylint: disable=import-outside-toplevel
    try:
        PlanCatalogue(Path(path)).plans()
    except FileNotFoundError:
        return [f"CLOUDPODS_PLANS_FILE: the plan catalogue {path} does not exist"]
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return [f"CLOUDPODS_PLANS_FILE: the plan catalogue {path} cannot be read: {exc}"]
    return []


def _check_grammar(path, from_collection):
    """Problems with the order rules (playbooks/vars/settings.yml) the API checks orders against."""
    from . import grammar  # pylint: disable=import-outside-toplevel
    where = "of the collection" if from_collection else "under CLOUDPODS_PLAYBOOK_DIR"
    try:
        grammar.read(Path(path))
    except FileNotFoundError:
        return [f"CLOUDPODS_PLAYBOOK_DIR: the order rules {path} ({where}) do not exist"]
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return [f"CLOUDPODS_PLAYBOOK_DIR: the order rules {path} ({where}) cannot be read: {exc}"]
    return []


def _check_key_rule(path, from_collection):
    """Problems with the SSH key rule (plugins/module_utils/ssh_keys.py) the API checks keys with."""
    from . import keys  # pylint: disable=import-outside-toplevel
    where = "of the collection" if from_collection else "beside CLOUDPODS_PLAYBOOK_DIR"
    if not Path(path).is_file():
        return [f"CLOUDPODS_PLAYBOOK_DIR: the SSH key rule {path} ({where}) does not exist"]
    try:
        keys.load(Path(path))
    except (OSError, ValueError, SyntaxError, ImportError) as exc:
        return [f"CLOUDPODS_PLAYBOOK_DIR: the SSH key rule {path} ({where}) cannot be loaded: {exc}"]
    return []


class _Reader:
    def __init__(self, env, problems):
        self.env = env
        self.problems = problems

    def raw(self, name):
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def required(self, name):
        value = self.raw(name)
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

    def url(self, name, echo=True):
        """An http(s) URL; ``echo=False``: a bad value is not repeated (it may carry a credential)."""
        value = self.raw(name)
        if value is not None:
            parts = urllib.parse.urlsplit(value)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
                self.problems.append(f"{name} must be an http(s) URL" + (f", got {value!r}" if echo else ""))
        return value

    def boolean(self, name, default):
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name} must be true or false, got {value[:20]!r}")
        return default

    def choice(self, name, default, choices):
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, got {value[:20]!r}")
            return default
        return value

    def pattern(self, name, regex, form):
        value = self.raw(name)
        if value is not None and not regex.match(value):
            self.problems.append(f"{name} must have the form {form}")
        return value

    def integer(self, name, default, minimum=None, maximum=None):
        number = self._numeric(name, default, minimum, int, "an integer")
        if maximum is not None and number > maximum:
            self.problems.append(f"{name} must be at most {maximum}, got {number}")
        return number

    def number(self, name, default, minimum=None):
        return self._numeric(name, default, minimum, float, "a number")

    def _numeric(self, name, default, minimum, convert, kind):
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = convert(value)
        except ValueError:
            self.problems.append(f"{name} must be {kind}, got {value!r}")
            return default
        if minimum is not None and number < minimum:
            self.problems.append(f"{name} must be at least {minimum}, got {number}")
        return number

    def path(self, name, default, must_be_dir=False):
        value = self.raw(name)
        path = Path(value) if value else default
        if must_be_dir and path is not None and not path.is_dir():
            self.problems.append(f"{name}: {path} is not a directory")
        return path


def redact_url(url):
    """A database URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":" + MASK + "@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def scrub(text, secrets):
    """``text`` with every known secret value replaced by ``MASK`` (``********``)."""
    if text is None:
        return None
    text = str(text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
