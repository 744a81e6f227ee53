"""What a service's address rows mean, shared by the steps, intake, the API and DNS.

A service holds at most one row per (version, slot) (``uq_ip_addresses_slot``): slot 0 is the
primary address of each version (IPv4 on ``ipconfig0``, the IPv6 address or routed prefix);
IPv4 slots 1..N are the product's ``extra_ipv4`` additional addresses, slot N on the VM's NIC
``netN``. A row with ``prefixlen`` is a routed prefix (``address`` is its network address); the
VM is configured with the prefix's first host address (``<prefix>::1``), which carries the
prefix's AAAA and PTR."""

from __future__ import annotations

import ipaddress

from peewee import IntegrityError

from pvekvm.models import IpAddress, IpPool, database

MAX_EXTRA_IPV4 = 16  # extra IPv4 slots: NICs net1..net16 are the engine's


def host_address(row: IpAddress) -> str:
    """The address the VM itself uses: the row's address, or a prefix's first host address."""
    if row.prefixlen is None:
        return str(row.address)
    return str(ipaddress.ip_network(f"{row.address}/{row.prefixlen}").network_address + 1)


def cidr(row: IpAddress) -> str:
    """The row as a firewall IPSet entry: the address, or the whole routed prefix."""
    return str(row.address) if row.prefixlen is None else f"{row.address}/{row.prefixlen}"


def held(service_id: int) -> list[IpAddress]:
    """Every row the service holds, IPv4 first, primary before extras (several steps of each
    operation read them: the statement is written out, not built)."""
    return IpAddress.fetch("SELECT * FROM ip_addresses WHERE service_id = %s "
                           "ORDER BY version, slot", service_id)


def held_row(service_id: int, address: str) -> IpAddress | None:
    """The service's row for ``address`` (a held address, or a held prefix's host address):
    reverse DNS is only ever set for these."""
    try:
        wanted = str(ipaddress.ip_address(address))
    except ValueError:
        return None
    return next((r for r in held(service_id) if host_address(r) == wanted), None)


def nth_prefix(network: str, assign: int, index: int) -> str:
    """The network address of the ``index``-th /assign inside ``network`` (ValueError past the
    end)."""
    net = ipaddress.ip_network(network, strict=False)
    size = 1 << (net.max_prefixlen - assign)
    if not 0 <= index < 1 << (assign - net.prefixlen):
        raise ValueError(f"{network} holds no /{assign} number {index}")
    return str(ipaddress.ip_address(int(net.network_address) + index * size))


def pool_row_for(host: str) -> tuple[IpPool, str, int | None] | str:
    """Where an address found on a VM (adoption) belongs: its pool, the row's address (the
    address itself, or in a prefix pool the routed prefix it is the first host of) and the
    row's prefix length; or why it belongs nowhere. A prefix pool's VM uses ``<prefix>::1``
    (:func:`host_address`): any other address of the prefix is refused."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is not an IP address"
    for pool in IpPool.select().where(IpPool.version == ip.version).order_by(IpPool.id):
        net = ipaddress.ip_network(pool.network, strict=False)
        if ip not in net:
            continue
        if pool.assign is None:
            return pool, ip.compressed, None
        prefix = ipaddress.ip_network(f"{ip}/{pool.assign}", strict=False)
        if ip != prefix.network_address + 1:
            return (f"address {ip} is in routed prefix pool {pool.name}, whose VMs use their "
                    f"prefix's first host address ({prefix.network_address + 1})")
        return pool, prefix.network_address.compressed, int(pool.assign)
    return f"address {ip} lies outside every IP pool"


def claim(service_id: int, host: str, slot: int) -> IpAddress | str:
    """Adoption: the service takes the address a VM already uses, in ``slot`` (the only write of
    a chosen address; allocation takes free ones). Refused with the reason when the address is
    outside every pool or outside its pool's range, or another service holds it; the unique
    keys settle a race (the loser is refused). Taking it again is a no-op."""
    found = pool_row_for(host)
    if isinstance(found, str):
        return found
    pool, address, prefixlen = found
    version = 6 if ":" in address else 4
    row = IpAddress.get_or_none(IpAddress.address == address)
    if row is None and prefixlen is None:
        return (f"address {host} is in pool {pool.name}'s network but outside the addresses "
                f"it hands out")
    if row is not None and row.service_id not in (None, service_id):
        return f"address {host} is held by service {row.service_id}"
    if row is not None and row.service_id == service_id and row.slot == slot:
        return row
    try:
        with database.atomic():
            if row is None:
                IpAddress.insert(pool_id=pool.id, address=address, version=version,
                                 prefixlen=prefixlen, service_id=service_id, slot=slot).execute()
            elif not IpAddress.update(service_id=service_id, slot=slot, released_at=None,
                                      ptr=None if row.service_id is None else row.ptr).where(
                    (IpAddress.id == row.id) & ((IpAddress.service_id.is_null())
                                                | (IpAddress.service_id == service_id))
            ).execute():
                return f"address {host} was taken by another service meanwhile"
    except IntegrityError:
        return f"address {host} (slot {slot}) is held by another service, or the service " \
               f"already holds another address in that slot"
    return IpAddress.get(IpAddress.address == address)
