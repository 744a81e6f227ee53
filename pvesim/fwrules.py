"""VM firewall rules as pve-firewall checks them (``verify_rule`` and the ``pve-fw-*`` formats
of PVE/Firewall.pm), and how the generated iptables chains decide a packet.

:func:`verdict` follows the chain pve-firewall builds for a VM's tap device: for a packet the
VM sends (``out``) the MAC filter and the ``ipfilter-net<N>`` IPSet come first (a source the
IPSet does not hold is dropped), then the VM's rules in ``pos`` order, then ``policy_out``; for
a packet to the VM (``in``), the rules, then ``policy_in``. With the VM's firewall disabled
nothing is filtered.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# /etc/protocols (name -> number) and /etc/services (a few names -> port), as PVE reads them
PROTOCOLS = {"ip": 0, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "ipv6": 41,
             "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "ospf": 89,
             "ipip": 94, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136}
SERVICES = {"ssh": 22, "http": 80, "https": 443, "smtp": 25, "domain": 53, "ntp": 123,
            "imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "submission": 587,
            "mysql": 3306, "postgresql": 5432, "rdp": 3389}
WITH_PORTS = {"udp", "17", "tcp", "6", "udplite", "136", "dccp", "33", "sctp", "132"}
ICMP_TYPES = {"any", "echo-reply", "destination-unreachable", "port-unreachable",
              "fragmentation-needed", "echo-request", "time-exceeded", "parameter-problem",
              "redirect", "source-quench", "router-advertisement", "router-solicitation",
              "host-unreachable", "network-unreachable", "protocol-unreachable",
              "timestamp-request", "timestamp-reply", "address-mask-request",
              "address-mask-reply", "network-prohibited", "host-prohibited",
              "communication-prohibited", "source-route-failed", "network-unknown",
              "host-unknown", "network-redirect", "host-redirect", "ttl-zero-during-transit",
              "ttl-zero-during-reassembly", "ip-header-bad", "required-option-missing"}
ICMPV6_TYPES = {"destination-unreachable", "no-route", "communication-prohibited",
                "address-unreachable", "port-unreachable", "packet-too-big", "time-exceeded",
                "ttl-zero-during-transit", "ttl-zero-during-reassembly", "parameter-problem",
                "bad-header", "unknown-header-type", "unknown-option", "echo-request",
                "echo-reply", "router-solicitation", "router-advertisement",
                "neighbour-solicitation", "neighbor-solicitation", "neighbour-advertisement",
                "neighbor-advertisement", "redirect"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_]+$")


def parse_address_list(spec: str) -> int | None:
    """PVE's ``parse_address_list``: ``+ipset``, an alias name, or addresses/networks/one
    range of one IP version; the version (None for a name)."""
    if spec.startswith("+"):
        if len(spec) > 65:
            raise ValueError("ipset name too long")
        return None
    if _NAME.match(spec):
        if len(spec) > 64:
            raise ValueError("alias name too long")
        return None
    elements = spec.split(",")
    if spec != ",".join(e for e in elements if e):
        raise ValueError("extraneous commas in list")
    version, ranged = None, False
    for elem in elements:
        try:
            if "-" in elem:
                lo, hi = (ipaddress.ip_address(x) for x in elem.split("-", 1))
                if lo.version != hi.version or int(lo) > int(hi):
                    raise ValueError
                ranged, new = True, lo.version
            else:
                new = ipaddress.ip_network(elem, strict=True).version
        except ValueError:
            raise ValueError(f"invalid IP address: Invalid IP '{elem}'") from None
        if version and new != version:
            raise ValueError("mixing IPv4 and IPv6 addresses is not allowed")
        version = new
    if ranged and len(elements) > 1:
        raise ValueError("you can use a range in a list")
    return version


def parse_ports(spec: str, dport: bool) -> None:
    """PVE's ``parse_port_name_number_or_range``."""
    elements = spec.split(",")
    if spec != ",".join(e for e in elements if e):
        raise ValueError("extraneous commas in list")
    count, icmp = 0, False
    for item in elements:
        m = re.fullmatch(r"(\d+):(\d+)", item)
        if m:
            count += 2
            a, b = int(m.group(1)), int(m.group(2))
            for port in (a, b):
                if port > 65535:
                    raise ValueError(f"invalid port '{port}'")
            if a > b:
                raise ValueError(f"backwards range '{a}:{b}' not allowed, did you mean "
                                 f"'{b}:{a}'?")
        elif item.isdigit():
            count += 1
            if int(item) > 65535:
                raise ValueError(f"invalid port '{item}'")
        elif dport and (item in ICMP_TYPES or item in ICMPV6_TYPES):
            icmp = True
        elif item not in SERVICES:
            raise ValueError(f"invalid port '{item}'")
    if icmp and count:
        raise ValueError("ICMP ports not allowed in port range")
    if count > 15:
        raise ValueError("too many entries in port list (> 15 numbers)")


def verify_rule(rule: dict[str, str], ipsets: set[str]) -> dict[str, str]:
    """``verify_rule`` for a VM rule: the errors by parameter (empty: PVE accepts it)."""
    errors: dict[str, str] = {}
    versions: set[int] = set()
    kind, action = rule.get("type"), rule.get("action", "")
    if kind in ("in", "out"):
        if action not in ("ACCEPT", "DROP", "REJECT"):
            errors["action"] = f"unknown action '{action}'"
    elif kind != "group":
        errors["type"] = f"unknown rule type '{kind}'"
    if rule.get("iface") and not re.fullmatch(r"net\d+", rule["iface"]):
        errors["iface"] = "value does not match the regex pattern 'net\\d+'"
    proto = rule.get("proto")
    if proto:
        if proto not in PROTOCOLS and not (proto.isdigit() and int(proto) in
                                           PROTOCOLS.values()):
            errors["proto"] = f"unknown protocol '{proto}'"
        versions |= {4} if proto == "icmp" else {6} if proto in ("icmpv6", "ipv6-icmp") \
            else set()
    for name in ("dport", "sport"):
        if rule.get(name):
            try:
                parse_ports(rule[name], name == "dport")
            except ValueError as exc:
                errors[name] = str(exc)
            if not proto:
                errors["proto"] = f"missing property - '{name}' requires this property"
            elif proto not in WITH_PORTS and (name == "sport" or proto not in ("icmp",
                                                                                "icmpv6")):
                errors[name] = f"protocol '{proto}' does not support ports"
    icmp = rule.get("icmp-type")
    if icmp:
        if proto not in ("icmp", "icmpv6", "ipv6-icmp"):
            errors["proto"] = "missing property - 'icmp-type' requires this property"
        elif icmp not in (ICMP_TYPES if proto == "icmp" else ICMPV6_TYPES):
            errors["icmp-type"] = f"invalid icmp-type '{icmp}' for proto '{proto}'"
    for name in ("source", "dest"):
        spec = rule.get(name)
        if not spec:
            continue
        try:
            version = parse_address_list(spec)
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        if spec.startswith("+") and spec[1:] not in ipsets:
            errors[name] = f"no such ipset '{spec[1:]}'"
        if version:
            versions.add(version)
    if len(versions) > 1:
        errors.setdefault("dest", "detected mixed ipv4/ipv6 addresses in rule")
    return errors


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, spec: str,
        ipsets: dict[str, Any]) -> bool:
    if spec.startswith("+"):
        entries = ipsets.get(spec[1:], {}).get("entries", [])
        return any(_in(addr, e["cidr"], ipsets) for e in entries if not e.get("nomatch"))
    for elem in spec.split(","):
        if "-" in elem:
            lo, hi = (ipaddress.ip_address(x) for x in elem.split("-", 1))
            if lo.version == addr.version and int(lo) <= int(addr) <= int(hi):
                return True
            continue
        net = ipaddress.ip_network(elem, strict=False)
        if net.version == addr.version and addr in net:
            return True
    return False


def _ports_match(port: int | None, spec: str | None) -> bool:
    if not spec:
        return True
    if port is None:
        return False
    for item in spec.split(","):
        a, _, b = item.partition(":")
        lo = SERVICES.get(a, int(a) if a.isdigit() else -1)
        hi = int(b) if b else lo
        if lo <= port <= hi:
            return True
    return False


def verdict(fw: dict[str, Any], direction: str, *, src: str, dst: str, proto: str = "tcp",
            dport: int | None = None, sport: int | None = None, nic: int = 0) -> str:
    """What the VM's firewall does with one packet on NIC ``net<nic>``: ACCEPT, DROP or
    REJECT."""
    opts = fw["options"]
    if str(opts.get("enable", "0")) != "1":
        return "ACCEPT"
    source, dest = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if direction == "out" and str(opts.get("ipfilter", "0")) == "1":
        allowed = f"+ipfilter-net{nic}"
        if not _in(source, allowed, fw["ipsets"]):  # before any rule: the chain's first DROP
            return "DROP"
    for rule in fw["rules"]:
        if rule.get("type") != direction or str(rule.get("enable", "1")) != "1":
            continue
        if rule.get("iface") and rule["iface"] != f"net{nic}":
            continue
        want = rule.get("proto")
        if want and PROTOCOLS.get(want, int(want) if want.isdigit() else -1) != \
                PROTOCOLS.get(proto, -2):
            continue
        if rule.get("source") and not _in(source, rule["source"], fw["ipsets"]):
            continue
        if rule.get("dest") and not _in(dest, rule["dest"], fw["ipsets"]):
            continue
        if not _ports_match(dport, rule.get("dport")) or \
                not _ports_match(sport, rule.get("sport")):
            continue
        return str(rule.get("action"))
    return str(opts.get(f"policy_{direction}", "DROP" if direction == "in" else "ACCEPT"))
