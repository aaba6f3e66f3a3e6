"""The PVE endpoints: path, parameter schema, permission rule and handler for each.

Permission rules mirror the ``permissions => { check => ... }`` blocks of PVE's API
methods; checks that depend on the state (storage of a volume, config keys) happen
inside the state machine, where PVE makes them too.
"""

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from . import backups, containers, firewall, schema
from .acl import Token
from .errors import ParamError, PermissionDenied, fail
from .schema import P, required
from .state import Cluster

NODE = required(pattern=r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?")
VMID = required(type="integer", minimum=100, maximum=999999999)
OPTIONAL_VMID = P(type="integer", minimum=100, maximum=999999999)
STORAGE_ID = P(pattern=r"[a-z][a-z0-9\-_.]*[a-z0-9]")
DIGEST = P(max_length=40)
UPID_RE = re.compile(r"UPID:([a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-F]{8}):"
                     r"([0-9A-F]{8,9}):([0-9A-F]{8}):([^:\s]+):([^:\s]*):([^:\s]+):")


# ------------------------------------------------------------------ permission rules

class Perm:
    """``['perm', path, [privs], any => 1, require_param => ...]``."""

    def __init__(self, path: str, *privileges: str, any_of: bool = False,
                 require_param: str | None = None):
        self.path = path
        self.privileges = privileges
        self.any_of = any_of
        self.require_param = require_param

    def _path(self, raw: dict) -> str:
        return self.path.format_map(defaultdict(str, raw))

    def allowed(self, token: Token, raw: dict) -> bool:
        if self.require_param and self.require_param not in raw:
            return False
        granted = token.privileges_at(self._path(raw))
        if self.any_of:
            return bool(granted & set(self.privileges))
        return set(self.privileges) <= granted

    def enforce(self, token: Token, raw: dict) -> None:
        if self.require_param and self.require_param not in raw:
            raise PermissionDenied()
        path = self._path(raw)
        if self.any_of:
            token.require_any(path, self.privileges)
        else:
            token.require(path, *self.privileges)


class AnyOf:
    """``['or', ...]``: PVE names no path or privilege when every branch fails."""

    def __init__(self, *rules):
        self.rules = rules

    def allowed(self, token, raw) -> bool:
        return any(rule.allowed(token, raw) for rule in self.rules)

    def enforce(self, token, raw) -> None:
        if not self.allowed(token, raw):
            raise PermissionDenied()


class AllOf:
    def __init__(self, *rules):
        self.rules = rules

    def allowed(self, token, raw) -> bool:
        return all(rule.allowed(token, raw) for rule in self.rules)

    def enforce(self, token, raw) -> None:
        for rule in self.rules:
            rule.enforce(token, raw)


# ------------------------------------------------------------------ routing

@dataclass
class Call:
    token: Token
    params: dict
    cluster: Cluster


@dataclass
class Reply:
    """Data plus extra top-level keys (``total``) of the response envelope."""

    data: object
    extra: dict = field(default_factory=dict)


@dataclass
class Route:
    method: str
    template: str
    handler: Callable[[Call], object]
    params: dict
    check: object | None

    def __post_init__(self):
        self.segments = self.template.strip("/").split("/")
        self.path_params = [s[1:-1] for s in self.segments if s.startswith("{")]
        spec = {name: required() for name in self.path_params}
        spec.update({"node": NODE} if "node" in self.path_params else {})
        spec.update({"vmid": VMID} if "vmid" in self.path_params else {})
        spec.update(self.params)
        self.spec = spec

    def match(self, segments: list[str]) -> dict | None:
        if len(segments) != len(self.segments):
            return None
        found = {}
        for pattern, value in zip(self.segments, segments):
            if pattern.startswith("{"):
                found[pattern[1:-1]] = value
            elif pattern != value:
                return None
        return found


ROUTES: list[Route] = []


def route(method: str, template: str, params: dict | None = None, check=None):
    def register(handler):
        ROUTES.append(Route(method, template, handler, params or {}, check))
        return handler
    return register


def find_route(method: str, segments: list[str]):
    """(route, path params) for a request; (None, None) when no path matches;
    (False, None) when the path exists but not for this method."""
    path_known = False
    for candidate in ROUTES:
        found = candidate.match(segments)
        if found is None:
            continue
        if candidate.method == method:
            return candidate, found
        path_known = True
    return (False if path_known else None), None


CT = "/nodes/{node}/lxc/{vmid}"
AUDIT = Perm("/vms/{vmid}", "VM.Audit")
POWER = Perm("/vms/{vmid}", "VM.PowerMgmt")
NETWORK = Perm("/vms/{vmid}", "VM.Config.Network")


# ------------------------------------------------------------------ version, nodes

@route("GET", "/version")
def get_version(call: Call):
    version = call.cluster.config.pve_version
    return {"version": version, "release": ".".join(version.split(".")[:2]),
            "repoid": "faa83925c9641325"}


@route("GET", "/nodes")
def list_nodes(call: Call):
    """Every member as ``extract_node_stats`` shows it, with its certificate's fingerprint (all
    nodes of the lab serve the first node's certificate: they are one process)."""
    certificates = getattr(call.cluster, "certificates", None)
    fingerprint = certificates.served_fingerprint() if certificates else \
        getattr(call.cluster, "ssl_fingerprint", "")
    with call.cluster.lock:
        views = [call.cluster.node_view(name) for name in call.cluster.nodes]
    return [dict(view, ssl_fingerprint=fingerprint) for view in views]


@route("GET", "/nodes/{node}")
def node_index(call: Call):
    return [{"name": name} for name in ("lxc", "status", "storage", "tasks", "vzdump")]


@route("GET", "/nodes/{node}/status", check=Perm("/nodes/{node}", "Sys.Audit"))
def node_status(call: Call):
    return call.cluster.node_status()


# ------------------------------------------------------------------ containers

@route("GET", "/nodes/{node}/lxc")
def list_containers(call: Call):
    return call.cluster.container_list(call.token)


@route("GET", CT)
def container_index(call: Call):
    call.cluster.config_view(call.params["vmid"])
    return [{"subdir": name} for name in ("config", "status", "clone", "firewall", "resize",
                                          "interfaces", "template")]


@route("GET", CT + "/config", {"current": P(type="boolean"), "snapshot": P()}, check=AUDIT)
def get_config(call: Call):
    if call.params.get("snapshot"):
        raise fail(f"snapshot '{call.params['snapshot']}' does not exist")
    return call.cluster.config_view(call.params["vmid"])


CREATE_SPEC = dict(
    containers.CONFIG_SPEC, vmid=VMID, ostemplate=required(max_length=255),
    password=P(min_length=5), storage=STORAGE_ID, force=P(type="boolean"),
    restore=P(type="boolean"), unique=P(type="boolean"), pool=P(pattern=r"[A-Za-z0-9\-_/]+"),
    bwlimit=P(type="number", minimum=0), start=P(type="boolean"),
    **{"ignore-unpack-errors": P(type="boolean"), "ssh-public-keys": P()},
)


@route("POST", "/nodes/{node}/lxc", CREATE_SPEC)
def create_container(call: Call):
    """Permissions are checked inside (PVE: ``user => 'all'``), against the pool too."""
    if call.params.get("unique") and not call.params.get("restore"):
        raise ParamError({"restore": "missing property - 'unique' requires this property"})
    return call.cluster.create(call.token, call.params["vmid"], call.params)


CONFIG_PUT_SPEC = dict(containers.CONFIG_SPEC, delete=P(format=schema.configid_list),
                       revert=P(format=schema.configid_list), digest=DIGEST)


@route("PUT", CT + "/config", CONFIG_PUT_SPEC,
       check=Perm("/vms/{vmid}", *containers.CONFIG_PRIVILEGES, any_of=True))
def put_config(call: Call):
    params = {k: v for k, v in call.params.items() if k not in ("node", "vmid")}
    call.cluster.update_config(call.token, call.params["vmid"], params)


CLONE_SPEC = {
    "newid": VMID, "hostname": P(format=schema.dns_name, max_length=255), "description": P(),
    "pool": P(pattern=r"[A-Za-z0-9\-_/]+"), "snapname": P(pattern=r"[a-zA-Z][a-zA-Z0-9_\-]+"),
    "storage": STORAGE_ID, "full": P(type="boolean"), "target": P(pattern=NODE.pattern),
    "bwlimit": P(type="number", minimum=0),
}


@route("POST", CT + "/clone", CLONE_SPEC,
       check=AllOf(Perm("/vms/{vmid}", "VM.Clone"),
                   AnyOf(Perm("/vms/{newid}", "VM.Allocate"),
                         Perm("/pool/{pool}", "VM.Allocate", require_param="pool"))))
def clone(call: Call):
    return call.cluster.clone(call.token, call.params["vmid"], call.params)


RESIZE_SPEC = {
    "disk": required(enum=("rootfs",) + tuple(f"mp{i}" for i in range(256))),
    "size": required(pattern=r"\+?\d+(\.\d+)?[KMGT]?"),
    "digest": DIGEST,
}


@route("PUT", CT + "/resize", RESIZE_SPEC, check=Perm("/vms/{vmid}", "VM.Config.Disk", any_of=True))
def resize(call: Call):
    params = call.params
    return call.cluster.resize(call.token, params["vmid"], params["disk"], params["size"],
                               params.get("digest"))


@route("DELETE", CT, {"purge": P(type="boolean"), "force": P(type="boolean"),
                      "destroy-unreferenced-disks": P(type="boolean")},
       check=Perm("/vms/{vmid}", "VM.Allocate"))
def destroy(call: Call):
    return call.cluster.destroy(call.token, call.params["vmid"], call.params)


@route("POST", CT + "/template", check=Perm("/vms/{vmid}", "VM.Allocate"))
def make_template(call: Call):
    call.cluster.make_template(call.token, call.params["vmid"])


@route("GET", CT + "/interfaces", check=AUDIT)
def interfaces(call: Call):
    return call.cluster.interfaces(call.params["vmid"])


@route("GET", CT + "/status")
def status_index(call: Call):
    call.cluster.config_view(call.params["vmid"])
    return [{"subdir": name} for name in ("current", "start", "stop", "shutdown", "reboot",
                                          "suspend", "resume")]


@route("GET", CT + "/status/current", check=AUDIT)
def status_current(call: Call):
    return call.cluster.status_view(call.params["vmid"])


POWER_SPECS = {
    "start": {"skiplock": P(type="boolean"), "debug": P(type="boolean")},
    "stop": {"skiplock": P(type="boolean"), "overrule-shutdown": P(type="boolean")},
    "shutdown": {"timeout": P(type="integer", minimum=0), "forceStop": P(type="boolean")},
    "reboot": {"timeout": P(type="integer", minimum=0)},
    "suspend": {},
    "resume": {},
}


def _power_handler(action: str):
    def handler(call: Call):
        return call.cluster.power(call.token, call.params["vmid"], action, call.params)
    return handler


for _action, _spec in POWER_SPECS.items():
    route("POST", f"{CT}/status/{_action}", _spec, check=POWER)(_power_handler(_action))


# ------------------------------------------------------------------ firewall

FW = CT + "/firewall"
RULE_SPEC = dict(firewall.RULE_FIELDS, digest=DIGEST, pos=P(type="integer", minimum=0))


def _with_firewall(call: Call, operation):
    return call.cluster.firewall_read(call.params["vmid"], operation)


@route("GET", FW)
def firewall_index(call: Call):
    return [{"name": name} for name in ("rules", "aliases", "ipset", "options", "log", "refs")]


@route("GET", FW + "/options", check=AUDIT)
def firewall_options(call: Call):
    return _with_firewall(call, lambda fw: fw.options_view())


@route("PUT", FW + "/options", dict(firewall.OPTIONS_SPEC, delete=P(format=schema.configid_list),
                                    digest=DIGEST), check=NETWORK)
def set_firewall_options(call: Call):
    options = {k: v for k, v in call.params.items()
               if k in firewall.OPTIONS_SPEC}
    delete = schema.split_list(call.params.get("delete", ""))
    call.cluster.firewall_write(call.params["vmid"], lambda fw: fw.set_options(
        options, delete, call.params.get("digest")))


@route("GET", FW + "/rules", check=AUDIT)
def firewall_rules(call: Call):
    return _with_firewall(call, lambda fw: fw.rules_view())


@route("POST", FW + "/rules", dict(RULE_SPEC, type=required(enum=("in", "out", "group")),
                                   action=required(pattern=firewall.RULE_FIELDS["action"].pattern)),
       check=NETWORK)
def add_firewall_rule(call: Call):
    rule = {k: v for k, v in call.params.items() if k in firewall.RULE_FIELDS}
    call.cluster.firewall_write(call.params["vmid"], lambda fw: fw.add_rule(rule))


@route("GET", FW + "/rules/{pos}", {"pos": required(type="integer", minimum=0)}, check=AUDIT)
def firewall_rule(call: Call):
    return _with_firewall(call, lambda fw: fw.rule_view(call.params["pos"]))


@route("PUT", FW + "/rules/{pos}", dict(RULE_SPEC, pos=required(type="integer", minimum=0),
                                        moveto=P(type="integer", minimum=0),
                                        delete=P(format=schema.configid_list)),
       check=NETWORK)
def update_firewall_rule(call: Call):
    params = call.params
    rule = {k: v for k, v in params.items() if k in firewall.RULE_FIELDS}
    delete = schema.split_list(params.get("delete", ""))
    call.cluster.firewall_write(params["vmid"], lambda fw: fw.update_rule(
        params["pos"], rule, delete, params.get("moveto"), params.get("digest")))


@route("DELETE", FW + "/rules/{pos}", {"pos": required(type="integer", minimum=0), "digest": DIGEST},
       check=NETWORK)
def delete_firewall_rule(call: Call):
    params = call.params
    call.cluster.firewall_write(params["vmid"],
                                lambda fw: fw.delete_rule(params["pos"], params.get("digest")))


@route("GET", FW + "/ipset", check=AUDIT)
def ipsets(call: Call):
    return _with_firewall(call, lambda fw: fw.ipsets_view())


@route("POST", FW + "/ipset", {"name": required(pattern=firewall.IPSET_NAME.pattern, max_length=64),
                               "comment": P(), "rename": firewall.IPSET_NAME, "digest": DIGEST},
       check=NETWORK)
def create_ipset(call: Call):
    params = call.params
    call.cluster.firewall_write(params["vmid"], lambda fw: fw.create_ipset(
        params["name"], params.get("comment"), params.get("rename"), params.get("digest")))


IPSET_PATH = {"name": required(pattern=firewall.IPSET_NAME.pattern, max_length=64)}


@route("GET", FW + "/ipset/{name}", IPSET_PATH, check=AUDIT)
def ipset_entries(call: Call):
    return _with_firewall(call, lambda fw: fw.ipset_entries(call.params["name"]))


@route("POST", FW + "/ipset/{name}", dict(IPSET_PATH, cidr=required(format=firewall.ipset_cidr),
                                          comment=P(), nomatch=P(type="boolean")), check=NETWORK)
def add_ipset_entry(call: Call):
    params = call.params
    call.cluster.firewall_write(params["vmid"], lambda fw: fw.add_ipset_entry(
        params["name"], params["cidr"], params.get("comment"), params.get("nomatch")))


@route("DELETE", FW + "/ipset/{name}", dict(IPSET_PATH, force=P(type="boolean")), check=NETWORK)
def delete_ipset(call: Call):
    """IPSet.pm ``register_delete_ipset``: no ``digest`` parameter."""
    params = call.params
    call.cluster.firewall_write(params["vmid"], lambda fw: fw.delete_ipset(
        params["name"], bool(params.get("force"))))


CIDR_PATH = dict(IPSET_PATH, cidr=required(format=firewall.ipset_cidr))


@route("GET", FW + "/ipset/{name}/{cidr}", CIDR_PATH, check=AUDIT)
def ipset_entry(call: Call):
    return _with_firewall(call, lambda fw: fw.ipset_entry(call.params["name"], call.params["cidr"]))


@route("PUT", FW + "/ipset/{name}/{cidr}", dict(CIDR_PATH, comment=P(), nomatch=P(type="boolean"),
                                                digest=DIGEST), check=NETWORK)
def update_ipset_entry(call: Call):
    params = call.params
    call.cluster.firewall_write(params["vmid"], lambda fw: fw.update_ipset_entry(
        params["name"], params["cidr"], params.get("comment"), params.get("nomatch"),
        params.get("digest")))


@route("DELETE", FW + "/ipset/{name}/{cidr}", dict(CIDR_PATH, digest=DIGEST), check=NETWORK)
def delete_ipset_entry(call: Call):
    params = call.params
    call.cluster.firewall_write(params["vmid"], lambda fw: fw.delete_ipset_entry(
        params["name"], params["cidr"], params.get("digest")))


# ------------------------------------------------------------------ datacenter firewall
# pve-firewall src/PVE/API2/Firewall/Cluster.pm: GET needs Sys.Audit on /, PUT Sys.Modify on /.

@route("GET", "/cluster/firewall/options", check=Perm("/", "Sys.Audit"))
def cluster_firewall_options(call: Call):
    return call.cluster.cluster_firewall_read()


@route("PUT", "/cluster/firewall/options", dict(firewall.CLUSTER_OPTIONS_SPEC, delete=P(format=schema.configid_list),
                                                digest=DIGEST), check=Perm("/", "Sys.Modify"))
def set_cluster_firewall_options(call: Call):
    options = {k: v for k, v in call.params.items() if k in firewall.CLUSTER_OPTIONS_SPEC}
    call.cluster.cluster_firewall_write(options, schema.split_list(call.params.get("delete", "")),
                                        call.params.get("digest"))


# ------------------------------------------------------------------ cluster

@route("GET", "/cluster")
def cluster_index(call: Call):
    return [{"name": name} for name in ("backup", "firewall", "nextid", "resources", "status", "tasks")]


@route("GET", "/cluster/resources", {"type": P(enum=("vm", "storage", "node", "sdn", "pool"))})
def resources(call: Call):
    return call.cluster.resources(call.token, call.params.get("type"))


@route("GET", "/cluster/nextid", {"vmid": OPTIONAL_VMID})
def nextid(call: Call):
    return call.cluster.nextid(call.params.get("vmid"))


@route("GET", "/cluster/status")
def cluster_status(call: Call):
    """The cluster entry and one per member (pve-manager API2/Cluster.pm ``status``): nodes counts
    offline ones too; ``level`` comes from the node's RRD data, '' once that expired."""
    cluster = call.cluster
    with cluster.lock:
        result = [{"id": "cluster", "type": "cluster", "name": cluster.config.cluster_name,
                   "nodes": len(cluster.nodes), "quorate": int(cluster.quorate), "version": len(cluster.nodes)}]
        for index, (name, node) in enumerate(cluster.nodes.items()):
            result.append({"id": f"node/{name}", "type": "node", "name": name, "nodeid": index + 1,
                           "ip": f"127.0.0.{index + 1}", "local": int(name == cluster.node),
                           "online": int(node.online), "level": ""})
    return result


JOB_SPEC = {
    "schedule": P(format=backups.calendar_event, max_length=128),
    "vmid": P(format=schema.vmid_list), "all": P(type="boolean"), "exclude": P(format=schema.vmid_list),
    "pool": P(), "storage": STORAGE_ID, "dumpdir": P(), "tmpdir": P(), "script": P(),
    "mode": P(enum=("snapshot", "suspend", "stop")),
    "compress": P(enum=("0", "1", "gzip", "lzo", "zstd")),
    "prune-backups": P(format=schema.prune_backups), "notes-template": P(max_length=1024),
    "enabled": P(type="boolean"), "comment": P(max_length=512), "mailto": P(),
    "mailnotification": P(enum=("always", "failure")), "node": P(pattern=NODE.pattern),
    "protected": P(type="boolean"), "remove": P(type="boolean"),
    "repeat-missed": P(type="boolean"), "bwlimit": P(type="integer", minimum=0),
    "zstd": P(type="integer", minimum=0), "ionice": P(type="integer", minimum=0, maximum=8),
}
SYS_AUDIT = Perm("/", "Sys.Audit")
SYS_MODIFY = Perm("/", "Sys.Modify")


def _check_job_privileges(token: Token, params: dict) -> None:
    if not token.is_root:
        for key in ("dumpdir", "tmpdir", "script"):
            if key in params:
                raise ParamError({key: "Only root may set this option."})
    for vmid in schema.split_list(params.get("vmid", "")):
        token.require(f"/vms/{vmid}", "VM.Backup")
    if params.get("storage"):
        token.require(f"/storage/{params['storage']}", "Datastore.AllocateSpace")


@route("GET", "/cluster/backup", check=SYS_AUDIT)
def backup_jobs(call: Call):
    with call.cluster.lock:
        return call.cluster.backup_jobs.list()


@route("POST", "/cluster/backup", dict(JOB_SPEC, id=P(pattern=backups.JOB_ID_RE, max_length=50),
                                       schedule=required(format=backups.calendar_event)),
       check=SYS_MODIFY)
def create_backup_job(call: Call):
    _check_job_privileges(call.token, call.params)
    with call.cluster.lock:
        call.cluster.backup_jobs.create(dict(call.params))


@route("GET", "/cluster/backup/{id}", {"id": required(pattern=backups.JOB_ID_RE)}, check=SYS_AUDIT)
def backup_job(call: Call):
    with call.cluster.lock:
        return call.cluster.backup_jobs.get(call.params["id"])


@route("PUT", "/cluster/backup/{id}", dict(JOB_SPEC, id=required(pattern=backups.JOB_ID_RE),
                                           delete=P(format=schema.configid_list), digest=DIGEST),
       check=SYS_MODIFY)
def update_backup_job(call: Call):
    _check_job_privileges(call.token, call.params)
    params = {k: v for k, v in call.params.items() if k not in ("id", "delete", "digest")}
    delete = schema.split_list(call.params.get("delete", ""))
    with call.cluster.lock:
        call.cluster.backup_jobs.update(call.params["id"], params, delete)


@route("DELETE", "/cluster/backup/{id}", {"id": required(pattern=backups.JOB_ID_RE)},
       check=SYS_MODIFY)
def delete_backup_job(call: Call):
    with call.cluster.lock:
        call.cluster.backup_jobs.delete(call.params["id"])


# ------------------------------------------------------------------ storage

@route("GET", "/storage", {"type": P()})
def storage_list(call: Call):
    items = call.cluster.storage_list(call.token)
    kind = call.params.get("type")
    return [item for item in items if kind is None or item["type"] == kind]


@route("GET", "/storage/{storage}", {"storage": required(pattern=STORAGE_ID.pattern)},
       check=Perm("/storage/{storage}", "Datastore.Audit", "Datastore.AllocateSpace", any_of=True))
def storage_config(call: Call):
    return call.cluster.storage_config(call.token, call.params["storage"])


@route("GET", "/nodes/{node}/storage", {"content": P(), "enabled": P(type="boolean"),
                                        "format": P(type="boolean"), "storage": STORAGE_ID,
                                        "target": P()})
def node_storages(call: Call):
    return call.cluster.node_storages(call.token, call.params.get("content"),
                                      call.params.get("storage"), call.params.get("target"))


STORAGE_AUDIT = Perm("/storage/{storage}", "Datastore.Audit", "Datastore.AllocateSpace", any_of=True)


@route("GET", "/nodes/{node}/storage/{storage}/status", {"storage": required(pattern=STORAGE_ID.pattern)},
       check=STORAGE_AUDIT)
def storage_status(call: Call):
    return call.cluster.storage_status(call.params["storage"])


@route("GET", "/nodes/{node}/storage/{storage}/content",
       {"storage": required(pattern=STORAGE_ID.pattern), "content": P(), "vmid": OPTIONAL_VMID},
       check=STORAGE_AUDIT)
def storage_content(call: Call):
    params = call.params
    return call.cluster.storage_content(call.token, params["storage"], params.get("content"),
                                        params.get("vmid"))


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}",
       {"storage": required(pattern=STORAGE_ID.pattern), "delay": P(type="integer", minimum=1)})
def delete_volume(call: Call):
    return call.cluster.delete_volume(call.token, call.params["storage"], call.params["volume"])


VZDUMP_SPEC = dict(JOB_SPEC, stdexcludes=P(type="boolean"), quiet=P(type="boolean"),
                   lockwait=P(type="integer", minimum=0), stopwait=P(type="integer", minimum=0),
                   stdout=P(type="boolean"))
VZDUMP_SPEC.pop("schedule")
VZDUMP_SPEC.pop("enabled")
VZDUMP_SPEC.pop("comment")
VZDUMP_SPEC.pop("repeat-missed")


@route("POST", "/nodes/{node}/vzdump", VZDUMP_SPEC)
def vzdump(call: Call):
    params = {k: v for k, v in call.params.items() if k != "node"}
    return call.cluster.vzdump(call.token, params)


# ------------------------------------------------------------------ tasks

TASK_LIST_SPEC = {
    "start": P(type="integer", minimum=0), "limit": P(type="integer", minimum=0),
    "vmid": OPTIONAL_VMID, "typefilter": P(), "userfilter": P(), "errors": P(type="boolean"),
    "source": P(enum=("archive", "active", "all")), "since": P(type="integer"),
    "until": P(type="integer"), "statusfilter": P(),
}


@route("GET", "/nodes/{node}/tasks", TASK_LIST_SPEC)
def list_tasks(call: Call):
    params = call.params
    node = call.params["node"]
    may_see_all = call.token.has(f"/nodes/{node}", "Sys.Audit")
    with call.cluster.lock:
        tasks = [t for t in call.cluster.tasks.tasks.values()
                 if t.node == node and (may_see_all or t.user == call.token.token_id)
                 and _task_selected(t, params)]
    tasks.sort(key=lambda t: (t.starttime, t.pid), reverse=True)
    start = params.get("start", 0)
    limit = params.get("limit", 50)
    return Reply([t.list_view() for t in tasks[start:start + limit]], {"total": len(tasks)})


def _task_selected(task, params: dict) -> bool:
    source = params.get("source", "archive")
    if source == "archive" and task.status == "running":
        return False
    if source == "active" and task.status != "running":
        return False
    if params.get("typefilter") and task.type != params["typefilter"]:
        return False
    if params.get("userfilter") and params["userfilter"] not in task.user:
        return False
    if params.get("vmid") is not None and task.id != str(params["vmid"]):
        return False
    if params.get("errors") and task.exitstatus in (None, "OK"):
        return False
    if params.get("since") is not None and task.starttime < params["since"]:
        return False
    if params.get("until") is not None and task.starttime > params["until"]:
        return False
    return _status_selected(task, params.get("statusfilter"))


def _status_selected(task, statusfilter: str | None) -> bool:
    if not statusfilter:
        return True
    wanted = set(schema.split_list(statusfilter.lower()))
    exitstatus = task.exitstatus or ""
    kind = ("ok" if exitstatus == "OK" else "warning" if exitstatus.startswith("WARNINGS")
            else "unknown" if not exitstatus else "error")
    return kind in wanted


UPID_PATH = {"upid": required(max_length=256)}


def _task(call: Call, privilege: str = "Sys.Audit"):
    upid = call.params["upid"]
    if not UPID_RE.fullmatch(upid):
        raise fail(f"unable to parse worker upid '{upid}'")
    task = call.cluster.tasks.get(upid)
    if task is None or task.node != call.params["node"]:  # each node has its own task log directory
        raise fail(f"unable to open file '/var/log/pve/tasks/{upid.split(':')[4][-1]}/{upid}' "
                   f"- No such file or directory")
    if task.user != call.token.token_id:
        call.token.require(f"/nodes/{task.node}", privilege)
    return task


@route("GET", "/nodes/{node}/tasks/{upid}", UPID_PATH)
def task_index(call: Call):
    _task(call)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status", UPID_PATH)
def task_status(call: Call):
    with call.cluster.lock:
        return _task(call).status_view()


TASK_LOG_SPEC = dict(UPID_PATH, start=P(type="integer", minimum=0), limit=P(type="integer", minimum=0),
                     download=P(type="boolean"))


@route("GET", "/nodes/{node}/tasks/{upid}/log", TASK_LOG_SPEC)
def task_log(call: Call):
    with call.cluster.lock:
        lines = list(_task(call).lines)
    start = call.params.get("start", 0)
    limit = call.params.get("limit", 50)
    page = [{"n": number + 1, "t": text} for number, text in enumerate(lines)][start:start + limit]
    return Reply(page, {"total": len(lines)})


@route("DELETE", "/nodes/{node}/tasks/{upid}", UPID_PATH)
def stop_task(call: Call):
    with call.cluster.lock:
        task = _task(call, privilege="Sys.Modify")
        call.cluster.tasks.stop(task.upid)


# ------------------------------------------------------------------ pools, access

@route("GET", "/pools", {"poolid": P(), "type": P(enum=("qemu", "lxc", "storage"))})
def pools(call: Call):
    with call.cluster.lock:
        return [{"poolid": name, **({"comment": pool["comment"]} if pool["comment"] else {})}
                for name, pool in sorted(call.cluster.pools.items())
                if call.token.has(f"/pool/{name}", "Pool.Audit")]


@route("GET", "/pools/{poolid}", {"type": P(enum=("qemu", "lxc", "storage"))},
       check=Perm("/pool/{poolid}", "Pool.Audit"))
def pool(call: Call):
    cluster = call.cluster
    with cluster.lock:
        found = cluster.pools.get(call.params["poolid"])
        if found is None:
            raise fail(f"pool '{call.params['poolid']}' does not exist")
        members = [cluster.containers[vmid].resource_view(cluster.containers[vmid].node)
                   for vmid in sorted(found["members"]) if vmid in cluster.containers]
    return {"members": members, **({"comment": found["comment"]} if found["comment"] else {})}


@route("GET", "/access/permissions", {"path": P(), "userid": P()})
def permissions(call: Call):
    paths = [call.params["path"]] if call.params.get("path") else \
        sorted(set(call.token.acl) | {"/"})
    return {path: {privilege: 1 for privilege in sorted(call.token.privileges_at(path))}
            for path in paths}


# The access endpoints register their routes on import (after everything above exists).
from . import access_api  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from . import certificates  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
