"""A broker stand-in for testing the engine (as dramatiq tests with its stub broker): nudges the
engine publishes go into an in-memory queue ordered by virtual due time, and a test delivers
them — in order, twice, late, or never — to ``Engine.handle``. The database is the real one;
nothing sleeps: delays only move the virtual clock."""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from pvekvm.models import database
from workers import operations
from workers.engine import Engine
from workers.outcome import Nudge, Outcome


@dataclass(order=True)
class _Queued:
    due: float
    seq: int
    nudge: Nudge = field(compare=False)


class EngineDriver:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = 0.0                      # virtual seconds
        self.queue: list[_Queued] = []
        self.delivered: list[tuple[float, Nudge]] = []
        self.log: list[str] = []
        self._seq = itertools.count()

    # --- what the consumer would do -------------------------------------------------------------

    def accept(self, outcome: Outcome, *, publish: bool = True) -> Outcome:
        """Take an outcome as after its commit; ``publish=False`` = the process died before
        publishing (the nudges are lost and never marked published)."""
        self.log += outcome.log
        if publish:
            for n in outcome.publish:
                heapq.heappush(self.queue, _Queued(self.now + n.delay_s, next(self._seq), n))
                if not n.resend:
                    operations.mark_published(n.operation_id, n.nudge_id)
        return outcome

    def begin(self, service_id: int, kind: str, key: str,
              params: dict[str, Any] | None = None) -> Outcome:
        with database.atomic():
            out = operations.begin(service_id, kind, key, params or {})
        return self.accept(out)

    def handle(self, nudge: Nudge, *, publish: bool = True) -> Outcome:
        """Deliver one nudge now (it need not be queued: a redelivery or a duplicate)."""
        self.delivered.append((self.now, nudge))
        return self.accept(self.engine.handle(nudge.pool, body_of(nudge)), publish=publish)

    def next(self) -> Nudge | None:
        """Take the earliest due nudge off the queue, moving the clock to its due time."""
        if not self.queue:
            return None
        item = heapq.heappop(self.queue)
        self.now = max(self.now, item.due)
        return item.nudge

    def run(self, limit: int = 200) -> int:
        """Deliver queued nudges until none is left; returns how many were delivered."""
        for n in range(limit):
            nudge = self.next()
            if nudge is None:
                return n
            self.handle(nudge)
        raise AssertionError(f"still busy after {limit} messages")


def body_of(nudge: Nudge) -> bytes:
    """The message body the consumer would receive for ``nudge``."""
    return json.dumps(nudge.payload(), separators=(",", ":")).encode()
