"""Per-CT firewall: options, rules and IP sets, as kept in ``/etc/pve/firewall/<vmid>.fw``.

One digest covers the whole file, as in PVE. A new rule goes to the top (position 0,
the others shift down) and stays disabled unless ``enable=1`` is given; this is why
clients must never identify rules by position.
"""

import copy
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field

from . import schema
from .errors import ParamError, fail
from .schema import P

LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog")
POLICIES = ("ACCEPT", "REJECT", "DROP")

OPTIONS_SPEC = {
    "enable": P(type="boolean"), "dhcp": P(type="boolean"), "ndp": P(type="boolean"),
    "radv": P(type="boolean"), "macfilter": P(type="boolean"), "ipfilter": P(type="boolean"),
    "policy_in": P(enum=POLICIES), "policy_out": P(enum=POLICIES),
    "log_level_in": P(enum=LOG_LEVELS), "log_level_out": P(enum=LOG_LEVELS),
}

MACROS = ("Amanda", "Auth", "BGP", "BitTorrent", "Ceph", "DHCPfwd", "DHCPv6", "DNS",
          "Distcc", "FTP", "Finger", "GNUnet", "GRE", "Git", "HKP", "HTTP", "HTTPS", "ICMP",
          "ICQ", "IMAP", "IMAPS", "IPIP", "IPsec", "IPsecah", "IPsecnat", "IRC", "Jetdirect",
          "L2TP", "LDAP", "LDAPS", "MDNS", "MSNP", "MSSQL", "Mail", "Munin", "MySQL", "NNTP",
          "NNTPS", "NTP", "NeighborDiscovery", "OSPF", "OpenVPN", "PCA", "PMG", "POP3", "POP3S",
          "PPtP", "Ping", "PostgreSQL", "Printer", "RDP", "RIP", "RNDC", "Razor", "Rdate",
          "Rsync", "SANE", "SMB", "SMBswat", "SMTP", "SMTPS", "SNMP", "SPAMD", "SPICEproxy",
          "SSH", "SVN", "SixXS", "Squid", "Submission", "Syslog", "TFTP", "Telnet", "Telnets",
          "Time", "Trcrt", "VNC", "VNCL", "Web", "Webcache", "Webmin", "Whois")
_MACRO_BY_LOWER = {name.lower(): name for name in MACROS}
PROTOCOLS_WITH_PORTS = {"tcp", "udp", "udplite", "sctp", "dccp", "6", "17", "33", "132", "136"}
_PROTOCOL_RE = re.compile(r"[a-z][a-z0-9\-]*|\d{1,3}", re.IGNORECASE)
_PORT_ITEM_RE = re.compile(r"(\d+|[a-z][a-z0-9\-]*)(:\d+)?", re.IGNORECASE)
_IPSET_NAME_RE = r"[A-Za-z][A-Za-z0-9\-_]+"

RULE_FIELDS = {
    "type": P(enum=("in", "out", "group")),
    "action": P(pattern=r"[A-Za-z][A-Za-z0-9\-_]+"),
    "macro": P(max_length=128),
    "enable": P(type="integer", minimum=0),
    "source": P(max_length=512),
    "dest": P(max_length=512),
    "proto": P(),
    "dport": P(),
    "sport": P(),
    "iface": P(pattern=r"net\d+"),
    "log": P(enum=LOG_LEVELS),
    "comment": P(),
    "icmp-type": P(),
}

IPSET_NAME = P(pattern=_IPSET_NAME_RE, max_length=64)


@dataclass
class Firewall:
    options: dict = field(default_factory=dict)
    rules: list = field(default_factory=list)
    ipsets: dict = field(default_factory=dict)  # name -> {"comment": str|None, "entries": [...]}

    @property
    def digest(self) -> str:
        text = json.dumps([self.options, self.rules, self.ipsets], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()

    def clone(self) -> "Firewall":
        return copy.deepcopy(self)

    def check_digest(self, digest: str | None) -> None:
        if digest and digest != self.digest:
            raise fail("detected modified configuration - file changed by other user? Try again.")

    # ------------------------------------------------------------ options

    def options_view(self) -> dict:
        view = dict(self.options)
        view["digest"] = self.digest
        return view

    def set_options(self, params: dict, delete: list, digest: str | None) -> None:
        self.check_digest(digest)
        for key in delete:
            if key not in OPTIONS_SPEC:
                raise ParamError({"delete": f"unknown option '{key}'"})
            self.options.pop(key, None)
        self.options.update(params)

    # ------------------------------------------------------------ rules

    def rules_view(self) -> list:
        return [self._rule_view(pos, rule) for pos, rule in enumerate(self.rules)]

    def rule_view(self, pos: int) -> dict:
        return self._rule_view(pos, self._rule_at(pos))

    def _rule_view(self, pos: int, rule: dict) -> dict:
        view = dict(rule)
        view["pos"] = pos
        view["digest"] = self.digest
        version = _ip_version(rule.get("source"), rule.get("dest"))
        if version:
            view["ipversion"] = version
        return view

    def _rule_at(self, pos: int) -> dict:
        if pos < 0 or pos >= len(self.rules):
            raise fail(f"no rule at position {pos}")
        return self.rules[pos]

    def add_rule(self, params: dict, digest: str | None) -> None:
        """New rules go to the top, disabled unless ``enable`` was given."""
        self.check_digest(digest)
        rule = {key: value for key, value in params.items() if key != "pos"}
        rule.setdefault("enable", 0)
        self._verify_rule(rule)
        self.rules.insert(0, rule)

    def update_rule(self, pos: int, params: dict, delete: list, moveto: int | None,
                    digest: str | None) -> None:
        self.check_digest(digest)
        rule = self._rule_at(pos)
        if moveto is not None:
            self.rules.pop(pos)
            self.rules.insert(min(moveto, len(self.rules)), rule)
            return
        updated = dict(rule)
        for key in delete:
            if key not in RULE_FIELDS or key in ("type", "action"):
                raise ParamError({"delete": f"unable to delete '{key}'"})
            updated.pop(key, None)
        updated.update(params)
        self._verify_rule(updated)
        self.rules[pos] = updated

    def delete_rule(self, pos: int, digest: str | None) -> None:
        self.check_digest(digest)
        self._rule_at(pos)
        self.rules.pop(pos)

    def _verify_rule(self, rule: dict) -> None:
        errors = {}
        _verify_action(rule, errors)
        _verify_macro(rule, errors)
        _verify_ports(rule, errors)
        for key in ("source", "dest"):
            if rule.get(key):
                self._verify_address(key, rule[key], errors)
        if errors:
            raise ParamError(errors)

    def _verify_address(self, key: str, value: str, errors: dict) -> None:
        if value.startswith("+"):
            name = value[1:].split("/")[-1]
            if name not in self.ipsets:
                errors[key] = f"no such ipset '{name}'"
            return
        for item in value.split(","):
            try:
                if "-" in item:
                    first, last = item.split("-", 1)
                    ipaddress.ip_address(first)
                    ipaddress.ip_address(last)
                else:
                    ipaddress.ip_network(item, strict=False)
            except ValueError:
                errors[key] = f"invalid address '{item}'"
                return

    # ------------------------------------------------------------ IP sets

    def ipsets_view(self) -> list:
        digest = self.digest
        result = []
        for name, ipset in sorted(self.ipsets.items()):
            entry = {"name": name, "digest": digest}
            if ipset.get("comment"):
                entry["comment"] = ipset["comment"]
            result.append(entry)
        return result

    def _ipset(self, name: str) -> dict:
        if name not in self.ipsets:
            raise fail(f"no such IPSet '{name}'")
        return self.ipsets[name]

    def create_ipset(self, name: str, comment: str | None, rename: str | None,
                     digest: str | None) -> None:
        self.check_digest(digest)
        if rename:
            ipset = self._ipset(rename)
            if name in self.ipsets:
                raise fail(f"IPSet '{name}' already exists")
            self.ipsets[name] = self.ipsets.pop(rename)
            if comment is not None:
                ipset["comment"] = comment
            return
        if name in self.ipsets:
            raise fail(f"IPSet '{name}' already exists")
        self.ipsets[name] = {"comment": comment, "entries": []}

    def delete_ipset(self, name: str, force: bool, digest: str | None) -> None:
        self.check_digest(digest)
        ipset = self._ipset(name)
        if ipset["entries"] and not force:
            raise fail(f"IPSet '{name}' is not empty")
        del self.ipsets[name]

    def ipset_entries(self, name: str) -> list:
        digest = self.digest
        return [dict(entry, digest=digest) for entry in self._ipset(name)["entries"]]

    def ipset_entry(self, name: str, cidr: str) -> dict:
        for entry in self._ipset(name)["entries"]:
            if entry["cidr"] == cidr:
                return dict(entry, digest=self.digest)
        raise fail("no such IP/Network")

    def add_ipset_entry(self, name: str, cidr: str, comment: str | None, nomatch: int | None) -> None:
        ipset = self._ipset(name)
        if any(entry["cidr"] == cidr for entry in ipset["entries"]):
            raise fail(f"entry '{cidr}' already exists")
        entry = {"cidr": cidr}
        if comment is not None:
            entry["comment"] = comment
        if nomatch:
            entry["nomatch"] = 1
        ipset["entries"].append(entry)

    def update_ipset_entry(self, name: str, cidr: str, comment: str | None,
                           nomatch: int | None, digest: str | None) -> None:
        self.check_digest(digest)
        for entry in self._ipset(name)["entries"]:
            if entry["cidr"] == cidr:
                if comment is not None:
                    entry["comment"] = comment
                if nomatch is not None:
                    entry.pop("nomatch", None)
                    if nomatch:
                        entry["nomatch"] = 1
                return
        raise fail("no such IP/Network")

    def delete_ipset_entry(self, name: str, cidr: str, digest: str | None) -> None:
        self.check_digest(digest)
        ipset = self._ipset(name)
        kept = [entry for entry in ipset["entries"] if entry["cidr"] != cidr]
        if len(kept) == len(ipset["entries"]):
            raise fail("no such IP/Network")
        ipset["entries"] = kept


def _verify_action(rule: dict, errors: dict) -> None:
    if rule.get("type") == "group":
        errors["action"] = f"no such security group '{rule.get('action')}'"
    elif rule.get("action") not in POLICIES:
        errors["action"] = f"value '{rule.get('action')}' does not have a value in the " \
                           f"enumeration '{', '.join(POLICIES)}'"


def _verify_macro(rule: dict, errors: dict) -> None:
    macro = rule.get("macro")
    if macro is None:
        return
    canonical = _MACRO_BY_LOWER.get(macro.lower())
    if canonical is None:
        errors["macro"] = f"unknown macro '{macro}'"
    else:
        rule["macro"] = canonical


def _verify_ports(rule: dict, errors: dict) -> None:
    proto = rule.get("proto")
    if proto is not None and not _PROTOCOL_RE.fullmatch(proto):
        errors["proto"] = f"unknown protocol '{proto}'"
    for key in ("dport", "sport"):
        value = rule.get(key)
        if not value:
            continue
        if not all(_PORT_ITEM_RE.fullmatch(item) for item in value.split(",")):
            errors[key] = f"invalid port '{value}'"
        elif not proto:
            errors["proto"] = f"missing property - '{key}' requires this property"
        elif proto.lower() not in PROTOCOLS_WITH_PORTS:
            errors[key] = f"protocol '{proto}' does not support ports"


def _ip_version(*values) -> int | None:
    for value in values:
        if not value or value.startswith("+"):
            continue
        first = value.split(",")[0].split("-")[0]
        try:
            return ipaddress.ip_network(first, strict=False).version
        except ValueError:
            continue
    return None


def ipset_cidr(value: str, _name: str) -> None:
    schema.cidr_or_ip(value, _name)
