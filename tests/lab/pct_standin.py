"""pct stand-in for the lab's "Proxmox host": the subset of Proxmox VE's ``pct`` that
Ansible needs to work inside a container, on the lab's real LXC containers.

    pct exec VMID [--keep-env 0|1] -- COMMAND [ARG...]   run a command in the running CT
    pct status VMID                                      status: running|stopped
    pct push VMID FILE DEST [--perms MODE]               copy a host file into the CT
    pct pull VMID PATH DEST                              copy a file out of the CT
    pct list                                             VMID, status, name
    pct restore VMID ARCHIVE [--force 1] [--unique 1] [--OPTION VALUE]...
                                                         restore a vzdump archive (see cmd_restore)

Containers live in the LXC path of the lab's pvesim LXC backend (``.lab/lxc/containers``, or
``LAB_LXC_PATH``), named by VMID as on a real node. ``exec`` uses ``lxc-attach`` with a clean
environment, like pct does. A CT that is not running gives ``CT VMID not running`` and exit 255.
"""

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from labenv import ENV_FILE, read_env  # the lab's one .lab/env reader (standard library only)

REPO_ROOT = Path(__file__).resolve().parents[2]
LXC_PATH = Path(os.environ.get("LAB_LXC_PATH") or REPO_ROOT / ".lab" / "lxc" / "containers")
CONTAINER_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]


def die(message: str, code: int = 255) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.exit(code)


def vmid_arg(value: str) -> str:
    if not value.isdigit() or not 100 <= int(value) <= 999999999:
        die(f"400 Parameter verification failed.\nvmid: invalid format - value '{value}' does not look like a valid VM ID")
    if not (LXC_PATH / value / "config").exists():
        die(f"Configuration file 'nodes/pve/lxc/{value}.conf' does not exist")
    return value


def state(vmid: str) -> str:
    result = subprocess.run(["lxc-info", "-P", str(LXC_PATH), "-n", vmid, "-s", "-H"],
                            capture_output=True, text=True, check=False)
    return "running" if result.stdout.strip() == "RUNNING" else "stopped"


def attach(vmid: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    argv = ["lxc-attach", "-P", str(LXC_PATH), "-n", vmid, "--clear-env"]
    for item in CONTAINER_ENV:
        argv += ["-v", item]
    return subprocess.run(argv + ["--"] + command, check=False, **kwargs)


def cmd_exec(args: list[str]) -> int:
    if not args:
        die("400 not enough arguments\npct exec <vmid> [<extra-args>]")
    vmid = vmid_arg(args[0])
    rest = args[1:]
    while rest and rest[0] == "--keep-env":
        rest = rest[2:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        die("missing command")
    if state(vmid) != "running":
        die(f"CT {vmid} not running")
    return attach(vmid, rest).returncode


def cmd_status(args: list[str]) -> int:
    vmid = vmid_arg(args[0] if args else "")
    print(f"status: {state(vmid)}")
    return 0


def cmd_push(args: list[str]) -> int:
    if len(args) < 3:
        die("400 not enough arguments\npct push <vmid> <file> <destination> [OPTIONS]")
    vmid, source, dest = vmid_arg(args[0]), args[1], args[2]
    perms = args[args.index("--perms") + 1] if "--perms" in args else None
    if state(vmid) != "running":
        die(f"CT {vmid} not running")
    with open(source, "rb") as handle:
        script = 'cat > "$1"' + (' && chmod "$2" "$1"' if perms else "")
        result = attach(vmid, ["/bin/sh", "-c", script, "sh", dest] + ([perms] if perms else []), stdin=handle)
    return result.returncode


def cmd_pull(args: list[str]) -> int:
    if len(args) < 3:
        die("400 not enough arguments\npct pull <vmid> <path> <destination> [OPTIONS]")
    vmid, path, dest = vmid_arg(args[0]), args[1], args[2]
    if state(vmid) != "running":
        die(f"CT {vmid} not running")
    with open(dest, "wb") as handle:
        return attach(vmid, ["/bin/cat", path], stdout=handle).returncode


def cmd_list(_args: list[str]) -> int:
    print(f"{'VMID':<10} {'Status':<10} Name")
    if LXC_PATH.is_dir():
        for entry in sorted(LXC_PATH.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
            if entry.name.isdigit() and (entry / "config").exists():
                name = ""
                for line in (entry / "config").read_text().splitlines():
                    if line.startswith("lxc.uts.name"):
                        name = line.split("=", 1)[1].strip()
                print(f"{entry.name:<10} {state(entry.name):<10} {name}")
    return 0


ROOT_TOKEN_ID = "root@pam!lab-pct"


def _root_api():
    """Call the simulator as root@pam (root on a real node needs no token): a token registered
    through the control API with a secret derived from the control key, as the vzdump stand-in does."""
    conf = read_env(ENV_FILE) if ENV_FILE.exists() else {}
    conf.update((k, v) for k, v in os.environ.items() if k.startswith(("PROXMOX_", "PVESIM_")))
    context = ssl.create_default_context(cafile=conf.get("PROXMOX_CA_BUNDLE") or None)
    secret = hashlib.sha256((conf["PVESIM_CONTROL_KEY"] + ROOT_TOKEN_ID).encode()).hexdigest()
    request = urllib.request.Request(conf["PVESIM_CONTROL_URL"].rstrip("/") + "/tokens", method="POST",
                                     data=json.dumps({"token_id": ROOT_TOKEN_ID, "secret": secret}).encode(),
                                     headers={"X-Lab-Key": conf["PVESIM_CONTROL_KEY"],
                                              "Content-Type": "application/json"})
    urllib.request.urlopen(request, context=context, timeout=10).close()
    base = conf["PROXMOX_API_URL"].rstrip("/") + "/nodes/" + conf.get("PROXMOX_NODE_NAME", "pve")
    headers = {"Authorization": f"PVEAPIToken={ROOT_TOKEN_ID}={secret}"}

    def call(method: str, path: str, params: dict | None = None):
        body = urllib.parse.urlencode(params).encode() if params is not None else None
        request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
        with urllib.request.urlopen(request, context=context, timeout=60) as reply:
            return json.load(reply)["data"]
    return call


def cmd_restore(args: list[str]) -> int:
    """``pct restore`` runs create_vm with restore=1 (pve-container's CLI/pct.pm): here through the
    simulator's API as root, so the simulator is the one place that restores (and refuses: an
    existing CT without --force, a running CT, protection). PVE's CLI runs the task in the
    foreground and prints its log; so does this, and an error ends it with exit 255."""
    if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):
        die("400 not enough arguments\npct restore <vmid> <ostemplate> [OPTIONS]")
    params = {"vmid": args[0], "ostemplate": args[1], "restore": "1"}
    rest = args[2:]
    while rest:
        if not rest[0].startswith("--") or len(rest) < 2:
            die("400 unable to parse option\npct restore <vmid> <ostemplate> [OPTIONS]")
        params[rest[0][2:]] = rest[1]
        rest = rest[2:]
    call = _root_api()
    try:
        upid = call("POST", "/lxc", params)
        while True:
            status = call("GET", f"/tasks/{urllib.parse.quote(upid, safe='')}/status")
            if status.get("status") == "stopped":
                break
            time.sleep(0.2)
        for line in call("GET", f"/tasks/{urllib.parse.quote(upid, safe='')}/log", None) or []:
            print(line.get("t", ""))
    except urllib.error.HTTPError as exc:
        reason = exc.reason
        try:
            errors = json.load(exc).get("errors")
        except (ValueError, AttributeError):
            errors = None
        die(f"{reason}" + "".join(f"\n{key}: {value}" for key, value in (errors or {}).items()))
    if status.get("exitstatus") != "OK":
        die(str(status.get("exitstatus")))
    return 0


COMMANDS = {"exec": cmd_exec, "status": cmd_status, "push": cmd_push, "pull": cmd_pull, "list": cmd_list,
            "restore": cmd_restore}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        die(f"usage: pct {{{'|'.join(COMMANDS)}}} ...  (lab stand-in)", 1)
    if shutil.which("lxc-attach") is None and argv[0] != "restore":
        die("lxc-attach not found: install Debian's lxc package", 1)
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
