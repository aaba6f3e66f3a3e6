"""Simulator configuration: a JSON file written by the lab launcher.

Every key is optional; ``DEFAULTS`` documents them. ``task_durations`` and
``dhcp_delay`` can also be changed at run time through ``POST /_lab/config``.
"""

import copy
import json
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# The seed's CloudPodsProv role (cloud-pods-setup.md, step 1).
CLOUDPODS_PROV_PRIVILEGES = [
    "VM.Audit", "VM.Allocate", "VM.Clone", "VM.Config.CPU", "VM.Config.Disk",
    "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.PowerMgmt",
    "Datastore.AllocateSpace", "Datastore.Audit", "Sys.Audit",
]


def bridge_acl(bridge: str) -> dict:
    """The ACL PVE 8 wants beyond that role: SDN.Use on the bridge in zone ``localnetwork``.

    pve-container PVE/LXC.pm ``check_bridge_access`` (clone, create, net changes) calls
    pve-guest-common PVE/GuestHelpers.pm ``check_vnet_access``; see README.md, "Proxmox VE:
    the API user, role and token".
    """
    return {f"/sdn/zones/localnetwork/{bridge}": ["SDN.Use"]}


GIB = 1024 ** 3
NODE_DEFAULTS = {"maxcpu": 16, "maxmem": 64 * GIB, "maxdisk": 100 * GIB}
_NODE_NAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?")


def node_specs(values: dict) -> list[dict]:
    """The ``nodes`` setting, checked and completed: unique valid names, positive sizes.

    The first node is ``node`` unless ``nodes`` names them all (then ``node`` becomes the first
    name, so the two settings cannot disagree about which node the API is reached through).
    """
    given = values.get("nodes") or [{"name": values["node"]}]
    specs, seen = [], set()
    for item in given:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError("each entry of 'nodes' is an object with a 'name'")
        unknown = set(item) - {"name", *NODE_DEFAULTS}
        if unknown:
            raise ValueError(f"unknown node keys: {', '.join(sorted(unknown))}")
        if not _NODE_NAME_RE.fullmatch(item["name"]) or item["name"] in seen or item["name"] == "localhost":
            raise ValueError(f"bad or duplicate node name {item['name']!r}")
        seen.add(item["name"])
        spec = dict(NODE_DEFAULTS, **item)
        for key in NODE_DEFAULTS:
            if not isinstance(spec[key], int) or spec[key] <= 0:
                raise ValueError(f"node {item['name']}: '{key}' must be a positive integer")
        specs.append(spec)
    values["node"] = specs[0]["name"]
    return specs


def numbered_nodes(first: str, count: int) -> list[dict]:
    """``count`` nodes named as the lab names them: ``first``, then ``pve2``, ``pve3``, ..."""
    return [{"name": first if index == 1 else f"pve{index}"} for index in range(1, count + 1)]


TASK_TYPES = [
    "vzclone", "vzstart", "vzstop", "vzshutdown", "vzreboot", "vzdestroy", "vzdump",
    "vzsuspend", "vzresume", "resize", "vzcreate", "vztemplate", "vzrestore",
]

DEFAULTS = {
    "listen_host": "127.0.0.1",
    "listen_port": 8006,
    "tls_cert": None,            # PEM server certificate (chain); required to serve HTTPS
    "tls_key": None,             # PEM private key
    "tls_ca": None,              # the CA shown as pve-root-ca.pem; None: ca.pem beside tls_cert
    "node": "pve",
    # The cluster's nodes: [{"name", "maxcpu", "maxmem", "maxdisk"}] (NODE_DEFAULTS fill in the rest).
    # None: one node named by "node". The first node is the one the API is reached through (its
    # "localhost"); every node has its own 'local' and 'local-lvm' (PVE's storage.cfg lists them once,
    # enabled everywhere, but their contents are per node).
    "nodes": None,
    # Shared storages, enabled on every node (or on "nodes" only):
    # [{"storage": "shared-nfs", "type": "nfs", "content": "rootdir,images,backup", "total": bytes,
    #   "nodes": ["pve", "pve2"]}]. Volumes and backups are files under <storage_root>/shared/<id>.
    "shared_storages": [],
    "cluster_name": "cloudpods-lab",
    "pve_version": "8.2.4",
    "template_vmid": 9000,
    "template_hostname": "cloudpod-template",
    "bridge": "vmbr0",
    "control_key": None,         # X-Lab-Key for /_lab; None disables the control API
    "storage_root": None,        # directory for dir-type storages (backups); temp dir if None
    # Where the OS templates (content vztmpl) of the 'local' storage are: files named like
    # ubuntu-22.04-standard_22.04-1_amd64.tar.zst. None: <storage_root>/local/template/cache,
    # PVE's layout, where the simulator puts a small stand-in Ubuntu template.
    "vztmpl_dir": None,
    # Whether a fresh (or reset) simulator has the Cloud Pods template CT template_vmid.
    # It is not seeded either when the backend already has a CT with that vmid.
    "seed_template": True,
    "tokens": [],                # [{"token_id", "secret", "privs": [...], "acl": {path: [...]}}]
    "pools": [],                 # [{"poolid": "...", "comment": "..."}]
    "task_durations": {},        # per task type, seconds
    "default_task_duration": 0.2,
    # Real task durations vary: each task's duration is drawn uniformly from
    # duration * (1 - jitter) .. duration * (1 + jitter). 0 keeps them exact.
    "task_jitter": 0.0,
    "dhcp_delay": 1.0,           # seconds after start until eth0 has its IPv4 lease
    "auth_failure_delay": 0.0,   # real PVE waits 3 s before answering a failed login
    "log_file": None,
    "backend": "memory",         # "memory" (pretend) or "lxc" (real containers, root only)
    # The lxc backend: {"lxc_path": dir of the CTs, "bridge": host bridge, "leases_file": dnsmasq leases}
    "lxc": {},
    # The datacenter firewall's options (/cluster/firewall/options, PVE's cluster.fw) after a start or
    # a reset. A fresh PVE has none: the firewall is off and no guest firewall is enforced. The lab
    # (lab.py) turns it on, as a site using per-pod firewalls must.
    "cluster_firewall": {},
}


@dataclass
class SimConfig:
    """The loaded configuration; ``values`` holds DEFAULTS overlaid by the file."""

    values: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS))

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    @classmethod
    def from_dict(cls, data: dict) -> "SimConfig":
        unknown = set(data) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        values = copy.deepcopy(DEFAULTS)
        values.update(copy.deepcopy(data))
        values["nodes"] = node_specs(values)
        if values["storage_root"] is None:
            values["storage_root"] = tempfile.mkdtemp(prefix="pvesim-storage-")
        return cls(values)

    @classmethod
    def load(cls, path: str | Path) -> "SimConfig":
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def task_duration(self, task_type: str) -> float:
        """The configured duration of this task type (exact, without jitter)."""
        return float(self.values["task_durations"].get(task_type, self.default_task_duration))

    def draw_task_duration(self, task_type: str) -> float:
        """The duration one task of this type takes, jitter applied."""
        jitter = float(self.values["task_jitter"])
        return self.task_duration(task_type) * random.uniform(1.0 - jitter, 1.0 + jitter)
