"""Bad input through the real consumer path (RabbitMQ, workers, MariaDB): every refused
message is in dead_letters and the dead queue with its reason on its first delivery — never a
traceback, a redelivery and a reason-less park by the delivery limit — and no secret is kept."""

from __future__ import annotations

import json

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvekvm import messaging
from pvekvm.models import DeadLetter
from tests.e2e.harness import InProcessWorkers, dead_queue, wait_until
from tests.jsonfuzz import ORDER_BODIES, STEP_BODIES

GOOD = {"version": 1, "type": "create", "idempotency_key": "bad-1", "service_id": 901,
        "client_id": 5, "product": "vps-small", "email": "a@example.com"}
GAVE_BACK = "it goes back"

CASES = {  # name: (pool, body, words the reason must contain)
    "client id past INT UNSIGNED": (
        "intake", json.dumps({**GOOD, "client_id": 2**32}).encode(), "client_id"),
    "5000-digit integer": (
        "intake", json.dumps(GOOD).replace("901", "9" * 5000).encode(), "number too large"),
    "step message op 1e400": (
        "ip", b'{"v":1,"op":1e400,"nudge":"2b1f7bd8-54a1-4cb1","state":"new"}', "'op'"),
    "password field": (
        "intake", json.dumps({**GOOD, "password": "hunter2"}).encode(), "password"),
}


def _publish(settings, pool: str, bodies: list[bytes]) -> None:
    topo = messaging.Topology(settings.namespace)
    conn = messaging.connect(settings.amqp_url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        exchange, key = (topo.orders_exchange, "order.create") if pool == "intake" else \
            (topo.steps_exchange, pool)
        for body in bodies:
            ch.basic_publish(exchange, key, body, pika.BasicProperties(delivery_mode=2),
                             mandatory=True)
    finally:
        conn.close()


def _handled(workers: InProcessWorkers) -> int:
    return sum(t.handled for t in workers.proc.threads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_that_used_to_slip_through_is_dead_lettered_with_its_reason(settings, caplog,
                                                                          case):
    pool, body, words = CASES[case]
    with InProcessWorkers(settings, concurrency=1, pools=[pool]) as workers:
        _publish(settings, pool, [body])
        row = wait_until(DeadLetter.get_or_none, 20, "the dead-letter row")
        wait_until(lambda: _handled(workers) == 1, 5, "the ack")
    assert words in row.reason, row.reason
    assert not [r for r in caplog.records if GAVE_BACK in r.getMessage()]  # first delivery
    [(headers, parked)] = dead_queue(settings)
    assert headers["x-reason"] == row.reason and headers["x-source"] == pool
    assert parked == bytes(row.body)
    if case == "password field":
        assert b"hunter2" not in parked and b'"password":"[redacted]"' in parked
    else:
        assert parked == body  # nothing to redact: kept byte for byte


FUZZ = settings(max_examples=3, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def _consume_batch(settings, caplog, pool: str, bodies: list[bytes]) -> list[tuple[dict, bytes]]:
    caplog.clear()
    before = DeadLetter.select().count()
    with InProcessWorkers(settings, concurrency=2, pools=[pool]) as workers:
        _publish(settings, pool, bodies)
        wait_until(lambda: _handled(workers) == len(bodies), 60,
                   f"{len(bodies)} messages acked", interval=0.05)
    assert not [r for r in caplog.records if GAVE_BACK in r.getMessage()]
    parked = dead_queue(settings)
    assert all(h.get("x-reason") for h, _ in parked)  # none parked by the delivery limit
    assert len(parked) == DeadLetter.select().count() - before
    return parked


@FUZZ
@given(bodies=st.lists(ORDER_BODIES, min_size=20, max_size=20))
def test_random_orders_are_each_accepted_or_refused_on_first_delivery(settings, caplog, bodies):
    _consume_batch(settings, caplog, "intake", bodies)


@FUZZ
@given(bodies=st.lists(STEP_BODIES, min_size=20, max_size=20))
def test_random_step_messages_are_each_refused_with_a_reason(settings, caplog, bodies):
    parked = _consume_batch(settings, caplog, "ip", bodies)
    assert len(parked) == len(bodies)  # no operation exists: every one is refused

