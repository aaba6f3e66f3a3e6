"""Cursor paging of the long lists (my-pods, admin/all, the provisioning queue).

A request gives ``limit`` (1 to ``MAX_LIMIT``, default ``DEFAULT_LIMIT``) and, for the pages after
the first, ``cursor``: the ``next`` value of the page before. A cursor is opaque to clients
(base64url of JSON: the list it belongs to and where the page before ended, e.g. the last pod's
``created_at`` and id); it stays valid while rows are added or removed (keyset paging: no row is
shown twice or skipped because of an insert). A malformed cursor, or one of another list, is a 400.
"""

import base64
import binascii
import json
import uuid
from datetime import datetime

from flask import request

from .errors import Problem

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def _bad(parameter, detail):
    return Problem(400, "Bad Request", detail, "invalid-parameter", parameter=parameter)


def single(name):
    """A query parameter given at most once (None: absent); given twice is a 400."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise _bad(name, f"The query parameter {name!r} is given {len(values)} times; give it once.")
    return values[0] if values else None


def limit():
    """The ``limit`` query parameter (absent: DEFAULT_LIMIT)."""
    value = single("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise _bad("limit", f"The query parameter 'limit' must be a whole number from 1 to {MAX_LIMIT}; "
                   f"got {value[:32]!r}.")
    return int(value)


def encode(kind, *values):
    text = json.dumps([kind, *values], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(kind, arity):
    value = single("cursor")
    if value is None:
        return None
    problem = _bad("cursor", "The query parameter 'cursor' is not a cursor of this list: pass the 'next' value "
                   "of the page before, unchanged.")
    if len(value) > 200:
        raise problem
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise problem from None
    if not isinstance(data, list) or len(data) != arity + 1 or data[0] != kind:
        raise problem
    return data[1:], problem


def pods_cursor(kind):
    """(created_at, id) after which the page starts, or None for the first page."""
    decoded = _decode(kind, 2)
    if decoded is None:
        return None
    (created, pod_id), problem = decoded
    try:
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError(created)
        return when, uuid.UUID(pod_id)
    except (TypeError, ValueError, AttributeError):
        raise problem from None


def tasks_cursor(kind):
    """The id below which the page starts, or None for the first page (lists ordered by a row id,
    newest first: the queue, the webhook outbox)."""
    decoded = _decode(kind, 1)
    if decoded is None:
        return None
    (task_id,), problem = decoded
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 < task_id < 2 ** 63:
        raise problem
    return task_id


def page(rows, size, cursor_of):
    """The first ``size`` rows and the cursor of the next page (None: this is the last page); the
    caller fetched ``size + 1`` rows to know."""
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    return rows, cursor_of(rows[-1])


def links(path, size, next_cursor, **query):
    """``links.next``: the URL of the next page (same filters), when there is one."""
    if next_cursor is None:
        return {}
    params = "".join(f"&{name}={value}" for name, value in query.items() if value is not None)
    return {"next": f"{path}?limit={size}&cursor={next_cursor}{params}"}
