"""``python -m awxsim --config FILE``: run the AWX stand-in until SIGTERM/SIGINT.

The config is JSON: ``listen_host`` (127.0.0.1), ``listen_port``, ``control_key`` (for
``/_lab``), ``users`` (``username``, ``password``, ``is_superuser``, ``organizations``: names)
and ``tokens`` (``token``, ``user``, ``scope``: read or write). Jobs run (runner.py) with
``projects_root``; then ``jobs_dir``, ``awx_task_env``, ``awx_host`` and ``keep_private_data_dir``.

A job's environment is AWX's: what ``awx_task_env`` and the job's credentials give. ansible-runner
adds the stand-in's own environment underneath, so the settings a credential injects are removed
from it here first (``PROXMOX_*``, ``POWERDNS_*``, ``SMTP_*``, ``PVESIM_*``, ``CONTROLLER_*``): a job
never works only because whoever started the stand-in had them set.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading

from .server import create_server

CREDENTIAL_PREFIXES = ("PROXMOX_", "POWERDNS_", "SMTP_", "PVESIM_", "CONTROLLER_", "TOWER_")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="awxsim", description="AWX API v2 stand-in")
    parser.add_argument("--config", required=True, help="JSON config file")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in list(os.environ):
        if name.startswith(CREDENTIAL_PREFIXES):
            del os.environ[name]
    server = create_server(config)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        # running jobs are canceled (their processes killed) before the stand-in goes
        jobs = server.app.jobs
        jobs.stop_all()
        for thread in list(jobs.runner.threads.values()) if jobs.runner else []:
            thread.join(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
