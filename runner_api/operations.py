"""The operations runner_api runs on a pod, in one place.

An operation is defined here and nowhere else: its playbook (in ``playbooks/``), how its extra
vars are built from a task row, the pod states it may start from, what it does to the pod's
status when it succeeds and when it fails for good, the message its success leaves in the
events, the progress steps a customer sees while it runs, and the roles that may ask for it.
``executors`` (the playbook), ``worker`` (extra vars, success message), ``repository``
(statuses), ``views`` (progress steps) and ``blueprints.admin`` (start states, roles) read it.

Adding an operation: an ``Operation`` in ``OPERATIONS`` with its playbook; if it is queued
(``queued=True``), its name must also be allowed by the ``task_type`` CHECK constraint of the
tasks table (migration 0004 allows CREATE_CONTAINER, RESTART, SUSPEND, RESUME, TERMINATE,
SET_SSH_KEYS, ISSUE_HTTPS, REPAIR, CHANGE_PLAN, REINSTALL, BACKUP, RESTORE, and 0008 TRANSFER_QUOTA;
any other name needs a new migration: an applied migration is never edited).

``HTTPS_RETRY`` (ISSUE_HTTPS) is the one background operation: nobody asks for it, the worker
queues it when a run reports HTTPS ``pending`` on an ACTIVE pod, and it never stands in the way
of an operation a person asks for (repository.py, "the background HTTPS retry").

The extra vars built here are order data: the executor writes them as ``!unsafe`` YAML
(``executors.write_untrusted_vars``); nothing here reaches a playbook any other way.
"""

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Optional


class UnknownOperation(ValueError):
    """A task or request names an operation this registry does not define."""

    def __init__(self, name):
        self.name = name
        super().__init__(f"unknown operation {str(name)[:64]!r}: runner_api/operations.py defines "
                         f"{', '.join(sorted(OPERATIONS))}")


@dataclass(frozen=True)
class Operation:
    name: str
    playbook: str  # a file in the playbook directory (CLOUDPODS_PLAYBOOK_DIR, default playbooks/)
    extra_vars: Callable[[Mapping], dict]  # task row -> the playbook's extra vars (untrusted data)
    start_states: tuple  # pod statuses it may start from
    success_status: Optional[str]  # the pod's status once it succeeds; None: unchanged
    failure_status: Optional[str]  # the pod's status once it failed for good; None: unchanged
    success_message: str  # the worker's last event row ("completed"); the run's stats follow it
    verb: str  # "Only an ACTIVE pod can be <verb>"
    progress_steps: tuple = ()  # (role, what a customer reads), in playbook order
    roles: tuple = ()  # the API roles that may ask for it; () = no endpoint queues it
    queued: bool = True  # runs through the queue (its name is an allowed task_type)
    background: bool = False  # the worker queues it; never counted as the pod's open operation

    def may_start_from(self, status):
        return status in self.start_states

    def not_startable(self, status):
        """The sentence for a pod whose status this operation cannot start from."""
        allowed = " or ".join(self.start_states)
        article = "an" if allowed[:1] in "AEIOU" else "a"
        return f"Only {article} {allowed} pod can be {self.verb}; this one is {status}."


HTTPS_RETRY = "ISSUE_HTTPS"
BACKUP_CATALOG = "BACKUP_CATALOG"


def _keys(task):
    """The pod's wanted SSH keys (normalised lines, ``subscription.ssh_public_keys``) as a new list."""
    return [str(line) for line in (task.get("ssh_public_keys") or [])]


def _create_vars(task):
    return {"pod": task["hostname"], "plan": task["plan_code"], "domain": task["domain"] or "",
            "customer_email": task["customer_email"], "ssh_public_keys": _keys(task)}


def _no_vars(_task):
    return {}


def _pod_vars(task):
    return {"pod": task["hostname"]}


def _keys_vars(task):
    """SET_SSH_KEYS: the subscription holds the wanted keys (written with the task, in one
    transaction); the playbook converges the pod's authorized_keys to exactly them."""
    return {"pod": task["hostname"], "ssh_public_keys": _keys(task)}


def _repair_vars(task):
    """REPAIR converges the keys too when the caller knows them (a subscription row); without
    ``ssh_public_keys`` the playbook leaves the pod's keys as they are."""
    variables = {"pod": task["hostname"]}
    if task.get("ssh_public_keys") is not None:
        variables["ssh_public_keys"] = _keys(task)
    return variables


def _repair_or_resuspend_vars(task):
    """REPAIR from the API: as ``_repair_vars``; on a SUSPENDED pod ``suspended: true`` too, so
    repair.yml (which must start the container to repair inside it) suspends it again at its end."""
    variables = _repair_vars(task)
    if task.get("pod_status") == "SUSPENDED":
        variables["suspended"] = True
    return variables


# Every status but TERMINATED (terminate, repair). A PROVISIONING pod has its create open, so an
# operation asked for meanwhile is refused as "in progress" naming it.
NOT_TERMINATED = ("PROVISIONING", "ACTIVE", "SUSPENDED", "FAILED")
# The reasons a suspension may have (migration 0004's CHECK on subscriptions.suspend_reason).
SUSPEND_REASONS = ("non-payment", "abuse", "admin")


def _change_plan_vars(task):
    """CHANGE_PLAN: the new plan is the task's own argument (``params.plan``, checked by the API
    against the catalogue when it was asked for)."""
    return {"pod": task["hostname"], "plan": str((task.get("params") or {}).get("plan", ""))}


def _restore_vars(task):
    """RESTORE: the archive is the task's own argument (``params.archive``: a bare vzdump file name the
    API checked against the pod's listed archives). The subscription's SSH keys replace the archive's,
    so a key the customer removed since that backup does not come back with it."""
    return {"pod": task["hostname"], "archive": str((task.get("params") or {}).get("archive", "")),
            "plan": task["plan_code"], "domain": task["domain"] or "", "ssh_public_keys": _keys(task)}


def _reinstall_vars(task):
    """REINSTALL: the same identity (plan, domain) and the subscription's SSH keys in the new pod."""
    return {"pod": task["hostname"], "plan": task["plan_code"], "domain": task["domain"] or "",
            "ssh_public_keys": _keys(task)}


def _transfer_quota_vars(task):
    """TRANSFER_QUOTA (queued by ``cloudpods meter``, runner_api/metering.py): the mail to send (``notice``:
    warning at 80%, exceeded at 100%, empty: none) with the month's figures, and ``rate_mbps`` when the
    throttle on the pod's net0 changes (0: lifted). Without ``rate_mbps`` the playbook leaves net0 alone."""
    params = task.get("params") or {}
    variables = {"pod": task["hostname"], "plan": task["plan_code"], "customer_email": task["customer_email"],
                 "used_bytes": str(int(params.get("used_bytes") or 0)),
                 "quota_bytes": str(int(params.get("quota_bytes") or 0)),
                 "action": str(params.get("action") or "throttle"),
                 "throttle_mbps": str(float(params.get("throttle_mbps") or 1))}
    if params.get("notice"):
        variables.update(notice=str(params["notice"]), month=str(params.get("month") or ""))
    if params.get("rate_mbps") is not None:
        variables["rate_mbps"] = str(float(params["rate_mbps"]))
    return variables


def _terminate_vars(task):
    variables = {"pod": task["hostname"]}
    if task["domain"]:
        variables["domain"] = task["domain"]  # the zone to remove when the container is already gone
    return variables


OPERATIONS = MappingProxyType({operation.name: operation for operation in (
    Operation(
        "CREATE_CONTAINER", "provision.yml", _create_vars,
        # The order writes the PROVISIONING pod and this task in one transaction.
        start_states=("PROVISIONING",), success_status="ACTIVE", failure_status="FAILED",
        success_message="pod is ACTIVE", verb="provisioned",
        # The provision playbook's roles in order, with the words a customer reads.
        progress_steps=(
            ("pod_container", "Creating your container"),
            ("pod_firewall", "Securing your pod's network"),
            ("pod_first_boot", "Installing the web stack"),
            ("pod_dns", "Setting up DNS"),
            ("pod_https", "Getting your HTTPS certificate"),
            ("pod_backup", "Configuring backups"),
            ("pod_mail", "Sending the welcome email"),
        ),
        # POST /order (blueprints/customer.py).
        roles=("customer", "service", "admin")),
    Operation(
        "RESTART", "restart.yml", _pod_vars,
        start_states=("ACTIVE",), success_status=None, failure_status=None,
        success_message="RESTART done", verb="restarted",
        roles=("admin",)),  # POST /admin/{id}/restart
    Operation(
        "TERMINATE", "deprovision.yml", _terminate_vars,
        # Final backup, cron entry, the zone (when the pod owns it) and the container removed; the
        # TERMINATED pod no longer holds its domain (migration 0001's live_domain index).
        start_states=NOT_TERMINATED, success_status="TERMINATED", failure_status=None,
        success_message="TERMINATE done", verb="terminated",
        roles=("customer", "service", "admin")),  # POST /{id}/terminate
    Operation(
        "SUSPEND", "suspend.yml", _pod_vars,
        # The reason (SUSPEND_REASONS) is written on the subscription with the task.
        start_states=("ACTIVE",), success_status="SUSPENDED", failure_status=None,
        success_message="pod is SUSPENDED", verb="suspended",
        roles=("service", "admin")),  # POST /{id}/suspend
    Operation(
        "RESUME", "resume.yml", _pod_vars,
        start_states=("SUSPENDED",), success_status="ACTIVE", failure_status=None,
        success_message="pod is ACTIVE again", verb="resumed",
        roles=("service", "admin")),  # POST /{id}/resume
    Operation(
        "SET_SSH_KEYS", "ssh_keys.yml", _keys_vars,
        start_states=("ACTIVE",), success_status=None, failure_status=None,
        success_message="SSH keys updated", verb="given new SSH keys",
        roles=("customer", "service", "admin")),  # PUT /{id}/ssh-keys
    Operation(
        HTTPS_RETRY, "https.yml", _pod_vars,
        # Queued by the worker (repository.complete) while HTTPS is pending on an ACTIVE pod.
        start_states=("ACTIVE",), success_status=None, failure_status=None,
        success_message="HTTPS step done", verb="given a certificate", background=True),
    Operation(
        "CHANGE_PLAN", "change_plan.yml", _change_plan_vars,
        # Cores, memory and swap live, the disk grown, firewall and backups to the new plan; the
        # pod's plan_code becomes params.plan once it succeeded (plan_after). A downgrade whose disk
        # would shrink is refused by the API (409) before anything is written, and again by the
        # playbook's first play (a precondition: not retried).
        start_states=("ACTIVE", "SUSPENDED"), success_status=None, failure_status=None,
        success_message="plan changed", verb="moved to another plan",
        roles=("customer", "service", "admin")),  # POST /{id}/change-plan
    Operation(
        "REPAIR", "repair.yml", _repair_or_resuspend_vars,
        start_states=NOT_TERMINATED, success_status=None, failure_status=None,
        success_message="REPAIR done", verb="repaired",
        roles=("admin",)),  # POST /admin/{id}/repair
    Operation(
        "BACKUP", "backup_now.yml", _pod_vars,
        # One manual archive now (vzdump on the Proxmox host), the pod's list of archives read again.
        start_states=("ACTIVE", "SUSPENDED"), success_status=None, failure_status=None,
        success_message="backup taken", verb="backed up",
        roles=("customer", "service", "admin")),  # POST /{id}/backups
    Operation(
        "RESTORE", "restore.yml", _restore_vars,
        # A safety backup, then `pct restore --force 1` of params.archive onto the pod's VMID, the pod
        # converged (started, site, DNS, HTTPS, backups); a SUSPENDED pod is not restored (it would start).
        start_states=("ACTIVE",), success_status=None, failure_status=None,
        success_message="archive restored", verb="restored",
        progress_steps=(
            ("pod_backup", "Taking a safety backup"),
            ("pod_container", "Restoring your pod"),
            ("pod_first_boot", "Checking the web stack"),
            ("pod_dns", "Checking DNS"),
            ("pod_https", "Checking your HTTPS certificate"),
        ),
        roles=("customer", "service", "admin")),  # POST /{id}/restore
    Operation(
        "REINSTALL", "reinstall.yml", _reinstall_vars,
        # A backup, then a fresh container from the template with the same VMID, MAC, domain and keys.
        start_states=("ACTIVE",), success_status=None, failure_status=None,
        success_message="pod reinstalled", verb="reinstalled",
        progress_steps=(
            ("pod_backup", "Backing up your pod"),
            ("pod_container", "Creating your container again"),
            ("pod_firewall", "Securing your pod's network"),
            ("pod_first_boot", "Installing the web stack"),
            ("pod_dns", "Setting up DNS"),
            ("pod_https", "Getting your HTTPS certificate"),
        ),
        roles=("customer", "service", "admin")),  # POST /{id}/reinstall
    Operation(
        "TRANSFER_QUOTA", "transfer_quota.yml", _transfer_quota_vars,
        # Queued by `cloudpods meter` when a pod reaches 80% or 100% of its plan's monthly transfer, and
        # when the throttle must be set or lifted (next month, or a plan with a larger quota). On success
        # the pod's transfer_rate_mbps and the month's notified_level follow params (repository.complete).
        start_states=("ACTIVE", "SUSPENDED"), success_status=None, failure_status=None,
        success_message="transfer quota applied", verb="given its transfer quota"),
    Operation(
        BACKUP_CATALOG, "backup_catalog.yml", _no_vars,
        # Not a task: an idle worker runs it every CLOUDPODS_BACKUP_LIST_SECONDS for all pods at once
        # (worker.py, repository.claim_periodic) and stores each pod's archives (GET .../backups).
        start_states=(), success_status=None, failure_status=None,
        success_message="archives listed", verb="listed", queued=False),
)})


def find(name):
    """The operation called ``name``, or None."""
    return OPERATIONS.get(name) if isinstance(name, str) else None


def get(name):
    """The operation called ``name``; ``UnknownOperation`` if there is none."""
    operation = find(name)
    if operation is None:
        raise UnknownOperation(name)
    return operation


def extra_vars(task):
    """The playbook's extra vars for a task row (``task_type`` names the operation)."""
    return get(task["task_type"]).extra_vars(task)


def playbooks():
    """Operation name -> playbook file name."""
    return {name: operation.playbook for name, operation in OPERATIONS.items()}


def success_status(task_type):
    """The pod's status after a successful task of this type (None: unchanged, or unknown type)."""
    operation = find(task_type)
    return operation.success_status if operation else None


def failure_status(task_type):
    """The pod's status after a task of this type failed for good (None: unchanged, or unknown type)."""
    operation = find(task_type)
    return operation.failure_status if operation else None


def plan_after(task):
    """The pod's plan once ``task`` succeeded when the task changes it (CHANGE_PLAN), else None."""
    if task.get("task_type") == "CHANGE_PLAN":
        return (task.get("params") or {}).get("plan") or None
    return None


def background_types():
    """The names of the background operations (never the pod's "open operation")."""
    return tuple(name for name, operation in OPERATIONS.items() if operation.background)


def progress_steps(task_type):
    operation = find(task_type)
    return operation.progress_steps if operation else ()
