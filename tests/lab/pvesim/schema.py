"""Parameter validation with PVE's JSON-schema rules and messages.

PVE checks every parameter against the method's schema before any code runs and
answers ``400 Parameter verification failed.`` with one message per bad parameter.
The messages below are PVE's own wording, because clients (and tests) match on them.
Booleans are only ``1`` or ``0`` at the top level; inside property strings such as
``net0`` PVE also accepts yes/no/on/off/true/false.
"""

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

from .errors import ParamError

MISSING = "property is missing and it is not optional"
UNDEFINED = "property is not defined in schema and the schema does not allow additional properties"

_INTEGER_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class FormatError(ValueError):
    """A format check failed; PVE prefixes the message with ``invalid format - ``."""


@dataclass(frozen=True)
class P:
    """One parameter of a method's schema."""

    type: str = "string"          # string | integer | number | boolean
    optional: bool = True
    enum: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    format: Callable[[str, str], None] | None = None  # (value, name); raises FormatError


def required(**kwargs) -> P:
    return P(optional=False, **kwargs)


def _check_type(spec: P, raw: str):
    """Return (typed value, error message)."""
    if spec.type == "boolean":
        if raw in ("1", "0"):
            return int(raw), None
        return None, f"type check ('boolean') failed - got '{raw}'"
    if spec.type == "integer":
        if _INTEGER_RE.fullmatch(raw):
            return int(raw), None
        return None, f"type check ('integer') failed - got '{raw}'"
    if spec.type == "number":
        if _NUMBER_RE.fullmatch(raw):
            return float(raw), None
        return None, f"type check ('number') failed - got '{raw}'"
    return raw, None


def _check_range(spec: P, value) -> str | None:
    if spec.minimum is not None and value < spec.minimum:
        return f"value must have a minimum value of {_num(spec.minimum)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"value must have a maximum value of {_num(spec.maximum)}"
    return None


def _check_string(spec: P, value: str, name: str) -> str | None:
    if spec.max_length is not None and len(value) > spec.max_length:
        return f"value may only be {spec.max_length} characters long"
    if spec.min_length is not None and len(value) < spec.min_length:
        return f"value must be at least {spec.min_length} characters long"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        return "value does not match the regex pattern"
    if spec.format is not None:
        try:
            spec.format(value, name)
        except FormatError as exc:
            return f"invalid format - {exc}"
    return None


def _num(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check_value(spec: P, raw: str, name: str):
    """Validate one raw (string) value; return (typed value, error message or None)."""
    value, error = _check_type(spec, raw)
    if error:
        return None, error
    if spec.type in ("integer", "number"):
        error = _check_range(spec, value)
    elif spec.type == "string":
        error = _check_string(spec, value, name)
    if error is None and spec.enum is not None and value not in spec.enum:
        error = f"value '{raw}' does not have a value in the enumeration '{', '.join(spec.enum)}'"
    return (None, error) if error else (value, None)


def validate(raw: dict, spec: dict) -> dict:
    """Check ``raw`` (name -> string) against ``spec``; raise ParamError with all errors."""
    errors = {}
    typed = {}
    for name, value in raw.items():
        if name not in spec:
            errors[name] = UNDEFINED
            continue
        typed_value, error = check_value(spec[name], value, name)
        if error:
            errors[name] = error
        else:
            typed[name] = typed_value
    for name, param in spec.items():
        if not param.optional and name not in raw:
            errors[name] = MISSING
    if errors:
        raise ParamError(errors)
    return typed


# ---------------------------------------------------------------- property strings

_BOOL_TRUE = {"1", "yes", "on", "true"}
_BOOL_FALSE = {"0", "no", "off", "false"}


def parse_property_string(value: str, props: dict, name: str, default_key: str | None = None) -> dict:
    """Parse ``key=value,key=value`` like PVE's parse_property_string.

    Raises FormatError with PVE's ``format error`` text naming ``<param>.<key>``.
    """
    result = {}
    problems = []
    for part in filter(None, value.split(",")):
        if "=" in part:
            key, item = part.split("=", 1)
        elif default_key is not None and default_key not in result:
            key, item = default_key, part
        else:
            problems.append(f"{name}.{part}: {UNDEFINED}")
            continue
        if key in result:
            problems.append(f"{name}.{key}: duplicate key in comma-separated list property")
            continue
        if key not in props:
            problems.append(f"{name}.{key}: {UNDEFINED}")
            continue
        typed, error = _check_inner(props[key], item, f"{name}.{key}")
        if error:
            problems.append(f"{name}.{key}: {error}")
        else:
            result[key] = typed
    for key, spec in props.items():
        if not spec.optional and key not in result:
            problems.append(f"{name}.{key}: {MISSING}")
    if problems:
        raise FormatError("format error\n" + "\n".join(problems))
    return result


def _check_inner(spec: P, raw: str, name: str):
    """Inner values of property strings accept PVE's relaxed booleans."""
    if spec.type == "boolean":
        lowered = raw.lower()
        if lowered in _BOOL_TRUE:
            return 1, None
        if lowered in _BOOL_FALSE:
            return 0, None
        return None, f"type check ('boolean') failed - got '{raw}'"
    return check_value(spec, raw, name)


def print_property_string(data: dict, props: dict, default_key: str | None = None) -> str:
    """Print like PVE: the default key bare, then required keys, then the rest sorted."""
    parts = []
    if default_key is not None and default_key in data:
        parts.append(str(data[default_key]))
    required_keys = [k for k, s in props.items() if not s.optional and k in data and k != default_key]
    rest = sorted(k for k in data if k not in required_keys and k != default_key)
    parts.extend(f"{k}={data[k]}" for k in required_keys + rest)
    return ",".join(parts)


# ---------------------------------------------------------------- formats


def split_list(value: str) -> list[str]:
    """PVE's split_list: items separated by commas, semicolons, spaces or NULs."""
    return [item for item in re.split(r"[\0\s,;]+", value) if item]


_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_DNS_NAME_RE = re.compile(rf"(?:{_DNS_LABEL}\.)*{_DNS_LABEL}")
TAG_RE = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.IGNORECASE)
_CONFIGID_RE = re.compile(r"[a-z][a-z0-9_\-]+", re.IGNORECASE)
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def dns_name(value: str, _name: str) -> None:
    if not _DNS_NAME_RE.fullmatch(value):
        raise FormatError("value does not look like a valid DNS name")


def tag_list(value: str, _name: str) -> None:
    for tag in split_list(value):
        if not TAG_RE.fullmatch(tag):
            raise FormatError(f"invalid tag '{tag}'")


def normalize_tags(value: str) -> str:
    """Tags as PVE 8 stores them: lower-cased, de-duplicated, sorted, ';'-separated.

    pve-guest-common src/PVE/GuestHelpers.pm ``get_unique_tags`` (5.2.x, PVE 8), called by
    pve-container's ``update_pct_config``, with datacenter.cfg's default ``tag-style``
    (``case-sensitive`` off, ``ordering`` not ``config``): ``Web;cloudpod,Web`` ->
    ``cloudpod;web``. The simulator has no datacenter.cfg, so that default always applies.
    """
    return ";".join(sorted(set(tag.lower() for tag in split_list(value))))


def configid_list(value: str, _name: str) -> None:
    for item in split_list(value):
        if not _CONFIGID_RE.fullmatch(item):
            raise FormatError(f"invalid configuration ID '{item}'")


def vmid_list(value: str, _name: str) -> None:
    for item in split_list(value):
        if not item.isdigit() or not 100 <= int(item) <= 999999999:
            raise FormatError(f"value '{item}' does not look like a valid VM ID")


def ipv4(value: str, _name: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise FormatError("value does not look like a valid IPv4 address") from exc


def ipv6(value: str, _name: str) -> None:
    try:
        ipaddress.IPv6Address(value)
    except ValueError as exc:
        raise FormatError("value does not look like a valid IPv6 address") from exc


def ip_address(value: str, _name: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise FormatError("value does not look like a valid IP address") from exc


def ip_list(value: str, name: str) -> None:
    for item in split_list(value):
        ip_address(item, name)


def cidr_or_ip(value: str, _name: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise FormatError("value does not look like a valid CIDR network") from exc


def _ipv4_cidr(value: str, _name: str) -> None:
    if value in ("dhcp", "manual"):
        return
    try:
        ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise FormatError("value does not look like a valid IPv4 network configuration") from exc
    if "/" not in value:
        raise FormatError("value does not look like a valid IPv4 network configuration")


def _ipv6_cidr(value: str, _name: str) -> None:
    if value in ("auto", "dhcp", "manual"):
        return
    try:
        ipaddress.IPv6Interface(value)
    except ValueError as exc:
        raise FormatError("value does not look like a valid IPv6 network configuration") from exc


def unicast_mac(value: str, _name: str) -> None:
    if not _MAC_RE.fullmatch(value) or int(value[:2], 16) & 1:
        raise FormatError("value does not look like a valid unicast MAC address")


NET_PROPS = {
    "name": required(pattern=r"[-_.\w\d]+"),
    "bridge": P(pattern=r"[-_.\w\d]+"),
    "firewall": P(type="boolean"),
    "gw": P(format=ipv4),
    "gw6": P(format=ipv6),
    "hwaddr": P(format=unicast_mac),
    "ip": P(format=_ipv4_cidr),
    "ip6": P(format=_ipv6_cidr),
    "link_down": P(type="boolean"),
    "mtu": P(type="integer", minimum=64, maximum=65535),
    "rate": P(type="number", minimum=0),
    "tag": P(type="integer", minimum=1, maximum=4094),
    "trunks": P(pattern=r"\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*"),
    "type": P(enum=("veth",)),
}

ROOTFS_PROPS = {
    "volume": required(),
    "size": P(pattern=r"\d+(\.\d+)?[KMGT]?"),
    "acl": P(type="boolean"),
    "mountoptions": P(pattern=r"(?:noatime|lazytime|nodev|nosuid|noexec|discard)(?:;(?:noatime|lazytime|nodev|nosuid|noexec|discard))*"),
    "quota": P(type="boolean"),
    "replicate": P(type="boolean"),
    "ro": P(type="boolean"),
    "shared": P(type="boolean"),
}

STARTUP_PROPS = {
    "order": P(type="integer", minimum=0),
    "up": P(type="integer", minimum=0),
    "down": P(type="integer", minimum=0),
}

FEATURE_PROPS = {
    "nesting": P(type="boolean"),
    "keyctl": P(type="boolean"),
    "fuse": P(type="boolean"),
    "mknod": P(type="boolean"),
    "force_rw_sys": P(type="boolean"),
    "mount": P(pattern=r"[a-z0-9]+(?:;[a-z0-9]+)*"),
}

PRUNE_PROPS = {
    "keep-all": P(type="boolean"),
    "keep-last": P(type="integer", minimum=1),
    "keep-hourly": P(type="integer", minimum=1),
    "keep-daily": P(type="integer", minimum=1),
    "keep-weekly": P(type="integer", minimum=1),
    "keep-monthly": P(type="integer", minimum=1),
    "keep-yearly": P(type="integer", minimum=1),
}


def net_config(value: str, name: str) -> None:
    parse_property_string(value, NET_PROPS, name)


def rootfs_config(value: str, name: str) -> None:
    parse_property_string(value, ROOTFS_PROPS, name, default_key="volume")


def startup_config(value: str, name: str) -> None:
    parse_property_string(value, STARTUP_PROPS, name, default_key="order")


def features_config(value: str, name: str) -> None:
    parse_property_string(value, FEATURE_PROPS, name)


def prune_backups(value: str, name: str) -> None:
    parsed = parse_property_string(value, PRUNE_PROPS, name)
    if parsed.get("keep-all") and len(parsed) > 1:
        raise FormatError("keep-all cannot be set together with other options.")


# ---------------------------------------------------------------- sizes

_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def parse_size(text: str) -> int:
    """``8G`` -> bytes; a bare number is bytes, like PVE's parse_size."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text)
    if not match:
        raise ValueError(f"invalid size string '{text}'")
    number, unit = match.groups()
    return int(float(number) * _UNITS.get(unit, 1))


def format_size(size: int) -> str:
    """Bytes -> the shortest exact ``<n><unit>`` as PVE prints volume sizes."""
    for unit in ("T", "G", "M", "K"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)
