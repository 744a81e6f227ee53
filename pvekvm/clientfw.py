"""The client's own firewall rules: what a rule may say, checked as PVE's pve-firewall checks a
VM rule (``verify_rule``, ``parse_address_list``, ``parse_port_name_number_or_range``), and the
PVE rule each becomes.

A client rule is narrower than a PVE rule: direction ``in``/``out`` only (no security group,
no ``iface``, no macro), action ACCEPT/DROP/REJECT, addresses written out (no ``+ipset`` or
alias name: the VM's anti-spoofing IPSets are not the client's to name), ports as numbers.
Whatever passes here, PVE accepts. Every check is linear in the input, and the input is
bounded (``MAX_RULES`` rules, each field of bounded length) before any is parsed.

The rules land in the VM's firewall *after* the engine's (steps/firewall.py): PVE filters a
VM's outgoing packets by its ``ipfilter-net<N>`` IPSet before any rule, so no client rule can
let the VM send from an address it does not hold.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any

MAX_RULES = 100           # on the wire; a package caps lower (products.client_fw_rules)
MAX_STORED = 60_000       # the set as the operation's params store it (JSON, ASCII): TEXT fits
MARK = "pvekvm-client"     # the comment every client rule carries in PVE (how we find ours)
MAX_COMMENT = 100
MAX_ADDRESS = 512          # PVE's maxLength for source/dest
MAX_PORTS_TEXT = 128
MAX_PORT_NUMBERS = 15      # PVE: a range counts 2 ("too many entries in port list (> 15 numbers)")
FIELDS = ("direction", "action", "proto", "dport", "sport", "source", "dest", "icmp_type",
          "comment", "enable")
DIRECTIONS = ("in", "out")
ACTIONS = ("ACCEPT", "DROP", "REJECT")
# /etc/protocols names PVE resolves (pve_fw_verify_protocol_spec), with their numbers
PROTOCOLS: dict[str, int] = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "ipv6": 41, "gre": 47, "esp": 50,
    "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "ospf": 89, "ipip": 94, "vrrp": 112,
    "l2tp": 115, "sctp": 132, "udplite": 136}
WITH_PORTS = frozenset({"tcp", "udp", "udplite", "dccp", "sctp", "6", "17", "136", "33", "132"})
ICMP4_TYPES = frozenset({
    "any", "echo-reply", "destination-unreachable", "network-unreachable", "host-unreachable",
    "protocol-unreachable", "port-unreachable", "fragmentation-needed", "source-route-failed",
    "network-unknown", "host-unknown", "network-prohibited", "host-prohibited",
    "communication-prohibited", "source-quench", "redirect", "network-redirect",
    "host-redirect", "echo-request", "router-advertisement", "router-solicitation",
    "time-exceeded", "ttl-zero-during-transit", "ttl-zero-during-reassembly",
    "parameter-problem", "ip-header-bad", "required-option-missing", "timestamp-request",
    "timestamp-reply", "address-mask-request", "address-mask-reply"})
ICMP6_TYPES = frozenset({
    "destination-unreachable", "no-route", "communication-prohibited", "address-unreachable",
    "port-unreachable", "packet-too-big", "time-exceeded", "ttl-zero-during-transit",
    "ttl-zero-during-reassembly", "parameter-problem", "bad-header", "unknown-header-type",
    "unknown-option", "echo-request", "echo-reply", "router-solicitation",
    "router-advertisement", "neighbour-solicitation", "neighbor-solicitation",
    "neighbour-advertisement", "neighbor-advertisement", "redirect"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PORT_ITEM = re.compile(r"(\d{1,5})(?::(\d{1,5}))?")


class RuleError(ValueError):
    """A rule PVE would refuse (or the client may not write); the message names the rule (from
    1) and the field, never more of the value than its shape."""


def parse_rules(value: Any) -> tuple[dict[str, Any], ...]:
    """The client's rule list, each rule normalised (defaults filled, ``proto`` lower case);
    raises :class:`RuleError` with the first fault."""
    if not isinstance(value, list | tuple):
        raise RuleError(f"expected an array of rules, got {type(value).__name__}")
    if len(value) > MAX_RULES:
        raise RuleError(f"too many rules: {len(value)} (max {MAX_RULES})")
    rules = tuple(parse_rule(rule, at) for at, rule in enumerate(value, 1))
    stored = len(json.dumps(list(rules)))  # as workers/operations.py writes params
    if stored > MAX_STORED:
        raise RuleError(f"rules too large: {stored} bytes as stored (max {MAX_STORED})")
    return rules


def parse_rule(rule: Any, at: int = 1) -> dict[str, Any]:
    """One rule as pve-firewall's ``verify_rule`` would take it for a VM."""
    if not isinstance(rule, Mapping):
        raise RuleError(f"rule {at}: expected an object, got {type(rule).__name__}")
    unknown = next((k for k in rule if k not in FIELDS), None)
    if unknown is not None:
        shown = unknown if re.fullmatch(r"[a-z_]{1,20}", str(unknown)) else "(a field)"
        raise RuleError(f"rule {at}: unknown field {shown!r} (known: {', '.join(FIELDS)})")

    def bad(name: str, message: str) -> RuleError:
        return RuleError(f"rule {at}: {name}: {message}")

    def text(name: str, limit: int) -> str | None:
        v = rule.get(name)
        if v is None:
            return None
        if type(v) is not str:
            raise bad(name, f"expected string, got {type(v).__name__}")
        if len(v) > limit:
            raise bad(name, f"too long: {len(v)} characters (max {limit})")
        if _CONTROL.search(v):
            raise bad(name, "contains control characters")
        return v

    direction, action = text("direction", 16), text("action", 20)
    if direction not in DIRECTIONS:
        raise bad("direction", "missing" if direction is None else "must be in or out")
    if action not in ACTIONS:
        raise bad("action", "missing" if action is None else "must be ACCEPT, DROP or REJECT")
    enable = rule.get("enable", True)
    if type(enable) is not bool:
        raise bad("enable", "expected boolean")
    out: dict[str, Any] = {"direction": direction, "action": action, "enable": enable}
    versions: set[int] = set()
    proto = text("proto", 16)
    if proto is not None:
        proto = proto.lower()
        if proto not in PROTOCOLS and not (proto.isdigit() and int(proto) in
                                           PROTOCOLS.values()):
            raise bad("proto", f"unknown protocol (use one of {', '.join(PROTOCOLS)} or its "
                               "number)")
        out["proto"] = proto
        if proto in ("icmp", "1"):
            versions.add(4)
        elif proto in ("icmpv6", "ipv6-icmp", "58"):
            versions.add(6)
    for name in ("dport", "sport"):
        ports = text(name, MAX_PORTS_TEXT)
        if ports is None:
            continue
        try:
            check_ports(ports)
        except ValueError as exc:
            raise bad(name, str(exc)) from None
        if proto is None:
            raise bad(name, "needs proto (tcp, udp, …)")
        if proto not in WITH_PORTS:
            raise bad(name, f"protocol '{proto}' does not support ports")
        out[name] = ports
    icmp = text("icmp_type", 32)
    if icmp is not None:
        if proto in ("icmp", "1"):
            known = ICMP4_TYPES
        elif proto in ("icmpv6", "ipv6-icmp", "58"):
            known = ICMP6_TYPES
        else:
            raise bad("icmp_type", "needs proto icmp or icmpv6")
        if icmp not in known:
            raise bad("icmp_type", f"invalid icmp-type for proto '{proto}'")
        out["icmp_type"] = icmp
    for name in ("source", "dest"):
        spec = text(name, MAX_ADDRESS)
        if spec is None:
            continue
        try:
            version, canonical = address_list(spec)
        except ValueError as exc:
            raise bad(name, str(exc)) from None
        versions.add(version)
        out[name] = canonical
    if len(versions) > 1:
        raise RuleError(f"rule {at}: mixed IPv4/IPv6 addresses in the rule")
    comment = text("comment", MAX_COMMENT)
    if comment:
        out["comment"] = comment
    return out


def check_ports(spec: str) -> int:
    """PVE's port list: numbers (0-65535) and ``a:b`` ranges (a <= b), comma separated, at
    most 15 numbers (a range counts 2). Service names are not taken here. Returns the count."""
    items = spec.split(",")
    if not spec or any(not item for item in items):
        raise ValueError("extraneous commas in list" if spec else "empty")
    count = 0
    for item in items:
        m = _PORT_ITEM.fullmatch(item)
        if m is None:
            raise ValueError("not a port number or range a:b (service names are not accepted)")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        for port in (low, high):
            if port > 65535:
                raise ValueError(f"invalid port '{port}' (0-65535)")
        if low > high:
            raise ValueError(f"backwards range '{low}:{high}' not allowed")
        count += 2 if m.group(2) else 1
        if count > MAX_PORT_NUMBERS:
            raise ValueError(f"too many entries in port list (> {MAX_PORT_NUMBERS} numbers)")
    return count


def address_list(spec: str) -> tuple[int, str]:
    """PVE's address list (``parse_address_list``) without IPSet or alias names: addresses,
    networks (no host bits set, as Net::IP insists) or one range ``a-b``; one IP version.
    Returns the version and the list in canonical text."""
    items = spec.split(",")
    if not spec or any(not item for item in items):
        raise ValueError("extraneous commas in list" if spec else "empty")
    versions, canonical = set(), []
    for item in items:
        if item.startswith("+") or (item[0].isalpha() and ":" not in item):
            raise ValueError("IPSet and alias names are not accepted: write the addresses")
        if "-" in item:
            if len(items) > 1:
                raise ValueError("a range cannot be part of a list")
            first, _, last = item.partition("-")
            try:
                lo, hi = ipaddress.ip_address(first), ipaddress.ip_address(last)
            except ValueError:
                raise ValueError("not an address range a-b") from None
            if lo.version != hi.version or int(lo) > int(hi):
                raise ValueError("not an address range a-b (same version, a <= b)")
            versions.add(lo.version)
            canonical.append(f"{lo}-{hi}")
            continue
        try:
            net = ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise ValueError("not an IP address or CIDR network (host bits must be zero; "
                             "IPSet and alias names are not accepted)") from None
        versions.add(net.version)
        canonical.append(str(net.network_address) if net.prefixlen == net.max_prefixlen
                         and "/" not in item else str(net))
    if len(versions) > 1:
        raise ValueError("mixing IPv4 and IPv6 addresses is not allowed")
    return versions.pop(), ",".join(canonical)


def pve_rule(rule: Mapping[str, Any]) -> dict[str, str]:
    """The parameters of ``POST …/firewall/rules`` for one (parsed) client rule, as PVE then
    lists it (strings; the mark leads the comment)."""
    out = {"type": str(rule["direction"]), "action": str(rule["action"]),
           "enable": "1" if rule.get("enable", True) else "0",
           "comment": f"{MARK}: {rule['comment']}" if rule.get("comment") else MARK}
    for ours, theirs in (("proto", "proto"), ("dport", "dport"), ("sport", "sport"),
                         ("source", "source"), ("dest", "dest"), ("icmp_type", "icmp-type")):
        if rule.get(ours) is not None:
            out[theirs] = str(rule[ours])
    return out


def is_client_rule(pve: Mapping[str, Any]) -> bool:
    """Whether a rule PVE lists is one of the client's (its comment carries the mark)."""
    comment = str(pve.get("comment") or "")
    return comment == MARK or comment.startswith(MARK + ":")
