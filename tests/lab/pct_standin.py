"""pct stand-in for the lab's "Proxmox host": the subset of Proxmox VE's ``pct`` that
Ansible needs to work inside a container, on the lab's real LXC containers.

    pct exec VMID [--keep-env 0|1] -- COMMAND [ARG...]   run a command in the running CT
    pct status VMID                                      status: running|stopped
    pct push VMID FILE DEST [--perms MODE]               copy a host file into the CT
    pct pull VMID PATH DEST                              copy a file out of the CT
    pct list                                             VMID, status, name

Containers live in the LXC path of the lab's pvesim LXC backend (``.lab/lxc/containers``, or
``LAB_LXC_PATH``), named by VMID as on a real node. ``exec`` uses ``lxc-attach`` with a clean
environment, like pct does. A CT that is not running gives ``CT VMID not running`` and exit 255.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


COMMANDS = {"exec": cmd_exec, "status": cmd_status, "push": cmd_push, "pull": cmd_pull, "list": cmd_list}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        die(f"usage: pct {{{'|'.join(COMMANDS)}}} ...  (lab stand-in)", 1)
    if shutil.which("lxc-attach") is None:
        die("lxc-attach not found: install Debian's lxc package", 1)
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
