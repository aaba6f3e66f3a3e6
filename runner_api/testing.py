"""Helpers for runner_api's tests and benchmarks: a throwaway database, OpenAPI response checks."""

import re
import secrets
import urllib.parse
from contextlib import contextmanager

import jsonschema
import psycopg

from .app import load_openapi
from .repository import migrate


def _with_database(url, name):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@contextmanager
def scratch_database(base_url, prefix="cloudpods_test"):
    """A new, migrated database in the cluster of ``base_url``; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # name is ours: letters, digits, underscore
    url = _with_database(base_url, name)
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
