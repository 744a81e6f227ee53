"""Events to billing, through an outbox: each is a row written in the same commit as the change
it reports, published (confirmed) to the ``{ns}.events`` topic exchange after the commit with
routing key = type, and re-published by the reconciler when a crash came between. Billing
de-duplicates by ``event_id``. No event carries a secret: fields are chosen here, never copied
from a row wholesale.

Types: operation.accepted | completed | failed | paused | resumed | cancelled, event.refused,
service.ready | suspended | terminated, usage.reported (workers/traffic.py: a service's bytes
in/out for one UTC hour so far; billing keeps the latest per service and period),
service.throttled | unthrottled (a throttle / unthrottle operation completed: net0 now runs at
``rate_mbps``, the overage or the package rate, 0 = unlimited; ``period`` is the month, YYYY-MM;
``used_bytes`` and ``quota_bytes`` what the decision saw; ``reason`` why), backup.gone (the
storage no longer holds a backup we listed: workers/backup_sync.py), service.migrated (a
migrate operation completed: ``node`` the VM is on now, ``from_node`` where it was).

Every operation event names what the operation is about (:data:`ABOUT`: the power ``action``,
the ``snapshot``, ``backup_id``, ``iso``, rDNS ``address``/``hostname``, the new ``language``),
so billing never has to look an operation up. ``operation.completed`` always has ``status`` (the
service's status after it: ``ready``, ``suspended``, ``terminated``, …) and ``result``:
``done``, or ``skipped`` with the ``reason`` when the step found nothing to do or nothing it
could do (a VM already running, no DNS zone for an rDNS change); a ``backup_create`` adds the
new ``backup_id``.

Each type's fields are declared in :mod:`pvekvm.wire.billing` (shipped as JSON Schemas in
``schemas/events/billing/``); a field added here is declared there too, or
tests/e2e/test_event_schemas.py names it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pvekvm import jsonsafe, metrics
from pvekvm.addresses import cidr, held, host_address
from pvekvm.lifecycle import ServiceStatus
from pvekvm.limits import MAX_SERVICE_ID
from pvekvm.messaging import Sink
from pvekvm.models import (
    AuditLog,
    Backup,
    Operation,
    OutboxEvent,
    Placement,
    Product,
    Service,
    database,
)

_INSERT_EVENT = ("INSERT INTO outbox (event_id, type, service_id, operation_id, body, created_at) "
                 "VALUES (%s, %s, %s, %s, %s, %s)")
#: operation kind -> (params key, event field) of what its events are about; ids and names only
ABOUT: dict[str, tuple[tuple[str, str], ...]] = {
    "power": (("action", "action"),),
    "snapshot_create": (("name", "snapshot"),),
    "snapshot_delete": (("name", "snapshot"),),
    "snapshot_rollback": (("name", "snapshot"),),
    "backup_delete": (("backup_id", "backup_id"),),
    "restore": (("backup_id", "backup_id"),),
    "iso_mount": (("iso", "iso"),),
    "reinstall_iso": (("iso", "iso"),),
    "rescue_on": (("iso", "iso"),),
    "rdns_set": (("address", "address"), ("hostname", "hostname")),
    "rdns_reset": (("address", "address"),),
    "migrate": (("node", "node"), ("drain", "drain")),
    "language_change": (("language", "language"),),
    "hostname_change": (("hostname", "hostname"),),
}
SERVICE_EVENT_OF_STATUS: dict[str, str] = {ServiceStatus.READY: "service.ready",
                                           ServiceStatus.SUSPENDED: "service.suspended",
                                           ServiceStatus.TERMINATED: "service.terminated"}


@dataclass(frozen=True)
class Pending:
    """An outbox row to publish after the commit."""

    row_id: int
    type: str
    body: bytes
    event_id: str
    created: datetime  # when the change was committed (local time, as the row keeps it)


def record(type_: str, *, service_id: int | None, operation: Operation | None = None,
           idempotency_key: str | None = None, **fields: Any) -> Pending:
    """Write one event (inside the caller's transaction) and say what to publish."""
    event_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    body = {"event_id": event_id, "type": type_, "service_id": service_id,
            "operation_id": operation.id if operation is not None else None,
            "idempotency_key": idempotency_key or (operation.idempotency_key
                                                   if operation is not None else None),
            "occurred_at": now.isoformat(timespec="milliseconds"), **fields}
    if operation is not None:
        body.setdefault("kind", operation.kind)
    text = json.dumps(body, separators=(",", ":"), default=str)
    local = now.astimezone().replace(tzinfo=None)
    row_id = database.execute_sql(_INSERT_EVENT, (event_id, type_, service_id,
                                                  body["operation_id"], text, local)).lastrowid
    return Pending(row_id, type_, text.encode(), event_id, local)


def operation_event(type_: str, op: Operation, **fields: Any) -> Pending:
    return record(type_, service_id=op.service_id, operation=op, **{**about(op), **fields})


def about(op: Operation) -> dict[str, Any]:
    """What ``op`` is about, from its params (:data:`ABOUT`)."""
    wanted = ABOUT.get(op.kind)
    if not wanted:
        return {}
    params = json.loads(op.params or "{}")
    return {field: params[key] for key, field in wanted if params.get(key) is not None}


def completion(op: Operation, status: str, skipped: str | None) -> Pending:
    """``operation.completed``: ``status`` the service's, ``result`` done or skipped (with
    ``reason``: the last step's message), and a new backup's ``backup_id``."""
    fields: dict[str, Any] = {"state": op.state, "status": status,
                              "result": "skipped" if skipped is not None else "done"}
    if skipped is not None:
        fields["reason"] = skipped[:1000]
    if op.kind == "backup_create":
        backup = Backup.get_or_none(Backup.operation_id == op.id)
        fields["backup_id"] = backup.id if backup is not None else None
    return operation_event("operation.completed", op, **fields)


def service_event(status: str, op: Operation) -> Pending | None:
    """``service.ready`` (where the client's VM is: vmid, node, hostname, addresses, OS user —
    never the password), ``service.suspended`` or ``service.terminated``."""
    type_ = SERVICE_EVENT_OF_STATUS.get(status)
    if type_ is None:
        return None
    svc = Service.row(op.service_id)
    fields: dict[str, Any] = {"status": status}
    if type_ == "service.ready":
        addrs = held(svc.id)  # primary first, then the additional IPv4
        fields.update(vmid=svc.vmid, node=svc.node, hostname=svc.hostname,
                      ipv4=[a.address for a in addrs if a.version == 4],
                      ipv6=[host_address(a) for a in addrs if a.version == 6],
                      os_user=svc.username, location=svc.cluster)
        prefixes = [cidr(a) for a in addrs if a.prefixlen is not None]
        if prefixes:
            fields["ipv6_prefixes"] = prefixes
        placed = Placement.get_or_none(Placement.operation_id == op.id)
        if placed is not None and placed.why:
            fields["placement"] = placed.why
    return operation_event(type_, op, **fields)


def completed_event(type_: str, op: Operation) -> Pending:
    """A machine's own completion event (``Machine.completed_event``). ``service.throttled`` /
    ``service.unthrottled`` carry the rate net0 now has and the decision's figures."""
    params = json.loads(op.params or "{}")
    fields: dict[str, Any] = {}
    if type_ in ("service.throttled", "service.unthrottled"):
        svc = Service.get_by_id(op.service_id)
        product = Product.get_by_id(svc.product_id)
        rate = product.overage_rate_mbps if type_ == "service.throttled" \
            else product.net_rate_mbps
        fields = {"period": str(params.get("period", ""))[:7], "product": product.name,
                  "rate_mbps": float(rate or 0), "used_bytes": params.get("used_bytes"),
                  "quota_bytes": params.get("quota_bytes"),
                  "reason": str(params.get("reason", ""))[:1000]}
    if type_ == "service.migrated":
        svc, moved = Service.get_by_id(op.service_id), Placement.get_or_none(
            Placement.operation_id == op.id)
        fields = {"node": svc.node, "from_node": moved.source if moved else None,
                  "vmid": svc.vmid, **_migrate_outcome(op, svc, moved)}
    return operation_event(type_, op, **fields)


def _migrate_outcome(op: Operation, svc: Service, moved: Placement | None) -> dict[str, Any]:
    """What did not simply follow the VM: backups left on the old node's local storage (not
    restorable while the VM is elsewhere) and the ISO detached for the move (mounted again, or
    left out and why: steps/migrate.reattach_iso)."""
    left = [] if moved is None or moved.source == svc.node else [
        b.id for b in Backup.select(Backup.id).where((Backup.service_id == svc.id)
                                                     & (Backup.node == moved.source))
        .order_by(Backup.id)]
    notes = {a.event: a.detail for a in AuditLog.select(AuditLog.event, AuditLog.detail).where(
        (AuditLog.operation_id == op.id)
        & AuditLog.event.in_(("iso_reattached", "iso_left_out"))).order_by(AuditLog.id)}
    return {"backups_left": left, "iso_reattached": notes.get("iso_reattached"),
            "iso_left_out": notes.get("iso_left_out")}


#: operations that bring a VM into rescue mode besides a completed rescue_on (intake refuses
#: them while the service is in rescue, so the service was not in rescue when they began):
#: PVE put back a config taken in rescue mode (steps/rescue.py adopt_restored_rescue)
_RESTORING = ("snapshot_rollback", "restore")


def rescue_change(op: Operation, ended: str) -> Pending | None:
    """``service.rescue_on``/``service.rescue_off`` for a change of rescue mode that no completed
    rescue_on/rescue_off machine announces, so billing hears every change once (with
    ``reason``): a rescue_on failed or cancelled after its boot step recorded rescue mode (the
    VM boots the rescue ISO: the client needs rescue_off), a rescue_off failed or cancelled
    after its restore step cleared it (the VM boots its disk), a snapshot rollback or restore
    that brought rescue mode back. ``ended``: done, failed or cancelled. The record
    (``services.rescue_before``) is the truth; this reads it once, as the operation ends."""
    kind = str(op.kind)
    if ended == "done" and kind in ("rescue_on", "rescue_off"):
        return None  # the machine's own completed_event says it
    if kind not in ("rescue_on", "rescue_off", *_RESTORING):
        return None
    in_rescue = scalar_rescue(int(op.service_id))
    if kind == "rescue_off":
        if in_rescue:
            return None
        return operation_event("service.rescue_off", op, reason=(
            f"rescue_off {ended} after the boot order was restored: the VM boots its disk"))
    if not in_rescue:
        return None
    why = (f"rescue_on {ended} after the rescue ISO was put first in the boot order: the "
           "service is in rescue mode (rescue_off boots the disk)") if kind == "rescue_on" \
        else (f"{kind} brought back a config taken in rescue mode: the VM boots the rescue "
              "ISO (rescue_off boots the disk)")
    return operation_event("service.rescue_on", op, reason=why)


def scalar_rescue(service_id: int) -> bool:
    """Whether the service is in rescue mode now (its rescue record is set)."""
    rows = database.execute_sql("SELECT rescue_before IS NOT NULL FROM services WHERE id = %s",
                                (service_id,)).fetchall()
    return bool(rows and rows[0][0])


def refused(body: bytes, reason: str) -> Pending:
    """``event.refused``: a billing event that never became an operation, with billing's key
    when one can be read from it."""
    key, service_id, etype = None, None, None
    try:
        data = jsonsafe.loads(body, max_bytes=jsonsafe.WIRE_MAX_BYTES)
        if isinstance(data, dict):
            key = data.get("idempotency_key") if isinstance(data.get("idempotency_key"),
                                                            str) else None
            sid = data.get("service_id")
            service_id = sid if type(sid) is int and 0 < sid <= MAX_SERVICE_ID else None
            etype = data.get("type") if isinstance(data.get("type"), str) else None
    except ValueError:  # not JSON, too large or too deep: the reason says so, nothing else
        pass
    return record("event.refused", service_id=service_id, idempotency_key=(key or "")[:128]
                  or None, event_type=(etype or "")[:64] or None, reason=reason[:1000])


def publish(pending: list[Pending], publisher: Sink) -> None:
    """Publish (confirmed) and mark each published; unmarked ones the reconciler re-sends."""
    for p in pending:
        publisher.publish_event(p.type, p.body, p.event_id)
    if pending:
        now = datetime.now()
        database.execute_sql(
            "UPDATE outbox SET published_at = %s WHERE id IN ("
            + ",".join(["%s"] * len(pending)) + ")",
            (now, *[p.row_id for p in pending]))
        for p in pending:
            metrics.EVENT_LAG_SECONDS.labels(p.type).observe(
                max(0.0, (now - p.created).total_seconds()))


def unpublished_of(operation_id: int, limit: int = 100) -> list[Pending]:
    """The operation's events not yet marked published: a commit whose outcome its worker never
    learned (the database node died under it) or whose publish was cut. The redelivered message
    sends them (billing de-duplicates by ``event_id``), so they do not wait for the reconciler."""
    rows = (OutboxEvent.select().where(OutboxEvent.published_at.is_null()
                                       & (OutboxEvent.operation_id == operation_id))
            .order_by(OutboxEvent.id).limit(limit))
    return [Pending(r.id, r.type, r.body.encode(), r.event_id, r.created_at or datetime.now())
            for r in rows]


def unpublished(older_than: datetime, limit: int = 500) -> list[Pending]:
    """Events whose publish was not confirmed (a crash between commit and publish)."""
    rows = (OutboxEvent.select().where(OutboxEvent.published_at.is_null()
                                       & (OutboxEvent.created_at < older_than))
            .order_by(OutboxEvent.id).limit(limit))
    return [Pending(r.id, r.type, r.body.encode(), r.event_id, r.created_at or older_than)
            for r in rows]
