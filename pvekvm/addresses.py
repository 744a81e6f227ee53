"""What a service's address rows mean, shared by the steps, intake, the API and DNS.

A service holds at most one row per (version, slot) (``uq_ip_addresses_slot``): slot 0 is the
primary address of each version (IPv4 on ``ipconfig0``, the IPv6 address or routed prefix);
IPv4 slots 1..N are the product's ``extra_ipv4`` additional addresses, slot N on the VM's NIC
``netN``. A row with ``prefixlen`` is a routed prefix (``address`` is its network address); the
VM is configured with the prefix's first host address (``<prefix>::1``), which carries the
prefix's AAAA and PTR."""

from __future__ import annotations

import ipaddress

from pvekvm.models import IpAddress

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
