"""Customer endpoints (portal, or mPanel with a service token acting for a customer)."""

import hashlib
import json
import re
import secrets

import jsonschema
from flask import Blueprint, current_app, g, jsonify, request

from .. import views
from ..auth import acting_customer, authenticate, require_role
from ..errors import Problem
from ..repository import DomainTaken, IdempotencyMismatch

blueprint = Blueprint("customer", __name__, url_prefix="/api/cloud-pods")

LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


@blueprint.before_request
def _authenticated():
    authenticate()


def _state():
    return current_app.extensions["cloudpods"]


def normalise_domain(value):
    """Lower-case, no trailing dot; None if not a valid DNS domain name of two labels or more."""
    domain = value.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(LABEL.match(label) for label in labels):
        return None
    if not TLD.match(labels[-1]):
        return None
    return domain


@blueprint.get("/my-pods")
def my_pods():
    customer = acting_customer()
    rows = _state().repository.list_subscriptions(customer_id=customer)
    return jsonify(pods=[views.pod(row) for row in rows])


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


def _order_body(state):
    if not request.is_json:
        raise Problem(415, "Unsupported Media Type", "The order must be sent as application/json.",
                      "unsupported-media-type")
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "Bad Request", "The request body is not valid JSON.", "malformed-json") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "The request body must be a JSON object.", "malformed-json")
    schema = dict(state.openapi, **{"$ref": "#/components/schemas/OrderRequest"})
    problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    if problems:
        messages = [f"{'.'.join(str(p) for p in error.path) or 'body'}: {error.message}" for error in problems]
        raise Problem(422, "Unprocessable Content", "The order is not valid: " + "; ".join(messages),
                      "invalid-order", errors=messages)
    return body


@blueprint.post("/order")
def order():
    state = _state()
    require_role("customer", "service", "admin")
    customer = acting_customer()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 128 printable ASCII characters.",
                      "invalid-idempotency-key")
    body = _order_body(state)
    if state.plans.get(body["plan_code"]) is None:
        raise Problem(422, "Unprocessable Content", f"There is no plan {body['plan_code']!r}; see "
                      "GET /api/cloud-pods/plans.", "unknown-plan")
    domain = None
    if body.get("domain"):
        domain = normalise_domain(body["domain"])
        if domain is None:
            raise Problem(422, "Unprocessable Content", f"{body['domain']!r} is not a valid domain name.",
                          "invalid-domain")
    email = body["customer_email"].strip()
    digest = hashlib.sha256(json.dumps([body["plan_code"], domain, email.lower()]).encode()).hexdigest()
    order_row = {"customer_id": customer, "customer_email": email, "plan_code": body["plan_code"],
                 "domain": domain, "hostname": "cp-" + secrets.token_hex(5), "idempotency_key": key,
                 "request_digest": digest}
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
