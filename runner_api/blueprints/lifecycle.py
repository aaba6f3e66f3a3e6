"""The pod's lifecycle operations: suspend, resume, change plan, backups (list, now), restore, reinstall,
terminate (customer side: mPanel's service
token acting for a customer, the customer itself where operations.py allows it, an admin), and
the admin's repair and retry of a failed order.

Every endpoint answers 202 with the queued task and ``Location`` (the pod, whose ``progress``
follows the task), and refuses, writing nothing: 403 (a role operations.py does not allow), 404
(no such pod, or another customer's), 422 (a bad body), 409 ``pod-not-startable`` naming the
pod's status, 409 ``operation-in-progress`` naming the open operation.
"""

from flask import Blueprint, current_app, jsonify

from .. import keys, operations, views
from ..auth import acting_customer, authenticate, require_role
from ..errors import Problem
from ..repository import DomainTaken, NotStartable, OperationInProgress
from .customer import _json_body

blueprint = Blueprint("lifecycle", __name__, url_prefix="/api/cloud-pods")


@blueprint.before_request
def _authenticated():
    authenticate()


def _state():
    return current_app.extensions["cloudpods"]


def _own_pod(pod_id):
    """The pod as the caller may see it: 404 when it does not exist or is another customer's. An
    admin sees every pod (X-Customer-Id, when given, narrows it as for the other endpoints)."""
    principal = require_role("customer", "service", "admin")
    customer = acting_customer(required=principal.role != "admin")
    row = _state().repository.get_subscription(pod_id)
    if row is None or (customer is not None and row["customer_id"] != customer):
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    return row


def not_startable(operation, status):
    return Problem(409, "Conflict", operation.not_startable(status), "pod-not-startable", pod_status=status)


def in_progress(exc):
    running = exc.running
    if running is None:
        return Problem(409, "Conflict", "Another operation on this pod is queued or running; retry when it is done.",
                       "operation-in-progress")
    return Problem(409, "Conflict", f"{running['task_type']} (task {running['id']}) is {running['status']} on this "
                   "pod; retry when it is done.", "operation-in-progress", running_operation=running["task_type"],
                   running_task_id=running["id"])


def accepted(task, pod):
    task.update(hostname=pod["hostname"], plan_code=pod["plan_code"])
    response = jsonify(views.task(task))
    response.status_code = 202
    response.headers["Location"] = f"/api/cloud-pods/{pod['id']}"
    return response


def arguments(name, body, state):
    """The task's ``params`` for operation ``name`` from its (schema-checked) body, and the check
    of them against the pod, run under the pod's lock before anything is written (None: none)."""
    if name == "RESTORE":
        return restore_arguments(body["archive"])
    if name != "CHANGE_PLAN":
        return {}, None
    code = body["plan_code"]
    new = state.plans.get(code)
    if new is None:
        raise Problem(422, "Unprocessable Content", f"There is no plan {code[:64]!r}; the plans are listed by "
                      "GET /api/cloud-pods/plans.", "unknown-plan")

    def check(pod):
        if pod["plan_code"] == code:
            raise Problem(409, "Conflict", f"The pod is on plan {code} already.", "same-plan",
                          plan_code=pod["plan_code"])
        current = state.plans.get(pod["plan_code"]) or {}
        if int(new.get("disk_gb") or 0) < int(current.get("disk_gb") or 0):
            raise Problem(409, "Conflict", f"Plan {code} has a {new.get('disk_gb')} GiB disk and the pod has "
                          f"{current.get('disk_gb')} GiB on plan {pod['plan_code']}: Proxmox VE cannot shrink a "
                          "disk. Nothing was changed.", "disk-would-shrink", plan_code=pod["plan_code"])
    return {"plan": code}, check


def restore_arguments(archive):
    """RESTORE: the archive (a vzdump CT archive's file name: the schema's pattern) must be one of the
    pod's archives as the worker last listed them (GET .../backups); restore.yml checks it again on
    the Proxmox host before anything changes."""
    def check(pod):
        listed = {entry.get("name") for entry in pod.get("backups") or []}
        if archive not in listed:
            when = views.iso(pod.get("backups_listed_at"))
            raise Problem(409, "Conflict", f"The pod has no archive {archive} among its archives as they were last "
                          f"listed ({when or 'never'}); GET /api/cloud-pods/{{id}}/backups lists them. Nothing was "
                          "changed.", "unknown-archive", listed_at=when)
    return {"archive": archive}, check


def queue(name, pod_id, body_schema=None, what=None):
    """Check who asks, the pod, the body; queue operation ``name``: the 202 answer."""
    operation = operations.get(name)
    require_role(*operation.roles)
    pod = _own_pod(pod_id)
    body = None
    if body_schema is not None:
        body, _lines = _json_body(_state(), body_schema, what)
        if keys.FIELD in body:  # _json_body leaves this field to the key rule: here it is one too many
            raise Problem(422, "Unprocessable Content", f"The {what} is not valid: {keys.FIELD}: not a field of it",
                          f"invalid-{what.replace(' ', '-')}", errors=[f"{keys.FIELD}: not a field of it"])
    reason = body.get("reason") if body is not None and name == "SUSPEND" else None
    state = _state()
    params, check = arguments(name, body, state) if body is not None else ({}, None)
    try:
        task = state.repository.start_operation(pod_id, operation.name, state.settings.max_attempts,
                                                operation.start_states, suspend_reason=reason, params=params,
                                                check=check)
    except NotStartable as exc:
        raise not_startable(operation, exc.status) from None
    except OperationInProgress as exc:
        raise in_progress(exc) from None
    if task is None:
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    return accepted(task, pod)


@blueprint.post("/<uuid:pod_id>/suspend")
def suspend(pod_id):
    """Stop the pod and keep it down at boot (suspend.yml); the reason is stored with the pod."""
    return queue("SUSPEND", pod_id, "SuspendRequest", "suspend request")


@blueprint.post("/<uuid:pod_id>/change-plan")
def change_plan(pod_id):
    """Move the pod to another plan (change_plan.yml): live, from ACTIVE or SUSPENDED; a downgrade
    whose disk would shrink is refused (409) before anything is written."""
    return queue("CHANGE_PLAN", pod_id, "ChangePlanRequest", "plan change request")


@blueprint.get("/<uuid:pod_id>/backups")
def backups(pod_id):
    """The pod's archives, newest first, as the worker last read them from the Proxmox host (after
    each backup, restore and reinstall, and every CLOUDPODS_BACKUP_LIST_SECONDS for all pods)."""
    pod = _own_pod(pod_id)
    return jsonify(views.backups(pod))


@blueprint.get("/<uuid:pod_id>/usage")
def usage(pod_id):
    """The pod's metered transfer: this month's and the previous months' (``cloudpods meter``)."""
    pod = _own_pod(pod_id)
    state = _state()
    months = state.repository.transfer_usage(pod_id)
    return jsonify(views.usage(pod, months, state.plans.quota_bytes(pod["plan_code"])))


@blueprint.post("/<uuid:pod_id>/backups")
def backup_now(pod_id):
    """One manual archive of the pod now (backup_now.yml), from ACTIVE or SUSPENDED."""
    return queue("BACKUP", pod_id)


@blueprint.post("/<uuid:pod_id>/restore")
def restore(pod_id):
    """Put one of the pod's archives back (restore.yml), after a safety backup of its current state."""
    return queue("RESTORE", pod_id, "RestoreRequest", "restore request")


@blueprint.post("/<uuid:pod_id>/reinstall")
def reinstall(pod_id):
    """A fresh container from the template with the same identity (reinstall.yml), after a backup."""
    return queue("REINSTALL", pod_id)


@blueprint.post("/<uuid:pod_id>/resume")
def resume(pod_id):
    """Start a SUSPENDED pod again (resume.yml)."""
    return queue("RESUME", pod_id)


@blueprint.post("/<uuid:pod_id>/terminate")
def terminate(pod_id):
    """Remove the pod (deprovision.yml: final backup, cron entry, its zone, the container)."""
    return queue("TERMINATE", pod_id)


@blueprint.post("/admin/<uuid:pod_id>/repair")
def repair(pod_id):
    """Converge the pod back to its plan (repair.yml); a SUSPENDED pod is suspended again after it."""
    return queue("REPAIR", pod_id)  # operations.py: admin only


@blueprint.post("/admin/<uuid:pod_id>/retry")
def retry(pod_id):
    """Queue a FAILED order's create again; provision.yml adopts the container the failed run left."""
    require_role("admin")
    pod = _own_pod(pod_id)
    state = _state()
    try:
        task = state.repository.retry_create(pod_id, state.settings.max_attempts)
    except NotStartable as exc:
        raise Problem(409, "Conflict", f"Only a FAILED order can be retried (its create failed for good); this pod "
                      f"is {exc.status}.", "pod-not-startable", pod_status=exc.status) from None
    except OperationInProgress as exc:
        raise in_progress(exc) from None
    except DomainTaken:
        raise Problem(409, "Conflict", f"The domain {pod['domain']} now belongs to another pod; this order cannot be "
                      "retried (terminate it to remove what it left).", "domain-taken") from None
    if task is None:
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    return accepted(task, pod)
