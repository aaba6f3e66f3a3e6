"""Bearer tokens with a role: ``customer`` (its own pods), ``service`` (mPanel, acting for the
customer named in ``X-Customer-Id``) and ``admin``. Only the token's SHA-256 is stored.

A token may expire (``cloudpods token create --expires-in``); ``cloudpods token rotate`` makes its
successor and keeps the old one valid for an overlap, after which it expires. An expired token gets
401 ``token-expired`` saying when it expired (never which secret was sent)."""

import secrets
from dataclasses import dataclass

from flask import current_app, g, request

from . import grammar
from .errors import Problem

ROLES = ("customer", "service", "admin")
CUSTOMER_HEADER = "X-Customer-Id"
TOKEN_PREFIX = "cpt_"
QUERY_TOKEN_NAMES = ("access_token", "token", "api_key", "apikey", "bearer")


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
    if any(name.lower() in QUERY_TOKEN_NAMES for name in request.args):
        # Refused, never looked at: a URL ends up in logs and browser histories (the access log
        # formats in deploy/ leave the query string out).
        raise Problem(400, "Bad Request", "Send the token in the Authorization header (Bearer), never in the "
                      "URL; this token is now in somebody's logs, so revoke it.", "token-in-url")
    header = request.headers.get("Authorization", "")
    scheme, _sep, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Unauthorized", "A bearer token is required (Authorization: Bearer <token>).",
                      "unauthorized")
    row = current_app.extensions["cloudpods"].repository.token_by_secret(token.strip())
    if row is None:
        raise Problem(401, "Unauthorized", "The bearer token is not valid or has been revoked.", "unauthorized")
    if row.get("expired"):
        expired_at = row["expires_at"].isoformat(timespec="seconds")
        raise Problem(401, "Unauthorized", f"The bearer token expired at {expired_at}; use its successor or ask for "
                      "a new one (cloudpods token rotate / create).", "token-expired", expired_at=expired_at)
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
            article = "An" if principal.role[0] in "aeiou" else "A"
            raise Problem(400, "Bad Request", f"{article} {principal.role} token must name the customer in the "
                          f"{CUSTOMER_HEADER} header.", "customer-required")
        return None
    if not grammar.printable_token(customer):
        raise Problem(400, "Bad Request", f"{CUSTOMER_HEADER} must be 1 to 128 printable ASCII characters "
                      "without spaces.", "invalid-customer")
    return customer
