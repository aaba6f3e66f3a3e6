"""``/access/roles``, ``/access/users`` (with API tokens) and ``/access/acl`` as PVE 8 answers them.

pve-access-control (stable-bookworm) ``PVE/API2/Role.pm``, ``PVE/API2/User.pm``,
``PVE/API2/ACL.pm``; the permission tests (``perm``, ``userid-param``, ``userid-group``,
``perm-modify``) as ``PVE/RPCEnvironment.pm`` ``exec_api2_perm_check`` runs them. A plain
``die`` inside ``lock_user_config`` is a 500 whose message starts with the method's
``<what> failed: ``. Groups do not exist in the simulator, so ``userid-group`` is decided by
the privileges on ``/access/groups`` alone.
"""

from .access import (AccessError, check_path, normalize_path, verify_username, ROLEID_RE,
                     SPECIAL_ROLES)
from .acl import ALL_PRIVILEGES
from .api import AllOf, Call, Perm, route
from .errors import ParamError, PermissionDenied, fail
from .schema import FormatError, P, required, split_list

SYS_MODIFY = Perm("/access", "Sys.Modify")


def _priv_list(value: str, _name: str) -> None:
    for priv in split_list(value):
        if priv not in ALL_PRIVILEGES:
            raise FormatError(f"invalid privilege '{priv}'")


def _roleid(value: str, _name: str) -> None:
    if not ROLEID_RE.fullmatch(value):
        raise FormatError(f"role name '{value}' contains invalid characters")


def _userid(value: str, _name: str) -> None:
    try:
        verify_username(value)
    except AccessError as exc:
        raise FormatError(str(exc)) from None


def _tokenid_list(value: str, _name: str) -> None:
    for item in split_list(value):
        userid, sep, name = item.partition("!")
        if not sep or not _valid_userid(userid) or not _subid_ok(name):
            raise FormatError(f"value '{item}' does not look like a valid token ID")


def _userid_list(value: str, name: str) -> None:
    for item in split_list(value):
        _userid(item, name)


def _roleid_list(value: str, name: str) -> None:
    for item in split_list(value):
        _roleid(item, name)


def _valid_userid(userid: str) -> bool:
    try:
        verify_username(userid)
    except AccessError:
        return False
    return True


def _subid_ok(name: str) -> bool:
    from .access import TOKEN_SUBID_RE  # pylint: disable=import-outside-toplevel
    return bool(TOKEN_SUBID_RE.fullmatch(name))


ROLEID = required(format=_roleid)
PRIVS = P(format=_priv_list)
USERID = required(format=_userid)
TOKEN_SUBID = required(pattern=r"[A-Za-z][A-Za-z0-9.\-_]+")
USER_PROPS = {
    "enable": P(type="boolean"), "expire": P(type="integer", minimum=0),
    "firstname": P(max_length=1024), "lastname": P(max_length=1024),
    "email": P(max_length=254), "comment": P(max_length=2048),
    "keys": P(pattern=r"[0-9a-zA-Z!=]{0,4096}"), "groups": P(),
}
TOKEN_PROPS = {"expire": P(type="integer", minimum=0), "privsep": P(type="boolean"), "comment": P()}


# ------------------------------------------------------------------ permission tests

class UseridGroup:
    """``['userid-group', privs, groups_param => ...]`` without groups."""

    def __init__(self, *privileges, groups_param=None):
        self.privileges = privileges
        self.groups_param = groups_param

    def _check(self, token, raw, noerr):
        access = token.access
        userid = raw.get("userid", "")
        if self.groups_param != "create":
            if not access.has_user(userid):
                if noerr:
                    return False
                raise fail(f"no such user ('{userid}')")
        if token.has_any("/access/groups", self.privileges):
            return True
        if noerr:
            return False
        if self.groups_param:
            raise PermissionDenied(f"/access/groups, {'|'.join(self.privileges)}")
        raise PermissionDenied()

    def allowed(self, token, raw) -> bool:
        return self._check(token, raw, True)

    def enforce(self, token, raw) -> None:
        self._check(token, raw, False)


class RealmAllocateUser:
    """``['userid-param', 'Realm.AllocateUser']``."""

    def allowed(self, token, raw) -> bool:
        try:
            self.enforce(token, raw)
        except PermissionDenied:
            return False
        return True

    def enforce(self, token, raw) -> None:
        try:
            _user, realm = verify_username(raw.get("userid", ""))
        except AccessError as exc:
            raise fail(str(exc)) from None
        token.require(f"/access/realm/{realm}", "Realm.AllocateUser")


class SelfOrUserModify:
    """``['or', ['userid-param', 'self'], ['userid-group', ['User.Modify']]]``: a token is never
    ``self`` (its authenticated id is ``user@realm!name``), so User.Modify decides."""

    def __init__(self):
        self.group = UseridGroup("User.Modify")

    def allowed(self, token, raw) -> bool:
        return self.group.allowed(token, raw)

    def enforce(self, token, raw) -> None:
        if not self.group.allowed(token, raw):
            raise PermissionDenied()


def _modify_privileges(path: str) -> list:
    """RPCEnvironment ``check_perm_modify``."""
    privileges = ["Permissions.Modify"]
    if path.startswith("/storage/"):
        privileges.append("Datastore.Allocate")
    elif path.startswith("/vms/"):
        privileges.append("VM.Allocate")
    elif path.startswith("/pool/"):
        privileges.append("Pool.Allocate")
    return privileges


class PermModify:
    """``['perm-modify', '{path}']``."""

    def allowed(self, token, raw) -> bool:
        path = normalize_path(raw.get("path"))
        return path is not None and token.has_any(path, _modify_privileges(path))

    def enforce(self, token, raw) -> None:
        path = normalize_path(raw.get("path"))
        if path is None:
            raise PermissionDenied()
        token.require_any(path, _modify_privileges(path))


def _locked(what: str, function):
    """lock_user_config: a die becomes ``<what> failed: <message>``."""
    try:
        return function()
    except AccessError as exc:
        raise fail(f"{what}: {exc}") from None


def _access(call: Call):
    return call.cluster.access


# ------------------------------------------------------------------ roles

@route("GET", "/access/roles")
def list_roles(call: Call):
    access = _access(call)
    with access.lock:
        return [{"roleid": name, "privs": ",".join(sorted(privs)), "special": int(name in SPECIAL_ROLES)}
                for name, privs in access.roles.items()]


@route("POST", "/access/roles", {"roleid": ROLEID, "privs": PRIVS}, check=SYS_MODIFY)
def create_role(call: Call):
    roleid = call.params["roleid"]
    if roleid.upper().startswith("PVE"):
        raise ParamError({"roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"})
    access = _access(call)

    def create():
        with access.lock:
            if roleid in access.roles:
                raise AccessError(f"role '{roleid}' already exists")
            access.roles[roleid] = set(split_list(call.params.get("privs", "")))
    _locked("create role failed", create)


@route("GET", "/access/roles/{roleid}", {"roleid": ROLEID})
def read_role(call: Call):
    access = _access(call)
    roleid = call.params["roleid"]
    with access.lock:
        privs = access.roles.get(roleid)
        if privs is None:
            raise fail(f"role '{roleid}' does not exist")
        return {priv: 1 for priv in sorted(privs)}


@route("PUT", "/access/roles/{roleid}", {"roleid": ROLEID, "privs": PRIVS, "append": P(type="boolean")},
       check=SYS_MODIFY)
def update_role(call: Call):
    roleid = call.params["roleid"]
    if "append" in call.params and "privs" not in call.params:
        raise ParamError({"privs": "missing property - 'append' requires this property"})
    if roleid in SPECIAL_ROLES:
        raise fail(f"auto-generated role '{roleid}' cannot be modified")
    access = _access(call)

    def update():
        with access.lock:
            if roleid not in access.roles:
                raise AccessError(f"role '{roleid}' does not exist")
            privs = set() if not call.params.get("append") else set(access.roles[roleid])
            access.roles[roleid] = privs | set(split_list(call.params.get("privs", "")))
    _locked("update role failed", update)


# ------------------------------------------------------------------ users

def _user_data(data: dict, full: bool) -> dict:
    keys = ("enable", "expire", "firstname", "lastname", "email", "comment", "keys")
    entry = {key: data[key] for key in keys if data.get(key) is not None}
    if full:
        entry["groups"] = []
        entry["tokens"] = {name: dict(info) for name, info in data.get("tokens", {}).items()}
    return entry


@route("GET", "/access/users", {"enabled": P(type="boolean"), "full": P(type="boolean")})
def list_users(call: Call):
    access = _access(call)
    if not call.token.has_any("/access/groups", ("User.Modify", "Sys.Audit")):
        return []
    result = []
    with access.lock:
        for userid in sorted(access.users):
            entry = _user_data(access.users[userid], bool(call.params.get("full")))
            if "enabled" in call.params and bool(entry.get("enable")) != bool(call.params["enabled"]):
                continue
            if "tokens" in entry:
                entry["tokens"] = [{"tokenid": name, **info} for name, info in sorted(entry["tokens"].items())]
            entry["groups"] = ""
            entry["userid"] = userid
            entry["realm-type"] = userid.rsplit("@", 1)[1] if userid.rsplit("@", 1)[1] in ("pam", "pve") else None
            result.append({key: value for key, value in entry.items() if value is not None})
    return result


@route("POST", "/access/users", {"userid": USERID, "password": P(min_length=8, max_length=64), **USER_PROPS},
       check=AllOf(RealmAllocateUser(), UseridGroup("User.Modify", groups_param="create")))
def create_user(call: Call):
    access = _access(call)
    userid = call.params["userid"]
    if call.params.get("groups"):
        raise fail(f"create user failed: no such group '{split_list(call.params['groups'])[0]}'")

    def create():
        with access.lock:
            if userid in access.users:
                raise AccessError(f"user '{userid}' already exists")
            data = {"enable": call.params.get("enable", 1), "tokens": {}}
            if call.params.get("expire"):
                data["expire"] = call.params["expire"]
            for key in ("firstname", "lastname", "email", "comment", "keys"):
                if call.params.get(key):
                    data[key] = call.params[key]
            access.users[userid] = data
    _locked("create user failed", create)


@route("GET", "/access/users/{userid}", {"userid": USERID},
       check=UseridGroup("User.Modify", "Sys.Audit"))
def read_user(call: Call):
    access = _access(call)
    try:
        data = access.user(call.params["userid"])
    except AccessError as exc:
        raise fail(str(exc)) from None
    with access.lock:
        return _user_data(data, True)


@route("PUT", "/access/users/{userid}", {"userid": USERID, "append": P(type="boolean"), **USER_PROPS},
       check=UseridGroup("User.Modify", groups_param="update"))
def update_user(call: Call):
    access = _access(call)
    userid = call.params["userid"]
    if call.params.get("groups"):
        raise fail(f"update user failed: no such group '{split_list(call.params['groups'])[0]}'")

    def update():
        data = access.user(userid)
        with access.lock:
            for key in ("enable", "expire", "firstname", "lastname", "email", "comment", "keys"):
                if key in call.params:
                    data[key] = call.params[key]
    _locked("update user failed", update)


# ------------------------------------------------------------------ API tokens

TOKEN = "/access/users/{userid}/token/{tokenid}"


@route("GET", "/access/users/{userid}/token", {"userid": USERID}, check=SelfOrUserModify())
def list_tokens(call: Call):
    access = _access(call)
    try:
        data = access.user(call.params["userid"])
    except AccessError as exc:
        raise fail(str(exc)) from None
    with access.lock:
        return [{"tokenid": name, **info} for name, info in sorted(data.get("tokens", {}).items())]


@route("GET", TOKEN, {"userid": USERID, "tokenid": TOKEN_SUBID}, check=SelfOrUserModify())
def read_token(call: Call):
    try:
        return dict(_access(call).token_info(call.params["userid"], call.params["tokenid"]))
    except AccessError as exc:
        raise fail(str(exc)) from None


@route("POST", TOKEN, {"userid": USERID, "tokenid": TOKEN_SUBID, **TOKEN_PROPS}, check=SelfOrUserModify())
def generate_token(call: Call):
    access = _access(call)
    userid, name = call.params["userid"], call.params["tokenid"]
    try:
        existing = access.user(userid).get("tokens", {}).get(name)
    except AccessError as exc:
        raise fail(str(exc)) from None
    if existing is not None:
        raise ParamError({"tokenid": "Token already exists."})
    info = {"privsep": call.params.get("privsep", 1)}
    if "expire" in call.params:
        info["expire"] = call.params["expire"]
    if call.params.get("comment"):
        info["comment"] = call.params["comment"]
    secret = access.generate_token(userid, name, info)
    return {"info": dict(info), "value": secret, "full-tokenid": f"{userid}!{name}"}


@route("PUT", TOKEN, {"userid": USERID, "tokenid": TOKEN_SUBID, **TOKEN_PROPS}, check=SelfOrUserModify())
def update_token(call: Call):
    access = _access(call)
    try:
        info = access.token_info(call.params["userid"], call.params["tokenid"])
    except AccessError as exc:
        raise fail(str(exc)) from None
    with access.lock:
        for key in ("privsep", "expire"):
            if key in call.params:
                info[key] = call.params[key]
        if call.params.get("comment"):
            info["comment"] = call.params["comment"]
        return dict(info)


@route("DELETE", TOKEN, {"userid": USERID, "tokenid": TOKEN_SUBID}, check=SelfOrUserModify())
def remove_token(call: Call):
    access = _access(call)
    try:
        access.token_info(call.params["userid"], call.params["tokenid"])
    except AccessError as exc:
        raise fail(str(exc)) from None
    access.remove_token(call.params["userid"], call.params["tokenid"])


# ------------------------------------------------------------------ ACL

@route("GET", "/access/acl")
def read_acl(call: Call):
    audit = call.token.has("/access", "Sys.Audit")
    return [entry for entry in _access(call).acl_entries()
            if audit or call.token.has_any(entry["path"], _modify_privileges(entry["path"]))]


@route("PUT", "/access/acl", {
    "path": required(), "roles": required(format=_roleid_list), "users": P(format=_userid_list),
    "groups": P(), "tokens": P(format=_tokenid_list), "propagate": P(type="boolean"),
    "delete": P(type="boolean")}, check=PermModify())
def update_acl(call: Call):
    params = call.params
    if not (params.get("users") or params.get("groups") or params.get("tokens")):
        raise ParamError({key: "either 'users', 'groups' or 'tokens' is required." for key in ("users", "groups", "tokens")})
    path = normalize_path(params["path"])
    if path is None or (not params.get("delete") and not check_path(path)):
        raise ParamError({"path": f"invalid ACL path '{params['path']}'"})
    access = _access(call)
    propagate = 1 if "propagate" not in params else int(bool(params["propagate"]))
    delete = bool(params.get("delete"))
    granted = call.token.privileges_at(path)

    def update():
        with access.lock:
            for role in split_list(params["roles"]):
                if role not in access.roles:
                    raise AccessError(f"role '{role}' does not exist")
                if "Permissions.Modify" not in granted:
                    verb = "remove" if delete else "add"
                    if not access.roles[role] <= granted:
                        raise ParamError({"role": f"Cannot {verb} role '{role}' - requires 'Permissions.Modify' or "
                                                  "superset of privileges."})
                    if role == "NoAccess":
                        raise ParamError({"role": f"Cannot {verb} role '{role}' - requires 'Permissions.Modify'"})
                if params.get("groups"):
                    raise AccessError(f"group '{split_list(params['groups'])[0]}' does not exist")
                node = access.acl.setdefault(path, {})
                for userid in split_list(params.get("users", "")):
                    if userid not in access.users:
                        raise AccessError(f"user '{userid}' does not exist")
                    _set(node.setdefault("users", {}), userid, role, propagate, delete)
                for token_id in split_list(params.get("tokens", "")):
                    userid, name = token_id.split("!", 1)
                    access.token_info(userid, name)
                    _set(node.setdefault("tokens", {}), token_id, role, propagate, delete)
    _locked("ACL update failed", update)


def _set(entries: dict, ugid: str, role: str, propagate: int, delete: bool) -> None:
    if delete:
        entries.get(ugid, {}).pop(role, None)
        if ugid in entries and not entries[ugid]:
            del entries[ugid]
    else:
        entries.setdefault(ugid, {})[role] = propagate
