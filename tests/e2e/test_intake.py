"""Bad input is refused with a reason and loses nothing; the same event twice is one VM."""

from __future__ import annotations

import json

import pytest

from producers.api import OrderClient
from producers.events import CreateEvent
from pvekvm import messaging
from pvekvm.models import DeadLetter, Operation, Service
from workers.consumer import INTAKE, WorkerProcess, all_pools
from workers.testing.harness import InProcessWorkers, all_ready, dead_queue, wait_until

GOOD = {"version": 1, "type": "create", "idempotency_key": "bad-1", "service_id": 901,
        "client_id": 5, "product": "vps-small", "email": "a@example.com"}

BAD_INPUTS = {
    "not json": b"\x00this is not json{",
    "not an object": b"[1, 2, 3]",
    "unknown product": json.dumps({**GOOD, "product": "no-such-product"}).encode(),
    "hostile hostname": json.dumps({**GOOD, "hostname": "evil;rm -rf /"}).encode(),
    "missing field": json.dumps({k: v for k, v in GOOD.items() if k != "email"}).encode(),
    "wrong type": json.dumps({**GOOD, "client_id": "five"}).encode(),
    "out of range": json.dumps({**GOOD, "service_id": 2**40}).encode(),
    "unknown type": json.dumps({**GOOD, "type": "format_disk"}).encode(),
}
REASON_WORDS = {"not json": "JSON", "not an object": "object", "unknown product": "product",
                "hostile hostname": "hostname", "missing field": "email",
                "wrong type": "client_id", "out of range": "service_id",
                "unknown type": "type"}


def _publish_raw(settings, body: bytes) -> None:
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        pub.publish_order(body, "order.create")
    finally:
        pub.close()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_dead_lettered_with_its_reason_and_the_next_order_still_served(
        settings, case):
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _publish_raw(settings, BAD_INPUTS[case])
        billing.create(service_id=902, client_id=5, product="vps-small", email="b@example.com")
        wait_until(all_ready([902]), 60, "the good order after the bad one")
        row = wait_until(lambda: DeadLetter.get_or_none(), 10, "the dead-letter row")
    assert REASON_WORDS[case].lower() in row.reason.lower(), row.reason
    assert bytes(row.body) == BAD_INPUTS[case]
    assert Service.get_or_none(Service.id == 901) is None  # nothing else touched
    reasons = [h["x-reason"] for h, _ in dead_queue(settings)]
    assert reasons == [row.reason]  # operators see it in the dead queue too


def test_the_same_event_delivered_twice_makes_one_vm(settings, sim):
    event = CreateEvent(service_id=903, client_id=5, product="vps-small", email="c@example.com")
    with InProcessWorkers(settings, concurrency=4):
        _publish_raw(settings, event.to_json())
        _publish_raw(settings, event.to_json())
        wait_until(all_ready([903]), 60, "service 903 ready")
        _publish_raw(settings, event.to_json())  # and once more after it is done
        wait_until(lambda: _orders_drained(settings), 10, "orders queue drained")
    assert Operation.select().where(Operation.service_id == 903).count() == 1
    svc = Service.get_by_id(903)
    ours = [vmid for vmid, vm in _all_vms(sim).items() if vmid == svc.vmid or
            "service=903" in vm["config"].get("description", "")]
    assert ours == [svc.vmid]
    assert DeadLetter.select().count() == 0


def _orders_drained(settings) -> bool:
    conn = messaging.connect(settings.amqp_url)
    try:
        q = conn.channel().queue_declare(messaging.Topology(settings.namespace).orders_queue,
                                         passive=True)
        return q.method.message_count == 0
    finally:
        conn.close()


def _all_vms(sim) -> dict[int, dict]:
    with sim.sim.cluster.lock:
        return {vmid: vm for vmid, vm in sim.sim.cluster.vms.items()
                if vm["config"].get("template") not in ("1", 1)}


@pytest.mark.parametrize(("pools", "step_threads", "intake_threads"), [
    (None, 3, 1), (["clone", "disks"], 3, 0), (["intake"], 0, 1)])
def test_billing_events_have_a_worker_thread_of_their_own(settings, pools, step_threads,
                                                         intake_threads):
    """Intake's one active consumer never shares a thread (and its message loop) with step
    consumers, so under a burst an order does not wait behind prefetched step messages."""
    proc = WorkerProcess(settings, pools or all_pools(), 3, metrics_port=None)
    kinds = [INTAKE if t.pools == [INTAKE] else "steps" for t in proc.threads]
    assert kinds.count("steps") == step_threads and kinds.count(INTAKE) == intake_threads
    assert all(INTAKE not in t.pools for t in proc.threads if t.pools != [INTAKE])
