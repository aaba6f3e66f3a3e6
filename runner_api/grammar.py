"""What an order may carry: the patterns of ``playbooks/vars/settings.yml``, applied by the API.

The file is the collection's (``Settings.grammar_file``: the checkout's, or the installed
collection's); ``create_app`` selects it with ``use()``.

The playbooks check their extra vars with the same patterns (``cloudpods_hostname_pattern``,
``cloudpods_domain_pattern``, ``cloudpods_email_pattern``), so an order the API accepts is one the
playbook accepts, and the rule lives in one file. The API first normalises what a person types:
a domain (of the order or of the mail address) in Unicode becomes its IDNA (``xn--``) form and
lower case. Nothing is stripped: whitespace and control characters anywhere are refused.
"""

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import idna
import yaml

from .settings import REPO_ROOT

GRAMMAR_FILE = REPO_ROOT / "playbooks" / "vars" / "settings.yml"  # in a checkout; see use()
PATTERN_NAMES = ("cloudpods_hostname_pattern", "cloudpods_domain_pattern", "cloudpods_email_pattern")
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]{1,128}")
_selected = {"path": GRAMMAR_FILE}


def use(path):
    """Check orders against the patterns of ``path`` from now on (the app's ``Settings.grammar_file``)."""
    _selected["path"] = Path(path)


def patterns(path=None):
    """The patterns of ``path``, default the file selected with ``use()``."""
    return load(Path(path) if path else _selected["path"])


@lru_cache(maxsize=4)
def load(path):
    """``read(path)``, once per path."""
    return read(path)


def read(path):
    """The patterns of the settings file ``path``; ValueError when one is missing."""
    with open(Path(path), encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    missing = [name for name in PATTERN_NAMES if not isinstance(data.get(name), str)]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    return {name.removeprefix("cloudpods_").removesuffix("_pattern"): re.compile(data[name])
            for name in PATTERN_NAMES}


def _has_control_or_space(value):
    return any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value)


def _ascii_domain(value):
    """A domain in its ASCII (IDNA 2008, UTS 46) form, lower case; None if it has none."""
    if value.isascii():
        return value.lower()
    try:
        return idna.encode(value, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def domain(value):
    """The order's domain, normalised, or None when it is not one (a trailing dot is allowed)."""
    if not isinstance(value, str) or not value or _has_control_or_space(value):
        return None
    value = value[:-1] if value.endswith(".") else value
    ascii_form = _ascii_domain(value)
    if ascii_form is None or not patterns()["domain"].fullmatch(ascii_form):
        return None
    return ascii_form


def email(value):
    """The customer's mail address, its domain normalised; None when it is not one we accept."""
    if not isinstance(value, str) or _has_control_or_space(value):
        return None
    local, at, host = value.rpartition("@")
    if not at or not local or not local.isascii():
        return None
    ascii_host = _ascii_domain(host)
    if ascii_host is None:
        return None
    address = f"{local}@{ascii_host}"
    return address if patterns()["email"].fullmatch(address) else None


def printable_token(value):
    """True for 1 to 128 printable ASCII characters (header values that name things)."""
    return isinstance(value, str) and PRINTABLE_ASCII.fullmatch(value) is not None
