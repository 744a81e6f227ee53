"""apply_records / remove_records / build_provider: the deploy step's entry points."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .model import DnsError, DnsProvider, DnsRecord, ZoneConfig
from .plan import (
    _check_ips,
    check_record,
    check_zones,
    forward_zone,
    normalize_hostname,
    normalize_zone,
    ptr_name,
)


def build_provider(zone: ZoneConfig) -> DnsProvider:
    """The provider client for one zone (ValueError for an invalid zone or unknown provider)."""
    normalize_zone(zone)
    if zone.provider == "powerdns":
        from .powerdns import PowerDnsProvider

        return PowerDnsProvider(zone.settings)
    if zone.provider == "cloudflare":
        from .cloudflare import CloudflareProvider

        return CloudflareProvider(zone.settings)
    if zone.provider == "rfc2136":
        from .rfc2136 import Rfc2136Provider

        return Rfc2136Provider(zone.settings)
    if zone.provider == "webhook":
        from .webhook import WebhookProvider

        return WebhookProvider(zone.settings)
    from .hestiacp import HestiaProvider

    return HestiaProvider(zone.settings)


def endpoint(zone: ZoneConfig) -> str:
    """Where the zone's provider is reached, for messages (never a credential)."""
    s = zone.settings
    if zone.provider == "rfc2136":
        from .rfc2136 import DEFAULT_PORT, hostport

        return hostport(s.get("server"), s.get("port", DEFAULT_PORT))
    if zone.provider == "webhook":
        from .webhook import _endpoint

        return _endpoint(str(s.get("url")))
    return str(s.get("api_url") or "default")


def _endpoint(zone: ZoneConfig) -> str:
    return f"{zone.provider} {endpoint(zone)}"


def _run_all(steps: list[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run every (endpoint, step) even when some fail, then raise one DnsError naming every
    failure; return the notes (str results) steps handed back. Once an endpoint failed
    transiently (down, timing out), its remaining steps are skipped instead of each waiting out
    its own time-out. The error is transient only when every failure is (a retry cannot fix a
    permanent one)."""
    errors: list[DnsError] = []
    notes: list[str] = []
    down: set[str] = set()
    skipped = 0
    for endpoint, step in steps:
        if endpoint in down:
            skipped += 1
            continue
        try:
            note = step()
            if isinstance(note, str):
                notes.append(note)
        except DnsError as exc:
            errors.append(exc)
            if exc.transient:
                down.add(endpoint)
    if len(errors) == 1 and not skipped:
        raise errors[0]
    if errors:
        note = f" ({skipped} more skipped: endpoint unavailable)" if skipped else ""
        raise DnsError(
            f"{len(errors)} DNS changes failed{note}: " + "; ".join(str(e) for e in errors),
            transient=all(e.transient for e in errors),
        )
    return notes


def apply_records(records: list[DnsRecord], zones: list[ZoneConfig]) -> None:
    """Idempotent upsert: each (zone, name, type) rrset is replaced by the contents given for it,
    so a changed address replaces the old one and a repeat call changes nothing. All records are
    validated (ValueError) before any provider is called."""
    by_name = check_zones(zones)
    if isinstance(records, DnsRecord) or not isinstance(records, list | tuple):
        raise ValueError("records must be a list of DnsRecord")
    rrsets: dict[tuple[str, str, str], tuple[list[str], int]] = {}
    for record in records:
        rec = check_record(record, by_name)
        contents, ttl = rrsets.setdefault((rec.zone, rec.name, rec.type), ([], rec.ttl))
        if rec.content not in contents:
            contents.append(rec.content)
        if rec.ttl != ttl:
            raise ValueError(f"record {rec.name} {rec.type}: conflicting ttls {ttl} and {rec.ttl}")
    providers: dict[str, DnsProvider] = {}
    steps: list[tuple[str, Callable[[], object]]] = []
    for (zone, name, rtype), (contents, ttl) in rrsets.items():
        provider = providers.get(zone) or providers.setdefault(zone, build_provider(by_name[zone]))
        step = partial(provider.upsert, zone, name, rtype, list(contents), ttl)
        steps.append((_endpoint(by_name[zone]), step))
    _run_all(steps)


def remove_records(
    hostname: str, ipv4: list[str], ipv6: list[str], zones: list[ZoneConfig]
) -> list[str]:
    """Delete the host's A and AAAA rrsets and the PTR rrset of each given address, in the zones
    plan_records would use. Records that are already absent are fine. Returns notes on what a
    provider did instead of deleting (a HestiaCP zone's last A record kept as a placeholder)."""
    host = normalize_hostname(hostname)
    v4, v6 = _check_ips(ipv4, ipv6)
    by_name = check_zones(zones)
    targets: list[tuple[str, str, str]] = []
    fwd = forward_zone(host, by_name)
    if fwd is not None:
        targets += [(fwd, host, "A"), (fwd, host, "AAAA")]
    for ip in v4 + v6:
        found = ptr_name(ip, by_name)
        if found is not None:
            targets.append((found[0], found[1], "PTR"))
    return _delete_rrsets(targets, by_name)


def remove_rrsets(rrsets: list[tuple[str, str, str]], zones: list[ZoneConfig]) -> list[str]:
    """Delete each (zone, name, type) rrset; those in a zone no longer configured are skipped,
    absent ones are fine. Returns notes as :func:`remove_records` does."""
    by_name = check_zones(zones)
    return _delete_rrsets([(z, n, t) for z, n, t in rrsets if z in by_name], by_name)


def _delete_rrsets(targets: list[tuple[str, str, str]],
                   by_name: dict[str, ZoneConfig]) -> list[str]:
    providers: dict[str, DnsProvider] = {}
    steps: list[tuple[str, Callable[[], object]]] = []
    for zone, name, rtype in targets:
        provider = providers.get(zone) or providers.setdefault(zone, build_provider(by_name[zone]))
        steps.append((_endpoint(by_name[zone]), partial(provider.delete, zone, name, rtype)))
    return _run_all(steps)
