"""Per-service rate limits on the orders the API's client routes publish (rDNS set/reset).

The count is the database's, not a process's: the API runs several processes, so the limit is
the number of ``audit_log`` rows of the accepted kinds for the service in the last hour. Check,
publish and audit row happen under a MariaDB named lock per service (``GET_LOCK``, which needs no
privilege), so two processes cannot both take the last slot."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from pvekvm.config import Settings
from pvekvm.models import AuditLog, database

WINDOW = timedelta(hours=1)
#: the audit kinds of accepted orders from the client routes, and of the requests they refused
#: after work (a name checked in DNS): each counts as a client event, so refused names cannot
#: make the API ask DNS without bound; the 429s themselves (``api_rdns_limited``) do not count
CLIENT_ORDER_EVENTS = ("api_rdns_set", "api_rdns_reset", "api_rdns_refused")
#: the accepted orders that change a PTR
PTR_EVENTS = ("api_rdns_set", "api_rdns_reset")
LOCK_WAIT_S = 10


class Busy(RuntimeError):
    """The service's lock was not had within LOCK_WAIT_S."""


@dataclass(frozen=True)
class Refusal:
    reason: str
    retry_after_s: int


@contextmanager
def serialized(service_id: int) -> Iterator[None]:
    """Hold this database's named lock for ``service_id`` on this thread's connection."""
    name = f"{database.database}:client-orders:{service_id}"[-64:]
    (got,) = database.execute_sql("SELECT GET_LOCK(%s, %s)", (name, LOCK_WAIT_S)).fetchone()
    if got != 1:
        raise Busy(f"service {service_id}: another order is being taken")
    try:
        yield
    finally:
        database.execute_sql("SELECT RELEASE_LOCK(%s)", (name,))


def refusal(service_id: int, settings: Settings, ptr_change: bool,
            now: datetime | None = None) -> Refusal | None:
    """Why one more client order for ``service_id`` is over a limit, with the seconds until a
    slot frees; None when within them. 0 in a setting: no limit."""
    at = now or datetime.now()
    limits: list[tuple[int, tuple[str, ...], str]] = [
        (settings.api.client_events_per_hour, CLIENT_ORDER_EVENTS, "client orders")]
    if ptr_change:
        limits.insert(0, (settings.rdns.changes_per_hour, PTR_EVENTS, "PTR changes"))
    for limit, kinds, what in limits:
        if limit <= 0:
            continue
        recent = list(AuditLog.select(AuditLog.created_at).where(
            (AuditLog.service_id == service_id) & AuditLog.event.in_(kinds)
            & (AuditLog.created_at > at - WINDOW)).order_by(AuditLog.created_at.desc())
            .limit(limit))
        if len(recent) >= limit:
            oldest = recent[-1].created_at or at
            frees = oldest + WINDOW - at
            return Refusal(f"rate limit: at most {limit} {what} per hour for a service",
                           max(1, math.ceil(frees.total_seconds())))
    return None
