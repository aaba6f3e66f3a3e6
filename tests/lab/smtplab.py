"""The lab's mail server: a real SMTP server (aiosmtpd) on loopback that keeps every message.

As a lab service (``SmtpService``, registered in ``lab.py``) it runs this file as a daemon:

    python smtplab.py serve --port 2525 --mailbox .lab/smtp/mailbox

Each message it accepts is written to the mailbox directory as one ``.eml`` file (RFC 5322 as
received, with ``X-Lab-Mail-From`` and ``X-Lab-Rcpt-To`` headers in front giving the SMTP
envelope). ``.lab/env`` gets ``SMTP_HOST``, ``SMTP_PORT`` and ``SMTP_MAILBOX_DIR``.

Tests read it with ``Mailbox``:

    box = Mailbox.from_env(lab_env)
    mark = box.mark()
    ...
    [msg] = box.messages(since=mark, to='customer@example.org')
    msg['Subject'], box.text(msg)
    box.assert_no_mail(since=mark, to='customer@example.org')   # proves the server alive first

"No mail" means something only from a live server: ``assert_no_mail`` first sends a probe
through ``SMTP_HOST``:``SMTP_PORT`` and waits for it in the mailbox (``prove_alive``). Probes
go to ``@probe.lab.invalid`` and ``messages()`` leaves them out.

With TLS and a login (``TlsSmtpServer``, a private instance a test starts): the same server with
``--tls-cert``/``--tls-key`` (STARTTLS offered, and required before MAIL) and ``--auth-file`` (a
0600 JSON file with the one ``username`` and ``password`` it accepts; AUTH only after STARTTLS).
Without a certificate it offers AUTH in the clear and no STARTTLS: what a client sees when a man
in the middle strips STARTTLS.
Every login attempt is one JSON line in ``--auth-log`` (``login``, ``mechanism``, ``success``,
``tls``: never the password); every message it keeps carries ``X-Lab-TLS`` (the TLS version of
the session, or ``none``) and ``X-Lab-Login`` (the user it logged in as, or ``none``).
"""

import argparse
import email
import email.policy
import hmac
import json
import os
import secrets
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from labenv import free_port  # the lab's one free-port helper

HERE = Path(__file__).resolve().parent
PROBE_DOMAIN = "probe.lab.invalid"


class SmtpService:
    """The SMTP stand-in for mail-core, as a lab service (same interface as lab.Service)."""

    name = "smtp"

    def __init__(self, lab):
        self.lab = lab
        self.directory = lab.directory / self.name
        self.mailbox = self.directory / "mailbox"
        self.settings_file = self.directory / "settings.json"
        self.pid_file = self.directory / "smtp.pid"
        self.log_file = self.directory / "smtp.log"

    def _load_settings(self):
        return json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}

    def _settings(self):
        """The port survives a restart, so .lab/env stays valid."""
        settings = self._load_settings()
        settings["port"] = free_port(settings.get("port"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.settings_file.write_text(json.dumps(settings, indent=2))
        return settings

    def _pid(self):
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            return None
        # The mailbox path in the command line marks the process as this lab's server.
        return pid if str(self.mailbox) in cmdline else None

    def start(self):
        settings = self._settings()
        self.mailbox.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(HERE / "smtplab.py"), "serve", "--port", str(settings["port"]),
                 "--mailbox", str(self.mailbox)],
                cwd=HERE, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{process.pid}\n")

    def stop(self):
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self._pid() == pid and time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            if self._pid() == pid:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def healthy(self):
        settings = self._load_settings()
        if not settings or self._pid() is None:
            return False
        try:
            with smtplib.SMTP("127.0.0.1", settings["port"], timeout=2) as client:
                return client.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def env(self):
        settings = self._load_settings()
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(settings.get("port")),
                "SMTP_MAILBOX_DIR": str(self.mailbox)}

    def describe(self):
        return f"smtp://127.0.0.1:{self._load_settings().get('port')} pid {self._pid()} mailbox {self.mailbox}"

    def diagnostics(self):
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


class Mailbox:
    """The messages the lab's SMTP server received (one ``.eml`` file each)."""

    def __init__(self, directory, host=None, port=None):
        self.directory = Path(directory)
        self.host = host
        self.port = port

    @classmethod
    def from_env(cls, env):
        return cls(env["SMTP_MAILBOX_DIR"], env.get("SMTP_HOST"), env.get("SMTP_PORT"))

    def prove_alive(self, timeout=10.0):
        """Send a probe through the SMTP server and see it arrive in this mailbox; AssertionError
        if the server refuses or does not answer, or the probe never lands here."""
        if not self.host or not self.port:
            raise AssertionError(f"no SMTP server to probe for mailbox {self.directory} (SMTP_HOST/SMTP_PORT)")
        recipient = f"{secrets.token_hex(8)}@{PROBE_DOMAIN}"
        probe = f"From: lab@{PROBE_DOMAIN}\r\nTo: {recipient}\r\nSubject: lab liveness probe\r\n\r\nprobe\r\n"
        before = self.mark()
        try:
            with smtplib.SMTP(self.host, int(self.port), timeout=timeout) as client:
                client.sendmail(f"lab@{PROBE_DOMAIN}", [recipient], probe)
        except (OSError, smtplib.SMTPException) as exc:
            raise AssertionError(f"the lab's SMTP server {self.host}:{self.port} did not take a probe message: "
                                 f"{exc or type(exc).__name__}") from exc
        deadline = time.monotonic() + timeout
        while True:  # the server writes the file before it answers 250; the loop is a safety margin
            for path in self.files():
                if path.name not in before and recipient.encode() in path.read_bytes():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.host}:{self.port} accepted a probe to {recipient}, but it never "
                                     f"reached the mailbox {self.directory}")
            time.sleep(0.05)

    def assert_no_mail(self, since, to=None, mentioning=None):
        """No message (to ``to``, naming ``mentioning``) since the mark ``since``, from a server proven alive just now.

        The lab's SMTP server is shared by the test lanes: a test that must see no mail of its own
        names its recipient or its pod, so that another lane's mail does not count."""
        self.prove_alive()
        found = self.messages(since=since, to=to, mentioning=mentioning)
        assert found == [], "unexpected mail: %s" % [(m.get("X-Lab-Rcpt-To"), m.get("Subject")) for m in found]

    def files(self):
        return sorted(self.directory.glob("*.eml")) if self.directory.is_dir() else []

    def mark(self):
        """The names received so far; pass to messages(since=...) to see only newer ones."""
        return {path.name for path in self.files()}

    def messages(self, since=None, to=None, mentioning=None):
        """Messages since the mark ``since``; with ``to``, those to that recipient; with ``mentioning``,
        those whose recipients, subject or text contain that string."""
        found = []
        for path in self.files():
            if since is not None and path.name in since:
                continue
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message.get("X-Lab-Rcpt-To", "").endswith("@" + PROBE_DOMAIN):
                continue  # a liveness probe, not mail
            if to is not None and to.lower() not in message.get("X-Lab-Rcpt-To", "").lower():
                continue
            if mentioning is not None and mentioning.lower() not in _text(message).lower():
                continue
            found.append(message)
        return found

    @staticmethod
    def text(message):
        body = message.get_body(preferencelist=("plain", "html"))
        return body.get_content() if body is not None else ""


class TlsSmtpServer:
    """A private lab SMTP server that wants STARTTLS and a login: ``serve`` with a certificate and
    one user, started and stopped by a test (``with TlsSmtpServer(...) as server``). ``cert=None``:
    no STARTTLS, AUTH in the clear."""

    def __init__(self, directory, cert, key, username, password):
        self.directory = Path(directory)
        self.cert, self.key = cert, key
        self.username, self.password = username, password
        self.mailbox = Mailbox(self.directory / "mailbox")  # no probes: a plain probe cannot get in
        self.auth_file = self.directory / "auth.json"
        self.auth_log = self.directory / "auth.log"
        self.log_file = self.directory / "smtp.log"
        self.port = None
        self.process = None

    def __enter__(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump({"username": self.username, "password": self.password}, handle)
        self.port = free_port()
        tls = ["--tls-cert", str(self.cert), "--tls-key", str(self.key)] if self.cert else []
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "smtplab.py"), "serve", "--port", str(self.port),
                 "--mailbox", str(self.mailbox.directory), "--auth-file", str(self.auth_file),
                 "--auth-log", str(self.auth_log)] + tls,
                cwd=HERE, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the TLS SMTP server exited ({self.process.returncode}): {self.log_tail()}")
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=2) as client:
                    client.ehlo()
                    if client.has_extn("starttls" if self.cert else "auth"):
                        return
            except (OSError, smtplib.SMTPException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the TLS SMTP server on port {self.port} did not answer: {self.log_tail()}")
            time.sleep(0.1)

    def __exit__(self, *_exc_info):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def logins(self):
        """Each login attempt so far: {"login", "mechanism", "success", "tls"}."""
        if not self.auth_log.exists():
            return []
        return [json.loads(line) for line in self.auth_log.read_text().splitlines() if line.strip()]

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _tls_version(session):
    """The TLS version of an aiosmtpd session (after STARTTLS), or 'none'."""
    ssl_object = (session.ssl or {}).get("ssl_object")
    return ssl_object.version() if ssl_object is not None else "none"


class Authenticator:
    """aiosmtpd's authenticator: one user, each attempt logged as a JSON line (never the password)."""

    def __init__(self, auth_file, auth_log):
        credentials = json.loads(Path(auth_file).read_text())
        self.username = credentials["username"].encode()
        self.password = credentials["password"].encode()
        self.auth_log = Path(auth_log)

    def __call__(self, _server, session, _envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword  # pylint: disable=import-outside-toplevel
        login = auth_data.login if isinstance(auth_data, LoginPassword) else b""
        success = (isinstance(auth_data, LoginPassword) and hmac.compare_digest(login, self.username)
                   and hmac.compare_digest(auth_data.password, self.password))
        entry = {"login": login.decode(errors="replace"), "mechanism": mechanism, "success": success,
                 "tls": _tls_version(session)}
        with open(self.auth_log, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        return AuthResult(success=success, handled=False, auth_data=login.decode(errors="replace"))


def _tls_settings(tls_cert, tls_key, auth_file, auth_log):
    """aiosmtpd's settings for STARTTLS (required before MAIL) and AUTH (only after STARTTLS; in the
    clear when there is no certificate)."""
    settings = {}
    if tls_cert:
        import ssl  # pylint: disable=import-outside-toplevel
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
        settings.update(tls_context=context, require_starttls=True)
    if auth_file:
        settings.update(authenticator=Authenticator(auth_file, auth_log), auth_require_tls=bool(tls_cert))
    return settings


def serve(port, mailbox, tls_cert=None, tls_key=None, auth_file=None, auth_log=None):
    from aiosmtpd.controller import Controller  # pylint: disable=import-outside-toplevel

    mailbox = Path(mailbox)
    mailbox.mkdir(parents=True, exist_ok=True)

    class Keeper:
        async def handle_DATA(self, _server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            name = "%s-%s.eml" % (time.strftime("%Y%m%dT%H%M%S"), secrets.token_hex(4))
            head = ("X-Lab-Mail-From: %s\r\nX-Lab-Rcpt-To: %s\r\nX-Lab-TLS: %s\r\nX-Lab-Login: %s\r\n"
                    % (envelope.mail_from, ", ".join(envelope.rcpt_tos), _tls_version(session),
                       session.auth_data if session.authenticated else "none")).encode()
            partial = mailbox / (name + ".partial")
            partial.write_bytes(head + envelope.original_content)
            partial.rename(mailbox / name)
            return "250 Message accepted for delivery"

    controller = Controller(Keeper(), hostname="127.0.0.1", port=port,
                            **_tls_settings(tls_cert, tls_key, auth_file, auth_log))
    controller.start()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_args: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_args: stopping.append(True))
    while not stopping:
        time.sleep(0.2)
    controller.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description="The lab's SMTP server")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("serve")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--mailbox", required=True)
    server.add_argument("--tls-cert", help="offer STARTTLS (and require it before MAIL) with this certificate")
    server.add_argument("--tls-key")
    server.add_argument("--auth-file", help="JSON {username, password}: the one login accepted (after STARTTLS "
                        "when there is a certificate)")
    server.add_argument("--auth-log", help="where each login attempt is written (JSON lines, no password)")
    args = parser.parse_args(argv)
    serve(args.port, args.mailbox, args.tls_cert, args.tls_key, args.auth_file, args.auth_log)
    return 0


def _text(message):
    """A message's headers and decoded text parts, as one string (what ``mentioning`` searches)."""
    parts = ["%s: %s" % (name, value) for name, value in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
