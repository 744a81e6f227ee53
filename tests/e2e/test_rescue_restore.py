"""Rescue mode against what brings an old VM config back (steps run against pvesim, orders
through intake on MariaDB): a snapshot or backup taken while the VM was in rescue holds the
rescue ISO and its boot order; rolling back to it or restoring it later leaves the service in
rescue mode, said so in its row (so the view says ``rescue`` and rescue_off boots the disk
again), not a VM that boots the rescue system while the engine refuses rescue_off."""

from __future__ import annotations

import json
from dataclasses import replace

from producers.events import (
    BackupCreateEvent,
    BackupRestoreEvent,
    CreateEvent,
    RescueOffEvent,
    RescueOnEvent,
    SnapshotCreateEvent,
    SnapshotRollbackEvent,
)
from pvekvm.models import Backup, Operation, Service
from steps import pvecfg
from steps.lifecycle import boot_order
from steps.machines import DEPLOY, MACHINES
from tests.e2e.test_idempotent_steps import _run
from workers.intake import handle_order

SID = 9230
RESCUE = "iso:iso/systemrescue-11.02-amd64.iso"


def _order(engine, event) -> None:
    assert handle_order(event.to_json(), engine).dead_reason is None


def _complete(settings, kind: str) -> None:
    op = Operation.get((Operation.service_id == SID) & (Operation.kind == kind)
                       & (Operation.status != "done"))
    for t in MACHINES[kind].transitions:
        _run(settings, op, t.run)
    Operation.update(status="done", active_service=None).where(Operation.id == op.id).execute()


def _boots_rescue(sim) -> bool:
    cfg = sim.vm(Service.get_by_id(SID).vmid)["config"]
    return any(pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") == RESCUE
               and boot_order(cfg)[:1] == [slot] for slot in ("ide2", "ide3"))


def _deployed(settings):
    engine = replace(settings.engine, rescue_iso=RESCUE)
    settings = replace(settings, engine=engine)
    _order(engine, CreateEvent(service_id=SID, client_id=4, product="vps-small",
                               email="r@example.com"))
    deploy = Operation.get(Operation.service_id == SID)
    for t in DEPLOY.transitions:
        _run(settings, deploy, t.run)
    Operation.update(status="done", active_service=None).where(Operation.id == deploy.id).execute()
    Service.update(status="ready").where(Service.id == SID).execute()
    return settings, engine


def test_a_snapshot_or_backup_taken_in_rescue_brings_rescue_mode_back_as_such(settings, sim,
                                                                              sink):
    settings, engine = _deployed(settings)
    disk_boot = sim.vm(Service.get_by_id(SID).vmid)["config"].get("boot")

    _order(engine, RescueOnEvent(service_id=SID, idempotency_key="on-1"))
    _complete(settings, "rescue_on")
    # in rescue the client may still snapshot and back up (its disks are what it rescues)
    _order(engine, SnapshotCreateEvent(service_id=SID, name="inrescue"))
    _complete(settings, "snapshot_create")
    _order(engine, BackupCreateEvent(service_id=SID))
    _complete(settings, "backup_create")
    _order(engine, RescueOffEvent(service_id=SID, idempotency_key="off-1"))
    _complete(settings, "rescue_off")
    assert not _boots_rescue(sim) and Service.get_by_id(SID).rescue_before is None

    for back, kind, key in ((SnapshotRollbackEvent(service_id=SID, name="inrescue"),
                             "snapshot_rollback", "2"),
                            (BackupRestoreEvent(service_id=SID, backup_id=Backup.get(
                                Backup.service_id == SID).id), "restore", "3")):
        _order(engine, back)
        _complete(settings, kind)
        assert _boots_rescue(sim), kind  # PVE brought the rescue config back
        assert Service.get_by_id(SID).rescue_before is not None, \
            f"{kind}: the VM boots the rescue ISO, the service says it is not in rescue"
        _order(engine, RescueOffEvent(service_id=SID, idempotency_key=f"off-{key}"))
        _complete(settings, "rescue_off")
        cfg = sim.vm(Service.get_by_id(SID).vmid)["config"]
        assert not _boots_rescue(sim) and RESCUE not in str(cfg), kind
        assert cfg.get("boot") == disk_boot and Service.get_by_id(SID).rescue_before is None


def test_rescue_off_after_a_migrate_that_left_the_clients_iso_behind_boots_the_disk(
        settings, sim, sink):
    """rescue_on replaced a client ISO on the old node's local storage; the VM migrated (the
    rescue ISO is on shared storage, it followed). PVE refuses a CD-ROM of a volume its node
    lacks, so putting that ISO back would fail rescue_off on every try and leave the client in
    rescue for good (reinstall refused): the slot is left empty instead, and said so."""
    settings, engine = _deployed(settings)
    _order(engine, RescueOnEvent(service_id=SID, idempotency_key="on-1"))
    _complete(settings, "rescue_on")
    rescue_before = Service.get_by_id(SID).rescue_before
    assert rescue_before is not None, "rescue_on recorded nothing to put back"
    record = json.loads(rescue_before)
    Service.update(rescue_before=json.dumps({
        **record, "boot": "order=ide3;scsi0", "media": "iso:iso/only-on-pve2.iso,media=cdrom"})
    ).where(Service.id == SID).execute()  # as recorded on the node it came from
    _order(engine, RescueOffEvent(service_id=SID, idempotency_key="off-1"))
    op = Operation.get(Operation.idempotency_key == "off-1")
    results = [_run(settings, op, t.run) for t in MACHINES["rescue_off"].transitions]
    assert any("only-on-pve2.iso is not on node" in r.message for r in results), results
    cfg = sim.vm(Service.get_by_id(SID).vmid)["config"]
    assert cfg[record["slot"]] == "none,media=cdrom" and cfg["boot"] == "order=ide3;scsi0"
    assert sim.vm(Service.get_by_id(SID).vmid)["status"] == "running"
    assert not _boots_rescue(sim) and Service.get_by_id(SID).rescue_before is None
