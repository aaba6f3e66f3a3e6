"""API tokens and privilege checks.

Each token carries its own ACL (path -> privileges), which is what a ``--privsep 0``
token inherits from its user in PVE. As in PVE, the most specific ACL path on the way
from ``/`` down to the checked path decides; ``root@pam`` may do everything.
"""

import hmac
import re
import threading
from dataclasses import dataclass, field

from .errors import AuthError, PermissionDenied

ALL_PRIVILEGES = frozenset([
    "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
    "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory",
    "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.Migrate", "VM.Monitor",
    "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
    "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
    "Datastore.Audit", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify",
    "Sys.PowerMgmt", "Sys.Syslog", "Pool.Allocate", "Pool.Audit", "Permissions.Modify",
    "User.Modify", "Group.Allocate", "Realm.Allocate", "Realm.AllocateUser",
    "SDN.Allocate", "SDN.Audit", "SDN.Use", "Mapping.Audit", "Mapping.Modify", "Mapping.Use",
])

_TOKEN_ID_RE = re.compile(r"[^\s!@:]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+")
_HEADER_PREFIX = "PVEAPIToken"


def expand_privileges(names) -> frozenset:
    """``*`` stands for every privilege (an Administrator role)."""
    names = list(names)
    if "*" in names:
        return ALL_PRIVILEGES
    unknown = set(names) - ALL_PRIVILEGES
    if unknown:
        raise ValueError(f"unknown privileges: {', '.join(sorted(unknown))}")
    return frozenset(names)


@dataclass
class Token:
    """An API token ``user@realm!name`` with its secret and ACL."""

    token_id: str
    secret: str
    acl: dict = field(default_factory=dict)  # path -> frozenset of privileges

    @property
    def user(self) -> str:
        return self.token_id.split("!", 1)[0]

    @property
    def name(self) -> str:
        return self.token_id.split("!", 1)[1]

    @property
    def is_root(self) -> bool:
        return self.user == "root@pam"

    def privileges_at(self, path: str) -> frozenset:
        if self.is_root:
            return ALL_PRIVILEGES
        granted = frozenset()
        for prefix in _path_prefixes(path):
            if prefix in self.acl:
                granted = self.acl[prefix]
        return granted

    def has(self, path: str, privilege: str) -> bool:
        return privilege in self.privileges_at(path)

    def has_any(self, path: str, privileges) -> bool:
        return bool(self.privileges_at(path) & set(privileges))

    def require(self, path: str, *privileges: str) -> None:
        """Raise 403 naming the first missing privilege, as PVE's check does."""
        granted = self.privileges_at(path)
        for privilege in privileges:
            if privilege not in granted:
                raise PermissionDenied(f"{path}, {privilege}")

    def require_any(self, path: str, privileges) -> None:
        if not self.has_any(path, privileges):
            raise PermissionDenied(f"{path}, {'|'.join(privileges)}")

    def describe(self) -> dict:
        return {"token_id": self.token_id,
                "acl": {path: sorted(privs) for path, privs in self.acl.items()}}


def _path_prefixes(path: str):
    """``/vms/101`` -> ``/``, ``/vms``, ``/vms/101``."""
    yield "/"
    current = ""
    for part in filter(None, path.split("/")):
        current += "/" + part
        yield current


def token_from_spec(spec: dict) -> Token:
    """Build a token from config/control JSON: {token_id, secret, privs, acl}."""
    token_id = spec["token_id"]
    if not _TOKEN_ID_RE.fullmatch(token_id):
        raise ValueError(f"invalid token id '{token_id}' (want user@realm!name)")
    acl = {path: expand_privileges(privs) for path, privs in spec.get("acl", {}).items()}
    if "privs" in spec:
        acl["/"] = expand_privileges(spec["privs"])
    return Token(token_id=token_id, secret=str(spec["secret"]), acl=acl)


class TokenRegistry:
    """The tokens the server accepts; safe to change while requests run."""

    def __init__(self, specs=()):
        self._lock = threading.Lock()
        self._tokens: dict[str, Token] = {}
        for spec in specs:
            self.add(token_from_spec(spec))

    def add(self, token: Token) -> None:
        with self._lock:
            self._tokens[token.token_id] = token

    def remove(self, token_id: str) -> bool:
        with self._lock:
            return self._tokens.pop(token_id, None) is not None

    def describe(self) -> list:
        with self._lock:
            return [token.describe() for token in self._tokens.values()]

    def authenticate(self, header: str | None) -> Token:
        """Check an ``Authorization`` header; raise AuthError with PVE's reason."""
        token_id, secret = _parse_header(header)
        with self._lock:
            token = self._tokens.get(token_id)
        if token is None or not hmac.compare_digest(token.secret.encode(), secret.encode()):
            raise AuthError("authentication failure")
        return token


def _parse_header(header: str | None) -> tuple[str, str]:
    """PVE falls back to cookie tickets when the header is not a token: ``No ticket``."""
    if not header:
        raise AuthError("No ticket")
    prefix, sep, rest = header.strip().partition("=")
    if prefix != _HEADER_PREFIX or not sep:
        prefix, sep, rest = header.strip().partition(" ")
        if prefix != _HEADER_PREFIX or not sep:
            raise AuthError("No ticket")
    token_id, sep, secret = rest.partition("=")
    if not sep or "!" not in token_id:
        raise AuthError("No ticket")
    if not _TOKEN_ID_RE.fullmatch(token_id) or not secret:
        raise AuthError("authentication failure")
    return token_id, secret
