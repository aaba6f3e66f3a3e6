"""The LXC backend's firewall: each CT's PVE firewall as nftables rules on its veth.

What pve-firewall compiles (src/PVE/Firewall.pm, iptables backend), made with what this kernel
has. Semantics kept:

- nothing unless the datacenter firewall is on, the CT's ``enable`` is set, ``netN`` has
  ``firewall=1`` and the CT runs (its veth exists);
- invalid connections dropped, established/related accepted, before anything else
  (``PVEFW-FORWARD``);
- IN (to the CT): ``dhcp`` answers (udp 67->68, 547->546) unless ``dhcp`` is explicitly 0
  (``ruleset_create_vm_chain`` tests ``!(defined($options->{dhcp}) && $options->{dhcp} == 0)``:
  an unset ``dhcp`` lets DHCP through although the schema says default 0), then the enabled
  ``in`` rules in order (proto, dport, sport, source, dest, icmp-type, iface, a few macros), then
  ``policy_in`` (unset: DROP);
- OUT (from the CT): the MAC filter (``macfilter`` unset = on), DHCP requests, then ``ipfilter``:
  the CT may send IPv4 only from net0's configured address and the entries of IP set
  ``ipfilter-netN`` (PVE adds no address for ``ip=dhcp``), IPv6 only from its MAC's link-local
  address, configured ``ip6`` and the set; ARP only with those IPv4 addresses (or 0.0.0.0, the
  probe of a DHCP client) - PVE's ARP filter covers configured addresses only, so this is
  stricter; then the ``out`` rules, then ``policy_out`` (unset: ACCEPT).
- Traffic the host itself sends to a CT (Pebble's HTTP-01 check, dnsmasq's DHCP answers, a test's
  ssh) goes through the CT's IN rules too: on PVE the CT's firewall sits between the bridge and the
  CT (the ``fwbr`` bridge), so the host is filtered like any other sender.

What differs, because this kernel has neither conntrack nor reject in the bridge family
(CONFIG_NF_CONNTRACK_BRIDGE, CONFIG_NFT_BRIDGE_REJECT are off): br_netfilter runs the IPv4/IPv6
hooks for bridged packets, so an ``inet`` table reads the connection state there and leaves it in
bits of the packet mark, which the ``bridge`` table's per-veth chains test; a REJECT marks the
packet and the ``inet`` forward hook (run after the bridge decided) answers it (TCP reset, ICMP
port unreachable). Traffic between the host and a CT is not forwarded, so there REJECT acts as
DROP. Logging (``log``, ``log_level_*``) is not done; macros other than those in ``MACROS`` are
not enforced (the rule is left out). Both tables are named after the lab's bridge
(``cloudpods_<bridge>``), so labs on one machine keep their own; ``lab down`` removes them.
"""

import ipaddress
import re
import socket
import subprocess

from .backend import link_local_address

MARK_ESTABLISHED = 0x01000000
MARK_INVALID = 0x02000000
MARK_REJECT = 0x04000000
MARK_KEEP = 0xffffffff ^ (MARK_ESTABLISHED | MARK_INVALID | MARK_REJECT)

# The PVE macros this lab enforces: (proto, dport) pairs (pve-firewall $pve_fw_macros).
MACROS = {
    "SSH": [("tcp", "22")], "HTTP": [("tcp", "80")], "HTTPS": [("tcp", "443")],
    "Web": [("tcp", "80"), ("tcp", "443")], "DNS": [("udp", "53"), ("tcp", "53")],
    "MySQL": [("tcp", "3306")], "SMTP": [("tcp", "25")], "Ping": [("icmp", None)],
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


def table_name(bridge: str) -> str:
    return "cloudpods_" + _SAFE_NAME.sub("_", bridge)


def _on(value, default: bool) -> bool:
    if value is None or value == "":
        return default
    return str(value) not in ("0", "False", "false")


def _ports(value: str | None) -> str | None:
    """PVE's ``80,8000:8100,http`` as an nft set body ``80, 8000-8100, 80``; None if unknown."""
    if not value:
        return None
    items = []
    for item in str(value).split(","):
        bounds = []
        for part in item.split(":"):
            if part.isdigit():
                bounds.append(part)
            else:
                try:
                    bounds.append(str(socket.getservbyname(part)))
                except OSError:
                    return None
        items.append("-".join(bounds))
    return ", ".join(items)


def _addresses(value: str | None, ipsets: dict) -> tuple[list, list] | None:
    """Source/dest ``10.0.0.1,10.1.0.0/16,10.2.0.1-10.2.0.9`` or ``+ipset`` as (v4, v6) items."""
    if not value:
        return None
    v4, v6 = [], []
    items = []
    for item in str(value).split(","):
        if item.startswith("+"):
            items += [entry["cidr"] for entry in ipsets.get(item[1:].lower(), {}).get("entries", [])
                      if not entry.get("nomatch")]
        else:
            items.append(item)
    for item in items:
        first = item.split("-")[0]
        try:
            version = ipaddress.ip_network(first, strict=False).version
        except ValueError:
            continue
        (v4 if version == 4 else v6).append(item)
    return v4, v6


def _set(items) -> str:
    return "{ " + ", ".join(items) + " }"


class Chains:
    """The nft text of one CT interface's IN and OUT chains."""

    def __init__(self, guest: dict, index: int, net: dict):
        self.guest = guest
        self.index = index
        self.net = net
        self.options = guest.get("options") or {}
        self.name = f"ct{guest['vmid']}_net{index}"

    # verdicts: the IN chain decides; the OUT chain only stops what it refuses (``return`` lets the
    # packet go on to the receiver's IN chain, as PVE's OUT chain only sets an accept mark)
    def _verdict(self, action: str, direction: str) -> str:
        if action == "ACCEPT":
            return "accept" if direction == "in" else "return"
        if action == "REJECT":
            return f"meta mark set meta mark | {MARK_REJECT:#010x} return"
        return "drop"

    def _rule_lines(self, rule: dict, direction: str) -> list[str]:
        verdict = self._verdict(rule["action"], direction)
        if rule.get("iface") and rule["iface"] != f"net{self.index}":
            return []
        ipsets = self.guest.get("ipsets") or {}
        matches = []  # (proto, dport) alternatives
        if rule.get("macro"):
            if rule["macro"] not in MACROS:
                return []
            matches = MACROS[rule["macro"]]
        else:
            matches = [(rule.get("proto"), rule.get("dport"))]
        lines = []
        for proto, dport in matches:
            parts = []
            if proto:
                parts.append(f"meta l4proto {proto}")
                if rule.get("icmp-type") and proto in ("icmp", "icmpv6", "ipv6-icmp"):
                    parts.append(f"{'icmp' if proto == 'icmp' else 'icmpv6'} type {rule['icmp-type']}")
            for key, value in (("dport", dport), ("sport", rule.get("sport"))):
                if value:
                    ports = _ports(value)
                    if ports is None:
                        return []
                    parts.append(f"th {key} {_set(ports.split(', '))}")
            families = {"ip": "", "ip6": ""}
            for key, field in (("source", "saddr"), ("dest", "daddr")):
                found = _addresses(rule.get(key), ipsets)
                if found is None:
                    continue
                for family, items in zip(("ip", "ip6"), found):
                    if family not in families:
                        continue
                    if items:
                        families[family] += f" {family} {field} {_set(items)}"
                    else:
                        del families[family]
            for family, address_match in families.items():
                lines.append(" ".join([f"ether type {family}{address_match}"] + parts + [verdict]))
        return lines

    def in_chain(self) -> list[str]:
        lines = ["ether type != { ip, ip6 } return",
                 f"meta mark & {MARK_INVALID:#010x} == {MARK_INVALID:#010x} drop",
                 f"meta mark & {MARK_ESTABLISHED:#010x} == {MARK_ESTABLISHED:#010x} accept"]
        if _on(self.options.get("dhcp"), True):
            lines += ["ether type ip udp sport 67 udp dport 68 accept",
                      "ether type ip6 udp sport 547 udp dport 546 accept"]
        for rule in self.guest.get("rules") or []:
            if rule.get("type") == "in" and _on(rule.get("enable"), False):
                lines += self._rule_lines(rule, "in")
        lines.append(self._verdict(self.options.get("policy_in") or "DROP", "in"))
        return lines

    def _allowed_sources(self) -> tuple[list, list]:
        v4, v6 = [], []
        mac = self.net.get("hwaddr")
        if mac:
            v6 += [str(link_local_address(mac)), "::"]  # '::': duplicate address detection
        for key, target in (("ip", v4), ("ip6", v6)):
            value = self.net.get(key, "")
            if value and value not in ("dhcp", "manual", "auto"):
                target.append(value.split("/")[0])
        ipset = (self.guest.get("ipsets") or {}).get(f"ipfilter-net{self.index}", {})
        for entry in ipset.get("entries", []):
            if entry.get("nomatch"):
                continue
            try:
                version = ipaddress.ip_network(entry["cidr"], strict=False).version
            except ValueError:
                continue
            (v4 if version == 4 else v6).append(entry["cidr"])
        return v4, v6

    def out_chain(self) -> list[str]:
        lines = ["ether type != { ip, ip6, arp } return"]
        mac = self.net.get("hwaddr")
        if mac and _on(self.options.get("macfilter"), True):
            lines.append(f"ether saddr != {mac.lower()} drop")
        ipfilter = _on(self.options.get("ipfilter"), False) or \
            f"ipfilter-net{self.index}" in (self.guest.get("ipsets") or {})
        v4, v6 = self._allowed_sources()
        if ipfilter:
            lines.append(f"ether type arp arp saddr ip != {_set(['0.0.0.0'] + v4)} drop")
        lines += ["ether type arp return",
                  f"meta mark & {MARK_INVALID:#010x} == {MARK_INVALID:#010x} drop",
                  f"meta mark & {MARK_ESTABLISHED:#010x} == {MARK_ESTABLISHED:#010x} return"]
        if _on(self.options.get("dhcp"), True):
            lines += ["ether type ip udp sport 68 udp dport 67 return",
                      "ether type ip6 udp sport 546 udp dport 547 return"]
        if ipfilter:
            lines.append(f"ether type ip ip saddr != {_set(v4)} drop" if v4 else "ether type ip drop")
            lines.append(f"ether type ip6 ip6 saddr != {_set(v6)} drop" if v6 else "ether type ip6 drop")
        for rule in self.guest.get("rules") or []:
            if rule.get("type") == "out" and _on(rule.get("enable"), False):
                lines += self._rule_lines(rule, "out")
        lines.append(self._verdict(self.options.get("policy_out") or "ACCEPT", "out"))
        return lines


def _parse_net(value: str) -> dict:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def filtered_interfaces(guests: list[dict], enabled: bool) -> list[tuple[dict, int, dict]]:
    """(guest, N, netN) of every interface PVE would filter: datacenter on, CT enabled, firewall=1, running."""
    if not enabled:
        return []
    found = []
    for guest in sorted(guests, key=lambda item: item["vmid"]):
        if not guest.get("running") or not _on((guest.get("options") or {}).get("enable"), False):
            continue
        config = guest.get("config") or {}
        for key in sorted(k for k in config if k.startswith("net") and k[3:].isdigit()):
            net = _parse_net(config[key])
            if _on(net.get("firewall"), False):
                found.append((guest, int(key[3:]), net))
    return found


def ruleset(table: str, interfaces: list[tuple[dict, int, dict, str]]) -> str:
    """The whole nft script: both tables replaced at once (``nft -f`` is atomic).

    ``interfaces``: (guest, N, netN, host veth name).
    """
    keep = f"{MARK_KEEP:#010x}"
    mark_state = [f"meta mark set meta mark & {keep}",
                  f"ct state established,related meta mark set meta mark | {MARK_ESTABLISHED:#010x}",
                  f"ct state invalid meta mark set meta mark | {MARK_INVALID:#010x}"]
    reject = f"meta mark & {MARK_REJECT:#010x} == {MARK_REJECT:#010x}"
    out = [f"table inet {table}", f"delete table inet {table}",
           f"table bridge {table}", f"delete table bridge {table}",
           f"table inet {table} {{",
           "  chain prerouting {", "    type filter hook prerouting priority -150; policy accept;",
           *[f"    {line}" for line in mark_state], "  }",
           "  chain output {", "    type filter hook output priority -150; policy accept;",
           *[f"    {line}" for line in mark_state], "  }",
           "  chain forward {", "    type filter hook forward priority 0; policy accept;",
           f"    {reject} meta l4proto tcp reject with tcp reset",
           f"    {reject} reject", "  }",
           "}"]
    forward_out, forward_in, host_out, host_in, chains = [], [], [], [], []
    for guest, index, net, veth in interfaces:
        built = Chains(guest, index, net)
        chains += [f"  chain {built.name}_in {{", *[f"    {line}" for line in built.in_chain()], "  }",
                   f"  chain {built.name}_out {{", *[f"    {line}" for line in built.out_chain()], "  }"]
        forward_out.append(f'iifname "{veth}" jump {built.name}_out')
        forward_in.append(f'oifname "{veth}" jump {built.name}_in')
        host_out.append(f'oifname "{veth}" jump {built.name}_in')
        host_in.append(f'iifname "{veth}" jump {built.name}_out')
    out += [f"table bridge {table} {{",
            # before br_netfilter's forward hook (-1), which runs the inet forward chain above
            "  chain forward {", "    type filter hook forward priority -10; policy accept;",
            *[f"    {line}" for line in forward_out], f"    {reject} accept",
            *[f"    {line}" for line in forward_in], f"    {reject} accept", "  }",
            "  chain output {", "    type filter hook output priority -10; policy accept;",
            *[f"    {line}" for line in host_out], f"    {reject} drop", "  }",
            "  chain input {", "    type filter hook input priority -10; policy accept;",
            *[f"    {line}" for line in host_in], f"    {reject} drop", "  }",
            *chains, "}"]
    return "\n".join(out) + "\n"


def remove(table: str) -> None:
    """Both tables gone (``lab down``); no error when they are not there."""
    for family in ("bridge", "inet"):
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True, check=False, timeout=30)


def apply(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False,
                            timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"nft failed: {result.stderr.strip()[-2000:]}")
