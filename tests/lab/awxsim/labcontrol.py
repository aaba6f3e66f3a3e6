"""``/_lab`` controls for a job's events and artifacts, and the ``job_events/`` list they feed.

Until jobs run through ansible-runner, a test plays the job's part: it appends the events a run
would have made and sets the job's ``artifacts`` (``set_stats``), then moves the job with
``POST /_lab/jobs/{id}/status``. Both need the control key, like every ``/_lab`` endpoint.

- ``POST /_lab/jobs/{id}/events`` ``{"events": [{...}, ...]}``: each event gets AWX's job event
  fields (``id``, ``created``, ``job``, ``event``, ``counter``, ``event_data``, ``failed``,
  ``changed``, ``uuid``, ``parent_uuid``, ``host_name``, ``play``, ``task``, ``role``, ``stdout``,
  ``start_line``, ``end_line``); what the test leaves out is filled in (the next counter, a new
  uuid, the rest empty), ``event`` is required. Answers ``{"count": N}`` (the job's events).
- ``POST /_lab/jobs/{id}/artifacts`` ``{"artifacts": {...}}``: the job's ``artifacts``.

``GET /api/v2/jobs/{id}/job_events/`` lists them with AWX's pagination; filters on the fields above
with AWX's lookups plus ``counter__gt``/``counter__gte``/``counter__lt`` (the clients follow a
job by counter), ``order_by`` (default ``counter``).
"""

import re
import uuid

from . import errors
from .resources import now

EVENT_FIELDS = ("event", "counter", "event_data", "failed", "changed", "uuid", "parent_uuid", "host_name",
                "play", "task", "role", "stdout", "start_line", "end_line")
DEFAULTS = {"event_data": {}, "failed": False, "changed": False, "parent_uuid": "", "host_name": "",
            "play": "", "task": "", "role": "", "stdout": "", "start_line": 0, "end_line": 0}
NUMERIC = {"counter__gt": lambda have, want: have > want, "counter__gte": lambda have, want: have >= want,
           "counter__lt": lambda have, want: have < want}


def _events(app, job):
    """The job's events (kept beside the jobs, so ``/_lab/reset`` drops them with the jobs)."""
    if not hasattr(app.jobs, "lab_events"):
        app.jobs.lab_events = {}
    return app.jobs.lab_events.setdefault(job["id"], [])


def control(app, http, path, body):
    """``(status, data)`` for a control endpoint of this module, else None."""
    match = re.fullmatch(r"/_lab/jobs/(\d+)/(events|artifacts)", path)
    if not match or http.command != "POST":
        return None
    job = app.jobs.get(match.group(1))
    if match.group(2) == "artifacts":
        if not isinstance(body, dict) or not isinstance(body.get("artifacts"), dict):
            raise errors.fields({"artifacts": ["This field is required (an object)."]})
        return 200, {"artifacts": set_artifacts(app, job, body["artifacts"])}
    given = body.get("events") if isinstance(body, dict) else None
    if not isinstance(given, list) or not all(isinstance(e, dict) and isinstance(e.get("event"), str) for e in given):
        raise errors.fields({"events": ["A list of events, each with an \"event\"."]})
    unknown = sorted({name for item in given for name in item} - set(EVENT_FIELDS))
    if unknown:
        raise errors.fields({name: ["not a job event field"] for name in unknown})
    return 200, {"count": append_events(app, job, given)}


def set_artifacts(app, job, artifacts):
    """The job's ``artifacts`` (what ``set_stats`` would have reported)."""
    with app.store.lock:
        job["artifacts"] = dict(artifacts)
        return job["artifacts"]


def append_events(app, job, given):
    """Append ``given`` (dicts of EVENT_FIELDS, ``event`` required) to the job's events; the count after."""
    with app.store.lock:
        events = _events(app, job)
        for item in given:
            counter = item.get("counter") or (max([e["counter"] for e in events], default=0) + 1)
            ident = sum(len(e) for e in app.jobs.lab_events.values()) + 1
            event = dict(DEFAULTS, id=ident, created=now(), modified=now(), job=job["id"], type="job_event",
                         url="/api/v2/job_events/%d/" % ident, uuid=str(uuid.uuid4()))
            event.update({key: value for key, value in item.items() if key != "counter"})
            event["counter"] = int(counter)
            events.append(event)
        return len(events)


def job_events(app, job, query):
    """``GET /api/v2/jobs/{id}/job_events/``: the job's events, filtered, ordered and paginated as AWX lists."""
    numeric, rest = [], []
    for key, value in query:
        if key in NUMERIC:
            try:
                numeric.append((NUMERIC[key], int(value)))
            except ValueError:
                raise errors.detail(400, "Invalid value for %s: %s" % (key, value)) from None
        else:
            rest.append((key, value))
    with app.store.lock:
        items = [event for event in _events(app, job) if all(test(event["counter"], want) for test, want in numeric)]
    if not any(key == "order_by" for key, _value in rest):
        rest.append(("order_by", "counter"))
    fields = set(EVENT_FIELDS) | {"id", "job", "created"}
    items = app.filter(fields, items, rest)
    if dict(rest).get("order_by", "").lstrip("-") == "counter":
        items.sort(key=lambda event: event["counter"], reverse=dict(rest)["order_by"].startswith("-"))
    return app.paginate(items, "/api/v2/jobs/%d/job_events/" % job["id"], query)
