"""HestiaCP provider through web/api/index.php: POST {api_url}/api/ with form fields hash
(access key "ACCESS:SECRET", or a legacy hash) or user+password, cmd, arg1..argN, returncode=no.
Commands: v-list-dns-records USER DOMAIN json, v-add-dns-record USER DOMAIN RECORD TYPE VALUE
[PRIORITY] [ID] [RESTART] [TTL], v-delete-dns-record USER DOMAIN ID [RESTART],
v-change-dns-record USER DOMAIN ID RECORD TYPE VALUE [PRIORITY] [RESTART] [TTL].

What the panel does that a client must allow for (hestiacp/hestiacp sources):
- access keys answer with a Hestia-Exit-Code header; the legacy user/password (or legacy hash)
  path answers HTTP 200 with the command's output ("OK" when empty) and no header;
- v-delete-dns-record refuses to delete a zone's last A record (func/domain.sh
  is_dns_record_critical, exit 2);
- v-add-dns-record exits 2 when only the DNS restart failed (its check_result arguments are
  swapped), with "Error: 20" as the last output line; the record is written;
- v-list-dns-records json escapes only '"', so one backslash in any record breaks the JSON.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import requests

from ._http import call, same_content, snippet, status_transient, timeout_of
from .model import DnsError

# Hestia exit codes (func/main.sh; E_API_DISABLED from web/inc/helpers.php).
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
    21: "E_API_DISABLED",
}
E_INVALID, E_NOTEXIST, E_EXISTS, E_PASSWORD, E_FORBIDEN = 2, 3, 4, 9, 10
E_DISABLED, E_RESTART, E_API_DISABLED = 11, 20, 21
UNKNOWN = -1  # legacy path: the exit code is not in the answer, only the message
TRANSIENT_CODES = {13, 14, 15, 17, 19, 20}  # disk, load average, connect, db, update, restart
# The commands an access key must be allowed to run (its permission profile).
KEY_COMMANDS = ("v-list-dns-records", "v-add-dns-record", "v-delete-dns-record",
                "v-change-dns-record")
CRITICAL_TYPES = ("A",)  # is_dns_record_critical also guards NS, which we never touch
_FIELD = re.compile(r'^\s*"([A-Z]+)": "(.*)",?\s*$')
_ITEM = re.compile(r'^\s*"([^"]*)": \{\s*$')


def parse_listing(text: str) -> dict[str, dict[str, Any]]:
    """v-list-dns-records json output. Hestia prints it with echo and escapes only '"' (and 5
    spaces as \\u0009), so a backslash in any record's VALUE makes it invalid JSON: then read
    it line by line, one "KEY": "value" per line, as bin/v-list-dns-records prints it."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}
    records: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        item = _ITEM.match(line)
        if item:
            current = records.setdefault(item[1], {})
            continue
        field = _FIELD.match(line)
        if field and current is not None:
            current[field[1]] = field[2].replace('\\"', '"').replace("\\u0009", "\t")
    if not records and text.strip() not in ("", "{}", "{\n}"):
        raise ValueError("not a v-list-dns-records listing")
    return records


class HestiaProvider:
    """Settings: api_url (https://panel:8083), hash ("ACCESS_KEY:SECRET_KEY") or user +
    password (the admin user), hestia_user (the Hestia user owning the DNS domain; defaults to
    user), verify_tls (default true), restart (RESTART=yes on each change, default true),
    last_a_placeholder (IPv4: what a zone's last A record becomes instead of being deleted),
    timeout (default 5)."""

    name = "hestiacp"

    def __init__(self, settings: dict[str, Any], session: requests.Session | None = None) -> None:
        url = str(settings.get("api_url") or "").rstrip("/")
        if not url:
            raise ValueError("hestiacp: api_url is required")
        self.url = url if url.endswith("/api") else url + "/api"
        self.url += "/"
        if settings.get("hash"):
            self.auth = {"hash": str(settings["hash"])}
            parts = self.auth["hash"].split(":")
            self.access_key = len(parts) == 2 and len(parts[0]) == 20 and len(parts[1]) == 40
        elif settings.get("user") and settings.get("password"):
            self.auth = {"user": str(settings["user"]), "password": str(settings["password"])}
            self.access_key = False
        else:
            raise ValueError("hestiacp: settings need hash, or user and password")
        owner = settings.get("hestia_user") or settings.get("user")
        if not owner:
            raise ValueError("hestiacp: settings need hestia_user (owner of the DNS domain)")
        self.owner = str(owner)
        self.verify = settings.get("verify_tls", True)
        self.restart = "yes" if settings.get("restart", True) else "no"
        self.placeholder = check_placeholder(settings.get("last_a_placeholder"))
        self.timeout = timeout_of(settings)
        self.session = session or requests.Session()
        self._restart_failure: DnsError | None = None

    # -- transport ---------------------------------------------------------------------------

    def _post(self, zone: str, what: str, cmd: str, args: list[str]) -> tuple[str, int, str]:
        where = f"hestiacp zone {zone}: {what}"
        data = dict(self.auth)
        data["returncode"] = "no"  # the output carries the message; the code is in the header
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
        if header.isdigit():
            return where, int(header), text
        # Legacy path: HTTP 200, the command's output, no exit code.
        if resp.status_code in (401, 403):
            return where, E_PASSWORD, text
        if resp.status_code >= 400:
            raise DnsError(f"{where}: HTTP {resp.status_code}: {snippet(text)}")
        if not text.startswith("Error"):
            return where, 0, text
        return where, _legacy_code(text), text

    def _fail(self, where: str, code: int, text: str, cmd: str) -> DnsError:
        name = CODES.get(code, "unknown")
        tag = f"(Hestia {code} {name})" if code != UNKNOWN else "(HestiaCP)"
        detail = "" if text.isdigit() or not text else f": {snippet(text)}"
        if code == E_PASSWORD:
            return DnsError(f"{where}: authentication refused {tag}: wrong access key, hash or "
                            "password")
        if code == E_FORBIDEN and not self.access_key:
            return DnsError(f"{where}: forbidden {tag}: the user/password API accepts only the "
                            "admin user, and its IP must be allowed (API_ALLOWED_IP)")
        if code == E_FORBIDEN:
            return DnsError(
                f"{where}: forbidden {tag}: the key lacks permission to run {cmd} for user "
                f"{self.owner!r}; a DNS key needs {', '.join(KEY_COMMANDS)} (the bundled "
                "update-dns-records profile allows only list and change), and a non-admin "
                f"key works only for its own user{detail}"
            )
        if code == E_API_DISABLED:
            return DnsError(f"{where}: API disabled for non-admin users {tag}: allow it for "
                            "users (API_SYSTEM=2) or use an admin user's key")
        if code == E_DISABLED:
            return DnsError(f"{where}: the panel's API is disabled {tag}")
        if code == UNKNOWN:
            return DnsError(f"{where}: HestiaCP error{detail}")
        return DnsError(f"{where}: Hestia error {code} {name}{detail}",
                        transient=code in TRANSIENT_CODES)

    def _write(self, zone: str, what: str, cmd: str, args: list[str]) -> None:
        """Run v-add-dns-record / v-change-dns-record. A failed DNS restart after the change
        was written is remembered (raised once every change is made), not raised here."""
        where, code, text = self._post(zone, what, cmd, args)
        if code == E_RESTART or (code == E_INVALID and text.splitlines()[-1:] == ["Error: 20"]):
            # E_RESTART, or v-add-dns-record's swapped check_result: exit 2, "Error: 20".
            self._restart_failure = DnsError(
                f"{where}: written, but the panel's DNS restart failed (E_RESTART): served "
                "after the next successful restart", transient=True)
        elif code and not (code == E_EXISTS and cmd == "v-change-dns-record"):  # no change
            raise self._fail(where, code, text, cmd)

    def _raise_restart_failure(self) -> None:
        failure, self._restart_failure = self._restart_failure, None
        if failure is not None:
            raise failure

    # -- records -----------------------------------------------------------------------------

    @staticmethod
    def _relative(zone: str, name: str) -> str:
        if name == zone:
            return "@"
        suffix = "." + zone
        if not name.endswith(suffix):
            raise ValueError(f"{name!r} is not inside zone {zone!r}")
        return name[: -len(suffix)]

    def probe(self, zone: str) -> None:
        self._zone_records(zone)

    def _zone_records(self, zone: str) -> list[dict[str, Any]]:
        where, code, text = self._post(
            zone, "list records", "v-list-dns-records", [self.owner, zone, "json"]
        )
        if code:
            raise self._fail(where, code, text, "v-list-dns-records")
        try:
            data = parse_listing(text) if text and text != "OK" else {}
        except ValueError:
            raise DnsError(f"{where}: answer is not a record listing: {snippet(text)}") from None
        return [dict(rec, ID=str(rec.get("ID") or key)) for key, rec in data.items()]

    @staticmethod
    def _of(records: list[dict[str, Any]], record: str, rtype: str) -> list[dict[str, Any]]:
        return [
            rec for rec in records
            if str(rec.get("RECORD", "")).lower() == record
            and str(rec.get("TYPE", "")).upper() == rtype
        ]

    def _delete_id(self, zone: str, rtype: str, name: str, rid: str) -> None:
        where, code, text = self._post(
            zone, f"delete {rtype} {name} (id {rid})", "v-delete-dns-record",
            [self.owner, zone, rid, self.restart],
        )
        if code == E_INVALID and "should remain active" in text:
            raise self._critical(zone, name, rtype)
        if code == E_RESTART:  # deleted, then the restart failed
            self._restart_failure = DnsError(
                f"{where}: deleted, but the panel's DNS restart failed (E_RESTART)",
                transient=True)
        elif code and code != E_NOTEXIST:
            raise self._fail(where, code, text, "v-delete-dns-record")

    def _critical(self, zone: str, name: str, rtype: str) -> DnsError:
        return DnsError(
            f"hestiacp zone {zone}: cannot delete {name} {rtype}: it is the zone's last {rtype} "
            "record and HestiaCP keeps at least one (is_dns_record_critical); set "
            f"last_a_placeholder on the provider (the address {zone} gets instead) or add "
            "another A record to the zone"
        )

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        record = self._relative(zone, name)
        wanted = list(contents)
        stale: list[dict[str, Any]] = []
        for rec in self._of(self._zone_records(zone), record, type):
            match = next((c for c in wanted if same_content(type, c, str(rec.get("VALUE")))), None)
            if match is not None and str(rec.get("TTL", "")) == str(ttl):
                wanted.remove(match)
            else:
                stale.append(rec)
        for content in wanted:  # add first, delete after: the name never goes missing
            value = content.rstrip(".") + "." if type == "PTR" else content
            self._write(
                zone, f"add {type} {name}", "v-add-dns-record",
                [self.owner, zone, record, type, value, "", "", self.restart, str(int(ttl))],
            )
        for rec in stale:
            self._delete_id(zone, type, name, rec["ID"])
        self._raise_restart_failure()

    def delete(self, zone: str, name: str, type: str) -> str | None:
        """Remove the rrset; returns a note when the zone's last A record was kept as the
        placeholder instead (HestiaCP refuses to delete it)."""
        record = self._relative(zone, name)
        records = self._zone_records(zone)
        mine = self._of(records, record, type)
        note = None
        if mine and type in CRITICAL_TYPES and not any(
            str(r.get("TYPE", "")).upper() == type and r not in mine for r in records
        ):
            keep, mine = mine[0], mine[1:]
            for rec in mine:
                self._delete_id(zone, type, name, rec["ID"])
            note = self._keep_as_placeholder(zone, name, keep)
        else:
            for rec in mine:
                self._delete_id(zone, type, name, rec["ID"])
        self._raise_restart_failure()
        return note

    def _keep_as_placeholder(self, zone: str, name: str, keep: dict[str, Any]) -> str:
        if self.placeholder is None:
            raise self._critical(zone, name, "A")
        self._write(
            zone, f"turn {name} A into the placeholder {zone} A {self.placeholder}",
            "v-change-dns-record",
            [self.owner, zone, keep["ID"], "@", "A", self.placeholder, "", self.restart,
             str(keep.get("TTL") or "")],
        )
        return (f"hestiacp zone {zone}: {name} A was the zone's last A record, which HestiaCP "
                f"keeps: it now reads {zone} A {self.placeholder} (last_a_placeholder)")


def _legacy_code(text: str) -> int:
    """The legacy path prints only the message: recover what it says."""
    lines = text.splitlines()
    if lines[-1:] == ["Error: 20"]:
        return E_INVALID  # v-add-dns-record's restart failure (see _write)
    if "restart failed" in text:
        return E_RESTART
    if "should remain active" in text:
        return E_INVALID
    if "doesn't exist" in text:
        return E_NOTEXIST
    if "No pending changes" in text:
        return E_EXISTS
    if "authentication failed" in text:
        return E_PASSWORD
    return UNKNOWN


def check_placeholder(value: object) -> str | None:
    """last_a_placeholder: absent, or an IPv4 address (ValueError otherwise)."""
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ValueError(f"hestiacp: last_a_placeholder must be an IPv4 address: {value!r}")\
            from None
