"""A stub broker for testing the engine (as dramatiq tests with its StubBroker): the one
:class:`~workers.runner.Runner` the pika consumer uses handles every delivery; what it publishes
lands here — nudges in an in-memory queue ordered by virtual due time, events to billing on
``wire``, refusals in ``dead`` — and a test delivers them in order, twice, late, or never. Nudges
are handed over as the objects published (no JSON in between). The database is the real one;
nothing sleeps: delays (and a database outage's waits) only move the virtual clock.

A redelivery the test plays (a lost ack, a crash after the commit) does not count against the
message's delivery limit; a message the runner gives back does, as on RabbitMQ."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pvekvm.messaging import StepMessage
from pvekvm.models import database
from workers import operations
from workers.engine import Engine
from workers.outcome import Nudge, Outcome
from workers.runner import INTAKE, Handled, Message, Runner

# deliver: handled, published, acked; lost-ack: handled and published, then handed out again;
# crash: committed, then the process died before publishing (and acking)
Mode = Literal["deliver", "lost-ack", "crash"]


@dataclass(order=True)
class _Queued:
    due: float
    seq: int
    message: Message = field(compare=False)


class EngineDriver:
    """The stub broker. ``chain``: the pools whose next steps the runner runs at once after a
    step (as a worker thread serving them does); none by default, so a test sees each step's
    message."""

    def __init__(self, engine: Engine, chain: Collection[str] = ()) -> None:
        self.engine = engine
        self.runner = Runner(engine, self, chain, wait=self._wait, name="driver")
        self.now = 0.0                      # virtual seconds
        self.queue: list[_Queued] = []      # nudges, by due time
        self.orders: list[bytes] = []       # billing's events, taken in the order published
        self.returned: list[Message] = []   # handed out again before anything else
        self.delivered: list[tuple[float, Nudge]] = []
        self.log: list[str] = []
        self.wire: list[str] = []           # ids of the events published to billing
        self.dead: list[tuple[bytes, str, str]] = []  # (body, reason, source) parked
        self._seq = itertools.count()

    # --- the sink the runner publishes to ------------------------------------------------------

    def publish_nudge(self, nudge: StepMessage) -> None:
        assert isinstance(nudge, Nudge)
        self._push(Message(nudge.pool, nudge=nudge), nudge.delay_s)

    def publish_event(self, event_type: str, body: bytes, event_id: str) -> None:
        self.wire.append(event_id)

    def publish_dead(self, body: bytes, reason: str, source: str) -> None:
        self.dead.append((body, reason, source))

    def publish_order(self, body: bytes) -> None:
        """Billing publishes an event."""
        self.orders.append(body)

    # --- what a test does ------------------------------------------------------------------------

    def accept(self, outcome: Outcome, *, publish: bool = True) -> Outcome:
        """Follow up an outcome as the runner does after its commit; ``publish=False`` = the
        process died before publishing (the nudges are lost and never marked published)."""
        if publish:
            self._record(self.runner.follow_up(outcome, Message(INTAKE)))
        else:
            self.log += outcome.log
        return outcome

    def begin(self, service_id: int, kind: str, key: str,
              params: dict[str, Any] | None = None) -> Outcome:
        with database.atomic():
            out = operations.begin(service_id, kind, key, params or {},
                                   machines=self.engine.machines)
        return self.accept(out)

    def handle(self, nudge: Nudge, *, publish: bool = True) -> Outcome:
        """Deliver one nudge now (it need not be queued: a redelivery or a duplicate); the
        outcome of its own step (a chain's later steps are in ``log`` and the queue)."""
        handled = self.deliver(Message(nudge.pool, nudge=nudge),
                               "deliver" if publish else "crash", requeue=False)
        return handled.outcomes[0] if handled.outcomes else Outcome()

    def pending(self) -> list[Message]:
        """Everything the broker could hand out now: messages returned, billing's next event
        (one active consumer: in order), and every queued nudge (pools race each other)."""
        head = [Message(INTAKE, self.orders[0])] if self.orders else []
        return self.returned + head + [q.message for q in self.queue]

    def deliver(self, message: Message, mode: Mode = "deliver", *,
                requeue: bool = True) -> Handled:
        """Take ``message`` (one of :meth:`pending`) off the broker and hand it to the runner;
        with ``requeue``, one not acked (lost ack, crash) is handed out again later."""
        self._take(message)
        if message.nudge is not None:
            self.delivered.append((self.now, message.nudge))
        if mode == "crash":
            out = self.runner.decide(message)
            self.log += out.log
            handled = Handled(False, [out], "crashed")
        else:
            handled = self.runner.handle(message)
            self._record(handled.outcomes)
            if not handled.ack:  # given back: counted against its delivery limit
                self._give_back(replace(message, deliveries=message.deliveries + 1))
        if mode != "deliver" and requeue:
            self.returned.append(message)
        return handled

    def next(self) -> Nudge:
        """Take the earliest due nudge off the queue, moving the clock to its due time."""
        assert self.queue, "no nudge is queued"
        item = heapq.heappop(self.queue)
        self.now = max(self.now, item.due)
        assert item.message.nudge is not None
        return item.message.nudge

    def run(self, limit: int = 200) -> int:
        """Deliver queued nudges until none is left; returns how many were delivered."""
        for n in range(limit):
            if not self.queue:
                return n
            self.handle(self.next())
        raise AssertionError(f"still busy after {limit} messages")

    # --- inside --------------------------------------------------------------------------------

    def _push(self, message: Message, delay_s: float = 0.0) -> None:
        heapq.heappush(self.queue, _Queued(self.now + delay_s, next(self._seq), message))

    def _give_back(self, message: Message) -> None:
        if message.nudge is not None:
            self._push(message)
        else:
            self.returned.insert(0, message)

    def _take(self, message: Message) -> None:
        if any(m is message for m in self.returned):
            self.returned = [m for m in self.returned if m is not message]
        elif message.pool == INTAKE and message.nudge is None and self.orders \
                and message.body == self.orders[0]:
            self.orders.pop(0)
        elif any(q.message is message for q in self.queue):
            self.queue = [q for q in self.queue if q.message is not message]
            heapq.heapify(self.queue)

    def _record(self, outcomes: list[Outcome]) -> None:
        for out in outcomes:
            self.log += out.log

    def _wait(self, seconds: float) -> None:
        self.now += seconds
