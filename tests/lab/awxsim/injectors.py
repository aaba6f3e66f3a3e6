"""AWX custom credential types applied at job time (the one renderer of this project: the stand-in's
jobs, ``tests/support/awx_credentials.py`` and the ``ansible-runner transmit`` test use it).

Written from AWX's documented behaviour (docs/credentials/custom_credential_types.md, FACTS.md B4):
only inputs given with a value are defined (the rest render empty), missing booleans are False, an
ssh_private_key gets a trailing newline, every file template is written to a file of its own (mode
0600) under ``<private data dir>/env`` and named in ``tower.filename`` (one file) or
``tower.filename.<n>`` (``template.<n>``), templates render in an immutable Jinja sandbox.

The job's stored ``job_env`` is AWX's "safe" environment: the env injectors rendered a second time
with every secret input replaced by ``**********`` (AWX ``HIDDEN_PASSWORD``), over the rest of the
environment masked by name (``API``, ``TOKEN``, ``KEY``, ``SECRET``, ``PASS``) and by a password in
a URL (AWX ``build_safe_env``).
"""

import os
import re
import stat
import tempfile

from jinja2 import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

HIDDEN = "**********"
_HIDDEN_NAME = re.compile(r"API|TOKEN|KEY|SECRET|PASS", re.I)
_URL_PASSWORD = re.compile(r"^.*?://[^:]+:(.*?)@.*?$")


def _namespace(ctype: dict, inputs: dict, masked: bool) -> dict:
    fields = (ctype.get("inputs") or {}).get("fields", [])
    secret = {field["id"] for field in fields if field.get("secret")}
    namespace = {}
    for key, value in inputs.items():
        if isinstance(value, str) and not value:
            continue
        namespace[key] = HIDDEN if masked and key in secret else value
    for field in fields:
        if field.get("type") == "boolean" and field["id"] not in inputs:
            namespace[field["id"]] = False
        value = namespace.get(field["id"])
        if field.get("format") == "ssh_private_key" and isinstance(value, str) and not value.endswith("\n") \
                and value != HIDDEN:
            namespace[field["id"]] = value + "\n"
    return namespace


def render(ctype: dict, inputs: dict, private_dir: str) -> tuple:
    """``(env, extra_vars, safe_env)`` a credential of type ``ctype`` with ``inputs`` adds to a job;
    its file injectors are written under ``<private_dir>/env``."""
    injectors = ctype.get("injectors") or {}
    sandbox = ImmutableSandboxedEnvironment(undefined=Undefined)
    namespace = _namespace(ctype, inputs, masked=False)
    safe = _namespace(ctype, inputs, masked=True)
    env_dir = os.path.join(private_dir, "env")
    os.makedirs(env_dir, exist_ok=True)
    filenames = {}
    for label, template in (injectors.get("file") or {}).items():
        handle, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(handle, "w") as out:
            out.write(sandbox.from_string(template).render(**namespace))
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        if "." in label:
            filenames[label.split(".", 1)[1]] = path
        else:
            filenames = path
    namespace["tower"] = safe["tower"] = {"filename": filenames}
    env, safe_env = {}, {}
    for key, template in (injectors.get("env") or {}).items():
        env[key] = sandbox.from_string(template).render(**namespace)
        safe_env[key] = sandbox.from_string(template).render(**safe)
    extra_vars = {key: sandbox.from_string(template).render(**namespace)
                  for key, template in (injectors.get("extra_vars") or {}).items()}
    return env, extra_vars, safe_env


def inject(ctype: dict, inputs: dict, private_dir: str) -> tuple:
    """``(env, extra_vars)`` only (what a test that runs ansible itself needs)."""
    env, extra_vars, _safe = render(ctype, inputs, private_dir)
    return env, extra_vars


def safe_environment(env: dict) -> dict:
    """AWX ``build_safe_env``: secrets hidden by their variable's name or inside a URL."""
    safe = {}
    for key, value in env.items():
        if key.startswith("ANSIBLE_") and not key.startswith(("ANSIBLE_NET", "ANSIBLE_GALAXY_SERVER")):
            safe[key] = value
        elif _HIDDEN_NAME.search(key):
            safe[key] = HIDDEN
        elif isinstance(value, str) and _URL_PASSWORD.match(value):
            match = _URL_PASSWORD.match(value)
            safe[key] = value[:match.start(1)] + HIDDEN + value[match.end(1):]
        else:
            safe[key] = value
    return safe
