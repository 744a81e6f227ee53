"""One runner under every consumer (workers/runner.py): the pika consumer on RabbitMQ and the
stub broker of the engine tests (workers/testing.py) hand a delivery to the same runner, so the
same message gets the same verdict through either — here, refusals parked with the same reason,
source and redacted body, told to billing the same way."""

from __future__ import annotations

import json

import pytest

from pvekvm.models import DeadLetter, OutboxEvent
from tests.e2e.test_bad_input_consumer import GOOD, _publish
from workers.engine import Engine
from workers.runner import Message
from workers.testing import EngineDriver
from workers.testing.harness import InProcessWorkers, dead_queue, wait_until

BODIES = {  # name: (pool, body)
    "an order carrying a password": (
        "intake", json.dumps({**GOOD, "password": "hunter2"}).encode()),
    "a step message naming no operation": ("ip", b'{"v":1,"op":"x","nudge":"n"}'),
    "a step message of an unknown operation": (
        "ip", b'{"v":1,"op":424242,"nudge":"2b1f7bd8","state":"new"}'),
}


def _parked() -> list[tuple[str, str, bytes]]:
    return [(d.source, d.reason, bytes(d.body))
            for d in DeadLetter.select().order_by(DeadLetter.id)]


def _told() -> list[str]:
    return [e.type for e in OutboxEvent.select().order_by(OutboxEvent.id)]


@pytest.mark.parametrize("case", sorted(BODIES))
def test_a_delivery_gets_the_same_verdict_through_the_consumer_and_the_stub_broker(settings,
                                                                                   case):
    pool, body = BODIES[case]
    stub = EngineDriver(Engine(settings, worker="stub"))
    handled = stub.deliver(Message(pool, body))
    assert handled.ack and handled.result == "refused"
    by_stub, told_by_stub = _parked(), _told()
    assert [(s, r, b) for b, r, s in stub.dead] == by_stub
    DeadLetter.delete().execute()
    OutboxEvent.delete().execute()

    with InProcessWorkers(settings, concurrency=1, pools=[pool]) as workers:
        _publish(settings, pool, [body])
        wait_until(DeadLetter.get_or_none, 20, "the dead-letter row")
        wait_until(lambda: sum(t.handled for t in workers.proc.threads) == 1, 5, "the ack")
    assert _parked() == by_stub and _told() == told_by_stub
    [(headers, on_queue)] = dead_queue(settings)
    assert (headers["x-source"], headers["x-reason"], on_queue) == by_stub[0]
    assert b"hunter2" not in on_queue
