"""SMTP catcher with mailpit's message-list API: every mail is kept in memory and listed at
``GET /api/v1/messages`` as mailpit lists them (newest first; From, To, Subject, Created)."""

import asyncio
import json
import os
import threading
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

MESSAGES: list[dict] = []
LOCK = threading.Lock()


def split(addr: str, default_port: int) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "0.0.0.0", int(port or default_port)


class Keep:
    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's name
        msg = message_from_bytes(envelope.content, policy=policy.default)
        people = lambda h: [{"Name": n, "Address": a} for n, a in getaddresses(msg.get_all(h, []))]  # noqa: E731
        with LOCK:
            MESSAGES.insert(0, {
                "ID": str(len(MESSAGES) + 1), "MessageID": msg.get("Message-ID", ""),
                "From": (people("From") or [{"Name": "", "Address": envelope.mail_from}])[0],
                "To": people("To") or [{"Name": "", "Address": a} for a in envelope.rcpt_tos],
                "Subject": str(msg.get("Subject", "")), "Size": len(envelope.content),
                "Created": datetime.now(UTC).isoformat()})
        return "250 Message accepted for delivery"


class Api(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] in ("/api/v1/messages", "/livez", "/readyz"):
            with LOCK:
                body = json.dumps({"total": len(MESSAGES), "unread": len(MESSAGES),
                                   "count": len(MESSAGES), "messages": MESSAGES}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


def main() -> None:
    smtp_host, smtp_port = split(os.environ.get("MP_SMTP_BIND_ADDR", "0.0.0.0:1025"), 1025)
    ui_host, ui_port = split(os.environ.get("MP_UI_BIND_ADDR", "0.0.0.0:8025"), 8025)
    Controller(Keep(), hostname=smtp_host, port=smtp_port).start()
    print(f"mailcatcher: SMTP {smtp_host}:{smtp_port}, API http://{ui_host}:{ui_port}", flush=True)
    ThreadingHTTPServer((ui_host, ui_port), Api).serve_forever()


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()
