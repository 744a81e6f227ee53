"""Intake: turn a billing event into an operation row and its first nudge, or refuse it with a
reason. Nothing here talks to Proxmox; everything is one database transaction."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from peewee import IntegrityError

from producers.events import (
    BackupScheduleEvent,
    CreateEvent,
    Event,
    InvalidEvent,
    parse_event,
    request_hash,
)
from pvekvm.models import Backup, BackupSchedule, Operation, Product, Service, Template, database
from pvekvm.validation import is_valid_hostname
from steps.machines import MACHINES
from workers.engine import new_nudge_id, nudge_for, start_next_queued
from workers.outcome import Outcome

log = logging.getLogger("pvekvm.intake")
MAX_SERVICE_ID = 2**32 - 1

# event type → the machine that carries it out (the others are handled here, without Proxmox)
KIND_OF: dict[str, str] = {
    "create": "deploy", "change_package": "change_package", "reinstall": "reinstall",
    "suspend": "suspend", "unsuspend": "unsuspend", "terminate": "terminate",
    "snapshot_create": "snapshot_create", "snapshot_delete": "snapshot_delete",
    "snapshot_rollback": "snapshot_rollback", "backup_create": "backup_create",
    "backup_delete": "backup_delete", "backup_restore": "restore",
    "reset_password": "reset_password", "iso_mount": "iso_mount", "iso_unmount": "iso_unmount",
    "power": "power",
}
GONE = ("terminated", "terminating")


class Refused(Exception):
    """The event is well-formed but cannot be carried out (unknown product, …)."""


def handle_order(body: bytes) -> Outcome:
    try:
        event = parse_event(body)
        if event.service_id > MAX_SERVICE_ID:
            raise InvalidEvent(f"field 'service_id': {event.service_id} is out of range")
        try:
            with database.atomic():
                return _start(event)
        except (IntegrityError, Refused) as exc:
            # Lost a race to another worker: a copy of this event (or an order for the same
            # host name) committed between our reads — each statement sees what is committed
            # now. Decide again on that: a copy is then a quiet duplicate, not a refusal.
            if isinstance(exc, Refused) and not Operation.select().where(
                    Operation.idempotency_key == event.idempotency_key).exists():
                raise
            with database.atomic():
                return _start(event)
    except (InvalidEvent, Refused) as exc:
        return Outcome(dead_reason=str(exc))


def _start(event: Event) -> Outcome:
    existing = Operation.get_or_none(Operation.idempotency_key == event.idempotency_key)
    if existing is not None:  # the same event again: nothing new; make sure it is moving
        _check_same_order(existing, event)
        again = nudge_for(existing) if not existing.nudge_published else None
        return Outcome(publish=[again] if again else [],
                       mark_published=(existing.id, existing.nudge_id) if again else None,
                       log=[f"sid:{event.service_id} duplicate event "
                            f"{event.idempotency_key}: operation {existing.id} already exists"])
    if isinstance(event, BackupScheduleEvent):
        return _save_schedule(event)
    kind = KIND_OF.get(event.type)
    if kind is None or kind not in MACHINES:
        raise Refused(f"event type {event.type!r} is not supported by this engine version")
    if isinstance(event, CreateEvent):
        _create_service(event)
        params: dict[str, Any] = {}
    else:
        service = Service.get_or_none(Service.id == event.service_id)
        if service is None:
            raise Refused(f"unknown service {event.service_id}")
        if service.status in GONE:
            raise Refused(f"service {event.service_id} is {service.status}")
        params = _params(event, service)
    return start_operation(event.service_id, kind, event.idempotency_key, params,
                           request_hash=request_hash(event))


def _check_same_order(op: Operation, event: Event) -> None:
    """A key names one order: the same key with another service, type or fields is a
    conflict, refused with a reason (copies of the one event stay quiet duplicates)."""
    same = op.service_id == event.service_id and (
        op.request_hash == request_hash(event) if op.request_hash
        else op.kind == KIND_OF.get(event.type))
    if not same:
        raise Refused(f"idempotency key conflict: {event.idempotency_key!r} was already used "
                      f"by operation {op.id} ({op.kind}, service {op.service_id}) for a "
                      "different order")


def start_operation(service_id: int, kind: str, key: str, params: dict[str, Any],
                    request_hash: str | None = None) -> Outcome:
    """Record an operation (running, or queued behind the service's running one) and say which
    nudge starts it. Also used by the scheduler (snapshot expiry, scheduled backups)."""
    machine = MACHINES[kind]
    busy = Operation.get_or_none(Operation.active_service == service_id)
    nudge = new_nudge_id()
    fields = dict(service_id=service_id, kind=kind, idempotency_key=key,
                  request_hash=request_hash, params=json.dumps(params),
                  state=machine.first_state)
    try:
        with database.atomic():
            op = Operation.create(**fields, status="queued" if busy else "running",
                                  active_service=None if busy else service_id,
                                  nudge_id=None if busy else nudge)
    except IntegrityError:  # lost a race with another operation for this service: queue
        op = Operation.create(**fields, status="queued")
        if Operation.get_or_none(Operation.active_service == service_id) is None:
            nxt = start_next_queued(service_id)  # the other one finished meanwhile
            return Outcome(publish=[nxt] if nxt else [],
                           mark_published=(nxt.operation_id, nxt.nudge_id) if nxt else None)
        return Outcome(log=[f"sid:{service_id} {kind} queued"])
    if busy:
        return Outcome(log=[f"sid:{service_id} {kind} queued behind {busy.kind}"])
    if machine.busy_status:
        Service.update(status=machine.busy_status).where(Service.id == service_id).execute()
    return Outcome(publish=[nudge_for(op)], mark_published=(op.id, nudge),  # type: ignore[list-item]
                   log=[f"sid:{service_id} {kind} accepted (operation {op.id})"])


def _create_service(event: CreateEvent) -> None:
    product = Product.get_or_none(Product.name == event.product)
    if product is None:
        raise Refused(f"unknown product {event.product!r}")
    if event.template:
        template = Template.get_or_none(Template.name == event.template)
        if template is None:
            raise Refused(f"unknown template {event.template!r}")
    else:
        template = Template.get_by_id(product.template_id)
    hostname = event.hostname or f"{product.hostname_prefix}-{event.client_id}-{event.service_id}"
    if not event.hostname and product.dns_zone:
        hostname = f"{hostname}.{product.dns_zone}"
    hostname = hostname.lower()
    if not is_valid_hostname(hostname):
        raise Refused(f"generated hostname {hostname!r} is not RFC 1123")
    old = Service.get_or_none(Service.id == event.service_id)
    if old is not None and old.status != "terminated":
        raise Refused(f"service {event.service_id} already exists (status {old.status})")
    _check_hostname_free(hostname, event.service_id)
    if old is not None:
        old.delete_instance()
    Service.create(id=event.service_id, client_id=event.client_id, product_id=product.id,
                   template_id=template.id, email=event.email, hostname=hostname,
                   status="pending", want_ipv6=bool(event.ipv6))


def _check_hostname_free(hostname: str, service_id: int) -> None:
    """One DNS name, one live service: another's name is refused (compared case-insensitively
    by the column's collation; services.live_hostname's unique key settles a race)."""
    holder = Service.get_or_none((Service.hostname == hostname) & (Service.id != service_id)
                                 & (Service.status != "terminated"))
    if holder is not None:
        raise Refused(f"hostname {hostname!r} is held by live service {holder.id}")


def _params(event: Event, service: Service) -> dict[str, Any]:
    """What the operation needs from the event, checked against the catalog; ids, no secrets.
    ``service`` holds the columns the service takes on when the operation completes."""
    data = event.payload()
    if event.type == "change_package":
        product = Product.get_or_none(Product.name == data["product"])
        if product is None:
            raise Refused(f"unknown product {data['product']!r}")
        return {"product_id": product.id, "service": {"product_id": product.id}}
    if event.type == "reinstall":
        name = data.get("template")
        template = Template.get_or_none(Template.name == name) if name else \
            Template.get_by_id(service.template_id)
        if template is None:
            raise Refused(f"unknown template {name!r}")
        return {"template_id": template.id, "service": {"template_id": template.id}}
    if "backup_id" in data and Backup.get_or_none(
            (Backup.id == data["backup_id"]) & (Backup.service_id == service.id)) is None:
        raise Refused(f"backup {data['backup_id']} does not belong to service {service.id}")
    return data


def _save_schedule(event: BackupScheduleEvent) -> Outcome:
    """Backup days are saved at once; the time of day is drawn at random on every save to
    spread the backup load over the storage (the manual's rule)."""
    if Service.get_or_none(Service.id == event.service_id) is None:
        raise Refused(f"unknown service {event.service_id}")
    minute = secrets.randbelow(24 * 60)
    BackupSchedule.insert(service_id=event.service_id, days=",".join(event.days),
                          minute_of_day=minute).on_conflict(
        update={BackupSchedule.days: ",".join(event.days),
                BackupSchedule.minute_of_day: minute}).execute()
    when = f"{minute // 60:02d}:{minute % 60:02d}" if event.days else "off"
    return Outcome(log=[f"sid:{event.service_id} backup schedule {','.join(event.days) or '-'}"
                        f" at {when}"])
