"""The AWX executor (``CLOUDPODS_EXECUTOR=awx``): an operation runs as a job of its AWX job template.

``AwxExecutor.run`` launches the operation's job template (``POST /api/v2/job_templates/<id>/launch/``
with the request's extra vars), follows the job (its ``job_events``, by counter, only new ones, turned
into the same event rows the local executor writes, scrubbed the same way) until it is final, and
returns the job's ``artifacts`` (``set_stats``) as the run's stats. The queue, the leases and the
fencing stay in runner_api: AWX only executes.

- ``cancel()`` turning true (the shutdown grace period is over, the lease is lost, an operation
  pre-empts a background run): ``POST /api/v2/jobs/<id>/cancel/``, then a bounded wait
  (``CLOUDPODS_AWX_CANCEL_WAIT_SECONDS``) for the job to be ``canceled``.
- AWX away (connection refused, a timeout, a 5xx) while launching, or longer than
  ``CLOUDPODS_AWX_OUTAGE_SECONDS`` while following: the attempt fails and is retried with the
  queue's backoff. A 401 (the token expired or was revoked), a 403, a template AWX does not know
  (404) and a launch AWX refuses (400) are the configuration's fault: the task fails at once.
- The token travels only in the ``Authorization`` header: no message, log line or event holds it
  (every message is also scrubbed of every known secret).

Job templates: the operation's name in ``CLOUDPODS_AWX_JOB_TEMPLATES``, else "Cloud Pods: <playbook>"
(``settings.awx_template_name``). Names are resolved to ids once (``?name=``) and kept; a launch
answered 404 forgets the id, so a template made again is found at the next attempt.
"""

import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import http.client

from . import operations
from .executors import Executor, RunResult, _EventCollector
from .settings import awx_template_name, scrub

FINAL = ("successful", "failed", "error", "canceled")
PAGE_SIZE = 200  # AWX's MAX_PAGE_SIZE
PAGES_PER_LOOK = 50  # at most this many pages of events per look at the job (10000 events)
PROCESSING_WAIT_LOOKS = 10  # a final job whose events are still being processed: this many more looks
BODY_LIMIT = 300  # characters of an AWX answer quoted in a message
# Extra vars an order hands to a job: AWX marks launch-time extra vars unsafe (ALLOW_JINJA_IN_EXTRA_VARS
# "template", its default), so they are never templated; a template that does not prompt for variables
# drops them (ignored_fields), and the launch is then refused.

_TEMPLATES = {}  # (AWX URL, template name) -> the template's id and launch prompts; see AwxClient.template
_TEMPLATES_LOCK = threading.Lock()


class AwxUnavailable(Exception):
    """AWX did not answer (refused, timed out, a 5xx): worth another attempt later."""


class AwxRefused(Exception):
    """AWX answered with a refusal that another attempt would get too (401, 403, 404, 400)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def template_names(settings):
    """Operation -> job template name: CLOUDPODS_AWX_JOB_TEMPLATES's, else the default convention."""
    return {op: settings.awx_templates.get(op) or awx_template_name(playbook)
            for op, playbook in operations.playbooks().items()}


def _ssl_context(settings):
    if not settings.awx_url or not settings.awx_url.lower().startswith("https:"):
        return None
    if not settings.awx_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(settings.awx_ca_file) if settings.awx_ca_file else None)


class AwxClient:
    """AWX's API v2 with the worker's OAuth2 token; every message scrubbed, the token never in one."""

    def __init__(self, settings):
        self.settings = settings
        self.base = (settings.awx_url or "").rstrip("/")
        self.secrets = settings.secrets()
        self.context = _ssl_context(settings)
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.context)
                                                  if self.context else urllib.request.HTTPHandler())

    def where(self):
        return f"AWX at {self.base} (CLOUDPODS_AWX_URL)"

    def call(self, method, path, body=None, auth=True):
        """``(status, parsed body or None)``; ``AwxUnavailable`` when AWX does not answer or answers 5xx;
        ``AwxRefused`` for 401 and 403 (a token problem whatever was asked)."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = "Bearer " + (self.settings.awx_token or "")
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=self.settings.awx_timeout_seconds) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise AwxUnavailable(self.clean(f"{self.where()} does not answer ({type(exc).__name__}: {reason})")) from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if status >= 500:
            raise AwxUnavailable(self.clean(f"{self.where()} answered {status} to {method} {self._path(url)}"))
        if status == 401:
            raise AwxRefused(self.clean(
                f"{self.where()} refused CLOUDPODS_AWX_TOKEN (401: {self.detail(parsed)}): the token expired "
                "or was revoked; make a new one (POST /api/v2/tokens/, scope write) and restart the worker"), 401)
        if status == 403:
            raise AwxRefused(self.clean(
                f"{self.where()}: the user of CLOUDPODS_AWX_TOKEN may not {method} {self._path(url)} (403: "
                f"{self.detail(parsed)}): a write-scope token of a user who may execute the job templates"), 403)
        return status, parsed

    def _path(self, url):
        return urllib.parse.urlsplit(url).path

    def detail(self, parsed):
        if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
            return parsed["detail"][:BODY_LIMIT]
        return json.dumps(parsed, sort_keys=True, default=str)[:BODY_LIMIT] if parsed is not None else "no body"

    def clean(self, text):
        text = scrub(text, self.secrets)
        return scrub(text, [self.settings.awx_token]) if self.settings.awx_token else text

    def ok(self, method, path, body=None, expect=(200,), auth=True):
        status, parsed = self.call(method, path, body, auth=auth)
        if status not in expect:
            raise AwxRefused(self.clean(f"{self.where()} answered {status} to {method} {self._path(path)}: "
                                        f"{self.detail(parsed)}"), status)
        return parsed

    # ------------------------------------------------------------ job templates

    def find_template(self, name):
        """The job template called ``name`` (``?name=``), or None; ``AwxRefused`` when the name is ambiguous."""
        query = urllib.parse.urlencode({"name": name, "page_size": 2})
        found = self.ok("GET", f"/api/v2/job_templates/?{query}")
        results = found.get("results", []) if isinstance(found, dict) else []
        if len(results) > 1:
            raise AwxRefused(self.clean(f"{self.where()} has {found.get('count', len(results))} job templates "
                                        f"named {name!r} (in several organizations?): name one in "
                                        "CLOUDPODS_AWX_JOB_TEMPLATES that is unique"))
        return results[0] if results else None

    def template(self, operation):
        """The operation's job template ``{"id", "name", "ask_job_type_on_launch", "ask_diff_mode_on_launch"}``,
        resolved once and kept; ``AwxRefused`` (404) when AWX has none of that name."""
        name = template_names(self.settings)[operation]
        key = (self.base, name)
        with _TEMPLATES_LOCK:
            known = _TEMPLATES.get(key)
        if known is not None:
            return known
        found = self.find_template(name)
        if found is None:
            raise AwxRefused(self.clean(f"{self.where()} has no job template {name!r} (operation {operation}) "
                                        "that the token's user can see: create it (playbooks/awx/configure.yml) or "
                                        "name another in CLOUDPODS_AWX_JOB_TEMPLATES"), 404)
        known = {"id": found["id"], "name": name,
                 "ask_job_type_on_launch": bool(found.get("ask_job_type_on_launch")),
                 "ask_diff_mode_on_launch": bool(found.get("ask_diff_mode_on_launch"))}
        with _TEMPLATES_LOCK:
            _TEMPLATES[key] = known
        return known

    def forget(self, template):
        with _TEMPLATES_LOCK:
            _TEMPLATES.pop((self.base, template["name"]), None)


def startup_problems(settings):
    """What stops a worker with CLOUDPODS_EXECUTOR=awx at start: AWX not answering ``/api/v2/ping/``,
    the token refused by ``/api/v2/me/``, job templates missing. One line each (empty: fine)."""
    client = AwxClient(settings)
    try:
        client.ok("GET", "/api/v2/ping/", auth=False)
        client.ok("GET", "/api/v2/me/")
        missing = []
        for operation in sorted(operations.playbooks()):
            try:
                client.template(operation)
            except AwxRefused as exc:
                if exc.status != 404:
                    raise
                missing.append(f"{template_names(settings)[operation]!r} ({operation})")
    except (AwxUnavailable, AwxRefused) as exc:
        return [str(exc)]
    if missing:
        return [client.clean(
            f"{client.where()} has no job template {', '.join(missing)} that the token's user can see: create "
            "them (playbooks/awx/configure.yml) or name others in CLOUDPODS_AWX_JOB_TEMPLATES")]
    return []


class AwxExecutor(Executor):
    """See the module docstring."""

    def __init__(self, settings, sleep=time.sleep):
        self.settings = settings
        self.client = AwxClient(settings)
        self.secrets = settings.secrets()
        self.sleep = sleep

    def run(self, request, on_event, cancel=lambda: False):
        if operations.find(request.operation) is None:
            return RunResult("error", None, error=str(operations.UnknownOperation(request.operation)), retryable=False)
        try:
            template = self.client.template(request.operation)
            job_id = self._launch(template, request)
        except AwxUnavailable as exc:
            return RunResult("error", None, error=str(exc), retryable=True)
        except AwxRefused as exc:
            return RunResult("error", None, error=str(exc), retryable=False)
        return self._follow(job_id, template, request, on_event, cancel)

    def _launch(self, template, request):
        body = {"extra_vars": dict(request.extra_vars)}
        if request.check:
            if not template["ask_job_type_on_launch"]:
                raise AwxRefused(f"a dry run needs job type check, and the job template {template['name']!r} does not "
                                 "prompt for it: set ask_job_type_on_launch on it")
            body["job_type"] = "check"
            if template["ask_diff_mode_on_launch"]:
                body["diff_mode"] = True
        path = f"/api/v2/job_templates/{template['id']}/launch/"
        status, answer = self.client.call("POST", path, body)
        if status == 404:
            self.client.forget(template)
            raise AwxRefused(self.client.clean(
                f"{self.client.where()}: the job template {template['name']!r} (id {template['id']}) is gone (404); "
                "the next attempt looks it up by name again"), 404)
        if status not in (200, 201) or not isinstance(answer, dict) or not isinstance(answer.get("job"), int):
            raise AwxRefused(self.client.clean(
                f"{self.client.where()} refused to launch {template['name']!r} ({status}: "
                f"{self.client.detail(answer)})"), status)
        ignored = answer.get("ignored_fields") or {}
        if ignored:
            # The template does not prompt for what the order needs: the job would run without the pod's
            # values. Stop it and say which prompt is missing.
            self._cancel_quietly(answer["job"])
            raise AwxRefused(f"the job template {template['name']!r} ignored {', '.join(sorted(ignored))} at launch "
                             f"(AWX job {answer['job']} canceled): set ask_variables_on_launch (and the matching "
                             "ask_*_on_launch) on it")
        return answer["job"]

    def _cancel_quietly(self, job_id):
        try:
            self.client.call("POST", f"/api/v2/jobs/{job_id}/cancel/")
        except (AwxUnavailable, AwxRefused):
            pass

    def _follow(self, job_id, template, request, on_event, cancel):  # pylint: disable=too-many-branches
        collector = _EventCollector(self.secrets, on_event, with_diff=request.check)
        events = _EventCursor(self.client, job_id)
        outage_since = None
        cancel_sent_at = None
        final_looks = 0
        job = {}
        # As the local executor's ansible-runner timeout: a job running longer is canceled (AWX's own job
        # template timeout may be shorter).
        deadline = time.monotonic() + self.settings.playbook_timeout_seconds
        timed_out = False
        while True:
            if cancel_sent_at is None and (cancel() or time.monotonic() > deadline):
                timed_out = not cancel()
                cancel_sent_at = time.monotonic()
                try:
                    status, _answer = self.client.call("POST", f"/api/v2/jobs/{job_id}/cancel/")
                    if status not in (200, 202, 405):  # 405: already finished
                        cancel_sent_at = None  # try again at the next look
                except AwxUnavailable:
                    cancel_sent_at = None
                except AwxRefused as exc:
                    return RunResult("canceled", None, error=f"AWX job {job_id} not canceled: {exc}", retryable=True)
            try:
                job = self.client.ok("GET", f"/api/v2/jobs/{job_id}/")
                for event in events.new():
                    collector.handle(_runner_event(event))
                outage_since = None
            except AwxUnavailable as exc:
                now = time.monotonic()
                outage_since = outage_since or now
                if now - outage_since >= self.settings.awx_outage_seconds:
                    return RunResult("error", None, stats=collector.stats, retryable=True, error=(
                        f"{exc}; gave up following AWX job {job_id} after {self.settings.awx_outage_seconds:g} s "
                        "(CLOUDPODS_AWX_OUTAGE_SECONDS); it may still run there"))
                self.sleep(self.settings.awx_poll_seconds)
                continue
            except AwxRefused as exc:
                return RunResult("error", None, error=f"following AWX job {job_id}: {exc}", retryable=False)
            status = job.get("status")
            if status in FINAL:
                final_looks += 1
                if job.get("event_processing_finished") or final_looks > PROCESSING_WAIT_LOOKS:
                    if timed_out and job.get("status") == "canceled":
                        return RunResult("timeout", None, collector.stats, retryable=True, error=(
                            f"AWX job {job_id} ran longer than CLOUDPODS_PLAYBOOK_TIMEOUT_SECONDS "
                            f"({self.settings.playbook_timeout_seconds:g} s) and was canceled"))
                    return self._result(job, collector, cancel_sent_at is not None)
            elif (cancel_sent_at is not None
                  and time.monotonic() - cancel_sent_at > self.settings.awx_cancel_wait_seconds):
                return RunResult("canceled", None, stats=collector.stats, retryable=True, error=(
                    f"AWX job {job_id} was still {status} {self.settings.awx_cancel_wait_seconds:g} s after its "
                    "cancel (CLOUDPODS_AWX_CANCEL_WAIT_SECONDS)"))
            self.sleep(self.settings.awx_poll_seconds)

    def _result(self, job, collector, we_canceled):
        status = job["status"]
        job_id = job.get("id")
        artifacts = job.get("artifacts")
        stats = artifacts if isinstance(artifacts, dict) and artifacts else collector.stats
        explanation = scrub(" ".join(str(job.get("job_explanation") or "").split())[:BODY_LIMIT], self.secrets)
        if status == "successful":
            return RunResult("successful", 0, stats)
        if status == "canceled":
            if we_canceled:
                return RunResult("canceled", None, stats, error=f"AWX job {job_id} canceled", retryable=True)
            # Someone canceled it in AWX: a person decided; running it again would undo that.
            return RunResult("canceled", None, stats, retryable=False,
                             error=f"AWX job {job_id} was canceled in AWX (not by runner_api)"
                             + (f": {explanation}" if explanation else ""))
        if status == "failed":
            error = collector.first_failure or (f"AWX job {job_id} failed" + (f": {explanation}" if explanation else ""))
            return RunResult("failed", 2, stats, error=error,
                             retryable=not (collector.precondition_failed or collector.config_error))
        # error: AWX could not run the job (execution environment, node, project update): worth another attempt.
        return RunResult("error", None, stats, retryable=True,
                         error=f"AWX job {job_id} ended in error" + (f": {explanation}" if explanation else ""))


class _EventCursor:
    """A job's events not handed out yet, in counter order. AWX stores events asynchronously, so one
    with a lower counter may appear after a higher one: the cursor asks from the highest counter below
    which every counter was seen, and skips the ones it already gave."""

    def __init__(self, client, job_id):
        self.client = client
        self.job_id = job_id
        self.complete_to = 0  # every counter <= this was handed out
        self.seen = set()

    def new(self):
        query = urllib.parse.urlencode({"counter__gt": self.complete_to, "order_by": "counter", "page_size": PAGE_SIZE})
        path = f"/api/v2/jobs/{self.job_id}/job_events/?{query}"
        fresh = []
        for _page in range(PAGES_PER_LOOK):
            page = self.client.ok("GET", path)
            for event in page.get("results", []) if isinstance(page, dict) else []:
                counter = event.get("counter")
                if isinstance(counter, int) and counter > self.complete_to and counter not in self.seen:
                    self.seen.add(counter)
                    fresh.append(event)
            path = page.get("next") if isinstance(page, dict) else None
            if not path:
                break
        fresh.sort(key=lambda event: event["counter"])
        while self.complete_to + 1 in self.seen:
            self.complete_to += 1
            self.seen.discard(self.complete_to)
        return fresh


def _runner_event(event):
    """An AWX job event as the ansible-runner event ``_EventCollector`` reads: AWX keeps runner's
    ``event_data`` and copies some of it to top-level fields; those fill what ``event_data`` lacks."""
    data = dict(event.get("event_data") or {})
    for key, source in (("task", "task"), ("play", "play"), ("role", "role"), ("host", "host_name")):
        if not data.get(key) and event.get(source):
            data[key] = event[source]
    return {"event": event.get("event"), "event_data": data}
