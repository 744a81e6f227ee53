"""``python -m workers.scheduler``: the periodic jobs (APScheduler 3.x).

- reconcile: re-nudge running operations that made no progress for ``stale_after_s`` (a nudge
  lost with a broker or a dead-lettered message), and publish nudges whose confirm never
  arrived. The nudge id is the operation's live one, so a re-nudge can never fork an operation.
- dns_retry: bring DNS of services with unsynced records in step (non-blocking DNS steps leave
  them owed when a provider was down).
- traffic_accounting (hourly, ``[engine] traffic_interval_s``): each VM's rrddata bytes per hour
  (workers/traffic.py); one firing across all scheduler hosts (a MariaDB lock).
  Right after a run that was not skipped, the overage pass (workers/overage.py) throttles
  services over their package's monthly traffic quota.
- snapshots_and_backups (every minute): delete snapshots past their package lifetime; start
  today's scheduled backups once their random time of day has passed; the overage pass over
  throttled services (the package rate back at a new month or after a package change); forget
  client tokens that ended over 30 days ago.
- drain (as often as reconcile): start the next moves off each node being drained
  (workers/drain.py), a bounded number at a time.
- auto_resume (every ``[engine] auto_resume_check_s``, 60 s): paused operations resume by
  themselves on their backoff, or at once when the dependency whose fault paused them answers
  again (workers/autoresume.py); sets ``pvekvm_operations_paused``.

Each run prints the manual's summary line, ``[reconcile] Done (0.1s) — processed: 2, errors: 0``
(processed: operations nudged or started, DNS records brought in step; errors: items that
failed, or 1 when the job itself crashed), and counts into ``pvekvm_scheduler_job_*``. The
scheduler serves ``/metrics`` on ``observability.scheduler_port`` with the database gauges
(operations by kind and status, dead letters, clone slots in use, oldest idle operation).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.blocking import BlockingScheduler
from peewee import fn

from pvekvm import dns, dnssync, logs, messaging, metrics, preflight, proxmox, tokens
from pvekvm.config import Settings
from pvekvm.console import sessions as console_sessions
from pvekvm.db import bind
from pvekvm.lifecycle import GONE, OpStatus, ServiceStatus
from pvekvm.models import BackupSchedule, Operation, Service, Snapshot, database
from pvekvm.wire.orders import WEEKDAYS
from workers import autoresume, backup_sync, drain, operations, outbox, overage, traffic
from workers.intake import expired_held_events
from workers.outcome import Outcome
from workers.runner import park

log = logging.getLogger("pvekvm.scheduler")


@dataclass
class JobRun:
    """What one run of a job did: the numbers of its summary line."""

    processed: int = 0
    errors: int = 0


def run_job(name: str, body: Callable[[JobRun], None]) -> JobRun:
    """Run ``body``, then print ``[name] Done (X.Xs) — processed: N, errors: M``. A crash is
    logged with its traceback and counted as one error; the scheduler keeps going."""
    run, started = JobRun(), time.perf_counter()
    try:
        body(run)
    except Exception:  # one failed run must not stop the scheduler
        log.exception("[%s] failed", name)
        run.errors += 1
    log.info("[%s] Done (%.1fs) — processed: %d, errors: %d", name,
             time.perf_counter() - started, run.processed, run.errors)
    metrics.JOB_RUNS.labels(name, "error" if run.errors else "ok").inc()
    metrics.JOB_ITEMS.labels(name).inc(run.processed)
    return run


def reconcile_once(settings: Settings, publisher: messaging.Sink,
                   now: datetime | None = None) -> int:
    now = now or datetime.now()
    stale = now - timedelta(seconds=settings.engine.stale_after_s)
    unconfirmed = now - timedelta(seconds=5)
    ops = list(Operation.select().where(
        (Operation.status == OpStatus.RUNNING) & Operation.nudge_id.is_null(False)
        & ((Operation.updated_at < stale)
           | (~Operation.nudge_published & (Operation.updated_at < unconfirmed)))))
    sent = 0
    for op in ops:
        nudge = operations.nudge_for(op)
        if nudge is None:
            continue
        operations.deliver(Outcome(publish=[nudge]), publisher)
        operations.renudged(op, nudge.nudge_id)
        log.info("sid:%s re-nudged %s at (%s)", op.service_id, op.kind, op.state)
        sent += 1
    events = outbox.unpublished(older_than=unconfirmed)
    outbox.publish(events, publisher)  # a crash came between a commit and its publish
    orphans = _start_orphaned_queues(publisher, settings.engine.deploy_window)
    return sent + len(events) + orphans + refuse_expired_held(publisher, now)


def refuse_expired_held(publisher: messaging.Sink, now: datetime | None = None) -> int:
    """Events whose service's create never came within the hold time are refused."""
    refused = 0
    for row in expired_held_events(now):
        with database.atomic():
            if row.delete_instance() != 1:
                continue  # the create came (or another scheduler) meanwhile
            park(publisher, "intake", bytes(row.body), f"unknown service {row.service_id}: "
                 f"no create arrived by {row.expires_at:%H:%M:%S}")
        refused += 1
    return refused


def _start_orphaned_queues(publisher: messaging.Sink, window: int) -> int:
    """A queued operation whose service has none running starts, oldest first (normally the
    finishing operation starts it; this covers a crash in between). Deploys over the admission
    window stay queued."""
    active = Operation.select(Operation.active_service).where(
        Operation.active_service.is_null(False))
    waiting = (Operation.select(Operation.service_id, fn.MIN(Operation.id).alias("first"))
               .where((Operation.status == OpStatus.QUEUED) & Operation.service_id.not_in(active))
               .group_by(Operation.service_id).order_by(fn.MIN(Operation.id)).limit(500))
    started = 0
    for row in list(waiting):
        with database.atomic():
            out = operations.start_next_queued(row.service_id, window)
        for line in out.log:
            log.info("%s", line)
        operations.deliver(out, publisher)
        started += len(out.publish)
    return started


def dns_retry_once(settings: Settings, run: JobRun | None = None) -> int:
    """Services whose DNS is owed are retried; returns how many are now in step (failures are
    counted into ``run.errors``)."""
    fixed = 0
    for sid in dnssync.owed_services():
        svc = Service.get_or_none(Service.id == sid)
        if svc is None:
            continue
        try:
            if svc.status == ServiceStatus.TERMINATED:
                dnssync.withdraw(svc, settings.secret_key_file)
            else:
                dnssync.publish(svc, settings.secret_key_file)
            fixed += 1
            log.info("sid:%s DNS now in step", sid)
        except (dns.DnsError, ValueError) as exc:
            log.warning("sid:%s DNS still failing: %s", sid, exc)
            if run is not None:
                run.errors += 1
    return fixed


def _submit(publisher: messaging.Publisher, service_id: int, kind: str, key: str,
            params: dict) -> bool:
    """Start an operation unless one with this key exists (jobs are idempotent per key)."""
    if Operation.get_or_none(Operation.idempotency_key == key) is not None:
        return False
    with database.atomic():
        outcome = operations.begin(service_id, kind, key, params)
    for line in outcome.log:
        log.info("%s", line)
    operations.deliver(outcome, publisher)
    return True


def expire_snapshots_once(publisher: messaging.Publisher, now: datetime | None = None) -> int:
    """Snapshots past their package lifetime are deleted (one operation each)."""
    now = now or datetime.now()
    started = 0
    for snap in Snapshot.select().where(Snapshot.expires_at < now):
        svc = Service.get_or_none(Service.id == snap.service_id)
        if svc is None or svc.status in GONE or svc.suspended:
            continue  # a suspended service's snapshots expire once it is unsuspended
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
        if svc is None or svc.status != ServiceStatus.READY:
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

    def publisher() -> messaging.Publisher:  # short-lived: no idle socket between runs
        return messaging.Publisher(settings.amqp_url, topo, app_id="pvekvm-scheduler")

    def reconcile_body(run: JobRun) -> None:
        database.connect(reuse_if_open=True)
        pub = publisher()
        try:
            run.processed += reconcile_once(settings, pub)
        finally:
            pub.close()

    def dns_retry_body(run: JobRun) -> None:
        database.connect(reuse_if_open=True)
        run.processed += dns_retry_once(settings, run)

    def periodic_body(run: JobRun) -> None:
        database.connect(reuse_if_open=True)
        pub = publisher()
        try:
            run.processed += expire_snapshots_once(pub)
            run.processed += run_backup_schedules_once(pub)
            run.processed += overage.run_once(pub, throttled_only=True).started
        finally:
            pub.close()
        tokens.purge_ended()  # client tokens ended over 30 days ago
        console_sessions.purge_ended()  # console tokens/sessions likewise (audit_log keeps them)

    def traffic_body(run: JobRun) -> None:
        """One run per cluster (each with its own client and lock), then the overage pass."""
        clusters = settings.all_clusters
        if not clusters:
            return
        database.connect(reuse_if_open=True)
        pub = publisher()
        counted = False
        try:
            for c in clusters:
                one = len(clusters) == 1
                result = traffic.run_once(proxmox.client(c.proxmox), pub,
                                          min_gap_s=settings.engine.traffic_interval_s / 2,
                                          cluster=None if one else c.name)
                counted |= not result.skipped
                run.processed += result.services
                run.errors += len(result.errors)
                for error in result.errors:
                    log.warning("[traffic_accounting] %s: %s", c.name, error)
                if result.skipped:
                    log.info("[traffic_accounting] %s skipped: %s", c.name, result.skipped)
            if counted:
                run.processed += overage.run_once(pub).started
        finally:
            pub.close()

    def backup_sync_body(run: JobRun) -> None:
        clusters = settings.all_clusters
        if not clusters:
            return
        database.connect(reuse_if_open=True)
        pub = publisher()
        try:
            for c in clusters:
                result = backup_sync.run_once(proxmox.client(c.proxmox), pub,
                                              None if len(clusters) == 1 else c.name)
                run.processed += result.checked
                run.errors += len(result.errors)
                for error in result.errors:
                    log.warning("[backup_sync] %s: %s", c.name, error)
        finally:
            pub.close()

    def auto_resume_body(run: JobRun) -> None:
        database.connect(reuse_if_open=True)
        pub = publisher()
        try:
            run.processed += autoresume.resume_due(settings, pub)
        finally:
            pub.close()

    def drain_body(run: JobRun) -> None:
        database.connect(reuse_if_open=True)
        pub = publisher()
        try:
            run.processed += drain.run_once(settings, pub)
        finally:
            pub.close()

    def reconcile() -> None:
        run_job("reconcile", reconcile_body)

    def drain_nodes() -> None:
        run_job("drain", drain_body)

    def auto_resume() -> None:
        run_job("auto_resume", auto_resume_body)

    def traffic_accounting() -> None:
        run_job("traffic_accounting", traffic_body)

    def backup_sync_job() -> None:
        run_job("backup_sync", backup_sync_body)

    def dns_retry() -> None:
        run_job("dns_retry", dns_retry_body)

    def periodic() -> None:
        run_job("snapshots_and_backups", periodic_body)

    sched.add_job(periodic, "interval", seconds=60, id="snapshots_and_backups",
                  max_instances=1, coalesce=True)
    interval = max(1.0, settings.engine.stale_after_s / 3)
    sched.add_job(reconcile, "interval", seconds=interval, id="reconcile", max_instances=1,
                  coalesce=True)
    sched.add_job(drain_nodes, "interval", seconds=interval, id="drain", max_instances=1,
                  coalesce=True)
    sched.add_job(dns_retry, "interval", seconds=60, id="dns_retry", max_instances=1,
                  coalesce=True)
    sched.add_job(auto_resume, "interval", seconds=max(1.0, settings.engine.auto_resume_check_s),
                  id="auto_resume", max_instances=1, coalesce=True)
    sched.add_job(backup_sync_job, "interval", seconds=settings.engine.backup_sync_interval_s,
                  id="backup_sync", max_instances=1, coalesce=True)
    sched.add_job(traffic_accounting, "interval", seconds=settings.engine.traffic_interval_s,
                  id="traffic_accounting", max_instances=1, coalesce=True)
    return sched


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.scheduler", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--log-format", choices=("text", "json"))
    ap.add_argument("--metrics-port", type=int,
                    help="port of /metrics (default: observability.scheduler_port; 0 = any)")
    args = ap.parse_args(argv)
    settings = preflight.settings_or_exit(args.config, "python -m workers.scheduler")
    logs.setup("INFO", args.log_format or settings.metrics.log_format)
    # APScheduler's executor logs two INFO lines per job run ("Running job", "executed
    # successfully"): two thirds of the log. Each job prints its own summary line instead;
    # the executor's warnings (a missed run, a job that raised) still show.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    preflight.require(settings, ("database", "broker", "secret-key"),
                      "python -m workers.scheduler")
    # on Galera the reconciler's reads wait for the cluster's last commit (wsrep_sync_wait)
    bind(settings.database_url, causal_reads=True,
         read_timeout_s=settings.database_read_timeout_s)
    metrics.register_database_gauges()
    port = args.metrics_port if args.metrics_port is not None else \
        settings.metrics.scheduler_port
    metrics.MetricsServer(port, settings.metrics.addr).start()
    messaging.declare(settings.amqp_url, messaging.Topology(settings.namespace))
    sched = build(settings)
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    sched.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
