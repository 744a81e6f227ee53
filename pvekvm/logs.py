"""Logging set-up shared by every pvekvm process.

``text`` (default): ``2026-04-10 03:50:16 pvekvm.steps sid:5546 [+]  3. Resize system disk …`` —
the manual's step lines, prefixed with time and logger. ``json``: one JSON object per line for
log shippers (Loki, Elasticsearch, …) with ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
``thread``, ``message``, ``service_id`` when the line is about one service (a ``sid:N`` prefix
or a ``--- … service=N`` block line) and ``exc`` with the traceback, if any. Either way
pika's chatter is cut to warnings.

Neither format adds anything a step did not already write: secrets never reach a log line
because messages carry ids only and step messages never include passwords or tokens (a test
scans every log of a full lifecycle for them).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"
TEXT_DATEFMT = "%Y-%m-%d %H:%M:%S"
_SID = re.compile(r"^\s*sid:(\d+)\b|^---.*\bservice=(\d+)\b")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, UTF-8, no embedded newlines."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "message": message,
        }
        sid = _SID.match(message)
        if sid:
            out["service_id"] = int(next(g for g in sid.groups() if g))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str | int = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once for a process (replaces earlier handlers)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else logging.Formatter(TEXT_FORMAT, TEXT_DATEFMT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.WARNING)


__all__ = ["JsonFormatter", "setup"]
