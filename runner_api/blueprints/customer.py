"""Customer endpoints (portal, or mPanel with a service token acting for a customer)."""

import hashlib
import json
import secrets

import jsonschema
from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import grammar, keys, operations, paging, views
from ..auth import acting_customer, authenticate, require_role
from ..errors import Problem
from ..repository import DomainTaken, IdempotencyMismatch, NotStartable, OperationInProgress

blueprint = Blueprint("customer", __name__, url_prefix="/api/cloud-pods")


@blueprint.before_request
def _authenticated():
    authenticate()


def _state():
    return current_app.extensions["cloudpods"]


def normalise_domain(value):
    """Lower case, IDN in its xn-- form, no trailing dot; None if not a domain name of two labels or more."""
    return grammar.domain(value)


def _strings(value):
    """Every string in a parsed JSON value, keys too (iterative: the nesting may be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


@blueprint.get("/my-pods")
def my_pods():
    customer = acting_customer()
    size, after = paging.limit(), paging.pods_cursor("my-pods")
    rows = _state().repository.list_subscriptions(customer_id=customer, limit=size + 1, after=after)
    rows, cursor = paging.page(rows, size, lambda row: paging.encode("my-pods", row["created_at"].isoformat(),
                                                                     str(row["id"])))
    return jsonify(pods=[views.pod(row) for row in rows], next=cursor,
                   links=paging.links("/api/cloud-pods/my-pods", size, cursor))


@blueprint.get("/<uuid:pod_id>")
def pod_detail(pod_id):
    state = _state()
    principal = g.principal
    row = state.repository.get_subscription(pod_id)
    if principal.role == "admin":
        customer = acting_customer(required=False)
    else:
        customer = acting_customer()
    # Another customer's pod looks exactly like a pod that does not exist.
    if row is None or (customer is not None and row["customer_id"] != customer):
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    latest = state.repository.latest_task(pod_id)
    events = state.repository.task_events(latest["id"]) if latest else []
    body = views.pod(row, admin=principal.role == "admin")
    body["progress"] = views.progress(latest, events)
    return jsonify(body)


def _read_body(limit):
    """The raw body, at most ``limit`` bytes: 413 past it, chunked bodies included (never cut short)."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    stream = request.stream
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        # Chunked: Werkzeug's stream stops quietly at the limit, which would cut the body and accept
        # what is left. The server's own stream (gunicorn decodes the chunks) tells what is past it.
        stream = request.environ["wsgi.input"]
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


def _json_body(state, schema_name, what):
    """The request's JSON object, checked against ``schema_name`` of the OpenAPI document; 415,
    413, 400 or 422 (problem+json, ``errors`` naming every problem) otherwise.

    ``ssh_public_keys`` is checked by the key rule alone (``keys.check``), never by jsonschema:
    jsonschema's messages quote the value ("'-----BEGIN ...' is not of type 'array'"), and an
    entry may be a private key pasted by mistake. Returns ``(body, key_lines)``; ``key_lines`` is
    None when the body has no ``ssh_public_keys``.
    """
    if not request.is_json:
        raise Problem(415, "Unsupported Media Type", f"The {what} must be sent as application/json.",
                      "unsupported-media-type")
    raw = _read_body(current_app.config["MAX_CONTENT_LENGTH"])
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "Bad Request", "The request body is not valid JSON (or nested too deeply).",
                      "malformed-json") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "The request body must be a JSON object.", "malformed-json")
    for text in _strings(body):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Problem(400, "Bad Request", "The request body holds a string that is not valid Unicode text "
                          "(a lone surrogate escape).", "malformed-json") from None
    rest = {name: value for name, value in body.items() if name != keys.FIELD}
    schema = dict(state.openapi, **{"$ref": f"#/components/schemas/{schema_name}"})
    problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(rest), key=lambda e: list(e.path))
    messages = [_schema_message(error) for error in problems
                if not (error.validator == "required" and keys.FIELD in error.message)]
    lines = None
    if keys.FIELD in body:
        lines, key_errors = keys.check(body[keys.FIELD])
        messages += key_errors
    elif keys.FIELD in schema_required(state, schema_name):
        messages.append(f"{keys.FIELD}: required (a list of OpenSSH public keys; [] for none)")
    if messages:
        raise Problem(422, "Unprocessable Content", f"The {what} is not valid: " + "; ".join(messages),
                      f"invalid-{what.replace(' ', '-')}", errors=messages)
    return body, lines


def _schema_message(error):
    """jsonschema's message for one problem; one that would quote a private key (pasted as a field
    name, say) says so instead of repeating it."""
    where = ".".join(str(p) for p in error.path) or "body"
    if keys.looks_private(error.message):
        return f"{where}: holds a PRIVATE key (not repeated here): never send it anywhere"
    return f"{where}: {error.message}"


def _quoted(value):
    """A field's value as an error message quotes it: JSON, unless it holds a private key."""
    text = json.dumps(value)
    return "the value (a PRIVATE key: not repeated here)" if keys.looks_private(text) else text


def schema_required(state, schema_name):
    return state.openapi["components"]["schemas"][schema_name].get("required", [])


def order_digest_parts(plan_code, domain, email, key_lines):
    """What an Idempotency-Key's order is made of. The keys (normalised lines, in order) count only
    when there are any, so an order without keys has the digest it had before keys existed."""
    parts = [plan_code, domain, email.lower()]
    if key_lines:
        parts.append(list(key_lines))
    return parts


@blueprint.post("/order")
def order():
    state = _state()
    require_role(*operations.get("CREATE_CONTAINER").roles)
    customer = acting_customer()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not grammar.printable_token(key):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 128 printable ASCII characters.",
                      "invalid-idempotency-key")
    body, key_lines = _json_body(state, "OrderRequest", "order")
    if state.plans.get(body["plan_code"]) is None:
        raise Problem(422, "Unprocessable Content", f"There is no plan {body['plan_code']!r}; see "
                      "GET /api/cloud-pods/plans.", "unknown-plan")
    domain = None
    if body.get("domain"):
        domain = normalise_domain(body["domain"])
        if domain is None:
            raise Problem(422, "Unprocessable Content", f"domain: {_quoted(body['domain'])} is not a domain "
                          "name (letters, digits and '-' in labels of at most 63 characters, two labels or more; "
                          "no spaces or control characters).", "invalid-domain", errors=["domain: not a domain name"])
    email = grammar.email(body["customer_email"])
    if email is None:
        raise Problem(422, "Unprocessable Content", f"customer_email: {_quoted(body['customer_email'])} is not "
                      "a mail address we can send to: an ASCII local part (letters, digits and "
                      "!#$&'*+/=?^_`|~- separated by single dots), '@' and a domain name; no spaces, control "
                      "characters, quotes, brackets, commas, '{', '}' or '%'.", "invalid-email",
                      errors=["customer_email: not a mail address"])
    digest = hashlib.sha256(json.dumps(order_digest_parts(body["plan_code"], domain, email, key_lines))
                            .encode()).hexdigest()
    order_row = {"customer_id": customer, "customer_email": email, "plan_code": body["plan_code"],
                 "domain": domain, "hostname": "cp-" + secrets.token_hex(5), "idempotency_key": key,
                 "request_digest": digest, "ssh_public_keys": key_lines or []}
    try:
        row, created = state.repository.create_order(order_row, state.settings.max_attempts)
    except DomainTaken:
        raise Problem(409, "Conflict", f"The domain {domain} already belongs to a pod.", "domain-taken") from None
    except IdempotencyMismatch:
        raise Problem(422, "Unprocessable Content", "This Idempotency-Key was used for a different order.",
                      "idempotency-key-reused") from None
    location = f"/api/cloud-pods/{row['id']}"
    response = jsonify(id=str(row["id"]), status=row["status"], hostname=row["hostname"], links={"self": location})
    response.status_code = 202 if created else 200
    response.headers["Location"] = location
    return response


@blueprint.put("/<uuid:pod_id>/ssh-keys")
def set_ssh_keys(pod_id):
    """Replace the keys that log in to the pod: 202 with the SET_SSH_KEYS task (the pod's progress
    shows it). The subscription holds the wanted keys, written with the task in one transaction;
    the playbook converges the pod to exactly them. An empty list: no key logs in."""
    operation = operations.get("SET_SSH_KEYS")
    state = _state()
    principal = require_role(*operation.roles)
    customer = acting_customer(required=principal.role != "admin")
    row = state.repository.get_subscription(pod_id)
    if row is None or (customer is not None and row["customer_id"] != customer):
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    _body, lines = _json_body(state, "SshKeysRequest", "key list")
    try:
        task = state.repository.set_ssh_keys(pod_id, lines, operation.name, state.settings.max_attempts,
                                             start_states=operation.start_states)
    except NotStartable as exc:
        raise Problem(409, "Conflict", operation.not_startable(exc.status), "pod-not-active") from None
    except OperationInProgress:
        raise Problem(409, "Conflict", "Another operation on this pod is queued or running; retry when it is "
                      "done.", "operation-in-progress") from None
    if task is None:
        raise Problem(404, "Not Found", "There is no such pod.", "unknown-pod")
    task.update(hostname=row["hostname"], plan_code=row["plan_code"])
    response = jsonify(views.task(task))
    response.status_code = 202
    response.headers["Location"] = f"/api/cloud-pods/{pod_id}"
    return response
