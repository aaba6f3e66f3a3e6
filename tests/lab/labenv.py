"""The lab's settings file and its loopback ports, in one place.

``read_env()`` is the one reader of ``.lab/env`` (and ``.lab/env.lxc``): ``KEY=shell-quoted value``
lines as ``tests/lab/lab up`` writes them, read without a shell. ``free_port()`` is the one way the
lab, the tests, the benchmarks and ``tools/demo.py`` pick a loopback TCP port. Standard library
only: the lab's services, the stand-ins (vzdump) and the tests all import it.
"""

import shlex
import socket
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = REPO_ROOT / ".lab"
ENV_FILE = LAB_DIR / "env"
ENV_LXC_FILE = LAB_DIR / "env.lxc"


def read_env(path=None):
    """``.lab/env`` (or ``path``, e.g. ``ENV_LXC_FILE``) as a dict; ``export`` prefixes are allowed."""
    values = {}
    with open(path or ENV_FILE, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _sep, value = line.partition("=")
            parts = shlex.split(value)
            values[key.strip()] = parts[0] if parts else ""
    return values


def free_port(preferred=None, udp=False):
    """``preferred`` if a server can listen there on 127.0.0.1 (TCP, and UDP too with ``udp``), else a free port.

    The probe sets SO_REUSEADDR as servers do, so a port whose last connections are still in
    TIME_WAIT (a service restarted a moment ago) is kept rather than swapped for a new one.
    """
    for candidate in ([int(preferred)] if preferred else []) + [0] * 20:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", candidate))
                if udp:
                    dgram.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                continue
            return tcp.getsockname()[1]
    raise OSError("no free loopback port")
