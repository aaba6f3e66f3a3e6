"""Per-CT firewall: options, rules and IP sets, as kept in ``/etc/pve/firewall/<vmid>.fw``.

Each list or object has its own digest, as in pve-firewall (``copy_list_with_digest`` /
``copy_opject_with_digest`` in src/PVE/Firewall.pm): the options, the rule list, the list
of IP sets and each IP set's entries. An endpoint checks only the digest of what it
changes, so a changed option does not invalidate a digest read from the rules. A new rule
goes to the top (position 0, the others shift down) and stays disabled unless ``enable=1``
is given; this is why clients must never identify rules by position.
"""

import copy
import hashlib
import ipaddress
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

# pve-firewall src/PVE/Firewall.pm $cluster_option_properties (the ones a client of ours may set;
# log_ratelimit is left out). ``enable`` is an integer: > 1 is stored as the time (anti-lockout).
CLUSTER_OPTIONS_SPEC = {
    "enable": P(type="integer", minimum=0), "ebtables": P(type="boolean"),
    "policy_in": P(enum=POLICIES), "policy_out": P(enum=POLICIES),
    "policy_forward": P(enum=("ACCEPT", "DROP")),
}

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

    def clone(self) -> "Firewall":
        return copy.deepcopy(self)

    def reload(self) -> None:
        """The IP sets as ``save_vmfw_conf`` writes them and ``load_vmfw_conf`` reads them back
        (src/PVE/Firewall.pm ``$format_ipsets``, ``generic_fw_config_parser``): names
        lower-cased (of two that collide, the later section's entries win), entries
        de-duplicated and sorted by cidr."""
        ipsets = {}
        for name in sorted(self.ipsets):
            ipset = self.ipsets[name]
            entries = {}
            for entry in ipset["entries"]:
                entries.setdefault(entry["cidr"], entry)
            earlier = ipsets.get(name.lower(), {})
            ipsets[name.lower()] = {"comment": ipset.get("comment") or earlier.get("comment"),
                                    "entries": [entries[cidr] for cidr in sorted(entries)]}
        self.ipsets = ipsets

    # ------------------------------------------------------------ options

    @property
    def options_digest(self) -> str:
        return object_digest(self.options)

    def options_view(self) -> dict:
        view = {key: value for key, value in self.options.items() if value is not None}
        view["digest"] = self.options_digest
        return view

    def set_options(self, params: dict, delete: list, digest: str | None) -> None:
        """pve-firewall src/PVE/API2/Firewall/VM.pm ``set_options``: the options' own digest."""
        check_digest(self.options_digest, digest)
        for key in delete:
            if key not in OPTIONS_SPEC:
                raise ParamError({"delete": f"no such option '{key}'"})
            self.options.pop(key, None)
        self.options.update(params)

    # ------------------------------------------------------------ rules

    @property
    def rules_digest(self) -> str:
        """Rules.pm ``get_rules``: ``copy_list_with_digest`` over the rules (``pos`` added after)."""
        return list_digest(self._stored_rules())

    def _stored_rules(self) -> list:
        """The rules as PVE's parser keeps them: with ``ipversion`` when an address gives one."""
        stored = []
        for rule in self.rules:
            rule = dict(rule)
            version = _ip_version(rule.get("source"), rule.get("dest"))
            if version:
                rule["ipversion"] = version
            stored.append(rule)
        return stored

    def rules_view(self) -> list:
        digest = self.rules_digest
        return [dict(rule, pos=pos, digest=digest) for pos, rule in enumerate(self._stored_rules())]

    def rule_view(self, pos: int) -> dict:
        self._rule_at(pos)
        return self.rules_view()[pos]

    def _rule_at(self, pos: int) -> dict:
        if pos < 0 or pos >= len(self.rules):
            raise fail(f"no rule at position {pos}")
        return self.rules[pos]

    def add_rule(self, params: dict) -> None:
        """New rules go to the top, disabled unless ``enable`` was given.

        Rules.pm ``register_create_rule`` takes a ``digest`` but never checks it.
        """
        rule = _copy_rule_data({}, {key: value for key, value in params.items() if key != "pos"})
        if params.get("enable") is None:
            rule["enable"] = 0
        self._verify_rule(rule)
        self.rules.insert(0, rule)

    def update_rule(self, pos: int, params: dict, delete: list, moveto: int | None,
                    digest: str | None) -> None:
        """Rules.pm ``register_update_rule``: the rule list's digest first, then the position.

        ``moveto`` puts the rule before the one that was at ``moveto`` (so moving down lands
        at ``moveto - 1``), or last when ``moveto`` is past the end; other arguments are ignored.
        """
        check_digest(self.rules_digest, digest)
        rule = self._rule_at(pos)
        if moveto is not None and moveto != pos:
            self.rules.pop(pos)
            self.rules.insert(moveto if moveto < pos else moveto - 1, rule)
            return
        updated = dict(rule)
        for key in delete:  # PVE::Firewall::delete_rule_properties
            if key not in RULE_FIELDS:
                raise ParamError({"delete": f"no such property ('{key}')"})
            if key in ("type", "action"):
                raise ParamError({"delete": f"unable to delete required property '{key}'"})
            updated.pop(key, None)
        _copy_rule_data(updated, params)
        self._verify_rule(updated)
        self.rules[pos] = updated

    def delete_rule(self, pos: int, digest: str | None) -> None:
        check_digest(self.rules_digest, digest)
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
    # pve-firewall src/PVE/API2/Firewall/IPSet.pm (BaseIPSetList and IPSetBase)

    def _ipset_list(self) -> list:
        """``$get_ipset_list``: name and (when set) comment, sorted by name."""
        result = []
        for name, ipset in sorted(self.ipsets.items()):
            entry = {"name": name}
            if ipset.get("comment"):
                entry["comment"] = ipset["comment"]
            result.append(entry)
        return result

    @property
    def ipsets_digest(self) -> str:
        return list_digest(self._ipset_list())

    def ipsets_view(self) -> list:
        digest = self.ipsets_digest
        return [dict(entry, digest=digest) for entry in self._ipset_list()]

    def _ipset(self, name: str) -> dict:
        if name not in self.ipsets:
            raise fail(f"no such IPSet '{name}'")
        return self.ipsets[name]

    def create_ipset(self, name: str, comment: str | None, rename: str | None,
                     digest: str | None) -> None:
        """``register_create``: the list's digest is checked on a rename only."""
        if rename:
            check_digest(self.ipsets_digest, digest)
            if rename not in self.ipsets:
                raise ParamError({"name": f"IPSet '{rename}' does not exist"})
            if name in self.ipsets and name != rename:
                raise ParamError({"name": f"IPSet '{name}' does already exist"})
            self.ipsets[name] = self.ipsets.pop(rename)
            if comment is not None:
                self.ipsets[name]["comment"] = comment
            return
        if name in self.ipsets:
            raise ParamError({"name": f"IPSet '{name}' already exists"})
        self.ipsets[name] = {"comment": comment, "entries": []}

    def delete_ipset(self, name: str, force: bool) -> None:
        """``register_delete_ipset`` has no ``digest`` parameter."""
        ipset = self._ipset(name)
        if ipset["entries"] and not force:
            raise fail(f"IPSet '{name}' is not empty")
        del self.ipsets[name]

    def ipset_digest(self, name: str) -> str:
        return list_digest(self._ipset(name)["entries"])

    def ipset_entries(self, name: str) -> list:
        digest = self.ipset_digest(name)
        return [dict(entry, digest=digest) for entry in self._ipset(name)["entries"]]

    def ipset_entry(self, name: str, cidr: str) -> dict:
        for entry in self.ipset_entries(name):
            if entry["cidr"] == cidr:
                return entry
        raise ParamError({"cidr": "no such IP/Network"})

    def add_ipset_entry(self, name: str, cidr: str, comment: str | None, nomatch: int | None) -> None:
        """``register_create_ip``: no digest; the address normalised as PVE's config parser
        does and refused when already there (``reload`` sorts the entries)."""
        ipset = self._ipset(name)
        cidr = normalize_ipset_cidr(cidr)
        if any(entry["cidr"] == cidr for entry in ipset["entries"]):
            raise ParamError({"cidr": f"address '{cidr}' already exists"})
        if re.search(r"/0+$", cidr):
            raise ParamError({"cidr": "a zero prefix is not allowed in ipset entries"})
        entry = {"cidr": cidr}
        if nomatch:
            entry["nomatch"] = 1
        if comment:
            entry["comment"] = comment
        ipset["entries"].append(entry)

    def update_ipset_entry(self, name: str, cidr: str, comment: str | None,
                           nomatch: int | None, digest: str | None) -> None:
        """``register_update_ip``: the IP set's digest; ``comment`` and ``nomatch`` are both
        replaced (one left out is removed)."""
        check_digest(self.ipset_digest(name), digest)
        for entry in self._ipset(name)["entries"]:
            if entry["cidr"] == cidr:
                entry.pop("comment", None)
                entry.pop("nomatch", None)
                if nomatch:
                    entry["nomatch"] = 1
                if comment:
                    entry["comment"] = comment
                return
        raise ParamError({"cidr": "no such IP/Network"})

    def delete_ipset_entry(self, name: str, cidr: str, digest: str | None) -> None:
        """``register_delete_ip``: the IP set's digest; an address that is not there is no error."""
        check_digest(self.ipset_digest(name), digest)
        ipset = self._ipset(name)
        ipset["entries"] = [entry for entry in ipset["entries"] if entry["cidr"] != cidr]


@dataclass
class ClusterFirewall:
    """``/etc/pve/firewall/cluster.fw``'s options (API2/Firewall/Cluster.pm ``get_options``/``set_options``)."""

    options: dict = field(default_factory=dict)

    def options_view(self) -> dict:
        return dict(self.options, digest=object_digest(self.options))

    def set_options(self, params: dict, delete: list, digest: str | None, now: int) -> None:
        check_digest(object_digest(self.options), digest)
        for key in delete:
            if key not in CLUSTER_OPTIONS_SPEC:
                raise ParamError({"delete": f"no such option '{key}'"})
            self.options.pop(key, None)
        if params.get("enable") is not None and int(params["enable"]) > 1:
            params = dict(params, enable=now)
        self.options.update(params)

    @property
    def enabled(self) -> bool:
        return bool(int(self.options.get("enable") or 0))


def _copy_rule_data(rule: dict, params: dict) -> dict:
    """src/PVE/Firewall.pm ``copy_rule_data`` (create and update): ``''`` or ``-`` deletes a field."""
    for key, value in params.items():
        if value is None:
            continue
        if value in ("", "-"):
            rule.pop(key, None)
        else:
            rule[key] = value
    return rule


def check_digest(current: str, given: str | None) -> None:
    """``PVE::Tools::assert_if_modified``."""
    if given and given != current:
        raise fail("detected modified configuration - file changed by other user? Try again.")


def _digest_lines(sha, item: dict) -> None:
    for key in sorted(item):
        value = item[key]
        if value is not None and not isinstance(value, (dict, list)):
            sha.update(f"{key}:{value}\n".encode())


def list_digest(items: list) -> str:
    """``PVE::Firewall::copy_list_with_digest``: SHA-1 of ``key:value`` lines, entry by entry."""
    sha = hashlib.sha1()
    for item in items:
        _digest_lines(sha, item)
    return sha.hexdigest()


def object_digest(item: dict) -> str:
    """``PVE::Firewall::copy_opject_with_digest`` (sic): the same over one object."""
    sha = hashlib.sha1()
    _digest_lines(sha, item)
    return sha.hexdigest()


def normalize_ipset_cidr(cidr: str) -> str:
    """``clean_cidr`` then ``parse_ip_or_cidr`` (src/PVE/Firewall.pm): host bits of a network
    cleared, a /32 (IPv4) or /128 (IPv6) dropped: ``10.0.0.5/24`` -> ``10.0.0.0/24``,
    ``10.0.0.5/32`` -> ``10.0.0.5``."""
    address, length = (cidr.split("/", 1) + [""])[:2]
    cleaned = cidr
    if length not in ("", "0"):  # Perl's ``return $cidr if !$len``
        cleaned = f"{ipaddress.ip_network(cidr, strict=False).network_address}/{length}"
    version = ipaddress.ip_address(address).version
    full = "/32" if version == 4 else "/128"
    return cleaned[:-len(full)] if cleaned.endswith(full) else cleaned


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
