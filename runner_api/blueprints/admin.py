"""Admin endpoints: every pod, the provisioning queue, operations on a pod."""

import re
import uuid

from flask import Blueprint, current_app, jsonify, request

from .. import operations, paging, views, webhooks
from ..auth import authenticate, require_role
from ..errors import Problem
from ..repository import OperationInProgress

blueprint = Blueprint("admin", __name__, url_prefix="/api/cloud-pods/admin")

# The values of a boolean query parameter (openapi.yaml, components/schemas/QueryBoolean), in any case.
QUERY_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# A pod id as the OpenAPI document has it: format uuid, the hyphenated form.
POD_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@blueprint.before_request
def _admin_only():
    authenticate()
    require_role("admin")


def _state():
    return current_app.extensions["cloudpods"]


def query_boolean(name, default=False):
    """A boolean query parameter: absent is ``default``; anything but one of QUERY_BOOLEANS, given once, is a 400."""
    values = request.args.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise Problem(400, "Bad Request", f"The query parameter {name!r} is given {len(values)} times; give it once.",
                      "invalid-parameter", parameter=name)
    value = QUERY_BOOLEANS.get(values[0].lower())
    if value is None:
        raise Problem(400, "Bad Request", f"The query parameter {name!r} must be one of "
                      f"{', '.join(QUERY_BOOLEANS)}; got {values[0][:64]!r}.", "invalid-parameter", parameter=name)
    return value


def pod_id_from_path(value):
    if not POD_ID.match(value):
        raise Problem(400, "Bad Request", f"The pod id {value[:64]!r} is not a UUID.", "invalid-pod-id",
                      parameter="id")
    return uuid.UUID(value)


@blueprint.get("/all")
def all_pods():
    size, after = paging.limit(), paging.pods_cursor("all")
    rows = _state().repository.list_subscriptions(limit=size + 1, after=after)
    rows, cursor = paging.page(rows, size, lambda row: paging.encode("all", row["created_at"].isoformat(),
                                                                     str(row["id"])))
    return jsonify(pods=[views.pod(row, admin=True) for row in rows], next=cursor,
                   links=paging.links("/api/cloud-pods/admin/all", size, cursor))


@blueprint.get("/provisioning-queue")
def provisioning_queue():
    include_finished = query_boolean("all")
    size, before = paging.limit(), paging.tasks_cursor("queue")
    rows = _state().repository.queue(include_finished, limit=size + 1, before_id=before)
    rows, cursor = paging.page(rows, size, lambda row: paging.encode("queue", row["id"]))
    return jsonify(tasks=[views.task(row) for row in rows], next=cursor,
                   links=paging.links("/api/cloud-pods/admin/provisioning-queue", size, cursor,
                                      all="true" if include_finished else None))


@blueprint.post("/<pod_id>/restart")
def restart(pod_id):
    operation = operations.get("RESTART")
    require_role(*operation.roles)
    pod_id = pod_id_from_path(pod_id)
    state = _state()
    pod = state.repository.get_subscription(pod_id)
    if pod is None:
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    if not operation.may_start_from(pod["status"]):
        raise Problem(409, "Conflict", operation.not_startable(pod["status"]), "pod-not-active")
    try:
        task = state.repository.enqueue_operation(pod_id, operation.name, state.settings.max_attempts)
    except OperationInProgress:
        raise Problem(409, "Conflict", "Another operation on this pod is queued or running; retry when it is "
                      "done.", "operation-in-progress") from None
    task.update(hostname=pod["hostname"], plan_code=pod["plan_code"])
    return jsonify(views.task(task)), 202


# ---------------------------------------------------------------- webhooks (runner_api/webhooks.py)

@blueprint.get("/webhooks")
def webhook_deliveries():
    """The webhook outbox, newest first: ?status=pending|failed|delivered, ?pod=<id>, ?limit, ?cursor
    (paged like the other lists: runner_api/paging.py)."""
    status = paging.single("status")
    if status is not None and status not in webhooks.STATUSES:
        raise Problem(400, "Bad Request", f"The query parameter 'status' must be one of {', '.join(webhooks.STATUSES)}; "
                      f"got {status[:64]!r}.", "invalid-parameter", parameter="status")
    pod = paging.single("pod")
    if pod is not None and not POD_ID.match(pod):
        raise Problem(400, "Bad Request", f"The query parameter 'pod' must be a pod id (a UUID); got {pod[:64]!r}.",
                      "invalid-parameter", parameter="pod")
    size, before = paging.limit(), paging.tasks_cursor("webhooks")
    state = _state()
    rows = webhooks.list_deliveries(state.repository.pool, status=status, pod_id=uuid.UUID(pod) if pod else None,
                                    before=before, limit=size)
    rows, cursor = paging.page(rows, size, lambda row: paging.encode("webhooks", row["id"]))
    return jsonify(configured=bool(state.settings.webhook_url), deliveries=[webhooks.delivery_view(row) for row in rows],
                   next=cursor, links=paging.links("/api/cloud-pods/admin/webhooks", size, cursor, status=status, pod=pod))
