"""Traffic accounting: each VM's network bytes per UTC hour, from Proxmox ``rrddata``.

PVE's ``rrddata`` (timeframe ``hour``: 70 rows of 60 s) gives ``netin``/``netout`` as the
average bytes per second over each step; a row at ``time`` t covers (t - step, t] (rrdtool's
row timestamps end their interval). A row's bytes are value x step, booked to the UTC hour
its interval lies in (rows are aligned to the step, which divides the hour).

Each byte counts once: ``traffic_cursors.counted_to`` is the time of the last row counted for
the service, and a run adds only rows after it and no later than now, in the same transaction
that moves the cursor (the cursor row is locked, so two runs that overlap add each row once).
The series is read on the node the VM is on now (``cluster/resources``; PVE keeps a VM's RRD
across a migration), so a VM migrated mid-hour continues its series. ``rrddata`` carries
rates, not counters: a counter reset after a reboot shows as a row with no value (PVE's
DERIVE drops the negative step), which adds nothing. When the job did not run for over an hour
(the gap between the cursor and the oldest minute row), the gap is taken from the ``day``
series (30-minute averages, kept 35 hours): each 30-minute row adds its rate x the seconds of
its interval inside the gap. What even that series no longer holds is added to ``missed_s``
and logged.

Each run publishes ``usage.reported`` on ``{ns}.events`` for every hour it added to: the
service, the period, the hour's totals so far (whole bytes) and ``final`` once the hour is
fully counted; billing keeps the latest per (service, period).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from peewee import IntegrityError, fn

from pvekvm.lifecycle import ServiceStatus
from pvekvm.messaging import Publisher
from pvekvm.models import Service, TrafficCursor, TrafficUsage, database
from pvekvm.proxmox import Proxmox
from workers import outbox

log = logging.getLogger("pvekvm.traffic")
STEP_S = 60  # rrddata timeframe=hour
GAP_STEP_S = 1800  # rrddata timeframe=day: fills a gap of more than the 70 minute rows
HOUR_S = 3600
JOB_LOCK = "traffic_accounting"


@dataclass
class RunResult:
    services: int = 0        # services whose series was read
    rows: int = 0            # RRD rows added
    events: int = 0          # usage.reported events written
    missed_s: int = 0        # seconds no longer in the RRD when read
    skipped: str = ""        # why the run did nothing (another host ran it)
    errors: list[str] = field(default_factory=list)


def hour_of(row_time: int) -> int:
    """The UTC hour (unix seconds) the row's interval (row_time - step, row_time] lies in."""
    return (row_time - STEP_S) // HOUR_S * HOUR_S


def _utc(ts: int) -> datetime:
    """A naive UTC datetime (the column holds UTC hours)."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def _bytes(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)  # unknown (a counter reset): nothing measured
    return Decimal(str(value)) * STEP_S


def account_service(service_id: int, vmid: int, rows: list[dict[str, Any]], now: int,
                    result: RunResult, gap_rows: list[dict[str, Any]] | None = None,
                    ) -> list[outbox.Pending]:
    """Add the rows not yet counted (time in (counted_to, now]) to the service's hours and move
    its cursor, in one transaction; the events to publish after the commit. ``gap_rows``: the
    ``day`` series, for a cursor older than the first minute row."""
    for attempt in (1, 2):
        try:
            with database.atomic():
                return _account(service_id, vmid, rows, now, result, gap_rows or [])
        except IntegrityError:  # a concurrent first run created the cursor: read it again
            if attempt == 2:
                raise
    return []


def _gap_bytes(gap_rows: list[dict[str, Any]], start: int, end: int,
               per_hour: dict[int, list[Decimal]]) -> int:
    """Add the 30-minute rows' bytes for the seconds of (start, end] they cover; the seconds
    no row covers."""
    covered = 0
    for r in gap_rows:
        t = int(r["time"])
        lo, hi = max(t - GAP_STEP_S, start), min(t, end)
        if hi <= lo:
            continue
        covered += hi - lo
        bucket = per_hour[lo // HOUR_S * HOUR_S]  # 30-minute rows never straddle an hour
        for i, key in enumerate(("netin", "netout")):
            if r.get(key) is not None:
                bucket[i] += Decimal(str(r[key])) * (hi - lo)
    return end - start - covered


def _account(service_id: int, vmid: int, rows: list[dict[str, Any]], now: int,
             result: RunResult, gap_rows: list[dict[str, Any]]) -> list[outbox.Pending]:
    rows = sorted((r for r in rows if int(r["time"]) <= now), key=lambda r: int(r["time"]))
    if not rows:
        return []
    cursor = (TrafficCursor.select().where(TrafficCursor.service_id == service_id)
              .for_update().first())
    if cursor is not None and cursor.vmid != vmid:  # a new VM for the service: a new series
        cursor.delete_instance()
        cursor = None
    first = int(rows[0]["time"])
    if cursor is None:
        cursor = TrafficCursor(service_id=service_id, vmid=vmid, counted_from=first,
                               counted_to=first - STEP_S, missed_s=0)
        cursor.save(force_insert=True)
    fresh = [r for r in rows if int(r["time"]) > cursor.counted_to]
    if not fresh:
        return []
    per_hour: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    gap_end = int(fresh[0]["time"]) - STEP_S
    missed = 0
    if gap_end > cursor.counted_to:
        missed = _gap_bytes(gap_rows, cursor.counted_to, gap_end, per_hour)
    if missed:
        log.warning("sid:%d traffic: %ds no longer in the RRD when read (job did not run)",
                    service_id, missed)
    for r in fresh:
        bucket = per_hour[hour_of(int(r["time"]))]
        bucket[0] += _bytes(r.get("netin"))
        bucket[1] += _bytes(r.get("netout"))
    last = int(fresh[-1]["time"])
    pending = []
    for hour, (b_in, b_out) in sorted(per_hour.items()):
        TrafficUsage.insert(service_id=service_id, period_start=_utc(hour), bytes_in=b_in,
                            bytes_out=b_out).on_conflict(update={
                                TrafficUsage.bytes_in: TrafficUsage.bytes_in + b_in,
                                TrafficUsage.bytes_out: TrafficUsage.bytes_out + b_out,
                            }).execute()
        total = TrafficUsage.get((TrafficUsage.service_id == service_id)
                                 & (TrafficUsage.period_start == _utc(hour)))
        pending.append(outbox.record(
            "usage.reported", service_id=service_id,
            period_start=_utc(hour).isoformat() + "Z",
            period_end=_utc(hour + HOUR_S).isoformat() + "Z",
            bytes_in=int(total.bytes_in), bytes_out=int(total.bytes_out),
            final=last >= hour + HOUR_S))
    TrafficCursor.update(counted_to=last, missed_s=TrafficCursor.missed_s + missed,
                         updated_at=datetime.now()).where(
        TrafficCursor.service_id == service_id).execute()
    result.rows += len(fresh)
    result.missed_s += missed
    return pending


def _ours(cluster: str | None = None) -> dict[int, int]:
    """vmid -> service id, for every service that has a VM (in ``cluster``, when given)."""
    q = Service.select(Service.id, Service.vmid).where(
        Service.vmid.is_null(False) & (Service.status != ServiceStatus.TERMINATED))
    if cluster is not None:
        q = q.where(Service.cluster == cluster)
    return {s.vmid: s.id for s in q if s.vmid is not None}


def run_once(pve: Proxmox, publisher: Publisher | None, now: float | None = None,
             min_gap_s: float = 0, cluster: str | None = None) -> RunResult:
    """One accounting run over every VM of ours that Proxmox knows (one ``cluster/resources``
    call, one ``rrddata`` call per VM). One firing across all scheduler hosts: skipped while
    another host holds the job's lock, or when any host ran it less than ``min_gap_s`` ago
    (the scheduler passes half its interval). ``cluster``: the services of that cluster only
    (``pve`` is its client; the scheduler runs one per cluster, each with its own lock)."""
    result = RunResult()
    at = int(now if now is not None else time.time())
    lock = f"{database.database}.{JOB_LOCK}" + (f":{cluster}" if cluster else "")
    lock = lock[:64]
    if not database.execute_sql("SELECT GET_LOCK(%s, 0)", (lock,)).fetchone()[0]:
        result.skipped = "another scheduler host is running the job"
        return result
    try:
        lastq = TrafficCursor.select(fn.MAX(TrafficCursor.updated_at))
        if cluster is not None:
            lastq = lastq.join(Service, on=(Service.id == TrafficCursor.service_id)).where(
                Service.cluster == cluster)
        last = lastq.scalar()
        if min_gap_s and last is not None and \
                (datetime.now() - last).total_seconds() < min_gap_s:
            result.skipped = f"ran {(datetime.now() - last).total_seconds():.0f}s ago"
            return result
        ours = _ours(cluster)
        behind = {c.service_id: c.counted_to for c in TrafficCursor.select(
            TrafficCursor.service_id, TrafficCursor.counted_to)}
        for vm in _vms(pve, ours):
            vmid, node = int(vm["vmid"]), vm["node"]
            try:
                rows = pve.get(f"nodes/{node}/qemu/{vmid}/rrddata", timeframe="hour",
                               cf="AVERAGE")
                gap_rows = None
                if rows and ours[vmid] in behind and \
                        behind[ours[vmid]] < min(int(r["time"]) for r in rows) - STEP_S:
                    gap_rows = pve.get(f"nodes/{node}/qemu/{vmid}/rrddata", timeframe="day",
                                       cf="AVERAGE")
                pending = account_service(ours[vmid], vmid, rows, at, result, gap_rows)
            except Exception as exc:  # noqa: BLE001 - one VM's failure must not stop the run
                result.errors.append(f"vmid {vmid}: {exc}")
                continue
            result.services += 1
            result.events += len(pending)
            if publisher is not None:
                outbox.publish(pending, publisher)
    finally:
        database.execute_sql("SELECT RELEASE_LOCK(%s)", (lock,))
    return result


def _vms(pve: Proxmox, ours: dict[int, int]) -> Iterable[dict[str, Any]]:
    for res in pve.get("cluster/resources", type="vm"):
        if res.get("type", "qemu") == "qemu" and int(res.get("vmid", -1)) in ours \
                and not res.get("template"):
            yield res


def usage(service_id: int, start: datetime, end: datetime) -> list[TrafficUsage]:
    """The service's hours with start <= period_start < end (naive UTC), oldest first."""
    return list(TrafficUsage.select().where(
        (TrafficUsage.service_id == service_id) & (TrafficUsage.period_start >= start)
        & (TrafficUsage.period_start < end)).order_by(TrafficUsage.period_start))


__all__ = ["RunResult", "account_service", "hour_of", "run_once", "usage"]
