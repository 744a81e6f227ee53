"""Cloudflare API v4 provider: find the zone id by name, list the rrset (paginated), then update
records in place (PUT), create what is missing (POST) and delete the surplus (DELETE).

Credentials (cloudflare/api-schemas securitySchemes): an API token goes in
"Authorization: Bearer"; a Global API Key in X-Auth-Key together with the account's email in
X-Auth-Email (sent as a Bearer token it is refused, 6003/6111). A token needs Zone:DNS:Edit on
the zone, plus Zone:Zone:Read to find the zone by name (GET /zones?name=); without it, set
zone_id."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import requests

from ._http import call, same_content, snippet, status_transient, timeout_of
from .model import DnsError

DEFAULT_URL = "https://api.cloudflare.com/client/v4"
PER_PAGE = 100
MAX_PAGES = 50
PROXIABLE = ("A", "AAAA")
NOT_FOUND_CODES = {81044}  # "Record does not exist."


class CloudflareProvider:
    """Settings: token (API token, sent as Bearer; api_token accepted as alias) or api_key +
    email (Global API Key), api_url (default https://api.cloudflare.com/client/v4), zone_id
    (optional: skips the zone look-up; one zone per provider), timeout (seconds, default 5).
    Records are never proxied."""

    name = "cloudflare"

    def __init__(self, settings: dict[str, Any], session: requests.Session | None = None) -> None:
        self.base = str(settings.get("api_url") or DEFAULT_URL).rstrip("/")
        token = settings.get("token") or settings.get("api_token")
        if token:
            self.auth_headers = {"Authorization": f"Bearer {token}"}
        elif settings.get("api_key"):
            if not settings.get("email"):
                raise ValueError("cloudflare: api_key (Global API Key) needs email")
            self.auth_headers = {
                "X-Auth-Email": str(settings["email"]),
                "X-Auth-Key": str(settings["api_key"]),
            }
        else:
            self.auth_headers = {"Authorization": "Bearer "}
        self.timeout = timeout_of(settings)
        self.session = session or requests.Session()
        self._zone_ids: dict[str, str] = {}
        if settings.get("zone_id"):
            self._fixed_zone_id: str | None = str(settings["zone_id"])
        else:
            self._fixed_zone_id = None

    # -- transport ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, where: str, **kwargs: Any) -> requests.Response:
        headers = {**self.auth_headers, "Accept": "application/json"}
        return call(
            self.session,
            method,
            self.base + path,
            where=f"cloudflare {where}",
            timeout=self.timeout,
            headers=headers,
            **kwargs,
        )

    def _api(self, method: str, path: str, where: str, ok_codes: Collection[int] = frozenset(),
             **kw: Any) -> dict[str, Any] | None:
        """Return the decoded envelope; DnsError unless success. ok_codes: Cloudflare error
        codes that count as success (returns None)."""
        resp = self._request(method, path, where, **kw)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise DnsError(
                f"cloudflare {where}: HTTP {resp.status_code}, not a JSON envelope: "
                f"{snippet(resp.text)}",
                transient=status_transient(resp.status_code),
            )
        if body.get("success") is True and resp.status_code < 400:
            return body
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        codes = {e.get("code") for e in errors}
        if codes and codes <= set(ok_codes):
            return None
        chain = [c for e in errors for c in e.get("error_chain") or [] if isinstance(c, dict)]
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors + chain) or \
            snippet(resp.text)
        if codes & {6003} or {c.get("code") for c in chain} & {6111, 6103, 6102}:
            raise DnsError(
                f"cloudflare {where}: authentication refused: {detail} (an API token goes in "
                "token; a Global API Key in api_key, with the account's email in email)"
            )
        if resp.status_code in (401, 403) or codes & {9103, 9106, 9109, 10000, 10001}:
            raise DnsError(f"cloudflare {where}: authentication refused: {detail}")
        if codes & {7003}:
            raise DnsError(f"cloudflare {where}: no such zone id (check zone_id): {detail}")
        raise DnsError(
            f"cloudflare {where}: HTTP {resp.status_code}: {detail}",
            transient=status_transient(resp.status_code),
        )

    # -- look-ups ----------------------------------------------------------------------------

    def probe(self, zone: str) -> None:
        self._zone_id(zone)

    def _zone_id(self, zone: str) -> str:
        if self._fixed_zone_id:
            return self._fixed_zone_id
        if zone in self._zone_ids:
            return self._zone_ids[zone]
        try:
            body = self._api(
                "GET", "/zones", f"zone {zone}: look up zone id", params={"name": zone}
            ) or {}
        except DnsError as exc:
            if exc.transient or "authentication refused: 9109" not in str(exc):
                raise
            raise DnsError(f"{exc} (GET /zones?name= needs the Zone:Zone:Read permission; "
                           "grant it, or set zone_id on the provider)") from None
        matches = [
            z for z in body.get("result") or [] if str(z.get("name", "")).lower() == zone.lower()
        ]
        if not matches or not matches[0].get("id"):
            raise DnsError(
                f"cloudflare zone {zone}: zone not found by name: it is not in this account, or "
                "the API token lacks the Zone:Zone:Read permission that GET /zones?name= needs "
                "(grant it, or set zone_id on the provider)"
            )
        self._zone_ids[zone] = str(matches[0]["id"])
        return self._zone_ids[zone]

    def _list(self, zone: str, zid: str, name: str, rtype: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._api(
                "GET",
                f"/zones/{zid}/dns_records",
                f"zone {zone}: list {rtype} {name}",
                params={"type": rtype, "name": name, "page": page, "per_page": PER_PAGE},
            ) or {}
            result = body.get("result") or []
            found += [
                r
                for r in result
                if str(r.get("name", "")).lower().rstrip(".") == name and r.get("type") == rtype
            ]
            info = body.get("result_info") or {}
            total_pages = int(info.get("total_pages") or 1)
            if page >= total_pages or not result:
                return found
            page += 1
            if page > MAX_PAGES:
                raise DnsError(f"cloudflare zone {zone}: more than {MAX_PAGES} pages for {name}")

    # -- provider ----------------------------------------------------------------------------

    def _body(self, name: str, rtype: str, content: str, ttl: int) -> dict[str, Any]:
        body: dict[str, Any] = {"type": rtype, "name": name, "content": content, "ttl": int(ttl)}
        if rtype in PROXIABLE:
            body["proxied"] = False
        return body

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        zid = self._zone_id(zone)
        existing = self._list(zone, zid, name, type)
        wanted = list(contents)
        stale: list[dict[str, Any]] = []
        for rec in existing:
            match = next((c for c in wanted if same_content(type, c, rec.get("content", ""))), None)
            if match is not None and int(rec.get("ttl", 0)) == int(ttl) and not rec.get("proxied"):
                wanted.remove(match)  # already right
            else:
                stale.append(rec)
        path = f"/zones/{zid}/dns_records"
        for content in wanted:
            body = self._body(name, type, content, ttl)
            if stale:  # rewrite a stale record in place: no moment without the name
                same = [r for r in stale if same_content(type, content, r.get("content", ""))]
                rec = (same or stale)[0]
                stale.remove(rec)
                rid = rec["id"]
                where = f"zone {zone}: update {type} {name}"
                self._api("PUT", f"{path}/{rid}", where, json=body)
            else:
                self._api("POST", path, f"zone {zone}: create {type} {name}", json=body)
        for rec in stale:
            where = f"zone {zone}: delete {type} {name}"
            self._api("DELETE", f"{path}/{rec['id']}", where, ok_codes=NOT_FOUND_CODES)

    def delete(self, zone: str, name: str, type: str) -> None:
        zid = self._zone_id(zone)
        for rec in self._list(zone, zid, name, type):
            where = f"zone {zone}: delete {type} {name}"
            self._api(
                "DELETE", f"/zones/{zid}/dns_records/{rec['id']}", where, ok_codes=NOT_FOUND_CODES
            )
