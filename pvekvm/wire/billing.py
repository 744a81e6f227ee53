"""The events the engine sends billing on ``{ns}.events`` (routing key = type), one model per
type: what the shipped JSON Schemas (``schemas/events/billing/``) say and what
tests/e2e/test_event_schemas.py holds every published event to.

The bodies are written by ``workers/outbox.py`` (and ``workers/traffic.py`` for
``usage.reported``); these models describe them, field by field. Within version 1 a type may
gain optional fields (a consumer ignores fields it does not know: the schemas allow them), never
lose or change one. To add a field: declare it here, optional (with a default) unless every
event of the type carries it, then ``python -m pvekvm.wire`` rewrites the shipped files.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"},
                                 description="RFC 3339, UTC")]
Kind = Annotated[str, Field(description="the operation's kind (python -m pvekvm machines): "
                            "deploy, suspend, snapshot_create, ...")]
State = Annotated[str, Field(description="the operation's state when this happened (the "
                             "manual's step names; python -m pvekvm history shows them)")]


class BillingEvent(BaseModel):
    """Every event: de-duplicate by ``event_id`` (delivery is at least once)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: Annotated[str, Field(json_schema_extra={"format": "uuid"})]
    type: str
    service_id: int | None = Field(description="the service it is about (null: an order that "
                                   "named none that could be read)")
    operation_id: int | None = Field(description="the operation it is about (null: no "
                                     "operation)")
    idempotency_key: str | None = Field(description="the key of billing's order (null: an "
                                        "event no order caused)")
    occurred_at: Timestamp


class OperationEvent(BillingEvent):
    """What the operation is about, when its kind names one (workers/outbox.py ABOUT)."""

    service_id: int
    operation_id: int
    kind: Kind
    action: str | None = Field(None, description="power: start, stop, shutdown, reboot")
    snapshot: str | None = Field(None, description="snapshot operations: the snapshot's name")
    backup_id: int | None = Field(None, description="backup_delete, restore; and a "
                                  "backup_create's completion: the new backup")
    iso: str | None = Field(None, description="iso_mount, reinstall_iso: the ISO; rescue_on: "
                            "the rescue ISO")
    address: str | None = Field(None, description="rDNS: the address")
    hostname: str | None = Field(None, description="rDNS: the PTR name; service.ready and "
                          "hostname_change: the VM's")
    node: str | None = Field(None, description="migrate: the node asked for (null: placement)")
    drain: str | None = Field(None, description="migrate: the node a drain empties")
    language: str | None = Field(None, description="language_change: the client's language "
                                 "now (normalised tag: de, pt-BR)")


class OperationAccepted(OperationEvent):
    """An order became an operation (it runs now or is queued behind another)."""

    type: Literal["operation.accepted"]


class OperationCompleted(OperationEvent):
    """The operation reached its last state."""

    type: Literal["operation.completed"]
    state: State
    result: Literal["done", "skipped"] | None = Field(
        None, description="done; skipped: nothing to do or nothing it could do (reason says)")
    reason: str | None = Field(None, description="why it was skipped")
    status: str | None = Field(description="the service's status it left (ready, suspended, "
                               "terminated, ...); null when the service's status is unchanged")


class OperationFailed(OperationEvent):
    """Refused when its turn came or by Proxmox: nothing more is done; the service is freed."""

    type: Literal["operation.failed"]
    reason: str
    choices: list[dict[str, object]] | None = Field(
        None, description="a failed restore: the events the client may send next, as bodies "
        "to send ({type: backup_restore, backup_id}, {type: reinstall})")
    state: State | None = Field(None, description="absent: it failed before it started (the "
                                "service was suspended or terminated meanwhile)")


class OperationPaused(OperationEvent):
    """A fault retrying could not fix: it waits at ``state``, holding the service."""

    type: Literal["operation.paused"]
    state: State
    error: str
    auto_resume: bool = Field(description="it resumes by itself (after auto_resume_in_s)")
    auto_resumes: int = Field(ge=0, description="how often it resumed by itself so far")
    dependency: str | None = Field(description="what did not answer (proxmox, database, "
                                   "dns, mail, ...), null: another fault")
    auto_resume_in_s: int | None = Field(None, description="present when auto_resume")


class OperationWaiting(OperationEvent):
    """No node of the product's has room for the VM yet: the deploy waits (holding nothing on
    any node), looks again every few seconds and goes on by itself when room appears, or
    fails with this reason after ``[placement] wait_max_s``. Sent once per wait."""

    type: Literal["operation.waiting"]
    state: State
    reason: str = Field(description="e.g. no node of group X has 8.0 GiB memory free; best "
                        "pve3 with 5.1 GiB")


class OperationResumed(OperationEvent):
    type: Literal["operation.resumed"]
    state: State
    by: Literal["auto", "operator"]
    auto_resumes: int = Field(ge=0)


class OperationCancelled(OperationEvent):
    """An operator abandoned it (python -m pvekvm cancel); Proxmox is not touched."""

    type: Literal["operation.cancelled"]
    state: State
    choices: list[dict[str, object]] | None = Field(
        None, description="a cancelled restore: the events the client may send next")


class EventRefused(BillingEvent):
    """A billing order that never became an operation, with billing's key and type when they
    could be read from it."""

    type: Literal["event.refused"]
    operation_id: None = None
    event_type: str | None = Field(description="the order's type, as sent (null: unreadable)")
    reason: str = Field(description="why, naming the field; never the value sent")


class ServiceReady(OperationEvent):
    """Where the client's VM is; never a password (the client gets it by mail)."""

    type: Literal["service.ready"]
    status: Literal["ready"]
    vmid: int
    node: str
    hostname: str
    ipv4: list[str] = Field(description="primary first, then the additional addresses")
    ipv6: list[str] = Field(description="for a routed prefix, its first host address")
    os_user: str | None
    ipv6_prefixes: list[str] | None = Field(None, description="routed IPv6 prefixes (CIDR); "
                                            "absent when none")
    placement: str | None = Field(None, description="why the VM is on ``node`` (the "
                                  "placement's reason: its headroom there); absent when the "
                                  "operation chose no node")
    location: str | None = Field(None, description="the cluster the VM is in (create's "
                                 "location)")


class ServiceSuspended(OperationEvent):
    type: Literal["service.suspended"]
    status: Literal["suspended"]


class ServiceTerminated(OperationEvent):
    type: Literal["service.terminated"]
    status: Literal["terminated"]


class _RateChange(OperationEvent):
    period: str = Field(pattern=r"^\d{4}-\d{2}$", description="the month (UTC), YYYY-MM")
    product: str
    rate_mbps: float = Field(ge=0, description="net0's rate now, MB/s; 0 = unlimited")
    used_bytes: int | None = Field(description="the month's traffic the decision saw")
    quota_bytes: int | None = Field(description="the package's monthly quota")
    reason: str


class ServiceThrottled(_RateChange):
    """Over the package's monthly traffic quota: net0 runs at the overage rate."""

    type: Literal["service.throttled"]


class ServiceUnthrottled(_RateChange):
    """net0 back at the package's rate (a new month, or a package with room left)."""

    type: Literal["service.unthrottled"]


class ServiceMigrated(OperationEvent):
    """A migrate operation completed: the VM is on ``node`` now."""

    type: Literal["service.migrated"]
    node: str | None = Field(description="the node the VM is on now")
    from_node: str | None = Field(description="where it was")
    vmid: int | None
    backups_left: list[int] = Field(
        default_factory=list, description="backup ids left on from_node's local storage: not "
        "restorable while the VM is elsewhere (deleting them works)")
    iso_reattached: str | None = Field(
        default=None, description="the ISO volume detached for the move and mounted again")
    iso_left_out: str | None = Field(
        default=None, description="the ISO detached for the move that the new node cannot "
        "reach, and why ('volid: reason'): the CD-ROM is empty")


RescueReason = Annotated[str | None, Field(
    None, description="null: the rescue_on/rescue_off operation completed; else what changed "
    "rescue mode instead (a rescue_on or rescue_off that failed or was cancelled after its boot "
    "order step, a snapshot rollback or restore that brought a config taken in rescue mode "
    "back; ``kind`` names the operation)")]


class ServiceRescueOn(OperationEvent):
    """The service is in rescue mode now: the VM boots the rescue ISO (``iso``, for a rescue_on),
    its disks attached; rescue_off boots the disk. Sent once per change."""

    type: Literal["service.rescue_on"]
    reason: RescueReason


class ServiceRescueOff(OperationEvent):
    """The service left rescue mode: the VM boots from its disk again (boot order as before).
    Sent once per change."""

    type: Literal["service.rescue_off"]
    reason: RescueReason


class BackupGone(BillingEvent):
    """The storage no longer holds a backup we listed (pruned, deleted outside pvekvm): it is
    no longer offered (workers/backup_sync.py)."""

    type: Literal["backup.gone"]
    service_id: int
    operation_id: None = None
    backup_id: int
    storage: str
    created_at: str | None
    note: str | None


class UsageReported(BillingEvent):
    """A service's traffic in one UTC hour so far; billing keeps the latest per service and
    period."""

    type: Literal["usage.reported"]
    service_id: int
    operation_id: None = None
    idempotency_key: None = None
    period_start: Timestamp
    period_end: Timestamp
    bytes_in: int = Field(ge=0)
    bytes_out: int = Field(ge=0)
    final: bool = Field(description="the hour is over and fully counted")


BILLING_EVENTS: dict[str, type[BillingEvent]] = {
    str(cls.model_fields["type"].annotation.__args__[0]): cls  # type: ignore[union-attr]
    for cls in (OperationAccepted, OperationCompleted, OperationFailed, OperationPaused,
                OperationWaiting,
                OperationResumed, OperationCancelled, EventRefused, ServiceReady,
                ServiceSuspended, ServiceTerminated, ServiceThrottled, ServiceUnthrottled,
                ServiceMigrated, ServiceRescueOn, ServiceRescueOff, BackupGone, UsageReported)}
