"""HTTP layer: OAuth2 bearer tokens (and Basic, for clients that make their token), routing,
AWX's pagination and list filters, and the ``/_lab`` control endpoints.

AWX answers 401 ``{"detail": "Authentication credentials were not provided. To establish a
login session, visit /api/login/."}`` both without credentials and with a token it does not know
(AWX's ``APIView.finalize_response`` appends the login hint to every 401), and 403
``{"detail": "You do not have permission to perform this action."}`` when the token or user may
not do what is asked: a ``read`` token on any change, a user on an organization it is not in.
``/api/``, ``/api/v2/`` and ``/api/v2/ping/`` need no authentication, as in AWX.
"""

import base64
import copy
import hmac
import json
import logging
import re
import secrets
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import errors, labcontrol, launch
from .jobs import CANCELABLE, Jobs, filter_events
from .runner import stdout_text
from .errors import ApiError
from .resources import FIELDS, TYPE_NAMES, Store, now
from . import related  # inventory sources, schedules, notifications: sub-lists and read-only lists

LOG = logging.getLogger("awxsim.server")
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 25
RESERVED_QUERY = ("page", "page_size", "order_by", "order", "count_disabled", "format", "search")
VERSION = "24.6.1-awxsim"
SAFE = ("GET", "HEAD", "OPTIONS")


class Tokens:
    """OAuth2 tokens: value -> ``{"id", "user", "scope"}``; values are compared in constant time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_id = {}
        self.next_id = 1

    def add(self, user: str, scope: str, value: str | None = None) -> dict:
        if scope not in ("read", "write"):
            raise errors.fields({"scope": ['"%s" is not a valid choice.' % scope]})
        with self.lock:
            token = {"id": self.next_id, "user": user, "scope": scope,
                     "token": value or secrets.token_urlsafe(24), "created": now()}
            self.by_id[token["id"]] = token
            self.next_id += 1
            return token

    def find(self, value: str):
        with self.lock:
            for token in self.by_id.values():
                if hmac.compare_digest(token["token"].encode(), value.encode()):
                    return token
        return None


class Application:
    """The state (objects, users, tokens), and the handling of one request."""

    def __init__(self, config: dict):
        self.config = config
        self.control_key = config.get("control_key")
        self.reset()

    def reset(self) -> None:
        if getattr(self, "jobs", None) is not None:
            self.jobs.stop_all()
        self.store = Store(self.config.get("projects_root"))
        self.jobs = Jobs(self.store, self.config)
        self.users = {}
        for index, user in enumerate(self.config.get("users", []), start=1):
            self.users[user["username"]] = {
                "id": index, "username": user["username"], "password": user.get("password"),
                "is_superuser": bool(user.get("is_superuser")),
                "organizations": list(user.get("organizations", []))}
        self.tokens = Tokens()
        for token in self.config.get("tokens", []):
            self.tokens.add(token["user"], token.get("scope", "write"), token["token"])
        self.requests = []

    # ------------------------------------------------------------ dispatch

    def handle(self, http: "RequestHandler") -> None:
        url = urlsplit(http.path)
        query = parse_qsl(url.query, keep_blank_values=True)
        self.requests.append({"method": http.command, "path": url.path, "query": url.query})
        headers = {}
        try:
            body = read_body(http)
            if url.path.startswith("/_lab/"):
                status, data = self.control(http, url.path, body)
            else:
                status, data, headers = self.api(http, url.path, query, body)
        except ApiError as exc:
            status, data = exc.status, exc.body
            if status == 405:
                headers = {"Allow": "GET, HEAD, OPTIONS"}
        send_json(http, status, data, headers)

    def control(self, http, path, body):
        if not self.control_key:
            raise errors.detail(404, "control API disabled (no control_key configured)")
        key = http.headers.get("X-Lab-Key") or ""
        if not hmac.compare_digest(key.encode(), str(self.control_key).encode()):
            raise errors.detail(401, "invalid or missing X-Lab-Key")
        if path == "/_lab/health" and http.command == "GET":
            return 200, {"ok": True}
        if path == "/_lab/reset" and http.command == "POST":
            self.reset()
            return 200, {"ok": True}
        if path == "/_lab/state" and http.command == "GET":
            return 200, {"requests": list(self.requests),
                         "objects": {kind: [self.store.serialize(kind, obj) for obj in table.values()]
                                     for kind, table in self.store.objects.items()}}
        match = re.fullmatch(r"/_lab/jobs/(\d+)/status", path)
        if match and http.command == "POST":
            job = self.jobs.get(match.group(1))
            if not isinstance(body, dict) or not isinstance(body.get("status"), str):
                raise errors.fields({"status": ["This field is required."]})
            self.jobs.set_status(job, body["status"], str(body.get("job_explanation", "")))
            return 200, self.jobs.serialize(job)
        match = re.fullmatch(r"/_lab/jobs/(\d+)/runner", path)
        if match and http.command == "GET":
            job = self.jobs.get(match.group(1))
            thread = self.jobs.runner.threads.get(job["id"]) if self.jobs.runner else None
            return 200, {"private_data_dir": self.jobs.private_dirs.get(job["id"]),
                         "thread_alive": bool(thread and thread.is_alive())}
        if path == "/_lab/tokens" and http.command == "POST":
            if not isinstance(body, dict) or body.get("user") not in self.users:
                raise errors.fields({"user": ["unknown user"]})
            token = self.tokens.add(body["user"], body.get("scope", "write"), body.get("token"))
            return 200, {"id": token["id"], "token": token["token"]}
        handled = labcontrol.control(self, http, path, body)  # job events and artifacts
        if handled:
            return handled
        raise errors.detail(404, "no control endpoint %s %s" % (http.command, path))

    def api(self, http, path, query, body):
        method = http.command
        if path in ("/api", "/api/"):
            return 200, {"description": "AWX REST API", "current_version": "/api/v2/",
                         "available_versions": {"v2": "/api/v2/"}, "oauth2": "/api/o/",
                         "custom_logo": "", "custom_login_info": "", "login_redirect_override": ""}, {}
        if not path.startswith("/api/v2/"):
            raise errors.detail(404, errors.NOT_FOUND)
        if not path.endswith("/"):
            path += "/"
        parts = [part for part in path[len("/api/v2/"):].split("/") if part]
        if not parts:
            # AWX's root names the inventories list "inventory" (ApiV2RootView); awxkit's CLI
            # takes its resource names from these keys (``awx inventory list``).
            root = {("inventory" if kind == "inventories" else kind): "/api/v2/%s/" % kind for kind in FIELDS}
            root.update({name: "/api/v2/%s/" % name for name in ("ping", "me", "tokens", "jobs") + related.TOP})
            return 200, root, {}
        if parts == ["ping"]:
            return 200, {"ha": False, "version": VERSION, "active_node": "awxsim", "install_uuid": "awxsim",
                         "instances": [{"node": "awxsim", "node_type": "hybrid", "uuid": "00000000-0000-4000-8000-00000000a3c5",
                                        "heartbeat": now(), "capacity": 10, "version": VERSION}],
                         "instance_groups": [{"name": "default", "capacity": 10, "instances": ["awxsim"]}]}, {}
        user, token = self.authenticate(http)
        if token is not None and token["scope"] == "read" and method not in SAFE:
            raise errors.detail(403, errors.PERMISSION_DENIED)
        if parts == ["me"]:
            return 200, self.paginate([self.user_json(user)], "/api/v2/me/", query), {}
        if parts[0] == "tokens":
            return self.tokens_api(method, parts[1:], user, body)
        if parts[0] == "jobs":
            return self.jobs_api(method, parts[1:], user, query)
        if parts[0] in related.TOP:
            return related.top(self, method, parts[0], parts[1:], user, query)
        kind = parts[0]
        if kind not in FIELDS:
            raise errors.detail(404, errors.NOT_FOUND)
        if len(parts) == 1:
            return self.collection(method, kind, user, query, body)
        obj = self.store.get(kind, parts[1])
        self.check_access(user, kind, obj)
        if len(parts) == 2:
            return self.detail(method, kind, obj, body)
        if kind == "job_templates" and len(parts) == 3 and parts[2] == "launch":
            return self.launch(http, obj, body, user)
        if kind == "job_templates" and len(parts) == 3 and parts[2] == "survey_spec":
            return self.survey_spec(method, obj, body)
        if kind == "job_templates" and len(parts) == 3 and parts[2] == "credentials":
            return self.jt_credentials(method, obj, user, query, body)
        if len(parts) == 3 and related.handles(kind, parts[2]):
            return related.sub(self, method, kind, obj, parts[2], user, query, body)
        raise errors.detail(404, errors.NOT_FOUND)

    # ------------------------------------------------------------ authentication and access

    def authenticate(self, http):
        """``(user, token)`` for the request's Bearer token or Basic credentials; 401 otherwise."""
        header = http.headers.get("Authorization") or ""
        scheme, _sep, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            token = self.tokens.find(value)
            if token and token["user"] in self.users:
                return self.users[token["user"]], token
        elif scheme.lower() == "basic" and value:
            try:
                name, _colon, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, password = "", ""
            user = self.users.get(name)
            if user and user["password"] and hmac.compare_digest(user["password"].encode(), password.encode()):
                return user, None
        raise errors.detail(401, errors.NOT_AUTHENTICATED)

    def can_see(self, user, kind, obj) -> bool:
        if user["is_superuser"]:
            return True
        org = self.store.organization_of(kind, obj)
        if org is None:
            return kind == "credential_types"
        names = {self.store.objects["organizations"][org]["name"]} if org in self.store.objects["organizations"] else set()
        return bool(names & set(user["organizations"]))

    def check_access(self, user, kind, obj) -> None:
        if not self.can_see(user, kind, obj):
            raise errors.detail(403, errors.PERMISSION_DENIED)

    def user_json(self, user):
        return {"id": user["id"], "type": "user", "url": "/api/v2/users/%d/" % user["id"],
                "username": user["username"], "is_superuser": user["is_superuser"],
                "is_system_auditor": False, "first_name": "", "last_name": "", "email": ""}

    def tokens_api(self, method, rest, user, body):
        if not rest and method == "POST":
            body = body if isinstance(body, dict) else {}
            token = self.tokens.add(user["username"], body.get("scope", "write"))
            return 201, {"id": token["id"], "type": "o_auth2_access_token", "url": "/api/v2/tokens/%d/" % token["id"],
                         "token": token["token"], "refresh_token": None, "scope": token["scope"],
                         "description": body.get("description", ""), "application": None,
                         "expires": "2999-12-31T00:00:00Z", "created": token["created"]}, {}
        if len(rest) == 1 and rest[0].isdigit() and method == "DELETE":
            with self.tokens.lock:
                token = self.tokens.by_id.get(int(rest[0]))
                if token is None:
                    raise errors.detail(404, errors.NOT_FOUND)
                if token["user"] != user["username"] and not user["is_superuser"]:
                    raise errors.detail(403, errors.PERMISSION_DENIED)
                del self.tokens.by_id[token["id"]]
            return 204, None, {}
        raise errors.detail(405, 'Method "%s" not allowed.' % method)

    # ------------------------------------------------------------ resources

    def collection(self, method, kind, user, query, body):
        if method == "OPTIONS":
            return 200, self.options(kind, ("GET", "POST")), {"Allow": "GET, POST, HEAD, OPTIONS"}
        if method in ("GET", "HEAD"):
            items = [obj for obj in self.store.objects[kind].values() if self.can_see(user, kind, obj)]
            items = self.filter(set(FIELDS[kind]) | {"id", "organization"}, items, query)
            return 200, self.paginate([self.store.serialize(kind, obj) for obj in items],
                                      "/api/v2/%s/" % kind, query), {}
        if method == "POST":
            if not user["is_superuser"]:
                org = body.get("organization") if isinstance(body, dict) else None
                orgs = self.store.objects["organizations"]
                if org not in orgs or orgs[org]["name"] not in user["organizations"]:
                    raise errors.detail(403, errors.PERMISSION_DENIED)
            obj = self.store.create(kind, body)
            data = self.store.serialize(kind, obj)
            return 201, data, {"Location": data["url"]}
        raise errors.detail(405, 'Method "%s" not allowed.' % method)

    def detail(self, method, kind, obj, body):
        if method == "OPTIONS":
            return 200, self.options(kind, ("GET", "PUT")), {"Allow": "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"}
        if method in ("GET", "HEAD"):
            return 200, self.store.serialize(kind, obj), {}
        if method in ("PATCH", "PUT"):
            if method == "PUT":
                # PUT replaces: a field left out goes back to its default (a required one is a 400)
                self.store.validate(kind, body, partial=False)
                body = dict({field: copy.deepcopy(default) for field, (_t, _r, default) in FIELDS[kind].items()}, **body)
            self.store.update(kind, obj, body)
            return 200, self.store.serialize(kind, obj), {}
        if method == "DELETE":
            self.store.delete(kind, obj)
            return 204, None, {}
        raise errors.detail(405, 'Method "%s" not allowed.' % method)

    def launch(self, http, jt, body, user):
        method = http.command
        if method == "OPTIONS":
            actions = {"POST": {field: {"type": "field", "label": field} for field in launch.GATES}}
            return 200, {"name": "Job Template Launch", "actions": actions}, {"Allow": "GET, POST, HEAD, OPTIONS"}
        if method in ("GET", "HEAD"):
            return 200, launch.launch_info(self.store, jt), {}
        if method != "POST":
            raise errors.detail(405, 'Method "%s" not allowed.' % method)
        applied, ignored = launch.accept(self.store, jt, body)
        job = self.jobs.create(jt, applied, ignored, user)
        data = {"job": job["id"], "ignored_fields": ignored, **self.jobs.serialize(job)}
        self.jobs.start(job, applied)  # after the answer is made: AWX answers with the job still pending
        # AWX: Location is new_job.get_absolute_url(request), an absolute URL
        return 201, data, {"Location": "http://%s%s" % (http.headers.get("Host", "127.0.0.1"), data["url"])}

    def jobs_api(self, method, rest, user, query):
        visible = {jt["id"] for jt in self.store.objects["job_templates"].values()
                   if self.can_see(user, "job_templates", jt)}
        if method == "OPTIONS" and len(rest) <= 1:
            # awxkit builds ``awx jobs ...`` (list, get, stdout) from these: read-only, no POST
            fields = {name: {"type": "string", "label": name, "filterable": True}
                      for name in ("name", "status", "job_template", "inventory", "project", "launch_type", "failed")}
            fields["id"] = {"type": "integer", "label": "ID", "filterable": True}
            return 200, {"name": "Job List" if not rest else "Job Detail", "description": "", "renders": ["application/json"],
                         "parses": ["application/json"], "actions": {"GET": fields}, "types": ["job"]}, \
                {"Allow": "GET, HEAD, OPTIONS" if not rest else "GET, DELETE, HEAD, OPTIONS"}
        if not rest:
            if method not in ("GET", "HEAD"):
                raise errors.detail(405, 'Method "%s" not allowed.' % method)
            items = [job for job in self.jobs.by_id.values() if user["is_superuser"] or job["job_template"] in visible]
            fields = {"id", "name", "status", "job_template", "inventory", "project", "launch_type", "failed"}
            items = self.filter(fields, items, query)
            return 200, self.paginate([self.jobs.serialize(job, detail=False) for job in items], "/api/v2/jobs/", query), {}
        job = self.jobs.get(rest[0])
        if not user["is_superuser"] and job["job_template"] not in visible:
            raise errors.detail(403, errors.PERMISSION_DENIED)
        if len(rest) == 1 and method in ("GET", "HEAD"):
            return 200, self.jobs.serialize(job), {}
        if rest[1:] == ["cancel"]:
            if method in ("GET", "HEAD"):
                return 200, {"can_cancel": job["status"] in CANCELABLE}, {}
            if method == "POST":
                self.jobs.cancel(job)
                return 202, None, {}
        if rest[1:] == ["job_events"] and method in ("GET", "HEAD"):
            with self.store.lock:
                events = list(self.jobs.events.get(job["id"], []))
            return 200, self.paginate(filter_events(events, query), "/api/v2/jobs/%d/job_events/" % job["id"], query), {}
        if rest[1:] == ["stdout"] and method in ("GET", "HEAD"):
            with self.store.lock:
                text = stdout_text(self.jobs.events.get(job["id"], []))
            fmt = dict(query).get("format", "txt")
            if fmt == "json":
                return 200, {"range": {"start": 0, "end": text.count("\n"), "absolute_end": text.count("\n")},
                             "content": text}, {}
            return 200, RawText(text), {"Content-Type": "text/plain; charset=utf-8"}
        if len(rest) <= 2 and rest[1:] in ([], ["cancel"], ["job_events"], ["stdout"]):
            raise errors.detail(405, 'Method "%s" not allowed.' % method)
        raise errors.detail(404, errors.NOT_FOUND)

    def jt_credentials(self, method, jt, user, query, body):
        """``/job_templates/<id>/credentials/``: AWX's sub-list attach and detach
        (``SubListCreateAttachDetachAPIView``): ``{"id"}`` attaches (204), no ``id`` creates and
        attaches (201), ``{"id", "disassociate": true}`` detaches (204)."""
        attached = self.store.jt_credentials.setdefault(jt["id"], [])
        creds = self.store.objects["credentials"]
        if method in ("GET", "HEAD"):
            items = [creds[cid] for cid in attached if cid in creds]
            return 200, self.paginate([self.store.serialize("credentials", c) for c in items],
                                      "/api/v2/job_templates/%d/credentials/" % jt["id"], query), {}
        if method != "POST":
            raise errors.detail(405, 'Method "%s" not allowed.' % method)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid type for post data")
        sub_id = body.get("id")
        if sub_id and (not isinstance(sub_id, int) or isinstance(sub_id, bool)):
            raise ApiError(400, {"msg": '"id" field must be an integer.'})
        if "disassociate" in body:
            if not sub_id:
                raise ApiError(400, {"msg": '"id" is required to disassociate'})
            if sub_id not in creds:
                raise errors.detail(400, "Credential matching query does not exist.")
            if sub_id in attached:
                attached.remove(sub_id)
            return 204, None, {}
        with self.store.lock:
            created = None
            if not sub_id:
                created = self.store.create("credentials", body)
                sub_id = created["id"]
            if sub_id not in creds:
                raise errors.detail(400, "Credential matching query does not exist.")
            if not self.can_see(user, "credentials", creds[sub_id]):
                raise errors.detail(403, errors.PERMISSION_DENIED)
            clash = self.store.credential_clash(attached + [sub_id])
            if clash:
                if created:
                    self.store.delete("credentials", created)
                raise ApiError(400, {"error": clash})
            attached.append(sub_id)
        if created:
            data = self.store.serialize("credentials", created)
            return 201, data, {"Location": data["url"]}
        return 204, None, {}

    def survey_spec(self, method, jt, body):
        key = ("job_templates", jt["id"])
        if method in ("GET", "HEAD"):
            return 200, self.store.survey_specs.get(key, {}), {}
        if method == "POST":
            self.store.survey_specs[key] = launch.check_survey_spec(body)
            return 200, None, {}
        if method == "DELETE":
            self.store.survey_specs.pop(key, None)
            return 200, None, {}
        raise errors.detail(405, 'Method "%s" not allowed.' % method)

    @staticmethod
    def options(kind, methods):
        actions = {}
        for method in methods:
            fields = {}
            for field, (ftype, required, default) in FIELDS[kind].items():
                if isinstance(ftype, tuple):
                    kind_name, extra = "choice", {"choices": [[value, str(value)] for value in ftype]}
                elif ftype.startswith("fk:"):
                    kind_name, extra = "id", {}
                else:
                    kind_name = {"str": "string", "text": "string", "bool": "boolean", "int": "integer",
                                 "dict": "json", "vars": "string"}[ftype]
                    extra = {}
                fields[field] = dict({"type": kind_name, "label": field.replace("_", " ").capitalize(),
                                      "required": required and method == "POST", "filterable": True,
                                      "default": default}, **extra)
            if method == "GET":
                fields["id"] = {"type": "integer", "label": "ID", "filterable": True}
            actions[method] = fields
        return {"name": TYPE_NAMES[kind].replace("_", " ").title() + " List", "description": "",
                "renders": ["application/json"], "parses": ["application/json"], "actions": actions,
                "types": [TYPE_NAMES[kind]]}

    # ------------------------------------------------------------ lists

    def filter(self, fields, items, query):
        """AWX list filters, the subset its clients use: ``field``, ``field__icontains``,
        ``field__startswith``, ``field__in`` and the ``or__`` prefix; ``order_by``."""
        ands, ors = [], []
        for key, value in query:
            if key in RESERVED_QUERY:
                continue
            target = ors if key.startswith("or__") else ands
            key = key[4:] if key.startswith("or__") else key
            field, _sep, lookup = key.partition("__")
            if field not in fields or lookup not in ("", "exact", "iexact", "icontains", "startswith", "in"):
                raise errors.detail(400, "Invalid field name: %s" % key)
            target.append((field, lookup, value))

        def match(obj, field, lookup, value):
            have = obj.get(field)
            have = "" if have is None else str(have)
            if lookup in ("", "exact"):
                return have == value
            if lookup == "iexact":
                return have.lower() == value.lower()
            if lookup == "icontains":
                return value.lower() in have.lower()
            if lookup == "startswith":
                return have.startswith(value)
            return have in value.split(",")
        items = [obj for obj in items if all(match(obj, *cond) for cond in ands)
                 and (not ors or any(match(obj, *cond) for cond in ors))]
        order = dict(query).get("order_by", "id")
        field = order.lstrip("-")
        if field not in fields:
            raise errors.detail(400, "Invalid field name: %s" % field)
        return sorted(items, key=lambda obj: (obj.get(field) is None, str(obj.get(field)) if field != "id" else obj["id"]),
                      reverse=order.startswith("-"))

    @staticmethod
    def paginate(results, path, query):
        """``{count, next, previous, results}``; ``page_size`` defaults to 25 and is capped at 200
        (the ``next`` link then carries 200); ``count_disabled`` gives ``{results}`` only."""
        params = dict(query)
        try:
            size = int(params.get("page_size", DEFAULT_PAGE_SIZE))
            size = DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)
        except ValueError:
            size = DEFAULT_PAGE_SIZE
        try:
            page = int(params.get("page", 1))
        except ValueError:
            raise errors.detail(404, "Invalid page.") from None
        pages = max(1, -(-len(results) // size))
        if page < 1 or page > pages:
            raise errors.detail(404, "Invalid page.")
        chunk = results[(page - 1) * size:page * size]
        if "count_disabled" in params:
            return {"results": chunk}

        def link(number):
            # AWX: the request's own query with ``page`` replaced (DRF replace_query_param, which
            # sorts the parameters), ``page_size`` rewritten to the capped size; page 1 stays explicit.
            kept = {}
            for key, value in query:
                kept.setdefault(key, []).append(value)
            kept["page"] = [str(number)]
            if "page_size" in kept:
                kept["page_size"] = [str(size)]
            return path + "?" + urlencode(sorted(kept.items()), doseq=True)
        return {"count": len(results), "next": link(page + 1) if page < pages else None,
                "previous": link(page - 1) if page > 1 else None, "results": chunk}


def read_body(http):
    length = int(http.headers.get("Content-Length") or 0)
    if not length:
        return None
    raw = http.rfile.read(length)
    ctype = (http.headers.get("Content-Type") or "application/json").split(";")[0].strip()
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.detail(400, "JSON parse error - %s" % exc) from exc


class RawText(str):
    """A body sent as is (``stdout/?format=txt``), its Content-Type among the headers."""


def send_json(http, status: int, data, headers: dict) -> None:
    if data is None or http.command == "HEAD" and status < 300:
        payload = b""
    elif isinstance(data, RawText):
        payload = data.encode("utf-8")
    else:
        payload = json.dumps(data).encode()
    http.send_response(status)
    if (payload or status not in (204,)) and "Content-Type" not in headers:
        http.send_header("Content-Type", "application/json")
    http.send_header("Content-Length", str(len(payload)))
    http.send_header("X-API-Product-Name", "AWX")
    http.send_header("X-API-Product-Version", VERSION)
    for key, value in headers.items():
        http.send_header(key, value)
    http.end_headers()
    if payload:
        http.wfile.write(payload)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "awxsim"

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        LOG.debug("%s - %s", self.address_string(), format % args)


class AwxSimServer(ThreadingHTTPServer):
    """Threaded; with TLS, the handshake happens in the connection's own thread (as pvesim)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, app: Application, ssl_context=None):
        self.app = app
        self.ssl_context = ssl_context
        super().__init__(address, RequestHandler)

    def finish_request(self, request, client_address):
        request.settimeout(120)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                LOG.debug("TLS handshake with %s failed: %s", client_address, exc)
                request.close()
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            LOG.debug("connection from %s ended: %s", client_address, exc)


def create_server(config: dict) -> AwxSimServer:
    """A server on ``config["listen_host"]`` (127.0.0.1) and ``config["listen_port"]``; HTTPS when
    ``tls_cert`` and ``tls_key`` (PEM files) are given, HTTP otherwise."""
    host = config.get("listen_host", "127.0.0.1")
    context = None
    if config.get("tls_cert") and config.get("tls_key"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(config["tls_cert"], config["tls_key"])
    config.setdefault("awx_host", "%s://%s:%s" % ("https" if context else "http", host, config["listen_port"]))
    server = AwxSimServer((host, int(config["listen_port"])), Application(config), context)
    LOG.info("awxsim listening on %s://%s:%s", "https" if context else "http", host, server.server_address[1])
    return server
