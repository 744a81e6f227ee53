"""Intake: turn a billing event into an operation row and its first nudge, or refuse it with a
reason. Nothing here talks to Proxmox; everything is one database transaction.

Order per service: the orders queue has a single active consumer, so events reach intake in the
order billing published them (see README, "Order of events"), and intake records operations in
that order; a service's operations start in id order. An event for a service whose ``create``
has not arrived yet is held (``held_events``) and replayed right after the create, or refused
once ``hold_unknown_service_s`` has passed.

What can be checked without Proxmox is checked here, so a request that cannot be done never
becomes an operation: limits of the package, snapshots and backups that exist, a suspended or
terminated service, a host name another live service holds, an idempotency key reused for a
different request.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from peewee import IntegrityError, OperationalError

from pvekvm import backup_reach, dberrors, picker, placement, rdns_policy, service_changes
from pvekvm.addresses import held_row
from pvekvm.catalog_cache import catalog_named, catalog_row
from pvekvm.config import EngineSettings
from pvekvm.db import values
from pvekvm.lifecycle import (
    GONE,
    SUSPENDED_STATUSES,
    UNFINISHED,
    OpStatus,
    ServiceStatus,
    machine_of_event,
    refusal,
)
from pvekvm.limits import MAX_SERVICE_ID
from pvekvm.models import (
    Backup,
    BackupSchedule,
    HeldEvent,
    Operation,
    Product,
    ProductLocation,
    Service,
    Snapshot,
    Template,
    database,
)
from pvekvm.validation import is_valid_hostname
from pvekvm.wire.orders import (
    BackupScheduleEvent,
    CreateEvent,
    Event,
    InvalidEvent,
    parse_event,
    request_hash,
)
from steps import firewall, hostname
from steps.machine import Refused
from steps.machines import MACHINES
from steps.rescue import rescue_volume
from workers import operations, refusals
from workers.outcome import Outcome
from workers.refusals import INTAKE

log = logging.getLogger("pvekvm.intake")

# event type → the machine that carries it out (each machine declares its event; the others are
# handled here, without Proxmox)
KIND_OF: dict[str, str] = machine_of_event(MACHINES.values())
DEFAULTS = EngineSettings()
# what may not run while the service is in rescue mode (or will be when its turn comes): each
# would rewrite the disks or the CD-ROM and boot order rescue_on recorded (steps/rescue.py)
NOT_IN_RESCUE = frozenset({"reinstall", "reinstall_iso", "restore", "snapshot_rollback",
                           "iso_mount", "iso_unmount", "rescue_on"})
# billing's key seen before (as an operation, as a held event); events held for the service
_SEEN = ("SELECT (SELECT id FROM operations WHERE idempotency_key = %s), "
         "(SELECT id FROM held_events WHERE idempotency_key = %s), "
         "EXISTS (SELECT 1 FROM held_events WHERE service_id = %s)")
# a service in any status but terminated holds its host name
_HOSTNAME_HOLDER = ("(SELECT id FROM services WHERE hostname = %s AND id <> %s "
                    f"AND status <> '{ServiceStatus.TERMINATED}' LIMIT 1)")


def handle_order(body: bytes, engine: EngineSettings = DEFAULTS,
                 clusters: tuple[str, ...] = ()) -> Outcome:
    """One order from billing: refused, held, or an operation begun. ``clusters``: the
    clusters this engine serves (a create for a location outside them is refused; empty: no
    such check)."""
    try:
        event = parse_event(body)
        if event.service_id > MAX_SERVICE_ID:
            raise InvalidEvent(f"field 'service_id': {event.service_id} is out of range")
        try:
            with database.atomic():
                return _accept(event, body, engine, clusters)
        except (IntegrityError, Refused, OperationalError) as exc:
            # Lost a race: a copy of this event (or an order for the same host name) committed
            # between our reads, or InnoDB rolled us back as a deadlock's victim (an operation
            # of the same service starting at once). Decide again on what is committed now: a
            # copy is then a quiet duplicate, not a refusal.
            if isinstance(exc, OperationalError) \
                    and dberrors.classify(exc) is not dberrors.DbError.DEADLOCK:
                raise
            if isinstance(exc, Refused) and not Operation.select().where(
                    Operation.idempotency_key == event.idempotency_key).exists():
                raise
            with database.atomic():
                return _accept(event, body, engine, clusters)
    except (InvalidEvent, Refused) as exc:
        return Outcome(dead_reason=str(exc))


def _accept(event: Event, body: bytes, engine: EngineSettings,
            clusters: tuple[str, ...] = ()) -> Outcome:
    key, digest = event.idempotency_key, request_hash(event)
    seen, held_id, waiting = values(_SEEN, key, key, event.service_id) or (None, None, None)
    existing = Operation.get_by_id(seen) if seen is not None else None
    if existing is not None:
        if existing.request_hash and existing.request_hash != digest:
            raise Refused(f"idempotency key conflict: {key!r} was already used by operation "
                          f"{existing.id} ({existing.kind}, service {existing.service_id}) for "
                          f"a different order")
        # the same event again: nothing new; make sure it is moving
        again = operations.nudge_for(existing) if not existing.nudge_published else None
        return Outcome(publish=[again] if again else [],
                       log=[f"sid:{event.service_id} duplicate event {key}: "
                            f"operation {existing.id} already exists"])
    held = HeldEvent.get_by_id(held_id) if held_id is not None else None
    if held is not None:
        if request_hash(parse_event(bytes(held.body))) != digest:
            raise Refused(f"idempotency key conflict: {key!r} was already used by a held event "
                          f"(service {held.service_id}) for a different order")
        return Outcome(log=[f"sid:{event.service_id} duplicate event {key}: already held"])
    if isinstance(event, BackupScheduleEvent):
        return _save_schedule(event)
    kind = KIND_OF.get(event.type)
    if kind is None or kind not in MACHINES:
        raise Refused(f"event type {event.type!r} is not supported by this engine version")
    _check_key_count(event, engine)
    if isinstance(event, CreateEvent):
        created = _create_service(event, engine.catalog_cache_s, clusters)
        out = operations.begin(event.service_id, kind, key, {}, digest, engine.deploy_window,
                               created)
        # only intake (one active consumer) holds events: none held now, none can appear
        return out.merge(_replay_held(event.service_id, engine)) if waiting else out
    service = Service.get_or_none(Service.id == event.service_id)
    if service is None:
        return _hold(event, body, engine.hold_unknown_service_s)
    params = _params(event, service, engine)
    return operations.begin(event.service_id, kind, key, params, digest)


def _check_key_count(event: Event, engine: EngineSettings) -> None:
    """The engine's bound on keys per service (the wire's own is sshkeys.MAX_KEYS)."""
    keys = getattr(event, "ssh_keys", None)
    if keys is not None and len(keys) > engine.max_ssh_keys:
        raise Refused(f"field 'ssh_keys': too many keys: {len(keys)} "
                           f"(max {engine.max_ssh_keys})")


def _keys_only_problem(product: Product, template: Template, keys: str | None) -> str | None:
    """A package without SSH password login needs the client's keys (a Linux template: a
    Windows one logs in with its password)."""
    if not product.ssh_pwauth and template.os_type != "windows" and not keys:
        return (f"the package {product.name} allows no SSH password login: send ssh_keys "
                "(the client's public keys)")
    return None


def _product_then(service: Service) -> Product:
    """The product the service will have when an order accepted now runs: that of the last
    change_package already accepted and not finished, else its own (the offer, keys-only
    login, ISO storage and snapshot room are the package's it will run under)."""
    queued = (Operation.select(Operation.params).where(
        (Operation.service_id == service.id) & Operation.status.in_(UNFINISHED)
        & (Operation.kind == "change_package")).order_by(Operation.id.desc()).first())
    product_id = json.loads(queued.params or "{}").get("product_id") if queued else None
    return Product.get_by_id(product_id or service.product_id)


def _check_now(kind: str, service: Service) -> None:
    """Refuse what may not run on the service as it will be when this event's turn comes: the
    operations already accepted (a terminate, the last suspend or unsuspend) count; the machine's
    ``starts_from`` decides (:func:`pvekvm.lifecycle.refusal`, as when its turn comes)."""
    kinds = [p.kind for p in Operation.select(Operation.kind).where(
        (Operation.service_id == service.id) & Operation.status.in_(UNFINISHED))
        .order_by(Operation.id)]
    if service.status in GONE or any(MACHINES[k].done_status in GONE for k in kinds):
        raise Refused(f"service {service.id} is terminated or being terminated")
    suspended = bool(service.suspended) or service.status in SUSPENDED_STATUSES
    for k in kinds:  # the last suspend or unsuspend accepted decides
        if MACHINES[k].suspended_after is not None:
            suspended = bool(MACHINES[k].suspended_after)
    status = ServiceStatus.SUSPENDED if suspended else \
        ServiceStatus.READY if service.status in SUSPENDED_STATUSES else service.status
    reason = refusal(MACHINES[kind], service.id, status, suspended)
    if reason is not None:
        raise Refused(reason)
    rescue = service.rescue_before is not None
    for k in kinds:
        if k in ("rescue_on", "rescue_off"):
            rescue = k == "rescue_on"
    if rescue and kind == "rescue_on":
        raise Refused(f"service {service.id} is in rescue mode already")
    if rescue and kind in NOT_IN_RESCUE:
        raise Refused(f"service {service.id} is in rescue mode: send rescue_off first (a "
                      f"{kind} would change the disks or CD-ROM the rescue system works on)")
    if kind == "rescue_off" and not rescue:
        raise Refused(f"service {service.id} is not in rescue mode")


def _hold(event: Event, body: bytes, hold_unknown_s: float) -> Outcome:
    """Keep an event whose service does not exist yet until its create arrives."""
    if hold_unknown_s <= 0:
        raise Refused(f"unknown service {event.service_id}")
    now = datetime.now()
    HeldEvent.insert(service_id=event.service_id, idempotency_key=event.idempotency_key,
                     body=body, received_at=now,
                     expires_at=now + timedelta(seconds=hold_unknown_s)
                     ).on_conflict_ignore().execute()
    return Outcome(log=[f"sid:{event.service_id} {event.type} held: service unknown until its "
                        f"create arrives (at most {hold_unknown_s:g}s)"])


def _replay_held(service_id: int, engine: EngineSettings) -> Outcome:
    """Right after a create: the events that came before it, in the order they arrived. One
    that is refused now is recorded with its reason in this commit (the held row goes in the
    same one: a crash between cannot lose the refusal); the others become operations."""
    out = Outcome()
    held = HeldEvent.fetch("SELECT * FROM held_events WHERE service_id = %s ORDER BY id "
                           "FOR UPDATE", service_id)
    for row in held:
        row.delete_instance()
        try:
            event = parse_event(bytes(row.body))
            service = Service.get_by_id(service_id)
            params = _params(event, service, engine)
            kind = KIND_OF[event.type]
            out.merge(operations.begin(service_id, kind, event.idempotency_key, params,
                                       request_hash(event)))
        except (InvalidEvent, Refused) as exc:
            out.log.append(f"sid:{service_id} held event {row.idempotency_key} refused: {exc}")
            out.refusals.append(refusals.record(INTAKE, bytes(row.body), str(exc)))
    return out


def expired_held_events(now: datetime | None = None) -> list[HeldEvent]:
    """Held events whose create never came in time (the scheduler refuses them)."""
    return list(HeldEvent.select().where(HeldEvent.expires_at < (now or datetime.now()))
                .order_by(HeldEvent.id))


def offered_in(product: Product) -> dict[str, int]:
    """The locations (clusters) offering ``product``, each with the template it deploys there."""
    out = {str(product.cluster): int(product.template_id)}
    for loc in ProductLocation.select().where(ProductLocation.product_id == product.id):
        out[str(loc.cluster)] = int(loc.template_id)
    return out


def _location(product: Product, asked: str | None) -> tuple[str, int]:
    """(cluster, template id) the order deploys in: the one it asks for, or the product's only
    location; refused with the locations offering it otherwise."""
    offered = offered_in(product)
    if asked is None:
        if len(offered) > 1:
            raise Refused(f"product {product.name!r} is offered in several locations "
                          f"({', '.join(sorted(offered))}): the order must say which "
                          "(location)")
        asked = next(iter(offered))
    if asked not in offered:
        raise Refused(f"location {asked!r} does not offer product {product.name!r} (offered "
                      f"in: {', '.join(sorted(offered))})")
    return asked, offered[asked]


def _create_service(event: CreateEvent, max_age_s: float,
                    clusters: tuple[str, ...] = ()) -> Service:
    product = catalog_named(Product, event.product, max_age_s)
    if product is None:
        raise Refused(f"unknown product {event.product!r}")
    cluster, template_id = _location(product, event.location)
    if clusters and cluster not in clusters:
        raise Refused(f"location {cluster!r} is not a cluster of this engine's settings "
                      f"({', '.join(clusters)}): add it to [[clusters]]")
    if event.template:
        template = catalog_named(Template, event.template, max_age_s)
        if template is None:
            raise Refused(f"unknown template {event.template!r}")
        if template.cluster != cluster:
            raise Refused(f"template {event.template!r} is not in location {cluster!r}")
        problem = picker.offer_problem(product, template)
        if problem:
            raise Refused(problem)
    else:
        template = catalog_row(Template, template_id, max_age_s)
    hostname = event.hostname or f"{product.hostname_prefix}-{event.client_id}-{event.service_id}"
    if not event.hostname and product.dns_zone:
        hostname = f"{hostname}.{product.dns_zone}"
    if not is_valid_hostname(hostname):
        raise Refused(f"generated hostname {hostname!r} is not RFC 1123")
    hostname = hostname.lower().rstrip(".")
    old, holder = values(
        "SELECT (SELECT status FROM services WHERE id = %s), " + _HOSTNAME_HOLDER,
        event.service_id, hostname, event.service_id) or (None, None)
    if old is not None and old != ServiceStatus.TERMINATED:
        raise Refused(f"service {event.service_id} already exists (status {old})")
    _check_hostname_free(hostname, holder)
    if old is not None:
        service_changes.replace_terminated(event.service_id)
    keys = "\n".join(event.ssh_keys or ()) or None  # checked and canonical (wire/orders.py)
    problem = _keys_only_problem(product, template, keys)
    if problem:
        raise Refused(problem)
    return service_changes.create(
        id=event.service_id, client_id=event.client_id, product_id=product.id,
        template_id=template.id, email=event.email, hostname=hostname, cluster=cluster,
        status=ServiceStatus.PENDING, want_ipv6=bool(event.ipv6), language=event.language,
        ssh_keys=keys)


def create_service(event: CreateEvent, max_age_s: float, **columns: Any) -> Service:
    """A service row as a create makes it (the same checks: product, template, host name, a
    live service of that id), then given ``columns``: adoption (workers/adopt.py) records the
    status, node, MAC and login of the VM it takes over."""
    service = _create_service(event, max_age_s)
    if columns:
        service_changes.adopt(service, **columns)
    return service


def _check_hostname_free(hostname: str, holder: int | None) -> None:
    """One DNS name, one live service: another's name (``holder``: the live service other than
    this one holding it, read by ``_HOSTNAME_HOLDER``, compared case-insensitively by the
    column's collation) is refused; services.live_hostname's unique key settles a race."""
    if holder is not None:
        raise Refused(f"hostname {hostname!r} is held by live service {holder}")


def _params(event: Event, service: Service, engine: EngineSettings = DEFAULTS) -> dict[str, Any]:
    """What the operation needs from the event, checked against the catalog and the service;
    ids, no secrets. ``service`` holds the columns the service takes on when the operation
    completes."""
    kind = KIND_OF[event.type]
    _check_now(kind, service)
    data = event.payload()
    product = _product_then(service)
    if event.type == "change_package":
        new = Product.get_or_none(Product.name == data["product"])
        if new is None:
            raise Refused(f"unknown product {data['product']!r}")
        if service.cluster not in offered_in(new):
            raise Refused(f"product {new.name!r} is not offered in location {service.cluster!r} "
                          "(a package change keeps the VM in its cluster)")
        # its first step moves the service to the new package (service_changes.change_package)
        return {"product_id": new.id}
    if event.type == "reinstall":
        name = data.get("template")
        template = Template.get_or_none(Template.name == name) if name else \
            Template.get_by_id(service.template_id)
        if template is None:
            raise Refused(f"unknown template {name!r}")
        if template.cluster != service.cluster:
            raise Refused(f"template {name!r} is not in location {service.cluster!r}")
        problem = picker.offer_problem(product, template) \
            if template.id != service.template_id else None
        if problem:  # the service's own template stays allowed (a changed offer keeps it)
            raise Refused(problem)
        columns: dict[str, Any] = {"template_id": template.id}
        keys = _new_keys(data, service)
        problem = _keys_only_problem(product, template, keys)
        if problem:
            raise Refused(problem)
        if "ssh_keys" in data:
            columns["ssh_keys"] = keys
        return {"template_id": template.id, "service": columns}
    if event.type == "reset_password" and "ssh_keys" in data:
        keys = _new_keys(data, service)
        problem = _keys_only_problem(product, Template.get_by_id(service.template_id), keys)
        if problem:
            raise Refused(problem)
        return {"service": {"ssh_keys": keys}}
    if event.type == "language_change":  # the column is set when the operation completes
        return {"language": data["language"], "service": {"language": data["language"]}}
    if event.type == "reinstall_iso" and not product.iso_storage:
        raise Refused("the package has no ISO storage: no reinstall from an ISO")
    if event.type == "rescue_on":
        volume = rescue_volume(engine)
        if volume is None:
            raise Refused("rescue mode is not offered here ([engine] rescue_iso is not set)")
        return {"storage": volume[0], "iso": volume[1]}  # the ISO it boots, told to billing
    if event.type == "snapshot_create":
        _check_snapshot_room(service, product, data["name"])
    # a rollback or delete names a snapshot Proxmox may hold without us (an operator's): the
    # step checks Proxmox, the truth, and refuses an unknown name there
    if event.type == "backup_create":
        if not product.backup_storage or product.backup_limit <= 0:
            raise Refused("the package allows no backups")
        held = Backup.select().where(Backup.service_id == service.id).count()
        queued = _pending(service.id, "backup_create")
        if held + queued >= product.backup_limit:
            raise Refused(f"backup limit reached ({held + queued}/{product.backup_limit})")
    if event.type in ("rdns_set", "rdns_reset"):
        _check_holds_address(service, data["address"])
    if event.type == "rdns_set":  # what the database answers; the step asks DNS (FCrDNS)
        why = rdns_policy.problem(service, data["address"], data["hostname"],
                                  product.rdns_policy, None)
        if why:
            raise Refused(why)
    if event.type == "migrate" and data.get("node") in placement.in_maintenance(service.cluster):
        raise Refused(f"node {data['node']} is in maintenance: it takes no new VM")
    if event.type == "firewall_rules_set" and data["rules"]:
        why = firewall.rules_problem(product, len(data["rules"]))
        if why:
            raise Refused(why)
    if event.type == "hostname_change":
        why = hostname.hostname_problem(data["hostname"], service.id)
        if why:
            raise Refused(why)
    if event.type == "iso_mount" and not product.iso_storage:
        raise Refused("the package has no ISO storage")
    if "backup_id" in data:
        if Backup.get_or_none((Backup.id == data["backup_id"])
                              & (Backup.service_id == service.id)) is None:
            raise Refused(f"backup {data['backup_id']} does not belong to service {service.id}")
        backup = Backup.get_by_id(data["backup_id"])
        why = backup_reach.unreachable(backup.node, backup.storage, service.node)
        if event.type == "backup_restore" and why:
            raise Refused(f"backup {backup.id} cannot be restored: {why}")
        if event.type == "backup_restore" and _pending(service.id, "restore",
                                                       backup_id=data["backup_id"]):
            raise Refused(f"a restore of backup {data['backup_id']} is already pending: "
                          f"resume or cancel it")
    return data


def _new_keys(data: dict[str, Any], service: Service) -> str | None:
    """The keys the service has once the order is done: the order's (one copy, in the
    params' ``service`` columns, the step reads them there) or its own."""
    if "ssh_keys" not in data:
        return service.ssh_keys
    return "\n".join(data["ssh_keys"]) or None


def _check_holds_address(service: Service, address: str) -> None:
    """Reverse DNS only for an address the service holds (the step checks again at run time)."""
    if held_row(service.id, address) is None:
        raise Refused(f"address {address} is not held by service {service.id}")


def _check_snapshot_room(service: Service, product: Product, name: str) -> None:
    held = {s.name for s in Snapshot.select(Snapshot.name).where(Snapshot.service_id == service.id)}
    if name in held or _pending(service.id, "snapshot_create", name=name):
        raise Refused(f"snapshot {name!r} already exists")
    queued = _pending(service.id, "snapshot_create")
    if len(held) + queued >= product.snapshot_limit:
        raise Refused(f"snapshot limit reached ({len(held) + queued}/{product.snapshot_limit})")


def _pending(service_id: int, kind: str, **params: Any) -> int:
    """How many unfinished operations of ``kind`` (with these params) the service has."""
    rows = Operation.select(Operation.params).where(
        (Operation.service_id == service_id) & (Operation.kind == kind)
        & Operation.status.in_(UNFINISHED))
    return sum(1 for r in rows
               if all(json.loads(r.params or "{}").get(k) == v for k, v in params.items()))


SCHEDULE_WINDOW_MIN = 30  # the day in half hours: backup times are spread over them per node


def _spread_minute(service: Service) -> int:
    """A random minute of the day in one of the half hours the fewest backups of the service's
    node are scheduled in: the node's vzdump lock runs its backups one at a time, so times
    drawn at random alone would bunch some nodes' jobs into queues."""
    windows = [0] * (24 * 60 // SCHEDULE_WINDOW_MIN)
    rows = (BackupSchedule.select(BackupSchedule.minute_of_day)
            .join(Service, on=(Service.id == BackupSchedule.service_id))
            .where((Service.node == service.node) & (Service.id != service.id)
                   & (BackupSchedule.days != "")))
    for row in rows:
        windows[row.minute_of_day // SCHEDULE_WINDOW_MIN] += 1
    fewest = min(windows)
    emptiest = [i for i, n in enumerate(windows) if n == fewest]
    window = emptiest[secrets.randbelow(len(emptiest))]
    return window * SCHEDULE_WINDOW_MIN + secrets.randbelow(SCHEDULE_WINDOW_MIN)


def _save_schedule(event: BackupScheduleEvent) -> Outcome:
    """Backup days are saved at once; the time of day is drawn at random on every save (the
    manual's rule), in a half hour where the service's node has the fewest backups."""
    service = Service.get_or_none(Service.id == event.service_id)
    if service is None:
        raise Refused(f"unknown service {event.service_id}")
    minute = _spread_minute(service)
    BackupSchedule.insert(service_id=event.service_id, days=",".join(event.days),
                          minute_of_day=minute).on_conflict(
        update={BackupSchedule.days: ",".join(event.days),
                BackupSchedule.minute_of_day: minute}).execute()
    when = f"{minute // 60:02d}:{minute % 60:02d}" if event.days else "off"
    return Outcome(log=[f"sid:{event.service_id} backup schedule {','.join(event.days) or '-'}"
                        f" at {when}"])


__all__ = ["KIND_OF", "OpStatus", "create_service", "expired_held_events", "handle_order",
           "request_hash"]
