"""A DNS API receiver for the ``webhook`` provider, written the way an operator's dns.php would
be: it verifies each call's Standard Webhooks signature with its own code (stdlib hmac, not
pvekvm's), refuses a stale timestamp or a replayed webhook-id, parses the body as strict JSON and
keeps the zones' rrsets in memory.

``calls`` logs every request (headers, raw body, verdict); ``refuse_with`` makes it answer every
valid call with that (status, body); ``zones`` are the zones it serves (a probe of another is 404).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300
MAX_BODY = 64 * 1024


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up before reading the whole answer is not an error here."""


@dataclass
class Call:
    headers: dict
    body: bytes
    status: int
    verdict: str


class DnsReceiver:
    def __init__(self, secret: str, zones: tuple[str, ...]) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.zones = zones
        self.records: dict[tuple[str, str], tuple[list[str], int]] = {}
        self.calls: list[Call] = []
        self.seen_ids: set[str] = set()
        self.refuse_with: tuple[int, bytes] | None = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_BODY))
                status, answer, verdict = receiver.handle(dict(self.headers), body)
                with receiver.lock:
                    receiver.calls.append(Call(dict(self.headers), body, status, verdict))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dns.php"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the receiver's logic -----------------------------------------------------------------

    def verify(self, headers: dict, body: bytes) -> str | None:
        """Why the call is not pvekvm's, or None (Standard Webhooks verification)."""
        low = {k.lower(): v for k, v in headers.items()}
        msg_id, stamp, sigs = (low.get("webhook-id"), low.get("webhook-timestamp"),
                               low.get("webhook-signature"))
        if not msg_id or not stamp or not sigs:
            return "missing webhook headers"
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_S:
            return "timestamp outside the tolerance"
        expected = base64.b64encode(hmac.new(
            self.key, msg_id.encode() + b"." + stamp.encode() + b"." + body,
            hashlib.sha256).digest()).decode()
        given = [s.partition(",")[2] for s in sigs.split() if s.startswith("v1,")]
        if not any(hmac.compare_digest(expected, g) for g in given):
            return "bad signature"
        with self.lock:
            if msg_id in self.seen_ids:
                return "replayed webhook-id"
            self.seen_ids.add(msg_id)
        return None

    def handle(self, headers: dict, body: bytes) -> tuple[int, bytes, str]:
        problem = self.verify(headers, body)
        if problem:
            return 401, json.dumps({"error": problem}).encode(), problem
        try:
            change = json.loads(body.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return 400, b'{"error": "body is not ASCII JSON"}', "bad body"
        if self.refuse_with is not None:
            return self.refuse_with[0], self.refuse_with[1], "refused as told"
        zone = change.get("zone")
        if zone not in self.zones:
            return 404, json.dumps({"error": f"zone {zone} not served here"}).encode(), "zone"
        action = change.get("action")
        name = change.get("name")
        if action != "probe" and not (isinstance(name, str) and
                                      (name == zone or name.endswith("." + zone))):
            return 422, b'{"error": "name outside the zone"}', "outside"
        with self.lock:
            if action == "replace":
                self.records[(name, change["type"])] = (list(change["contents"]), change["ttl"])
            elif action == "delete":
                self.records.pop((name, change["type"]), None)
            elif action != "probe":
                return 400, b'{"error": "unknown action"}', "action"
        return 200, b'{"ok": true}', "ok"

    def rrset(self, name: str, rtype: str) -> list[str]:
        with self.lock:
            return sorted(self.records.get((name, rtype), ([], 0))[0])

    def changes(self) -> list[dict]:
        """The bodies of the verified calls that were not probes, in order."""
        with self.lock:
            return [json.loads(c.body) for c in self.calls
                    if c.verdict == "ok" and json.loads(c.body)["action"] != "probe"]
