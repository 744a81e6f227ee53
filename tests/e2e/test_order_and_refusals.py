"""Lifecycle correctness through the real path (billing event → RabbitMQ → intake → workers →
pvesim/MariaDB): per-service order, refusals that never hold a service, operator cancel, and
suspension that holds."""

from __future__ import annotations

import uuid
from dataclasses import replace

from producers.api import OrderClient
from pvekvm import messaging
from pvekvm.models import Backup, DeadLetter, HeldEvent, Operation, Product, Service
from workers import admin
from workers.scheduler import refuse_expired_held
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until


def key() -> str:
    return uuid.uuid4().hex


def _status(sid: int) -> str | None:
    svc = Service.get_or_none(Service.id == sid)
    return svc.status if svc else None


def _ops(sid: int) -> list[Operation]:
    return list(Operation.select().where(Operation.service_id == sid).order_by(Operation.id))


def _settled(sid: int, count: int):
    """``count`` operations of the service exist and none is unfinished."""
    def check() -> bool:
        ops = _ops(sid)
        return len(ops) >= count and all(o.status in ("done", "failed", "cancelled")
                                         for o in ops)
    return check


def _refusal(text: str):
    return lambda: DeadLetter.select().where(DeadLetter.reason.contains(text)).first()


def _deploy(billing: OrderClient, sid: int) -> Service:
    billing.create(service_id=sid, client_id=7, product="vps-small", email="o@example.com")
    wait_until(all_ready([sid]), 60, f"deploy of {sid}")
    return Service.get_by_id(sid)


# --- order of events per service ---------------------------------------------------------------

def test_create_then_terminate_at_once_leaves_no_vm(settings, sim):
    """A cancelled order: terminate published milliseconds after create, four intake threads."""
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in (7101, 7102, 7103):
            billing.create(service_id=sid, client_id=7, product="vps-small",
                           email="o@example.com")
            billing.terminate(service_id=sid)
        for sid in (7101, 7102, 7103):
            def terminated(s: int = sid) -> bool:
                return _status(s) == "terminated"
            wait_until(terminated, 60, f"{sid} terminated: {describe_ops([sid])}")
        assert [o.kind for o in _ops(7101)] == ["deploy", "terminate"]
    assert sim.proxmox().cluster.resources.get(type="vm") == [] or all(
        r.get("template") for r in sim.proxmox().cluster.resources.get(type="vm"))
    assert DeadLetter.select().count() == 0


def test_suspend_then_unsuspend_at_once_ends_running(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        svc = _deploy(billing, 7110)
        billing.suspend(service_id=7110, idempotency_key=key())
        billing.unsuspend(service_id=7110, idempotency_key=key())
        wait_until(_settled(7110, 3), 60, "suspend and unsuspend")
        svc = Service.get_by_id(7110)
        assert [o.kind for o in _ops(7110)] == ["deploy", "suspend", "unsuspend"]
        assert svc.status == "ready" and not svc.suspended
        assert sim.vm(svc.vmid)["status"] == "running"


def test_many_actions_run_in_the_order_published(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        svc = _deploy(billing, 7120)
        actions = ["stop", "start", "stop", "start", "reboot", "stop"]
        for action in actions:
            billing.power(service_id=7120, action=action, idempotency_key=key())
        wait_until(_settled(7120, 1 + len(actions)), 60, "power actions")
        import json

        ran = [json.loads(o.params)["action"] for o in _ops(7120) if o.kind == "power"]
        assert ran == actions
        assert all(o.status == "done" for o in _ops(7120))
        assert sim.vm(svc.vmid)["status"] == "stopped"  # the last one published


def test_an_event_before_its_create_waits_for_it(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.terminate(service_id=7130)
        wait_until(lambda: HeldEvent.get_or_none(HeldEvent.service_id == 7130), 30,
                   "the terminate to be held")
        billing.create(service_id=7130, client_id=7, product="vps-small", email="o@example.com")
        wait_until(lambda: _status(7130) == "terminated", 60,
                   f"create then the held terminate: {describe_ops([7130])}")
        assert [o.kind for o in _ops(7130)] == ["deploy", "terminate"]
        assert HeldEvent.select().count() == 0


def test_an_event_for_a_service_that_never_comes_is_refused_after_the_hold(settings):
    settings = replace(settings, engine=replace(settings.engine, hold_unknown_service_s=0.5))
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.suspend(service_id=7140)
        held = wait_until(lambda: HeldEvent.get_or_none(HeldEvent.service_id == 7140), 30,
                          "the suspend to be held")
        assert held.received_at is not None and held.expires_at > held.received_at
        pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
        try:
            wait_until(lambda: refuse_expired_held(pub), 10, "the hold to expire")
        finally:
            pub.close()
        dead = DeadLetter.get(DeadLetter.source == "intake")
        assert "unknown service 7140" in dead.reason and b'"suspend"' in bytes(dead.body)
        assert Operation.select().count() == 0 and HeldEvent.select().count() == 0


# --- refusals never hold a service ------------------------------------------------------------

def test_a_refused_action_is_recorded_and_later_events_still_run(settings, sim):
    Product.update(snapshot_limit=1).execute()
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        svc = _deploy(billing, 7150)
        billing.snapshot_create(service_id=7150, name="one")
        billing.snapshot_create(service_id=7150, name="two")       # over the limit
        billing.snapshot_rollback(service_id=7150, name="never")   # unknown snapshot
        billing.backup_restore(service_id=7150, backup_id=99999)   # not this service's
        billing.suspend(service_id=7150, idempotency_key=key())
        wait_until(lambda: _status(7150) == "suspended", 60, describe_ops([7150]))
        reasons = [d.reason for d in DeadLetter.select().order_by(DeadLetter.id)]
        assert any("snapshot limit reached (1/1)" in r for r in reasons), reasons
        rollback = next(o for o in _ops(7150) if o.kind == "snapshot_rollback")
        assert rollback.status == "failed" and rollback.error is not None
        assert "snapshot never does not exist" in rollback.error
        assert any("backup 99999 does not belong" in r for r in reasons), reasons
        assert sim.vm(svc.vmid)["status"] == "stopped"


def test_a_step_refusal_fails_at_once_and_frees_the_service(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        svc = _deploy(billing, 7160)
        billing.iso_mount(service_id=7160, iso="no-such-image.iso")   # checked on Proxmox
        billing.terminate(service_id=7160)
        wait_until(lambda: _status(7160) == "terminated", 60, describe_ops([7160]))
        mount = next(o for o in _ops(7160) if o.kind == "iso_mount")
        assert mount.status == "failed" and mount.error is not None
        assert "not found on storage" in mount.error
        assert mount.active_service is None
        assert sim.vm(svc.vmid) is None


def test_cancel_frees_a_paused_service_and_says_where_the_vm_is(settings, sim):
    settings = replace(settings, engine=replace(settings.engine, max_attempts=1))
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        svc = _deploy(billing, 7170)
        sim.set_faults(task_error_rate=1.0)
        billing.snapshot_create(service_id=7170, name="doomed")
        wait_until(lambda: Operation.get_or_none((Operation.service_id == 7170)
                                                 & (Operation.status == "paused")), 60,
                   "the snapshot to pause")
        billing.terminate(service_id=7170)
        wait_until(lambda: Operation.get_or_none((Operation.service_id == 7170)
                                                 & (Operation.kind == "terminate")), 30,
                   "the terminate to queue")
        assert _status(7170) == "ready"
        sim.set_faults()
        out = admin.cancel(settings, "7170")
        assert "Snapshot cancelled: service=7170 at (snapshot_create)" in out
        assert f"VM {svc.vmid} on {svc.node}: running" in out
        wait_until(lambda: _status(7170) == "terminated", 60, describe_ops([7170]))
        snap = next(o for o in _ops(7170) if o.kind == "snapshot_create")
        assert snap.status == "cancelled" and snap.error is not None
        assert "cancelled by operator" in snap.error
        assert "no paused operation" in admin.cancel(settings, "7170")


def test_a_paused_restore_is_resumed_without_a_second_restore(settings, sim):
    settings = replace(settings, engine=replace(settings.engine, max_attempts=1))
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 7180)
        billing.backup_create(service_id=7180)
        wait_until(lambda: Backup.get_or_none(Backup.service_id == 7180), 60, "the backup")
        backup = Backup.get(Backup.service_id == 7180)
        sim.set_faults(task_error_rate=1.0)
        billing.backup_restore(service_id=7180, backup_id=backup.id, idempotency_key=key())
        wait_until(lambda: Operation.get_or_none((Operation.service_id == 7180)
                                                 & (Operation.status == "paused")), 60,
                   "the restore to pause")
        billing.backup_restore(service_id=7180, backup_id=backup.id, idempotency_key=key())
        wait_until(_refusal("already pending"), 30, "the second restore to be refused")
        sim.set_faults()
        assert "resumed" in admin.resume(settings, "7180")
        wait_until(_settled(7180, 3), 60, describe_ops([7180]))
        assert [o.kind for o in _ops(7180)] == ["deploy", "backup_create", "restore"]
        assert _status(7180) == "ready"


# --- suspension holds ----------------------------------------------------------------------

def test_nothing_starts_a_suspended_vm(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        svc = _deploy(billing, 7190)
        billing.suspend(service_id=7190, idempotency_key=key())
        billing.reset_password(service_id=7190, idempotency_key=key())  # behind the suspend
        wait_until(lambda: _status(7190) == "suspended", 60, describe_ops([7190]))
        billing.power(service_id=7190, action="start", idempotency_key=key())
        billing.reinstall(service_id=7190, idempotency_key=key())
        billing.change_package(service_id=7190, product="vps-large")
        wait_until(_settled(7190, 3), 60, describe_ops([7190]))
        wait_until(lambda: DeadLetter.select().count() >= 3, 30, "three refusals")
        reasons = [d.reason for d in DeadLetter.select()]
        assert all("is suspended" in r for r in reasons), reasons
        assert [o.kind for o in _ops(7190)] == ["deploy", "suspend", "change_package"]
        svc = Service.get_by_id(7190)
        assert svc.status == "suspended" and svc.suspended
        assert svc.product_id == Product.get(name="vps-large").id
        assert sim.vm(svc.vmid)["status"] == "stopped"
        assert int(sim.vm(svc.vmid)["config"]["cores"]) == 4

        billing.unsuspend(service_id=7190, idempotency_key=key())
        wait_until(lambda: _status(7190) == "ready", 60, describe_ops([7190]))
        assert sim.vm(svc.vmid)["status"] == "running"
