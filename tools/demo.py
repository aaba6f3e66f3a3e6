"""The main job's demo: one Cloud Pod ordered over HTTP, provisioned by a worker, shown live.

    python tools/demo.py [--plan CLOUD_POD_STARTER] [--domain demo-123.example.com]

Run by ``tools/demo`` with the lab up and ``.lab/env`` loaded. It applies the migrations, creates
an API token, starts the API (gunicorn) and one worker, orders a pod as mPanel would, prints the
progress until the pod is ACTIVE, then its VMID and IP and the DNS answers for its domain from the
lab's PowerDNS. API and worker are stopped at the end; the lab stays up. Logs: ``.lab/demo/``.
"""

import argparse
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tests" / "lab"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from labenv import LAB_DIR, free_port  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.auth import new_token  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.repository import Repository, migrate, open_pool  # noqa: E402  pylint: disable=wrong-import-position
from runner_api.settings import Settings  # noqa: E402  pylint: disable=wrong-import-position

DEMO_DIR = LAB_DIR / "demo"


def _http(method, url, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "X-Customer-Id": "demo-customer", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status, json.load(reply)


def _wait_up(url, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: the API did not answer at {url}; see {DEMO_DIR}/api.log")


def _dns_answers(domain):
    import dns.resolver  # pylint: disable=import-outside-toplevel
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = int(os.environ["POWERDNS_DNS_PORT"])
    lines = []
    for name, rdtype in ((domain, "A"), ("www." + domain, "A"), (domain, "MX"), (domain, "TXT"),
                         ("_dmarc." + domain, "TXT")):
        try:
            answer = resolver.resolve(name, rdtype)
            lines.append(f"  {name} {rdtype}: " + ", ".join(sorted(r.to_text() for r in answer)))
        except Exception as exc:  # pylint: disable=broad-except
            lines.append(f"  {name} {rdtype}: {type(exc).__name__}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--plan", default="CLOUD_POD_STARTER")
    parser.add_argument("--domain", default=f"demo-{int(time.time())}.example.com")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    print("== database: " + (", ".join(migrate(settings.database_url)) or "migrations already applied"))
    token = new_token()
    with open_pool(settings, name="cloudpods-demo", min_size=1, max_size=1) as pool:
        Repository(pool).create_token("demo", "service", None, token)
    # The worker's inventory and site settings are the lab's versions of inventory.example and
    # site.example.yml, which tests/lab/lab up writes: this machine is the Proxmox VE node.
    env = dict(os.environ, CLOUDPODS_INVENTORY=str(LAB_DIR / "inventory"),
               CLOUDPODS_EXTRA_VARS_FILE=str(LAB_DIR / "site.yml"), CLOUDPODS_POLL_SECONDS="2")
    port = free_port()
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    processes = []
    try:
        with open(DEMO_DIR / "api.log", "ab") as log:
            processes.append(subprocess.Popen(
                [os.path.join(bin_dir, "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "2",
                 "runner_api.app:create_app()"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT))
        with open(DEMO_DIR / "worker.log", "ab") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "runner_api.cli", "worker", "--worker-id", "demo"],
                                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT))
        base = f"http://127.0.0.1:{port}/api/cloud-pods"
        _wait_up(base + "/plans")
        print(f"== API on 127.0.0.1:{port} (gunicorn), one worker; logs in {DEMO_DIR}")
        order = {"plan_code": args.plan, "domain": args.domain, "customer_email": "jane@example.org"}
        status, body = _http("POST", base + "/order", token, order)
        print(f"== POST /api/cloud-pods/order {json.dumps(order)} -> {status} pod {body['id']} ({body['hostname']})")
        pod = _follow(base + "/" + body["id"], token, args.timeout)
        if pod["status"] != "ACTIVE":
            print(f"demo: the pod ended {pod['status']}: {pod['last_error']}", file=sys.stderr)
            return 1
        print(f"== pod {pod['hostname']} is ACTIVE: VMID {pod['vmid']} on node {pod['node']}, IP {pod['ip']}")
        print(f"== DNS answers from the lab's PowerDNS (127.0.0.1 port {os.environ['POWERDNS_DNS_PORT']}):")
        print("\n".join(_dns_answers(args.domain)))
        if os.environ.get("LAB_LXC_PATH"):  # real containers (.lab/env.lxc): the site must answer
            return _show_site(pod["ip"], "www." + args.domain)
        return 0
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=90)


def _show_site(ip, host):
    """The pod's site on its own address, as a browser asks for www.<domain>: over http, and once the
    pod has its certificate (http answers with a redirect to https://<host>/), over https from the same
    address with SNI <host>, verified against the lab's ACME CA (Pebble's root)."""
    url = f"http://{ip}/"
    try:
        status, headers, body = _get(ip, host)
        if status in (301, 308) and headers.get("location", "").startswith(f"https://{host}/"):
            url = f"https://{host}/ (from {ip})"
            status, headers, body = _get(ip, host, tls=_pebble_context())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"demo: the site of the pod does not answer on {url} (Host: {host}): {exc}", file=sys.stderr)
        return 1
    text = " ".join(re.sub(r"<[^>]+>", " ", body).split())
    print(f"== {url} with Host: {host} -> HTTP {status}, {len(body)} bytes:")
    print(f"   {text[:300]}")
    return 0 if status == 200 else 1


def _pebble_context():
    """TLS that trusts the lab's ACME CA only: Pebble's current root, from its management port."""
    context = ssl.create_default_context(cafile=os.environ["CLOUDPODS_ACME_CA_BUNDLE"])
    with urllib.request.urlopen(os.environ["LAB_PEBBLE_MANAGEMENT_URL"] + "/roots/0", timeout=10,
                                context=context) as reply:
        return ssl.create_default_context(cadata=reply.read().decode())


def _get(ip, host, tls=None):
    """GET / from ``ip`` for ``host`` (HTTP/1.0, no redirect followed); with ``tls``, over https with SNI ``host``."""
    with socket.create_connection((ip, 443 if tls else 80), timeout=10) as raw:
        conn = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        try:
            conn.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            if tls:
                conn.close()
    head, _sep, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _colon, value in
               (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _follow(url, token, timeout):
    """Print the pod's status and each step as it changes; return the pod when it settles."""
    shown = {}
    deadline = time.monotonic() + timeout
    pod = {}
    while time.monotonic() < deadline:
        _status, pod = _http("GET", url, token)
        progress = pod["progress"]
        key = (pod["status"], progress["operation_status"], progress["attempts"])
        if shown.get("state") != key:
            print(f"   status {pod['status']}, task {progress['operation_status']} (attempt {progress['attempts']}),"
                  f" {progress['percent']}%")
            shown["state"] = key
        for step in progress["steps"]:
            if step["status"] in ("running", "done", "failed") and shown.get(step["step"]) != step["status"]:
                print(f"   - {step['label']}: {step['status']}")
                shown[step["step"]] = step["status"]
        if pod["status"] in ("ACTIVE", "FAILED"):
            return pod
        time.sleep(0.5)
    return pod


if __name__ == "__main__":
    sys.exit(main())
