"""Traffic quota and overage: the one rule that says at which rate a service's ``net0`` runs.

- Period: the calendar month in UTC (no billing anniversary is kept here), named by its first
  day. The accounting (workers/traffic.py) books bytes to the UTC hour they moved in, so an
  hour belongs to the month it starts in.
- Usage in a period: ``bytes_in + bytes_out`` of the service's ``traffic_usage`` hours starting
  in it (both directions count, as most hosts' transfer allowances do), from the hour its
  present life began (``services.created_at``): a service id billing re-creates after a
  terminate starts with nothing used, whoever used the earlier life.
- Quota: the product's ``traffic_quota_gb`` x 10^9 bytes (decimal GB, as the bytes are counted);
  NULL = unlimited: never throttled. Over quota means usage >= quota.
- Throttled: ``services.throttled_period`` names the month the service is throttled for (set
  when a ``throttle`` operation completes, cleared by ``unthrottle``). Only those operations
  write it; which one is due is :func:`decide`'s answer, given by the scheduler's overage pass.
- Rate (:func:`net_rate`): the package's ``overage_rate_mbps`` while the service is throttled
  for the current month *and* its package's quota is used up in it; else ``net_rate_mbps``. So
  a reinstall or restore of a throttled VM keeps the overage rate, and a package change applies
  the new package's rate unless the new package's quota is used up too (then its overage rate:
  a package change never silently lifts a throttle that still holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from peewee import fn

from pvekvm.models import Product, Service, TrafficUsage, database

GB = 10**9


def period_of(at: datetime) -> date:
    """The month ``at`` lies in (its first day); a naive ``at`` is UTC."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def next_period(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def quota_bytes(product: Product) -> int | None:
    """The product's monthly allowance in bytes; None = unlimited."""
    return None if product.traffic_quota_gb is None else int(product.traffic_quota_gb) * GB


def utc_offset_s() -> int:
    """Seconds from the database's clock (``NOW()``, which stamps ``created_at``) to UTC."""
    (offset,) = database.execute_sql(
        "SELECT TIMESTAMPDIFF(SECOND, NOW(), UTC_TIMESTAMP())").fetchone()
    return int(offset)


def life_start_hour(created_at: datetime | None, offset_s: int | None = None) -> datetime:
    """The UTC hour a service's present life began in (``services.created_at``, on the
    database's clock; traffic hours are UTC). No ``created_at``: the beginning of time."""
    if created_at is None:
        return datetime.min
    began = created_at + timedelta(seconds=utc_offset_s() if offset_s is None else offset_s)
    return began.replace(minute=0, second=0, microsecond=0)


def used_bytes(service_id: int, period: date) -> int:
    """Bytes in + out the accounting booked to hours starting in ``period`` and in the
    service's present life."""
    svc = Service.get_or_none(Service.id == service_id)
    lo = _midnight(period)
    if svc is not None:
        lo = max(lo, life_start_hour(svc.created_at))
    total = (TrafficUsage.select(fn.SUM(TrafficUsage.bytes_in + TrafficUsage.bytes_out))
             .where((TrafficUsage.service_id == service_id)
                    & (TrafficUsage.period_start >= lo)
                    & (TrafficUsage.period_start < _midnight(next_period(period)))).scalar())
    return int(total or 0)


# an hour counts when it ends after the life began (so the hour it began in counts, as for
# the API's usage view); created_at is on the database's clock, shifted to UTC by %s seconds
_USED_BY_SERVICE = (
    "SELECT t.service_id, SUM(t.bytes_in + t.bytes_out) FROM traffic_usage t "
    "LEFT JOIN services s ON s.id = t.service_id "
    "WHERE t.period_start >= %s AND t.period_start < %s AND (s.created_at IS NULL OR "
    "t.period_start + INTERVAL 1 HOUR > s.created_at + INTERVAL %s SECOND) "
    "GROUP BY t.service_id")


def used_by_service(period: date) -> dict[int, int]:
    """Bytes in + out per service in ``period``, each in its present life (one query: the
    hourly pass)."""
    rows = database.execute_sql(_USED_BY_SERVICE, (
        _midnight(period), _midnight(next_period(period)), utc_offset_s())).fetchall()
    return {int(sid): int(total or 0) for sid, total in rows}


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def gb(n: int) -> str:
    return f"{n / GB:.2f} GB"


def usage_text(used: int, quota: int | None, period: date) -> str:
    allowance = "no quota" if quota is None else f"quota {gb(quota)}"
    return f"{gb(used)} used in {period:%Y-%m}, {allowance}"


def over_quota(product: Product, used: int) -> bool:
    quota = quota_bytes(product)
    return quota is not None and used >= quota


@dataclass(frozen=True)
class Rate:
    """The net0 rate a service's VM should run at, and why."""

    mbps: Decimal | None  # None or 0: unlimited
    throttled: bool
    reason: str

    @property
    def text(self) -> str:
        return f"{float(self.mbps):g}" if self.mbps and self.mbps > 0 else ""


def net_rate(product: Product, throttled_period: date | None, used: int,
             at: datetime) -> Rate:
    """The module's rule (see the module docstring): ``used`` = usage in ``at``'s month."""
    period = period_of(at)
    package = Decimal(str(product.net_rate_mbps or 0))
    if throttled_period is None or throttled_period != period:
        return Rate(package, False, "package rate")
    if not over_quota(product, used) or not product.overage_rate_mbps:
        return Rate(package, False, f"package {product.name}: "
                    f"{usage_text(used, quota_bytes(product), period)}: package rate")
    return Rate(Decimal(str(product.overage_rate_mbps)), True,
                f"throttled: {usage_text(used, quota_bytes(product), period)}")


class Action(StrEnum):
    THROTTLE = "throttle"
    UNTHROTTLE = "unthrottle"


@dataclass(frozen=True)
class Decision:
    action: Action | None  # None: leave as it is
    reason: str


def decide(product: Product, throttled_period: date | None, used: int,
           period: date) -> Decision:
    """What the overage pass does for one service in ``period`` (the current month), given the
    month it is throttled for and its usage in ``period``:

    - not throttled: throttle once over quota;
    - throttled for an earlier month: a new period began: unthrottle, or throttle for the new
      month when it is over quota already;
    - throttled for this month but no longer over its package's quota (a package change to a
      larger or unlimited quota): unthrottle;
    - otherwise nothing.
    """
    quota = quota_bytes(product)
    usage = usage_text(used, quota, period)
    over = quota is not None and used >= quota
    if throttled_period is None:
        if over:
            return Decision(Action.THROTTLE, f"over quota: {usage}")
        return Decision(None, usage)
    if throttled_period < period:
        if over:
            return Decision(Action.THROTTLE, f"period {period:%Y-%m} began, over quota "
                            f"already: {usage}")
        return Decision(Action.UNTHROTTLE, f"period {throttled_period:%Y-%m} ended: "
                        f"{period:%Y-%m} began")
    if throttled_period > period:
        return Decision(None, f"throttled for a later period ({throttled_period:%Y-%m})")
    if over:
        return Decision(None, f"throttled: {usage}")
    return Decision(Action.UNTHROTTLE, f"package {product.name}: {usage}")


def overage_problem(entry: dict[str, Any]) -> str | None:
    """Why a catalog product's quota settings are wrong (None: they are fine): a quota needs a
    positive overage rate below the package rate; an overage rate needs a quota."""
    quota, rate = entry.get("traffic_quota_gb"), entry.get("overage_rate_mbps")
    package = entry.get("net_rate_mbps") or 0
    if quota is None:
        if rate is not None:
            return "overage_rate_mbps is set but traffic_quota_gb is not (no quota to exceed)"
        return None
    if isinstance(quota, bool) or not isinstance(quota, int) or quota <= 0:
        return (f"traffic_quota_gb must be a positive whole number of GB, got {quota!r} "
                "(leave it out for unlimited traffic)")
    if rate is None:
        return "traffic_quota_gb is set but overage_rate_mbps is not (the rate over quota)"
    if isinstance(rate, bool) or not isinstance(rate, int | float | Decimal) or rate <= 0:
        return f"overage_rate_mbps must be a positive number of MB/s, got {rate!r}"
    if isinstance(package, int | float | Decimal) and 0 < package <= rate:
        return (f"overage_rate_mbps ({rate:g}) must be below net_rate_mbps ({package:g}): "
                "over quota is slower")
    return None
