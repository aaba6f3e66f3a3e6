"""A stand-in for Proxmox VE's ``vzdump`` on the lab "Proxmox host" (there is no real one here).

    vzdump 101 --dumpdir /mnt/windows-backup/shop --mode snapshot --compress zstd \
        --prune-backups keep-daily=7 --quiet 1

On a real node, root runs vzdump (from cron, or from the deprovision playbook) and the API
token's privileges play no part. The stand-in does the same through the simulator: it registers
a ``root@pam`` token with the simulator's control API and calls ``POST /nodes/{node}/vzdump`` with
the same options, then waits for the task. Settings come from the environment (``.lab/env``
names) or, when unset (cron), from ``.lab/env`` at the repository root. Exit status 0 when the
task ends OK, 1 otherwise (the task's exit status on stderr), like vzdump.
"""

import hashlib
import os
import sys
import time

import requests

from labenv import ENV_FILE, read_env  # the lab's one .lab/env reader
TOKEN_ID = "root@pam!lab-vzdump"


def settings():
    values = read_env(ENV_FILE) if ENV_FILE.exists() else {}
    values.update((k, v) for k, v in os.environ.items() if k.startswith(("PROXMOX_", "PVESIM_")))
    return values


def parse(argv):
    vmids, options = [], {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--"):
            key = arg[2:]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                index += 1
                value = argv[index] if index < len(argv) else "1"
            options[key] = value
        else:
            vmids.append(arg)
        index += 1
    if vmids:
        options["vmid"] = ",".join(vmids)
    return options


def main(argv):
    conf = settings()
    verify = conf.get("PROXMOX_CA_BUNDLE") or True
    # One secret every stand-in agrees on, so that parallel runs do not replace each other's token.
    secret = hashlib.sha256((conf["PVESIM_CONTROL_KEY"] + TOKEN_ID).encode()).hexdigest()
    reply = requests.post(conf["PVESIM_CONTROL_URL"].rstrip("/") + "/tokens",
                          json={"token_id": TOKEN_ID, "secret": secret},
                          headers={"X-Lab-Key": conf["PVESIM_CONTROL_KEY"]}, verify=verify, timeout=10)
    reply.raise_for_status()
    api = conf["PROXMOX_API_URL"].rstrip("/")
    node = conf.get("PROXMOX_NODE_NAME", "pve")
    headers = {"Authorization": "PVEAPIToken=%s=%s" % (TOKEN_ID, secret)}
    reply = requests.post("%s/nodes/%s/vzdump" % (api, node), data=parse(argv), headers=headers, verify=verify,
                          timeout=30)
    if reply.status_code != 200:
        sys.stderr.write("vzdump: %s %s %s\n" % (reply.status_code, reply.reason, reply.text))
        return 1
    upid = reply.json()["data"]
    if upid == "OK":  # none of the guests is on this node: vzdump exits silently, as PVE's does
        return 0
    while True:
        status = requests.get("%s/nodes/%s/tasks/%s/status" % (api, node, upid), headers=headers,
                              verify=verify, timeout=30).json()["data"]
        if status.get("status") == "stopped":
            break
        time.sleep(0.1)
    if status.get("exitstatus") != "OK":
        sys.stderr.write("vzdump: task %s ended: %s\n" % (upid, status.get("exitstatus")))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
