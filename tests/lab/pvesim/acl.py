"""API tokens and privilege checks.

Each token carries its own ACL (path -> privileges), which is what a ``--privsep 0``
token inherits from its user in PVE. As in PVE, the most specific ACL path on the way
from ``/`` down to the checked path decides; ``root@pam`` may do everything.
"""

import hmac
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import AuthError, PermissionDenied

ALL_PRIVILEGES = frozenset([
    "Sys.AccessNetwork",
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
_API_TOKEN_RE = re.compile(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)")


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
    # The cluster's access.AccessControl (users, roles, ACL), for checks that look users up.
    access: object = field(default=None, repr=False, compare=False)

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

    def __init__(self, specs=(), access=None):
        self._lock = threading.Lock()
        self._tokens: dict[str, Token] = {}
        self.access = access  # access.AccessControl: the tokens made through /access
        for spec in specs:
            self.add(token_from_spec(spec))

    def add(self, token: Token) -> None:
        token.access = self.access
        with self._lock:
            self._tokens[token.token_id] = token

    def remove(self, token_id: str) -> bool:
        with self._lock:
            return self._tokens.pop(token_id, None) is not None

    def describe(self) -> list:
        with self._lock:
            return [token.describe() for token in self._tokens.values()]

    def authenticate(self, header: str | None, detailed: bool = True) -> Token:
        """Check an ``Authorization`` header as PVE 8 does; raise AuthError with its reason.

        pve-manager PVE/HTTPServer.pm (stable-8), ``auth_handler``: without an API token
        (and without a ticket, which the simulator does not issue) the reason is ``No ticket``.
        Otherwise PVE::AccessControl::verify_token's message is the reason (``detailed``,
        pve-manager up to 8.4.16); from 8.4.17 on (commit d3973e63, "unify error message in
        case of auth failure") every token failure is ``Authentication failed!``.
        """
        api_token = extract_api_token(header)
        if not api_token:
            raise AuthError("No ticket")
        try:
            return self._verify_token(api_token)
        except AuthError:
            if detailed:
                raise
            raise AuthError("Authentication failed!") from None

    def _verify_token(self, api_token: str) -> Token:
        """pve-access-control PVE/AccessControl.pm (stable-bookworm), ``verify_token``."""
        token_id, sep, secret = api_token.rpartition("=")
        if not sep:
            raise AuthError("no tokenid specified")
        if not _TOKEN_ID_RE.fullmatch(token_id):
            raise AuthError(f"'{token_id}' is not a valid token ID - not able to split into user and token parts")
        user, name = token_id.split("!", 1)
        with self._lock:
            token = self._tokens.get(token_id)
            user_exists = user == "root@pam" or any(known.user == user for known in self._tokens.values())
        if token is None and self.access is not None and self.access.has_user(user):
            return self.access.verify(token_id, secret)
        if not user_exists:
            raise AuthError(f"no such user ('{user}')")
        if token is None:
            raise AuthError(f"no such token '{name}' for user '{user}'")
        if not hmac.compare_digest(token.secret.encode(), secret.encode()):
            raise AuthError("invalid token value!")
        return token


def extract_api_token(header: str | None) -> str | None:
    """The ``PVEAPIToken`` value of an ``Authorization`` header, URI-unescaped, or None.

    pve-http-server PVE/APIServer/Formatter.pm, ``extract_auth_value``: the name at the start
    or after white space, then ``=`` or a space, then everything up to ``;``.
    """
    match = _API_TOKEN_RE.search(header or "")
    return unquote(match.group(1)) if match else None


def claimed_token_id(header: str | None) -> str | None:
    """The token id a header names (for the request log), known or not; never the secret."""
    token_id, sep, _secret = (extract_api_token(header) or "").rpartition("=")
    return token_id if sep and _TOKEN_ID_RE.fullmatch(token_id) else None
