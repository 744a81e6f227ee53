"""Billing hears every change of rescue mode once, through RabbitMQ, MariaDB and pvesim, also
when no completed rescue_on/rescue_off announces it: a rescue_off cancelled after its restore
step put the disk first (the VM left rescue), a rescue_on that failed after its boot step (the
VM is in rescue), a snapshot rollback that brought a config taken in rescue mode back."""

from __future__ import annotations

from dataclasses import replace

from producers.api import OrderClient
from pvekvm.models import Operation, Service
from pvekvm.wire.billing import ServiceRescueOff, ServiceRescueOn
from workers import admin
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
)

SID = 2851
RESCUE = "systemrescue-11.02-amd64.iso"
START = r"^POST /nodes/[^/]+/qemu/\d+/status/start$"


def _ended(kind: str, statuses: tuple[str, ...] = ("done",), count: int = 1) -> Operation:
    def check() -> Operation | None:
        ops = list(Operation.select().where((Operation.service_id == SID)
                                            & (Operation.kind == kind)).order_by(Operation.id))
        return ops[count - 1] if len(ops) >= count and ops[count - 1].status in statuses \
            else None
    try:
        return wait_until(check, 60, f"{kind} {'/'.join(statuses)}")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def _rescue_events(events: BillingQueue) -> list[tuple[str, str, str | None]]:
    events.drain()
    return [(e["type"], e["kind"], e.get("reason")) for e in events.received
            if e["type"] in ("service.rescue_on", "service.rescue_off")]


def test_every_change_of_rescue_mode_is_heard_once(settings, sim):
    settings = replace(settings, engine=replace(
        settings.engine, rescue_iso=f"iso:iso/{RESCUE}", max_attempts=2, retry_first_s=0.05,
        retry_max_s=0.1))  # a start Proxmox keeps refusing pauses at once
    events = BillingQueue(settings)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID, client_id=8, product="vps-small", email="r@example.com")
        wait_until(all_ready([SID]), 60, "deploy")
        billing.rescue_on(service_id=SID, idempotency_key="on-1")
        _ended("rescue_on")
        billing.snapshot_create(service_id=SID, name="inrescue")
        _ended("snapshot_create")
        events.wait_for(lambda e: e["type"] == "service.rescue_on", 10, "rescue_on")

        # rescue_off: the boot order is restored, then the start keeps failing; the operator
        # cancels it. The VM boots its disk (the record is cleared): billing hears it left.
        sim.set_faults(error_rate=1.0, error_path=START, error_status=503,
                       error_message="start failed: QEMU exited with code 1")
        try:
            billing.rescue_off(service_id=SID, idempotency_key="off-1")
            op = _ended("rescue_off", ("paused", "failed"))
            if op.status == "paused":
                assert "cancelled" in admin.cancel(settings, f"op:{op.id}").lower()
        finally:
            sim.set_faults()
        assert Service.get_by_id(SID).rescue_before is None
        off = events.wait_for(lambda e: e["type"] == "service.rescue_off", 10, "rescue_off")
        assert off["kind"] == "rescue_off" and "boots its disk" in off["reason"], off

        # the rollback to the snapshot taken in rescue brings rescue mode back
        billing.snapshot_rollback(service_id=SID, name="inrescue")
        _ended("snapshot_rollback")
        assert Service.get_by_id(SID).rescue_before is not None
        back = events.wait_for(lambda e: e["type"] == "service.rescue_on"
                               and e["kind"] == "snapshot_rollback", 10, "rescue from rollback")
        assert "config taken in rescue mode" in back["reason"] and back["snapshot"] == "inrescue"

        billing.rescue_off(service_id=SID, idempotency_key="off-2")
        _ended("rescue_off", ("done",), 2)
        # rescue_on whose start fails after the boot step: the VM is in rescue mode
        sim.set_faults(error_rate=1.0, error_path=START, error_status=503,
                       error_message="start failed: QEMU exited with code 1")
        try:
            billing.rescue_on(service_id=SID, idempotency_key="on-2")
            op = _ended("rescue_on", ("paused", "failed"), 2)
            if op.status == "paused":
                admin.cancel(settings, f"op:{op.id}")
        finally:
            sim.set_faults()
        assert Service.get_by_id(SID).rescue_before is not None
        events.wait_for(lambda e: e["type"] == "service.rescue_on" and bool(e.get("reason"))
                        and e["idempotency_key"] == "on-2", 10, "rescue from a failed on")
    heard = _rescue_events(events)
    assert heard == [
        ("service.rescue_on", "rescue_on", None),
        ("service.rescue_off", "rescue_off", heard[1][2]),
        ("service.rescue_on", "snapshot_rollback", heard[2][2]),
        ("service.rescue_off", "rescue_off", None),
        ("service.rescue_on", "rescue_on", heard[4][2]),
    ], heard  # each change once, in order
    assert all(h[2] for h in (heard[1], heard[2], heard[4]))
    for e in events.received:  # each as its shipped schema says
        if e["type"] in ("service.rescue_on", "service.rescue_off"):
            model = ServiceRescueOn if e["type"] == "service.rescue_on" else ServiceRescueOff
            model.model_validate(e)
    events.close()
