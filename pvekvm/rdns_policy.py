"""Which PTR name a client may give one of its service's addresses (``rdns_set``).

A mail provider judges a sender by its reverse DNS, so a PTR that names someone else's host is
abuse. The product's ``rdns_policy`` decides what a name must be:

- ``owned``: a name the service *owns*: inside one of the provider's forward zones (the
  catalog's ``dns_zones`` and the products' ``dns_zone``) and equal to the service's host name or
  under it (``mail.vps-1-7101.vps.example.net``), with no other live service's host name nearer
  to it (``x.b.a.zone`` belongs to the live service named ``b.a.zone``, not to ``a.zone``'s);
- ``fcrdns``: forward-confirmed: the name's A (IPv4) or AAAA (IPv6) records, asked of
  ``[rdns] resolver`` at request time, include the address;
- ``owned-or-fcrdns`` (the default): either;
- ``off``: any valid host name.

Under every policy: the service's own host name is always allowed (it is the PTR deploy gives and
``rdns_reset`` restores), and a name is refused when it is another live service's host name, or,
inside the provider's zones, under one (that subtree is the other service's). The API checks all
of it at request time; intake checks what the database alone can answer (billing may publish
``rdns_set`` over AMQP directly); the step checks all of it again before it writes the PTR.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.nameserver
import dns.resolver

from pvekvm.config import RdnsSettings
from pvekvm.lifecycle import ServiceStatus
from pvekvm.models import DnsZone, Product, Service

POLICIES = ("owned", "fcrdns", "owned-or-fcrdns", "off")
DEFAULT_POLICY = "owned-or-fcrdns"
OWNS = ("owned", "owned-or-fcrdns")


def policy_problem(value: object) -> str | None:
    """Why ``value`` is no ``rdns_policy`` (for the catalog loader and checker), or None."""
    if value in POLICIES:
        return None
    return f"rdns_policy: expected one of {', '.join(POLICIES)}, got {str(value)[:40]!r}"


def _suffixes(name: str) -> list[str]:
    """``a.b.c`` -> ``[a.b.c, b.c, c]``: at most 127 names for a 253-octet name."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _nearest_holder(name: str) -> tuple[int, str] | None:
    """(id, host name) of the live service whose host name is ``name`` or its nearest parent."""
    rows = Service.select(Service.id, Service.hostname).where(
        Service.hostname.in_(_suffixes(name)) & (Service.status != ServiceStatus.TERMINATED))
    best = max(rows, key=lambda s: len(s.hostname), default=None)
    return (best.id, best.hostname.lower()) if best is not None else None


def _in_provider_zone(name: str) -> bool:
    """True when ``name`` lies inside (or is) one of the provider's forward zones."""
    names: list[object] = [z.name for z in DnsZone.select(DnsZone.name)]
    names += [p.dns_zone for p in Product.select(Product.dns_zone).where(
        Product.dns_zone.is_null(False)).distinct()]
    zones = {str(z).lower().rstrip(".") for z in names}
    zones = {z for z in zones if z and not z.endswith("arpa")}
    return any(s in zones for s in _suffixes(name))


def problem(service: Service, address: str, name: str, policy: str,
            rdns: RdnsSettings | None) -> str | None:
    """Why ``service`` may not give ``address`` the PTR ``name`` (valid, lower case, no trailing
    dot) under ``policy``, or None. ``rdns`` None: DNS is not asked (intake) and a name only
    FCrDNS could allow passes here, left to the step. Reasons never echo the name."""
    own = service.hostname.lower().rstrip(".")
    if name == own:
        return None
    holder = _nearest_holder(name)
    in_zone = _in_provider_zone(name)
    if holder is not None and holder[0] != service.id:
        if holder[1] == name:
            return "the name is another live service's host name"
        if in_zone:
            return "the name lies under another live service's host name"
    if policy == "off":
        return None
    if policy in OWNS and in_zone and holder is not None and holder[0] == service.id:
        return None
    if policy == "owned":
        return ("rdns policy 'owned': the name must be the service's host name or a name under "
                "it, inside one of the provider's DNS zones")
    if rdns is None:
        return None
    failed = fcrdns_problem(name, address, rdns)
    if failed is None:
        return None
    if policy == "fcrdns":
        return f"rdns policy 'fcrdns': {failed}"
    return (f"rdns policy 'owned-or-fcrdns': the name is not under the service's host name in "
            f"the provider's DNS zones, and {failed}")


def fcrdns_problem(name: str, address: str, rdns: RdnsSettings) -> str | None:
    """None when the A/AAAA records of ``name`` include ``address`` (forward-confirmed reverse
    DNS), else why not. One lookup of the address's family, bounded by ``rdns.timeout_s``."""
    addr = ipaddress.ip_address(address)
    rtype = "A" if addr.version == 4 else "AAAA"
    servers = rdns.nameservers()
    try:
        resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port)
                                    for ip, port in servers]
        answer = resolver.resolve(name, rtype, lifetime=rdns.timeout_s, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return f"the name has no {rtype} record pointing at {address}"
    except dns.exception.Timeout:
        return f"the name's {rtype} records could not be looked up in time (try again)"
    except (dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration,
            dns.exception.DNSException) as exc:
        return f"the name's {rtype} records could not be looked up ({type(exc).__name__})"
    if any(ipaddress.ip_address(rr.to_text()) == addr for rr in answer):
        return None
    return f"the name's {rtype} records do not include {address}"
