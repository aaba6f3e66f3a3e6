"""The state machine: containers, locks, tasks, and the rules PVE enforces on them.

Every public method takes the caller's token (for privilege checks made inside the
operation, as PVE makes them) and already-validated parameters. All mutation happens
under ``self.lock``; long operations return a UPID and finish in a task thread (see
``tasks``). The order of checks follows pve-container's API code, so a client sees
the same error PVE would give first.
"""

import contextlib
import copy
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import backups, containers, firewall, schema, storage
from .acl import Token
from .backend import Backend, BackendError
from .config import SimConfig, node_specs
from .containers import Container
from .errors import ApiError, ParamError, PermissionDenied, fail
from .faults import FaultInjector
from .tasks import Task, TaskError, TaskManager

LOG = logging.getLogger("pvesim.state")


# pmxcfs drops a node's and its guests' RRD data 5 minutes after the last update
# (pve-cluster src/pmxcfs/status.c, rrd_entry_is_old); /cluster/resources shows what is left.
RRD_EXPIRE = 300
GIB = 1024 ** 3
NODE_BASE_MEM = 2 * GIB  # what the host itself uses, before any CT
NODE_BASE_DISK = 8 * GIB  # the node's root filesystem, before any backup in 'local'
PROXY_REASONS = ("No route to host", "Connection refused", "Connection timed out")


class ProxyError(ApiError):
    """What pveproxy answers when the node it proxies to cannot be reached: AnyEvent::HTTP's
    pseudo-status 595 and the connect error as reason, with no body (pve-http-server
    AnyEvent.pm ``proxy_request`` passes ``Status`` and ``Reason`` through)."""

    def __init__(self, reason: str):
        super().__init__(595, reason)

    def body(self) -> None:
        return None


@dataclass
class Node:
    """A cluster member: its capacity (what the RRD reports as max*) and whether it is up."""

    name: str
    maxcpu: int
    maxmem: int
    maxdisk: int
    offline_since: float | None = None
    reason: str = PROXY_REASONS[0]

    @property
    def online(self) -> bool:
        return self.offline_since is None

    def stats_expired(self) -> bool:
        """An offline node's last RRD update is older than pmxcfs keeps it."""
        return not self.online and time.time() - self.offline_since > RRD_EXPIRE


@dataclass
class ClonePlan:
    full: bool
    config: dict
    source_volume: str
    new_volume: str
    storage: str


class Cluster:
    """A PVE cluster of one or more nodes (``nodes``) with their guests, storages and tasks.

    ``node`` is the first node, the one the API is reached through. A request for
    ``/nodes/<n>/...`` runs "on" node n (``serving``): its CTs, its storages, its tasks, as
    when pveproxy proxies the call to that node. Guests carry their node; VMIDs are unique
    across the cluster, as pmxcfs's vmlist makes them.
    """

    def __init__(self, config: SimConfig, backend: Backend):
        self.config = config
        self.nodes = {spec["name"]: Node(**spec) for spec in config.nodes or node_specs(config.values)}
        self.node = config.node
        self.backend = backend
        self.lock = threading.RLock()
        self._request = threading.local()
        self.faults = FaultInjector()
        self.tasks = TaskManager(self.node, self.lock, config.draw_task_duration,
                                 self.faults.take_task_fault)
        self.storage_sets = self._make_storages(Path(config.storage_root))
        self.reset()

    def _make_storages(self, root: Path) -> dict:
        """Each node's storages: its own 'local' and 'local-lvm' (the first node's under the root
        itself, as before there were nodes; the others' under ``nodes/<name>``), plus the shared ones
        enabled on it (one object for all nodes: the same files)."""
        shared = [storage.shared_storage(spec, root, list(self.nodes)) for spec in self.config.shared_storages]
        result = {}
        for index, name in enumerate(self.nodes):
            items = storage.default_storages(root if index == 0 else root / "nodes" / name,
                                             self.config.vztmpl_dir)
            items.update({item.storage: item for item in shared if item.enabled_on(name)})
            result[name] = items
        return result

    @property
    def quorate(self) -> bool:
        """Corosync's majority: more than half of the nodes (one vote each) are reachable from the
        first node, and the lab did not take quorum away (``POST /_lab/quorum``)."""
        online = sum(1 for node in self.nodes.values() if node.online)
        return not self.quorum_lost and 2 * online > len(self.nodes)

    @property
    def here(self) -> str:
        """The node the current request (or task) runs on; the first node otherwise."""
        return getattr(self._request, "node", None) or self.node

    @property
    def storages(self) -> dict:
        """The storages enabled on the node of the current request."""
        return self.storage_sets[self.here]

    @contextlib.contextmanager
    def serving(self, node: str):
        """Run the enclosed calls on ``node``: a proxied request (or its task) there."""
        previous = getattr(self._request, "node", None)
        self._request.node = node
        try:
            yield
        finally:
            self._request.node = previous

    def check_reachable(self, node: str) -> None:
        """pveproxy's proxy to an offline node fails before the node sees the call."""
        member = self.nodes[node]
        if not member.online:
            raise ProxyError(member.reason)

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Back to a fresh install: the backend's own CTs (``backend.existing()``, running if it says so)
        and the seeded template, no faults, no tasks, no backups."""
        with self.lock:
            self.backend.reset()
            self.tasks.reset()
            self.backend.set_dhcp_delay(self.config.dhcp_delay)
            self.faults.clear()
            self.quorum_lost = False
            self.containers: dict[int, Container] = {}
            self.pools = {pool["poolid"]: {"comment": pool.get("comment"), "members": set()}
                          for pool in self.config.pools}
            self.backup_jobs = backups.BackupJobs()
            self.cluster_firewall = firewall.ClusterFirewall(copy.deepcopy(self.config.cluster_firewall))
            for item in self.backend.existing():
                vmid = int(item["vmid"])
                node = item.get("node") if item.get("node") in self.nodes else self.node
                self.containers[vmid] = Container(vmid, copy.deepcopy(item["config"]), node=node)
                if item.get("running"):  # a restarted simulator finds a running CT running
                    self.containers[vmid].status = "running"
                    self.containers[vmid].started_at = time.time()
            template_id = int(self.config.template_vmid)
            if self.config.seed_template and template_id not in self.containers:
                self.containers[template_id] = Container(template_id, containers.template_config(
                    self.config.template_hostname, self.config.bridge, template_id), node=self.node)
            for node in self.nodes.values():
                node.offline_since, node.reason = None, PROXY_REASONS[0]
            for item in self._all_storages():
                if item.path is not None:
                    shutil.rmtree(item.dump_dir, ignore_errors=True)
                    item.dump_dir.mkdir(parents=True, exist_ok=True)
            self._sync_firewall()

    def set_dhcp_delay(self, seconds: float) -> None:
        with self.lock:
            self.config.values["dhcp_delay"] = float(seconds)
            self.backend.set_dhcp_delay(seconds)

    # ------------------------------------------------------------------ helpers

    def _all_storages(self) -> list:
        """Every storage object once (a shared one appears on several nodes)."""
        unique = {}
        for items in self.storage_sets.values():
            for item in items.values():
                unique[id(item)] = item
        return list(unique.values())

    def _ct(self, vmid: int) -> Container:
        """The CT on the current request's node: PVE's load_config reads the config of this node's
        directory in /etc/pve, so a CT of another node does not exist here (no request: any node)."""
        ct = self.containers.get(vmid)
        node = getattr(self._request, "node", None)
        if ct is None or (node is not None and ct.node != node):
            raise fail(f"Configuration file 'nodes/{node or self.node}/lxc/{vmid}.conf' does not exist")
        return ct

    @staticmethod
    def _check_lock(ct: Container) -> None:
        if ct.lock:
            raise fail(f"CT is locked ({ct.lock})")

    def _storage(self, storage_id: str, node: str | None = None) -> storage.Storage:
        """The storage as PVE's storage_check_enabled finds it on ``node`` (default: here)."""
        node = node or self.here
        item = self.storage_sets[node].get(storage_id)
        if item is None:
            if any(storage_id in items for items in self.storage_sets.values()):
                raise fail(f"storage '{storage_id}' is not available on node '{node}'")
            raise fail(f"storage '{storage_id}' does not exist")
        return item

    @staticmethod
    def _check_bridges(token: Token, *net_values: str) -> None:
        """SDN.Use on each NIC's bridge, as PVE 8 checks it for everyone but root@pam.

        pve-container PVE/LXC.pm ``check_bridge_access`` -> pve-guest-common
        PVE/GuestHelpers.pm ``check_vnet_access`` (zone ``localnetwork`` for a plain bridge):
        ``/sdn/zones/localnetwork/<bridge>/<tag>`` for a VLAN tag, the same for each trunk
        VLAN (in string order), else ``/sdn/zones/localnetwork/<bridge>``.
        """
        if token.is_root:
            return
        for value in filter(None, net_values):
            net = containers.net_settings(value)
            bridge = net.get("bridge")
            if not bridge:  # a NIC without a bridge: not modelled
                continue
            path = f"/sdn/zones/localnetwork/{bridge}"
            if net.get("tag"):
                token.require(f"{path}/{net['tag']}", "SDN.Use")
            for tag in sorted(_trunk_tags(net.get("trunks")), key=str):
                token.require(f"{path}/{tag}", "SDN.Use")
            if not net.get("tag") and not net.get("trunks"):
                token.require(path, "SDN.Use")

    def _save_config(self, ct: Container) -> None:
        """Hand the committed config to the backend (a copy; errors only logged)."""
        try:
            self.backend.save_config(ct.vmid, copy.deepcopy(ct.config))
            self.backend.save_node(ct.vmid, ct.node)
        except Exception:  # persisting is the backend's business; the change stands
            LOG.exception("backend could not save the config of CT %s", ct.vmid)

    def _start_task(self, token: Token, task_type: str, task_id, work, on_success=None,
                    on_failure=None, error_prefix: str = "", prepare=None,
                    duration: float | None = None) -> str:
        """A task on the current node: its UPID names it, and its steps run there too."""
        node = self.here

        def on_node(step):
            if step is None:
                return None

            def run(*args):
                with self.serving(node):
                    return step(*args)
            return run

        return self.tasks.start(task_type, task_id, token.token_id, on_node(work), on_node(on_success),
                                on_node(on_failure), error_prefix, on_node(prepare), duration,
                                node=node).upid

    # ------------------------------------------------------------------ reads

    def _check_quorum(self) -> None:
        """pve-cluster's check_cfs_quorum, as create, clone and start call it."""
        if not self.quorate:
            raise fail("cluster not ready - no quorum?")

    def _check_vmid_unused(self, vmid: int) -> None:
        """pve-cluster's check_vmid_unused: the message names the node that has the guest."""
        existing = self.containers.get(vmid)
        if existing is not None:
            raise fail(f"CT {vmid} already exists on node '{existing.node}'")

    def nextid(self, vmid: int | None) -> str:
        """PVE returns the id as a string and reserves nothing."""
        with self.lock:
            if vmid is not None:
                if vmid in self.containers:
                    raise ParamError({"vmid": f"VM {vmid} already exists"})
                return str(vmid)
            candidate = 100
            while candidate in self.containers:
                candidate += 1
            return str(candidate)

    def container_list(self, token: Token) -> list:
        with self.lock:
            return [ct.status_view() for vmid, ct in sorted(self.containers.items())
                    if ct.node == self.here and token.has(f"/vms/{vmid}", "VM.Audit")]

    def config_view(self, vmid: int) -> dict:
        with self.lock:
            return self._ct(vmid).config_view()

    def _count_traffic(self, ct: Container) -> None:
        """Take a running CT's counters from the backend when it measures them (real veths)."""
        if ct.status != "running":
            return
        counted = self.backend.counters(ct.vmid, ct.config)
        if counted is not None:
            ct.netin, ct.netout = counted

    def status_view(self, vmid: int) -> dict:
        with self.lock:
            ct = self._ct(vmid)
            self._count_traffic(ct)
            view = ct.status_view()
            view["ha"] = {"managed": 0}
            return view

    def interfaces(self, vmid: int) -> list | None:
        with self.lock:
            ct = self._ct(vmid)
            if ct.status != "running":
                return None
            config = dict(ct.config)
        return self.backend.interfaces(vmid, config)

    def resources(self, token: Token, kind: str | None) -> list:
        with self.lock:
            result = []
            if kind in (None, "vm"):
                result += [self._guest_resource(ct) for vmid, ct in sorted(self.containers.items())
                           if token.has(f"/vms/{vmid}", "VM.Audit")]
            if kind in (None, "node"):
                result += [self.node_view(name) for name in self.nodes
                           if token.has(f"/nodes/{name}", "Sys.Audit")]
            if kind in (None, "storage"):
                result += [self._storage_resource(name, item)
                           for name, items in self.storage_sets.items() for item in items.values()
                           if token.has_any(f"/storage/{item.storage}",
                                            ["Datastore.Audit", "Datastore.AllocateSpace"])]
            if kind in (None, "pool"):
                result += [{"id": f"/pool/{name}", "type": "pool", "pool": name}
                           for name in sorted(self.pools)
                           if token.has(f"/pool/{name}", "Pool.Audit")]
            return result

    def _guest_resource(self, ct: Container) -> dict:
        """A guest as its node last reported it; once that report expired, what pmxcfs's vmlist
        and the config still tell (API2Tools.pm ``extract_vm_stats``: status 'unknown')."""
        if self.nodes[ct.node].online:  # an offline node's guests keep their last report
            self._count_traffic(ct)
        view = ct.resource_view(ct.node)
        if self.nodes[ct.node].stats_expired():
            view = {key: view[key] for key in ("id", "vmid", "node", "type", "lock", "tags", "pool")
                    if key in view}
            view["status"] = "unknown"
        return view

    def _storage_resource(self, node: str, item: storage.Storage) -> dict:
        """API2Tools.pm ``extract_storage_stats``: the node's last report, 'unknown' once expired."""
        status = item.status_view(self._used(item, node))
        view = {"id": f"storage/{node}/{item.storage}", "type": "storage",
                "node": node, "storage": item.storage, "status": "unknown",
                "plugintype": item.type, "content": status["content"], "shared": int(item.shared)}
        if not self.nodes[node].stats_expired():
            view.update(status="available", disk=status["used"], maxdisk=status["total"])
        return view

    def _node_usage(self, name: str) -> dict:
        """Memory, CPU and root disk of a node from what runs on it: the host's own share plus its
        running CTs (their mem and CPU as status/current reports them), and 'local''s backups."""
        node = self.nodes[name]
        guests = [ct.status_view() for ct in self.containers.values()
                  if ct.node == name and ct.status == "running"]
        local = self.storage_sets[name]["local"]
        return {"mem": min(node.maxmem, NODE_BASE_MEM + sum(view["mem"] for view in guests)),
                "cpu": min(1.0, round(0.01 + sum(view["cpu"] * view["cpus"] for view in guests)
                                      / node.maxcpu, 6)),
                "disk": min(node.maxdisk, NODE_BASE_DISK + self._used(local, name))}

    def node_view(self, name: str | None = None) -> dict:
        """API2Tools.pm ``extract_node_stats``: an offline node keeps its last ``max*`` and
        ``level`` without ``mem``/``cpu``/``disk``/``uptime``, and all of them once they expired."""
        name = name or self.here
        node = self.nodes[name]
        view = {"id": f"node/{name}", "type": "node", "node": name,
                "status": "online" if node.online else "offline"}
        if node.stats_expired():
            return view
        view.update(level="", maxcpu=node.maxcpu, maxmem=node.maxmem, maxdisk=node.maxdisk)
        if node.online:
            view.update(self._node_usage(name), uptime=int(time.time() - _BOOT))
        return view

    def node_status(self) -> dict:
        view = self.node_view()
        node = self.nodes[self.here]
        return {"uptime": view["uptime"], "cpu": view["cpu"], "loadavg": ["0.10", "0.08", "0.05"],
                "memory": {"total": view["maxmem"], "used": view["mem"],
                           "free": view["maxmem"] - view["mem"]},
                "swap": {"total": 0, "used": 0, "free": 0},
                "rootfs": {"total": view["maxdisk"], "used": view["disk"],
                           "avail": view["maxdisk"] - view["disk"], "free": view["maxdisk"] - view["disk"]},
                "cpuinfo": {"cpus": node.maxcpu, "sockets": 1, "cores": max(1, node.maxcpu // 2),
                            "model": "pvesim virtual CPU"},
                "kversion": "Linux 6.8.12-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-4",
                "pveversion": f"pve-manager/{self.config.pve_version}/faa83925c9641325"}

    # ------------------------------------------------------------------ create

    def create(self, token: Token, vmid: int, params: dict) -> str:
        """POST /nodes/{node}/lxc: a new CT from an OS template (pve-container's create_vm).

        Checked at once, in PVE's order: the vmid is unused, the ssh keys parse, the pool
        exists, VM.Allocate on the CT (or its pool), the privileges of each config key, the
        template volume (content type, Datastore.Audit|AllocateSpace), the rootfs storage
        (rootdir content, Datastore.AllocateSpace). Then the config exists with
        ``lock: create`` and a ``vzcreate`` task unpacks the template through the backend;
        a failed task removes the CT again. ``password`` is dropped unseen: PVE only
        sets root's password inside the CT.
        """
        self._check_quorum()
        unique = bool(params.get("unique"))
        params = {key: value for key, value in params.items()
                  if key not in ("node", "vmid", "password", "ignore-unpack-errors", "bwlimit",
                                 "unique", "template")}
        options = {key: params.pop(key, None) for key in containers.CREATE_ONLY_KEYS
                   if key != "password"}
        unprivileged = bool(params.pop("unprivileged", 0))  # PVE 8's API default: privileged
        pool = options["pool"]
        default_storage = options["storage"] or "local"
        if options["restore"]:
            return self._restore(token, vmid, params, options, unique)
        with self.lock:
            self._check_vmid_unused(vmid)
            if options["ssh-public-keys"] is not None:
                containers.check_ssh_public_keys(options["ssh-public-keys"])
            if pool is not None and pool not in self.pools:
                raise PermissionDenied(f"pool '{pool}' does not exist")
            if not (token.has(f"/vms/{vmid}", "VM.Allocate")
                    or (pool and token.has(f"/pool/{pool}", "VM.Allocate"))):
                raise PermissionDenied()
            self._check_create_privileges(token, vmid, pool, params, unprivileged, default_storage)
            ostemplate = options["ostemplate"]
            archive = self._template_archive(token, ostemplate)
            rootfs = self._new_rootfs(token, vmid, params.pop("rootfs", None), default_storage)
            config = self._create_config(vmid, params, rootfs, unprivileged, archive.name)
            self.containers[vmid] = Container(vmid, dict(config, lock="create"), node=self.here)
            return self._create_task(token, vmid, config, archive, ostemplate, pool,
                                     bool(options["start"]))

    # ------------------------------------------------------------------ restore

    def _restore(self, token: Token, vmid: int, params: dict, options: dict, unique: bool) -> str:
        """POST /nodes/{node}/lxc with ``restore=1`` (``pct restore``): create_vm's restore branch.

        In pve-container's order: an existing CT needs ``force`` (else check_vmid_unused fails),
        must be stopped (``can't overwrite running container``) and unprotected; VM.Allocate on
        the CT (or its pool), or for an existing CT with ``force`` VM.Backup alone (then the
        archive's firewall config would be skipped: the simulator's archives carry none, and the
        CT's firewall stays as it is either way); the archive: a backup volume (Datastore.
        AllocateSpace, VM.Backup on its owner) or, for root only, a file path. The config is the
        archive's ``etc/vzdump/pct.conf`` merged under the given keys (sanitize_and_merge_config:
        digest, rootfs, snapshots, unprivileged, parent, mpN, unusedN, template dropped), NICs
        keep the archive's MAC unless ``unique``. The CT holds ``lock: create`` during the
        ``vzrestore`` task; a failed task leaves no CT (PVE destroyed the old volumes first).
        """
        force = bool(options["force"])
        pool = options["pool"]
        ostemplate = options["ostemplate"]
        emsg = f"unable to restore CT {vmid} -"
        with self.lock:
            existing = self.containers.get(vmid)
            if existing is not None and (not force or existing.node != self.here):
                # create_vm: only a CT of this node may be overwritten (check_vmid_unused otherwise)
                self._check_vmid_unused(vmid)
            if existing is not None:
                if existing.status == "running":
                    raise fail("can't overwrite running container")
                if existing.config.get("protection"):
                    raise fail(f"unable to restore CT {vmid} - protection mode enabled")
            if options["ssh-public-keys"] is not None:
                containers.check_ssh_public_keys(options["ssh-public-keys"])
            if pool is not None and pool not in self.pools:
                raise PermissionDenied(f"pool '{pool}' does not exist")
            if not (token.has(f"/vms/{vmid}", "VM.Allocate")
                    or (pool and token.has(f"/pool/{pool}", "VM.Allocate"))
                    or (existing is not None and token.has(f"/vms/{vmid}", "VM.Backup"))):
                raise PermissionDenied()
            archive = self._backup_archive(token, ostemplate)
            try:
                saved = containers.parse_config(backups.read_archive_config(archive))
            except (OSError, ValueError) as exc:
                raise fail(f"{emsg} {exc}") from exc
            if existing is not None and existing.lock:
                raise fail(f"{emsg} CT is locked ({existing.lock})")
            config = self._restored_config(token, vmid, saved, params, options, unique, existing)
            if existing is not None:
                existing.config["lock"] = "create"
            else:
                self.containers[vmid] = Container(vmid, dict(config, lock="create"), node=self.here)

            def work(task: Task):
                task.log(f"recovering backed-up configuration from '{ostemplate}'")
                task.log(f"restoring '{ostemplate}' now..")
                self.backend.restore(vmid, archive, copy.deepcopy(config))
                task.log("merging backed-up and given configuration..")

            def on_success(task: Task, _result):
                ct = self.containers.get(vmid)
                if ct is None or ct.lock != "create":
                    raise TaskError("lost 'create' config lock, aborting")
                ct.config = copy.deepcopy(config)
                ct.status, ct.started_at = "stopped", None
                if pool:
                    self._add_to_pool(ct, pool)
                self._save_config(ct)
                if options["start"]:
                    self._power_start(token, vmid, {})

            def on_failure(task: Task, _error):
                ct = self.containers.get(vmid)
                if ct is not None and ct.lock == "create":
                    self._discard_created(task, vmid)
                    self._forget(vmid, purge=False)

            return self._start_task(token, "vzrestore", vmid, work, on_success, on_failure,
                                    error_prefix=f"{emsg} ")

    def _archive_volume(self, token: Token, ostemplate: str, content: str):
        """The part of PVE's check_volume_access both archive kinds share: a path (root only) is
        ``(Path, None, None, None)``; a volume is ``(None, storage id, storage, parse_volname())``,
        refused unless its content type is ``content``."""
        if ":" not in ostemplate:
            if not token.is_root:
                raise fail("Only root can pass arbitrary filesystem paths.")
            return Path(ostemplate), None, None, None
        storage_id, volname = ostemplate.split(":", 1)
        item = self._storage(storage_id)
        parsed = storage.parse_volname(item, volname)
        if parsed[0] != content:
            raise fail(f"unable to use volume {ostemplate} - content type needs to be '{content}'")
        return None, storage_id, item, parsed

    def _backup_archive(self, token: Token, ostemplate: str) -> Path:
        """PVE's check_volume_access(..., 'backup'): the archive file an ``ostemplate`` names."""
        path, storage_id, item, parsed = self._archive_volume(token, ostemplate, "backup")
        if path is not None:
            return path
        owner = parsed[2]
        volname = ostemplate.split(":", 1)[1]
        if not token.has(f"/storage/{storage_id}", "Datastore.Allocate"):
            token.require(f"/storage/{storage_id}", "Datastore.AllocateSpace")
            if owner is not None:
                token.require(f"/vms/{owner}", "VM.Backup")
        return item.dump_dir / volname.split("/", 1)[1]

    def _restored_config(self, token: Token, vmid: int, saved: dict, params: dict, options: dict,
                         unique: bool, existing: Container | None) -> dict:
        """sanitize_and_merge_config: the given keys win, the archive fills in the rest."""
        config = self._create_config(vmid, {key: value for key, value in params.items() if key != "rootfs"},
                                     {"volume": "pending"}, bool(saved.get("unprivileged")), "")
        for key in ("arch", "ostype", "hostname", "memory", "swap"):
            if key not in params:
                config.pop(key, None)
        for key, value in saved.items():
            if key in ("digest", "rootfs", "snapshots", "unprivileged", "parent", "template", "lock") \
                    or containers.is_volume_key(key) or key in config:
                continue
            if key.startswith("net") and key[3:].isdigit():
                self._check_bridges(token, value)
                if unique:
                    value = containers.with_new_mac(value, key)
            config[key] = value
        # A new volume of the archive's size on 'storage' (PVE's default 'local', which on most nodes
        # holds no container directories: pct restore then needs --storage), as PVE's storage-only restore.
        old_rootfs = containers.parse_rootfs(str(saved.get("rootfs", "local:4")))
        size = schema.parse_size(str(old_rootfs.get("size", "4G")))
        default_storage = options["storage"] or "local"
        rootfs = self._new_rootfs(token, vmid, params.get("rootfs") or
                                  f"{default_storage}:{max(-(-size // storage.GIB), 1)}", default_storage)
        config["rootfs"] = containers.print_rootfs(rootfs)
        config["hostname"] = config.get("hostname") or f"CT{vmid}"
        config["memory"] = config.get("memory") or 512
        config.setdefault("swap", 512)
        return config

    def _create_task(self, token: Token, vmid: int, config: dict, archive: Path, ostemplate: str,
                     pool: str | None, start: bool) -> str:
        def work(task: Task):
            volume = containers.parse_rootfs(config["rootfs"])
            task.log(f"  Logical volume \"{volume['volume'].split(':', 1)[1]}\" created.")
            if not archive.is_file():
                raise TaskError(f"can't find file '{ostemplate}'")
            task.log(f"extracting archive '{archive}'")
            try:
                self.backend.create(vmid, archive, copy.deepcopy(config))
            except BackendError:
                self._discard_created(task, vmid)
                raise
            task.log(f"Total bytes read: {archive.stat().st_size}")
            task.log(f"Detected container architecture: {config['arch']}")

        def on_success(task: Task, _result):
            ct = self.containers.get(vmid)
            if ct is None or ct.lock != "create":
                raise TaskError("lost 'create' config lock, aborting")
            ct.config.pop("lock")
            if pool:
                self._add_to_pool(ct, pool)
            self._save_config(ct)
            if start:  # PVE starts it from the create worker: a vzstart task of its own
                self._power_start(token, vmid, {})

        def on_failure(task: Task, _error):
            ct = self.containers.get(vmid)
            if ct is not None and ct.lock == "create":
                del self.containers[vmid]

        return self._start_task(token, "vzcreate", vmid, work, on_success, on_failure,
                                error_prefix=f"unable to create CT {vmid} - ")

    def _discard_created(self, task: Task, vmid: int) -> None:
        """What PVE's destroy_disks does after a failed create: the backend forgets it."""
        try:
            self.backend.destroy(vmid)
        except Exception as exc:  # cleanup problems are warnings in PVE too
            task.warn(f"unable to clean up CT {vmid}: {exc}")

    def _require_vm_perm(self, token: Token, vmid: int, pool: str | None, privilege: str) -> None:
        """PVE's check_vm_perm: the pool's ACL may grant it, else /vms/<vmid> must."""
        if pool and token.has(f"/pool/{pool}", privilege):
            return
        token.require(f"/vms/{vmid}", privilege)

    def _check_create_privileges(self, token: Token, vmid: int, pool: str | None, params: dict,
                                 unprivileged: bool, default_storage: str) -> None:
        """check_ct_modify_config_perm for a new CT: one privilege per config key."""
        if token.is_root:
            return
        for key in sorted(params):
            if key in containers.ROOT_ONLY_KEYS:
                raise PermissionDenied(containers.ROOT_ONLY_KEYS[key])
            if key == "features":
                self._check_new_features(token, vmid, pool, params[key], unprivileged)
                continue
            self._require_vm_perm(token, vmid, pool, containers.key_privilege(key))
            if key == "rootfs":
                volume = str(containers.parse_rootfs(str(params[key]))["volume"])
                match = containers.NEW_DISK_RE.fullmatch(volume)
                if match:
                    token.require(f"/storage/{match.group(1) or default_storage}",
                                  "Datastore.AllocateSpace")
            elif key.startswith("net"):
                self._check_bridges(token, params[key])

    def _check_new_features(self, token: Token, vmid: int, pool: str | None, value: str,
                            unprivileged: bool) -> None:
        if not unprivileged:
            raise PermissionDenied("changing feature flags for privileged container is only allowed for root@pam")
        features = schema.parse_property_string(value, schema.FEATURE_PROPS, "features")
        if len(features) == 1 and features.get("nesting"):
            self._require_vm_perm(token, vmid, pool, "VM.Allocate")
        elif features:
            raise PermissionDenied("changing feature flags (except nesting) is only allowed for root@pam")

    def _template_archive(self, token: Token, ostemplate: str) -> Path:
        """PVE's check_volume_access(..., 'vztmpl'): the file an ``ostemplate`` names."""
        path, storage_id, item, _parsed = self._archive_volume(token, ostemplate, "vztmpl")
        if path is not None:
            return path
        volname = ostemplate.split(":", 1)[1]
        if not token.has(f"/storage/{storage_id}", "Datastore.Allocate"):
            token.require_any(f"/storage/{storage_id}", ["Datastore.AllocateSpace", "Datastore.Audit"])
        return storage.template_path(item, volname)

    def _new_rootfs(self, token: Token, vmid: int, value, default_storage: str) -> dict:
        """The rootfs to allocate: ``STORAGE:SIZE`` (GiB), a bare size on the default
        storage, or 4 GiB there when not given; the storage must hold container dirs."""
        if value is None:
            rootfs = {"volume": f"{default_storage}:4"}
        elif containers.NEW_DISK_RE.fullmatch(str(value)) and ":" not in str(value):
            rootfs = {"volume": f"{default_storage}:{value}"}
        else:
            rootfs = containers.parse_rootfs(str(value))
        match = containers.NEW_DISK_RE.fullmatch(str(rootfs["volume"]))
        if match is None:
            raise fail(f"pvesim only allocates new rootfs volumes (STORAGE:SIZE_IN_GiB), "
                       f"not '{rootfs['volume']}'")
        storage_id = match.group(1) or default_storage
        target = self.storages.get(storage_id)
        if target is None:
            raise fail(f"storage '{storage_id}' does not exist")
        if not target.supports("rootdir"):
            raise ParamError({"storage": f"storage '{storage_id}' does not support container directories"})
        token.require(f"/storage/{storage_id}", "Datastore.AllocateSpace")
        size = int(float(match.group(2)) * storage.GIB)
        if size <= 0:
            raise fail(f"pvesim cannot allocate a rootfs of size 0 on storage '{storage_id}'")
        taken = {containers.parse_rootfs(ct.config["rootfs"])["volume"].split(":", 1)[-1].split("/")[-1]
                 for ct in self.containers.values() if "rootfs" in ct.config}
        rootfs["volume"] = storage.new_volume_name(target, vmid, taken)
        rootfs["size"] = schema.format_size(size)
        return rootfs

    def _create_config(self, vmid: int, params: dict, rootfs: dict, unprivileged: bool,
                       template_name: str) -> dict:
        """update_pct_config on an empty config, plus the defaults PVE's worker sets."""
        config = {}
        for key, value in params.items():
            if key.startswith("net"):
                value = containers.normalize_net(value, key)
            elif key == "tags":
                value = schema.normalize_tags(value)
            elif key == "description":
                value = normalize_description(value)
            config[key] = containers.store_value(key, value)
        config["rootfs"] = containers.print_rootfs(rootfs)
        if unprivileged:
            config["unprivileged"] = 1
        config.setdefault("arch", containers.guess_arch(template_name))
        config.setdefault("ostype", containers.guess_ostype(template_name))
        config["hostname"] = config.get("hostname") or f"CT{vmid}"
        config["memory"] = config.get("memory") or 512
        config.setdefault("swap", 512)
        return config

    # ------------------------------------------------------------------ clone

    def clone(self, token: Token, vmid: int, params: dict) -> str:
        """POST /nodes/{node}/lxc/{vmid}/clone, in pve-container's order of checks."""
        newid = params["newid"]
        with self.lock:
            pool = params.get("pool")
            if pool is not None and pool not in self.pools:
                # pve-container src/PVE/API2/LXC.pm clone_vm -> $rpcenv->check_pool_exist
                # (pve-access-control src/PVE/RPCEnvironment.pm): raise_perm_exc, a 403
                raise PermissionDenied(f"pool '{pool}' does not exist")
            target = self._clone_target(params.get("target"), params.get("storage"))
            self._check_quorum()
            source = self._ct(vmid)
            self._check_lock(source)  # PVE's set_lock($vmid, 'disk') fails here
            self._check_vmid_unused(newid)
            plan = self._plan_clone(token, source, newid, params, target)
            source.config["lock"] = "disk"
            self.containers[newid] = Container(newid, plan.config, firewall=source.firewall.clone(),
                                               node=self.here)

            def work(task: Task):
                kind = "full" if plan.full else "linked"
                task.log(f"create {kind} clone of mount point rootfs ({plan.source_volume})")
                self.backend.clone(vmid, newid, plan.full, params.get("storage"),
                                   copy.deepcopy(plan.config))

            def on_success(task: Task, _result):
                self._unlock(vmid, "disk")
                clone = self.containers.get(newid)
                if clone is None or clone.lock != "create":
                    raise TaskError("Lost 'create' config lock, aborting.")
                rootfs = containers.parse_rootfs(clone.config["rootfs"])
                rootfs["volume"] = plan.new_volume
                clone.config["rootfs"] = containers.print_rootfs(rootfs)
                clone.config.pop("lock")
                if target:  # move_config_to_node: the config file moves in /etc/pve
                    clone.node = target
                if pool:
                    self._add_to_pool(clone, pool)
                self._save_config(clone)

            def on_failure(task: Task, _error):
                self._unlock(vmid, "disk")
                clone = self.containers.get(newid)
                if clone is not None and clone.lock == "create":
                    del self.containers[newid]

            return self._start_task(token, "vzclone", vmid, work, on_success, on_failure,
                                    error_prefix="clone failed: ")

    def _clone_target(self, target: str | None, storage_id: str | None) -> str | None:
        """clone_vm's first checks: ``target`` (None when it is this node or ``localhost``) must be a
        cluster node; ``storage`` must be enabled here and, with a target, there and shared."""
        if target in (self.here, "localhost"):
            target = None
        if target and target not in self.nodes:
            raise fail(f"no such cluster node '{target}'")
        if storage_id:
            self._storage(storage_id)
            if target:
                item = self._storage(storage_id, target)
                if not item.shared:
                    raise fail(f"can't clone to non-shared storage '{storage_id}'")
        return target

    def _plan_clone(self, token: Token, source: Container, newid: int, params: dict,
                    target: str | None) -> ClonePlan:
        full = params.get("full")
        full = (not source.is_template) if full is None else bool(full)
        storage_id = params.get("storage")
        if storage_id is not None and not full:
            raise fail("parameter 'storage' not allowed for linked clones")
        if params.get("snapname"):
            raise fail(f"snapshot '{params['snapname']}' does not exist")
        volid = containers.parse_rootfs(source.config["rootfs"])["volume"]
        target_id = storage_id or storage.volume_storage(volid)
        token.require(f"/storage/{target_id}", "Datastore.AllocateSpace")
        destination = self._storage(target_id)
        if full:
            if source.status == "running":
                # pve-container stable-bookworm, src/PVE/API2/LXC.pm clone_vm (snapshots are not simulated)
                raise fail("Cannot do full clones on a running container without snapshots")
            if not destination.supports("rootdir"):
                raise fail(f"storage '{target_id}' does not support container directories")
        elif not storage.is_base_volume(volid):
            raise fail(f"Linked clone feature for '{volid}' is not available")
        config = self._clone_config(token, source, params)
        # after every volume: one not shared (the clone's storage when given) keeps it on this node
        if target and not destination.shared:
            raise fail(f"can't clone CT to node '{target}' (CT uses local storage)")
        base = None if full else volid.split(":", 1)[1]
        new_volume = storage.new_volume_name(destination, newid, set(), base)
        return ClonePlan(full, config, volid, new_volume, target_id)

    def _clone_config(self, token: Token, source: Container, params: dict) -> dict:
        """Copy everything but template/lock; every NIC gets a fresh MAC address."""
        config = {}
        for key, value in source.config.items():
            if key in ("template", "lock"):
                continue
            if key.startswith("net"):
                value = containers.with_new_mac(value, key)
                self._check_bridges(token, value)
            config[key] = value
        config["lock"] = "create"
        if params.get("hostname"):
            config["hostname"] = params["hostname"]
        if params.get("description"):
            config["description"] = normalize_description(params["description"])
        return config

    def _unlock(self, vmid: int, lock_name: str) -> None:
        ct = self.containers.get(vmid)
        if ct is not None and ct.lock == lock_name:
            ct.config.pop("lock")

    def _add_to_pool(self, ct: Container, pool: str) -> None:
        if pool in self.pools:
            self.pools[pool]["members"].add(ct.vmid)
            ct.pool = pool

    # ------------------------------------------------------------------ config

    def update_config(self, token: Token, vmid: int, params: dict) -> None:
        """PUT /config: synchronous; refuses locked CTs and stale digests."""
        params = dict(params)
        digest = params.pop("digest", None)
        delete = schema.split_list(params.pop("delete", ""))
        revert = schema.split_list(params.pop("revert", ""))
        if not params and not delete and not revert:
            raise fail("no options specified")
        with self.lock:
            ct = self._ct(vmid)
            self._check_lock(ct)
            if digest and digest != ct.digest:
                raise fail("detected modified configuration - file changed by other user? Try again.")
            self._check_config_privileges(token, ct, params, delete + revert)
            self._check_delete(params, delete)
            new_config = self._apply_config(ct, params, delete)
            # check_ct_modify_config_perm: the old and the new value of a changed NIC, the old one of a
            # deleted or reverted NIC (pve-container src/PVE/API2/LXC/Config.pm, update_vm)
            for key in [k for k in list(params) + delete + revert if k.startswith("net")]:
                self._check_bridges(token, ct.config.get(key), params.get(key))
            ct.config = new_config
            self.backend.apply_config(vmid, copy.deepcopy(new_config))
            self._save_config(ct)
            self._sync_firewall()

    def _check_config_privileges(self, token: Token, ct: Container, params: dict, deleted: list) -> None:
        if token.is_root:
            return
        for key in list(params) + deleted:
            if key in containers.ROOT_ONLY_KEYS:
                raise PermissionDenied(containers.ROOT_ONLY_KEYS[key])
            if key == "features":
                self._check_feature_privileges(token, ct, params.get(key))
                continue
            token.require(f"/vms/{ct.vmid}", containers.key_privilege(key))

    @staticmethod
    def _check_feature_privileges(token: Token, ct: Container, new_value: str | None) -> None:
        """Non-root users may only toggle ``nesting`` (with VM.Allocate), and only on
        unprivileged containers."""
        if not ct.config.get("unprivileged"):
            raise PermissionDenied("changing feature flags for privileged container is only allowed for root@pam")
        old = schema.parse_property_string(ct.config.get("features", ""), schema.FEATURE_PROPS, "features")
        new = schema.parse_property_string(new_value or "", schema.FEATURE_PROPS, "features")
        changed = {key for key in set(old) | set(new) if old.get(key) != new.get(key)}
        if changed - {"nesting"}:
            raise PermissionDenied("changing feature flags (except nesting) is only allowed for root@pam")
        if changed:
            token.require(f"/vms/{ct.vmid}", "VM.Allocate")

    @staticmethod
    def _check_delete(params: dict, delete: list) -> None:
        for key in delete:
            if key not in containers.CONFIG_SPEC:
                raise ParamError({"delete": f"unknown option '{key}'"})
            if key in params:
                raise ParamError({"delete": f"you can't use '-{key}' and -delete {key}' at the same time"})

    def _apply_config(self, ct: Container, params: dict, delete: list) -> dict:
        """The new config, or ParamError with every problem (PVE writes nothing then)."""
        config = dict(ct.config)
        errors = {}
        for key in delete:
            if key in containers.READ_ONLY_KEYS or key in containers.REQUIRED_KEYS:
                errors[key] = f"unable to delete required option '{key}'"
            config.pop(key, None)
        for key, value in params.items():
            try:
                config[key] = self._config_value(ct, key, value)
            except ValueError as exc:
                errors[key] = str(exc)
        if errors:
            raise ParamError(errors)
        return config

    @staticmethod
    def _config_value(ct: Container, key: str, value):
        if key in containers.READ_ONLY_KEYS:
            raise ValueError(f"unable to modify read-only option: '{key}'")
        if key.startswith("net"):
            return containers.normalize_net(value, key)
        if key == "tags":
            return schema.normalize_tags(value)
        if key == "description":
            return normalize_description(value)
        if key == "rootfs":
            return _updated_rootfs(ct, value)
        return containers.store_value(key, value)

    # ------------------------------------------------------------------ resize

    def resize(self, token: Token, vmid: int, disk: str, size: str, digest: str | None) -> str:
        """PUT /resize: grow only. Checked once before the task and again inside it."""
        relative = size.startswith("+")
        requested = schema.parse_size(size.lstrip("+"))
        with self.lock:
            # PVE runs its key-based check on {disk => ...}: 'disk' is not a config
            # key, so it lands on VM.Config.Options on top of the method's VM.Config.Disk.
            token.require(f"/vms/{vmid}", "VM.Config.Options")
            self._resize_target(token, vmid, disk, relative, requested, digest)

            target = {}

            def prepare(task: Task):
                try:
                    target["size"] = self._resize_target(token, vmid, disk, relative, requested, digest)[1]
                except ApiError as exc:
                    raise TaskError(exc.message) from exc

            def work(task: Task):
                task.log(f"resizing {disk} to {schema.format_size(target['size'])}")
                self.backend.resize(vmid, disk, target["size"])
                return target["size"]

            def on_success(task: Task, new_size: int):
                ct = self._ct(vmid)
                rootfs = containers.parse_rootfs(ct.config[disk])
                rootfs["size"] = schema.format_size(new_size)
                ct.config[disk] = containers.print_rootfs(rootfs)
                self._save_config(ct)

            return self._start_task(token, "resize", vmid, work, on_success, prepare=prepare)

    def _resize_target(self, token, vmid, disk, relative, requested, digest):
        ct = self._ct(vmid)
        self._check_lock(ct)
        if digest and digest != ct.digest:
            raise fail("detected modified configuration - file changed by other user? Try again.")
        if disk not in ct.config:
            raise fail(f"unable to parse mount point '{disk}'")
        volid = containers.parse_rootfs(ct.config[disk])["volume"]
        owner = storage.volume_owner(volid)
        if owner != vmid:
            raise fail(f"can't resize mount point owned by another container ({owner})")
        token.require(f"/storage/{storage.volume_storage(volid)}", "Datastore.AllocateSpace")
        current = containers.rootfs_size(ct.config, disk)
        new_size = current + requested if relative else requested
        if new_size < current:
            raise fail("unable to shrink disk size")
        if new_size == current:
            raise fail("disk is already at specified size")
        return ct, new_size

    # ------------------------------------------------------------------ power

    def power(self, token: Token, vmid: int, action: str, params: dict) -> str:
        """POST /status/<action>. As in PVE, running/stopped is checked before the task;
        the config lock is checked inside it (so a locked CT gives a failed task)."""
        if params.get("skiplock") and not token.is_root:
            raise ParamError({"skiplock": "Only root may use this option."})
        with self.lock:
            ct = self.containers.get(vmid)  # check_running: the CT runs on this node
            running = ct is not None and ct.node == self.here and ct.status == "running"
            self._check_power_precondition(vmid, action, running)
            if action == "start":
                self._check_quorum()
            if action == "stop" and params.get("overrule-shutdown"):
                self._abort_tasks(vmid, "vzshutdown")
            build_task = getattr(self, f"_power_{action}")
            return build_task(token, vmid, params)

    @staticmethod
    def _check_power_precondition(vmid: int, action: str, running: bool) -> None:
        if action in ("start", "resume") and running:
            raise fail(f"CT {vmid} already running")
        if action in ("stop", "shutdown", "suspend") and not running:
            raise fail(f"CT {vmid} not running")
        if action == "reboot" and not running:
            raise fail(f"VM {vmid} not running")  # sic: PVE's LXC reboot says VM

    def _abort_tasks(self, vmid: int, task_type: str) -> None:
        for task in self.tasks.running():
            if task.type == task_type and task.id == str(vmid):
                self.tasks.stop(task.upid)

    def _checked_config(self, vmid: int, skiplock: bool = False, start: bool = False) -> dict:
        """The checks PVE's power workers make after taking the config lock."""
        with self.lock:
            try:
                ct = self._ct(vmid)
            except ApiError as exc:
                raise TaskError(exc.message) from exc
            if start and ct.is_template:
                raise TaskError("you can't start a CT if it's a template")
            if start and ct.status == "running":
                raise TaskError(f"CT {vmid} already running")
            if ct.lock and not skiplock and ct.lock != "mounted":
                raise TaskError(f"CT is locked ({ct.lock})")
            return copy.deepcopy(ct.config)

    def _set_running(self, vmid: int, running: bool, suspended: bool = False) -> None:
        ct = self.containers.get(vmid)
        if ct is None:
            raise TaskError(f"Configuration file 'nodes/{self.here}/lxc/{vmid}.conf' does not exist")
        if running and ct.status != "running":  # a new veth: its counters start at 0
            ct.netin = ct.netout = 0
        ct.status = "running" if running else "stopped"
        ct.started_at = time.time() if running else None
        ct.suspended = suspended
        with self.lock:
            self._sync_firewall()

    def _power_task(self, token, task_type, vmid, act, running_after, suspended=False,
                    skiplock=False, start=False):
        """A power task: PVE's worker checks the config (lock, template) first, then
        acts; the new run state is recorded when the task ends."""
        checked = {}

        def prepare(task: Task):
            checked["config"] = self._checked_config(vmid, skiplock=skiplock, start=start)

        def work(task: Task):
            act(task, checked["config"])

        def on_success(task, _result):
            self._set_running(vmid, running_after, suspended)
        return self._start_task(token, task_type, vmid, work, on_success, prepare=prepare)

    def _power_start(self, token, vmid, params):
        def act(task, config):
            task.log(f"starting CT {vmid}")
            self.backend.start(vmid, config)
        return self._power_task(token, "vzstart", vmid, act, running_after=True,
                                skiplock=bool(params.get("skiplock")), start=True)

    def _power_stop(self, token, vmid, params):
        def act(task, config):
            self.backend.stop(vmid)
        return self._power_task(token, "vzstop", vmid, act, running_after=False,
                                skiplock=bool(params.get("skiplock")))

    def _power_shutdown(self, token, vmid, params):
        timeout = params.get("timeout", 60)

        def act(task, config):
            self.backend.shutdown(vmid, timeout)
        return self._power_task(token, "vzshutdown", vmid, act, running_after=False)

    def _power_reboot(self, token, vmid, params):
        """PVE 8's reboot (pve-container stable-bookworm: API2/LXC/Status.pm ``vm_reboot`` and
        LXC.pm ``vm_reboot``): under the config file lock the worker does nothing if the CT no
        longer runs, else stops it (``vm_stop``: clean shutdown, killed after ``timeout``), reloads
        the config and starts it (``vm_start``). Neither the API call nor the worker checks the
        config lock: only the start's ``lxc-pve-prestart-hook`` does (``check_lock``). So a locked
        CT is stopped, stays stopped, and the task ends ``startup for container 'N' failed``."""
        timeout = params.get("timeout")
        outcome = {"running": True}

        def prepare(task: Task):
            self._checked_config(vmid, skiplock=True)  # the CT exists; no lock check

        def work(task: Task):
            if not self._reboot_current(task, vmid)[0]:
                outcome["running"] = False  # `return if !check_running($vmid)`: the task is OK
                return
            self.backend.shutdown(vmid, 60 if timeout is None else timeout)  # lxc-stop's own default
            with self.lock:
                self._set_running(vmid, False)
            _running, lock, config = self._reboot_current(task, vmid)
            if lock and lock != "mounted":
                self._fail_prestart_hook(task, vmid)
            self.backend.start(vmid, config)

        def on_success(task, _result):
            self._set_running(vmid, outcome["running"])
        return self._start_task(token, "vzreboot", vmid, work, on_success, prepare=prepare)

    def _reboot_current(self, task: Task, vmid: int) -> tuple[bool, str | None, dict]:
        """Running?, lock and config of ``vmid``, read again in the middle of a reboot."""
        with self.lock:
            if task.generation != self.tasks.generation:
                raise TaskError("interrupted by lab reset")
            ct = self.containers.get(vmid)
            if ct is None:
                raise TaskError(f"Configuration file 'nodes/{self.here}/lxc/{vmid}.conf' does not exist")
            return ct.status == "running", ct.lock, copy.deepcopy(ct.config)

    @staticmethod
    def _fail_prestart_hook(task: Task, vmid: int) -> None:
        """A start refused by ``lxc-pve-prestart-hook`` (its ``check_lock`` dies): the hook's own
        message goes only to LXC's debug log; ``vm_start``'s ``monitor_start`` sees the CT abort,
        copies lxc-start's error lines into the task log (``print_ct_stderr_log``) and dies
        ``startup for container 'N' failed``. The line numbers are LXC 5.0's (they vary with the
        LXC version; the status is the hook's exit code)."""
        task.log("run_buffer: 322 Script exited with status 2")
        task.log(f'lxc_init: 844 Failed to run lxc.hook.pre-start for container "{vmid}"')
        task.log(f'__lxc_start: 2027 Failed to initialize container "{vmid}"')
        raise TaskError(f"startup for container '{vmid}' failed")

    def _power_suspend(self, token, vmid, params):
        def act(task, config):
            self.backend.suspend(vmid)
        return self._power_task(token, "vzsuspend", vmid, act, running_after=False,
                                suspended=True)

    def _power_resume(self, token, vmid, params):
        def act(task, config):
            with self.lock:
                if not self.containers[vmid].suspended:
                    raise TaskError(f"command 'lxc-checkpoint -n {vmid} -r --foreground -D "
                                    f"/var/lib/vz/dump' failed: exit code 1")
            self.backend.resume(vmid, config)
        return self._power_task(token, "vzresume", vmid, act, running_after=True)

    # ------------------------------------------------------------------ destroy

    def destroy(self, token: Token, vmid: int, params: dict) -> str:
        """DELETE /lxc/{vmid}: protection, lock, then running are checked up front and
        again in the task; the config carries ``lock: destroyed`` while disks go."""
        force = bool(params.get("force"))
        with self.lock:
            self._destroy_checks(self._ct(vmid), force)

            was_running = {}

            def prepare(task: Task):
                try:
                    ct = self._ct(vmid)
                    self._destroy_checks(ct, force)
                except ApiError as exc:
                    raise TaskError(exc.message) from exc
                self._check_base_unused(ct)
                ct.config["lock"] = "destroyed"  # stays if destroying fails, as in PVE
                was_running["value"] = ct.status == "running"

            def work(task: Task):
                if was_running["value"]:
                    task.warn(f"forced to stop CT {vmid} before destroying!")
                    self.backend.stop(vmid)
                self.backend.destroy(vmid)

            def on_success(task: Task, _result):
                self._forget(vmid, purge=bool(params.get("purge")))

            return self._start_task(token, "vzdestroy", vmid, work, on_success, prepare=prepare)

    def _destroy_checks(self, ct: Container, force: bool) -> None:
        if ct.config.get("protection"):
            raise fail(f"can't remove CT {ct.vmid} - protection mode enabled")
        self._check_lock(ct)
        if ct.status == "running" and not force:
            raise fail(f"unable to destroy CT {ct.vmid} - container is running")

    def _check_base_unused(self, ct: Container) -> None:
        if not ct.is_template:
            return
        base = containers.parse_rootfs(ct.config["rootfs"])["volume"].split(":", 1)[1]
        for other in self.containers.values():
            if other is not ct and f":{base}/" in other.config.get("rootfs", ""):
                raise TaskError(f"base volume '{base}' is still in use by linked cloned")

    def _forget(self, vmid: int, purge: bool) -> None:
        ct = self.containers.pop(vmid, None)
        if ct is not None and ct.pool in self.pools:
            self.pools[ct.pool]["members"].discard(vmid)
        if purge:
            self.backup_jobs.remove_vmid(vmid)
        with self.lock:
            self._sync_firewall()

    # ------------------------------------------------------------------ template

    def make_template(self, token: Token, vmid: int) -> str:
        with self.lock:
            ct = self._ct(vmid)
            self._check_lock(ct)
            if ct.is_template:
                raise fail("you can't convert a template to a template")
            if ct.status == "running":
                raise fail("you can't convert a CT to template if the CT is running")

            def work(task: Task):
                with self.lock:
                    config = _template_config(vmid, self._ct(vmid).config)
                self.backend.make_template(vmid, copy.deepcopy(config))

            def on_success(task: Task, _result):
                ct.config = _template_config(vmid, ct.config)
                self._save_config(ct)

            return self._start_task(token, "vztemplate", vmid, work, on_success)

    # ------------------------------------------------------------------ firewall

    def firewall_read(self, vmid: int, read):
        with self.lock:
            return read(self._ct(vmid).firewall)

    def firewall_write(self, vmid: int, write) -> None:
        with self.lock:
            ct_firewall = self._ct(vmid).firewall
            write(ct_firewall)
            ct_firewall.reload()
            self._sync_firewall()

    def cluster_firewall_read(self) -> dict:
        with self.lock:
            return self.cluster_firewall.options_view()

    def cluster_firewall_write(self, params: dict, delete: list, digest: str | None) -> None:
        with self.lock:
            self.cluster_firewall.set_options(params, delete, digest, int(time.time()))
            self._sync_firewall()

    def _sync_firewall(self) -> None:
        """Hand every CT's firewall to the backend, which enforces it (the LXC one) or not (memory).

        Called whenever what PVE's firewall daemon would compile changes: the datacenter options, a
        CT's firewall, its config (net0's ``firewall=1``, MAC, address), its run state (a started CT
        has a new veth) and its removal. Errors are logged: the API change stands, as in PVE, whose
        pve-firewall applies the rules apart from the API call.
        """
        guests = [{"vmid": ct.vmid, "config": copy.deepcopy(ct.config), "running": ct.status == "running",
                   "options": dict(ct.firewall.options), "rules": copy.deepcopy(ct.firewall.rules),
                   "ipsets": copy.deepcopy(ct.firewall.ipsets)}
                  for ct in self.containers.values() if not ct.is_template]
        try:
            self.backend.apply_firewall(guests, self.cluster_firewall.enabled)
        except Exception:  # noqa: BLE001 - enforcement is the backend's business
            LOG.exception("backend could not apply the firewall")

    # ------------------------------------------------------------------ storage

    def _used(self, item: storage.Storage, node: str | None = None) -> int:
        return storage.used_bytes(item, self._content(item, node))

    def _content(self, item: storage.Storage, node: str | None = None) -> list:
        """A storage's volumes as ``node`` sees them: a local one holds that node's CTs' volumes."""
        node = node or self.here
        guests = [ct for ct in self.containers.values() if item.shared or ct.node == node]
        if item.path is None:
            return storage.rootdir_content(item, guests)
        entries = storage.dir_content(item)
        if item.supports("rootdir"):
            entries += storage.rootdir_content(item, guests)
        return entries

    def _configured_storages(self) -> dict:
        """storage.cfg: every storage once (the local ones as the first node has them)."""
        result = {}
        for items in self.storage_sets.values():
            for storage_id, item in items.items():
                result.setdefault(storage_id, item)
        return result

    def storage_list(self, token: Token) -> list:
        with self.lock:
            return [item.config_view() for item in self._configured_storages().values()
                    if _can_see_storage(token, item.storage)]

    def storage_config(self, token: Token, storage_id: str) -> dict:
        with self.lock:
            item = self._configured_storages().get(storage_id)
            if item is None:
                raise fail(f"storage '{storage_id}' does not exist")
            return item.config_view()

    def _storage_info(self, content: str | None) -> dict:
        """pve-storage's ``storage_info`` on this node: every configured storage, one not enabled
        here with ``enabled: 0`` and no figures; with ``content``, only enabled ones holding it."""
        here = self.storages
        info = {}
        for storage_id, item in self._configured_storages().items():
            local = here.get(storage_id)
            if content and (local is None or not item.supports(content)):
                continue
            if local is None:
                info[storage_id] = {"storage": storage_id, "type": item.type,
                                    "content": ",".join(sorted(item.content)), "active": 0, "enabled": 0,
                                    "shared": int(item.shared), "total": 0, "used": 0, "avail": 0}
            else:
                info[storage_id] = local.status_view(self._used(local))
        return info

    def node_storages(self, token: Token, content: str | None, storage_id: str | None,
                      target: str | None = None) -> list:
        """GET /nodes/{node}/storage (pve-storage API2/Storage/Status.pm ``index``); ``target``:
        only shared storages enabled here and there (what a clone to that node may use)."""
        with self.lock:
            info = self._storage_info(content)
            if storage_id and storage_id not in info:
                raise ParamError({"storage": "No such storage."})
            if target in (self.here, "localhost"):
                target = None
            result = []
            for item_id, view in info.items():
                if not _can_see_storage(token, item_id) or (storage_id and item_id != storage_id):
                    continue
                if target and not (view["shared"] and view["enabled"]
                                   and item_id in self.storage_sets.get(target, {})):
                    continue
                result.append(view)
            return result

    def storage_status(self, storage_id: str) -> dict:
        with self.lock:
            view = self._storage_info(None).get(storage_id)
            if view is None:
                raise ParamError({"storage": "No such storage."})
            return view

    def storage_content(self, token: Token, storage_id: str, content: str | None,
                        vmid: int | None) -> list:
        with self.lock:
            item = self._storage(storage_id)
            entries = self._content(item)
        return [entry for entry in entries
                if (content is None or entry["content"] == content)
                and (vmid is None or entry.get("vmid") == vmid)
                and (entry.get("vmid") is None
                     or token.has_any(f"/vms/{entry['vmid']}", ["VM.Audit", "VM.Backup"]))]

    def delete_volume(self, token: Token, storage_id: str, volume: str) -> str:
        """DELETE storage content: only backup archives can be removed here."""
        with self.lock:
            item = self._storage(storage_id)
            volid = volume if ":" in volume else f"{storage_id}:{volume}"
            owner = backups.archive_owner(volid)
            if not token.has(f"/storage/{storage_id}", "Datastore.Allocate"):
                token.require(f"/storage/{storage_id}", "Datastore.AllocateSpace")
                if owner is not None:
                    token.require(f"/vms/{owner}", "VM.Backup")

            def work(task: Task):
                with self.lock:
                    try:
                        storage.delete_archive(item, volid)
                    except ApiError as exc:
                        raise TaskError(exc.message) from exc
                task.log(f"Removed volume '{volid}'")

            return self._start_task(token, "imgdel", volid, work)

    # ------------------------------------------------------------------ vzdump

    def vzdump(self, token: Token, params: dict) -> str:
        """POST /nodes/{node}/vzdump: one task backing up the selected CTs in turn."""
        self._check_vzdump_params(token, params)
        vmids = self._vzdump_selection(params)
        if not vmids and not params.get("all"):
            return "OK"  # API2/VZDump.pm: "silent exit if specified VMs run on other nodes"
        storage_id = params.get("storage")
        if not params.get("dumpdir"):
            storage_id = storage_id or "local"
        for vmid in vmids:
            token.require(f"/vms/{vmid}", "VM.Backup")
        if storage_id:
            token.require(f"/storage/{storage_id}", "Datastore.AllocateSpace")
        with self.lock:
            target = self._backup_target(storage_id, params.get("dumpdir"))

            def work(task: Task):
                failed = [vmid for vmid in vmids if not self._backup_one(task, vmid, target, params)]
                if failed:
                    raise TaskError("job errors")

            task_id = vmids[0] if len(vmids) == 1 else ""
            # The duration is spent per guest, under its 'backup' lock (see _backup_one).
            return self._start_task(token, "vzdump", task_id, work, duration=0)

    def _check_vzdump_params(self, token: Token, params: dict) -> None:
        if not token.is_root:
            errors = {key: "Only root may set this option." for key in ("dumpdir", "tmpdir", "script")
                      if key in params}
            if errors:
                raise ParamError(errors)
        if params.get("storage") and params.get("dumpdir"):
            raise ParamError({"storage": "option conflicts with option 'dumpdir'"})
        if params.get("all") and params.get("vmid"):
            raise ParamError({"all": "option conflicts with option 'vmid'"})
        if not params.get("all") and not params.get("vmid") and not params.get("pool"):
            raise ParamError({"vmid": "property is missing"})

    def _vzdump_selection(self, params: dict) -> list[int]:
        """The guests this node backs up (PVE's get_included_guests, then its local share:
        guests of other nodes are skipped, unknown vmids stay and fail in the task)."""
        with self.lock:
            if params.get("vmid"):
                chosen = {int(item) for item in schema.split_list(params["vmid"])}
            elif params.get("pool"):
                chosen = set(self.pools.get(params["pool"], {}).get("members", set()))
            else:
                excluded = {int(v) for v in schema.split_list(params.get("exclude", ""))}
                chosen = {vmid for vmid in self.containers if vmid not in excluded}
            return sorted(vmid for vmid in chosen
                          if vmid not in self.containers or self.containers[vmid].node == self.here)

    def _backup_target(self, storage_id: str | None, dumpdir: str | None) -> dict:
        if dumpdir:
            return {"dir": Path(dumpdir), "prune": None}
        item = self._storage(storage_id)
        if not item.supports("backup"):
            raise fail(f"storage '{storage_id}' does not support backups")
        return {"dir": item.dump_dir, "prune": item.prune_backups}

    def _backup_one(self, task: Task, vmid: int, target: dict, params: dict) -> bool:
        """Back up one CT under ``lock: backup``; log and report failure like vzdump."""
        mode = params.get("mode", "snapshot")
        with self.lock:
            ct = self.containers.get(vmid)
            if ct is None or ct.lock:
                reason = f"unable to find VM {vmid}" if ct is None else f"CT is locked ({ct.lock})"
                task.log(f"ERROR: Backup of VM {vmid} failed - {reason}")
                return False
            ct.config["lock"] = "backup"
            config = copy.deepcopy(ct.config)
            config.pop("lock")
            name = ct.name
        compress = str(params.get("compress", "0"))
        archive = target["dir"] / backups.archive_name(vmid, compress)
        task.log(f"INFO: Starting Backup of VM {vmid} (lxc)")
        task.log(f"INFO: Backup mode: {mode}")
        task.log(f"INFO: creating vzdump archive '{archive}'")
        try:
            task.pause(self.config.task_duration("vzdump"))
            self.backend.vzdump(vmid, config, archive, compress)
        except (BackendError, OSError, TaskError) as exc:
            task.log(f"ERROR: Backup of VM {vmid} failed - {exc}")
            return False
        finally:
            with self.lock:
                self._unlock(vmid, "backup")
        self._finish_archive(task, vmid, name, archive, target, params)
        return True

    def _finish_archive(self, task: Task, vmid: int, name: str, archive: Path, target: dict,
                        params: dict) -> None:
        backups.log_path(archive).write_text("\n".join(task.lines) + "\n")
        if params.get("notes-template"):
            notes = backups.render_notes(params["notes-template"], vmid, name, self.here,
                                         self.config.cluster_name)
            backups.notes_path(archive).write_text(notes)
        if params.get("protected"):
            backups.protected_path(archive).write_text("")
        task.log(f"INFO: Finished Backup of VM {vmid}")
        if params.get("remove", 1):
            prune_text = params.get("prune-backups") or target["prune"]
            for removed in backups.prune(target["dir"], vmid, backups.parse_prune(prune_text)):
                task.log(f"INFO: removing backup '{removed.name}'")

    # ------------------------------------------------------------------ lab control

    def lab_state(self) -> dict:
        with self.lock:
            result = {}
            for vmid, ct in sorted(self.containers.items()):
                interfaces = self.backend.interfaces(vmid, ct.config) if ct.status == "running" else None
                self._count_traffic(ct)
                result[str(vmid)] = {
                    "node": ct.node, "netin": ct.netin, "netout": ct.netout,
                    "config": dict(ct.config), "status": ct.status, "lock": ct.lock,
                    "suspended": ct.suspended, "pool": ct.pool, "ip": _first_ipv4(interfaces),
                    "interfaces": interfaces,
                    "firewall": {"options": ct.firewall.options, "rules": ct.firewall.rules,
                                 "ipsets": ct.firewall.ipsets},
                }
            return {"node": self.node, "nodes": self.lab_nodes(), "quorate": self.quorate,
                    "containers": result,
                    "tasks": [task.state_view() for task in self.tasks.tasks.values()],
                    "backup_jobs": self.backup_jobs.list(),
                    "pools": {name: sorted(pool["members"]) for name, pool in self.pools.items()}}

    def lab_set_container(self, vmid: int, changes: dict) -> dict:
        """Mutate a CT behind the API's back (drift): config keys, ``null`` deletes;
        ``status`` (running|stopped) changes the run state as if done out of band."""
        with self.lock:
            ct = self._ct(vmid)
            changes = dict(changes)
            counters = {key: changes.pop(key) for key in ("netin", "netout") if key in changes}
            if counters:
                self._set_counters(ct, counters, add=False)
            status = changes.pop("status", None)
            if status is not None:
                if status not in ("running", "stopped"):
                    raise ValueError("status must be running or stopped")
                if status == "running":
                    self.backend.start(vmid, ct.config)
                else:
                    self.backend.stop(vmid)
                self._set_running(vmid, status == "running")
            for key, value in changes.items():
                if value is None:
                    ct.config.pop(key, None)
                else:
                    ct.config[key] = value
            return ct.config_view()

    def _set_counters(self, ct: Container, counters: dict, add: bool) -> None:
        """Set (or add to) a CT's traffic counters, as a test drives the memory backend's "traffic"."""
        if not self.backend.counts_in_simulator:
            raise ValueError(f"the {self.backend.name} backend counts real traffic; send some instead")
        if ct.status != "running":
            raise ValueError(f"CT {ct.vmid} is not running (a stopped CT has no veth to count on)")
        for key, value in counters.items():
            if key not in ("netin", "netout") or isinstance(value, bool) or not isinstance(value, int) \
                    or value < 0 or value >= 2 ** 64:
                raise ValueError(f"{key}: a byte count 0 .. 2^64-1 is expected, not {value!r}")
        for key, value in counters.items():
            setattr(ct, key, (getattr(ct, key) + value) % 2 ** 64 if add else value)

    def lab_add_traffic(self, vmid: int, counters: dict) -> dict:
        """Add bytes to a running CT's counters: ``netin`` received by it, ``netout`` sent."""
        with self.lock:
            ct = self._ct(vmid)
            if not counters or set(counters) - {"netin", "netout"}:
                raise ValueError("give netin and/or netout (bytes to add)")
            self._set_counters(ct, counters, add=True)
            return {"netin": ct.netin, "netout": ct.netout}

    def lab_nodes(self) -> dict:
        with self.lock:
            return {name: {"status": "online" if node.online else "offline",
                           "offline_since": node.offline_since,
                           "reason": None if node.online else node.reason,
                           "maxcpu": node.maxcpu, "maxmem": node.maxmem, "maxdisk": node.maxdisk,
                           "containers": sorted(vmid for vmid, ct in self.containers.items()
                                                if ct.node == name)}
                    for name, node in self.nodes.items()}

    def lab_set_node(self, name: str, change: dict) -> dict:
        """Take a node offline (``{"status": "offline", "reason": ..., "offline_for": seconds}``)
        or back online. ``offline_for`` dates the failure back, so that its RRD data has expired
        (after 300 s) without a test waiting for it. The first node serves the API: it stays up."""
        if name not in self.nodes:
            raise ValueError(f"no node {name!r}")
        if set(change) - {"status", "reason", "offline_for"}:
            raise ValueError("keys: status, reason, offline_for")
        status = change.get("status")
        with self.lock:
            node = self.nodes[name]
            if status == "online":
                node.offline_since, node.reason = None, PROXY_REASONS[0]
            elif status == "offline":
                if name == self.node:
                    raise ValueError(f"{name} serves the API; take another node offline")
                reason = change.get("reason", PROXY_REASONS[0])
                if reason not in PROXY_REASONS:
                    raise ValueError(f"reason: one of {', '.join(PROXY_REASONS)}")
                offline_for = float(change.get("offline_for", 0))
                if offline_for < 0:
                    raise ValueError("offline_for: seconds >= 0")
                node.offline_since, node.reason = time.time() - offline_for, reason
            else:
                raise ValueError("status: online or offline")
        return self.lab_nodes()[name]

    def lab_set_quorum(self, quorate: bool) -> dict:
        """Lose quorum whatever the nodes say (``False``), or have it again as they say (``True``)."""
        with self.lock:
            self.quorum_lost = not quorate
            return {"quorate": self.quorate}

    def lab_add_address(self, vmid: int, name: str, address: str) -> list | None:
        """``ip addr add <address> dev <name>`` inside the running CT; its interfaces after."""
        with self.lock:
            ct = self._ct(vmid)
            if ct.status != "running":
                raise ValueError(f"CT {vmid} is not running")
            config = dict(ct.config)
        try:
            self.backend.add_address(vmid, name, address)
        except BackendError as exc:
            raise ValueError(str(exc)) from exc
        return self.backend.interfaces(vmid, config)


_BOOT = time.time() - 3600


def _template_config(vmid: int, config: dict) -> dict:
    """The config of a CT converted to a template: base volume, ``template: 1``."""
    config = dict(config)
    rootfs = containers.parse_rootfs(config["rootfs"])
    rootfs["volume"] = rootfs["volume"].replace(f"vm-{vmid}-", f"base-{vmid}-")
    config["rootfs"] = containers.print_rootfs(rootfs)
    config["template"] = 1
    return config


def _can_see_storage(token: Token, storage_id: str) -> bool:
    return token.has_any(f"/storage/{storage_id}", ["Datastore.Audit", "Datastore.AllocateSpace"])


def _first_ipv4(interfaces: list | None) -> str | None:
    """The first IPv4 address in the kernel's order (not ``inet``: that is the last one)."""
    for interface in interfaces or []:
        if interface.get("name") == "lo":
            continue
        for address in interface.get("ip-addresses", []):
            if address["ip-address-type"] == "inet":
                return address["ip-address"]
    return None


def normalize_description(text: str) -> str:
    """PVE keeps the description as comment lines, so it comes back newline-terminated."""
    lines = str(text).splitlines()
    return "".join(f"{line}\n" for line in lines) if lines else ""


def _updated_rootfs(ct: Container, value: str) -> str:
    """Mount options of rootfs may change through /config; volume and size may not."""
    new = containers.parse_rootfs(value)
    old = containers.parse_rootfs(ct.config["rootfs"])
    if new["volume"] != old["volume"]:
        raise ValueError("changing the rootfs volume is not supported, use move_volume")
    new["size"] = old.get("size", new.get("size"))
    return containers.print_rootfs({k: v for k, v in new.items() if v is not None})


def _trunk_tags(trunks: str | None) -> set:
    """VLAN ids of ``trunks`` (``10;20-22``), as pve-guest-common's get_tags_from_trunk reads them."""
    tags = set()
    for trunk in filter(None, (trunks or "").split(";")):
        first, _sep, last = trunk.partition("-")
        if last and int(last) > int(first):
            tags.update(range(int(first), int(last) + 1))
        else:
            tags.add(int(first))
    return tags
