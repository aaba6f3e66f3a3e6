"""``python -m awxsim --config FILE``: run the AWX stand-in until SIGTERM/SIGINT.

The config is JSON: ``listen_host`` (127.0.0.1), ``listen_port``, ``control_key`` (for
``/_lab``), ``users`` (``username``, ``password``, ``is_superuser``, ``organizations``: names)
and ``tokens`` (``token``, ``user``, ``scope``: read or write).
"""

import argparse
import json
import logging
import signal
import sys
import threading

from .server import create_server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="awxsim", description="AWX API v2 stand-in")
    parser.add_argument("--config", required=True, help="JSON config file")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = create_server(config)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
