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


class FakeCloudflare(_Base):
    """Cloudflare v4 subset: GET /zones?name=, GET/POST /zones/{id}/dns_records,
    PUT/PATCH/DELETE /zones/{id}/dns_records/{rid}. ``max_per_page`` caps pages (so that
    pagination is exercised with few records)."""

    PREFIX = "/client/v4"

    def __init__(self, token: str = "cf-test-token", max_per_page: int = 2) -> None:
        self.token = token
        self.max_per_page = max_per_page
        self.zones: dict[str, CfZone] = {}
        super().__init__()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PREFIX}"

    def add_zone(self, name: str) -> CfZone:
        zone = CfZone(uuid.uuid4().hex, name)
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
    def _envelope(status: int, result=None, errors=None, result_info=None) -> tuple:
        body: dict = {
            "success": not errors,
            "errors": errors or [],
            "messages": [],
            "result": result,
        }
        if result_info is not None:
            body["result_info"] = result_info
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _error(self, status: int, code: int, message: str, violation: bool = True) -> tuple:
        if violation:
            self.violation(f"{status} {code} {message}")
        return self._envelope(status, None, [{"code": code, "message": message}])

    def _page(self, items: list, query: dict) -> tuple | list:
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

    def _check_body(self, zone: CfZone, seen: Seen) -> tuple[dict | None, tuple | None]:
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
        if type(ttl) is not int or not (ttl == 1 or 30 <= ttl <= 86400):
            return None, self._error(400, 9021, "Invalid TTL. Must be 1 (auto) or 30..86400")
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
        if seen.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(403, 10000, "Authentication error", violation=False)
        if not seen.path.startswith(self.PREFIX + "/"):
            return self._error(404, 7003, "Could not route to path")
        parts = seen.path[len(self.PREFIX) :].strip("/").split("/")
        if parts == ["zones"] and seen.method == "GET":
            names = seen.query.get("name")
            found = [
                {"id": z.id, "name": z.name, "status": "active", "paused": False, "type": "full"}
                for z in self.zones.values()
                if not names or z.name == names[0]
            ]
            return self._page(found, seen.query)
        if len(parts) < 3 or parts[0] != "zones" or parts[2] != "dns_records":
            return self._error(404, 7003, "Could not route to path")
        zone = self.zones.get(parts[1])
        if zone is None:
            return self._error(404, 7003, "Could not route to zone (no such zone id)")
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

E_ARGS, E_INVALID, E_NOTEXIST, E_PASSWORD, E_FORBIDEN = 1, 2, 3, 9, 10
_HESTIA_RECORD = re.compile(r"^(@|\*|[a-z0-9_*]([a-z0-9_.*-]{0,250}[a-z0-9_])?)$")


class FakeHestia(_Base):
    """HestiaCP web/api/index.php subset: access-key hash or admin user+password; commands
    v-list-dns-records, v-add-dns-record, v-delete-dns-record with Hestia's exit codes.
    ``fail_code`` makes every command exit with that code (e.g. 20 E_RESTART)."""

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
        self.domains: dict[str, dict[str, dict]] = {}
        self.next_id: dict[str, int] = {}
        self.fail_code: int | None = None
        super().__init__()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_domain(self, domain: str) -> None:
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

    def _answer(self, code: int, output: str, mode: str, http: int | None = None) -> tuple:
        headers = {"Hestia-Exit-Code": str(code), "Content-Type": "text/html; charset=UTF-8"}
        if mode == "code":
            return http or 200, headers, str(code).encode()
        if code:
            status = http or {1: 400, 2: 422, 9: 401, 10: 401, 5: 401, 6: 401}.get(code, 400)
            return status, headers, output.encode()
        if output.strip().startswith("{"):
            headers["Content-Type"] = "application/json; charset=utf-8"
        return (200 if output else 204), headers, output.encode()

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
        if "hash" in data:
            if data["hash"] != self.hash:
                return self._answer(E_PASSWORD, "Error: authentication failed", mode, 401)
        elif "user" in data:
            if data["user"] != self.owner:
                return self._answer(E_FORBIDEN, "Error: authentication failed", mode, 401)
            if data.get("password") != self.password:
                return self._answer(E_PASSWORD, "Error: authentication failed", mode, 401)
        else:
            self.violation("no credentials")
            return 405, {}, b"Error: data received is null or invalid"
        if self.fail_code is not None:
            return self._answer(self.fail_code, "Error: injected failure", mode)
        args = []
        i = 1
        while f"arg{i}" in data:
            args.append(data[f"arg{i}"].strip())
            i += 1
        if len(args) != len([k for k in data if k.startswith("arg")]):
            self.violation(f"argument numbering has holes: {sorted(data)}")
        cmd = data.get("cmd", "")
        handler = {
            "v-list-dns-records": self._list,
            "v-add-dns-record": self._add,
            "v-delete-dns-record": self._delete,
        }.get(cmd)
        if handler is None:
            self.violation(f"unexpected command {cmd!r}")
            return self._answer(E_INVALID, f"Error: {cmd} command invalid", mode)
        code, output = handler(args)
        if code not in (0, E_NOTEXIST):
            self.violation(f"{cmd} {args} -> {code} {output}")
        return self._answer(code, output, mode)

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
        return 0, json.dumps(records, indent=4)

    def _add(self, args: list[str]) -> tuple[int, str]:
        code, out, records = self._target(args, 5)
        if records is None:
            return code, out
        args = args + [""] * (9 - len(args))
        domain, record, rtype, value, priority, rid, restart, ttl = args[1:9]
        rtype = rtype.upper()
        record = record.lower()
        if not _HESTIA_RECORD.match(record):
            return E_INVALID, f"Error: invalid record format :: {record}"
        if rtype in ("NS", "CNAME", "MX", "PTR", "SRV") and not value.endswith("."):
            value += "."
        if rtype == "A" and not _is_ip(value, 4) or rtype == "AAAA" and not _is_ip(value, 6):
            return E_INVALID, f"Error: invalid ip format :: {value}"
        if rtype == "PTR" and not _is_host(value):
            return E_INVALID, f"Error: invalid value format :: {value}"
        if restart not in ("", "yes", "no"):
            return E_INVALID, f"Error: invalid restart format :: {restart}"
        if ttl and not ttl.isdigit():
            return E_INVALID, f"Error: invalid ttl format :: {ttl}"
        if priority and rtype not in ("MX", "SRV"):
            priority = ""
        if rid and rid in records:
            return 4, f"Error: ID={rid} already exists"
        rid = self.seed(domain, record, rtype, value, int(ttl) if ttl else 3600)
        return 0, ""

    def _delete(self, args: list[str]) -> tuple[int, str]:
        code, out, records = self._target(args, 3)
        if records is None:
            return code, out
        if not args[2].isdigit():
            return E_INVALID, f"Error: invalid id format :: {args[2]}"
        if args[2] not in records:
            return E_NOTEXIST, f"Error: dns record with ID={args[2]} doesn't exist"
        del records[args[2]]
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
