"""Jobs that run: a launched job runs its template's playbook with ansible-runner, as AWX does.

Enabled by ``projects_root`` in the config (without it jobs stay where a launch leaves them and
``POST /_lab/jobs/{id}/status`` moves them, for tests of the API alone). Per job, in a thread of
the stand-in:

- a private data dir ``awx_<id>_XXXX`` (``jobs_dir``, default the system's temp dir; mode 0700,
  removed when the job ends unless ``keep_private_data_dir``): ``env/extravars`` (the job's extra
  vars: the template's, the survey defaults, the launch's; what the launch gave is written
  ``!unsafe``, as AWX's ``ALLOW_JINJA_IN_EXTRA_VARS=template``), ``env/`` credential files and extra
  vars files, ``inventory/hosts.json`` (the AWX inventory's variables and hosts);
- the project is ``<projects_root>/<local_path>`` (AWX's manual projects: a directory under
  ``PROJECTS_ROOT``), the playbook a path inside it;
- the environment: ``awx_task_env`` of the config (AWX's ``AWX_TASK_ENV``), ``JOB_ID``,
  ``INVENTORY_ID``, ``AWX_HOST``, ``AWX_PRIVATE_DATA_DIR``, ``PROJECT_REVISION``, and what the
  credentials inject (injectors.py); the job's ``job_env`` is the masked copy;
- ``limit``, ``job_tags``, ``skip_tags``, ``verbosity``, ``forks``, ``timeout``, ``job_type: check``
  (``--check``) and ``diff_mode`` (``--diff``);
- status ``waiting`` while the directory is made, ``running`` while ansible runs, then the runner's
  outcome: ``successful``, ``failed`` (a timeout too, with AWX's explanation), ``canceled`` (cancel
  sets the flag the runner's ``cancel_callback`` polls; then ansible-playbook and every process under
  it are killed, its forks too, which ansible-core puts in sessions of their own),
  ``error`` (the job could not be prepared: ``result_traceback`` says why, e.g. an inventory the
  stand-in cannot materialize);
- every runner event becomes a job event with AWX's fields; ``artifacts`` are the ``set_stats``
  data of ``playbook_on_stats`` (``per_host: false``).
"""

import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import traceback

import yaml

from . import injectors
from .resources import now, parse_vars

LOG = logging.getLogger("awxsim.runner")
FAILED_EVENTS = ("runner_on_failed", "runner_on_async_failed", "runner_on_unreachable", "runner_item_on_failed")
CHANGED_EVENTS = ("runner_on_ok", "runner_item_on_ok", "runner_on_async_ok")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class SetupError(Exception):
    """The job cannot be prepared; the message is the job's ``result_traceback``."""


class _Unsafe(str):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


def _unsafe(value):
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        return {key: _unsafe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unsafe(item) for item in value]
    return value


def write_vars(path: str, variables: dict, unsafe_keys) -> None:
    """A YAML extra vars file; the values of ``unsafe_keys`` are tagged ``!unsafe``."""
    data = {key: _unsafe(value) if key in unsafe_keys else value for key, value in variables.items()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.dump(data, handle, Dumper=_Dumper, default_flow_style=False)


def job_event(job_id: int, event_id: int, raw: dict) -> dict:
    """A runner event as AWX's ``JobEvent`` (``failed``/``changed`` as AWX derives them)."""
    data = raw.get("event_data") or {}
    event = raw.get("event", "")
    failed = event in FAILED_EVENTS and not data.get("ignore_errors", False)
    res = data.get("res")
    changed = event in CHANGED_EVENTS and isinstance(res, dict) and bool(res.get("changed"))
    if event == "playbook_on_stats":
        failed = bool(data.get("failures") or data.get("dark"))
        changed = bool(data.get("changed"))
    return {
        "id": event_id, "type": "job_event", "url": "/api/v2/job_events/%d/" % event_id,
        "related": {"job": "/api/v2/jobs/%d/" % job_id}, "summary_fields": {},
        "created": raw.get("created") or now(), "modified": raw.get("created") or now(), "job": job_id,
        "event": event, "counter": raw.get("counter"), "event_data": data, "event_level": 0,
        "failed": failed, "changed": changed, "uuid": raw.get("uuid", ""),
        "parent_uuid": raw.get("parent_uuid") or data.get("parent_uuid", "") or "", "host": None,
        "host_name": data.get("host", "") or "", "playbook": data.get("playbook", "") or "",
        "play": data.get("play", "") or "", "task": data.get("task", "") or "", "role": data.get("role", "") or "",
        "stdout": raw.get("stdout", ""), "start_line": raw.get("start_line", 0), "end_line": raw.get("end_line", 0),
        "verbosity": raw.get("verbosity", 0),
    }


def stdout_text(events: list) -> str:
    """``stdout/?format=txt``: the events' output in order, colours and carriage returns removed."""
    ordered = sorted(events, key=lambda event: (event["start_line"], event["counter"] or 0))
    return "".join(ANSI.sub("", event["stdout"]).replace("\r\n", "\n") + "\n" for event in ordered if event["stdout"])


def _children() -> dict:
    """``{parent pid: [child pids]}`` of every process."""
    tree = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def kill_tree(private_data_dir: str) -> None:
    """SIGKILL the processes of this job: those naming its private data dir (ansible-playbook and its
    forks, whoever their parent now is) and every process under them, wherever their session."""
    tree = _children()
    roots = []
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        if pid == os.getpid():
            continue
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                if private_data_dir.encode() in handle.read():
                    roots.append(pid)
        except OSError:
            continue
    doomed, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(tree.get(pid, []))
    for pid in reversed(doomed):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class JobRunner:
    """Runs the jobs of one ``Jobs`` table (one thread per job)."""

    def __init__(self, jobs, config: dict):
        self.jobs = jobs
        self.config = config
        self.threads = {}

    def start(self, job: dict, unsafe_keys) -> None:
        thread = threading.Thread(target=self._run, args=(job, set(unsafe_keys)), name="awxsim-job-%d" % job["id"],
                                  daemon=True)
        self.threads[job["id"]] = thread
        thread.start()

    # ------------------------------------------------------------ preparation

    def project_dir(self, job: dict) -> tuple:
        store = self.jobs.store
        project = store.objects["projects"].get(job["project"])
        if project is None:
            raise SetupError("The project of this job no longer exists.")
        local_path = project.get("local_path") or ""
        if not local_path or "/" in local_path or local_path in (".", ".."):
            raise SetupError("Project %r has no usable local_path (a directory name under the projects root)." % project["name"])
        root = os.path.realpath(self.config["projects_root"])
        path = os.path.join(root, local_path)
        if not os.path.isdir(path):
            raise SetupError("Project path %s does not exist." % local_path)
        playbook = job["playbook"] or ""
        real = os.path.realpath(os.path.join(path, playbook))
        if os.path.isabs(playbook) or ".." in playbook.split("/") or not os.path.isfile(real):
            raise SetupError("Playbook %r not found in project %r." % (playbook, project["name"]))
        return path, playbook

    def inventory(self, job: dict) -> dict:
        """The AWX inventory as a YAML/JSON inventory (``all.vars``, ``all.hosts``)."""
        store = self.jobs.store
        inv = store.objects["inventories"].get(job["inventory"])
        if inv is None:
            raise SetupError("The inventory of this job no longer exists.")
        if inv.get("kind"):
            raise SetupError("Inventory %r is a %s inventory: the AWX stand-in materializes only plain inventories "
                             "(their variables and hosts)." % (inv["name"], inv["kind"]))
        # Inventory sources bring hosts only through an inventory update, and the stand-in's updates
        # import none: a job sees the inventory's own hosts and groups (configure.yml's node group).
        try:
            variables = parse_vars(inv.get("variables") or "") or {}
        except ValueError as exc:
            raise SetupError("Inventory %r: variables are not JSON or YAML: %s" % (inv["name"], exc)) from None
        hosts, hosts_by_id = {}, {}
        for host in store.objects.get("hosts", {}).values():
            if host.get("inventory") == inv["id"] and host.get("enabled", True):
                hosts[host["name"]] = parse_vars(host.get("variables") or "") or {}
                hosts_by_id[host["id"]] = host["name"]
        group = {"vars": variables}
        if hosts:
            group["hosts"] = hosts
        children = {}
        for obj in store.objects.get("groups", {}).values():
            if obj.get("inventory") != inv["id"]:
                continue
            try:
                group_vars = parse_vars(obj.get("variables") or "") or {}
            except ValueError as exc:
                raise SetupError("Group %r: variables are not JSON or YAML: %s" % (obj["name"], exc)) from None
            members = store.associations.get(("groups", obj["id"], "hosts"), [])
            children[obj["name"]] = {"vars": group_vars,
                                     "hosts": {hosts_by_id[m]: {} for m in members if m in hosts_by_id}}
        if children:
            group["children"] = children
        return {"all": group}

    def credentials(self, job: dict, pdd: str) -> tuple:
        """``(env, safe_env, extra vars files)`` the job's credentials inject."""
        store = self.jobs.store
        env, safe_env, files = {}, {}, []
        for cred_id in job["credentials"]:
            cred = store.objects["credentials"].get(cred_id)
            if cred is None:
                raise SetupError("Credential %s of this job no longer exists." % cred_id)
            ctype = store.objects["credential_types"].get(cred["credential_type"])
            if ctype is None:
                raise SetupError("The credential type of credential %r no longer exists." % cred["name"])
            try:
                cred_env, cred_vars, cred_safe = injectors.render(ctype, cred.get("inputs") or {}, pdd)
            except Exception as exc:  # a template error of the type: AWX fails the job the same way
                raise SetupError("Credential %r: its type's injectors do not render: %s" % (
                    cred["name"], type(exc).__name__)) from None
            env.update(cred_env)
            safe_env.update(cred_safe)
            if cred_vars:
                path = os.path.join(pdd, "env", "extra_vars_%d" % cred_id)
                write_vars(path, cred_vars, set(cred_vars))
                files.append(path)
        return env, safe_env, files

    def base_env(self, job: dict, pdd: str) -> dict:
        env = dict(self.config.get("awx_task_env") or {})
        # this Python's ansible, wherever the stand-in was started from
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        env.update({"JOB_ID": str(job["id"]), "INVENTORY_ID": str(job["inventory"]), "PROJECT_REVISION": "",
                    "AWX_HOST": self.config.get("awx_host", ""), "AWX_PRIVATE_DATA_DIR": pdd,
                    "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_FORCE_COLOR": "True"})
        return env

    # ------------------------------------------------------------ the run

    def _step(self, job: dict, status: str, **fields) -> bool:
        """Move the job on; False when it already went elsewhere (canceled before it ran)."""
        with self.jobs.store.lock:
            if job["status"] in ("successful", "failed", "error", "canceled"):
                return False
            job.update(fields)
            self.jobs.set_status(job, status)
            return True

    def _run(self, job: dict, unsafe_keys: set) -> None:
        pdd = None
        try:
            if not self._step(job, "waiting"):
                return
            pdd = tempfile.mkdtemp(prefix="awx_%d_" % job["id"], dir=self.config.get("jobs_dir"))
            self.jobs.private_dirs[job["id"]] = pdd
            try:
                kwargs = self.prepare(job, pdd, unsafe_keys)
            except SetupError as exc:
                self._step(job, "error", result_traceback=str(exc), job_explanation="The job could not be prepared.")
                return
            if not self._step(job, "running"):
                return
            self.execute(job, kwargs)
        except Exception:  # pylint: disable=broad-except  # the job says what happened
            LOG.exception("job %s", job["id"])
            self._step(job, "error", result_traceback=traceback.format_exc())
        finally:
            if pdd and not self.config.get("keep_private_data_dir"):
                shutil.rmtree(pdd, ignore_errors=True)

    def prepare(self, job: dict, pdd: str, unsafe_keys: set) -> dict:
        project_dir, playbook = self.project_dir(job)
        inventory = self.inventory(job)
        os.makedirs(os.path.join(pdd, "env"), mode=0o700)
        os.makedirs(os.path.join(pdd, "inventory"), mode=0o700)
        with open(os.path.join(pdd, "inventory", "hosts.json"), "w", encoding="utf-8") as handle:
            json.dump(inventory, handle)
        env = self.base_env(job, pdd)
        cred_env, cred_safe, var_files = self.credentials(job, pdd)
        env.update(cred_env)
        safe = injectors.safe_environment(env)
        safe.update(cred_safe)
        job["job_env"] = safe
        write_vars(os.path.join(pdd, "env", "extravars"), parse_vars(job["extra_vars"]) or {}, unsafe_keys)
        cmdline = []
        for path in var_files:
            cmdline += ["-e", "@" + path]
        if job["job_type"] == "check":
            cmdline.append("--check")
        if job["diff_mode"]:
            cmdline.append("--diff")
        kwargs = {"private_data_dir": pdd, "project_dir": project_dir, "playbook": playbook,
                  "inventory": os.path.join(pdd, "inventory"), "envvars": env, "ident": str(job["id"]),
                  "cmdline": shlex.join(cmdline) if cmdline else None, "quiet": True,
                  "verbosity": job["verbosity"] or None, "limit": job["limit"] or None,
                  "tags": job["job_tags"] or None, "skip_tags": job["skip_tags"] or None,
                  "forks": job.get("forks") or None, "timeout": job.get("timeout") or None}
        return {key: value for key, value in kwargs.items() if value is not None}

    def execute(self, job: dict, kwargs: dict) -> None:
        import ansible_runner  # pylint: disable=import-outside-toplevel  # only where jobs run
        events = self.jobs.events.setdefault(job["id"], [])

        def on_event(raw):
            with self.jobs.store.lock:
                self.jobs.next_event_id += 1
                event = job_event(job["id"], self.jobs.next_event_id, raw)
                events.append(event)
                if event["event"] == "playbook_on_stats":
                    job["artifacts"] = event["event_data"].get("artifact_data") or {}
            return True

        def on_cancel_check():
            if not job["cancel_flag"]:
                return False
            # ansible-core's workers run in sessions of their own (os.setsid), out of reach of the
            # runner's kill of ansible-playbook's process group: the whole tree goes first, as
            # Receptor's cancel takes the whole work unit with it in AWX.
            kill_tree(kwargs["private_data_dir"])
            return True

        result = ansible_runner.run(event_handler=on_event, cancel_callback=on_cancel_check, **kwargs)
        status, explanation = result.status, ""
        if status in ("timeout", "canceled", "error"):
            kill_tree(kwargs["private_data_dir"])  # the runner's kill spared the forks' sessions
        if status == "timeout":
            status, explanation = "failed", "Job terminated due to timeout"
        elif status not in ("successful", "failed", "canceled"):
            status = "error"
        with self.jobs.store.lock:
            if job["status"] == "running":
                if status == "error":
                    job["result_traceback"] = "ansible-runner ended with status %s (rc %s)" % (result.status, result.rc)
                self.jobs.set_status(job, status, explanation)
