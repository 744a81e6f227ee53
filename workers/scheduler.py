"""``python -m workers.scheduler``: the periodic jobs (APScheduler 3.x).

- reconcile: re-nudge running operations that made no progress for ``stale_after_s`` (a nudge
  lost with a broker or a dead-lettered message), and publish nudges whose confirm never
  arrived. The nudge id is the operation's live one, so a re-nudge can never fork an operation.
- dns_retry: bring DNS of services with unsynced records in step (non-blocking DNS steps leave
  them owed when a provider was down).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import datetime, timedelta

from apscheduler.schedulers.blocking import BlockingScheduler

from pvekvm import dns, dnssync, messaging
from pvekvm.config import Settings, load_settings
from pvekvm.db import apply_schema, bind
from pvekvm.models import Operation, Service, database
from workers.engine import mark_published, nudge_for

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
    return sent


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
    settings = load_settings(args.config)
    apply_schema(bind(settings.database_url))
    messaging.declare(settings.amqp_url, messaging.Topology(settings.namespace))
    sched = build(settings)
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    sched.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
