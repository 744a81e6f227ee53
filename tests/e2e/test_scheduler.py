"""The periodic jobs: snapshot expiry, randomised backup schedules, the reconciler."""

from __future__ import annotations

from datetime import datetime, timedelta

from producers.api import OrderClient
from pvekvm import messaging
from pvekvm.models import Backup, BackupSchedule, Operation, Service, Snapshot
from workers import scheduler
from workers.testing.harness import InProcessWorkers, all_ready, wait_until

SID = 7070


def _publisher(settings) -> messaging.Publisher:
    return messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))


def _done(kind: str) -> int:
    return Operation.select().where((Operation.kind == kind)
                                    & (Operation.status == "done")).count()


def test_expired_snapshots_are_deleted_and_scheduled_backups_run_once_a_day(settings, sim):
    pub = _publisher(settings)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID, client_id=1, product="vps-small", email="s@example.com")
        wait_until(all_ready([SID]), 60, "deploy")
        vmid = Service.get_by_id(SID).vmid
        billing.snapshot_create(service_id=SID, name="old")
        billing.snapshot_create(service_id=SID, name="fresh")
        wait_until(lambda: Snapshot.select().count() == 2, 30, "two snapshots")
        Snapshot.update(expires_at=datetime.now() - timedelta(minutes=1)).where(
            Snapshot.name == "old").execute()
        assert scheduler.expire_snapshots_once(pub) == 1
        assert scheduler.expire_snapshots_once(pub) == 0  # one deletion per snapshot
        wait_until(lambda: _done("snapshot_delete") == 1, 30, "expired snapshot deleted")
        assert set(sim.vm(vmid)["snapshots"]) == {"fresh"}

        now = datetime(2026, 11, 25, 14, 0)  # a Wednesday
        billing.backup_schedule(service_id=SID, days=["wed", "sat"])
        sched = wait_until(lambda: BackupSchedule.get_or_none(service_id=SID), 10, "schedule")
        assert sched.days == "wed,sat" and 0 <= sched.minute_of_day < 1440
        BackupSchedule.update(minute_of_day=13 * 60).execute()
        assert scheduler.run_backup_schedules_once(pub, now - timedelta(hours=2)) == 0  # not yet
        assert scheduler.run_backup_schedules_once(pub, now) == 1
        assert scheduler.run_backup_schedules_once(pub, now + timedelta(hours=1)) == 0  # once
        assert scheduler.run_backup_schedules_once(pub, now + timedelta(days=1)) == 0  # not thu
        wait_until(lambda: _done("backup_create") == 1, 30, "scheduled backup")
        assert Backup.get(Backup.service_id == SID).scheduled
        # a full slot rotates: the package keeps 2, the third scheduled one drops the oldest
        assert scheduler.run_backup_schedules_once(pub, now + timedelta(days=3)) == 1  # sat
        wait_until(lambda: _done("backup_create") == 2, 30, "second scheduled backup")
        first = Backup.select().order_by(Backup.created_at).first().id
        assert scheduler.run_backup_schedules_once(pub, now + timedelta(days=7)) == 1
        wait_until(lambda: _done("backup_create") == 3, 30, "third scheduled backup")
    pub.close()
    kept = [b.id for b in Backup.select()]
    assert len(kept) == 2 and first not in kept


def test_the_reconciler_renudges_an_operation_whose_message_was_lost(settings):
    with OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID + 1, client_id=1, product="vps-small",
                       email="r@example.com")
        with InProcessWorkers(settings, concurrency=2, pools=["intake"]):
            wait_until(lambda: Operation.get_or_none(service_id=SID + 1), 10, "intake")
    messaging.purge(settings.amqp_url, messaging.Topology(settings.namespace))  # nudge lost
    Operation.update(updated_at=datetime.now() - timedelta(minutes=5)).execute()
    pub = _publisher(settings)
    assert scheduler.reconcile_once(settings, pub) == 1
    pub.close()
    with InProcessWorkers(settings, concurrency=4):
        wait_until(all_ready([SID + 1]), 60, "deploy after the re-nudge")


def test_the_reconciler_starts_a_queued_operation_left_without_a_runner(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID + 2, client_id=1, product="vps-small",
                       email="q@example.com")
        wait_until(all_ready([SID + 2]), 60, "deploy")
        # as if the worker finishing the deploy died before starting the next one
        op = Operation.create(service_id=SID + 2, kind="snapshot_create", idempotency_key="orph",
                              params='{"name": "orphan"}', state="snapshot_create",
                              status="queued")
        pub = _publisher(settings)
        assert scheduler.reconcile_once(settings, pub) == 1
        pub.close()
        wait_until(lambda: Operation.get_by_id(op.id).status == "done", 30, "queued op ran")
    assert "orphan" in sim.vm(Service.get_by_id(SID + 2).vmid)["snapshots"]


def test_a_backup_the_storage_pruned_leaves_the_list_and_billing_hears_it(settings, sim):
    """The backup list follows the storage: a pruned archive is forgotten once (billing hears
    backup.gone) and never offered again; a storage that cannot be listed forgets nothing."""
    from pvekvm import proxmox
    from workers import backup_sync
    from workers.testing.harness import BillingQueue

    sid = 7071
    queue = BillingQueue(settings, "backup.#")
    pub = _publisher(settings)
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=sid, client_id=1, product="vps-small", email="s@x.example")
            wait_until(all_ready([sid]), 60, "deploy")
            for note in ("kept", "pruned"):
                billing.backup_create(service_id=sid, note=note)
                def backed_up(n: str = note) -> Backup | None:
                    return Backup.get_or_none(note=n)
                wait_until(backed_up, 30, f"backup {note}")
        kept, pruned = (Backup.get(note=n) for n in ("kept", "pruned"))
        pve = proxmox.client(settings.proxmox)
        sim.proxmox().nodes(pruned.node).storage(pruned.storage).content(pruned.volid).delete()
        sim.set_faults(error_rate=1.0, error_path="storage/.*/content")
        failed = backup_sync.run_once(pve, pub)
        assert failed.errors and failed.gone == [] and Backup.select().count() == 2
        sim.set_faults()
        result = backup_sync.run_once(pve, pub)
        assert result.gone == [pruned.id] and result.checked == 2
        assert [b.id for b in Backup.select()] == [kept.id]
        gone = queue.wait_for(lambda e: e["type"] == "backup.gone", 10, "backup.gone")
        assert (gone["service_id"], gone["backup_id"], gone["note"]) == (sid, pruned.id,
                                                                         "pruned")
        assert backup_sync.run_once(pve, pub).gone == []  # once
        assert len([e for e in queue.drain() if e["type"] == "backup.gone"]) == 1
    finally:
        queue.close()
        pub.close()
