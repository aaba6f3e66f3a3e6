"""What the playbooks run with, checked before the worker or ``cloudpods provision`` starts, and again per run.

The environment settings are checked by ``settings.Settings.from_env``; this module checks the
files and the installation a playbook run depends on, so a wrong one is refused with its name
instead of failing every order five times:

- ``CLOUDPODS_EXTRA_VARS_FILE`` (optional): the operator's site settings, handed to every run as
  ``-e @file``: it must exist, be readable and hold a YAML (or JSON) mapping.
- ``CLOUDPODS_INVENTORY`` (optional; default: localhost only): it must exist.
- The Proxmox host group: ``cloudpods_proxmox_hosts`` (the site file's, default ``proxmox_hosts``)
  must match a host of that inventory, as the playbooks' "Check the Proxmox host group" does.
  Asked of Ansible itself (``ansible PATTERN --list-hosts``), so patterns, inventory plugins and
  directories mean what they mean to the playbooks; at start-up only (it takes a second or two).
- ``CLOUDPODS_RUN_DIR``: where each run gets its private directory; it must be a writable directory.
- The ``mpanel.cloudpods`` collection on the collection path ansible-runner is given (its roles and
  modules are what the playbooks call), with a playbook for every operation.

A run checks the same files again (``run_problem``): a file removed while the worker runs fails
the task at once with the same message, instead of a retried ansible-playbook error.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from . import operations, runscope
from .settings import COLLECTION, default_collections_path, find_collection, scrub

EXTRA_VARS_SETTING = "CLOUDPODS_EXTRA_VARS_FILE"
INVENTORY_SETTING = "CLOUDPODS_INVENTORY"
HOST_GROUP_VARIABLE = "cloudpods_proxmox_hosts"
DEFAULT_HOST_GROUP = "proxmox_hosts"
HOST_LIST_TIMEOUT_SECONDS = 120
OUTPUT_LINES = 3  # lines of Ansible's own complaint shown in a message


class _AnyTagLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """YAML as Ansible reads a vars file: ``!unsafe`` and ``!vault`` values are accepted (their tag dropped)."""


def _untagged(loader, _suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)


_AnyTagLoader.add_multi_constructor("!", _untagged)


def extra_vars_file(environ=None):
    """The path CLOUDPODS_EXTRA_VARS_FILE names (absolute), or None when it is not set."""
    value = (os.environ if environ is None else environ).get(EXTRA_VARS_SETTING, "").strip()
    return Path(os.path.abspath(value)) if value else None


def inventory_file(environ=None):
    """The path CLOUDPODS_INVENTORY names, or None (the playbooks then get localhost only)."""
    value = (os.environ if environ is None else environ).get(INVENTORY_SETTING, "").strip()
    return value or None


def default_inventory_text():
    """The inventory a run gets without CLOUDPODS_INVENTORY: this machine, with this Python."""
    return f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"


def collections_path(settings):
    """ANSIBLE_COLLECTIONS_PATH for the playbooks: the settings', else the environment's, else the default."""
    return settings.collections_path or os.environ.get("ANSIBLE_COLLECTIONS_PATH") or default_collections_path()


def read_extra_vars(path):
    """The site settings in ``path`` (a mapping); ``ValueError`` naming the setting and the file."""
    where = f"{EXTRA_VARS_SETTING}: the site settings file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{where} is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    try:
        data = yaml.load(text, Loader=_AnyTagLoader)  # nosec B506: a SafeLoader that drops unknown tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{where} is not valid YAML or JSON{at}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a mapping of settings (name: value), found "
                         f"{'nothing' if data is None else type(data).__name__}")
    return data


def file_problems(environ=None):
    """Problems with the site settings file and the inventory: a list of one-line messages."""
    problems = []
    extra = extra_vars_file(environ)
    if extra is not None:
        try:
            read_extra_vars(extra)
        except ValueError as exc:
            problems.append(str(exc))
    inventory = inventory_file(environ)
    if inventory is not None and not os.path.exists(inventory):
        problems.append(f"{INVENTORY_SETTING}: the inventory {inventory} does not exist")
    return problems


def collection_problem(settings, operation_names=None):
    """The collection on the playbooks' collection path, with the playbooks of the operations: None if fine."""
    path = collections_path(settings)
    collection = find_collection(path)
    name = ".".join(COLLECTION)
    if collection is None:
        return (f"ANSIBLE_COLLECTIONS_PATH: the {name} collection is not installed in {path} (the playbooks "
                "call its roles and modules): install it there with ansible-galaxy collection install -p DIR, "
                "or set ANSIBLE_COLLECTIONS_PATH to the directory that holds it")
    wanted = operations.playbooks()
    names = sorted(wanted) if operation_names is None else operation_names
    missing = sorted({wanted[op] for op in names if op in wanted and not (collection / "playbooks" / wanted[op]).is_file()})
    if missing:
        return (f"ANSIBLE_COLLECTIONS_PATH: the {name} collection at {collection} (found in {path}) has no "
                f"playbooks/{', playbooks/'.join(missing)}: an older copy? install the current collection there")
    return None


def run_problem(settings, operation):
    """What stops a run of ``operation`` before ansible-playbook starts (retrying cannot help), or None."""
    problems = file_problems()
    if problems:
        return problems[0]
    return collection_problem(settings, [operation])


def host_group_problem(settings, environ=None, overrides=None):
    """The Proxmox host group matches no host of the inventory: the message, else None.

    ``overrides``: settings given on the command line (``cloudpods provision -e``), which win over the file's.
    Asks ``ansible PATTERN -i INVENTORY --list-hosts`` with the playbooks' collection path.
    """
    extra = extra_vars_file(environ)
    site = {}
    if extra is not None:
        try:
            site = read_extra_vars(extra)
        except ValueError as exc:
            return str(exc)
    overrides = overrides or {}
    pattern = overrides.get(HOST_GROUP_VARIABLE, site.get(HOST_GROUP_VARIABLE, DEFAULT_HOST_GROUP))
    if HOST_GROUP_VARIABLE in overrides:
        where_set = f"-e {HOST_GROUP_VARIABLE}"
    elif HOST_GROUP_VARIABLE in site:
        where_set = f"{HOST_GROUP_VARIABLE} in {extra}"
    else:
        where_set = f"{HOST_GROUP_VARIABLE} not set, default {DEFAULT_HOST_GROUP}"
    if not isinstance(pattern, str) or not pattern.strip():
        return f"{EXTRA_VARS_SETTING}: {HOST_GROUP_VARIABLE} in {extra} must be an inventory group or host pattern"
    if "{{" in pattern or "{%" in pattern:
        return None  # a template: only the playbook can tell what it names
    inventory = inventory_file(environ)
    with tempfile.TemporaryDirectory(prefix="cloudpods-preflight-") as scratch:
        source = inventory
        if source is None:
            source = os.path.join(scratch, "hosts")
            Path(source).write_text(default_inventory_text(), encoding="utf-8")
        hosts, complaint = _list_hosts(settings, pattern, source, scratch)
    if hosts:
        return None
    described = (f"the inventory {inventory} ({INVENTORY_SETTING})" if inventory else
                 f"the default inventory ({INVENTORY_SETTING} not set: localhost only)")
    if complaint is not None:
        return f"{INVENTORY_SETTING}: Ansible cannot read the inventory {inventory or source}: {complaint}"
    return (f"the Proxmox host group {pattern!r} ({where_set}) matches no host of {described}: "
            f"set {INVENTORY_SETTING} to an inventory with that group, or set {HOST_GROUP_VARIABLE} "
            f"in the file {EXTRA_VARS_SETTING} names (localhost when this machine is the Proxmox host)")


def _list_hosts(settings, pattern, inventory, scratch):
    """(hosts matching ``pattern``, None) or ([], Ansible's complaint in a few lines)."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    ansible = os.path.join(bin_dir, "ansible")
    if not os.access(ansible, os.X_OK):
        ansible = "ansible"
    # The playbooks' environment (secrets included: an inventory plugin may need the Proxmox token, as in a
    # run), never the database's; the output is scrubbed below.
    env = dict(os.environ, **settings.playbook_env)
    env.pop("DATABASE_URL", None)
    env.update({"ANSIBLE_COLLECTIONS_PATH": collections_path(settings), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
                "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": scratch,
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        done = subprocess.run([ansible, pattern, "-i", inventory, "--list-hosts"], env=env, cwd=scratch,
                              capture_output=True, text=True, timeout=HOST_LIST_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"ansible --list-hosts did not run ({type(exc).__name__})"
    lines = [line.strip() for line in done.stdout.splitlines()]
    if done.returncode != 0:
        # Ansible's own error lines only: its warnings may quote the inventory, which may hold a password.
        output = done.stderr + "\n" + done.stdout
        complaint = error_lines(output) if ansible_refused(output) else f"ansible --list-hosts ended with rc {done.returncode}"
        return [], scrub(complaint, settings.secrets())
    listed = [line for line in lines[1:] if line] if lines and lines[0].startswith("hosts (") else []
    return listed, None


ERROR_PREFIXES = ("[ERROR]", "ERROR!")  # how ansible-core (2.19; before 2.19) starts its own error lines


def ansible_refused(output):
    """``output`` holds an error of Ansible itself (not of a task): the playbook, a file or a role is wrong."""
    return any(line.strip().startswith(ERROR_PREFIXES) for line in (output or "").splitlines())


def error_lines(output, limit=OUTPUT_LINES):
    """Ansible's own error lines (``[ERROR]:``, ``ERROR!``) of ``output``, else its last lines, in one line."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIXES)]
    chosen = errors[:limit] if errors else lines[-limit:]
    return " ".join(" ".join(chosen).split())[:600]


def run_dir_problem(settings):
    """The runs' private directories go under CLOUDPODS_RUN_DIR: it must be (or become) a writable directory."""
    base = Path(settings.run_dir or runscope.default_run_base())
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return f"CLOUDPODS_RUN_DIR: the runs' directory {base} cannot be made ({exc.strerror or type(exc).__name__})"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"CLOUDPODS_RUN_DIR: the runs' directory {base} is not writable"
    return None


def worker_problems(settings):
    """What stops ``cloudpods worker`` at start: with CLOUDPODS_EXECUTOR=awx, AWX (it answers, the token is
    accepted, each operation's job template exists: runner_api/awx_executor.py), since the playbooks, the
    inventory and the collection are AWX's then; else ``startup_problems``."""
    if settings.executor == "awx":
        from . import awx_executor  # pylint: disable=import-outside-toplevel
        return awx_executor.startup_problems(settings)
    return startup_problems(settings)


def startup_problems(settings, overrides=None):
    """Every problem of the files, the host group and the collection: one-line messages (empty: fine).

    ``overrides``: site settings given on the command line (``cloudpods provision -e NAME=VALUE``)."""
    problems = file_problems()
    for problem in (run_dir_problem(settings), collection_problem(settings)):
        if problem:
            problems.append(problem)
    if not problems:
        group = host_group_problem(settings, overrides=overrides)
        if group:
            problems.append(group)
    return problems
