"""Local stand-ins for the Cloudflare v4 and HestiaCP APIs, strict about request shapes.

Each server runs http.server in a thread on 127.0.0.1 (free port), keeps its records in memory
and logs every request in ``requests`` so tests can assert on the server-side result and on the
absence of traffic. A request of the wrong shape gets the vendor's error answer and is recorded in
``violations``; tests assert that list stays empty.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

Answer = tuple[int, dict[str, str], bytes]  # a fake's HTTP answer: status, headers, body

PDNS_API_URL = os.environ.get("PDNS_API_URL", "http://127.0.0.1:8081").rstrip("/")
PDNS_API_KEY = os.environ.get("PDNS_API_KEY", "pvekvm-test-key")
PDNS_DNS_PORT = int(os.environ.get("PDNS_DNS_PORT", "5354"))

HOSTILE_HOSTNAMES = [
    "evil;rm -rf /",
    "a..b",
    "-x.example.com",
    "x" * 300,
    ("a" * 63 + ".") * 4 + "example.com",
    "web1.example.com\n",
    "web1\n.example.com",
    "web 1.example.com",
    "$(reboot).example.com",
    "web1.example.com/../../x",
    "wéb.example.com",
    "",
    None,
]

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def _is_host(value: object) -> bool:
    return isinstance(value, str) and bool(_HOST.match(value.lower().rstrip(".")))


def _is_ip(value: object, version: int) -> bool:
    try:
        return ipaddress.ip_address(value).version == version  # type: ignore[arg-type]
    except ValueError:
        return False


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes


class _Base:
    """A threaded HTTP server whose handler calls self.handle(seen) -> (status, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.violations: list[str] = []
        self.fail_status: int | None = None  # answer every request with this HTTP status
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with fake.lock:
                    fake.requests.append(seen)
                    status, headers, payload = fake.dispatch(seen)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def dispatch(self, seen: Seen) -> tuple[int, dict, bytes]:
        if self.fail_status is not None:
            return self.fail_status, {"Content-Type": "text/html"}, b"<h1>Bad Gateway</h1>"
        return self.handle(seen)

    def handle(self, seen: Seen) -> tuple[int, dict, bytes]:
        raise NotImplementedError

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# Cloudflare API v4
# --------------------------------------------------------------------------------------------

CF_TYPES = {"A", "AAAA", "CNAME", "MX", "TXT", "NS", "PTR", "SRV", "CAA"}
CF_BODY_KEYS = {"type", "name", "content", "ttl", "proxied", "comment", "tags", "priority"}


@dataclass
class CfZone:
    id: str
    name: str
    records: dict[str, dict] = field(default_factory=dict)
    enterprise: bool = False  # dns-records_ttl: the 30 s minimum is for Enterprise zones only


# Credentials (developers.cloudflare.com/fundamentals/api/get-started/token-formats): API tokens
# are "Authorization: Bearer" with 40 alphanumerics (before 2026) or cfut_/cfat_ + 40 + checksum;
# a Global API Key goes in X-Auth-Key (37-45 lowercase hex, or cfk_ + 40 + checksum) with the
# account email in X-Auth-Email. A header of the wrong format is refused with 400, 6003 "Invalid
# request headers" and, in error_chain, 6111 (Authorization) or 6103 (X-Auth-Key): the answer
# a Global API Key sent as a Bearer token gets (as reported in jeessy2/ddns-go#916,
# kissgyorgy/cloudflare-dyndns#40).
CF_TOKEN = re.compile(r"^([A-Za-z0-9]{40}|(cfut|cfat)_[A-Za-z0-9]{40,})$")
CF_GLOBAL_KEY = re.compile(r"^([0-9a-f]{37,45}|cfk_[A-Za-z0-9]{40,})$")


class FakeCloudflare(_Base):
    """Cloudflare v4 subset: GET /zones?name=, GET/POST /zones/{id}/dns_records,
    PUT/PATCH/DELETE /zones/{id}/dns_records/{rid}. ``max_per_page`` caps pages (so that
    pagination is exercised with few records)."""

    PREFIX = "/client/v4"

    def __init__(self, token: str = "cfut_" + "t" * 40 + "ab12", max_per_page: int = 2) -> None:
        self.token = token
        self.email = "ops@example.com"
        self.global_key = "0123456789abcdef0123456789abcdef01234"  # 37 hex, like the real one
        # GET /zones lists only the zones the token may read: a token without Zone:Zone:Read
        # gets an empty list (acmesh-official/acme.sh#2398, qdm12/ddns-updater#632 -- certbot
        # and lexicon also ask for Zone:Read or a configured zone id).
        self.token_zone_read = True
        self.max_per_page = max_per_page
        self.zones: dict[str, CfZone] = {}
        super().__init__()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PREFIX}"

    def add_zone(self, name: str, enterprise: bool = False) -> CfZone:
        zone = CfZone(uuid.uuid4().hex, name, enterprise=enterprise)
        self.zones[zone.id] = zone
        return zone

    def zone(self, name: str) -> CfZone:
        return next(z for z in self.zones.values() if z.name == name)

    def seed(self, zone_name: str, name: str, rtype: str, content: str, ttl: int = 3600) -> str:
        zone = self.zone(zone_name)
        rid = uuid.uuid4().hex
        zone.records[rid] = self._record(zone, rid, name, rtype, content, ttl, False)
        return rid

    def rrset(self, zone_name: str, name: str, rtype: str) -> list[dict]:
        zone = self.zone(zone_name)
        return [r for r in zone.records.values() if r["name"] == name and r["type"] == rtype]

    @staticmethod
    def _record(zone: CfZone, rid, name, rtype, content, ttl, proxied) -> dict:
        now = "2024-01-01T00:00:00.000000Z"
        return {
            "id": rid,
            "zone_id": zone.id,
            "zone_name": zone.name,
            "name": name,
            "type": rtype,
            "content": content,
            "proxiable": rtype in ("A", "AAAA", "CNAME"),
            "proxied": proxied,
            "ttl": ttl,
            "locked": False,
            "meta": {"auto_added": False, "source": "primary"},
            "comment": None,
            "tags": [],
            "created_on": now,
            "modified_on": now,
        }

    @staticmethod
    def _envelope(status: int, result=None, errors=None, result_info=None) -> Answer:
        body: dict = {
            "success": not errors,
            "errors": errors or [],
            "messages": [],
            "result": result,
        }
        if result_info is not None:
            body["result_info"] = result_info
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _error(self, status: int, code: int, message: str, violation: bool = True) -> Answer:
        if violation:
            self.violation(f"{status} {code} {message}")
        return self._envelope(status, None, [{"code": code, "message": message}])

    def _bad_headers(self, code: int, message: str) -> Answer:
        error = {
            "code": 6003,
            "message": "Invalid request headers",
            "error_chain": [{"code": code, "message": message}],
        }
        return self._envelope(400, None, [error])

    def _authenticate(self, seen: Seen) -> tuple[str | None, Answer | None]:
        """(who, None) or (None, the error answer). who: "token" or "global"."""
        auth = seen.headers.get("authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme != "Bearer" or not CF_TOKEN.match(value):
                return None, self._bad_headers(6111, "Invalid format for Authorization header")
            if value != self.token:
                return None, self._error(403, 10000, "Authentication error", violation=False)
            return "token", None
        key, email = seen.headers.get("x-auth-key"), seen.headers.get("x-auth-email")
        if key is not None or email is not None:
            if not key or not CF_GLOBAL_KEY.match(key):
                return None, self._bad_headers(6103, "Invalid format for X-Auth-Key header")
            if not email or "@" not in email:
                return None, self._bad_headers(6102, "Invalid format for X-Auth-Email header")
            if (key, email) != (self.global_key, self.email):
                return None, self._error(
                    403, 9103, "Unknown X-Auth-Key or X-Auth-Email", violation=False
                )
            return "global", None
        return None, self._bad_headers(9106, "Missing X-Auth-Key, X-Auth-Email or Authorization")

    def _page(self, items: list, query: dict) -> Answer:
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", ["100"])[0])
        except ValueError:
            return self._error(400, 1001, "page and per_page must be integers")
        if page < 1 or not 5 <= per_page <= 5000:
            return self._error(400, 1001, "per_page must be 5..5000 and page >= 1")
        per_page = min(per_page, self.max_per_page)
        total_pages = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(items),
            "total_pages": total_pages,
        }
        return self._envelope(200, chunk, result_info=info)

    def _check_body(self, zone: CfZone, seen: Seen) -> tuple[dict | None, Answer | None]:
        if not seen.headers.get("content-type", "").startswith("application/json"):
            return None, self._error(400, 6003, "Invalid request headers: need application/json")
        try:
            body = json.loads(seen.body)
        except ValueError:
            return None, self._error(400, 6007, "Malformed JSON in request body")
        if not isinstance(body, dict):
            return None, self._error(400, 6007, "body must be an object")
        if set(body) - CF_BODY_KEYS:
            unknown = sorted(set(body) - CF_BODY_KEYS)
            return None, self._error(400, 9000, f"unknown fields {unknown}")
        rtype, name, content = body.get("type"), body.get("name"), body.get("content")
        ttl, proxied = body.get("ttl", 1), body.get("proxied", False)
        if rtype not in CF_TYPES:
            return None, self._error(400, 9004, "DNS record type is invalid")
        if not isinstance(name, str) or not (name == zone.name or name.endswith("." + zone.name)):
            return None, self._error(400, 9005, "DNS name is invalid or outside the zone")
        # cloudflare/api-schemas dns-records_ttl: "Setting to 1 means 'automatic'. Value must be
        # between 60 and 86400, with the minimum reduced to 30 for Enterprise zones."
        low = 30 if zone.enterprise else 60
        if type(ttl) is not int or not (ttl == 1 or low <= ttl <= 86400):
            return None, self._error(
                400, 9021, f"Invalid TTL. Must be 1 (automatic) or {low}..86400", violation=False
            )
        if not isinstance(proxied, bool) or (proxied and rtype not in ("A", "AAAA", "CNAME")):
            return None, self._error(400, 9003, "Invalid 'proxied' value")
        if "proxied" in body and rtype not in ("A", "AAAA", "CNAME"):
            return None, self._error(400, 9003, f"proxied is not allowed on {rtype}")
        ok = {
            "A": lambda c: _is_ip(c, 4),
            "AAAA": lambda c: _is_ip(c, 6),
            "PTR": lambda c: _is_host(c) and not c.endswith("."),
        }.get(rtype, lambda c: isinstance(c, str))
        if not isinstance(content, str) or not ok(content):
            return None, self._error(400, 9006, f"Content for {rtype} record is invalid")
        return body, None

    def handle(self, seen: Seen) -> tuple[int, dict, bytes]:
        who, err = self._authenticate(seen)
        if err:
            return err
        if not seen.path.startswith(self.PREFIX + "/"):
            return self._error(404, 7003, "Could not route to path")
        parts = seen.path[len(self.PREFIX) :].strip("/").split("/")
        if parts == ["zones"] and seen.method == "GET":
            names = seen.query.get("name")
            found = [
                {"id": z.id, "name": z.name, "status": "active", "paused": False, "type": "full"}
                for z in self.zones.values()
                if (not names or z.name == names[0])
                and (who == "global" or self.token_zone_read)
            ]
            return self._page(found, seen.query)
        if len(parts) < 3 or parts[0] != "zones" or parts[2] != "dns_records":
            return self._error(404, 7003, "Could not route to path")
        zone = self.zones.get(parts[1])
        if zone is None:
            return self._error(
                400, 7003, "Could not route to /zones/x/dns_records, perhaps your object "
                "identifier is invalid?", violation=False
            )
        if len(parts) == 3 and seen.method == "GET":
            allowed = {"type", "name", "content", "page", "per_page", "match", "order", "direction"}
            if set(seen.query) - allowed:
                return self._error(400, 1001, f"unknown filters {sorted(seen.query)}")
            items = list(zone.records.values())
            for key in ("type", "name", "content"):
                if key in seen.query:
                    items = [r for r in items if r[key] == seen.query[key][0]]
            return self._page(items, seen.query)
        if len(parts) == 3 and seen.method == "POST":
            body, err = self._check_body(zone, seen)
            if err:
                return err
            assert body is not None  # _check_body answers one or the other
            for rec in zone.records.values():
                if (rec["name"], rec["type"], rec["content"]) == (
                    body["name"],
                    body["type"],
                    body["content"],
                ):
                    return self._error(400, 81058, "An identical record already exists.")
            rid = uuid.uuid4().hex
            rec = self._record(
                zone,
                rid,
                body["name"],
                body["type"],
                body["content"],
                body.get("ttl", 1),
                body.get("proxied", False),
            )
            zone.records[rid] = rec
            return self._envelope(200, rec)
        if len(parts) == 4:
            rid = parts[3]
            if rid not in zone.records:
                return self._error(404, 81044, "Record does not exist.", violation=False)
            if seen.method == "DELETE":
                del zone.records[rid]
                return self._envelope(200, {"id": rid})
            if seen.method in ("PUT", "PATCH"):
                body, err = self._check_body(zone, seen)
                if err:
                    return err
                assert body is not None  # _check_body answers one or the other
                rec = dict(zone.records[rid])
                if seen.method == "PUT":
                    rec.update(ttl=1, proxied=False)
                rec.update(body)
                zone.records[rid] = rec
                return self._envelope(200, rec)
        return self._error(405, 10405, f"Method {seen.method} not allowed")


# --------------------------------------------------------------------------------------------
# HestiaCP API
# --------------------------------------------------------------------------------------------
# References (hestiacp/hestiacp): web/api/index.php (api_legacy, api_connection, api_error),
# web/inc/helpers.php (exit_code_to_http_code, E_API_DISABLED = 21), func/main.sh (exit codes,
# check_result, check_access_key_cmd), func/domain.sh (is_dns_record_critical),
# bin/v-list-dns-records (json_list), bin/v-add-dns-record, bin/v-delete-dns-record,
# bin/v-change-dns-record, bin/v-restart-dns, install/common/api/update-dns-records.

E_ARGS, E_INVALID, E_NOTEXIST, E_EXISTS, E_PASSWORD, E_FORBIDEN = 1, 2, 3, 4, 9, 10
E_DISABLED, E_RESTART, E_API_DISABLED = 11, 20, 21
_HESTIA_RECORD = re.compile(r"^(@|\*|[a-z0-9_*]([a-z0-9_.*-]{0,250}[a-z0-9_])?)$")
# install/common/api/update-dns-records: the bundled profile a DNS key is usually given.
PROFILE_UPDATE_DNS_RECORDS = frozenset({"v-list-dns-records", "v-change-dns-record"})
DNS_COMMANDS = frozenset(
    {"v-list-dns-records", "v-add-dns-record", "v-delete-dns-record", "v-change-dns-record"}
)
# bash `exit "dns failed to restart"` (v-add-dns-record's swapped check_result arguments).
_BASH_BAD_EXIT = 2


def _http_of(code: int) -> int:
    """web/inc/helpers.php exit_code_to_http_code."""
    return {0: 200, 1: 400, 2: 422, 9: 401, 5: 401, 6: 401, 10: 401, 21: 401, 11: 400}.get(
        code, 400
    )


@dataclass
class HestiaKey:
    user: str
    commands: frozenset | None  # None: no PERMISSIONS (allowed only for the admin user)


class FakeHestia(_Base):
    """HestiaCP web/api/index.php: access keys ("ACCESS:SECRET" in ``hash``, with the key's user
    and permission profile), the legacy user+password / legacy hash path, and the commands
    v-list-dns-records, v-add-dns-record, v-delete-dns-record, v-change-dns-record with Hestia's
    exit codes and quirks. ``fail_code`` makes every command exit with that code;
    ``restart_fails`` makes the DNS restart fail the way bin/v-restart-dns does."""

    ROOT_USER = "admin"

    def __init__(
        self,
        access: str = "A" * 20,
        secret: str = "s" * 40,
        owner: str = "admin",
        password: str = "hestia-pass",
    ) -> None:
        self.hash = f"{access}:{secret}"
        self.owner = owner
        self.password = password
        self.keys: dict[str, HestiaKey] = {self.hash: HestiaKey(self.ROOT_USER, None)}
        self.legacy_hash = "L" * 32  # web/api/index.php api_legacy: v-check-api-key
        self.api_system = 2  # API_SYSTEM: 0 off, 1 admin only, 2 all users
        self.domains: dict[str, dict[str, dict]] = {}
        self.next_id: dict[str, int] = {}
        self.fail_code: int | None = None
        self.restart_fails = False
        self.restarts = 0
        super().__init__()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_key(self, user: str, commands: frozenset | None, access: str = "K" * 20) -> str:
        key = f"{access}:{'k' * 40}"
        self.keys[key] = HestiaKey(user, commands)
        return key

    def add_domain(self, domain: str) -> None:
        # func/main.sh is_domain_format_valid: '/' (among others) is refused in a domain name,
        # so an RFC 2317 "0/26.c.b.a.in-addr.arpa" zone cannot exist on HestiaCP.
        if re.search(r"[][!@#$^&*()+={},<>?_/\\\"|'`;%\s]", domain):
            raise ValueError(f"Error: invalid domain format :: {domain}")
        self.domains[domain] = {}
        self.next_id[domain] = 1
        # Hestia's default template records, so the listing is realistic.
        self.seed(domain, "@", "NS", "ns1.example.net.")
        self.seed(domain, "@", "NS", "ns2.example.net.")

    def seed(self, domain: str, record: str, rtype: str, value: str, ttl: int = 3600) -> str:
        rid = str(self.next_id[domain])
        self.next_id[domain] += 1
        self.domains[domain][rid] = {
            "RECORD": record,
            "TYPE": rtype,
            "PRIORITY": "",
            "VALUE": value,
            "ID": rid,
            "SUSPENDED": "no",
            "TIME": "12:00:00",
            "DATE": "2024-01-01",
            "TTL": str(ttl),
        }
        return rid

    def rrset(self, domain: str, record: str, rtype: str) -> list[dict]:
        return [
            r for r in self.domains[domain].values() if r["RECORD"] == record and r["TYPE"] == rtype
        ]

    # -- web/api/index.php ---------------------------------------------------------------------

    @staticmethod
    def _api_error(code: int, message: str, mode: str) -> tuple:
        """api_error(): Hestia-Exit-Code header and an HTTP status, on both paths."""
        headers = {"Hestia-Exit-Code": str(code), "Content-Type": "text/html; charset=UTF-8"}
        if mode == "code":
            body = str(code)
        else:
            body = message if message.startswith("Error:") else f"Error: {message}"
        return _http_of(code), headers, body.encode()

    def handle(self, seen: Seen) -> tuple[int, dict, bytes]:
        if seen.method != "POST" or seen.path not in ("/api/", "/api/index.php"):
            self.violation(f"{seen.method} {seen.path}")
            return 405, {}, b"Error: data received is null or invalid"
        if not seen.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            self.violation("not a form post")
            return 405, {}, b"Error: data received is null or invalid"
        form = parse_qs(seen.body.decode(), keep_blank_values=True)
        if any(len(v) != 1 for v in form.values()):
            self.violation(f"repeated form fields {form}")
        data = {k: v[0] for k, v in form.items()}
        allowed = {"hash", "user", "password", "returncode", "cmd"} | {
            f"arg{i}" for i in range(1, 14)
        }
        if set(data) - allowed:
            self.violation(f"unknown form fields {sorted(set(data) - allowed)}")
        mode = "code" if data.get("returncode") == "yes" else "data"
        if data.get("returncode", "no") not in ("yes", "no"):
            self.violation(f"returncode={data.get('returncode')!r}")
        args = []
        i = 1
        while f"arg{i}" in data:
            args.append(data[f"arg{i}"].strip())
            i += 1
        if len(args) != len([k for k in data if k.startswith("arg")]):
            self.violation(f"argument numbering has holes: {sorted(data)}")
        cmd = data.get("cmd", "").strip()
        parts = data.get("hash", "").split(":")
        if len(parts) == 2 and len(parts[0]) == 20 and len(parts[1]) == 40:
            return self._access_key(data["hash"], cmd, args, mode)
        if "user" in data or "hash" in data:
            return self._legacy(data, cmd, args, mode)
        self.violation("no credentials")
        return 405, {}, b"Error: data received is null or invalid"

    def _access_key(self, key: str, cmd: str, args: list[str], mode: str) -> tuple:
        """api_connection(): v-check-access-key, then the command; Hestia-Exit-Code always."""
        if not self.api_system:
            return self._api_error(E_DISABLED, "API has been disabled", mode)
        found = self.keys.get(key)
        if found is None:  # v-check-access-key: abort_missmatch exits E_PASSWORD
            return self._api_error(E_PASSWORD, "Error: authentication failed", mode)
        access = key.split(":")[0]
        if found.commands is not None and cmd not in found.commands:
            # func/main.sh check_access_key_cmd
            msg = f"Error: Key {access} don't have permission to run the command {cmd}"
            return self._api_error(E_FORBIDEN, msg, mode)
        if found.commands is None and found.user != self.ROOT_USER:
            msg = f"Error: Key {access} don't have permission to run the command {cmd}"
            return self._api_error(E_FORBIDEN, msg, mode)
        if found.user != self.ROOT_USER and self.api_system < 2:
            return self._api_error(E_API_DISABLED, "API has been disabled", mode)
        if found.user != self.ROOT_USER and (args[:1] or [""])[0] != found.user:
            msg = f"Key {access} - the \"user\" argument doesn't match the key's user"
            return self._api_error(E_FORBIDEN, msg, mode)
        code, output = self._run(cmd, args)
        headers = {"Hestia-Exit-Code": str(code), "Content-Type": "text/html; charset=UTF-8"}
        output = output.strip()
        if mode == "code":
            return 200, headers, str(code).encode()
        if code:
            return _http_of(code), headers, output.encode()
        if output.startswith("{"):
            headers["Content-Type"] = "application/json; charset=utf-8"
        return (200 if output else 204), headers, output.encode()

    def _legacy(self, data: dict, cmd: str, args: list[str], mode: str) -> tuple:
        """api_legacy(): errors before the command go through api_error (header, HTTP code);
        the command's own result is HTTP 200 with no Hestia-Exit-Code header: the exit code in
        the body (returncode=yes) or its output, "OK" when it printed nothing."""
        if "hash" in data and data["hash"]:
            if data["hash"] != self.legacy_hash:
                return self._api_error(E_PASSWORD, "Error: authentication failed", mode)
        else:
            if data.get("user") != self.ROOT_USER:
                return self._api_error(E_FORBIDEN, "Error: authentication failed", mode)
            if data.get("password") != self.password:
                return self._api_error(E_PASSWORD, "Error: authentication failed", mode)
        if not cmd:
            return self._api_error(E_INVALID, "Command not provided", mode)
        code, output = self._run(cmd, args)
        headers = {"Content-Type": "text/html; charset=UTF-8"}
        if mode == "code":
            return 200, headers, str(code).encode()
        body = "OK" if not output else output + "\n"
        return 200, headers, body.encode()

    def _run(self, cmd: str, args: list[str]) -> tuple[int, str]:
        if self.fail_code is not None:
            return self.fail_code, "Error: injected failure"
        handler = {
            "v-list-dns-records": self._list,
            "v-add-dns-record": self._add,
            "v-delete-dns-record": self._delete,
            "v-change-dns-record": self._change,
        }.get(cmd)
        if handler is None:
            self.violation(f"unexpected command {cmd!r}")
            return E_INVALID, f"Error: {cmd} command invalid"
        code, output = handler(args)
        expected = (0, E_NOTEXIST, E_RESTART, _BASH_BAD_EXIT if self.restart_fails else 0)
        if code not in expected and "should remain active" not in output:
            self.violation(f"{cmd} {args} -> {code} {output}")
        return code, output

    # -- bin/v-*-dns-* -------------------------------------------------------------------------

    def _restart(self, restart: str) -> tuple[int, str]:
        """bin/v-restart-dns: "no" does nothing; otherwise named-checkconf, then a restart."""
        if restart == "no":
            return 0, ""
        if self.restart_fails:
            return E_RESTART, "Error: bind9 restart failed'"
        self.restarts += 1
        return 0, ""

    def _target(self, args: list[str], need: int) -> tuple[int, str, dict | None]:
        if len(args) < need:
            return E_ARGS, "Error: not enought arguments", None
        if args[0] != self.owner:
            return E_NOTEXIST, f"Error: user {args[0]} doesn't exist", None
        records = self.domains.get(args[1])
        if records is None:
            return E_NOTEXIST, f"Error: dns domain {args[1]} doesn't exist", None
        return 0, "", records

    def _list(self, args: list[str]) -> tuple[int, str]:
        code, out, records = self._target(args, 2)
        if records is None:
            return code, out
        if len(args) > 2 and args[2] != "json":
            return E_INVALID, "Error: test fake only speaks json"
        # bin/v-list-dns-records json_list: the JSON is printed by echo; VALUE gets only
        # sed 's/"/\\"/g' and 5 spaces -> \u0009, so a backslash in any record (a TXT value)
        # comes out raw and the whole answer is not valid JSON.
        items = []
        for rec in records.values():
            value = rec["VALUE"].replace('"', '\\"').replace("     ", "\\u0009")
            fields = dict(rec, VALUE=value)
            body = ",\n".join(
                f'        "{k}": "{fields[k]}"'
                for k in ("RECORD", "TYPE", "PRIORITY", "VALUE", "ID", "SUSPENDED", "TIME", "DATE")
            )
            body += f',\n        "TTL": "{rec["TTL"]}"'
            items.append(f'    "{rec["ID"]}": {{\n{body}\n    }}')
        return 0, "{\n" + ",\n".join(items) + "\n}"

    def _check_value(self, record: str, rtype: str, value: str) -> tuple[int, str] | None:
        if not _HESTIA_RECORD.match(record):
            return E_INVALID, f"Error: invalid record format :: {record}"
        if rtype == "A" and not _is_ip(value, 4) or rtype == "AAAA" and not _is_ip(value, 6):
            return E_INVALID, f"Error: invalid ip format :: {value}"
        if rtype == "PTR" and not _is_host(value):
            return E_INVALID, f"Error: invalid value format :: {value}"
        return None

    def _add(self, args: list[str]) -> tuple[int, str]:
        code, out, records = self._target(args, 5)
        if records is None:
            return code, out
        args = args + [""] * (9 - len(args))
        domain, record, rtype, value, priority, rid, restart, ttl = args[1:9]
        rtype = rtype.upper()
        record = record.lower()
        if rtype in ("NS", "CNAME", "MX", "PTR", "SRV") and not value.endswith("."):
            value += "."
        bad = self._check_value(record, rtype, value)
        if bad:
            return bad
        if restart not in ("", "yes", "no", "scheduled"):
            return E_INVALID, f"Error: invalid restart format :: {restart}"
        if ttl and not ttl.isdigit():
            return E_INVALID, f"Error: invalid ttl format :: {ttl}"
        if rid and rid in records:
            return E_EXISTS, f"Error: ID={rid} already exists"
        self.seed(domain, record, rtype, value, int(ttl) if ttl else 3600)
        code, out = self._restart(restart)
        if code:
            # v-add-dns-record: `check_result $? "$E_RESTART" 'dns failed to restart'` passes
            # the message as the exit code: check_result echoes "Error: 20" and bash's
            # `exit "dns failed to restart"` exits 2 -- after the record was written.
            return _BASH_BAD_EXIT, out + "\nError: 20"
        return 0, ""

    def _delete(self, args: list[str]) -> tuple[int, str]:
        code, out, records = self._target(args, 3)
        if records is None:
            return code, out
        if not args[2].isdigit():
            return E_INVALID, f"Error: invalid id format :: {args[2]}"
        if args[2] not in records:
            return E_NOTEXIST, f"Error: dns record with ID={args[2]} doesn't exist"
        rtype = records[args[2]]["TYPE"]
        # func/domain.sh is_dns_record_critical: the zone's last A (or NS) record stays.
        if rtype in ("A", "NS") and sum(r["TYPE"] == rtype for r in records.values()) <= 1:
            return E_INVALID, f"Error: at least one {rtype} record should remain active"
        del records[args[2]]
        restart = args[3] if len(args) > 3 else ""
        code, out = self._restart(restart)
        if code:  # `check_result $? "Bind restart failed" > /dev/null`: exit 20, record gone
            return E_RESTART, out
        return 0, ""

    def _change(self, args: list[str]) -> tuple[int, str]:
        """v-change-dns-record USER DOMAIN ID RECORD TYPE VALUE [PRIORITY] [RESTART] [TTL]"""
        code, out, records = self._target(args, 6)
        if records is None:
            return code, out
        args = args + [""] * (9 - len(args))
        rid, record, rtype, value, _priority, restart, ttl = args[2:9]
        if rid not in records:
            return E_NOTEXIST, f"Error: dns record with ID={rid} doesn't exist"
        rtype = (rtype or records[rid]["TYPE"]).upper()
        if rtype in ("NS", "CNAME", "MX", "PTR", "SRV") and not value.endswith("."):
            value += "."
        bad = self._check_value(record, rtype, value)
        if bad:
            return bad
        old = records[rid]
        ttl = ttl or old["TTL"]
        if (old["RECORD"], old["TYPE"], old["VALUE"], old["TTL"]) == (record, rtype, value, ttl):
            return E_EXISTS, "No pending changes in DNS entry."
        old.update(RECORD=record, TYPE=rtype, VALUE=value, TTL=ttl)
        code, out = self._restart(restart)
        if code:  # `check_result $? "DNS restart failed" > /dev/null`: exit 20, written
            return E_RESTART, out
        return 0, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpProxy:
    """Forwards 127.0.0.1:port to a target port. stop() closes the listener and every open
    connection (new connections are then refused); start() listens again on the same port."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.connections = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._stop = threading.Event()

    def start(self) -> TcpProxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        sock.settimeout(0.05)
        self._listener = sock
        self._stop = threading.Event()
        threading.Thread(target=self._accept, args=(sock, self._stop), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()
        sock.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for s in self._open:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._open = []


class SilentServer:
    """Accepts TCP connections and never answers: for time-out tests."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def powerdns_zones_or_skip():
    """(session, zones URL) of the test PowerDNS's API; skips (fails on CI) when it is down."""
    import requests

    s = requests.Session()
    s.headers["X-API-Key"] = PDNS_API_KEY
    url = f"{PDNS_API_URL}/api/v1/servers/localhost/zones"
    try:
        s.get(url, timeout=2).raise_for_status()
    except requests.RequestException as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PowerDNS not answering (scripts/pdns.sh): {exc}")
        pytest.skip(f"PowerDNS not answering (scripts/pdns.sh): {exc}")
    return s, url
