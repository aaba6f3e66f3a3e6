"""PVE's user configuration (user.cfg): roles, users, their API tokens and the ACL tree.

Modelled on pve-access-control (stable-bookworm, PVE 8): ``PVE/AccessControl.pm``
(``roles``, ``normalize_path``, ``check_path``, the built-in roles), ``PVE/RPCEnvironment.pm``
(``permissions``: a privilege-separated token gets the intersection of its own ACL and its
user's; a token with ``privsep 0`` gets its user's) and ``PVE/API2/{Role,User,ACL}.pm``.

Tokens registered through ``/_lab/tokens`` (acl.py) stay outside this store: their
privileges are given directly. Tokens made through ``POST /access/users/{userid}/token/{id}``
live here; only a SHA-256 of their secret is kept. Groups, pools in ACLs and realms other
than ``pam`` and ``pve`` are not modelled.
"""

import hashlib
import hmac
import re
import threading
import time
import uuid

from .acl import ALL_PRIVILEGES, Token
from .errors import AuthError

REALM_RE = r"[A-Za-z][A-Za-z0-9.\-_]+"
USERID_RE = re.compile(r"([^\s:/]+)@(" + REALM_RE + r")")
TOKEN_SUBID_RE = re.compile(REALM_RE)
ROLEID_RE = re.compile(r"[A-Za-z0-9.\-_]+")

# The built-in ("special") roles of PVE/AccessControl.pm create_roles, the ones a bootstrap meets.
SPECIAL_ROLES = {
    "Administrator": ALL_PRIVILEGES,
    "NoAccess": frozenset(),
    "PVEAuditor": frozenset(["VM.Audit", "Sys.Audit", "Datastore.Audit", "SDN.Audit",
                             "Pool.Audit", "Mapping.Audit"]),
    "PVETemplateUser": frozenset(["VM.Clone", "VM.Audit"]),
    "PVESDNUser": frozenset(["SDN.Use", "SDN.Audit"]),
    "PVEVMUser": frozenset(["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
                            "VM.PowerMgmt", "VM.Audit"]),
    "PVEDatastoreUser": frozenset(["Datastore.AllocateSpace", "Datastore.Audit"]),
}

_CHECK_PATH_RE = re.compile(r"""(
    /|/access|/access/groups|/access/groups/[A-Za-z0-9._\-]+|/access/realm|/access/realm/[A-Za-z0-9._\-]+
    |/nodes|/nodes/[A-Za-z0-9._\-]+|/pool|/pool/[A-Za-z0-9._\-]+(?:/[A-Za-z0-9._\-]+){0,2}
    |/sdn|/sdn/controllers|/sdn/controllers/[A-Za-z0-9_\-]+|/sdn/dns|/sdn/dns/[A-Za-z0-9]+
    |/sdn/ipams|/sdn/ipams/[A-Za-z0-9]+|/sdn/zones|/sdn/zones/[A-Za-z0-9._\-]+
    |/sdn/zones/[A-Za-z0-9._\-]+/[A-Za-z0-9._\-]+|/sdn/zones/[A-Za-z0-9._\-]+/[A-Za-z0-9._\-]+/[1-9][0-9]{0,3}
    |/storage|/storage/[A-Za-z0-9._\-]+|/vms|/vms/[1-9][0-9]{2,}
    |/mapping|/mapping/[A-Za-z0-9._\-]+|/mapping/[A-Za-z0-9._\-]+/[A-Za-z0-9._\-]+
)""", re.VERBOSE)


class AccessError(Exception):
    """A plain ``die`` of the access code (the caller turns it into a 500 or a parameter error)."""


def normalize_path(path):
    """PVE/AccessControl.pm ``normalize_path``: None for an unusable path."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path)
    path = re.sub(r"/$", "", path) or "/"
    if not path.startswith("/"):
        path = "/" + path
    if not re.fullmatch(r"[A-Za-z0-9.\-_/]+", path):
        return None
    return path


def check_path(path: str) -> bool:
    return bool(_CHECK_PATH_RE.fullmatch(path))


def verify_username(userid: str) -> tuple:
    """(user, realm) or AccessError with PVE's message (PVE/Auth/Plugin.pm verify_username)."""
    userid = userid or ""
    if len(userid) < 3:
        raise AccessError(f"user name '{userid}' is too short")
    if len(userid) > 64:
        raise AccessError(f"user name '{userid}' is too long ({len(userid)} > 64)")
    match = USERID_RE.fullmatch(userid)
    if not match:
        raise AccessError(f"value '{userid}' does not look like a valid user name")
    return match.group(1), match.group(2)


def _prefixes(path: str):
    yield "/", path == "/"
    parts = [part for part in path.split("/") if part]
    current = ""
    for index, part in enumerate(parts):
        current += "/" + part
        yield current, index == len(parts) - 1


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccessControl:
    """user.cfg and priv/token.cfg of one simulated cluster; safe to use from many threads."""

    def __init__(self):
        self.lock = threading.RLock()
        self.roles = {name: set(privs) for name, privs in SPECIAL_ROLES.items()}
        self.users = {"root@pam": {"enable": 1, "comment": "root", "tokens": {}}}
        self.secrets = {}   # full token id -> sha256 of the secret
        self.acl = {}       # path -> {"users": {id: {role: propagate}}, "tokens": {...}}

    # ------------------------------------------------------------ lookups

    def user(self, userid: str) -> dict:
        """check_user_exist: the user's entry or AccessError ``no such user``."""
        verify_username(userid)
        with self.lock:
            data = self.users.get(userid)
        if data is None:
            raise AccessError(f"no such user ('{userid}')")
        return data

    def token_info(self, userid: str, name: str) -> dict:
        data = self.user(userid)
        token = data.get("tokens", {}).get(name)
        if token is None:
            raise AccessError(f"no such token '{name}' for user '{userid}'")
        return token

    def role_exists(self, roleid: str) -> bool:
        return roleid in self.roles

    # ------------------------------------------------------------ privileges

    def _roles(self, principal: str, path: str) -> dict:
        """PVE/AccessControl.pm ``roles`` for a user or a token id (no groups, no pools)."""
        roles = {}
        kind = "tokens" if "!" in principal else "users"
        for prefix, final in _prefixes(path):
            node = self.acl.get(prefix, {})
            for key in (("tokens",) if kind == "tokens" else ("users",)):
                found = {role: propagate for role, propagate in node.get(key, {}).get(principal, {}).items()
                         if final or propagate}
                if found:
                    roles = found
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _privileges(self, principal: str, path: str) -> frozenset:
        granted = set()
        for role in self._roles(principal, path):
            granted |= self.roles.get(role, set())
        return frozenset(granted)

    def privileges(self, token_id: str, path: str) -> frozenset:
        """RPCEnvironment ``permissions`` for an API token made through the API."""
        userid, name = token_id.split("!", 1)
        with self.lock:
            info = self.users.get(userid, {}).get("tokens", {}).get(name)
            if info is None:
                return frozenset()
            user_privs = ALL_PRIVILEGES if userid == "root@pam" else self._privileges(userid, path)
            if not info.get("privsep", 1):
                return user_privs
            return user_privs & self._privileges(token_id, path)

    def user_privileges(self, userid: str, path: str) -> frozenset:
        with self.lock:
            return ALL_PRIVILEGES if userid == "root@pam" else self._privileges(userid, path)

    # ------------------------------------------------------------ tokens

    def has_user(self, userid: str) -> bool:
        with self.lock:
            return userid in self.users

    def find_token(self, token_id: str):
        """The ApiToken for this id if the API made it, else None."""
        userid, name = token_id.split("!", 1)
        with self.lock:
            if name in self.users.get(userid, {}).get("tokens", {}):
                return ApiToken(token_id=token_id, secret="", access=self)
        return None

    def verify(self, token_id: str, secret: str) -> "ApiToken":
        """PVE/AccessControl.pm ``verify_token`` after the split: user enabled, token, expiry, value."""
        userid, name = token_id.split("!", 1)
        now = time.time()
        with self.lock:
            user = self.users.get(userid)
            if user is None:
                raise AuthError(f"no such user ('{userid}')")
            if not user.get("enable", 1):
                raise AuthError(f"user '{userid}' is disabled")
            if user.get("expire") and user["expire"] < now:
                raise AuthError(f"user '{userid}' access expired")
            info = user.get("tokens", {}).get(name)
            if info is None:
                raise AuthError(f"no such token '{name}' for user '{userid}'")
            if info.get("expire") and info["expire"] < now:
                raise AuthError(f"token '{name}' access expired")
            stored = self.secrets.get(token_id, "")
        if not hmac.compare_digest(stored.encode(), _hash(secret).encode()):
            raise AuthError("invalid token value!")
        return ApiToken(token_id=token_id, secret="", access=self)

    def generate_token(self, userid: str, name: str, info: dict) -> str:
        """Store the token and return its secret (a UUID, as PVE/TokenConfig.pm makes it)."""
        secret = str(uuid.uuid4())
        with self.lock:
            self.users[userid].setdefault("tokens", {})[name] = info
            self.secrets[f"{userid}!{name}"] = _hash(secret)
        return secret

    def remove_token(self, userid: str, name: str) -> None:
        with self.lock:
            self.users[userid].get("tokens", {}).pop(name, None)
            self.secrets.pop(f"{userid}!{name}", None)

    def describe(self) -> dict:
        """For /_lab/state: everything but secrets."""
        with self.lock:
            return {"roles": {name: sorted(privs) for name, privs in self.roles.items()
                              if name not in SPECIAL_ROLES},
                    "users": {userid: dict(data, tokens=dict(data.get("tokens", {})))
                              for userid, data in self.users.items()},
                    "acl": self.acl_entries()}

    def acl_entries(self) -> list:
        entries = []
        with self.lock:
            for path in sorted(self.acl):
                for kind, type_name in (("users", "user"), ("tokens", "token")):
                    for ugid, roles in sorted(self.acl[path].get(kind, {}).items()):
                        for role, propagate in sorted(roles.items()):
                            entries.append({"path": path, "type": type_name, "ugid": ugid,
                                            "roleid": role, "propagate": propagate})
        return entries


class ApiToken(Token):
    """A token made through the API: its privileges come from the ACL tree, as PVE computes them."""

    def __init__(self, token_id: str, secret: str, access: AccessControl):
        super().__init__(token_id=token_id, secret=secret, acl={}, access=access)

    @property
    def is_root(self) -> bool:
        info = self.access.users.get(self.user, {}).get("tokens", {}).get(self.name, {})
        return self.user == "root@pam" and not info.get("privsep", 1)

    def privileges_at(self, path: str) -> frozenset:
        return self.access.privileges(self.token_id, path)

    def describe(self) -> dict:
        return {"token_id": self.token_id, "source": "api"}
