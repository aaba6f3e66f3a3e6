"""One error format for the whole API: ``application/problem+json`` (RFC 9457)."""

import logging
import threading
import time

import psycopg
from flask import jsonify
from werkzeug.exceptions import HTTPException

LOG = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://mpanel.example/problems/"
# A 503 while the database is away tells the client when to try again.
DATABASE_RETRY_AFTER_SECONDS = 5
# While the database is away every request fails the same way: log it once per this many seconds.
DATABASE_LOG_INTERVAL_SECONDS = 30.0
# Headers werkzeug computes for its own (HTML) body; our body is problem+json.
BODY_HEADERS = ("content-type", "content-length")


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
        response = problem_response(exc.code, exc.name, details.get(exc.code, exc.description))
        # Keep the headers the status calls for (405: Allow, 401: WWW-Authenticate, ...).
        for name, value in exc.get_headers():
            if name.lower() not in BODY_HEADERS:
                response.headers[name] = value
        return response

    database_log = _RateLimitedLog(DATABASE_LOG_INTERVAL_SECONDS)

    @app.errorhandler(psycopg.OperationalError)
    def _database_unavailable(exc):
        # Connection refused or lost, server shutting down, or no pooled connection within
        # CLOUDPODS_DB_TIMEOUT_SECONDS (psycopg_pool.PoolTimeout is an OperationalError).
        database_log.warning("database unavailable, answering 503: %s: %s", type(exc).__name__,
                             " ".join(str(exc).split())[:300])
        response = problem_response(503, "Service Unavailable", "The database is not answering (unavailable or "
                                    "overloaded); try again shortly.", "database-unavailable")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc):
        # The traceback goes to the log (the message is scrubbed of secrets by the log filter);
        # the client learns nothing about the internals.
        LOG.exception("unhandled error: %s", type(exc).__name__)
        return problem_response(500, "Internal Server Error", "The server could not handle the request; "
                                "the error has been logged.")


class _RateLimitedLog:
    """A warning at most once per interval (with the count of the ones held back)."""

    def __init__(self, interval):
        self.interval = interval
        self.lock = threading.Lock()
        self.last = None
        self.held_back = 0

    def warning(self, message, *args):
        now = time.monotonic()
        with self.lock:
            if self.last is not None and now - self.last < self.interval:
                self.held_back += 1
                return
            held_back, self.held_back, self.last = self.held_back, 0, now
        if held_back:
            message += f" ({held_back} more since the last report)"
        LOG.warning(message, *args)
