"""Validating a catalog file (templates, IP pools, products, DNS providers and zones) before it
is loaded: every problem named by file, entry and key, without touching the database.

Keys and types come from the models (the columns an entry fills); references between entries
(a product's template and pools, a zone's provider) are checked when the file defines that kind
of entry (otherwise they may already be in the database: load-catalog checks them there).
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from peewee import BooleanField, CharField, DecimalField, Field, IntegerField, TextField

from pvekvm import picker
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.catalog import (
    CatalogError,
    check_login,
    check_prefix_pool,
    check_template,
    node_groups,
    place_on,
    pool_addresses,
)
from pvekvm.dns.model import PROVIDERS
from pvekvm.models import IpPool, Product, Template
from pvekvm.overage import overage_problem
from pvekvm.package_details import details_problem
from pvekvm.rdns_policy import policy_problem
from pvekvm.validation import is_valid_hostname

#: section -> (model, extra keys the loader accepts, columns the loader fills itself)
SECTIONS: dict[str, tuple[Any, dict[str, type], set[str]]] = {
    "templates": (Template, {}, set()),
    "ip_pools": (IpPool, {"first": str, "last": str, "shared": bool}, set()),
    "products": (Product, {"template": str, "ip_pool": str, "ip6_pool": str, "templates": list,
                           "group": str, "nodes": list, "target_node": str, "locations": dict},
                 {"template_id", "ip_pool_id", "ip6_pool_id", "nodes", "node_group",
                  "target_node"}),  # target_node: checked with nodes and group
}
REQUIRED_EXTRA = {"products": {"template"}}


def _kind(field: Field) -> tuple[type | tuple[type, ...], str]:
    if isinstance(field, BooleanField):
        return bool, "true/false"
    if isinstance(field, DecimalField):
        return (int, float), "a number"
    if isinstance(field, IntegerField):
        return int, "an integer"
    if isinstance(field, CharField | TextField):
        return str, "a string"
    return object, "a value"


def _entry(where: str, section: str, entry: dict[str, Any]) -> list[str]:
    model, extra, filled = SECTIONS[section]
    columns = {f.name: f for f in model._meta.sorted_fields if f.name != "id"}
    allowed = (set(columns) - filled) | set(extra)
    errors = [f"{where} {key}: unknown key (known: {', '.join(sorted(allowed))})"
              for key in entry if key not in allowed]
    for name, f in columns.items():
        if name in filled:
            continue
        if name not in entry:
            if not f.null and f.default is None:
                errors.append(f"{where} {name}: missing")
            continue
        types, text = _kind(f)
        value = entry[name]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            errors.append(f"{where} {name}: expected {text}, got {value!r}")
        elif isinstance(value, str) and getattr(f, "max_length", None) and \
                len(value) > f.max_length:
            errors.append(f"{where} {name}: longer than {f.max_length} characters")
        elif isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            errors.append(f"{where} {name}: must not be negative, got {value!r}")
    for key, typ in extra.items():
        if key in entry and not isinstance(entry[key], typ):
            what = {dict: "a table", bool: "true/false", list: "a list"}.get(typ, "a string")
            errors.append(f"{where} {key}: expected {what}, got {str(entry[key])[:70]!r}")
        elif key not in entry and key in REQUIRED_EXTRA.get(section, ()):
            errors.append(f"{where} {key}: missing")
    return errors


def _pool(where: str, pool: dict[str, Any]) -> list[str]:
    try:
        net = ipaddress.ip_network(str(pool.get("network")), strict=False)
    except ValueError:
        return [f"{where} network: not a network in CIDR form: {pool.get('network')!r}"]
    errors = []
    if pool.get("assign") is not None:
        try:
            check_prefix_pool(pool, pool.get("first"), pool.get("last"))
        except CatalogError as exc:
            errors.append(f"{where} assign: {exc}")
        return errors
    if pool.get("version") not in (4, 6) or pool.get("version") != net.version:
        errors.append(f"{where} version: expected {net.version} for {net}, "
                      f"got {pool.get('version')!r}")
    try:
        if ipaddress.ip_address(str(pool.get("gateway"))) not in net:
            errors.append(f"{where} gateway: {pool['gateway']} is not inside {net}")
    except ValueError:
        errors.append(f"{where} gateway: not an address: {pool.get('gateway')!r}")
    try:
        first, last = pool.get("first"), pool.get("last")
        if len(pool_addresses(str(net), first, last)) == 0:
            errors.append(f"{where}: the range holds no address")
    except (CatalogError, ValueError) as exc:
        errors.append(f"{where} first/last: {exc}")
    return errors


def validate(data: dict[str, Any], name: str) -> list[str]:
    """Every problem in a parsed catalog, as '<file>: [[section]] #n (name) key: what'."""
    known = set(SECTIONS) | {"dns_providers", "dns_zones", "node_groups"}
    errors = [f"{name}: unknown section [[{s}]] (known: {', '.join(sorted(known))})"
              for s in data if s not in known]
    names: dict[str, set[str]] = {}
    for section in sorted(known & set(data)):
        entries = data[section]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            errors.append(f"{name}: {section} must be a list of tables ([[{section}]])")
            continue
        seen = names.setdefault(section, set())
        for i, entry in enumerate(entries, 1):
            where = f"{name}: [[{section}]] #{i} ({entry.get('name', '?')})"
            if entry.get("name") in seen:
                errors.append(f"{where} name: defined twice")
            seen.add(entry.get("name"))
            if section in SECTIONS:
                errors += _entry(where, section, entry)
            if section == "ip_pools" and not any(e.startswith(where) for e in errors):
                errors += _pool(where, entry)
            if section == "templates" and not any(e.startswith(where) for e in errors):
                errors += _checked(where, check_template, dict(entry))
            if section == "products":
                errors += _product_refs(where, entry, data) + _product_nodes(where, entry, data)
            if section == "node_groups":
                errors += _node_group(where, entry)
            if section == "dns_providers":
                errors += _provider(where, entry)
            if section == "dns_zones":
                errors += _zone(where, entry, data)
    return errors


def _checked(where: str, check: Any, *args: Any) -> list[str]:
    """The loader's own check of an entry, its CatalogError said for this file."""
    try:
        check(*args)
    except CatalogError as exc:
        return [f"{where}: {str(exc).split(': ', 1)[-1]}"]
    return []


def _refs(data: dict[str, Any], section: str) -> set[str] | None:
    return {e.get("name") for e in data[section]} if data.get(section) else None


def _product_refs(where: str, p: dict[str, Any], data: dict[str, Any]) -> list[str]:
    errors = []
    for key, section in (("template", "templates"), ("ip_pool", "ip_pools"),
                         ("ip6_pool", "ip_pools")):
        known = _refs(data, section)
        if key in p and known is not None and p[key] not in known:
            errors.append(f"{where} {key}: no [[{section}]] named {p[key]!r} in this file")
    known = _refs(data, "templates")
    if "templates" in p and (known is None or p.get("template") in known):  # the OS picker's
        problem = picker.catalog_offer_problem(p.get("template"), p["templates"])  # offer
        if problem:
            errors.append(f"{where} {problem}")
        elif known is not None:
            errors.extend(f"{where} templates: no [[templates]] named {n!r} in this file"
                          for n in p["templates"] if n not in known)
    errors += _cluster_refs(where, p, data)
    extra = p.get("extra_ipv4", 0)
    if isinstance(extra, int) and extra > MAX_EXTRA_IPV4:
        errors.append(f"{where} extra_ipv4: at most {MAX_EXTRA_IPV4} (one NIC each), got {extra}")
    if extra and not p.get("ip_pool"):
        errors.append(f"{where} extra_ipv4: needs an ip_pool (the extra addresses come from it)")
    if extra and p.get("dhcp"):
        errors.append(f"{where} extra_ipv4: a DHCP product has no managed addresses")
    pools = {e.get("name"): e for e in data.get("ip_pools", []) if isinstance(e, dict)}
    for key, version in (("ip_pool", 4), ("ip6_pool", 6)):
        pool = pools.get(p.get(key))
        if pool is not None and pool.get("version") != version:
            errors.append(f"{where} {key}: {p[key]} is an IPv{pool.get('version')} pool, "
                          f"IPv{version} expected")
    if isinstance(p.get("dns_zone"), str) and not is_valid_hostname(p["dns_zone"]):
        errors.append(f"{where} dns_zone: not a valid zone name: {p['dns_zone']!r}")
    for key in ("firewall_policy_in", "firewall_policy_out"):
        if key in p and p[key] not in ("ACCEPT", "DROP", "REJECT"):
            errors.append(f"{where} {key}: expected ACCEPT, DROP or REJECT, got {p[key]!r}")
    problem = overage_problem(p)
    if problem:
        errors.append(f"{where} traffic quota: {problem}")
    problem = details_problem(p)
    if problem:
        errors.append(f"{where} {problem}")
    if "rdns_policy" in p and policy_problem(p["rdns_policy"]):
        errors.append(f"{where} {policy_problem(p['rdns_policy'])}")
    template = next((t for t in data.get("templates", []) if isinstance(t, dict)
                     and t.get("name") == p.get("template")), {})
    errors += _checked(where, check_login, dict(p), str(p.get("template")),
                       template.get("os_type", "linux"))
    return errors


def _node_group(where: str, g: dict[str, Any]) -> list[str]:
    errors = [f"{where} {k}: unknown key (known: name, nodes)" for k in g
              if k not in ("name", "nodes")]
    try:
        node_groups([g])
    except CatalogError as exc:
        errors.append(f"{where}: {exc}")
    return errors


def _product_nodes(where: str, p: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """``nodes``, ``group`` or ``target_node``: as the loader reads them."""
    rows = [g for g in data.get("node_groups", []) if isinstance(g, dict)]
    try:
        groups = node_groups(rows)
    except CatalogError:
        groups = {str(g.get("name")): ["said-at-the-group"] for g in rows}
    try:
        place_on(dict(p), groups)
    except CatalogError as exc:
        return [f"{where} {str(exc).split(': ', 1)[-1]}"]
    return []


def _cluster_refs(where: str, p: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """Cross-cluster mistakes this file shows: a product (or one of its locations) whose
    template or pool is defined here in another cluster. An entry without ``cluster`` is in the
    settings' first cluster, unknown here: compared only with another entry without one."""
    by_name = {s: {e.get("name"): e for e in data.get(s, []) if isinstance(e, dict)}
               for s in ("templates", "ip_pools")}
    errors = []
    places = [(where, p.get("cluster"), p)]
    locations = p.get("locations", {})
    if isinstance(locations, dict):
        for cluster, loc in locations.items():
            if not isinstance(loc, dict):
                errors.append(f"{where} locations.{cluster}: expected a table")
                continue
            if "template" not in loc:
                errors.append(f"{where} locations.{cluster} template: missing (the VM is "
                              "cloned from a template of that cluster)")
            places.append((f"{where} locations.{cluster}", cluster,
                           {k: loc.get(k, p.get(k)) for k in ("template", "ip_pool",
                                                               "ip6_pool")}))
    for at, cluster, refs in places:
        for key, section in (("template", "templates"), ("ip_pool", "ip_pools"),
                             ("ip6_pool", "ip_pools")):
            entry = by_name[section].get(refs.get(key))
            if entry is None or (section == "ip_pools" and entry.get("shared")):
                continue
            if entry.get("cluster") != cluster:
                errors.append(f"{at} {key}: {refs[key]} is in cluster "
                              f"{entry.get('cluster') or '(the default)'}, the product in "
                              f"{cluster or '(the default)'} (a template and pools of its own "
                              "cluster, or a shared pool)")
    return errors


def _provider(where: str, d: dict[str, Any]) -> list[str]:
    errors = [f"{where} {k}: unknown key (known: kind, name, settings)"
              for k in d if k not in ("name", "kind", "settings")]
    if d.get("kind") not in PROVIDERS:
        errors.append(f"{where} kind: expected one of {', '.join(PROVIDERS)}, "
                      f"got {d.get('kind')!r}")
    if not isinstance(d.get("settings", {}), dict):
        errors.append(f"{where} settings: expected a table")
    if not isinstance(d.get("name"), str):
        errors.append(f"{where} name: missing")
    return errors


def _zone(where: str, z: dict[str, Any], data: dict[str, Any]) -> list[str]:
    errors = [f"{where} {k}: unknown key (known: name, provider)"
              for k in z if k not in ("name", "provider")]
    if not isinstance(z.get("name"), str) or not is_valid_hostname(z["name"].rstrip(".")):
        errors.append(f"{where} name: not a valid zone name: {z.get('name')!r}")
    known = _refs(data, "dns_providers")
    if not isinstance(z.get("provider"), str):
        errors.append(f"{where} provider: missing")
    elif known is not None and z["provider"] not in known:
        errors.append(f"{where} provider: no [[dns_providers]] named {z['provider']!r} "
                      "in this file")
    return errors


def validate_file(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror or exc}"]
    except tomllib.TOMLDecodeError as exc:
        return [f"{path}: not valid TOML: {exc}"]
    return validate(data, str(path))
