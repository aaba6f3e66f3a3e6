"""vzdump archives on disk, PVE's prune rules, and scheduled backup jobs.

Archives are named as vzdump names them, ``vzdump-lxc-101-2026_11_26-19_30_00.tar.zst``,
next to a ``.log``, an optional ``.notes`` and an optional ``.protected`` file.
"""

import re
import secrets
import subprocess
import time
from pathlib import Path

from . import schema
from .errors import ParamError, fail

ARCHIVE_RE = re.compile(
    r"vzdump-(lxc|qemu)-(\d+)-(\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2})\.(tar(?:\.(?:gz|lzo|zst))?)")
COMPRESS_EXTENSION = {"0": "tar", "1": "tar.lzo", "lzo": "tar.lzo", "gzip": "tar.gz",
                      "zstd": "tar.zst"}
COMPRESS_NAME = {"0": "none", "1": "lzo", "lzo": "lzo", "gzip": "gzip", "zstd": "zstd"}
TIME_FORMAT = "%Y_%m_%d-%H_%M_%S"
# Bucket of a backup per prune option, newest first (PVE's prune_mark order).
_PRUNE_BUCKETS = [
    ("keep-last", None),
    ("keep-hourly", "%Y/%m/%d/%H"),
    ("keep-daily", "%Y/%m/%d"),
    ("keep-weekly", "%G/%V"),
    ("keep-monthly", "%Y/%m"),
    ("keep-yearly", "%Y"),
]


def archive_name(vmid: int, compress: str, when: float | None = None) -> str:
    stamp = time.strftime(TIME_FORMAT, time.localtime(when or time.time()))
    return f"vzdump-lxc-{vmid}-{stamp}.{COMPRESS_EXTENSION[compress]}"


def log_path(archive: Path) -> Path:
    return archive.with_name(ARCHIVE_RE.match(archive.name).group(0).rsplit(".tar", 1)[0] + ".log")


def notes_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".notes")


def protected_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".protected")


def is_protected(archive: Path) -> bool:
    return protected_path(archive).exists()


def remove_archive(archive: Path) -> None:
    for path in (archive, log_path(archive), notes_path(archive), protected_path(archive)):
        path.unlink(missing_ok=True)


def archive_owner(volid: str) -> int | None:
    """The guest a backup volume (``local:backup/vzdump-lxc-101-...``) belongs to."""
    match = ARCHIVE_RE.search(volid)
    return int(match.group(2)) if match else None


def archive_ctime(name: str) -> int:
    stamp = ARCHIVE_RE.match(name).group(3)
    return int(time.mktime(time.strptime(stamp, TIME_FORMAT)))


def list_archives(dump_dir: Path) -> list:
    """Storage-content entries for the archives in a dump directory (volid relative)."""
    entries = []
    if not dump_dir.is_dir():
        return entries
    for path in sorted(dump_dir.iterdir()):
        match = ARCHIVE_RE.fullmatch(path.name)
        if not match:
            continue
        entry = {"volid": f"backup/{path.name}", "content": "backup", "format": match.group(4),
                 "size": path.stat().st_size, "ctime": archive_ctime(path.name),
                 "vmid": int(match.group(2)), "subtype": match.group(1)}
        if notes_path(path).exists():
            entry["notes"] = notes_path(path).read_text()
        if is_protected(path):
            entry["protected"] = 1
        entries.append(entry)
    return entries


def render_notes(template: str, vmid: int, guestname: str, node: str, cluster: str) -> str:
    """vzdump's notes-template: ``{{vmid}}`` etc., and a literal ``\\n`` is a newline."""
    values = {"vmid": str(vmid), "guestname": guestname, "node": node, "cluster": cluster}
    text = re.sub(r"\{\{(cluster|guestname|node|vmid)\}\}", lambda m: values[m.group(1)], template)
    return text.replace("\\n", "\n").replace("\\\\", "\\")


def prune(dump_dir: Path, vmid: int, options: dict) -> list[Path]:
    """Delete this guest's archives that ``options`` (keep-last=3 ...) does not keep."""
    if not options or options.get("keep-all"):
        return []
    archives = sorted((path for path in dump_dir.iterdir()
                       if (m := ARCHIVE_RE.fullmatch(path.name)) and int(m.group(2)) == vmid),
                      key=lambda path: archive_ctime(path.name), reverse=True)
    marks = {path: ("protected" if is_protected(path) else None) for path in archives}
    for option, bucket_format in _PRUNE_BUCKETS:
        _mark(archives, marks, options.get(option), bucket_format)
    removed = [path for path in archives if marks[path] in (None, "remove")]
    for path in removed:
        remove_archive(path)
    return removed


def _mark(archives: list, marks: dict, keep: int | None, bucket_format: str | None) -> None:
    if not keep:
        return

    def bucket(path: Path) -> str:
        if bucket_format is None:
            return path.name
        return time.strftime(bucket_format, time.localtime(archive_ctime(path.name)))

    already = {bucket(path) for path in archives if marks[path] == "keep"}
    newly: set = set()
    for path in archives:
        if marks[path] is not None or bucket(path) in already:
            continue
        if bucket(path) in newly:
            marks[path] = "remove"
            continue
        if len(newly) >= keep:
            break
        newly.add(bucket(path))
        marks[path] = "keep"


def parse_prune(value: str | None) -> dict:
    if not value:
        return {}
    return schema.parse_property_string(value, schema.PRUNE_PROPS, "prune-backups")


# ---------------------------------------------------------------- backup jobs

_CALENDAR_RE = re.compile(r"[A-Za-z0-9 :*,./\-~]+")
JOB_ID_RE = r"[A-Za-z][A-Za-z0-9\-_]+"


def calendar_event(value: str, _name: str) -> None:
    if not _CALENDAR_RE.fullmatch(value) or not value.strip():
        raise schema.FormatError("unable to parse calendar event")


class BackupJobs:
    """``/cluster/backup``: jobs.cfg entries of type vzdump."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}

    def list(self) -> list:
        return [self._view(job_id) for job_id in sorted(self.jobs)]

    def get(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            raise fail(f"Job '{job_id}' does not exist")
        return self._view(job_id)

    def _view(self, job_id: str) -> dict:
        view = {"id": job_id, "type": "vzdump"}
        view.update(self.jobs[job_id])
        return view

    def create(self, params: dict) -> str:
        job_id = params.pop("id", None) or f"backup-{secrets.token_hex(4)}-{secrets.token_hex(2)}"
        if job_id in self.jobs:
            raise fail(f"Job '{job_id}' already exists")
        _check_selection(params)
        params.setdefault("enabled", 1)
        self.jobs[job_id] = params
        return job_id

    def update(self, job_id: str, params: dict, delete: list) -> None:
        job = dict(self.get(job_id))
        job.pop("id")
        job.pop("type")
        for key in delete:
            job.pop(key, None)
        job.update(params)
        _check_selection(job)
        self.jobs[job_id] = job

    def delete(self, job_id: str) -> None:
        self.get(job_id)
        del self.jobs[job_id]

    def remove_vmid(self, vmid: int) -> None:
        """``purge`` on destroy drops the guest from every job's vmid list."""
        for job_id, job in list(self.jobs.items()):
            if "vmid" not in job:
                continue
            remaining = [item for item in schema.split_list(job["vmid"]) if int(item) != vmid]
            if remaining:
                job["vmid"] = ",".join(remaining)
            else:
                del self.jobs[job_id]


def _check_selection(job: dict) -> None:
    if job.get("all") and job.get("vmid"):
        raise ParamError({"all": "option conflicts with option 'vmid'"})
    if not job.get("all") and not job.get("vmid") and not job.get("pool"):
        raise ParamError({"vmid": "property is missing"})
    if job.get("storage") and job.get("dumpdir"):
        raise ParamError({"storage": "option conflicts with option 'dumpdir'"})


def read_archive_config(archive: Path) -> str:
    """The ``./etc/vzdump/pct.conf`` of a vzdump CT archive (GNU tar detects the compression)."""
    if not archive.is_file():
        raise OSError(f"archive '{archive}' does not exist")
    result = subprocess.run(["tar", "-xOf", str(archive), "./etc/vzdump/pct.conf"], capture_output=True,
                            text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise ValueError(f"unable to read the configuration of '{archive}': "
                         f"{(result.stderr.strip().splitlines() or ['not a vzdump CT archive'])[-1]}")
    return result.stdout
