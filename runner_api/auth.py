"""Bearer tokens with a role: ``customer`` (its own pods), ``service`` (mPanel, acting for the
customer named in ``X-Customer-Id``) and ``admin``. Only the token's SHA-256 is stored."""

import secrets
from dataclasses import dataclass

from flask import current_app, g, request

from .errors import Problem

ROLES = ("customer", "service", "admin")
CUSTOMER_HEADER = "X-Customer-Id"
TOKEN_PREFIX = "cpt_"


def new_token():
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    customer_id: str | None


def authenticate():
    """Set ``g.principal`` from the Authorization header or raise 401."""
    header = request.headers.get("Authorization", "")
    scheme, _sep, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Unauthorized", "A bearer token is required (Authorization: Bearer <token>).",
                      "unauthorized")
    row = current_app.extensions["cloudpods"].repository.token_by_secret(token.strip())
    if row is None:
        raise Problem(401, "Unauthorized", "The bearer token is not valid or has been revoked.", "unauthorized")
    g.principal = Principal(row["id"], row["name"], row["role"], row["customer_id"])
    return g.principal


def require_role(*roles):
    principal = g.principal
    if principal.role not in roles:
        raise Problem(403, "Forbidden", f"This endpoint needs a token with role {' or '.join(roles)}.", "forbidden")
    return principal


def acting_customer(required=True):
    """The customer a request is for: the token's own, or the header's for service/admin tokens."""
    principal = g.principal
    if principal.role == "customer":
        return principal.customer_id
    customer = request.headers.get(CUSTOMER_HEADER, "").strip()
    if not customer:
        if required:
            raise Problem(400, "Bad Request", f"A {principal.role} token must name the customer in the "
                          f"{CUSTOMER_HEADER} header.", "customer-required")
        return None
    if len(customer) > 128:
        raise Problem(400, "Bad Request", f"{CUSTOMER_HEADER} is longer than 128 characters.", "invalid-customer")
    return customer
