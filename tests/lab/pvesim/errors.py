"""Errors that become PVE-shaped HTTP responses.

PVE reports an error in the HTTP reason phrase and in ``message`` of the body; parameter
errors add an ``errors`` object keyed by parameter name.
"""


class ApiError(Exception):
    """An error answered as ``<status> <message>`` with ``{"data": null, "message": ...}``."""

    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class ParamError(ApiError):
    """``400 Parameter verification failed.`` with per-parameter messages."""

    def __init__(self, errors: dict):
        super().__init__(400, "Parameter verification failed.", errors)


class PermissionDenied(ApiError):
    """``403 Permission check failed (<path>, <privilege>)``."""

    def __init__(self, what: str | None = None):
        text = "Permission check failed" + (f" ({what})" if what else "")
        super().__init__(403, text)


class AuthError(ApiError):
    """``401`` with PVE's reason: ``No ticket`` or ``authentication failure``."""

    def __init__(self, reason: str):
        super().__init__(401, reason)


def fail(message: str) -> ApiError:
    """A plain ``die`` in PVE's Perl code: HTTP 500 with the message as reason."""
    return ApiError(500, message)
