"""Keeping a service's DNS in step with its addresses, shared by the deploy/terminate steps and
the background retry job. The dns_records table remembers what we published and what is owed."""

from __future__ import annotations

import json
import logging

from pvekvm import dns, secrets
from pvekvm.models import DnsProvider, DnsRecordRow, DnsZone, IpAddress, Service

log = logging.getLogger(__name__)


def configured_zones(key_file: str) -> list[dns.ZoneConfig]:
    providers = {p.id: p for p in DnsProvider.select()}
    zones = []
    for z in DnsZone.select():
        p = providers[z.provider_id]
        settings = json.loads(secrets.decrypt(key_file, p.settings_enc))
        zones.append(dns.ZoneConfig(name=z.name, provider=p.kind, settings=settings))
    return zones


def _addresses(service_id: int) -> tuple[list[str], list[str]]:
    rows = list(IpAddress.select().where(IpAddress.service_id == service_id))
    v4 = [r.address for r in rows if r.version == 4]
    return v4, [r.address for r in rows if r.version == 6]


def publish(service: Service, key_file: str) -> tuple[str, bool]:
    """Make the providers hold exactly the records the service's hostname and addresses call
    for; stale records (an old address) are removed. Returns a summary and whether anything
    had to change; raises DnsError with the rows marked unsynced when a provider fails (the
    retry job picks them up)."""
    zones = configured_zones(key_file)
    if not zones:
        return "no DNS zones configured", False
    v4, v6 = _addresses(service.id)
    wanted = dns.plan_records(service.hostname, v4, v6, zones)
    have = list(DnsRecordRow.select().where(DnsRecordRow.service_id == service.id))
    wanted_keys = {(r.name, r.type, r.content) for r in wanted}
    stale = [h for h in have if (h.name, h.type, h.content) not in wanted_keys]
    if not stale and all(h.synced for h in have) and \
            {(h.name, h.type, h.content) for h in have} == wanted_keys:
        return f"{len(wanted)} record(s) already published", False
    for r in wanted:
        DnsRecordRow.insert(service_id=service.id, zone=r.zone, name=r.name, type=r.type,
                            content=r.content, synced=False).on_conflict_ignore().execute()
    try:
        _delete_stale(stale, wanted, zones)
        dns.apply_records(wanted, zones)
    except dns.DnsError as exc:
        DnsRecordRow.update(synced=False, error=str(exc)[:2000]).where(
            DnsRecordRow.service_id == service.id).execute()
        raise
    if stale:
        DnsRecordRow.delete().where(DnsRecordRow.id.in_([h.id for h in stale])).execute()
    DnsRecordRow.update(synced=True, error=None).where(
        DnsRecordRow.service_id == service.id).execute()
    return (f"{len(wanted)} record(s)" if wanted else "no configured zone covers this host"), \
        True


def _delete_stale(stale: list[DnsRecordRow], wanted: list[dns.DnsRecord],
                  zones: list[dns.ZoneConfig]) -> None:
    """Drop rrsets we published earlier that the service no longer calls for (an old address's
    PTR, a renamed host's A). An rrset still wanted is replaced by apply_records instead."""
    by_zone = {z.name: z for z in zones}
    wanted_sets = {(r.name, r.type) for r in wanted}
    for row in {(h.zone, h.name, h.type) for h in stale}:
        zone, name, rtype = row
        if (name, rtype) not in wanted_sets and zone in by_zone:
            dns.build_provider(by_zone[zone]).delete(zone, name, rtype)


def withdraw(service: Service, key_file: str) -> tuple[str, bool]:
    """Remove every record published for the service (terminate, before reinstall). Returns a
    summary and whether anything had to change."""
    zones = configured_zones(key_file)
    if not zones:
        return "no DNS zones configured", False
    if not DnsRecordRow.select().where(DnsRecordRow.service_id == service.id).exists():
        return "no records published", False
    v4, v6 = _addresses(service.id)
    try:
        notes = dns.remove_records(service.hostname, v4, v6, zones)
    except dns.DnsError as exc:
        DnsRecordRow.update(synced=False, error=f"delete: {exc}"[:2000]).where(
            DnsRecordRow.service_id == service.id).execute()
        raise
    DnsRecordRow.delete().where(DnsRecordRow.service_id == service.id).execute()
    return "; ".join(["records removed", *notes]), True


def owed_services() -> list[int]:
    """Services whose DNS is not yet in step (for the retry job)."""
    q = DnsRecordRow.select(DnsRecordRow.service_id).where(~DnsRecordRow.synced).distinct()
    return [r.service_id for r in q]
