"""The pull feed (``GET /v1/events``), read only.

A cursor is an opaque, stable string naming a feed position (``outbox.seq``): the events after
it are always the same events in the same order, since positions are handed out in commit
order by the sequencer (:mod:`workers.webhooks`) and never change. A page holds at most
``limit`` events of the caller's services, each the JSON published on the exchange (same
``event_id``); ``next_cursor`` is where the next request starts. A page looks at most
:data:`WINDOW` positions, so a brand whose services are quiet while others are busy still gets
an answer in bounded time (an empty page with ``has_more`` true and a cursor further on).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from pvekvm.models import database
from pvekvm.webhooks.store import head

WINDOW = 5000
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{11}$"


class BadCursor(ValueError):
    pass


def cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(struct.pack(">Q", seq)).decode().rstrip("=")


def position(text: str | None) -> int:
    """The position a cursor names (None: the start); BadCursor for anything this feed did
    not hand out, or a position past the newest event."""
    if text is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(text + "=")
        if len(text) != 11 or len(raw) != 8:
            raise ValueError
    except (binascii.Error, ValueError):
        raise BadCursor("cursor: not one this feed handed out (use next_cursor as given)"
                        ) from None
    seq = int(struct.unpack(">Q", raw)[0])
    if seq > head():
        raise BadCursor("cursor: not one this feed handed out (past the newest event)")
    return seq


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_cursor: str
    has_more: bool


def page(after: int, limit: int, ranges: tuple[tuple[int, int], ...] | None) -> Page:
    """Up to ``limit`` events after position ``after`` of the services in ``ranges`` (None:
    every event, those that name no service included)."""
    newest = head()
    upto = min(newest, after + WINDOW)
    where, args = "seq > %s AND seq <= %s", [after, upto]
    if ranges is not None:
        where += " AND (" + " OR ".join(["service_id BETWEEN %s AND %s"] * len(ranges)) + ")"
        args += [v for r in ranges for v in r]
    rows = database.execute_sql(f"SELECT seq, body FROM outbox WHERE {where} "
                                "ORDER BY seq LIMIT %s", (*args, limit)).fetchall()
    events = [json.loads(body) for _, body in rows]
    last = int(rows[-1][0]) if len(rows) == limit else upto
    return Page(events, cursor(last), last < newest)
