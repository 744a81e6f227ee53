"""HestiaCP provider through its legacy/access-key API: POST {api_url}/api/ with form fields
hash (access key "ACCESS:SECRET", or a legacy hash) or user+password, cmd, arg1..argN,
returncode. Commands: v-list-dns-records USER DOMAIN json, v-add-dns-record USER DOMAIN RECORD
TYPE VALUE [PRIORITY] [ID] [RESTART] [TTL], v-delete-dns-record USER DOMAIN ID [RESTART]."""

from __future__ import annotations

import json

import requests

from ._http import call, same_content, snippet, status_transient, timeout_of
from .model import DnsError

# Hestia exit codes (func/main.sh).
CODES = {
    0: "OK",
    1: "E_ARGS",
    2: "E_INVALID",
    3: "E_NOTEXIST",
    4: "E_EXISTS",
    5: "E_SUSPENDED",
    6: "E_UNSUSPENDED",
    7: "E_INUSE",
    8: "E_LIMIT",
    9: "E_PASSWORD",
    10: "E_FORBIDEN",
    11: "E_DISABLED",
    12: "E_PARSING",
    13: "E_DISK",
    14: "E_LA",
    15: "E_CONNECT",
    16: "E_FTP",
    17: "E_DB",
    18: "E_RRD",
    19: "E_UPDATE",
    20: "E_RESTART",
}
E_NOTEXIST = 3
AUTH_CODES = {9, 10, 11}
TRANSIENT_CODES = {13, 14, 15, 17, 19, 20}  # disk, load average, connect, db, update, restart


class HestiaProvider:
    """Settings: api_url (https://panel:8083), hash ("ACCESS_KEY:SECRET_KEY") or user +
    password, hestia_user (the Hestia user owning the DNS domain; defaults to user), verify_tls
    (default true), restart (pass RESTART=yes to add/delete, default true), timeout (default 5)."""

    name = "hestiacp"

    def __init__(self, settings: dict, session: requests.Session | None = None) -> None:
        url = str(settings.get("api_url") or "").rstrip("/")
        if not url:
            raise ValueError("hestiacp: api_url is required")
        self.url = url if url.endswith("/api") else url + "/api"
        self.url += "/"
        if settings.get("hash"):
            self.auth = {"hash": str(settings["hash"])}
        elif settings.get("user") and settings.get("password"):
            self.auth = {"user": str(settings["user"]), "password": str(settings["password"])}
        else:
            raise ValueError("hestiacp: settings need hash, or user and password")
        owner = settings.get("hestia_user") or settings.get("user")
        if not owner:
            raise ValueError("hestiacp: settings need hestia_user (owner of the DNS domain)")
        self.owner = str(owner)
        self.verify = settings.get("verify_tls", True)
        self.restart = "yes" if settings.get("restart", True) else "no"
        self.timeout = timeout_of(settings)
        self.session = session or requests.Session()

    def _post(self, zone: str, what: str, cmd: str, args: list[str], returncode: bool):
        where = f"hestiacp zone {zone}: {what}"
        data = dict(self.auth)
        data["returncode"] = "yes" if returncode else "no"
        data["cmd"] = cmd
        for i, arg in enumerate(args, start=1):
            data[f"arg{i}"] = arg
        resp = call(
            self.session,
            "POST",
            self.url,
            where=where,
            timeout=self.timeout,
            data=data,
            verify=self.verify,
        )
        if status_transient(resp.status_code):
            detail = snippet(resp.text)
            raise DnsError(f"{where}: HTTP {resp.status_code}: {detail}", transient=True)
        header = resp.headers.get("Hestia-Exit-Code", "").strip()
        text = resp.text.strip()
        code: int | None = int(header) if header.isdigit() else None
        if code is None and returncode and text.isdigit():
            code = int(text)
        if code is None:
            if resp.status_code in (401, 403):
                code = 9  # E_PASSWORD
            elif resp.status_code >= 400 or text.startswith("Error"):
                raise DnsError(f"{where}: HTTP {resp.status_code}: {snippet(text)}")
            elif returncode:
                raise DnsError(f"{where}: unexpected answer (HTTP {resp.status_code})")
            else:
                code = 0
        return where, code, text

    @staticmethod
    def _fail(where: str, code: int, text: str) -> DnsError:
        name = CODES.get(code, "unknown")
        if code in AUTH_CODES:
            return DnsError(f"{where}: authentication refused (Hestia {code} {name})")
        detail = "" if text.isdigit() else f": {snippet(text)}"
        return DnsError(
            f"{where}: Hestia error {code} {name}{detail}", transient=code in TRANSIENT_CODES
        )

    @staticmethod
    def _relative(zone: str, name: str) -> str:
        if name == zone:
            return "@"
        suffix = "." + zone
        if not name.endswith(suffix):
            raise ValueError(f"{name!r} is not inside zone {zone!r}")
        return name[: -len(suffix)]

    def _list(self, zone: str, record: str, rtype: str) -> list[dict]:
        where, code, text = self._post(
            zone, "list records", "v-list-dns-records", [self.owner, zone, "json"], False
        )
        if code:
            raise self._fail(where, code, text)
        try:
            data = json.loads(text) if text and text != "OK" else {}
        except ValueError:
            raise DnsError(f"{where}: answer is not JSON: {snippet(text)}") from None
        if not isinstance(data, dict):
            raise DnsError(f"{where}: unexpected JSON: {snippet(text)}")
        return [
            dict(rec, ID=str(rec.get("ID") or key))
            for key, rec in data.items()
            if isinstance(rec, dict)
            and str(rec.get("RECORD", "")).lower() == record
            and str(rec.get("TYPE", "")).upper() == rtype
        ]

    def _delete_id(self, zone: str, rtype: str, name: str, rid: str) -> None:
        where, code, text = self._post(
            zone,
            f"delete {rtype} {name} (id {rid})",
            "v-delete-dns-record",
            [self.owner, zone, rid, self.restart],
            True,
        )
        if code and code != E_NOTEXIST:
            raise self._fail(where, code, text)

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        record = self._relative(zone, name)
        wanted = list(contents)
        stale: list[dict] = []
        for rec in self._list(zone, record, type):
            match = next((c for c in wanted if same_content(type, c, str(rec.get("VALUE")))), None)
            if match is not None and str(rec.get("TTL", "")) == str(ttl):
                wanted.remove(match)
            else:
                stale.append(rec)
        for content in wanted:  # add first, delete after: the name never goes missing
            value = content.rstrip(".") + "." if type == "PTR" else content
            where, code, text = self._post(
                zone,
                f"add {type} {name}",
                "v-add-dns-record",
                [self.owner, zone, record, type, value, "", "", self.restart, str(int(ttl))],
                True,
            )
            if code:
                raise self._fail(where, code, text)
        for rec in stale:
            self._delete_id(zone, type, name, rec["ID"])

    def delete(self, zone: str, name: str, type: str) -> None:
        record = self._relative(zone, name)
        for rec in self._list(zone, record, type):
            self._delete_id(zone, type, name, rec["ID"])
