"""Loading the operator's catalog (templates, IP pools, products, DNS providers and zones) from
TOML into the database. Idempotent: rows are matched by name and updated in place."""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvekvm import dns, picker, secrets
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.models import (
    DnsProvider,
    DnsZone,
    IpAddress,
    IpPool,
    Product,
    ProductLocation,
    Template,
    TemplateReplica,
    database,
)
from pvekvm.overage import overage_problem
from pvekvm.package_details import details_problem
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
OS_TYPES = ("linux", "windows")
# PVE's ostype enum (qemu-server), and those windows_version() counts as Windows
PVE_OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10",
               "win11", "l24", "l26", "solaris")
WINDOWS_OSTYPES = ("wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11")
_CICUSTOM_PART = re.compile(r"(meta|network|user|vendor)=[a-z][a-z0-9._-]*[a-z0-9]:snippets/"
                            r"[A-Za-z0-9._+-]+", re.I)


def check_template(t: dict[str, Any]) -> None:
    """``os_type`` linux (cloud-init) or windows (cloudbase-init: a Windows ``ostype`` is
    required, ``os_user`` defaults to Administrator); ``ostype`` one of PVE's."""
    where = f"template {t.get('name')}"
    os_type = t.setdefault("os_type", "linux")
    if os_type not in OS_TYPES:
        raise CatalogError(f"{where}: os_type must be one of {', '.join(OS_TYPES)}, "
                           f"got {os_type!r}")
    ostype = t.get("ostype")
    if ostype is not None and ostype not in PVE_OSTYPES:
        raise CatalogError(f"{where}: ostype must be one of PVE's {', '.join(PVE_OSTYPES)}, "
                           f"got {ostype!r}")
    if os_type == "windows":
        if ostype not in WINDOWS_OSTYPES:
            raise CatalogError(f"{where}: a Windows template needs a Windows ostype "
                               f"({', '.join(WINDOWS_OSTYPES)}): PVE hashes the password of "
                               "any other, and cloudbase-init cannot use a hash")
        t.setdefault("os_user", "Administrator")
    elif ostype in WINDOWS_OSTYPES:
        raise CatalogError(f"{where}: ostype {ostype} is Windows: set os_type = \"windows\"")
    t.setdefault("ostype", None)  # left out = the template VM's own (a reload clears it)


def check_login(p: dict[str, Any], template_name: str, template_os_type: str) -> None:
    """``ssh_pwauth = false`` (keys only) is for Linux templates, and PVE does not switch
    password login off itself: the template's cloud-init does, or the operator's ``cicustom``
    snippet (``vendor=<storage>:snippets/<file>``; a ``user=`` snippet would replace the
    user-data PVE generates, and with it the user, password and keys: refused)."""
    where = f"product {p['name']}"
    cicustom = p.get("cicustom")
    if cicustom is not None:
        parts = str(cicustom).split(",")
        if not cicustom or len(cicustom) > 255 or not all(
                _CICUSTOM_PART.fullmatch(x) for x in parts):
            raise CatalogError(f"{where}: cicustom must be PVE's [meta|network|vendor]="
                               f"<storage>:snippets/<file>[,...], got {cicustom!r}")
        if any(x.lower().startswith("user=") for x in parts):
            raise CatalogError(f"{where}: cicustom user= replaces the user-data PVE generates "
                               "(user, password, SSH keys): put ssh_pwauth and the like in a "
                               "vendor= snippet")
    if not p.get("ssh_pwauth", True) and template_os_type == "windows":
        raise CatalogError(f"{where}: ssh_pwauth = false needs a Linux template: Windows "
                           f"({template_name}) logs in with its password")
    p.setdefault("ssh_pwauth", True)
    p.setdefault("cicustom", None)


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


def _offer(product: str, own: str, offer: Any, templates: dict[str, Template]) -> list[int]:
    """The template ids of a product's ``templates = [...]`` (the OS picker's offer, in order;
    left out: [] = its own template only). The list names its own ``template`` (the default
    install), each name once, at most ``picker.MAX_TEMPLATES``."""
    if offer is None:
        return []
    problem = picker.catalog_offer_problem(own, offer)
    if problem:
        raise CatalogError(f"product {product}: {problem}")
    return [templates[name].id for name in offer]
NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # a PVE node name
MAX_NODES = 64


def _node_list(where: str, nodes: object) -> list[str]:
    if not isinstance(nodes, list) or not 1 <= len(nodes) <= MAX_NODES:
        raise CatalogError(f"{where}: nodes must be a list of 1..{MAX_NODES} node names")
    bad = [n for n in nodes if not isinstance(n, str) or not NODE_NAME.match(n)]
    if bad:
        raise CatalogError(f"{where}: {str(bad[0])[:70]!r} is not a node name")
    if len(set(nodes)) != len(nodes):
        raise CatalogError(f"{where}: a node is named twice")
    return list(nodes)


def node_groups(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``[[node_groups]]``: name -> its nodes. Groups live in the catalog because PVE has none
    to read: its tags are guests' (``/cluster/resources`` documents ``tags`` for qemu and lxc
    only) and HA groups mean failover, not where new VMs go."""
    out: dict[str, list[str]] = {}
    for g in rows:
        name = g.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise CatalogError("node_groups: each needs a name (1..64 characters)")
        if name in out:
            raise CatalogError(f"node group {name}: defined twice")
        out[name] = _node_list(f"node group {name}", g.get("nodes"))
    return out


def place_on(p: dict[str, Any], groups: dict[str, list[str]]) -> None:
    """A product's ``nodes = [...]`` or ``group = "..."`` (else its ``target_node``: a group of
    one) into its columns; ``target_node`` becomes the first node when not given."""
    where = f"product {p.get('name')}"
    nodes, group = p.pop("nodes", None), p.pop("group", None)
    if nodes is not None and group is not None:
        raise CatalogError(f"{where}: name nodes or a group, not both")
    if group is not None:
        if group not in groups:
            raise CatalogError(f"{where}: unknown node group {str(group)[:64]!r}")
        nodes = groups[group]
    if nodes is not None:
        nodes = _node_list(where, nodes)
        p.setdefault("target_node", nodes[0])
    elif not isinstance(p.get("target_node"), str) or not NODE_NAME.match(p["target_node"]):
        raise CatalogError(f"{where}: needs target_node, nodes or group")
    p["nodes"] = ",".join(nodes) if nodes is not None else None  # a reload clears them
    p["node_group"] = group


LOCATION_KEYS = {"template", "target_node", "target_storage", "ip_pool", "ip6_pool"}


def _cluster_of(entry: dict[str, Any], where: str, clusters: Sequence[str]) -> str:
    """The entry's ``cluster`` (absent: the first/only one), one the settings name."""
    name = entry.get("cluster") or clusters[0]
    if name not in clusters:
        raise CatalogError(f"{where}: cluster {name!r} is not in the settings (clusters: "
                           f"{', '.join(clusters)})")
    return str(name)


def serves(pool: IpPool, cluster: str) -> bool:
    """A pool serves the VMs of its own cluster, a shared one (no cluster) those of every one."""
    return pool.cluster is None or pool.cluster == cluster


def _pool_for(product: str, key: str, name: str, cluster: str,
              pools: dict[str, IpPool]) -> IpPool:
    pool = pools.get(name) or IpPool.get_or_none(IpPool.name == name)
    if pool is None:
        raise CatalogError(f"product {product}: unknown pool {name}")
    if not serves(pool, cluster):
        raise CatalogError(f"product {product} in cluster {cluster}: {key} {name} is a pool of "
                           f"cluster {pool.cluster} (a pool serves its own cluster, or every "
                           "one with shared = true)")
    return pool


def _template_for(product: str, name: str, cluster: str,
                  templates: dict[str, Template]) -> Template:
    tpl = templates.get(name) or Template.get_or_none(Template.name == name)
    if tpl is None:
        raise CatalogError(f"product {product}: unknown template {name}")
    if tpl.cluster != cluster:
        raise CatalogError(f"product {product} in cluster {cluster}: template {name} lives in "
                           f"cluster {tpl.cluster} (a VM is cloned from a template of its own "
                           "cluster: name that cluster's copy in the location)")
    return tpl


def _load_locations(product: Product, locations: object, clusters: Sequence[str],
                    templates: dict[str, Template], pools: dict[str, IpPool]) -> None:
    """The product's other locations become exactly the listed ones: per cluster its own
    template, node, storage and pools (node/storage/pools default to the product's)."""
    where = f"product {product.name}"
    if not isinstance(locations, dict) or not all(isinstance(v, dict)
                                                  for v in locations.values()):
        raise CatalogError(f"{where}: locations must be tables, [products.locations.CLUSTER]")
    rows = []
    for cluster, loc in locations.items():
        at = f"{where} location {cluster}"
        _cluster_of({"cluster": cluster}, at, clusters)
        if cluster == product.cluster:
            raise CatalogError(f"{at}: that is the product's own cluster (its keys say it)")
        if set(loc) - LOCATION_KEYS or "template" not in loc:
            raise CatalogError(f"{at}: needs template and may say target_node, target_storage, "
                               f"ip_pool, ip6_pool; got {sorted(loc)}")
        row: dict[str, Any] = {
            "product_id": product.id, "cluster": cluster,
            "template_id": _template_for(product.name, loc["template"], cluster, templates).id,
            "target_node": loc.get("target_node", product.target_node),
            "target_storage": loc.get("target_storage", product.target_storage)}
        for key, col in (("ip_pool", "ip_pool_id"), ("ip6_pool", "ip6_pool_id")):
            name = loc.get(key)
            if name is None and getattr(product, col) is not None:
                name = IpPool.get_by_id(getattr(product, col)).name
            row[col] = _pool_for(product.name, key, name, cluster, pools).id if name else None
        rows.append(row)
    ProductLocation.delete().where(ProductLocation.product_id == product.id).execute()
    if rows:
        ProductLocation.insert_many(rows).execute()


def load(data: dict[str, Any], key_file: str,
         clusters: Sequence[str] = ("default",)) -> dict[str, int]:
    """``clusters``: the settings' cluster names, the default first (an entry without
    ``cluster`` belongs to it); a product's template and pools must be of its cluster."""
    check_dns(data, key_file)
    counts = {"templates": 0, "ip_pools": 0, "addresses": 0, "products": 0, "dns_zones": 0}
    with database.atomic():
        templates = {}
        for t in data.get("templates", []):
            t = dict(t)
            t["cluster"] = _cluster_of(t, f"template {t.get('name')}", clusters)
            replicas = t.pop("replicas", None)
            check_template(t)
            tpl = templates[t["name"]] = _upsert(Template, "name", t)
            counts["templates"] += 1
            if replicas is not None:
                _load_replicas(tpl, replicas)
        pools = {}
        for p in data.get("ip_pools", []):
            p = dict(p)
            first, last = p.pop("first", None), p.pop("last", None)
            if p.pop("shared", False):
                if p.get("cluster"):
                    raise CatalogError(f"pool {p.get('name')}: shared (every cluster) or "
                                       "cluster, not both")
                p["cluster"] = None
            else:
                p["cluster"] = _cluster_of(p, f"pool {p.get('name')}", clusters)
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
        groups = node_groups(data.get("node_groups", []))
        for p in data.get("products", []):
            p = dict(p)
            place_on(p, groups)
            tpl = p.pop("template")
            offer = p.pop("templates", None)
            locations = p.pop("locations", {})
            p["cluster"] = cluster = _cluster_of(p, f"product {p.get('name')}", clusters)
            for name in [tpl, *(offer if isinstance(offer, list) else [])]:
                if isinstance(name, str):  # the offer's templates are of the product's cluster
                    templates[name] = _template_for(p["name"], name, cluster, templates)
            offer_ids = _offer(p["name"], tpl, offer, templates)
            p["template_id"] = templates[tpl].id
            check_login(p, templates[tpl].name, templates[tpl].os_type)
            if p.get("dhcp") and (p.get("ip_pool") or p.get("ip6_pool")):
                raise CatalogError(f"product {p['name']}: a DHCP product has no IP pools")
            for key, col in (("ip_pool", "ip_pool_id"), ("ip6_pool", "ip6_pool_id")):
                name = p.pop(key, None)
                if name:
                    p[col] = _pool_for(p["name"], key, name, cluster, pools).id
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
            problem = overage_problem(p) or details_problem(p) or policy_problem(
                p.setdefault("rdns_policy", DEFAULT_POLICY))
            if problem:
                raise CatalogError(f"product {p['name']}: {problem}")
            p.setdefault("traffic_quota_gb", None)  # left out = unlimited (a reload clears it)
            p.setdefault("overage_rate_mbps", None)
            for key in ("cpu_type", "cpulimit", "cpuunits", "balloon_mb"):
                p.setdefault(key, None)  # left out = PVE's default (a reload clears it)
            product = _upsert(Product, "name", p)
            picker.save_offer(product.id, offer_ids)
            _load_locations(product, locations, clusters, templates, pools)
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


def load_file(path: str | Path, key_file: str,
              clusters: Sequence[str] = ("default",)) -> dict[str, int]:
    return load(tomllib.loads(Path(path).read_text()), key_file, clusters)
