"""Errors that become PVE-shaped HTTP responses.

PVE reports an error in the HTTP reason phrase and in ``message`` of the body; parameter
errors add an ``errors`` object keyed by parameter name. A failed login has no body at all.
"""


class ApiError(Exception):
    """An error answered as ``<status> <message>`` with ``{"data": null, "message": ...}``."""

    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors

    def body(self) -> dict | None:
        """The JSON body PVE sends: a ``die`` message keeps its newline (None: no body)."""
        body = {"data": None, "message": self.message + "\n"}
        if self.errors:
            body["errors"] = self.errors
        return body


class MethodNotImplemented(ApiError):
    """``501 Method 'GET /foo' not implemented``.

    pve-manager PVE/HTTPServer.pm (stable-8), ``rest_handler``: the answer when no handler
    matches is built as ``{status => 501, message => "Method '$method $rel_uri' not
    implemented"}`` (no ``die``), so the body's message has no trailing newline.
    """

    def __init__(self, method: str, path: str):
        super().__init__(501, f"Method '{method} {path}' not implemented")

    def body(self) -> dict:
        return {"data": None, "message": self.message}


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
    """``401 <reason>`` and nothing else.

    pve-http-server PVE/APIServer/AnyEvent.pm (5.2.2, PVE 8), ``authenticate_and_handle_request``:
    when ``auth_handler`` dies with a plain message and the format (json) has no login
    formatter, the answer is ``HTTP::Response->new(401, $err)``: the reason is the message's first line,
    there is no body, and ``response`` sends ``Connection: close``. The reasons are in acl.py.
    """

    def __init__(self, reason: str):
        super().__init__(401, reason)

    def body(self) -> None:
        return None


def fail(message: str) -> ApiError:
    """A plain ``die`` in PVE's Perl code: HTTP 500 with the message as reason."""
    return ApiError(500, message)
