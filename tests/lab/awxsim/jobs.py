"""Jobs: ``/api/v2/jobs/``, ``/api/v2/jobs/{id}/``, ``cancel/`` and ``job_events/``.

A launch makes a job in ``pending`` (AWX answers the launch after ``signal_start``). With
``projects_root`` in the config the job then runs its playbook through ansible-runner (runner.py).
Without it nothing runs the job: the lab moves it with ``POST /_lab/jobs/{id}/status``
(``running``, then ``successful``, ``failed``, ``error`` or ``canceled``), in the order AWX allows,
so tests of the API alone decide every step and never wait on a clock.

Cancel (AWX ``GenericCancelView``): ``GET cancel/`` says ``{"can_cancel": bool}``; ``POST``
answers 202 while the job is ``new``, ``pending``, ``waiting`` or ``running`` and 405 otherwise.
A job not yet running is ``canceled`` at once; a running one gets ``cancel_flag`` and stays
``running`` until whatever runs it stops (then ``canceled``), as in AWX.
"""

import datetime
import json

from . import errors
from .resources import now
from .runner import JobRunner

CANCELABLE = ("new", "pending", "waiting", "running")
FINISHED = ("successful", "failed", "error", "canceled")
NEXT = {"new": ("pending", "canceled"), "pending": ("waiting", "running", "canceled", "error"),
        "waiting": ("running", "canceled", "error"),
        "running": ("successful", "failed", "error", "canceled")}
DETAIL_ONLY = ("job_env", "result_traceback")


class Jobs:
    """The jobs of one store (kept beside it, same lock)."""

    def __init__(self, store, config: dict | None = None):
        self.store = store
        self.by_id = {}
        self.next_id = 1
        self.events = {}  # job id -> its job events (runner.job_event)
        self.next_event_id = 0
        self.private_dirs = {}  # job id -> its private data dir (removed when the job ends)
        config = config or {}
        self.runner = JobRunner(self, config) if config.get("projects_root") else None

    def create(self, jt: dict, applied: dict, ignored: dict, user: dict) -> dict:
        """A ``pending`` job; ``start`` then runs it (when jobs run)."""
        return self._create(jt, applied, ignored, user)

    def start(self, job: dict, applied: dict) -> None:
        if self.runner is not None:
            self.runner.start(job, applied.get("launch_variables", ()))

    def stop_all(self) -> None:
        """Cancel every unfinished job (a reset of the stand-in)."""
        with self.store.lock:
            for job in self.by_id.values():
                if job["status"] in CANCELABLE:
                    self.cancel(job)

    def _create(self, jt: dict, applied: dict, ignored: dict, user: dict) -> dict:
        with self.store.lock:
            job = {
                "id": self.next_id, "name": jt["name"], "description": jt["description"],
                "job_template": jt["id"], "project": jt["project"], "playbook": jt["playbook"],
                "organization": jt.get("organization"), "inventory": applied["inventory"],
                "credentials": list(applied["credentials"]),
                "extra_vars": json.dumps(applied["extra_vars"]), "launch_type": "manual",
                "launched_by": {"id": user["id"], "name": user["username"], "type": "user"},
                "status": "pending", "failed": False, "started": None, "finished": None, "elapsed": 0.0,
                "job_explanation": "", "result_traceback": "", "cancel_flag": False,
                "event_processing_finished": False, "artifacts": {}, "job_env": {},
                "created": now(), "modified": now(), "ignored_fields": ignored,
            }
            for field in ("limit", "job_tags", "skip_tags", "job_type", "verbosity", "diff_mode", "scm_branch"):
                job[field] = applied.get(field, jt[field])
            job["forks"], job["timeout"] = jt["forks"], jt["timeout"]
            self.by_id[job["id"]] = job
            self.next_id += 1
            return job

    def get(self, ident: str) -> dict:
        job = self.by_id.get(int(ident)) if ident.isdigit() else None
        if job is None:
            raise errors.detail(404, errors.NOT_FOUND)
        return job

    def set_status(self, job: dict, status: str, explanation: str = "") -> dict:
        """One step of the job's life; a step AWX would not take is refused (400)."""
        with self.store.lock:
            if status not in NEXT.get(job["status"], ()):
                raise errors.detail(400, "a %s job cannot become %s" % (job["status"], status))
            stamp = now()
            if status == "running":
                job["started"] = stamp
            if status in FINISHED:
                job["finished"] = stamp
                job["failed"] = status in ("failed", "error")
                job["event_processing_finished"] = True
                if job["started"]:
                    job["elapsed"] = round((_parse(stamp) - _parse(job["started"])).total_seconds(), 3)
            job["status"], job["modified"] = status, stamp
            if explanation:
                job["job_explanation"] = explanation
            return job

    def cancel(self, job: dict) -> None:
        with self.store.lock:
            if job["status"] not in CANCELABLE:
                raise errors.detail(405, 'Method "POST" not allowed.')
            job["cancel_flag"] = True
            if job["status"] != "running":
                self.set_status(job, "canceled")

    def serialize(self, job: dict, detail: bool = True) -> dict:
        out = {"id": job["id"], "type": "job", "url": "/api/v2/jobs/%d/" % job["id"],
               "related": {"cancel": "/api/v2/jobs/%d/cancel/" % job["id"],
                           "job_events": "/api/v2/jobs/%d/job_events/" % job["id"],
                           "stdout": "/api/v2/jobs/%d/stdout/" % job["id"],
                           "job_template": "/api/v2/job_templates/%d/" % job["job_template"]},
               "summary_fields": {"job_template": {"id": job["job_template"], "name": job["name"]},
                                  "launched_by": job["launched_by"]}}
        for key, value in job.items():
            if key in ("id", "launched_by", "ignored_fields") or (not detail and key in DETAIL_ONLY):
                continue
            out[key] = value
        return out


def _parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


EVENT_FIELDS = ("id", "counter", "start_line", "end_line", "event", "host_name", "task", "play", "role",
                "uuid", "parent_uuid", "failed", "changed")
EVENT_IGNORED = ("page", "page_size", "order_by", "count_disabled", "no_truncate", "format")


def filter_events(events: list, query) -> list:
    """The job events lists' filters awxkit and awx.awx use: ``<field>``, ``<field>__gt/__gte/__lt/__lte``
    (numbers), ``__icontains``, and ``order_by`` (``start_line`` by default is ``counter`` order)."""
    conditions = []
    for key, value in query:
        if key in EVENT_IGNORED:
            continue
        field, _sep, lookup = key.partition("__")
        if field not in EVENT_FIELDS or lookup not in ("", "exact", "gt", "gte", "lt", "lte", "icontains"):
            raise errors.detail(400, "Invalid field name: %s" % key)
        conditions.append((field, lookup, value))

    def match(event, field, lookup, value):
        have = event.get(field)
        if lookup in ("gt", "gte", "lt", "lte"):
            try:
                number = int(value)
            except ValueError:
                raise errors.detail(400, "Invalid value %r for %s" % (value, field)) from None
            have = have or 0
            return {"gt": have > number, "gte": have >= number, "lt": have < number, "lte": have <= number}[lookup]
        if isinstance(have, bool):
            return have == (value.lower() in ("true", "1"))
        if lookup == "icontains":
            return value.lower() in str(have or "").lower()
        return str(have if have is not None else "") == value
    found = [event for event in events if all(match(event, *cond) for cond in conditions)]
    order = dict(query).get("order_by", "counter")
    field = order.lstrip("-")
    if field not in EVENT_FIELDS:
        raise errors.detail(400, "Invalid field name: %s" % field)
    return sorted(found, key=lambda event: (event.get(field) is None, event.get(field), event["counter"] or 0),
                  reverse=order.startswith("-"))
