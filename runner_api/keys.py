"""The customer's SSH public keys, checked with the collection's one rule.

The rule is ``plugins/module_utils/ssh_keys.py`` of the ``mpanel.cloudpods`` collection (pure
standard library; the playbooks use the same file through a filter plugin). runner_api does not
import the collection's Python package (an installed wheel may run beside any copy of it): it
loads that one file from the collection it runs (``Settings.ssh_keys_file``: the checkout's, or
the installed collection's), as ``grammar`` reads the order patterns. ``create_app`` selects it
with ``use()``.

Nothing here ever repeats what a customer pasted: an entry may be a private key. Errors name the
entry by its index and say why, in the rule's own words.
"""

import importlib.util
from functools import lru_cache
from pathlib import Path

from .settings import REPO_ROOT

RULE_FILE = REPO_ROOT / "plugins" / "module_utils" / "ssh_keys.py"  # in a checkout; see use()
FIELD = "ssh_public_keys"
_selected = {"path": RULE_FILE}


def use(path):
    """Check keys with the rule file ``path`` from now on (the app's ``Settings.ssh_keys_file``)."""
    _selected["path"] = Path(path)


def rule(path=None):
    """The loaded rule module (``check``, ``parse``, ``MAX_KEYS``, ...)."""
    return load(Path(path) if path else _selected["path"])


@lru_cache(maxsize=4)
def load(path):
    """The module in ``path``, loaded once per path under a private name; ValueError if it is not the rule."""
    spec = importlib.util.spec_from_file_location(f"runner_api._collection_ssh_keys_{abs(hash(str(path)))}",
                                                  str(path))
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [name for name in ("check", "parse", "InvalidKey", "MAX_KEYS") if not hasattr(module, name)]
    if missing:
        raise ValueError(f"{path}: not the SSH key rule (no {', '.join(missing)})")
    return module


def check(entries):
    """``(lines, errors)``: the normalised key lines (as stored and passed to the playbooks) and one
    message per problem, ``ssh_public_keys[<index>]: <why>`` (never quoting an entry)."""
    keys, errors = rule().check(entries)
    return [key.line for key in keys], [_message(error) for error in errors]


def _message(error):
    where = FIELD if error.index is None else f"{FIELD}[{error.index}]"
    return f"{where}: {error.reason}"


def looks_private(text):
    """True when ``text`` holds a private key's marker (the rule's own list), wherever it was pasted."""
    markers = getattr(rule(), "_PRIVATE_MARKERS", ("PRIVATE KEY",))
    return any(marker in text for marker in markers)


def describe(lines):
    """What the pod detail shows of stored key lines: type, SHA256 fingerprint, comment."""
    shown = []
    parse = rule().parse
    for index, line in enumerate(lines or []):
        try:
            key = parse(index, line)
        except ValueError:
            continue  # stored keys passed the rule; a line that no longer does is not shown
        shown.append({"type": key.key_type, "fingerprint": key.fingerprint, "comment": key.comment})
    return shown
