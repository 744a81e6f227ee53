"""Validation and planning: which records a host gets in which configured zone.

Nothing here talks to a provider. Every name that a provider will ever see passes through the
validators below first, so a hostile host name or zone raises ValueError before any request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pvekvm.validation import is_valid_hostname, is_valid_ip

from .model import PROVIDERS, RECORD_TYPES, DnsRecord, ZoneConfig

DEFAULT_TTL = 3600

# RFC 2317 classless delegation label: "0-63" (inclusive range) or "0/26" (start/prefix length).
_CLASSLESS = re.compile(r"^(\d{1,3})([-/])(\d{1,3})$")
_OCTET = re.compile(r"^(0|[1-9]\d{0,2})$")
_NIBBLE = re.compile(r"^[0-9a-f]$")
# Belt and braces around is_valid_hostname (whose "$" also matches before a final newline).
_SAFE_CHARS = re.compile(r"[A-Za-z0-9.-]+")


def _valid_host(name: object) -> bool:
    return isinstance(name, str) and bool(_SAFE_CHARS.fullmatch(name)) and is_valid_hostname(name)


def normalize_hostname(hostname: object) -> str:
    """Lower-case FQDN without trailing dot; ValueError unless RFC 1123."""
    if not _valid_host(hostname):
        raise ValueError(f"invalid host name: {str(hostname)[:80]!r}")
    assert isinstance(hostname, str)
    return hostname.lower().rstrip(".")


@dataclass(frozen=True)
class _Reverse:
    """What a reverse zone covers: ``network`` and, for RFC 2317 zones, the address range."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    first: int  # inclusive bounds, as integers
    last: int
    classless: bool

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def _reverse_of(zone: str) -> _Reverse | None:
    """The addresses a reverse zone covers, or None for a forward zone. ValueError when the zone
    is under in-addr.arpa/ip6.arpa but malformed."""
    labels = zone.split(".")
    if zone.endswith(".in-addr.arpa") or zone == "in-addr.arpa":
        parts = labels[:-2]
        classless = None
        if parts and _CLASSLESS.fullmatch(parts[0]):
            classless = _CLASSLESS.fullmatch(parts[0])
            parts = parts[1:]
        if len(parts) > (3 if classless else 4) or not all(_OCTET.fullmatch(p) for p in parts):
            raise ValueError(f"invalid reverse zone: {zone!r}")
        octets = [int(p) for p in reversed(parts)]
        if any(o > 255 for o in octets):
            raise ValueError(f"invalid reverse zone: {zone!r}")
        if classless:
            if len(octets) != 3:
                raise ValueError(f"classless reverse zone must sit under a /24: {zone!r}")
            start, sep, end = int(classless[1]), classless[2], int(classless[3])
            if sep == "/":
                if not 24 < end <= 32:
                    raise ValueError(f"invalid classless prefix in {zone!r}")
                size = 1 << (32 - end)
                if start % size:
                    raise ValueError(f"classless start not aligned to /{end} in {zone!r}")
                end = start + size - 1
            if not start <= end <= 255:
                raise ValueError(f"invalid classless range in {zone!r}")
            base = int(ipaddress.IPv4Address(".".join(map(str, octets)) + ".0"))
            net = ipaddress.IPv4Network(f"{'.'.join(map(str, octets))}.0/24")
            return _Reverse(net, base + start, base + end, True)
        prefix = 8 * len(octets)
        addr = ".".join(map(str, octets + [0] * (4 - len(octets))))
        net = ipaddress.IPv4Network(f"{addr}/{prefix}")
        return _Reverse(net, int(net.network_address), int(net.broadcast_address), False)
    if zone.endswith(".ip6.arpa") or zone == "ip6.arpa":
        nibbles = labels[:-2]
        if len(nibbles) > 32 or not all(_NIBBLE.fullmatch(n) for n in nibbles):
            raise ValueError(f"invalid reverse zone: {zone!r}")
        hexstr = "".join(reversed(nibbles)).ljust(32, "0")
        net6 = ipaddress.IPv6Network(f"{ipaddress.IPv6Address(int(hexstr, 16))}/{4 * len(nibbles)}")
        return _Reverse(net6, int(net6.network_address), int(net6.broadcast_address), False)
    return None


def normalize_zone(zone: ZoneConfig) -> str:
    """Lower-case zone name without trailing dot; ValueError for a malformed zone or provider."""
    if not isinstance(zone, ZoneConfig):
        raise ValueError(f"not a ZoneConfig: {type(zone).__name__}")
    if zone.provider not in PROVIDERS:
        raise ValueError(f"zone {zone.name!r}: unknown DNS provider {zone.provider!r}")
    if not isinstance(zone.settings, dict):
        raise ValueError(f"zone {zone.name!r}: settings must be a dict")
    name = zone.name
    if not isinstance(name, str) or not name.isascii():
        raise ValueError(f"invalid zone name: {str(name)[:80]!r}")
    name = name.lower().rstrip(".")
    first, _, rest = name.partition(".")
    # The only non-RFC-1123 label we accept: the "0/26" label of an RFC 2317 zone.
    if "/" in first and _CLASSLESS.fullmatch(first) and rest.endswith("in-addr.arpa"):
        checked = rest
    else:
        checked = name
    if not _valid_host(checked) or len(name) > 253:
        raise ValueError(f"invalid zone name: {str(zone.name)[:80]!r}")
    _reverse_of(name)  # raises for a malformed reverse zone
    return name


def zone_ttl(zone: ZoneConfig) -> int:
    """The zone's ttl setting, in the range its provider accepts. Cloudflare
    (cloudflare/api-schemas dns-records_ttl): 1 = automatic, else 60..86400, from 30 on
    Enterprise zones (setting ``enterprise = true``)."""
    ttl = zone.settings.get("ttl", DEFAULT_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int | str) or not str(ttl).isdigit():
        raise ValueError(f"zone {zone.name!r}: invalid ttl {ttl!r}")
    ttl = int(ttl)
    if not 1 <= ttl <= 2_147_483_647:
        raise ValueError(f"zone {zone.name!r}: ttl out of range: {ttl}")
    if zone.provider == "cloudflare":
        low = 30 if zone.settings.get("enterprise") is True else 60
        if ttl != 1 and not low <= ttl <= 86400:
            raise ValueError(
                f"zone {zone.name!r}: Cloudflare accepts ttl 1 (automatic) or {low}..86400"
                f"{'' if low == 30 else ' (30..86400 on Enterprise zones: enterprise = true)'}"
                f", not {ttl}"
            )
    return ttl


def check_provider_rules(zone: ZoneConfig, name: str) -> None:
    """What each provider refuses, checked before any request (and at catalog load).

    Reverse zones: RFC 2317 "0/26.c.b.a.in-addr.arpa" exists on PowerDNS, rfc2136 (BIND) and
    webhook zones; HestiaCP refuses "/" in a domain name (func/main.sh is_domain_format_valid)
    but takes the "0-63.c.b.a.in-addr.arpa" form; Cloudflare offers IPv4 reverse zones for /24
    and /16 prefixes and ip6.arpa zones only (developers.cloudflare.com/dns/additional-options/
    reverse-zones)."""
    rev = _reverse_of(name)
    if rev is not None and rev.network.version == 4:
        label = name.split(".")[0]
        if zone.provider == "hestiacp" and rev.classless and "/" in label:
            first, last = rev.first & 255, rev.last & 255
            raise ValueError(
                f"zone {name!r}: HestiaCP refuses '/' in domain names; name the classless "
                f"zone {first}-{last}.{name.partition('.')[2]} (RFC 2317 allows either form)"
            )
        slash = rev.network.prefixlen
        if zone.provider == "cloudflare" and (rev.classless or slash not in (16, 24)):
            raise ValueError(
                f"zone {name!r}: Cloudflare offers IPv4 reverse zones for /24 and /16 prefixes "
                "only (c.b.a.in-addr.arpa, b.a.in-addr.arpa); serve this zone from PowerDNS"
            )
    if zone.provider in ("rfc2136", "webhook"):
        from .rfc2136 import check_settings as check_rfc2136
        from .webhook import check_settings as check_webhook

        try:
            (check_rfc2136 if zone.provider == "rfc2136" else check_webhook)(zone.settings)
        except ValueError as exc:
            raise ValueError(f"zone {name!r}: {exc}") from None
    if zone.provider == "hestiacp":
        from .hestiacp import check_placeholder

        check_placeholder(zone.settings.get("last_a_placeholder"))
    if zone.provider == "cloudflare":
        s = zone.settings
        token = s.get("token") or s.get("api_token")
        if s.get("api_key") and not s.get("email"):
            raise ValueError(
                f"zone {name!r}: Cloudflare api_key is a Global API Key, sent as X-Auth-Key "
                "with X-Auth-Email: set email too (or use an API token in token)"
            )
        if isinstance(token, str) and token.startswith("cfk_"):
            raise ValueError(
                f"zone {name!r}: that token is a Cloudflare Global API Key (cfk_): put it in "
                "api_key with the account's email in email, or create an API token"
            )
        if not token and not s.get("api_key"):
            raise ValueError(f"zone {name!r}: Cloudflare needs token (or api_key and email)")
        zone_id = s.get("zone_id")
        if zone_id is not None and not (isinstance(zone_id, str) and zone_id.isalnum()):
            raise ValueError(f"zone {name!r}: invalid Cloudflare zone_id")


def _check_ips(ipv4: object, ipv6: object) -> tuple[list[str], list[str]]:
    out = []
    for label, ips, version in (("ipv4", ipv4, 4), ("ipv6", ipv6, 6)):
        if ips is None:
            ips = []
        if isinstance(ips, str) or not isinstance(ips, list | tuple):
            raise ValueError(f"{label} must be a list of addresses")
        norm: list[str] = []
        for ip in ips:
            if not is_valid_ip(ip, version):
                raise ValueError(f"invalid IPv{version} address: {str(ip)[:60]!r}")
            text = str(ipaddress.ip_address(ip))
            if text not in norm:
                norm.append(text)
        out.append(norm)
    return out[0], out[1]


def check_zones(zones: list[ZoneConfig]) -> dict[str, ZoneConfig]:
    """Validate every zone; map normalized name -> zone. Duplicate names are refused."""
    if isinstance(zones, ZoneConfig) or not isinstance(zones, list | tuple):
        raise ValueError("zones must be a list of ZoneConfig")
    by_name: dict[str, ZoneConfig] = {}
    zone_ids: dict[str, str] = {}
    for zone in zones:
        name = normalize_zone(zone)
        zone_ttl(zone)
        check_provider_rules(zone, name)
        if name in by_name:
            raise ValueError(f"zone {name!r} configured twice")
        by_name[name] = zone
        zone_id = zone.settings.get("zone_id") if zone.provider == "cloudflare" else None
        if zone_id is not None:
            if zone_id in zone_ids:
                raise ValueError(
                    f"zones {zone_ids[zone_id]!r} and {name!r} share Cloudflare zone_id "
                    f"{zone_id}: a zone_id names one zone, give each zone its own provider"
                )
            zone_ids[zone_id] = name
    return by_name


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def forward_zone(hostname: str, zones: dict[str, ZoneConfig]) -> str | None:
    """The longest configured forward zone that contains ``hostname``."""
    best = None
    for name in zones:
        if (
            _reverse_of(name) is None
            and _in_zone(hostname, name)
            and (best is None or len(name) > len(best))
        ):
            best = name
    return best


def ptr_name(ip: str, zones: dict[str, ZoneConfig]) -> tuple[str, str] | None:
    """(zone, record name) of the PTR for ``ip`` in the most specific configured reverse zone."""
    addr = ipaddress.ip_address(ip)
    best: tuple[int, str] | None = None
    for name in zones:
        rev = _reverse_of(name)
        if rev is None or rev.network.version != addr.version:
            continue
        if rev.first <= int(addr) <= rev.last and (best is None or rev.size < best[0]):
            best = (rev.size, name)
    if best is None:
        return None
    zone = best[1]
    rev = _reverse_of(zone)
    assert rev is not None
    if rev.classless:
        # RFC 2317: the parent /24 CNAMEs d.c.b.a.in-addr.arpa to d.<classless zone>.
        return zone, f"{addr.packed[3]}.{zone}"
    return zone, addr.reverse_pointer


def plan_records(
    hostname: str, ipv4: list[str], ipv6: list[str], zones: list[ZoneConfig],
    ptr_hosts: Mapping[str, str] | None = None, ptr_only: Sequence[str] = (),
) -> list[DnsRecord]:
    """A/AAAA records in the longest configured zone containing ``hostname``, and a PTR for each
    address in the most specific configured reverse zone covering it (IPv4 /8-/24 octet zones,
    RFC 2317 classless zones "0-63.c.b.a.in-addr.arpa" / "0/26.c.b.a.in-addr.arpa", IPv6 nibble
    zones). Addresses or host names without a zone get no record. ``ptr_hosts`` maps an address
    to the name its PTR gives instead of ``hostname`` (client reverse DNS). ``ptr_only`` are
    further addresses (a service's additional IPv4) that get a PTR but no A/AAAA: the host
    name resolves to its primary addresses only. ValueError for an invalid host name, address
    or zone, before anything else."""
    host = normalize_hostname(hostname)
    ptrs = {str(ipaddress.ip_address(ip)): normalize_hostname(name)
            for ip, name in (ptr_hosts or {}).items()}
    v4, v6 = _check_ips(ipv4, ipv6)
    if isinstance(ptr_only, str):
        raise ValueError("ptr_only must be a list of addresses")
    extra4, extra6 = _check_ips([a for a in ptr_only if ":" not in str(a)],
                                [a for a in ptr_only if ":" in str(a)])
    by_name = check_zones(zones)
    records: list[DnsRecord] = []
    fwd = forward_zone(host, by_name)
    if fwd is not None:
        ttl = zone_ttl(by_name[fwd])
        records += [DnsRecord(fwd, host, "A", ip, ttl) for ip in v4]
        records += [DnsRecord(fwd, host, "AAAA", ip, ttl) for ip in v6]
    for ip in v4 + v6 + [a for a in extra4 + extra6 if a not in v4 + v6]:
        found = ptr_name(ip, by_name)
        if found is not None:
            zone, name = found
            records.append(DnsRecord(zone, name, "PTR", ptrs.get(ip, host),
                                     zone_ttl(by_name[zone])))
    return records


def check_record(record: DnsRecord, zones: dict[str, ZoneConfig]) -> DnsRecord:
    """Validate one record against the configured zones; return it normalized."""
    if not isinstance(record, DnsRecord):
        raise ValueError(f"not a DnsRecord: {type(record).__name__}")
    zone = str(record.zone).lower().rstrip(".")
    if zone not in zones:
        raise ValueError(f"record {record.name!r}: zone {record.zone!r} is not configured")
    if record.type not in RECORD_TYPES:
        raise ValueError(f"record {record.name!r}: unsupported type {record.type!r}")
    if not isinstance(record.name, str):
        raise ValueError("record name must be a string")
    name = record.name.lower().rstrip(".")
    # A classless PTR name is "<octet>.<zone>"; any other name must itself be RFC 1123.
    head = name[: -len(zone) - 1] if name.endswith("." + zone) else None
    if record.type == "PTR" and head is not None and "/" in zone:
        if not _OCTET.fullmatch(head):
            raise ValueError(f"invalid PTR name: {record.name[:80]!r}")
    elif not _valid_host(name):
        raise ValueError(f"invalid record name: {record.name[:80]!r}")
    if not _in_zone(name, zone):
        raise ValueError(f"record {record.name!r} is not inside zone {zone!r}")
    if record.type == "PTR":
        content = normalize_hostname(record.content)
    else:
        version = 4 if record.type == "A" else 6
        if not is_valid_ip(record.content, version):
            raise ValueError(f"invalid {record.type} content: {str(record.content)[:60]!r}")
        content = str(ipaddress.ip_address(record.content))
    ttl = record.ttl
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 2_147_483_647:
        raise ValueError(f"record {record.name!r}: invalid ttl {ttl!r}")
    return DnsRecord(zone, name, record.type, content, ttl)
