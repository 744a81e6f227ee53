"""Billing hears what happened: events on ``{ns}.events`` through the real path, written in
the commit of the change (outbox) and re-published after a crash between commit and publish."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from producers.api import OrderClient
from pvekvm import messaging, secrets
from pvekvm.models import IpAddress, Operation, OutboxEvent, Service
from workers import scheduler
from workers.intake import handle_order
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    queue_exists,
    wait_until,
)


@pytest.fixture()
def billing_queue(settings) -> Iterator[BillingQueue]:
    q = BillingQueue(settings)
    yield q
    q.close()


def _of(events: list[dict], type_: str, sid: int | None = None) -> list[dict]:
    return [e for e in events if e["type"] == type_ and (sid is None or e["service_id"] == sid)]


def test_a_deploy_tells_billing_accepted_then_ready_with_its_addresses(settings, sim,
                                                                       billing_queue):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7201, client_id=3, product="vps-large", email="e@example.com",
                       ipv6=True, idempotency_key="whmcs-call-7201")
        wait_until(all_ready([7201]), 60, "deploy")
        ready = billing_queue.wait_for(lambda e: e["type"] == "service.ready", 30,
                                       "service.ready")
    svc = Service.get_by_id(7201)
    addrs = {a.version: a.address for a in IpAddress.select().where(IpAddress.service_id == 7201)}
    assert ready["vmid"] == svc.vmid and ready["node"] == svc.node
    assert ready["hostname"] == svc.hostname and ready["os_user"] == svc.username
    assert ready["location"] == "default"  # the cluster it is in (create's location)
    assert ready["ipv4"] == [addrs[4]] and ready["ipv6"] == [addrs[6]]
    assert ready["idempotency_key"] == "whmcs-call-7201"
    events = billing_queue.drain()
    accepted = _of(events, "operation.accepted", 7201)
    assert len(accepted) == 1 and accepted[0]["kind"] == "deploy"
    assert accepted[0]["idempotency_key"] == "whmcs-call-7201"
    assert [e["type"] for e in events].index("operation.accepted") < \
        [e["type"] for e in events].index("service.ready")
    assert len(_of(events, "operation.completed", 7201)) == 1
    assert svc.password_enc is not None
    password = secrets.decrypt(settings.secret_key_file, svc.password_enc)
    for raw in billing_queue.raw:  # never a secret in an event
        assert password.encode() not in raw and b"password" not in raw.lower()


def test_refusals_reach_billing_with_their_reasons(settings, sim, billing_queue):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7202, client_id=3, product="vps-small", email="e@example.com")
        wait_until(all_ready([7202]), 60, "deploy")
        billing.iso_mount(service_id=7202, iso="missing.iso", idempotency_key="iso-1")
        failed = billing_queue.wait_for(lambda e: e["type"] == "operation.failed", 30,
                                        "operation.failed")
        billing.publish_raw(b'{"version": 1, "type": "suspend", "idempotency_key": "bad-1", '
                            b'"service_id": "7202"}', "order.suspend")
        refused = billing_queue.wait_for(lambda e: e["type"] == "event.refused", 30,
                                         "event.refused")
    assert failed["idempotency_key"] == "iso-1" and failed["kind"] == "iso_mount"
    assert "missing.iso not found" in failed["reason"]
    assert refused["idempotency_key"] == "bad-1" and refused["event_type"] == "suspend"
    assert "service_id" in refused["reason"] and refused["operation_id"] is None


def test_an_event_lost_between_commit_and_publish_is_sent_once_by_the_reconciler(
        settings, billing_queue):
    from producers.events import CreateEvent

    out = handle_order(CreateEvent(service_id=7203, client_id=3, product="vps-small",
                                   email="e@example.com").to_json())
    assert out.events, "intake recorded events"    # committed; the process 'dies' here
    assert billing_queue.drain() == []
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        later = OutboxEvent.select().first().created_at.replace(microsecond=0)
        from datetime import timedelta

        scheduler.reconcile_once(settings, pub, now=later + timedelta(seconds=10))
        scheduler.reconcile_once(settings, pub, now=later + timedelta(seconds=20))
    finally:
        pub.close()
    events = wait_until(lambda: billing_queue.drain(), 10, "the re-published event", db=False)
    assert [e["type"] for e in events] == ["operation.accepted"]
    assert events[0]["operation_id"] == Operation.get(Operation.service_id == 7203).id
    assert OutboxEvent.select().where(OutboxEvent.published_at.is_null()).count() == 0
    assert json.loads(OutboxEvent.get().body)["event_id"] == events[0]["event_id"]


def test_the_example_billing_consumer_prints_each_event_once(settings, sim):
    import subprocess
    import sys

    from pvekvm.config import ROOT

    queue = f"{settings.namespace}.billing-watch"
    watch = subprocess.Popen(
        [sys.executable, "-m", "producers", "watch", "--amqp-url", settings.amqp_url,
         "--namespace", settings.namespace, "--queue", queue, "--types", "operation.*",
         "--count", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conn = messaging.connect(settings.amqp_url)
        wait_until(lambda: queue_exists(conn, queue), 30, "the watch queue", db=False)
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=7204, client_id=3, product="vps-small",
                           email="e@example.com")
            out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
        conn.channel().queue_delete(queue)
        conn.close()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["type"] for e in lines] == ["operation.accepted", "operation.completed"], err
    assert all(e["service_id"] == 7204 for e in lines)



def test_a_failed_restore_offers_the_client_its_way_out_and_each_choice_is_accepted(
        settings, sim, billing_queue):
    """The archive a restore needs was pruned behind our back: the restore is refused saying
    so, the gone backup is no longer listed, billing hears operation.failed with the choices
    (the backups still held, a reinstall) as event bodies, and the client's next choice runs
    without an operator."""
    from pvekvm.models import Backup

    sid = 8100
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=sid, client_id=4, product="vps-small", email="r@example.com")
        wait_until(all_ready([sid]), 60, "deploy")
        for note in ("older", "newer"):
            billing.backup_create(service_id=sid, note=note)
            def backed_up(n: str = note) -> Backup | None:
                return Backup.get_or_none(note=n)
            wait_until(backed_up, 30, f"backup {note}")
        older, newer = (Backup.get(note=n) for n in ("older", "newer"))
        sim.proxmox().nodes(newer.node).storage(newer.storage).content(newer.volid).delete()
        billing.backup_restore(service_id=sid, backup_id=newer.id)
        failed = billing_queue.wait_for(
            lambda e: e["type"] == "operation.failed" and e["kind"] == "restore", 60,
            "the restore fails")
        assert f"backup {newer.id} is gone from storage" in failed["reason"]
        assert failed["choices"] == [{"type": "backup_restore", "backup_id": older.id},
                                     {"type": "reinstall"}]
        assert [b.id for b in Backup.select().where(Backup.service_id == sid)] == [older.id]
        assert Service.get_by_id(sid).status == "ready"
        billing.backup_restore(service_id=sid, backup_id=older.id)
        done = billing_queue.wait_for(
            lambda e: e["type"] == "operation.completed" and e["kind"] == "restore", 60,
            "the other backup restored")
        assert done["service_id"] == sid
        billing.reinstall(service_id=sid)
        billing_queue.wait_for(
            lambda e: e["type"] == "operation.completed" and e["kind"] == "reinstall", 60,
            "reinstalled")
