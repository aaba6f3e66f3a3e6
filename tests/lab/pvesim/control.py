"""``/_lab``: the lab's own control endpoints (not part of PVE).

JSON in, ``{"data": ...}`` out, guarded by the ``X-Lab-Key`` header. They let tests
inject faults, hold a task running until they release it, read the whole state, tune
task durations, add tokens, change a container behind the API's back, and reset everything.
"""

import hmac
import re

from .acl import token_from_spec
from .config import TASK_TYPES
from .errors import ApiError

_ROUTES = []


def _control(method: str, pattern: str):
    def register(function):
        _ROUTES.append((method, re.compile(pattern), function))
        return function
    return register


class ControlApi:
    def __init__(self, app):
        self.app = app

    def handle(self, method: str, path: str, key: str | None, body):
        """Return the data for a control request; raise ApiError on bad requests."""
        expected = self.app.config.control_key
        if not expected:
            raise ApiError(404, "control API disabled (no control_key configured)")
        if not key or not hmac.compare_digest(key.encode(), str(expected).encode()):
            raise ApiError(401, "invalid or missing X-Lab-Key")
        for route_method, pattern, function in _ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                try:
                    return function(self.app, body, *match.groups())
                except (KeyError, TypeError, ValueError) as exc:
                    raise ApiError(400, f"bad control request: {exc}") from exc
        raise ApiError(404, f"no control endpoint {method} {path}")


@_control("GET", r"/_lab/health")
def health(app, _body):
    cluster = app.cluster
    with cluster.lock:
        placement = {str(vmid): ct.node for vmid, ct in sorted(cluster.containers.items())}
        nodes = {name: "online" if node.online else "offline" for name, node in cluster.nodes.items()}
    return {"ok": True, "node": cluster.node, "backend": cluster.backend.name, "nodes": nodes,
            "quorate": cluster.quorate, "containers": placement}


@_control("GET", r"/_lab/nodes")
def nodes(app, _body):
    return app.cluster.lab_nodes()


@_control("POST", r"/_lab/nodes/([a-zA-Z0-9][a-zA-Z0-9\-]*)")
def set_node(app, body, name):
    """``{"status": "offline"|"online", "reason": "Connection refused", "offline_for": 600}``."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return app.cluster.lab_set_node(name, body)


@_control("POST", r"/_lab/quorum")
def set_quorum(app, body):
    """``{"quorate": false}``: create, clone and start fail as PVE's check_cfs_quorum makes them."""
    if not isinstance(body, dict) or not isinstance(body.get("quorate"), bool):
        raise ValueError('body must be {"quorate": true|false}')
    return app.cluster.lab_set_quorum(body["quorate"])


@_control("GET", r"/_lab/state")
def state(app, _body):
    data = app.cluster.lab_state()
    data["requests"] = app.requests.entries()
    data["faults"] = app.cluster.faults.describe()
    data["config"] = _runtime_config(app)
    data["tokens"] = app.tokens.describe()
    data["access"] = app.access.describe()
    return data


@_control("GET", r"/_lab/requests")
def requests_log(app, _body):
    return app.requests.entries()


@_control("DELETE", r"/_lab/requests")
def clear_requests(app, _body):
    app.requests.clear()


@_control("GET", r"/_lab/faults")
def faults(app, _body):
    return app.cluster.faults.describe()


@_control("POST", r"/_lab/faults")
def add_fault(app, body):
    specs = body if isinstance(body, list) else [body]
    for spec in specs:
        if not isinstance(spec, dict):
            raise ValueError("a fault is a JSON object")
        for kind in ("task_fail", "task_hold"):
            task = spec.get(kind)
            if task is not None and task.get("type") not in TASK_TYPES + ["vztemplate", "imgdel"]:
                raise ValueError(f"unknown task type {task.get('type')!r}")
        app.cluster.faults.add(spec)
    return app.cluster.faults.describe()


@_control("GET", r"/_lab/holds")
def holds(app, _body):
    return [hold.describe() for hold in app.cluster.faults.holds()]


@_control("POST", r"/_lab/holds/wait")
def wait_held(app, body):
    """Answer once the oldest unreleased hold (of ``type``) holds its task (``{"held": true}``),
    or after ``timeout`` seconds (``{"held": false}``)."""
    body = body or {}
    timeout = min(120.0, max(0.0, float(body.get("timeout", 30))))
    active = [hold for hold in app.cluster.faults.holds(body.get("type"))
              if hold.state() in ("pending", "taken", "holding")]
    if not active:
        raise ValueError("no unreleased task hold of that type (add one with task_hold first)")
    if active[0].wait_held(timeout):
        return {"held": True, "hold": active[0].describe()}
    return {"held": False, "holds": [hold.describe() for hold in active]}


@_control("POST", r"/_lab/holds/release")
def release_holds(app, body):
    return app.cluster.faults.release_holds((body or {}).get("type"))


@_control("DELETE", r"/_lab/faults")
def clear_faults(app, _body):
    app.cluster.faults.clear()


@_control("GET", r"/_lab/config")
def get_config(app, _body):
    return _runtime_config(app)


@_control("POST", r"/_lab/config")
def set_config(app, body):
    unknown = set(body) - {"task_durations", "default_task_duration", "dhcp_delay",
                           "auth_failure_delay", "task_jitter"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    values = app.config.values
    for task_type, seconds in body.get("task_durations", {}).items():
        if task_type not in TASK_TYPES + ["vztemplate", "imgdel"]:
            raise ValueError(f"unknown task type {task_type!r}")
        values["task_durations"][task_type] = max(0.0, float(seconds))
    for key in ("default_task_duration", "auth_failure_delay"):
        if key in body:
            values[key] = max(0.0, float(body[key]))
    if "task_jitter" in body:
        values["task_jitter"] = min(1.0, max(0.0, float(body["task_jitter"])))
    if "dhcp_delay" in body:
        app.cluster.set_dhcp_delay(max(0.0, float(body["dhcp_delay"])))
    return _runtime_config(app)


def _runtime_config(app) -> dict:
    values = app.config.values
    return {"task_durations": {kind: app.config.task_duration(kind) for kind in TASK_TYPES},
            "default_task_duration": values["default_task_duration"],
            "task_jitter": values["task_jitter"],
            "dhcp_delay": values["dhcp_delay"], "auth_failure_delay": values["auth_failure_delay"],
            "node": values["node"],
            "template_vmid": values["template_vmid"]}


@_control("GET", r"/_lab/tokens")
def tokens(app, _body):
    return app.tokens.describe()


@_control("POST", r"/_lab/tokens")
def add_token(app, body):
    token = token_from_spec(body)
    app.tokens.add(token)
    return token.describe()


@_control("DELETE", r"/_lab/tokens/(.+)")
def remove_token(app, _body, token_id):
    if not app.tokens.remove(token_id):
        raise ApiError(404, f"no token {token_id}")


@_control("PUT", r"/_lab/containers/(\d+)")
def set_container(app, body, vmid):
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object of config keys")
    return app.cluster.lab_set_container(int(vmid), body)


@_control("POST", r"/_lab/containers/(\d+)/traffic")
def add_traffic(app, body, vmid):
    """``{"netin": bytes, "netout": bytes}`` added to a running CT's counters (memory backend)."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return app.cluster.lab_add_traffic(int(vmid), body)


@_control("POST", r"/_lab/containers/(\d+)/addresses")
def add_address(app, body, vmid):
    """``{"address": "10.99.0.200/16", "name": "eth0"}``: ``ip addr add`` inside the running CT."""
    return app.cluster.lab_add_address(int(vmid), body.get("name", "eth0"), body["address"])


@_control("POST", r"/_lab/reset")
def reset(app, _body):
    app.reset()
    return {"reset": True}
