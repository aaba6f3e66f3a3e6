"""HTTP(S) layer: TLS, request parsing, authentication, routing, the response envelope,
request faults, latency and the request log.

PVE puts an error's message in the HTTP reason phrase (``500 CT is locked (disk)``)
and in the body as ``{"data": null, "message": "...\\n"}``; clients such as proxmoxer
read the reason, so it is kept verbatim (on one line). A 401 has the reason only.
"""

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from . import api, schema
from .access import AccessControl
from .acl import TokenRegistry, claimed_token_id
from .backend import Backend, MemoryBackend
from .certificates import NodeCertificates
from .config import SimConfig
from .control import ControlApi
from .errors import ApiError, AuthError, MethodNotImplemented
from .faults import RequestLog
from .state import Cluster

LOG = logging.getLogger("pvesim.server")
API_PREFIX = "/api2/json"
CONTROL_PREFIX = "/_lab"
CONNECTION_TIMEOUT = 120


class Application:
    """Everything a request needs: the cluster state, tokens, request log, control API."""

    def __init__(self, config: SimConfig, backend=None, ssl_context: ssl.SSLContext | None = None):
        self.config = config
        self.initial_values = copy.deepcopy(config.values)
        self.cluster = Cluster(config, backend or make_backend(config))
        self.access = AccessControl()
        self.cluster.access = self.access
        self.tokens = TokenRegistry(config.tokens, self.access)
        self.requests = RequestLog()
        self.control = ControlApi(self)
        self.cluster.ssl_fingerprint = _certificate_fingerprint(config.tls_cert)
        self.cluster.certificates = NodeCertificates(config.tls_cert, _ca_file(config), ssl_context)

    def reset(self) -> None:
        """Back to how the process started: config, tokens, state, log."""
        self.config.values.clear()
        self.config.values.update(copy.deepcopy(self.initial_values))
        self.access = AccessControl()
        self.cluster.access = self.access
        self.tokens = TokenRegistry(self.config.tokens, self.access)
        self.cluster.reset()
        self.cluster.certificates.reset()
        self.requests.clear()

    # ------------------------------------------------------------ dispatch

    def handle(self, http: "RequestHandler") -> None:
        url = urlsplit(http.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path == CONTROL_PREFIX or url.path.startswith(CONTROL_PREFIX + "/"):
            self._handle_control(http, url.path)
        elif url.path == API_PREFIX or url.path.startswith(API_PREFIX + "/"):
            self._handle_api(http, url.path[len(API_PREFIX):] or "/", query)
        else:
            send_json(http, 404, "Not Found", {"data": None, "message": "Not Found\n"})

    def _handle_control(self, http, path: str) -> None:
        try:
            body = read_json_body(http)
            data = self.control.handle(http.command, path, http.headers.get("X-Lab-Key"), body)
            send_json(http, 200, "OK", {"data": data})
        except ApiError as exc:
            send_json(http, exc.status, exc.message, {"data": None, "message": exc.message + "\n"})

    def _handle_api(self, http, path: str, query: dict) -> None:
        method = http.command
        outcome = _Outcome()
        outcome.token_id = claimed_token_id(http.headers.get("Authorization"))
        try:
            params = dict(query)
            if method in ("POST", "PUT"):
                params.update(read_form_body(http))
            outcome.params = params
            self._delay()
            fault = self.cluster.faults.take_request_fault(method, path)
            if fault is not None and not fault.after:
                self._send_fault(http, fault, outcome)
                return
            outcome.data = self._call(method, path, params, http.headers.get("Authorization"), outcome)
            if fault is not None:
                self._send_fault(http, fault, outcome)
                return
            outcome.status, outcome.reason = 200, "OK"
            send_json(http, 200, "OK", _envelope(outcome.data))
        except ApiError as exc:
            outcome.status, outcome.reason = exc.status, exc.message
            if isinstance(exc, AuthError) and self.config.auth_failure_delay:
                time.sleep(self.config.auth_failure_delay)
            send_error(http, exc)
        except Exception as exc:  # a simulator bug must still look like a PVE error
            LOG.exception("internal error on %s %s", method, path)
            outcome.status, outcome.reason = 500, f"internal simulator error: {exc}"
            send_json(http, 500, outcome.reason, {"data": None, "message": outcome.reason + "\n"})
        finally:
            self.requests.record(method, path, outcome.status, outcome.reason,
                                 outcome.token_id, outcome.params)

    def _delay(self) -> None:
        latency = self.cluster.faults.latency_ms
        if latency:
            time.sleep(latency / 1000.0)

    def _call(self, method: str, path: str, params: dict, authorization: str | None, outcome):
        token = self.tokens.authenticate(authorization, _detailed_auth_errors(self.config.pve_version))
        segments = [unquote(part) for part in path.strip("/").split("/")] if path.strip("/") else []
        route, path_params = api.find_route(method, segments)
        if not route:
            raise MethodNotImplemented(method, path)
        params.update(path_params)
        node = path_params.get("node")
        if node == "localhost":
            node = params["node"] = self.cluster.node
        if node is not None and node not in self.cluster.nodes:
            raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address info "
                                f"for: {node}: Name or service not known")
        if node is not None:  # pveproxy proxies the call to the node (proxyto 'node')
            self.cluster.check_reachable(node)
        if route.check is not None:
            route.check.enforce(token, params)
        typed = schema.validate(params, route.spec)
        with self.cluster.serving(node) if node else contextlib.nullcontext():
            return route.handler(api.Call(token, typed, self.cluster))

    def _send_fault(self, http, fault, outcome) -> None:
        if fault.close:
            outcome.status, outcome.reason = 0, "connection closed (injected)"
            http.close_connection = True
            try:
                http.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        outcome.status, outcome.reason = fault.status, fault.reason
        send_json(http, fault.status, fault.reason, {"data": None, "message": fault.reason + "\n"})


class _Outcome:
    """What the request log records about one request."""

    def __init__(self):
        self.status = 0
        self.reason = ""
        self.token_id = None
        self.params: dict = {}
        self.data = None


def _certificate_fingerprint(cert_file: str | None) -> str:
    """SHA-256 of the server certificate in PVE's ``AA:BB:...`` notation."""
    if not cert_file:
        return ""
    with open(cert_file, encoding="ascii") as handle:
        der = ssl.PEM_cert_to_DER_cert(handle.read())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _ca_file(config: SimConfig) -> str | None:
    """The lab CA (``tls_ca``, else ``ca.pem`` beside the server certificate): pve-root-ca.pem."""
    if config.values.get("tls_ca"):
        return config.values["tls_ca"]
    if config.tls_cert:
        return os.path.join(os.path.dirname(config.tls_cert), "ca.pem")
    return None


def _detailed_auth_errors(pve_version: str) -> bool:
    """pve-manager answers a bad token with verify_token's own message up to 8.4.16 (acl.py)."""
    return tuple(int(part) for part in re.findall(r"\d+", str(pve_version))[:3]) < (8, 4, 17)


def _envelope(data) -> dict:
    if isinstance(data, api.Reply):
        return {"data": data.data, **data.extra}
    return {"data": data}


# ------------------------------------------------------------ HTTP plumbing

def read_body(http) -> bytes:
    length = int(http.headers.get("Content-Length") or 0)
    return http.rfile.read(length) if length > 0 else b""


def read_form_body(http) -> dict:
    """Form-encoded like proxmoxer sends; JSON bodies are accepted as PVE 7+ does."""
    raw = read_body(http)
    if not raw:
        return {}
    content_type = (http.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"unable to parse JSON body - {exc}") from exc
        if not isinstance(decoded, dict):
            raise ApiError(400, "JSON body must be an object")
        return {key: _json_param(value) for key, value in decoded.items()}
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _json_param(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return value if isinstance(value, str) else json.dumps(value)


def read_json_body(http):
    raw = read_body(http)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from exc


def send_json(http, status: int, reason: str, body: dict) -> None:
    payload = json.dumps(body).encode()
    http.send_response(status, _reason_phrase(reason))
    http.send_header("Content-Type", "application/json;charset=UTF-8")
    http.send_header("Content-Length", str(len(payload)))
    http.send_header("Cache-Control", "max-age=0")
    http.send_header("Pragma", "no-cache")
    http.end_headers()
    http.wfile.write(payload)


def send_error(http, exc: ApiError) -> None:
    """An error as PVE answers it: JSON body, or (a 401) the status line alone."""
    body = exc.body()
    if body is not None:
        send_json(http, exc.status, exc.message, body)
        return
    # pve-http-server AnyEvent.pm ``response``: no content, Content-Length removed,
    # ``Connection: close`` for every status >= 400.
    http.send_response(exc.status, _reason_phrase(exc.message))
    http.send_header("Cache-Control", "max-age=0")
    http.send_header("Pragma", "no-cache")
    http.send_header("Connection", "close")
    http.end_headers()
    http.close_connection = True


def _reason_phrase(text: str) -> str:
    """One latin-1 line: the status line cannot carry anything else."""
    line = " ".join(str(text).split()) or "Error"
    return line.encode("latin-1", "replace").decode("latin-1")


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        LOG.debug("%s - %s", self.address_string(), format % args)


class SimulatorServer(ThreadingHTTPServer):
    """Threaded server; the TLS handshake happens in the connection's own thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, app: Application, ssl_context: ssl.SSLContext | None):
        self.app = app
        self.ssl_context = ssl_context
        super().__init__(address, RequestHandler)

    def finish_request(self, request, client_address):
        request.settimeout(CONNECTION_TIMEOUT)
        # Headers and body leave in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every keep-alive request.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The node's certificate as pveproxy last (re)loaded it (certificates.py).
        context = self.app.cluster.certificates.serving if self.ssl_context is not None else None
        if context is not None:
            try:
                request = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                LOG.debug("TLS handshake with %s failed: %s", client_address, exc)
                request.close()
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            LOG.debug("connection from %s ended: %s", client_address, exc)
        finally:
            try:
                request.close()
            except OSError:
                pass


def make_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def make_backend(config: SimConfig) -> Backend:
    """The container backend named by ``config.backend``."""
    if config.backend == "memory":
        return MemoryBackend(config.dhcp_delay)
    if config.backend == "lxc":
        from .lxcbackend import LxcBackend  # pylint: disable=import-outside-toplevel
        settings = config.lxc
        if not settings.get("lxc_path") or not settings.get("bridge"):
            raise ValueError("the lxc backend needs config lxc.lxc_path and lxc.bridge")
        return LxcBackend(settings["lxc_path"], settings["bridge"], settings.get("leases_file"))
    raise ValueError(f"unknown backend '{config.backend}' (available: memory, lxc)")


def create_server(config: SimConfig, backend: Backend | None = None) -> SimulatorServer:
    context = None
    if config.tls_cert and config.tls_key:
        context = make_ssl_context(config.tls_cert, config.tls_key)
    app = Application(config, backend or make_backend(config), context)
    server = SimulatorServer((config.listen_host, int(config.listen_port)), app, context)
    LOG.info("pvesim listening on %s://%s:%s", "https" if context else "http",
             config.listen_host, server.server_address[1])
    return server
