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
from pvekvm.models import DeadLetter, OutboxEvent
from tests.jsonfuzz import HOSTILE_WITH_SECRET, ORDER_BODIES, SECRET, STEP_BODIES
from workers import consumer, runner
from workers.testing.harness import InProcessWorkers, dead_queue, wait_until

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



# --------------------------------------------------------------------------- parked once

def _refusals() -> list[OutboxEvent]:
    return list(OutboxEvent.select().where(OutboxEvent.type == "event.refused"))


def _assert_parked_once(settings, caplog, reason_words: str) -> tuple[dict, bytes]:
    """One dead_letters row, one dead-queue copy with its reason, one event.refused; the
    secret nowhere; no traceback and no give-back."""
    [row] = list(DeadLetter.select())
    [(headers, parked)] = dead_queue(settings)
    [refused] = _refusals()
    assert reason_words in row.reason, row.reason
    assert headers["x-reason"] == row.reason and parked == bytes(row.body)
    for where in (parked, bytes(row.body), refused.body.encode(), row.reason.encode(),
                  caplog.text.encode()):
        assert SECRET.encode() not in where
    assert not [r for r in caplog.records if GAVE_BACK in r.getMessage()]
    return headers, parked


def test_a_body_nested_30000_deep_is_parked_once_redacted_with_one_refusal(settings, caplog):
    """It used to raise RecursionError after park() committed: 11 rows, 11 event.refused and
    the broker's own dead letter carrying the password in clear."""
    body = b"[" * 30000 + json.dumps({"password": SECRET}).encode() + b"]" * 30000
    with InProcessWorkers(settings, concurrency=1, pools=["intake"]) as workers:
        _publish(settings, "intake", [body])
        wait_until(lambda: _handled(workers) == 1, 20, "the ack")
    _, parked = _assert_parked_once(settings, caplog, "nested 30001 levels deep (max 32)")
    assert b'{"password": "[redacted]"}' in parked  # redacted as text: too deep for JSON
    assert not [r for r in caplog.records if r.exc_info]


def _spend_deliveries(settings, body: bytes) -> None:
    """Deliver ``body`` DELIVERY_LIMIT times to a consumer that dies with it (its channel
    closes unacknowledged, as when a body kills the worker process): the broker dead-letters
    it itself if the next delivery is returned too."""
    _publish(settings, "intake", [body])
    conn = messaging.connect(settings.amqp_url)
    queue = messaging.Topology(settings.namespace).orders_queue
    try:
        for n in range(messaging.DELIVERY_LIMIT):
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)
            method, props, _ = next(ch.consume(queue, inactivity_timeout=10))
            assert method is not None, "no delivery within 10 s"
            assert consumer.delivery_count(props) == n
            ch.close()  # unacknowledged: back to the queue, counted
    finally:
        conn.close()


def test_a_body_that_kills_its_worker_is_parked_redacted_on_its_last_delivery(settings,
                                                                             caplog):
    """The quorum queue's x-delivery-count says when the broker would dead-letter the
    original: the worker parks the redacted copy itself, unhandled, and acks."""
    body = b'{"version": 1, "type": "create", "password": "' + SECRET.encode() + b'", "x": '
    _spend_deliveries(settings, body)
    with InProcessWorkers(settings, concurrency=1, pools=["intake"]) as workers:
        wait_until(lambda: _handled(workers) == 1, 20, "the ack")
    headers, parked = _assert_parked_once(settings, caplog, "parked on its last delivery")
    assert headers["x-source"] == "intake" and b'"[redacted]"' in parked


def test_an_order_that_trips_a_bug_is_refused_once_not_sent_back(settings, caplog,
                                                                 monkeypatch):
    def broken(body, engine, clusters=()):
        raise RuntimeError(f"bug quoting the body: {body!r}")

    monkeypatch.setattr(runner, "handle_order", broken)
    body = json.dumps({**GOOD, "root_password": SECRET}).encode()
    with InProcessWorkers(settings, concurrency=1, pools=["intake"]) as workers:
        _publish(settings, "intake", [body])
        wait_until(lambda: _handled(workers) == 1, 20, "the ack")
    caplog.records[:] = [r for r in caplog.records if "intake failed" not in r.getMessage()]
    _assert_parked_once(settings, caplog, "intake failed on this event (RuntimeError)")


def _hostile_batch(settings, caplog, bodies: list[bytes]) -> None:
    """Every body holds the secret and is refused: one dead letter each, no exception out of
    intake, no secret in the dead queue, the table or billing's events."""
    DeadLetter.delete().execute()
    OutboxEvent.delete().execute()
    caplog.clear()
    parked = _consume_batch(settings, caplog, "intake", bodies)
    assert len(parked) == len(bodies) == DeadLetter.select().count() == len(_refusals())
    assert not [r for r in caplog.records if r.exc_info]  # nothing escaped handle_order
    for headers, body in parked:
        assert SECRET.encode() not in body and SECRET not in headers["x-reason"]
    assert not [r for r in DeadLetter.select() if SECRET.encode() in bytes(r.body)]
    assert not [e for e in _refusals() if SECRET in e.body]


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(bodies=st.lists(HOSTILE_WITH_SECRET, min_size=12, max_size=12))
def test_hostile_bodies_are_each_parked_once_without_their_secret(settings, caplog, bodies):
    _hostile_batch(settings, caplog, bodies)


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(bodies=st.lists(HOSTILE_WITH_SECRET, min_size=25, max_size=25))
def test_hostile_bodies_are_each_parked_once_without_their_secret_long(settings, caplog,
                                                                       bodies):
    _hostile_batch(settings, caplog, bodies)
