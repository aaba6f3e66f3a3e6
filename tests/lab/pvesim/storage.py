"""Storages: ``local`` (a directory: backups, templates) and ``local-lvm`` (LVM-thin:
container volumes), as on a fresh PVE install.

Directory storages are real directories under ``storage_root``, so backup archives are
real files a test (or an operator) can look at; LVM-thin volumes exist only as the
``rootfs`` entries of container configs.
"""

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import backups
from .errors import fail

GIB = 1024 ** 3
VZTMPL = "ubuntu-22.04-standard_22.04-1_amd64.tar.zst"


@dataclass
class Storage:
    storage: str
    type: str
    content: tuple
    total: int
    path: Path | None = None
    prune_backups: str | None = None
    extra: dict | None = None

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
        view.update(self.extra or {})
        return view

    def status_view(self, used: int) -> dict:
        return {"storage": self.storage, "type": self.type,
                "content": ",".join(sorted(self.content)), "active": 1, "enabled": 1,
                "shared": 0, "total": self.total, "used": used,
                "avail": max(0, self.total - used),
                "used_fraction": round(used / self.total, 6) if self.total else 0}


def default_storages(root: Path) -> dict:
    local = Storage("local", "dir", ("backup", "iso", "vztmpl"), 100 * GIB,
                    path=root / "local", prune_backups="keep-all=1")
    local_lvm = Storage("local-lvm", "lvmthin", ("images", "rootdir"), 200 * GIB,
                        extra={"vgname": "pve", "thinpool": "data"})
    _prepare_dir_storage(local)
    return {storage.storage: storage for storage in (local, local_lvm)}


def _prepare_dir_storage(storage: Storage) -> None:
    for sub in ("dump", "template/cache", "template/iso", "images", "private"):
        (storage.path / sub).mkdir(parents=True, exist_ok=True)
    template = storage.path / "template" / "cache" / VZTMPL
    if not template.exists():
        template.write_bytes(b"")


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
    if storage.type == "dir":
        return f"{storage.storage}:{vmid}/{name}.raw"
    if base:
        return f"{storage.storage}:{base}/{name}"
    return f"{storage.storage}:{name}"


def dir_content(storage: Storage) -> list:
    """Backups (real files in dump/) and container templates of a directory storage."""
    entries = [dict(entry, volid=f"{storage.storage}:{entry['volid']}")
               for entry in backups.list_archives(storage.dump_dir)]
    cache = storage.path / "template" / "cache"
    for path in sorted(cache.glob("*.tar.*")):
        stat = path.stat()
        entries.append({"volid": f"{storage.storage}:vztmpl/{path.name}", "content": "vztmpl",
                        "format": "t" + path.suffixes[-1].lstrip("."), "size": stat.st_size,
                        "ctime": int(stat.st_mtime)})
    return entries


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
        if "/" in volid:
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
