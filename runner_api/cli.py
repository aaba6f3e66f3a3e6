"""The ``cloudpods`` command: api, worker, meter, migrate, token, provision."""

import argparse
import json
import logging
import os
import re
import sys

from .preflight import EXTRA_VARS_SETTING
from .repository import connect_timeout
from .settings import SECRET_NAME_PATTERN, Settings, SettingsError, redact_url, scrub

LOG = logging.getLogger("runner_api")
SITE_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _settings(worker=False, catalogue=True, meter=False):
    try:
        return Settings.from_env(worker=worker, catalogue=catalogue, meter=meter)
    except SettingsError as exc:
        print(f"cloudpods: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _preflight(settings, overrides=None, worker=False):
    """The files and the collection the playbooks run with, or with CLOUDPODS_EXECUTOR=awx (``worker``) AWX and
    its job templates (runner_api/preflight.py); exit 2 naming each problem."""
    from . import preflight  # pylint: disable=import-outside-toplevel
    problems = preflight.worker_problems(settings) if worker else preflight.startup_problems(settings, overrides)
    for problem in problems:
        print(f"cloudpods: {scrub(problem, settings.secrets())}", file=sys.stderr)
    if problems:
        raise SystemExit(2)


def _unreachable(settings, exc):
    """One line for a database that did not answer: where (password masked), how long we waited, why."""
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return (f"cloudpods: cannot reach the database (DATABASE_URL {redact_url(settings.database_url)}, waited at most "
            f"{connect_timeout(settings)} s: CLOUDPODS_DB_TIMEOUT_SECONDS): {scrub(reason, settings.secrets())}")


def _unmigrated(settings, pending):
    return (f"cloudpods: the database (DATABASE_URL {redact_url(settings.database_url)}) lacks the migrations "
            f"{', '.join(pending)}: run cloudpods migrate first")


def _database_command(migrated=True):
    """``command(args, settings)`` with the settings of migrate and token: a database that does not answer
    ends it with one line (exit 1) after the connect timeout, instead of a traceback; ``migrated``: so
    does a database without this release's migrations."""
    def decorate(command):
        def run(args):
            import psycopg  # pylint: disable=import-outside-toplevel
            from .repository import pending_migrations  # pylint: disable=import-outside-toplevel
            settings = _settings(catalogue=False)
            try:
                # One connection first, with libpq's connect timeout: its error says why (refused, no such
                # host, authentication); the pool's own would only say it timed out.
                with psycopg.connect(settings.database_url, connect_timeout=connect_timeout(settings)) as connection:
                    pending = pending_migrations(connection) if migrated else []
                if pending:
                    print(_unmigrated(settings, pending), file=sys.stderr)
                    return 1
                return command(args, settings)
            except psycopg.OperationalError as exc:
                print(_unreachable(settings, exc), file=sys.stderr)
                return 1
        return run
    return decorate


@_database_command(migrated=False)
def cmd_migrate(_args, settings):
    from .repository import migrate  # pylint: disable=import-outside-toplevel
    applied = migrate(settings.database_url)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text):
    """Seconds of ``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or a plain number of seconds; ValueError otherwise."""
    match = DURATION.match((text or "").strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (a number with s, m, h, d or w, e.g. 90d)")
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def _duration_argument(text):
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port_offset(text):
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port offset: {text[:20]!r} (a number from 0 to 65535; the systemd "
                                         "unit's instance name must be a number)")
    return int(text)


def _when(value):
    return value.isoformat(timespec="seconds") if value is not None else "never"


def _show_new_token(args, row, token, what):
    """The token once, on stdout only; the database keeps its SHA-256. Its id (for rotate, revoke and the
    list) goes to stderr, so TOKEN=$(cloudpods token create ...) still works."""
    if args.json:
        print(json.dumps({"id": row["id"], "name": row["name"], "role": row["role"],
                          "customer_id": row["customer_id"], "expires_at": _when(row["expires_at"]), "token": token}))
    else:
        print(f"{what} token {row['id']} ({row['name']}, {row['role']}"
              + (f", customer {row['customer_id']}" if row["customer_id"] else "")
              + f", expires {_when(row['expires_at'])}); its value, shown once:", file=sys.stderr)
        print(token)


@_database_command()
def cmd_token(args, settings):
    from .auth import ROLES, new_token  # pylint: disable=import-outside-toplevel
    from .repository import Repository, open_pool  # pylint: disable=import-outside-toplevel
    with open_pool(settings, name="cloudpods-token", min_size=1, max_size=1) as pool:
        repository = Repository(pool)
        if args.token_command == "create":
            if args.role not in ROLES:
                print(f"cloudpods: role must be one of {', '.join(ROLES)}", file=sys.stderr)
                return 2
            if (args.role == "customer") != bool(args.customer):
                print("cloudpods: --customer is required for (and only for) role customer", file=sys.stderr)
                return 2
            token = new_token()
            row = repository.create_token(args.name, args.role, args.customer, token, expires_in=args.expires_in)
            _show_new_token(args, row, token, "created")
            return 0
        if args.token_command == "rotate":
            token = new_token()
            rotated = repository.rotate_token(args.id, token, args.overlap, expires_in=args.expires_in)
            if rotated is None:
                print(f"cloudpods: no live token with id {args.id} (unknown, revoked, expired or already rotated)",
                      file=sys.stderr)
                return 1
            old, new = rotated
            print(f"token {old['id']} stays valid until {_when(old['expires_at'])} (the overlap), then is refused",
                  file=sys.stderr)
            _show_new_token(args, new, token, f"rotated token {old['id']}: new")
            return 0
        if args.token_command == "revoke":
            row = repository.revoke_token(args.id)
            if row is None:
                print(f"cloudpods: no active token with id {args.id}", file=sys.stderr)
                return 1
            print(f"revoked token {row['id']} ({row['name']}, {row['role']})")
            return 0
        print("ID\tROLE\tCUSTOMER\tSTATE\tEXPIRES\tNAME")
        for row in repository.list_tokens():
            if row["revoked_at"]:
                state = "revoked"
            elif row["expired"]:
                state = "expired"
            elif row["replaced_by"]:
                state = f"overlap (replaced by {row['replaced_by']})"
            else:
                state = "active"
            print(f"{row['id']}\t{row['role']}\t{row['customer_id'] or '-'}\t{state}\t{_when(row['expires_at'])}"
                  f"\t{row['name']}")
        return 0


def cmd_api(args):
    from .app import create_app  # pylint: disable=import-outside-toplevel
    app = create_app(_settings())
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


def cmd_worker(args):
    # gunicorn_conf.py gives the API's processes this directory; a worker keeps its metrics in memory.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from .worker import Worker  # pylint: disable=import-outside-toplevel
    settings = _settings(worker=True)
    port = _metrics_port(settings, args.metrics_port_offset)
    _preflight(settings, worker=True)
    _refuse_unmigrated(settings)
    return Worker(settings, worker_id=args.worker_id, metrics_port=port).run(once=args.once)


def _metrics_port(settings, offset):
    """The worker's metrics port: CLOUDPODS_WORKER_METRICS_PORT plus --metrics-port-offset (the systemd
    unit's instance number), 0 when the setting is 0 (no endpoint); exit 2 past 65535."""
    if not settings.worker_metrics_port:
        return 0
    port = settings.worker_metrics_port + offset
    if port > 65535:
        print(f"cloudpods: CLOUDPODS_WORKER_METRICS_PORT {settings.worker_metrics_port} + --metrics-port-offset "
              f"{offset} is past 65535", file=sys.stderr)
        raise SystemExit(2)
    return port


def cmd_meter(args):
    """Count every pod's transfer from the Proxmox API, every CLOUDPODS_METER_INTERVAL_SECONDS (runner_api/metering.py)."""
    import signal  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    from .metering import Meter, ProxmoxResources, run  # pylint: disable=import-outside-toplevel
    from .plans import PlanCatalogue  # pylint: disable=import-outside-toplevel
    from .repository import open_pool  # pylint: disable=import-outside-toplevel
    from .logging_setup import install_secret_filter  # pylint: disable=import-outside-toplevel
    from .secrets_file import SecretsFile  # pylint: disable=import-outside-toplevel
    settings = _settings(meter=True)
    _refuse_unmigrated(settings)
    known = set(settings.secrets())
    install_secret_filter(sorted(known, key=len, reverse=True))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    secrets = SecretsFile(settings.secrets_file) if settings.secrets_file else None
    pool = open_pool(settings, name="runner_api-meter", min_size=1, max_size=2)
    try:
        meter = Meter(pool, ProxmoxResources.from_settings(settings), PlanCatalogue(settings.plans_file),
                      policy=settings.transfer_quota_policy, throttle_mbps=settings.transfer_throttle_mbps,
                      max_attempts=settings.max_attempts)

        def reread_secrets():
            """A rotated Proxmox token (rotate_token.yml rewrites CLOUDPODS_SECRETS_FILE) is used from the next pass."""
            values = secrets.changed() if secrets is not None else None
            if values:
                env = dict(settings.playbook_env, **values)
                meter.api.use_token(env["PROXMOX_API_TOKEN_ID"], env["PROXMOX_API_TOKEN_SECRET"])
                known.update(value for name, value in values.items()
                             if SECRET_NAME_PATTERN.search(name) and value and len(value) >= 4)
                install_secret_filter(sorted(known, key=len, reverse=True))
                LOG.info("meter: %s read again (%s)", settings.secrets_file, ", ".join(sorted(values)))

        return run(meter, settings.meter_interval_seconds, stop, once=args.once, before_pass=reread_secrets)
    finally:
        pool.close()


def _refuse_unmigrated(settings):
    """A database that answers without this release's migrations stops the worker (exit 2); one that does not
    answer does not: the worker waits for it, as it rides out any outage."""
    import psycopg  # pylint: disable=import-outside-toplevel
    from .repository import pending_migrations  # pylint: disable=import-outside-toplevel
    try:
        with psycopg.connect(settings.database_url, connect_timeout=connect_timeout(settings)) as connection:
            pending = pending_migrations(connection)
    except psycopg.OperationalError:
        return
    if pending:
        print(_unmigrated(settings, pending), file=sys.stderr)
        raise SystemExit(2)


def _site_overrides(assignments, order_names):
    """``-e NAME=VALUE`` of cloudpods provision: site settings for this dry run (the order's own fields have options)."""
    overrides = {}
    for assignment in assignments or []:
        name, equals, value = assignment.partition("=")
        if not equals or not SITE_SETTING_NAME.match(name):
            print(f"cloudpods: -e takes NAME=VALUE with NAME a site setting (letters, digits, _), got {name[:40]!r}",
                  file=sys.stderr)
            raise SystemExit(2)
        if name in order_names:
            print(f"cloudpods: -e {name}: the order's fields have options of their own (--pod, --domain, --email)",
                  file=sys.stderr)
            raise SystemExit(2)
        overrides[name] = value
    return overrides


def cmd_provision(args):
    from . import operations  # pylint: disable=import-outside-toplevel
    from .executors import LocalAnsibleRunner, RunRequest  # pylint: disable=import-outside-toplevel
    from .plans import PlanCatalogue  # pylint: disable=import-outside-toplevel
    if args.inventory:
        # The same setting the worker reads; this process runs one dry run and ends.
        os.environ["CLOUDPODS_INVENTORY"] = os.path.abspath(args.inventory)
    settings = _settings(worker=True)
    if PlanCatalogue(settings.plans_file).get(args.plan) is None:
        print(f"cloudpods: unknown plan {args.plan!r}", file=sys.stderr)
        return 2
    if not args.dry_run:
        print("cloudpods: provision without --dry-run is not offered: order through the API so the pod "
              "is recorded", file=sys.stderr)
        return 2
    # The extra vars an order's task gets, built by the operation registry from a task row.
    task = {"task_type": "CREATE_CONTAINER", "hostname": args.pod or "dry-run-pod", "plan_code": args.plan,
            "domain": args.domain, "customer_email": args.email}
    extra_vars = operations.extra_vars(task)
    overrides = _site_overrides(args.extra_vars, extra_vars)
    _preflight(settings, overrides)
    # After the order's vars, as strings (written !unsafe like every value of the dry run): they win over the file's.
    extra_vars.update(overrides)

    def show(event):
        if event["status"] in ("changed", "failed", "unreachable"):
            print(f"{event['status']:>9}  {event['step']}" + (f": {event['message']}" if event["message"] else ""))
            for change in _diff_lines(event.get("diff")):
                print(f"           {change}")

    result = LocalAnsibleRunner(settings).run(RunRequest(task["task_type"], extra_vars, check=True), show)
    if not result.ok and result.error:
        # Already scrubbed of secrets by the executor; the playbooks' hints say "-e NAME=...", which
        # this command takes from the site settings file.
        print(f"cloudpods: {result.error}", file=sys.stderr)
        if " -e " in f" {result.error} ":
            print(f"cloudpods: a hint's -e NAME=VALUE can be given to cloudpods provision as it is; for the worker, "
                  f"put NAME: VALUE in the file {EXTRA_VARS_SETTING} names", file=sys.stderr)
    print(f"dry run {result.status} (rc {result.rc}); nothing was changed")
    return 0 if result.ok else 1


def _diff_lines(diff_json):
    """before -> after of each changed key, from a module's diff (a dict, or a list of them)."""
    if not diff_json:
        return []
    diffs = json.loads(diff_json)
    lines = []
    for diff in diffs if isinstance(diffs, list) else [diffs]:
        before, after = diff.get("before"), diff.get("after")
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    lines.append(f"{key}: {json.dumps(before.get(key))} -> {json.dumps(after.get(key))}")
        elif before != after:
            lines.append(f"{json.dumps(before)[:200]} -> {json.dumps(after)[:200]}")
    return lines


def build_parser():
    parser = argparse.ArgumentParser(prog="cloudpods", description="Cloud Pods service: API, worker, tools.")
    parser.add_argument("--log-level", default=os.environ.get("CLOUDPODS_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=cmd_migrate)

    api = sub.add_parser("api", help="run the API with Flask's server (production: gunicorn, see README)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run a provisioning worker")
    worker.add_argument("--worker-id", help="default: hostname:pid")
    worker.add_argument("--once", action="store_true", help="run at most one task, then exit")
    worker.add_argument("--metrics-port-offset", type=_port_offset, default=0, metavar="N",
                        help="serve /metrics on CLOUDPODS_WORKER_METRICS_PORT + N (the systemd unit passes its "
                        "instance number, so cloudpods-worker@1 gets the port + 1)")
    worker.set_defaults(func=cmd_worker)

    meter = sub.add_parser("meter", help="count every pod's transfer and apply the plans' quotas")
    meter.add_argument("--once", action="store_true", help="one pass, then exit (1 when it failed)")
    meter.set_defaults(func=cmd_meter)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["customer", "service", "admin"])
    create.add_argument("--customer", help="customer id (role customer)")
    create.add_argument("--expires-in", type=_duration_argument, metavar="DURATION",
                        help="the token expires after this long (90d, 12h, 30m, 45s, 2w); default: never")
    create.add_argument("--json", action="store_true")
    rotate = token_sub.add_parser("rotate", help="make a token's successor (printed once); the old one stays valid "
                                  "for the overlap, then is refused")
    rotate.add_argument("id", type=int)
    rotate.add_argument("--overlap", type=_duration_argument, required=True, metavar="DURATION",
                        help="how long the old token stays valid (e.g. 1h; 0 refuses it at once)")
    rotate.add_argument("--expires-in", type=_duration_argument, metavar="DURATION",
                        help="the new token expires after this long; default: the old token's lifetime (or never)")
    rotate.add_argument("--json", action="store_true")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    token_sub.add_parser("list", help="list tokens with their state and expiry (never their values)")
    token.set_defaults(func=cmd_token)

    provision = sub.add_parser("provision", help="run the provision playbook in check mode")
    provision.add_argument("plan")
    provision.add_argument("--domain")
    provision.add_argument("--email", default="dry-run@example.com")
    provision.add_argument("--pod")
    provision.add_argument("--dry-run", action="store_true")
    provision.add_argument("-e", "--extra-vars", action="append", metavar="NAME=VALUE",
                           help="a site setting for this dry run (wins over the CLOUDPODS_EXTRA_VARS_FILE file's); repeatable")
    provision.add_argument("--inventory", metavar="FILE", help="the inventory for this dry run (default: CLOUDPODS_INVENTORY)")
    provision.set_defaults(func=cmd_provision)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .logging_setup import configure  # pylint: disable=import-outside-toplevel
    configure(args.log_level.upper())
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
