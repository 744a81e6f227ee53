"""The overage pass: start ``throttle`` / ``unthrottle`` operations for services whose traffic
crossed their package's monthly quota, or whose throttle no longer holds (pvekvm/overage.py
has the rule; steps/overage.py the steps).

The scheduler runs it after each traffic accounting run over every service with a quota or a
throttle, and every minute over throttled services only (so the package rate comes back
within a minute of a new month or of a package change that lifts the throttle). Per service:

- terminated (or terminating), no VM yet: ignored;
- suspended: not touched, whatever the decision would be (logged); once unsuspended, the next
  pass decides (a throttle from an earlier month is lifted then, within a minute);
- another operation of the service is under way (status not ``ready``): left for the next
  pass (logged); a throttle or unthrottle already queued or running: nothing more;
- otherwise :func:`pvekvm.overage.decide`: throttle, unthrottle or nothing. A service whose
  package has no quota is never throttled.

A throttle or unthrottle is an operation like any other (operations.begin: operator lines,
``operation.*`` events, ``service.throttled`` / ``service.unthrottled`` when it completes); its
params carry the period, the usage and quota seen and the reason. Idempotent: the state lives
on the service (``throttled_period``, written when the operation completes) and a pass starts
nothing while one is unfinished, so one throttle per period and package, never two; one pass at
a time across scheduler hosts (a MariaDB lock; the next one waits for it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from pvekvm import overage
from pvekvm.lifecycle import GONE, SUSPENDED_STATUSES, UNFINISHED, ServiceStatus
from pvekvm.messaging import Publisher
from pvekvm.models import Operation, Product, Service, database
from workers import operations

log = logging.getLogger("pvekvm.overage")
JOB_LOCK = "traffic_overage"
LOCK_WAIT_S = 30
KINDS = ("throttle", "unthrottle")


@dataclass
class PassResult:
    throttled: int = 0      # throttle operations started
    unthrottled: int = 0    # unthrottle operations started
    checked: int = 0        # services looked at
    left_alone: int = 0     # a decision was due but the service was suspended or busy
    skipped: str = ""       # why the pass did nothing (another host runs it)
    lines: list[str] = field(default_factory=list)

    @property
    def started(self) -> int:
        return self.throttled + self.unthrottled


def run_once(publisher: Publisher | None, now: datetime | None = None,
             throttled_only: bool = False) -> PassResult:
    """One pass at ``now`` (naive UTC; default: the clock). ``throttled_only``: only services
    with a throttle (the minute pass: cheap, no usage sum over every service)."""
    at = now or overage.now_utc()
    period = overage.period_of(at)
    result = PassResult()
    lock = f"{database.database}.{JOB_LOCK}"
    # a pass takes milliseconds: wait for one running elsewhere rather than skip (the hourly
    # pass must not miss its turn because the minute pass held the lock)
    if not database.execute_sql("SELECT GET_LOCK(%s, %s)", (lock, LOCK_WAIT_S)).fetchone()[0]:
        result.skipped = "another scheduler host is running the pass"
        return result
    try:
        usage = None if throttled_only else overage.used_by_service(period)
        for svc, product in _candidates(throttled_only):
            result.checked += 1
            used = usage.get(svc.id, 0) if usage is not None else \
                overage.used_bytes(svc.id, period)
            _one(svc, product, used, period, result, publisher, quiet=throttled_only)
    finally:
        database.execute_sql("SELECT RELEASE_LOCK(%s)", (lock,))
    return result


def _candidates(throttled_only: bool) -> list[tuple[Service, Product]]:
    """Live services with a VM whose package has a quota or that are throttled."""
    products = {p.id: p for p in Product.select()}
    limited = [pid for pid, p in products.items() if p.traffic_quota_gb is not None]
    q = Service.select().where(Service.vmid.is_null(False)
                               & Service.status.not_in(list(GONE)))
    if throttled_only or not limited:
        q = q.where(Service.throttled_period.is_null(False))
    else:
        q = q.where(Service.product_id.in_(limited) | Service.throttled_period.is_null(False))
    return [(s, products[s.product_id]) for s in q.order_by(Service.id)]


def _one(svc: Service, product: Product, used: int, period: date, result: PassResult,
         publisher: Publisher | None, quiet: bool) -> None:
    """``quiet``: a service left alone is counted, not logged (the minute pass: the hourly one
    logs it)."""
    decision = overage.decide(product, svc.throttled_period, used, period)
    if decision.action is None:
        return
    kind = decision.action.value
    if svc.suspended or svc.status in SUSPENDED_STATUSES:
        if not quiet:
            _say(result, f"sid:{svc.id} {kind} due ({decision.reason}) — not touched: "
                         "suspended")
        result.left_alone += 1
        return
    pending = Operation.get_or_none((Operation.service_id == svc.id)
                                    & Operation.kind.in_(KINDS)
                                    & Operation.status.in_(list(UNFINISHED)))
    if pending is not None:
        return  # already on its way (or paused for an operator)
    if svc.status != ServiceStatus.READY:
        if not quiet:
            _say(result, f"sid:{svc.id} {kind} due ({decision.reason}) — waits: service is "
                         f"{svc.status}")
        result.left_alone += 1
        return
    quota = overage.quota_bytes(product)
    params = {"period": period.isoformat(), "used_bytes": used, "quota_bytes": quota,
              "reason": decision.reason,
              "service": {"throttled_period": period.isoformat()
                          if kind == "throttle" else None}}
    with database.atomic():
        tries = Operation.select().where(
            (Operation.service_id == svc.id) & (Operation.kind == kind)
            & Operation.idempotency_key.startswith(f"{kind}:{svc.id}:{period:%Y-%m}:")).count()
        key = f"{kind}:{svc.id}:{period:%Y-%m}:{tries + 1}"
        outcome = operations.begin(svc.id, kind, key, params)
    rate = product.overage_rate_mbps if kind == "throttle" else product.net_rate_mbps
    _say(result, f"sid:{svc.id} {kind}: {decision.reason} — net0 to "
                 + (f"{float(rate):g} MB/s" if rate else "unlimited"))
    for line in outcome.log:
        _say(result, line)
    if publisher is not None:
        operations.deliver(outcome, publisher)
    if kind == "throttle":
        result.throttled += 1
    else:
        result.unthrottled += 1


def _say(result: PassResult, line: str) -> None:
    log.info("[traffic_overage] %s", line)
    result.lines.append(line)


__all__ = ["PassResult", "run_once"]
