"""``python -m pvekvm smtp-sink``: a local mail sink for a trial, so ``check`` and the ``mail``
pool work before a real relay is wired in. It listens where ``[smtp]`` points (host and port,
``SMTP_HOST``/``SMTP_PORT``), accepts every message (aiosmtpd, plain SMTP, no login), writes
each to ``--dir`` (default ``var/mail``) as ``NNNN.eml`` readable by its owner only — a welcome
mail holds the client's password — and prints one line per message: recipients, subject, file.
Never for production: nothing is delivered."""

from __future__ import annotations

import os
import signal
import threading
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from pvekvm.config import SmtpSettings


class _Keep:
    """aiosmtpd handler: each message to a file of its own, one line on stdout."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = len(list(folder.glob("*.eml")))
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        with self.lock:
            self.count += 1
            path = self.folder / f"{self.count:04d}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        subject = str(message_from_bytes(raw, policy=policy.default)["Subject"] or "")
        print(f"mail to {', '.join(envelope.rcpt_tos)}: {subject!r} ({len(raw)} bytes) -> "
              f"{path}", flush=True)
        return "250 Message accepted"


def serve(smtp: SmtpSettings, folder: Path, stop: threading.Event | None = None) -> int:
    """Accept mail on ``smtp.host:smtp.port`` until SIGTERM/SIGINT (or ``stop``); exit code."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        print("python -m pvekvm smtp-sink: needs aiosmtpd (pip install aiosmtpd)", flush=True)
        return 3
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(_Keep(folder), hostname=smtp.host, port=smtp.port,
                            ready_timeout=5.0, enable_SMTPUTF8=True)
    try:
        controller.start()
    except Exception as exc:  # noqa: BLE001 - port taken, address not ours: one line
        print(f"python -m pvekvm smtp-sink: cannot listen on {smtp.host}:{smtp.port} "
              f"([smtp] host/port, SMTP_HOST/SMTP_PORT): {exc}", flush=True)
        return 3
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"smtp-sink: accepting mail on {smtp.host}:{smtp.port}, keeping it in {folder}/ "
          "(a trial's sink: nothing is delivered)", flush=True)
    try:
        stop.wait()
    finally:
        controller.stop()
    return 0
