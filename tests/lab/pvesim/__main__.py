"""``python -m pvesim --config FILE``: run the simulator until SIGTERM/SIGINT."""

import argparse
import logging
import signal
import sys
import threading

from .config import SimConfig
from .server import create_server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pvesim", description="Proxmox VE API simulator")
    parser.add_argument("--config", required=True, help="JSON config file (see pvesim.config)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    config = SimConfig.load(args.config)
    logging.basicConfig(
        filename=config.log_file, level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = create_server(config)

    def stop(_signum, _frame):
        # shutdown() waits for serve_forever to return, so it must run in another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    logging.getLogger("pvesim").info("pvesim stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
