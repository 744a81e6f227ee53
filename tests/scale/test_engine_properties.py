"""Property-based: whatever the interleaving of deliveries — duplicates, a crash between a
commit and its publish, billing's events out of order, pools racing each other — the engine
ends with the same promises kept (tests/scale/invariants.py). Intake and the engine run for
real (MariaDB, pvesim, the real state machines); the broker is workers/testing.EngineDriver,
the stub broker under the very runner the pika consumer uses (workers/runner.py)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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
from pvekvm.config import Settings
from pvekvm.models import DeadLetter, Operation, OutboxEvent, StepRun
from pvesim.testing import running_simulator
from tests.scale import invariants
from workers import scheduler
from workers.engine import Engine
from workers.runner import INTAKE
from workers.testing import EngineDriver, Mode
from workers.testing.harness import load_catalog, make_settings
from workers.testing.smtp_sink import SmtpSink

FOLLOW_UPS = ("suspend", "unsuspend", "change_package", "reset_password", "terminate")


def _event(kind: str, sid: int, n: int) -> Event:
    common: dict[str, Any] = dict(service_id=sid, idempotency_key=f"prop-{sid}-{n}-{kind}",
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

    def next(self, pending: int) -> tuple[int, Mode]:
        r = self.rnd.random()
        mode: Mode = "crash" if r < self.crash else \
            "lost-ack" if r < self.crash + self.lost_ack else "deliver"
        return self.rnd.randrange(pending), mode


def reconcile(driver: EngineDriver, settings: Settings) -> int:
    """The scheduler's reconciler, run for real (workers/scheduler.reconcile_once) with the
    clock past every deadline but the hold time: what a crash left unpublished goes out."""
    later = datetime.now() + timedelta(seconds=settings.engine.stale_after_s + 10)
    return scheduler.reconcile_once(settings, driver, later)


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
    broker = EngineDriver(Engine(s, worker="prop"))
    for order in orders:
        broker.publish_order(order)
    for _ in range(3000):
        pending = broker.pending()
        if not pending and not reconcile(broker, s):  # idle: the scheduler's turn
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
    assert {d.source for d in DeadLetter.select()} <= {INTAKE}, "a step message refused"
    refused = {json.loads(bytes(d.body))["idempotency_key"] for d in DeadLetter.select()}
    assert keys == accepted | refused, f"events neither run nor refused: {keys - accepted}"
    # no step's work done twice: each state of each operation advanced from once
    advanced = [(r.operation_id, r.from_state) for r in StepRun.select().where(
        StepRun.result.in_(("success", "skip", "warn")))]
    assert len(advanced) == len(set(advanced)), "a step advanced twice"
