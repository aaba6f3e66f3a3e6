"""Storages: ``local`` (a directory: backups, templates) and ``local-lvm`` (LVM-thin:
container volumes), as on a fresh PVE install, on each node; and shared storages (an NFS
export every node mounts), configured with ``shared_storages``.

Directory storages are real directories under ``storage_root``, so backup archives are
real files a test (or an operator) can look at; LVM-thin volumes exist only as the
``rootfs`` entries of container configs.

OS templates (content ``vztmpl``) of ``local`` are the files in its template directory:
``<storage_root>/local/template/cache`` as on PVE, or the directory named by the config
key ``vztmpl_dir``. Only in the default directory does the simulator put a stand-in
template of its own (a tiny but valid ``.tar.zst``), so a fresh lab can create CTs.
"""

import io
import os
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import backups
from .errors import fail

GIB = 1024 ** 3
VZTMPL = "ubuntu-22.04-standard_22.04-1_amd64.tar.zst"
# PVE's VZTMPL_EXT_RE_1: the archive formats an OS template may have.
VZTMPL_RE = re.compile(r"([^/]+\.tar\.(gz|xz|zst|bz2))")
_DIR_VOLNAME_RES = (
    ("vztmpl", re.compile(r"vztmpl/([^/]+\.tar\.(?:gz|xz|zst|bz2))")),
    ("iso", re.compile(r"iso/([^/]+\.(?:iso|img))", re.IGNORECASE)),
    ("backup", re.compile(r"backup/([^/]+\.(?:tgz|tar|tar\.(?:gz|lzo|zst)|vma(?:\.(?:gz|lzo|zst))?))")),
    ("images", re.compile(r"(\d+)/([^/]+\.(?:raw|qcow2|vmdk|subvol))")),
)
_LVM_VOLNAME_RE = re.compile(r"(?:(base-\d+-disk-\d+)/)?((vm|base)-(\d+)-disk-\d+)")


@dataclass
class Storage:
    storage: str
    type: str
    content: tuple
    total: int
    path: Path | None = None
    prune_backups: str | None = None
    extra: dict | None = None
    template_dir: Path | None = None  # where vztmpl files live (dir storages only)
    shared: bool = False
    nodes: tuple | None = None  # the nodes it is enabled on (storage.cfg ``nodes``); None: all

    def enabled_on(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes

    def supports(self, content: str) -> bool:
        return content in self.content

    @property
    def dump_dir(self) -> Path:
        return self.path / "dump"

    def config_view(self) -> dict:
        view = {"storage": self.storage, "type": self.type,
                "content": ",".join(sorted(self.content)), "digest": "0" * 40}
        if self.path is not None:
            view["path"] = str(self.path)
        if self.prune_backups:
            view["prune-backups"] = self.prune_backups
        if self.shared:
            view["shared"] = 1
        if self.nodes is not None:
            view["nodes"] = ",".join(self.nodes)
        view.update(self.extra or {})
        return view

    def status_view(self, used: int) -> dict:
        return {"storage": self.storage, "type": self.type,
                "content": ",".join(sorted(self.content)), "active": 1, "enabled": 1,
                "shared": int(self.shared), "total": self.total, "used": used,
                "avail": max(0, self.total - used),
                "used_fraction": round(used / self.total, 6) if self.total else 0}


def default_storages(root: Path, vztmpl_dir: str | Path | None = None) -> dict:
    """``local`` (dir: backups, ISOs, OS templates) and ``local-lvm`` (LVM-thin: CT volumes).

    ``vztmpl_dir`` replaces ``local``'s ``template/cache`` as the place of its OS templates.
    """
    local = Storage("local", "dir", ("backup", "iso", "vztmpl"), 100 * GIB,
                    path=root / "local", prune_backups="keep-all=1")
    local.template_dir = Path(vztmpl_dir) if vztmpl_dir else local.path / "template" / "cache"
    # 2 TiB: the thin pool of a hosting node (placement weighs the pods' disks against it; a 200 GiB pool
    # could not take the Business plan's 100 GiB next to the lab's other pods).
    local_lvm = Storage("local-lvm", "lvmthin", ("images", "rootdir"), 2048 * GIB,
                        extra={"vgname": "pve", "thinpool": "data"})
    _prepare_dir_storage(local, seed_template=not vztmpl_dir)
    return {storage.storage: storage for storage in (local, local_lvm)}


SHARED_TYPES = ("nfs", "cifs", "cephfs")
SHARED_CONTENT = ("backup", "images", "iso", "rootdir", "vztmpl")


def shared_storage(spec: dict, root: Path, node_names: list) -> Storage:
    """A shared file storage from a ``shared_storages`` entry: its files under ``root/shared/<id>``."""
    unknown = set(spec) - {"storage", "type", "content", "total", "nodes"}
    if unknown:
        raise ValueError(f"unknown shared storage keys: {', '.join(sorted(unknown))}")
    storage_id = spec.get("storage")
    if not isinstance(storage_id, str) or not re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", storage_id) \
            or storage_id in ("local", "local-lvm"):
        raise ValueError(f"bad shared storage id {storage_id!r}")
    kind = spec.get("type", "nfs")
    content = tuple(sorted(set(str(spec.get("content", "rootdir,images,backup")).split(","))))
    if kind not in SHARED_TYPES or not set(content) <= set(SHARED_CONTENT):
        raise ValueError(f"shared storage {storage_id}: type one of {SHARED_TYPES}, content of {SHARED_CONTENT}")
    nodes = spec.get("nodes")
    if nodes is not None and (not isinstance(nodes, list) or not set(nodes) <= set(node_names)):
        raise ValueError(f"shared storage {storage_id}: 'nodes' must list configured nodes")
    total = spec.get("total", 500 * GIB)
    if not isinstance(total, int) or total <= 0:
        raise ValueError(f"shared storage {storage_id}: 'total' must be a positive integer")
    item = Storage(storage_id, kind, content, total, path=root / "shared" / storage_id,
                   prune_backups="keep-all=1", shared=True,
                   nodes=tuple(nodes) if nodes is not None else None)
    item.template_dir = item.path / "template" / "cache"
    _prepare_dir_storage(item, seed_template=False)
    return item


def _prepare_dir_storage(storage: Storage, seed_template: bool) -> None:
    for sub in ("dump", "template/cache", "template/iso", "images", "private"):
        (storage.path / sub).mkdir(parents=True, exist_ok=True)
    if not seed_template:
        return
    template = storage.template_dir / VZTMPL
    if not template.exists() or template.stat().st_size == 0:
        template.write_bytes(_standin_template())


def _standin_template() -> bytes:
    """A minimal Ubuntu 22.04 root filesystem tree as a (raw-block) ``.tar.zst``."""
    from .backend import zstd_store
    os_release = (b'PRETTY_NAME="Ubuntu 22.04.4 LTS (pvesim stand-in)"\nNAME="Ubuntu"\n'
                  b'VERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n')
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("./etc", "./root", "./tmp", "./var"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "./tmp" else 0o755
            info.mtime = int(time.time())
            tar.addfile(info)
        for name, data in (("./etc/os-release", os_release), ("./etc/hostname", b"localhost\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return zstd_store(buffer.getvalue())


def parse_volname(storage: Storage, volname: str) -> tuple[str, str, int | None]:
    """``(content type, name, owner vmid)`` of a volume name, or PVE's parse error."""
    if storage.path is not None:
        for vtype, pattern in _DIR_VOLNAME_RES:
            match = pattern.fullmatch(volname)
            if match is None:
                continue
            owner = None
            if vtype == "backup":
                owner = backups.archive_owner(volname)
            elif vtype == "images":
                owner = int(match.group(1))
            return vtype, match.group(match.lastindex), owner
        raise fail(f"unable to parse directory volume name '{volname}'")
    match = _LVM_VOLNAME_RE.fullmatch(volname)
    if match is None:
        raise fail(f"unable to parse lvm volume name '{volname}'")
    return "images", match.group(2), int(match.group(4))


def template_path(storage: Storage, volname: str) -> Path:
    """Where the file of a ``vztmpl/<file>`` volume is (it need not exist)."""
    return storage.template_dir / volname.split("/", 1)[1]


def template_content(storage: Storage) -> list:
    """The OS templates of a dir storage, as ``GET .../content`` lists them."""
    entries = []
    directory = storage.template_dir
    if directory is None or not directory.is_dir():
        return entries
    for path in sorted(directory.iterdir()):
        match = VZTMPL_RE.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        stat = path.stat()
        entries.append({"volid": f"{storage.storage}:vztmpl/{path.name}", "content": "vztmpl",
                        "format": "t" + match.group(2), "size": stat.st_size,
                        "ctime": int(stat.st_mtime)})
    return entries


def volume_storage(volid: str) -> str:
    return volid.split(":", 1)[0]


def volume_owner(volid: str) -> int | None:
    """The VMID owning a volume, from its name (``vm-101-disk-0`` or linked ``base-X/vm-101``)."""
    name = volid.split(":", 1)[-1].split("/")[-1]
    match = re.match(r"(?:vm|base|subvol|basevol)-(\d+)-", name)
    return int(match.group(1)) if match else None


def is_base_volume(volid: str) -> bool:
    return bool(re.fullmatch(r"[^:]+:(base|basevol)-\d+-disk-\d+", volid))


def new_volume_name(storage: Storage, vmid: int, taken_names: set, base: str | None = None) -> str:
    """The next free ``vm-<vmid>-disk-N`` (a linked clone keeps its base as prefix)."""
    index = 0
    while f"vm-{vmid}-disk-{index}" in taken_names:
        index += 1
    name = f"vm-{vmid}-disk-{index}"
    if storage.path is not None:
        return f"{storage.storage}:{vmid}/{name}.raw"
    if base:
        return f"{storage.storage}:{base}/{name}"
    return f"{storage.storage}:{name}"


def dir_content(storage: Storage) -> list:
    """Backups (real files in dump/) and container templates of a directory storage."""
    entries = [dict(entry, volid=f"{storage.storage}:{entry['volid']}")
               for entry in backups.list_archives(storage.dump_dir)]
    return entries + template_content(storage)


def rootdir_content(storage: Storage, containers) -> list:
    """Container volumes on an LVM-thin storage, derived from the configs."""
    from .containers import parse_rootfs
    from .schema import parse_size
    entries = []
    for ct in containers:
        if "rootfs" not in ct.config:
            continue
        rootfs = parse_rootfs(ct.config["rootfs"])
        volid = rootfs["volume"]
        if volume_storage(volid) != storage.storage:
            continue
        entry = {"volid": volid, "content": "rootdir", "format": "raw",
                 "size": parse_size(rootfs.get("size", "0")), "vmid": volume_owner(volid),
                 "ctime": int(time.time())}
        if "/" in volid and storage.path is None:
            entry["parent"] = volid.split(":", 1)[1].split("/")[0]
        entries.append(entry)
    return entries


def used_bytes(storage: Storage, content: list) -> int:
    if storage.path is not None:
        return sum(entry["size"] for entry in content)
    return sum(entry["size"] for entry in content if entry.get("content") == "rootdir")


def delete_archive(storage: Storage, volid: str) -> None:
    if storage.path is None or not volid.startswith(f"{storage.storage}:backup/"):
        raise fail(f"volume '{volid}' does not exist")
    archive = storage.dump_dir / volid.split("/", 1)[1]
    if not archive.exists():
        raise fail(f"volume '{volid}' does not exist")
    if backups.is_protected(archive):
        raise fail("cannot delete protected backup")
    backups.remove_archive(archive)


def ensure_dir(path: Path) -> Path:
    os.makedirs(path, exist_ok=True)
    return path
