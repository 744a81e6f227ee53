"""A webhook receiver for the tests: a real HTTP server on loopback that verifies every request
with the reference ``standardwebhooks`` verifier (signature and replay window), records what
came in and when, and notices two requests of one service in flight at once."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    event: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    verified: bool
    status: int
    at: float


@dataclass
class Receiver:
    """``with Receiver(secret) as r: ... r.url``; ``answer(event) -> status`` decides the
    answer (default 204), ``delay_s`` holds each answer back."""

    secret: str
    answer: Callable[[dict[str, Any]], int] = lambda event: 204
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    overlaps: list[int] = field(default_factory=list)  # services seen twice in flight at once
    max_in_flight: int = 0  # requests being answered at once, at most

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = defaultdict(int)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            event, verified = json.loads(body), False
        sid = event.get("service_id") or 0
        with self._lock:
            self._in_flight[sid] += 1
            if self._in_flight[sid] > 1:
                self.overlaps.append(sid)
            self.max_in_flight = max(self.max_in_flight, sum(self._in_flight.values()))
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            status = self.answer(event) if verified else 401
            with self._lock:
                self.received.append(Received(event, body, headers, verified, status,
                                              time.monotonic()))
            request.send_response(status)
            request.send_header("content-length", "0")
            request.end_headers()
        finally:
            with self._lock:
                self._in_flight[sid] -= 1

    def acked(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def acked_ids(self) -> set[str]:
        return {r.event["event_id"] for r in self.acked()}

    def per_service(self) -> dict[int, list[str]]:
        """Event ids per service in the order they arrived, consecutive repeats (a re-send
        after a lost acknowledgement) folded into one."""
        out: dict[int, list[str]] = defaultdict(list)
        for r in self.acked():
            ids = out[r.event["service_id"] or 0]
            if not ids or ids[-1] != r.event["event_id"]:
                ids.append(r.event["event_id"])
        return dict(out)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
