"""Who is calling, behind reverse proxies: shared by the service API and the console proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def real_caller(peer: str | None, forwarded_for: Iterable[str],
                trusted: tuple[str, ...]) -> str | None:
    """The caller's address: the TCP ``peer``, unless the peer is one of the ``trusted``
    proxies; then ``X-Forwarded-For`` (all its header lines) read from the right, past the
    trusted hops, to the first address no trusted proxy holds (anything left of it was written
    by the caller, so is not believed). At most 32 hops are read."""
    if not trusted or peer is None:
        return peer
    nets = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in nets)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in ",".join(forwarded_for).split(",")]
    for hop in reversed(hops[-32:]):  # bounded: a proxy chain is short
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy passed on garbage: the proxy is what we know
    return peer
