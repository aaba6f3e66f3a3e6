"""One error format for the whole API: ``application/problem+json`` (RFC 9457)."""

import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException

LOG = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://mpanel.example/problems/"


class Problem(Exception):
    """An error the client should see: HTTP status, a short title and a clear detail."""

    def __init__(self, status, title, detail, slug=None, **extra):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.slug = slug
        self.extra = extra


def problem_response(status, title, detail, slug=None, **extra):
    body = {"type": PROBLEM_TYPE_BASE + slug if slug else "about:blank", "title": title, "status": status,
            "detail": detail}
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def register_error_handlers(app):
    @app.errorhandler(Problem)
    def _problem(exc):
        response = problem_response(exc.status, exc.title, exc.detail, exc.slug, **exc.extra)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cloud-pods"'
        return response

    @app.errorhandler(HTTPException)
    def _http(exc):
        details = {
            404: "No such resource.",
            405: "This method is not allowed on this resource.",
            413: f"The request body is larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes.",
        }
        return problem_response(exc.code, exc.name, details.get(exc.code, exc.description))

    @app.errorhandler(Exception)
    def _unexpected(exc):
        # The traceback goes to the log (the message is scrubbed of secrets by the log filter);
        # the client learns nothing about the internals.
        LOG.exception("unhandled error: %s", type(exc).__name__)
        return problem_response(500, "Internal Server Error", "The server could not handle the request; "
                                "the error has been logged.")
