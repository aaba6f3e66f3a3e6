"""The secrets file (``CLOUDPODS_SECRETS_FILE``): settings that change while the workers run.

``playbooks/rotate_token.yml`` writes the new Proxmox API token here (atomically, mode 0600); each
worker reads the file again before a task when it changed (its mtime, size or inode), and hands the
values to that task's playbook, so a rotation needs no restart. The format is systemd's
``EnvironmentFile=`` subset: ``NAME=VALUE`` lines, ``#`` comments, blank lines, a value optionally in
single or double quotes. Only the names the playbooks' environment takes (settings.PLAYBOOK_ENV_*)
are allowed. A file that cannot be read or is malformed keeps the last good values, with one log
line naming the file and the reason (never a value).
"""

import logging
import os
import re

from .settings import PLAYBOOK_ENV_EXCLUDED, PLAYBOOK_ENV_NAMES, PLAYBOOK_ENV_PREFIXES, TOKEN_ID_PATTERN

LOG = logging.getLogger(__name__)
SETTING = "CLOUDPODS_SECRETS_FILE"
LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
TOGETHER = ("PROXMOX_API_TOKEN_ID", "PROXMOX_API_TOKEN_SECRET")


class SecretsFileError(Exception):
    """The file is unreadable or malformed; the message names the file and the line, never a value."""


def allowed(name):
    return (name.startswith(PLAYBOOK_ENV_PREFIXES) or name in PLAYBOOK_ENV_NAMES) and name not in PLAYBOOK_ENV_EXCLUDED


def parse(text, path):
    """The file's values; SecretsFileError for the first problem."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if not match:
            raise SecretsFileError(f"{SETTING} {path}: line {number} is not NAME=VALUE")
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not allowed(name):
            raise SecretsFileError(f"{SETTING} {path}: line {number}: {name} is not a setting the playbooks take")
        if not value:
            raise SecretsFileError(f"{SETTING} {path}: line {number}: {name} is empty")
        values[name] = value
    if "PROXMOX_API_TOKEN_ID" in values and not TOKEN_ID_PATTERN.match(values["PROXMOX_API_TOKEN_ID"]):
        raise SecretsFileError(f"{SETTING} {path}: PROXMOX_API_TOKEN_ID must have the form user@realm!tokenid")
    if any(name in values for name in TOGETHER) and not all(name in values for name in TOGETHER):
        raise SecretsFileError(f"{SETTING} {path}: PROXMOX_API_TOKEN_ID and PROXMOX_API_TOKEN_SECRET go together")
    return values


def read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read(), path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsFileError(f"{SETTING} {path} cannot be read ({type(exc).__name__}: "
                               f"{getattr(exc, 'strerror', None) or 'not UTF-8'})") from None


class SecretsFile:
    """The file as a worker follows it: ``changed()`` returns the new values when the file changed and
    reads well, else None (unchanged, or bad: then the last good values stay and one line is logged)."""

    def __init__(self, path):
        self.path = path
        self.values = {}
        self.seen = None  # the first task reads the file (the settings read it at start; it may have changed since)

    def _stamp(self):
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def changed(self):
        stamp = self._stamp()
        if stamp == self.seen and stamp is not None:
            return None
        if stamp is None and self.seen is None:
            return None
        self.seen = stamp
        try:
            values = read(self.path)
        except SecretsFileError as exc:
            LOG.warning("%s; keeping the values read before", exc)
            return None
        if values == self.values:
            return None
        self.values = values
        return dict(values)
