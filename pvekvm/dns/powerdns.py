"""PowerDNS Authoritative HTTP API provider (PATCH rrsets with changetype REPLACE/DELETE)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from ._http import call, snippet, status_transient, timeout_of
from .model import DnsError

DEFAULT_URL = "http://127.0.0.1:8081"


def zone_id(zone: str) -> str:
    """PowerDNS zone id: canonical name with trailing dot, '=' and '/' escaped as =3D / =2F."""
    canonical = zone.rstrip(".") + "."
    return canonical.replace("=", "=3D").replace("/", "=2F")


class PowerDnsProvider:
    """Settings: api_url (default http://127.0.0.1:8081, with or without /api/v1), api_key,
    server_id (default localhost), timeout (seconds, default 5)."""

    name = "powerdns"

    def __init__(self, settings: dict[str, Any], session: requests.Session | None = None) -> None:
        url = str(settings.get("api_url") or DEFAULT_URL).rstrip("/")
        if not url.endswith("/api/v1"):
            url += "/api/v1"
        self.base = url
        self.api_key = str(settings.get("api_key") or "")
        self.server_id = str(settings.get("server_id") or "localhost")
        self.timeout = timeout_of(settings)
        self.session = session or requests.Session()

    def _zone_url(self, zone: str) -> str:
        return (
            f"{self.base}/servers/{quote(self.server_id, safe='')}"
            f"/zones/{quote(zone_id(zone), safe='=.')}"
        )

    def probe(self, zone: str) -> None:
        resp = self.session.get(self._zone_url(zone), timeout=self.timeout,
                                headers={"X-API-Key": self.api_key, "Accept": "application/json"})
        if resp.status_code in (401, 403):
            raise DnsError(f"authentication refused (HTTP {resp.status_code})")
        if resp.status_code == 404:
            raise DnsError(f"zone not found on server {self.server_id!r}")
        if resp.status_code != 200:
            raise DnsError(f"HTTP {resp.status_code}")

    def _patch(self, zone: str, rrset: dict[str, Any], action: str) -> None:
        where = f"powerdns zone {zone}: {action}"
        resp = call(
            self.session,
            "PATCH",
            self._zone_url(zone),
            where=where,
            timeout=self.timeout,
            json={"rrsets": [rrset]},
            headers={"X-API-Key": self.api_key, "Accept": "application/json"},
        )
        if resp.status_code in (200, 204):
            return
        try:
            detail = resp.json().get("error") or snippet(resp.text)
        except ValueError:
            detail = snippet(resp.text)
        if resp.status_code in (401, 403):
            raise DnsError(f"{where}: authentication refused (HTTP {resp.status_code})")
        if resp.status_code == 404:
            raise DnsError(f"{where}: zone not found on server {self.server_id!r}: {detail}")
        raise DnsError(
            f"{where}: HTTP {resp.status_code}: {detail}",
            transient=status_transient(resp.status_code),
        )

    @staticmethod
    def _fqdn(name: str) -> str:
        return name.rstrip(".") + "."

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        if type == "PTR":
            contents = [self._fqdn(c) for c in contents]
        rrset = {
            "name": self._fqdn(name),
            "type": type,
            "ttl": int(ttl),
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in contents],
        }
        self._patch(zone, rrset, f"replace {type} {name}")

    def delete(self, zone: str, name: str, type: str) -> None:
        rrset = {"name": self._fqdn(name), "type": type, "changetype": "DELETE"}
        self._patch(zone, rrset, f"delete {type} {name}")
