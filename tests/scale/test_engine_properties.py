"""Property-based: whatever the interleaving of deliveries — duplicates, a crash between a
commit and its publish, billing's events out of order, pools racing each other — the engine
ends with the same promises kept (tests/scale/invariants.py). Intake and the engine run for
real (MariaDB, pvesim, the real state machines); the broker is workers/testing.EngineDriver."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.api import utc_now
from producers.events import (
    ChangePackageEvent,
    CreateEvent,
    Event,
    ResetPasswordEvent,
    SuspendEvent,
    TerminateEvent,
    UnsuspendEvent,
)
from pvekvm import db as dbmod
from pvekvm.models import DeadLetter, Operation, OutboxEvent, StepRun, database
from pvesim.testing import running_simulator
from tests.e2e.harness import load_catalog, make_settings
from tests.scale import invariants
from tests.smtp_sink import SmtpSink
from workers import outbox, scheduler
from workers.consumer import INTAKE
from workers.engine import Engine
from workers.intake import handle_order
from workers.outcome import Nudge, Outcome
from workers.testing import EngineDriver

FOLLOW_UPS = ("suspend", "unsuspend", "change_package", "reset_password", "terminate")
# lost-ack: done and published, but the ack never reached the broker, so it comes again later;
# crash: committed, then the process died before publishing (and acking)
MODES = ("deliver", "lost-ack", "crash")


def _event(kind: str, sid: int, n: int) -> Event:
    common = dict(service_id=sid, idempotency_key=f"prop-{sid}-{n}-{kind}",
                  occurred_at=utc_now())
    if kind == "create":
        return CreateEvent(client_id=1, product="vps-small", email=f"p{sid}@example.com",
                           **common)
    if kind == "change_package":
        return ChangePackageEvent(product="vps-large", **common)
    cls = {"suspend": SuspendEvent, "unsuspend": UnsuspendEvent, "terminate": TerminateEvent,
           "reset_password": ResetPasswordEvent}[kind]
    return cls(**common)


@st.composite
def scenarios(draw) -> tuple[list[bytes], Schedule]:
    """Billing's events for two services in a drawn order (a follow-up may come before its
    create), and a schedule of deliveries with their rates of crashes and lost acks."""
    events: list[Event] = []
    for sid in (101, 102):
        events.append(_event("create", sid, 0))
        kinds = draw(st.lists(st.sampled_from(FOLLOW_UPS), min_size=1, max_size=4))
        events += [_event(k, sid, i + 1) for i, k in enumerate(kinds)]
    order = draw(st.permutations(events))
    lost_ack, crash = draw(st.sampled_from((0.0, 0.1, 0.3))), draw(st.sampled_from((0.1, 0.3)))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    return [e.to_json() for e in order], Schedule(rnd, lost_ack, crash)


@dataclass
class Schedule:
    """Which pending message goes next (any of them: pools race) and what happens to it."""

    rnd: random.Random
    lost_ack: float
    crash: float

    def next(self, pending: int) -> tuple[int, str]:
        r = self.rnd.random()
        mode = "crash" if r < self.crash else "lost-ack" if r < self.crash + self.lost_ack \
            else "deliver"
        return self.rnd.randrange(pending), mode


@dataclass
class Broker:
    """Messages in flight: billing's events (delivered in the order published) and nudges
    (any pool may be served first); events to billing as they would arrive on the wire."""

    driver: EngineDriver
    orders: list[bytes]
    wire: list[str] = field(default_factory=list)
    redeliver: list[tuple[str, object]] = field(default_factory=list)

    def pending(self) -> list[tuple[str, object]]:
        head = [("order", self.orders[0])] if self.orders else []
        return self.redeliver + head + [("nudge", q.nudge) for q in self.driver.queue]

    def take(self, item: tuple[str, object]) -> None:
        if item in self.redeliver:
            self.redeliver.remove(item)
        elif item[0] == "order":
            self.orders.pop(0)
        else:
            self.driver.queue = [q for q in self.driver.queue if q.nudge is not item[1]]
            heapq.heapify(self.driver.queue)

    def deliver(self, item: tuple[str, object], mode: str) -> None:
        self.take(item)
        kind, msg = item
        out = handle_order(msg) if kind == "order" else \
            self.driver.engine.handle(pool_of(msg), body(msg))
        if mode != "crash":
            with database.atomic():
                self._follow_up(out, msg)
        if mode != "deliver":  # never acked: the broker hands it out again
            self.redeliver.append(item)

    def _follow_up(self, out: Outcome, msg: object) -> None:
        """What workers/consumer.py does after the handler's commit."""
        self.driver.accept(out)
        refused = [(msg, out.dead_reason)] if out.dead_reason else []
        assert isinstance(msg, bytes) or not refused, f"a step message refused: {refused}"
        for message, reason in refused + out.parked:
            DeadLetter.create(source=INTAKE, reason=reason, body=message, created_at=utc_dt())
            out.events.append(outbox.refused(message, reason))
        self._publish(out.events)

    def _publish(self, pending: list[outbox.Pending]) -> None:
        self.wire += [p.event_id for p in pending]
        if pending:
            OutboxEvent.update(published_at=utc_dt()).where(
                OutboxEvent.id.in_([p.row_id for p in pending])).execute()

    def reconcile(self, settings) -> int:
        """The scheduler's reconciler, run for real (workers/scheduler.reconcile_once) with the
        clock past every deadline but the hold time: what a crash left unpublished goes out."""
        from datetime import datetime, timedelta

        later = datetime.now() + timedelta(seconds=settings.engine.stale_after_s + 10)
        return scheduler.reconcile_once(settings, DriverPublisher(self), later)


class DriverPublisher:
    """The reconciler's publisher: nudges into the driver's queue, events onto the wire."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def publish_step(self, pool: str, payload: dict, message_id: str, delay_s: float) -> None:
        self.broker.driver.accept(Outcome(publish=[Nudge(pool, payload["op"], payload["nudge"],
                                                         payload["state"], delay_s)]))

    def publish_event(self, event_type: str, body: bytes, event_id: str) -> None:
        self.broker.wire.append(event_id)

    def publish_dead(self, body: bytes, reason: str, source: str) -> None:
        """The dead queue itself is not modelled: the refusal is in ``dead_letters``."""


def pool_of(nudge: object) -> str:
    assert isinstance(nudge, Nudge)
    return nudge.pool


def body(nudge: object) -> bytes:
    assert isinstance(nudge, Nudge)
    return json.dumps(nudge.payload(), separators=(",", ":")).encode()


def utc_dt():
    from datetime import datetime

    return datetime.now()


@pytest.fixture(scope="module")
def world(tmp_path_factory, amqp_url, database_url, database) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("prop")
    with running_simulator(tmp, task_time_scale=0) as sim, SmtpSink() as sink:
        s = make_settings(tmp, amqp_url, database_url, "unused", sim.connection, sink.settings())
        yield sim, s, database


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_any_interleaving_keeps_the_promises(world, scenario) -> None:
    sim, s, db = world
    orders, schedule = scenario
    dbmod.reset_data(db)
    sim.reset(state=True)
    load_catalog(s)
    broker = Broker(EngineDriver(Engine(s, worker="prop")), list(orders))
    for _ in range(3000):
        pending = broker.pending()
        if not pending and not broker.reconcile(s):  # idle: the scheduler's turn
            break
        if pending:
            pick, mode = schedule.next(len(pending))
            broker.deliver(pending[pick], mode)
    else:
        raise AssertionError("still busy after 3000 deliveries")

    invariants.check(sim)
    wire = {e for e in broker.wire}
    assert wire == {r.event_id for r in OutboxEvent.select()}  # each event heard, by its id
    # billing's every event is an operation or a refusal with its reason
    keys = {json.loads(o)["idempotency_key"] for o in orders}
    accepted = {o.idempotency_key for o in Operation.select()}
    refused = {json.loads(bytes(d.body))["idempotency_key"] for d in DeadLetter.select()}
    assert keys == accepted | refused, f"events neither run nor refused: {keys - accepted}"
    # no step's work done twice: each state of each operation advanced from once
    advanced = [(r.operation_id, r.from_state) for r in StepRun.select().where(
        StepRun.result.in_(("success", "skip", "warn")))]
    assert len(advanced) == len(set(advanced)), "a step advanced twice"
