"""Admin endpoints: every pod, the provisioning queue, operations on a pod."""

from flask import Blueprint, current_app, jsonify, request

from .. import views
from ..auth import authenticate, require_role
from ..errors import Problem
from ..repository import OperationInProgress

blueprint = Blueprint("admin", __name__, url_prefix="/api/cloud-pods/admin")


@blueprint.before_request
def _admin_only():
    authenticate()
    require_role("admin")


def _state():
    return current_app.extensions["cloudpods"]


@blueprint.get("/all")
def all_pods():
    rows = _state().repository.list_subscriptions()
    return jsonify(pods=[views.pod(row, admin=True) for row in rows])


@blueprint.get("/provisioning-queue")
def provisioning_queue():
    include_finished = request.args.get("all", "").lower() in ("1", "true", "yes")
    return jsonify(tasks=[views.task(row) for row in _state().repository.queue(include_finished)])


@blueprint.post("/<uuid:pod_id>/restart")
def restart(pod_id):
    state = _state()
    pod = state.repository.get_subscription(pod_id)
    if pod is None:
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    if pod["status"] != "ACTIVE":
        raise Problem(409, "Conflict", f"Only an ACTIVE pod can be restarted; this one is {pod['status']}.",
                      "pod-not-active")
    try:
        task = state.repository.enqueue_operation(pod_id, "RESTART", state.settings.max_attempts)
    except OperationInProgress:
        raise Problem(409, "Conflict", "Another operation on this pod is queued or running; retry when it is "
                      "done.", "operation-in-progress") from None
    task.update(hostname=pod["hostname"], plan_code=pod["plan_code"])
    return jsonify(views.task(task)), 202
