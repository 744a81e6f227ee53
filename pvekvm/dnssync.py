"""Keeping a service's DNS in step with its addresses, shared by the deploy/terminate steps and
the background retry job. The dns_records table remembers what we published and what is owed."""

from __future__ import annotations

import json
import logging

from pvekvm import addresses, dns, secrets
from pvekvm.models import DnsProvider, DnsRecordRow, DnsZone, Service

log = logging.getLogger(__name__)


def configured_zones(key_file: str) -> list[dns.ZoneConfig]:
    providers = {p.id: p for p in DnsProvider.select()}
    zones = []
    for z in DnsZone.select():
        p = providers[z.provider_id]
        settings = json.loads(secrets.decrypt(key_file, p.settings_enc))
        zones.append(dns.ZoneConfig(name=z.name, provider=p.kind, settings=settings))
    return zones


def _addresses(service_id: int) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """The service's primary IPv4 and IPv6 (the host name's A/AAAA), its additional
    addresses (a PTR each, no A), and the client's PTR names by address. A routed prefix is
    named by its host address (``<prefix>::1``, the one the VM is configured with)."""
    rows = addresses.held(service_id)
    v4 = [r.address for r in rows if r.version == 4 and r.slot == 0]
    v6 = [addresses.host_address(r) for r in rows if r.version == 6 and r.slot == 0]
    extra = [addresses.host_address(r) for r in rows if r.slot > 0]
    return v4, v6, extra, {addresses.host_address(r): r.ptr for r in rows if r.ptr}


def _owners(names: set[str]) -> dict[str, int]:
    """DNS name → the service that owns it: the one whose published (not held) row for that
    name is the oldest. A name nobody has published is absent."""
    if not names:
        return {}
    rows = (DnsRecordRow.select(DnsRecordRow.name, DnsRecordRow.service_id)
            .where(DnsRecordRow.name.in_(sorted(names)) & DnsRecordRow.held_by.is_null())
            .order_by(DnsRecordRow.id))
    owners: dict[str, int] = {}
    for row in rows:
        owners.setdefault(row.name.lower(), row.service_id)
    return owners


def publish(service: Service, key_file: str) -> tuple[str, bool]:
    """Make the providers hold exactly the records the service's hostname and addresses call
    for; stale records (an old address) are removed. Returns a summary and whether anything
    had to change; raises DnsError with the rows marked unsynced when a provider fails (the
    retry job picks them up).

    Ownership: a DNS name (A/AAAA host, PTR name) belongs to the service that published it
    first. A record whose name another service owns is never sent to a provider: it is kept
    as a held row (``held_by`` = owner, unsynced) and DnsError says so; the retry job publishes
    it once the owner has let go (a PTR whose address changed hands while the old owner's
    delete was still owed)."""
    zones = configured_zones(key_file)
    if not zones:
        return "no DNS zones configured", False
    v4, v6, extra, ptrs = _addresses(service.id)
    wanted = dns.plan_records(service.hostname, v4, v6, zones, ptrs, extra)
    have = list(DnsRecordRow.select().where(DnsRecordRow.service_id == service.id))
    owners = _owners({r.name for r in wanted} | {h.name for h in have})

    def ours(name: str) -> bool:
        return owners.get(name.lower(), service.id) == service.id

    mine = [r for r in wanted if ours(r.name)]
    held = [r for r in wanted if not ours(r.name)]
    wanted_keys = {(r.name, r.type, r.content) for r in wanted}
    stale = [h for h in have if (h.name, h.type, h.content) not in wanted_keys]
    if not stale and not held and all(h.synced and h.held_by is None for h in have) and \
            {(h.name, h.type, h.content) for h in have} == wanted_keys:
        return f"{len(wanted)} record(s) already published", False
    for r in mine:
        DnsRecordRow.insert(service_id=service.id, zone=r.zone, name=r.name, type=r.type,
                            content=r.content, synced=False).on_conflict(
            update={DnsRecordRow.held_by: None}).execute()
    for r in held:
        owner = owners[r.name.lower()]
        note = f"{r.name} is held by service {owner}: not published"
        DnsRecordRow.insert(service_id=service.id, zone=r.zone, name=r.name, type=r.type,
                            content=r.content, synced=False, held_by=owner, error=note,
                            ).on_conflict(update={DnsRecordRow.held_by: owner,
                                                  DnsRecordRow.synced: False,
                                                  DnsRecordRow.error: note}).execute()
    ours_published = (DnsRecordRow.service_id == service.id) & DnsRecordRow.held_by.is_null()
    try:
        _delete_stale([h for h in stale if h.held_by is None and ours(h.name)], mine, zones)
        dns.apply_records(mine, zones)
    except dns.DnsError as exc:
        DnsRecordRow.update(synced=False, error=str(exc)[:2000]).where(ours_published).execute()
        raise
    if stale:
        DnsRecordRow.delete().where(DnsRecordRow.id.in_([h.id for h in stale])).execute()
    DnsRecordRow.update(synced=True, error=None).where(ours_published).execute()
    if held:
        names = sorted({f"{r.name} (service {owners[r.name.lower()]})" for r in held})
        raise dns.DnsError(f"{len(mine)} record(s) published; not published, the name belongs "
                           f"to another service: {', '.join(names)}")
    return (f"{len(wanted)} record(s)" if wanted else "no configured zone covers this host"), \
        True


def _delete_stale(stale: list[DnsRecordRow], wanted: list[dns.DnsRecord],
                  zones: list[dns.ZoneConfig]) -> None:
    """Drop rrsets we published earlier that the service no longer calls for (an old address's
    PTR, a renamed host's A). An rrset still wanted is replaced by apply_records instead.
    ``stale`` holds only rows whose name the service owns."""
    wanted_sets = {(r.name, r.type) for r in wanted}
    gone = {(h.zone, h.name, h.type) for h in stale if (h.name, h.type) not in wanted_sets}
    dns.remove_rrsets(sorted(gone), zones)


def withdraw(service: Service, key_file: str) -> tuple[str, bool]:
    """Remove every record published for the service (terminate, before reinstall) — only
    rrsets whose name the service owns: a held row, or a name another service published
    first, is dropped from the table and never deleted at the provider. Returns a summary and
    whether anything had to change."""
    zones = configured_zones(key_file)
    if not zones:
        return "no DNS zones configured", False
    have = list(DnsRecordRow.select().where(DnsRecordRow.service_id == service.id))
    if not have:
        return "no records published", False
    owners = _owners({h.name for h in have})
    owned = {(h.zone, h.name, h.type) for h in have
             if h.held_by is None and owners.get(h.name.lower()) == service.id}
    try:
        notes = dns.remove_rrsets(sorted(owned), zones)
    except dns.DnsError as exc:
        DnsRecordRow.update(synced=False, error=f"delete: {exc}"[:2000]).where(
            DnsRecordRow.service_id == service.id).execute()
        raise
    DnsRecordRow.delete().where(DnsRecordRow.service_id == service.id).execute()
    left = len({h.name for h in have if (h.zone, h.name, h.type) not in owned})
    if left:
        notes.append(f"{left} name(s) of other services left alone")
    return "; ".join(["records removed", *notes]), True


def owed_services() -> list[int]:
    """Services whose DNS is not yet in step (for the retry job)."""
    q = DnsRecordRow.select(DnsRecordRow.service_id).where(~DnsRecordRow.synced).distinct()
    return [r.service_id for r in q]


def ptrs(service_id: int) -> dict[str, DnsRecordRow | None]:
    """Each address the service holds (a prefix by its host address) -> the PTR row the engine
    keeps for it (``content`` the name, ``synced`` whether the provider holds it), or None when
    no configured reverse zone covers the address (or no DNS is configured)."""
    from pvekvm.dns.plan import ptr_name

    zones = {z.name: dns.ZoneConfig(name=z.name, provider="")
             for z in DnsZone.select(DnsZone.name)}
    rows = {r.name.lower(): r for r in DnsRecordRow.select().where(
        (DnsRecordRow.service_id == service_id) & (DnsRecordRow.type == "PTR"))}
    out: dict[str, DnsRecordRow | None] = {}
    for a in addresses.held(service_id):
        ip = addresses.host_address(a)
        found = ptr_name(ip, zones) if zones else None
        out[ip] = rows.get(found[1].lower()) if found else None
    return out


def no_ptr_reason(service_id: int, address: str) -> str | None:
    """Why ``address`` has no PTR the engine could publish (None: it has one, maybe owed)."""
    if DnsZone.select().count() == 0:
        return "no DNS zones configured: no PTR published"
    if ptrs(service_id).get(address) is None:
        return f"no configured reverse zone covers {address}: no PTR published"
    return None
