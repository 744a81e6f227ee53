"""A real SMTP server for tests (aiosmtpd), collecting what it receives.

    from workers.testing.smtp_sink import SmtpSink

    with SmtpSink() as sink:                       # 127.0.0.1, a free port
        send(sink.settings(), "client@example.com", msg)
        got = sink.wait_for(lambda m: m.rcpt_tos == ["client@example.com"], timeout=5)
        assert "ready" in got.message["Subject"]
        assert "1.2.3.4" in got.body

``SmtpSink(data_reply="550 5.7.1 rejected")`` answers DATA with that reply instead of accepting
(``rcpt_reply`` likewise for RCPT TO), to exercise permanent (5xx) and transient (4xx) failures;
refused messages are not collected. Extra keyword arguments go to aiosmtpd's SMTP server, e.g.
``SmtpSink(authenticator=fn, auth_require_tls=False)`` to require a login. ``sink.messages`` is
a snapshot list of what was accepted; ``sink.clear()`` empties it. ``wait_for`` blocks on a
condition variable until a message matches or the deadline passes (then raises ``TimeoutError``
listing what did arrive).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Self

from aiosmtpd.controller import Controller

from pvekvm.config import SmtpSettings


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with email.policy.default

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.sink.rcpt_reply:
            return self.sink.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.data_reply:
            return self.sink.data_reply
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = message_from_bytes(raw, policy=policy.default)
        self.sink._add(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SmtpSink:
    def __init__(self, data_reply: str | None = None, rcpt_reply: str | None = None,
                 host: str = "127.0.0.1", **server_options: Any) -> None:
        self.host = host
        self.server_options = server_options
        self.port = 0
        self.data_reply = data_reply
        self.rcpt_reply = rcpt_reply
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> Self:
        last: Exception | None = None
        for _ in range(5):  # a free port can be taken between probing and binding
            port = _free_port(self.host)
            controller = Controller(_Handler(self), hostname=self.host, port=port,
                                    ready_timeout=5.0,
                                    **{"enable_SMTPUTF8": True, **self.server_options})
            try:
                controller.start()
            except Exception as exc:  # noqa: BLE001 - bind race: try another port
                last = exc
                with contextlib.suppress(Exception):
                    controller.stop()
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError(f"SMTP sink could not start: {last}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings pointing at this sink (plain SMTP, no auth, short timeout)."""
        return replace(SmtpSettings(host=self.host, port=self.port, timeout=5.0), **overrides)

    def _add(self, received: Received) -> None:
        with self._cond:
            self._received.append(received)
            self._cond.notify_all()

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def clear(self) -> None:
        with self._cond:
            self._received.clear()

    def wait_for(self, predicate: Callable[[Received], bool] = lambda _m: True,
                 timeout: float = 5.0) -> Received:
        """The first received message matching ``predicate``; waits up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for received in self._received:
                    if predicate(received):
                        return received
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(r.rcpt_tos, r.subject) for r in self._received]
                    raise TimeoutError(f"no matching message within {timeout}s; got {seen}")
                self._cond.wait(remaining)


__all__ = ["Received", "SmtpSink"]
