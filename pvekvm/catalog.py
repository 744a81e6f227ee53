"""Loading the operator's catalog (templates, IP pools, products, DNS providers and zones) from
TOML into the database. Idempotent: rows are matched by name and updated in place."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path
from typing import Any

from pvekvm import dns, secrets
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.models import (
    DnsProvider,
    DnsZone,
    IpAddress,
    IpPool,
    Product,
    Template,
    TemplateReplica,
    database,
)
from pvekvm.overage import overage_problem
from pvekvm.rdns_policy import DEFAULT_POLICY, policy_problem
from pvekvm.validation import is_valid_hostname

MAX_POOL_ADDRESSES = 65536


class CatalogError(ValueError):
    pass


def _upsert(model: Any, key: str, values: dict[str, Any]) -> Any:  # a peewee model class
    row = model.get_or_none(getattr(model, key) == values[key])
    if row is None:
        return model.create(**values)
    model.update(**values).where(model.id == row.id).execute()
    return model.get_by_id(row.id)


def pool_addresses(network: str, first: str | None, last: str | None) -> list[str]:
    net = ipaddress.ip_network(network, strict=False)
    lo = ipaddress.ip_address(first) if first else net.network_address + 1
    hi = ipaddress.ip_address(last) if last else (
        net.broadcast_address - 1 if net.version == 4 else net.network_address + 255)
    if lo not in net or hi not in net or int(hi) < int(lo):
        raise CatalogError(f"pool range {lo}..{hi} is not inside {net}")
    if int(hi) - int(lo) + 1 > MAX_POOL_ADDRESSES:
        raise CatalogError(f"pool range {lo}..{hi} is larger than {MAX_POOL_ADDRESSES}")
    return [str(ipaddress.ip_address(i)) for i in range(int(lo), int(hi) + 1)]


def check_prefix_pool(p: dict[str, Any], first: str | None, last: str | None) -> None:
    """A prefix pool (``assign`` set): IPv6, ``assign`` longer than the network's prefix and
    at most /128, no first/last, a gateway inside the network or link-local (``fe80::1``, the
    usual gateway of routed prefixes)."""
    where = f"pool {p.get('name')}"
    try:
        net = ipaddress.ip_network(str(p.get("network")), strict=False)
        gateway = ipaddress.ip_address(str(p.get("gateway")))
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    assign = p.get("assign")
    if net.version != 6 or p.get("version") != 6:
        raise CatalogError(f"{where}: assign (routed prefixes) is for IPv6 pools only")
    if not isinstance(assign, int) or isinstance(assign, bool) or \
            not net.prefixlen < assign <= 128:
        raise CatalogError(f"{where}: assign must be a prefix length longer than the "
                           f"network's /{net.prefixlen} and at most 128, got {assign!r}")
    if first is not None or last is not None:
        raise CatalogError(f"{where}: a prefix pool hands out every /{assign} of {net}: "
                           "first/last are for address pools")
    if gateway not in net and not gateway.is_link_local:
        raise CatalogError(f"{where}: gateway {gateway} is neither inside {net} nor "
                           "link-local (fe80::1 for routed prefixes)")


def _check_no_overlap(pool: IpPool) -> None:
    """A prefix pool shares no address with another IPv6 pool: its prefixes are handed out
    without rows in advance, so only distinct networks keep an address from being given twice."""
    if pool.version != 6:
        return
    net = ipaddress.ip_network(pool.network, strict=False)
    for other in IpPool.select().where((IpPool.version == 6) & (IpPool.id != pool.id)):
        if pool.assign is None and other.assign is None:
            continue
        if net.overlaps(ipaddress.ip_network(other.network, strict=False)):
            raise CatalogError(f"pool {pool.name}: prefix pool {net} overlaps pool "
                               f"{other.name} ({other.network})")


def check_dns(data: dict[str, Any], key_file: str) -> None:
    """Every DNS zone the catalog leaves configured (this file's plus those already loaded),
    checked as the planner and the provider would: zone name, provider kind, the ttl range and
    reverse-zone forms the provider accepts, credentials' shape. CatalogError names the zone."""
    from pvekvm.dnssync import configured_zones

    kinds = {d["name"]: (d["kind"], d.get("settings", {})) for d in data.get("dns_providers", [])}
    zones: dict[str, dns.ZoneConfig] = {}
    if data.get("dns_zones") or kinds:
        for z in configured_zones(key_file):  # already in the database
            zones[z.name.lower().rstrip(".")] = z
        provider_of = {z.name: p.name for z in DnsZone.select()
                       for p in [DnsProvider.get_by_id(z.provider_id)]}
        for name, zone in list(zones.items()):
            own = provider_of.get(zone.name)
            if own in kinds:  # re-loaded provider: check with its new settings
                kind, settings = kinds[own]
                zones[name] = dns.ZoneConfig(zone.name, kind, dict(settings))
    for z in data.get("dns_zones", []):
        if z["provider"] in kinds:
            kind, settings = kinds[z["provider"]]
        else:
            prov = DnsProvider.get_or_none(DnsProvider.name == z["provider"])
            if prov is None:
                raise CatalogError(f"zone {z['name']}: unknown provider {z['provider']}")
            kind = prov.kind
            settings = json.loads(secrets.decrypt(key_file, prov.settings_enc))
        zones[str(z["name"]).lower().rstrip(".")] = dns.ZoneConfig(z["name"], kind,
                                                                    dict(settings))
    try:
        dns.check_zones(list(zones.values()))
    except ValueError as exc:
        raise CatalogError(f"DNS: {exc}") from None


REPLICA_KEYS = {"node", "vmid", "storage", "shared"}


def _load_replicas(tpl: Template, replicas: list[dict[str, Any]]) -> None:
    """The template's copies become exactly the listed ones (node, vmid, storage, shared)."""
    nodes = set()
    for r in replicas:
        if not {"node", "vmid", "storage"} <= set(r) or set(r) - REPLICA_KEYS:
            raise CatalogError(f"template {tpl.name}: a replica needs node, vmid and storage "
                               f"(and may say shared = true), got {sorted(r)}")
        if r["node"] in nodes:
            raise CatalogError(f"template {tpl.name}: two replicas on node {r['node']}")
        nodes.add(r["node"])
    TemplateReplica.delete().where(TemplateReplica.template_id == tpl.id).execute()
    for r in replicas:
        TemplateReplica.create(template_id=tpl.id, node=r["node"], vmid=int(r["vmid"]),
                               storage=r["storage"], shared=bool(r.get("shared", False)))


def load(data: dict[str, Any], key_file: str) -> dict[str, int]:
    check_dns(data, key_file)
    counts = {"templates": 0, "ip_pools": 0, "addresses": 0, "products": 0, "dns_zones": 0}
    with database.atomic():
        templates = {}
        for t in data.get("templates", []):
            t = dict(t)
            replicas = t.pop("replicas", None)
            tpl = templates[t["name"]] = _upsert(Template, "name", t)
            counts["templates"] += 1
            if replicas is not None:
                _load_replicas(tpl, replicas)
        pools = {}
        for p in data.get("ip_pools", []):
            p = dict(p)
            first, last = p.pop("first", None), p.pop("last", None)
            if p.get("assign") is not None:
                check_prefix_pool(p, first, last)
            pool = pools[p["name"]] = _upsert(IpPool, "name", p)
            counts["ip_pools"] += 1
            if pool.assign is not None:  # prefixes are inserted as they are handed out
                continue
            rows = [{"pool_id": pool.id, "address": a, "version": pool.version}
                    for a in pool_addresses(pool.network, first, last)]
            for i in range(0, len(rows), 1000):
                IpAddress.insert_many(rows[i:i + 1000]).on_conflict_ignore().execute()
            counts["addresses"] += len(rows)
        for pool in pools.values():
            _check_no_overlap(pool)
        for p in data.get("products", []):
            p = dict(p)
            tpl = p.pop("template")
            if tpl not in templates:
                t = Template.get_or_none(Template.name == tpl)
                if t is None:
                    raise CatalogError(f"product {p['name']}: unknown template {tpl}")
                templates[tpl] = t
            p["template_id"] = templates[tpl].id
            if p.get("dhcp") and (p.get("ip_pool") or p.get("ip6_pool")):
                raise CatalogError(f"product {p['name']}: a DHCP product has no IP pools")
            for key, col in (("ip_pool", "ip_pool_id"), ("ip6_pool", "ip6_pool_id")):
                name = p.pop(key, None)
                if name:
                    pool = pools.get(name) or IpPool.get_or_none(IpPool.name == name)
                    if pool is None:
                        raise CatalogError(f"product {p['name']}: unknown pool {name}")
                    p[col] = pool.id
            extra = p.get("extra_ipv4", 0)
            if extra and not p.get("ip_pool_id"):
                raise CatalogError(f"product {p['name']}: extra_ipv4 needs an ip_pool "
                                   "(the extra addresses come from it)")
            if not isinstance(extra, int) or not 0 <= extra <= MAX_EXTRA_IPV4:
                raise CatalogError(f"product {p['name']}: extra_ipv4 must be 0..{MAX_EXTRA_IPV4}"
                                   f" (one NIC each), got {extra!r}")
            for col, version in (("ip_pool_id", 4), ("ip6_pool_id", 6)):
                pool = IpPool.get_or_none(IpPool.id == p.get(col))
                if pool is not None and pool.version != version:
                    raise CatalogError(f"product {p['name']}: {col[:-3]} {pool.name} is an "
                                       f"IPv{pool.version} pool, IPv{version} expected")
            if p.get("dns_zone") and not is_valid_hostname(p["dns_zone"]):
                raise CatalogError(f"product {p['name']}: bad dns_zone {p['dns_zone']!r}")
            problem = overage_problem(p) or policy_problem(p.setdefault("rdns_policy",
                                                                         DEFAULT_POLICY))
            if problem:
                raise CatalogError(f"product {p['name']}: {problem}")
            p.setdefault("traffic_quota_gb", None)  # left out = unlimited (a reload clears it)
            p.setdefault("overage_rate_mbps", None)
            _upsert(Product, "name", p)
            counts["products"] += 1
        providers = {}
        for d in data.get("dns_providers", []):
            enc = secrets.encrypt(key_file, json.dumps(d.get("settings", {})))
            providers[d["name"]] = _upsert(DnsProvider, "name", {
                "name": d["name"], "kind": d["kind"], "settings_enc": enc})
        for z in data.get("dns_zones", []):
            prov = providers.get(z["provider"]) or DnsProvider.get_or_none(
                DnsProvider.name == z["provider"])
            if prov is None:
                raise CatalogError(f"zone {z['name']}: unknown provider {z['provider']}")
            _upsert(DnsZone, "name", {"name": z["name"], "provider_id": prov.id})
            counts["dns_zones"] += 1
    return counts


def load_file(path: str | Path, key_file: str) -> dict[str, int]:
    return load(tomllib.loads(Path(path).read_text()), key_file)
