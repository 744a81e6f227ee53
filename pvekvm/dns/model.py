"""Value types shared by the DNS planner and the providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

PROVIDERS = ("powerdns", "cloudflare", "hestiacp", "rfc2136", "webhook")
RECORD_TYPES = ("A", "AAAA", "PTR")


@dataclass(frozen=True)
class ZoneConfig:
    """One configured zone (forward or reverse) and the provider that serves it.

    ``settings`` holds the provider's settings (api_url, credentials, ttl, ...). It is left out of
    repr() and hash() so that credentials do not end up in logs."""

    name: str
    provider: str
    settings: dict[str, Any] = field(default_factory=dict[str, Any], repr=False, hash=False)


@dataclass(frozen=True)
class DnsRecord:
    """One record: ``name`` is the FQDN without trailing dot, ``content`` an IP (A/AAAA) or a host
    name without trailing dot (PTR)."""

    zone: str
    name: str
    type: str
    content: str
    ttl: int = 3600


class DnsError(Exception):
    """A provider failed. ``transient`` is True when trying again later may succeed (time-out,
    connection refused, HTTP 5xx/429), False when it will not (authentication, validation,
    unknown zone)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __repr__(self) -> str:
        return f"DnsError({str(self)!r}, transient={self.transient})"


@runtime_checkable
class DnsProvider(Protocol):
    """What a provider does for one zone. ``name`` is an FQDN without trailing dot, ``contents``
    the full desired rrset (IPs, or host names for PTR, without trailing dot)."""

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        """Make the rrset (name, type) hold exactly ``contents``."""
        ...

    def delete(self, zone: str, name: str, type: str) -> str | None:
        """Remove the rrset (name, type); absent is fine. May return a note on what was done
        instead (a HestiaCP zone's last A record turned into the operator's placeholder)."""
        ...

    def probe(self, zone: str) -> None:
        """Read-only: DnsError unless the zone is reachable with these credentials."""
        ...
