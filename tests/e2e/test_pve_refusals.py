"""Permanent Proxmox answers are refusals, not faults: what PVE refuses for good fails the
operation at once with PVE's reason (operation.failed to billing, service freed, the next
operation runs); what intake can check without Proxmox (PVE's snapshot-name rules) it refuses
before; a lock, a timeout or a 5xx from the network is still retried."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from producers.api import OrderClient
from producers.events import InvalidEvent, parse_event
from pvekvm.config import ProxmoxSettings
from pvekvm.models import Backup, DeadLetter, Operation, Service, Snapshot
from pvekvm.proxmox import Proxmox, ProxmoxError, task_failure
from pvekvm.pveerrors import RULES, Kind, classify
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
)

SNAPSHOT_POST = r"^POST /nodes/[^/]+/qemu/\d+/snapshot$"
RESERVED = "unable to use snapshot name 'current' (reserved name)"


@pytest.fixture()
def billing_queue(settings) -> Iterator[BillingQueue]:
    q = BillingQueue(settings)
    yield q
    q.close()


# --- the table: each rule's example (PVE's own text) lands in its class -------------------------

@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind.value}:{r.example[:40]}")
def test_each_rule_of_the_table_classifies_its_pve_text(rule):
    status = min(rule.statuses) if rule.statuses else 500
    assert classify(status, rule.example) is rule.kind


@pytest.mark.parametrize(("status", "message", "kind"), [
    (500, "VM is locked (snapshot)", Kind.TRANSIENT),           # a lock ends
    (500, "VM is locked (backup) snapshot 'x' does not exist", Kind.TRANSIENT),  # lock wins
    (503, "Service Unavailable", Kind.TRANSIENT),
    (595, "No route to host", Kind.TRANSIENT),
    (596, "Connection timed out", Kind.TRANSIENT),
    (500, "got an unexpected answer", Kind.TRANSIENT),          # an unknown 500 is retried
    (400, "Parameter verification failed.", Kind.REFUSAL),
    (500, "unable to use snapshot name 'pending' (reserved name)", Kind.REFUSAL),
    (403, "Permission check failed (/vms/100, VM.Snapshot)", Kind.FAULT),  # our token
    (500, "storage 'fast' does not exist", Kind.FAULT),         # our catalog
    (500, "unable to create VM 4321 - VM 4321 already exists on node 'pve2'", Kind.FAULT),
    (500, "Configuration file 'nodes/pve1/qemu-server/4321.conf' does not exist", Kind.FAULT),
])
def test_statuses_and_messages_outside_the_examples(status, message, kind):
    assert classify(status, message) is kind


def test_a_failed_task_is_a_refusal_only_when_its_exitstatus_is_one():
    assert task_failure("snapshot name 'daily' already used").refusal
    assert task_failure("VM is locked (backup)").transient
    assert task_failure("pvesim: injected task failure").transient
    assert task_failure("storage 'fast' does not exist").transient  # retried, then paused


@pytest.mark.parametrize(("name", "refused"), [
    ("current", True), ("pending", True), ("Pending", True), ("PENDING", True),
    ("Current", False), ("vzdump", False), ("a" + "b" * 39, False), ("a" + "b" * 40, True),
    ("9lives", True), ("a", True), ("snap.1", True),
])
def test_intake_takes_pves_snapshot_names_and_only_those(name, refused):
    body = json.dumps({"version": 1, "type": "snapshot_create", "idempotency_key": "k1",
                       "service_id": 1, "name": name})
    if refused:
        with pytest.raises(InvalidEvent, match="field 'name'"):
            parse_event(body)
    else:
        assert parse_event(body).name == name  # type: ignore[attr-defined]


# --- pvesim answers like PVE, and the client sorts the answer -------------------------------

def test_pve_answers_a_reserved_or_malformed_snapshot_name_and_the_client_calls_it_refused(sim):
    pve = Proxmox(ProxmoxSettings.from_connection(sim.connection))
    for name, said in (("current", "'current'"), ("Pending", "'pending'")):
        with pytest.raises(ProxmoxError) as exc:
            pve.post("nodes/pve1/qemu/9000/snapshot", snapname=name)
        assert exc.value.status == 500 and exc.value.refusal and not exc.value.transient
        assert str(exc.value) == f"unable to use snapshot name {said} (reserved name)"
    with pytest.raises(ProxmoxError) as bad:
        pve.post("nodes/pve1/qemu/9000/snapshot", snapname="9lives")
    assert bad.value.status == 400 and bad.value.refusal
    assert str(bad.value).startswith("Parameter verification failed. snapname: invalid format")
    sim.set_faults(lock_timeout_rate=1.0)  # PVE's config lock times out: try again later
    with pytest.raises(ProxmoxError) as locked:
        pve.put("nodes/pve1/qemu/9000/config", description="x")
    assert locked.value.transient and not locked.value.refusal


# --- through the engine: billing event → broker → intake → workers → pvesim → MariaDB --------

def _deploy(billing: OrderClient, sid: int) -> None:
    billing.create(service_id=sid, client_id=7, product="vps-small", email="o@example.com")
    wait_until(all_ready([sid]), 60, f"deploy of {sid}")


def _op(sid: int, kind: str, n: int = 1) -> Operation | None:
    ops = list(Operation.select().where((Operation.service_id == sid) & (Operation.kind == kind))
               .order_by(Operation.id))
    return ops[n - 1] if len(ops) >= n else None


def _op_of(sid: int, kind: str, n: int = 1) -> Operation:
    """The n-th operation of that kind, which the test knows exists."""
    op = _op(sid, kind, n)
    assert op is not None, f"service {sid} has no operation {kind} #{n}"
    return op


def _finished(sid: int, kind: str, n: int = 1):
    return lambda: (op := _op(sid, kind, n)) is not None and op.status in ("done", "failed")


def test_a_snapshot_name_proxmox_reserves_is_refused_at_intake(settings, sim, billing_queue):
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 7301)
        for name in ("current", "PENDING"):  # raw: billing's own client refuses it first
            billing.publish_raw(json.dumps({
                "version": 1, "type": "snapshot_create", "idempotency_key": f"snap-{name}",
                "service_id": 7301, "name": name}).encode(), "order.snapshot_create")
        refused = [billing_queue.wait_for(
            lambda e, n=name: e["type"] == "event.refused" and n in e["reason"], 30,
            f"event.refused for {name}") for name in ("current", "PENDING")]
        with pytest.raises(ValueError, match="Proxmox reserves"):  # billing's client too
            billing.snapshot_create(service_id=7301, name="current")
    assert all("snapshot name Proxmox reserves" in e["reason"] for e in refused)
    assert DeadLetter.select().where(DeadLetter.reason.contains("Proxmox reserves")).count() == 2
    assert _op(7301, "snapshot_create") is None


def test_a_proxmox_refusal_fails_at_once_and_the_next_operation_runs(settings, sim,
                                                                     billing_queue):
    """The issue's case: PVE's reserved-name 500 (and a 400 parameter verification failure) on
    the snapshot POST. No retry, failed with PVE's reason, operation.failed to billing; the
    suspend queued behind it runs without an operator."""
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 7302)
        vmid = Service.get_by_id(7302).vmid
        sim.set_faults(error_rate=1.0, error_path=SNAPSHOT_POST, error_message=RESERVED)
        billing.snapshot_create(service_id=7302, name="nightly")
        wait_until(_finished(7302, "snapshot_create"), 30, describe_ops([7302]))
        sim.set_faults(error_rate=1.0, error_path=SNAPSHOT_POST, error_status=400,
                       error_message="Parameter verification failed.",
                       error_errors={"snapname": "value may only be 40 characters long"})
        billing.snapshot_create(service_id=7302, name="weekly")
        billing.suspend(service_id=7302, idempotency_key=uuid.uuid4().hex)
        wait_until(lambda: Service.get_by_id(7302).status == "suspended", 30,
                   describe_ops([7302]))
        failed = [billing_queue.wait_for(
            lambda e, n=n: e["type"] == "operation.failed" and e["operation_id"] == _op_of(
                7302, "snapshot_create", n).id, 30, "operation.failed") for n in (1, 2)]
    first, second = _op_of(7302, "snapshot_create", 1), _op_of(7302, "snapshot_create", 2)
    assert first.status == second.status == "failed"
    assert first.error == f"Proxmox refused: {RESERVED}" and first.attempt == 0
    assert second.error == ("Proxmox refused: Parameter verification failed. "
                            "snapname: value may only be 40 characters long")
    assert second.attempt == 0 and first.active_service is None is second.active_service
    assert [e["reason"] for e in failed] == [first.error, second.error]
    assert sim.vm(vmid)["snapshots"] == {} and sim.vm(vmid)["status"] == "stopped"


def test_a_locked_vm_is_still_retried_and_the_snapshot_then_made(settings, sim):
    settings = replace(settings, engine=replace(settings.engine, retry_first_s=0.1))
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 7303)
        vmid = Service.get_by_id(7303).vmid
        sim.set_faults(error_rate=1.0, error_path=SNAPSHOT_POST,
                       error_message="VM is locked (backup)")
        billing.snapshot_create(service_id=7303, name="nightly")
        wait_until(lambda: (op := _op(7303, "snapshot_create")) is not None and op.attempt >= 2,
                   30, describe_ops([7303]))
        assert _op_of(7303, "snapshot_create").status == "running"
        sim.set_faults()
        wait_until(_finished(7303, "snapshot_create"), 30, describe_ops([7303]))
    assert _op_of(7303, "snapshot_create").status == "done"
    assert "nightly" in sim.vm(vmid)["snapshots"]


def test_a_snapshot_of_that_name_this_order_did_not_make_is_refused_not_adopted(settings, sim):
    """"Already exists" of a different owner: an operator's snapshot of the same name is not
    recorded as the client's (a later rollback or delete would act on it); the order fails."""
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 7304)
        svc = Service.get_by_id(7304)
        vm = sim.proxmox().nodes(svc.node).qemu(svc.vmid)
        sim.wait_task(vm.snapshot.post(snapname="nightly", description="operator's"))
        billing.snapshot_create(service_id=7304, name="nightly")
        billing.snapshot_create(service_id=7304, name="mine")
        wait_until(_finished(7304, "snapshot_create", 2), 30, describe_ops([7304]))
    theirs, mine = _op_of(7304, "snapshot_create", 1), _op_of(7304, "snapshot_create", 2)
    assert theirs.status == "failed" and theirs.error is not None
    assert "nightly already exists on Proxmox" in theirs.error
    assert mine.status == "done"
    assert [s.name for s in Snapshot.select().where(Snapshot.service_id == 7304)] == ["mine"]
    assert sim.vm(svc.vmid)["snapshots"]["nightly"]["description"] == "operator's"


def test_a_restore_of_a_backup_gone_from_proxmox_is_refused_and_the_next_runs(settings, sim):
    """A volume not found is permanent: the restore step finds the archive missing from the
    storage's content (PVE would answer 500 "can't find file", a refusal too) and fails the
    restore at once saying so; the gone backup leaves the list; the suspend behind it runs."""
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 7305)
        billing.backup_create(service_id=7305)
        wait_until(lambda: Backup.get_or_none(Backup.service_id == 7305), 30, "the backup")
        backup = Backup.get(Backup.service_id == 7305)
        storage = sim.proxmox().nodes(backup.node).storage(backup.storage)
        storage.content(backup.volid).delete()  # gone behind our back (an operator, a disk)
        wait_until(lambda: not storage.content.get(content="backup"), 10, "the volume to go")
        billing.backup_restore(service_id=7305, backup_id=backup.id)
        billing.suspend(service_id=7305, idempotency_key=uuid.uuid4().hex)
        wait_until(lambda: Service.get_by_id(7305).status == "suspended", 30,
                   describe_ops([7305]))
    restore = _op_of(7305, "restore")
    assert restore.status == "failed" and restore.attempt == 0 and restore.error is not None
    assert restore.error.startswith(f"backup {backup.id} is gone from storage {backup.storage}")
    assert Backup.get_or_none(Backup.id == backup.id) is None
