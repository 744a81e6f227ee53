"""``python -m workers.scheduler``: the periodic jobs (APScheduler 3.x).

- reconcile: re-nudge running operations that made no progress for ``stale_after_s`` (a nudge
  lost with a broker or a dead-lettered message), and publish nudges whose confirm never
  arrived. The nudge id is the operation's live one, so a re-nudge can never fork an operation.
- dns_retry: bring DNS of services with unsynced records in step (non-blocking DNS steps leave
  them owed when a provider was down).
- snapshots_and_backups (every minute): delete snapshots past their package lifetime; start
  today's scheduled backups once their random time of day has passed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import datetime, timedelta

from apscheduler.schedulers.blocking import BlockingScheduler

from producers.events import WEEKDAYS
from pvekvm import dns, dnssync, messaging, preflight
from pvekvm.config import Settings
from pvekvm.db import bind
from pvekvm.models import BackupSchedule, Operation, Service, Snapshot, database
from workers.engine import mark_published, nudge_for, start_next_queued
from workers.intake import start_operation

log = logging.getLogger("pvekvm.scheduler")


def reconcile_once(settings: Settings, publisher: messaging.Publisher,
                   now: datetime | None = None) -> int:
    now = now or datetime.now()
    stale = now - timedelta(seconds=settings.engine.stale_after_s)
    unconfirmed = now - timedelta(seconds=5)
    ops = list(Operation.select().where(
        (Operation.status == "running") & Operation.nudge_id.is_null(False)
        & ((Operation.updated_at < stale)
           | (~Operation.nudge_published & (Operation.updated_at < unconfirmed)))))
    sent = 0
    for op in ops:
        nudge = nudge_for(op)
        if nudge is None:
            continue
        publisher.publish_step(nudge.pool, nudge.payload(), nudge.nudge_id)
        mark_published(op.id, nudge.nudge_id)
        Operation.update(updated_at=datetime.now()).where(
            (Operation.id == op.id) & (Operation.nudge_id == nudge.nudge_id)).execute()
        log.info("sid:%s re-nudged %s at (%s)", op.service_id, op.kind, op.state)
        sent += 1
    return sent + _start_orphaned_queues(publisher)


def _start_orphaned_queues(publisher: messaging.Publisher) -> int:
    """A queued operation whose service has none running starts (normally the finishing
    operation starts it; this covers a crash in between)."""
    active = Operation.select(Operation.active_service).where(
        Operation.active_service.is_null(False))
    waiting = (Operation.select(Operation.service_id).distinct()
               .where((Operation.status == "queued") & Operation.service_id.not_in(active)))
    started = 0
    for row in list(waiting):
        with database.atomic():
            nudge = start_next_queued(row.service_id)
        if nudge is not None:
            publisher.publish_step(nudge.pool, nudge.payload(), nudge.nudge_id)
            mark_published(nudge.operation_id, nudge.nudge_id)
            started += 1
    return started


def dns_retry_once(settings: Settings) -> int:
    fixed = 0
    for sid in dnssync.owed_services():
        svc = Service.get_or_none(Service.id == sid)
        if svc is None:
            continue
        try:
            if svc.status == "terminated":
                dnssync.withdraw(svc, settings.secret_key_file)
            else:
                dnssync.publish(svc, settings.secret_key_file)
            fixed += 1
            log.info("sid:%s DNS now in step", sid)
        except (dns.DnsError, ValueError) as exc:
            log.warning("sid:%s DNS still failing: %s", sid, exc)
    return fixed


def _submit(publisher: messaging.Publisher, service_id: int, kind: str, key: str,
            params: dict) -> bool:
    """Start an operation unless one with this key exists (jobs are idempotent per key)."""
    if Operation.get_or_none(Operation.idempotency_key == key) is not None:
        return False
    with database.atomic():
        outcome = start_operation(service_id, kind, key, params)
    for line in outcome.log:
        log.info("%s", line)
    for nudge in outcome.publish:
        publisher.publish_step(nudge.pool, nudge.payload(), nudge.nudge_id)
    if outcome.mark_published:
        mark_published(*outcome.mark_published)
    return True


def expire_snapshots_once(publisher: messaging.Publisher, now: datetime | None = None) -> int:
    """Snapshots past their package lifetime are deleted (one operation each)."""
    now = now or datetime.now()
    started = 0
    for snap in Snapshot.select().where(Snapshot.expires_at < now):
        svc = Service.get_or_none(Service.id == snap.service_id)
        if svc is None or svc.status in ("terminated", "terminating"):
            continue
        key = f"expire:{snap.service_id}:{snap.name}:{snap.created_at:%Y%m%d%H%M%S}"
        started += _submit(publisher, snap.service_id, "snapshot_delete", key,
                           {"name": snap.name})
    return started


def run_backup_schedules_once(publisher: messaging.Publisher,
                              now: datetime | None = None) -> int:
    """The manual's rule: today's entry is due once its random time has passed; one scheduled
    backup per service and day; a full backup slot rotates out the oldest (in the step)."""
    now = now or datetime.now()
    today = WEEKDAYS[now.weekday()]
    minute = now.hour * 60 + now.minute
    started = 0
    for sched in BackupSchedule.select().where(BackupSchedule.minute_of_day <= minute):
        if today not in sched.days.split(","):
            continue
        svc = Service.get_or_none(Service.id == sched.service_id)
        if svc is None or svc.status != "ready":
            continue
        key = f"sched-backup:{sched.service_id}:{now:%Y-%m-%d}"
        started += _submit(publisher, sched.service_id, "backup_create", key,
                           {"scheduled": True, "note": f"scheduled {now:%Y-%m-%d}"})
    return started


def build(settings: Settings, scheduler_class: type = BlockingScheduler):
    """The scheduler with every job added (BlockingScheduler for the CLI; tests pass
    BackgroundScheduler)."""
    sched = scheduler_class()
    topo = messaging.Topology(settings.namespace)

    def reconcile() -> None:
        database.connect(reuse_if_open=True)
        publisher = messaging.Publisher(settings.amqp_url, topo)  # short-lived: no idle socket
        try:
            reconcile_once(settings, publisher)
        finally:
            publisher.close()

    def dns_retry() -> None:
        database.connect(reuse_if_open=True)
        dns_retry_once(settings)

    def periodic() -> None:
        database.connect(reuse_if_open=True)
        publisher = messaging.Publisher(settings.amqp_url, topo)
        try:
            expire_snapshots_once(publisher)
            run_backup_schedules_once(publisher)
        finally:
            publisher.close()

    sched.add_job(periodic, "interval", seconds=60, id="snapshots_and_backups",
                  max_instances=1, coalesce=True)
    interval = max(1.0, settings.engine.stale_after_s / 3)
    sched.add_job(reconcile, "interval", seconds=interval, id="reconcile", max_instances=1,
                  coalesce=True)
    sched.add_job(dns_retry, "interval", seconds=60, id="dns_retry", max_instances=1,
                  coalesce=True)
    return sched


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.scheduler", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    settings = preflight.settings_or_exit(args.config, "python -m workers.scheduler")
    preflight.require(settings, ("database", "broker"), "python -m workers.scheduler")
    bind(settings.database_url)
    messaging.declare(settings.amqp_url, messaging.Topology(settings.namespace))
    sched = build(settings)
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    sched.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
