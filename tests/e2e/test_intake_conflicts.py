"""Intake conflicts, end to end (RabbitMQ, workers, MariaDB, pvesim).

FOR THE LEAD: the host-name and idempotency-key tests below exercise intake checks in
workers/intake.py (issue #8, lead's part). They pass with the commit "intake: refuse a host name
another live service holds ..." on branch issue-8b (_check_hostname_free, _check_same_order,
the IntegrityError retry in handle_order, services.live_hostname, operations.request_hash);
redo that commit your way and keep these tests green. The last test (repeatable actions
without keys) covers the producers (helper 8b's part)."""

from __future__ import annotations

import json
import threading

from producers.api import OrderClient
from producers.events import CreateEvent, SuspendEvent
from pvekvm import messaging
from pvekvm.models import DeadLetter, Operation, Service
from workers import intake
from workers.testing.harness import InProcessWorkers, all_ready, wait_until

GAVE_BACK = "it goes back"


def _publish(settings, *bodies: bytes) -> None:
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        for body in bodies:
            pub.publish_order(body, "order.any")
    finally:
        pub.close()


def _refusal(settings, words: str):
    return wait_until(lambda: DeadLetter.get_or_none(DeadLetter.reason.contains(words)), 30,
                      f"a refusal naming {words!r}")


def _handled(workers: InProcessWorkers) -> int:
    return sum(t.handled for t in workers.proc.threads)


def test_a_host_name_another_live_service_holds_is_refused_until_it_is_free(settings):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=701, client_id=1, product="vps-small", email="a@example.com",
                       hostname="shop.example.com")
        wait_until(all_ready([701]), 60, "the owner's service")
        billing.create(service_id=702, client_id=2, product="vps-small", email="b@example.com",
                       hostname="SHOP.Example.com.")
        row = _refusal(settings, "shop.example.com")
        assert "held by live service 701" in row.reason, row.reason
        assert Service.get_or_none(Service.id == 702) is None

        billing.terminate(service_id=701)
        wait_until(lambda: Service.get_by_id(701).status == "terminated", 60, "terminated")
        billing.create(service_id=703, client_id=2, product="vps-small", email="b@example.com",
                       hostname="shop.example.com")
        wait_until(all_ready([703]), 60, "the name, free again, taken by another service")
    assert DeadLetter.select().count() == 1


def test_ten_copies_of_one_event_are_one_operation_and_no_refusal(settings, caplog):
    event = CreateEvent(service_id=721, client_id=5, product="vps-small", email="c@example.com")
    with InProcessWorkers(settings, concurrency=4) as workers:
        _publish(settings, *[event.to_json()] * 10)
        wait_until(all_ready([721]), 60, "service 721 ready")
        wait_until(lambda: _handled(workers) >= 10, 20, "all ten copies acked")
    assert Operation.select().where(Operation.service_id == 721).count() == 1
    assert DeadLetter.select().count() == 0
    assert not [r for r in caplog.records if GAVE_BACK in r.getMessage()]


def test_a_copy_committed_between_intakes_reads_is_a_duplicate_not_a_refusal(settings,
                                                                            monkeypatch):
    """The race behind a refused copy: worker A finds no operation for the key, worker B
    commits the whole event, then A finds B's service. A must end as a quiet duplicate."""
    body = CreateEvent(service_id=722, client_id=5, product="vps-small",
                       email="c@example.com").to_json()
    real_create = intake._create_service
    worker_a = threading.current_thread()
    other: list = []

    def create_after_the_copy_committed(event, *args):
        if threading.current_thread() is worker_a and not other:
            b = threading.Thread(target=lambda: other.append(intake.handle_order(body)))
            b.start()  # worker B runs the whole event while A is between its reads
            b.join(30)
        return real_create(event, *args)

    monkeypatch.setattr(intake, "_create_service", create_after_the_copy_committed)
    first = intake.handle_order(body)
    [second] = other
    assert second.dead_reason is None and second.publish  # B accepted the order
    assert first.dead_reason is None and "duplicate event" in first.log[0]  # A: quietly
    assert Operation.select().where(Operation.service_id == 722).count() == 1


def test_a_key_reused_for_another_service_or_order_is_a_conflict(settings):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=731, client_id=1, product="vps-small", email="a@example.com",
                       idempotency_key="whmcs:1")
        wait_until(all_ready([731]), 60, "service 731")
        billing.suspend(service_id=731, idempotency_key="whmcs:1")  # another order
        _refusal(settings, "idempotency key conflict")
        other = json.loads(CreateEvent(service_id=732, client_id=1, product="vps-small",
                                       email="a@example.com",
                                       idempotency_key="whmcs:1").to_json())
        _publish(settings, json.dumps(other).encode())                # another service
        wait_until(lambda: DeadLetter.select().count() == 2, 30, "the second refusal")
        suspend = SuspendEvent(service_id=731, idempotency_key="whmcs:2").to_json()
        _publish(settings, suspend, suspend)                          # a copy: quiet
        wait_until(lambda: Service.get_by_id(731).status == "suspended", 60, "suspended")
    reasons = [r.reason for r in DeadLetter.select().order_by(DeadLetter.id)]
    assert len(reasons) == 2 and all("'whmcs:1'" in r and "service 731" in r for r in reasons)
    assert Service.get_or_none(Service.id == 732) is None
    assert Operation.select().where(Operation.idempotency_key == "whmcs:2").count() == 1


def test_suspend_unsuspend_suspend_without_keys_all_run(settings):
    """Producers (8b): repeatable actions get a fresh key per call, so the second suspend is
    an order of its own, not a copy of the first."""
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=741, client_id=1, product="vps-small", email="a@example.com")
        wait_until(all_ready([741]), 60, "service 741")
        billing.suspend(service_id=741)
        billing.unsuspend(service_id=741)
        billing.suspend(service_id=741)
        wait_until(lambda: Operation.select().where(
            (Operation.service_id == 741) & (Operation.status == "done")).count() == 4, 60,
            "create, suspend, unsuspend, suspend done")
    assert Service.get_by_id(741).status == "suspended"
    assert DeadLetter.select().count() == 0
