"""Jobs: ``/api/v2/jobs/``, ``/api/v2/jobs/{id}/``, ``cancel/`` and ``job_events/``.

A launch makes a job in ``pending`` (AWX answers the launch after ``signal_start``). Nothing runs
it yet: running the playbook through ansible-runner is the next step (STATUS.md); until then the
lab moves a job with ``POST /_lab/jobs/{id}/status`` (``running``, then ``successful``,
``failed``, ``error`` or ``canceled``), in the order AWX allows, so tests decide every step and
never wait on a clock.

Cancel (AWX ``GenericCancelView``): ``GET cancel/`` says ``{"can_cancel": bool}``; ``POST``
answers 202 while the job is ``new``, ``pending``, ``waiting`` or ``running`` and 405 otherwise.
A job not yet running is ``canceled`` at once; a running one gets ``cancel_flag`` and stays
``running`` until whatever runs it stops (then ``canceled``), as in AWX.
"""

import datetime
import json

from . import errors
from .resources import now

CANCELABLE = ("new", "pending", "waiting", "running")
FINISHED = ("successful", "failed", "error", "canceled")
NEXT = {"new": ("pending", "canceled"), "pending": ("waiting", "running", "canceled", "error"),
        "waiting": ("running", "canceled", "error"),
        "running": ("successful", "failed", "error", "canceled")}
DETAIL_ONLY = ("job_env", "result_traceback")


class Jobs:
    """The jobs of one store (kept beside it, same lock)."""

    def __init__(self, store):
        self.store = store
        self.by_id = {}
        self.next_id = 1

    def create(self, jt: dict, applied: dict, ignored: dict, user: dict) -> dict:
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
