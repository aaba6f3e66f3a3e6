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

``GET /api/v2/jobs/{id}/job_events/`` lists them with the events of jobs that really ran
(``jobs.filter_events``: AWX's pagination, field lookups, ``counter__gt`` and ``order_by``).
"""

import re
import uuid

from . import errors
from .resources import now

EVENT_FIELDS = ("event", "counter", "event_data", "failed", "changed", "uuid", "parent_uuid", "host_name",
                "play", "task", "role", "stdout", "start_line", "end_line")
DEFAULTS = {"event_data": {}, "failed": False, "changed": False, "parent_uuid": "", "host_name": "",
            "play": "", "task": "", "role": "", "stdout": "", "start_line": 0, "end_line": 0}


def _events(app, job):
    """The job's events, where a job that runs keeps them (``Jobs.events``: ``/_lab/reset`` drops them)."""
    return app.jobs.events.setdefault(job["id"], [])


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
            ident = sum(len(e) for e in app.jobs.events.values()) + 1
            event = dict(DEFAULTS, id=ident, created=now(), modified=now(), job=job["id"], type="job_event",
                         url="/api/v2/job_events/%d/" % ident, uuid=str(uuid.uuid4()))
            event.update({key: value for key, value in item.items() if key != "counter"})
            event["counter"] = int(counter)
            events.append(event)
        return len(events)
