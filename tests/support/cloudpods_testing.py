"""Helpers for runner_api's tests and benchmarks: a throwaway database, OpenAPI response checks,
a worker process with the lab's settings.

Not part of the shipped package (it lived in runner_api/testing.py). ``tests/conftest.py`` puts
``tests/support`` and ``tests/lab`` on ``sys.path``; scripts run outside pytest (benchmarks, the
Schemathesis harness) do the same themselves. The lab's ``.lab/env`` is read by ``labenv.read_env``.
"""

import os
import re
import secrets
import subprocess
import sys
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import psycopg

from runner_api.app import load_openapi
from runner_api.repository import migrate

REPO_ROOT = Path(__file__).resolve().parents[2]


def with_database(url, name):
    """``url`` with its database name replaced by ``name``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@contextmanager
def scratch_database(base_url, prefix="cloudpods_test"):
    """A new, migrated database in the cluster of ``base_url``; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # name is ours: letters, digits, underscore
    url = with_database(base_url, name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class OpenApiChecker:
    """Validates a response (status, content type, JSON body) against the served OpenAPI document."""

    def __init__(self, document=None):
        self.document = document or load_openapi()
        self.routes = []
        for template, item in self.document["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            self.routes.append((template, re.compile(pattern), item))
        # Fixed paths win over templated ones (/my-pods before /{id}).
        self.routes.sort(key=lambda route: route[0].count("{"))

    def operation(self, method, path):
        for template, pattern, item in self.routes:
            if pattern.match(path) and method.lower() in item:
                return template, item[method.lower()]
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")

    def check(self, method, path, status, content_type, body):
        template, operation = self.operation(method, path.split("?")[0])
        responses = operation["responses"]
        spec = responses.get(str(status))
        if spec is None:
            raise AssertionError(f"{method} {template}: status {status} is not documented")
        if "$ref" in spec:
            spec = self._resolve(spec["$ref"])
        media = content_type.split(";")[0].strip()
        content = spec.get("content", {})
        if media not in content:
            raise AssertionError(f"{method} {template} {status}: content type {media} not documented "
                                 f"({', '.join(content)})")
        schema = dict(self.document)
        schema["$defs_target"] = content[media]["schema"]
        validator = jsonschema.Draft202012Validator(dict(schema, **{"$ref": "#/$defs_target"}),
                                                    format_checker=jsonschema.FormatChecker())
        errors = list(validator.iter_errors(body))
        if errors:
            raise AssertionError(f"{method} {template} {status}: body does not match the OpenAPI schema: "
                                 + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5]))

    def _resolve(self, ref):
        node = self.document
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node


def worker_environment(base_env, database_url, **settings):
    """os.environ + the lab's settings + a database + CLOUDPODS_* overrides, the venv's bin first on PATH."""
    env = dict(os.environ)
    env.update(base_env)
    env["DATABASE_URL"] = database_url
    env["PATH"] = os.path.dirname(os.path.abspath(sys.executable)) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in settings.items():
        env["CLOUDPODS_" + key.upper()] = str(value)
    return env


def start_worker(env, worker_id, log_path):
    """``cloudpods worker`` as a child process, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "runner_api.cli", "worker", "--worker-id", worker_id],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(REPO_ROOT))


def proxmox_client(env, retry_timeout=60):
    """The collection's Proxmox client for a lab's settings (``.lab/env`` keys)."""
    from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_client import ProxmoxClient  # pylint: disable=import-outside-toplevel
    from ansible_collections.mpanel.cloudpods.plugins.module_utils._proxmox_settings import ConnectionSettings  # pylint: disable=import-outside-toplevel
    settings = ConnectionSettings(env["PROXMOX_API_URL"], env["PROXMOX_API_TOKEN_ID"], env["PROXMOX_API_TOKEN_SECRET"],
                                  ca_path=env["PROXMOX_CA_BUNDLE"])
    return ProxmoxClient(settings, retry_timeout=retry_timeout)


def make_template_copies(client, vmids, node="pve", template=9000):
    """Copies of the template as build_template's last play makes them: full clones turned into templates."""
    for vmid in vmids:
        client.clone_container(node, template, 120, newid=vmid, hostname="cloudpod-template", full=True)
        client.run_task("POST", "nodes/%s/lxc/%d/template" % (node, vmid), 120)
