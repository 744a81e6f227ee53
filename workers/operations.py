"""The one owner of the ``operations`` row: every change of an operation's status, state or live
nudge goes through this module, inside the caller's transaction; :func:`deliver` publishes what
a change owes and marks it published.

Invariants:
- an operation holds its service (``active_service`` = service id) from the moment it runs until
  it is done, failed or cancelled; a paused operation still holds it; queued ones wait behind it
  and start in id order (the order intake accepted them);
- state moves only by compare-and-swap on (id, version, nudge id) (:func:`cas`); a change that
  names a next step also names its one live nudge (``nudge_id``), published after the commit;
- a refusal (:func:`fail`) and a cancel free the service at once and give it back the status it
  had before the operation ran; a fault pauses (:func:`pause`) and keeps the service.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from peewee import IntegrityError

from pvekvm import backup_reach, oplog, placement, service_changes
from pvekvm.config import EngineSettings
from pvekvm.db import scalar
from pvekvm.lifecycle import FINISHED as FINISHED  # re-exported: the core owns them now
from pvekvm.lifecycle import UNFINISHED as UNFINISHED
from pvekvm.lifecycle import Machine, OpStatus, ServiceStatus, refusal
from pvekvm.messaging import Sink
from pvekvm.models import AuditLog, Backup, Operation, Service, database
from steps.machines import MACHINES
from workers import outbox
from workers.outcome import Nudge, Outcome
from workers.pauses import dependency_of_reason, next_auto_resume


class LostRace(Exception):
    """Another delivery moved the operation on first; this one must change nothing."""


def new_nudge_id() -> str:
    return str(uuid.uuid4())


def nudge_for(op: Operation, machines: Mapping[str, Machine] = MACHINES) -> Nudge | None:
    """The message that moves ``op`` on from where it stands (None when nothing runs)."""
    machine = machines.get(op.kind)
    t = machine.at(op.state) if machine else None
    if t is None or not op.nudge_id:
        return None
    return Nudge(t.pool, op.id, op.nudge_id, op.state, float(op.nudge_delay_s or 0))


_FIRST_QUEUED = ("SELECT * FROM operations WHERE service_id = %s "
                 f"AND status = '{OpStatus.QUEUED}' "
                 "ORDER BY id LIMIT 1 FOR UPDATE")
_CAS_SQL: dict[tuple[str, ...], str] = {}  # the columns a cas changes -> its statement


def cas(op: Operation, nudge: str | None, **changes: Any) -> None:
    """Compare-and-swap on (id, version, nudge): the losing side of a race changes nothing.
    Every step message runs one: its statement is written once per set of columns (peewee
    building it each time cost more CPU than MariaDB running it); ``nudge`` None matches a
    row with no live nudge (``<=>``)."""
    changes.setdefault("version", op.version + 1)
    fields = [Operation._meta.fields[name] for name in changes]
    key = tuple(changes)
    sql = _CAS_SQL.get(key)
    if sql is None:
        sets = ", ".join(f"`{f.column_name}` = %s" for f in fields)
        sql = _CAS_SQL[key] = (f"UPDATE operations SET {sets} "
                               "WHERE id = %s AND version = %s AND nudge_id <=> %s")
    values = [f.db_value(v) for f, v in zip(fields, changes.values(), strict=True)]
    if database.execute_sql(sql, (*values, op.id, op.version, nudge)).rowcount != 1:
        raise LostRace()
    for k, v in changes.items():
        setattr(op, k, v)


# --- moving on (the step runner: workers/engine.py) -----------------------------------------

def advance(op: Operation, nudge: str, state: str) -> str:
    """The step at ``op``'s state succeeded (and the steps it passed by were recorded): the
    operation is at ``state``, its attempts, task and error cleared, with a fresh live nudge
    (returned, published after the commit; the message in hand becomes the previous one)."""
    nxt = new_nudge_id()
    cas(op, nudge, state=state, attempt=0, nudge_id=nxt, prev_nudge_id=nudge,
        nudge_published=False, nudge_delay_s=0, upid=None, upid_node=None, polls=0,
        step_started_at=None, error=None)
    return nxt


def reschedule(op: Operation, nudge: str, delay_s: float, *, upid: str | None,
               node: str | None, polls: int, started: datetime,
               attempt: int | None = None) -> str:
    """The step runs again at the same state after ``delay_s``: to poll the Proxmox task
    ``upid`` on ``node`` (``polls`` looks so far), or to retry (``attempt``: the attempts
    counted so far). The fresh live nudge is returned; ``started``: when the step's first
    attempt began (its step_runs duration)."""
    nxt = new_nudge_id()
    changes: dict[str, Any] = dict(upid=upid, upid_node=node, polls=polls, nudge_id=nxt,
                                   prev_nudge_id=nudge, nudge_published=False,
                                   nudge_delay_s=delay_s, step_started_at=started)
    if attempt is not None:
        changes["attempt"] = attempt
    cas(op, nudge, **changes)
    return nxt


def renudged(op: Operation, nudge_id: str) -> None:
    """The reconciler published ``op``'s live nudge ``nudge_id`` again: its ``updated_at``
    restarts, so the nudge is not sent again before it is stale once more."""
    Operation.update(updated_at=datetime.now()).where(
        (Operation.id == op.id) & (Operation.nudge_id == nudge_id)).execute()


# --- starting -------------------------------------------------------------------------------

def begin(service_id: int, kind: str, key: str, params: dict[str, Any],
          request_hash: str | None = None, window: int = 0,
          created: Service | None = None,
          machines: Mapping[str, Machine] = MACHINES) -> Outcome:
    """Record an operation: it runs now when the service is free (and, for a machine under
    admission, fewer than ``window`` of its kind run), else it is queued (intake and the
    scheduler start operations only here). ``created``: the service row this transaction has
    just written (nothing holds it; it need not be read again)."""
    op = Operation.create(service_id=service_id, kind=kind, idempotency_key=key,
                          params=json.dumps(params), state=machines[kind].first_state,
                          status=OpStatus.QUEUED, request_hash=request_hash)
    accepted = outbox.operation_event("operation.accepted", op)
    holder = None if created is not None else \
        scalar("SELECT kind FROM operations WHERE active_service = %s", service_id)
    if holder is not None:
        return Outcome(log=[f"sid:{service_id} {kind} queued behind {holder} "
                            f"(operation {op.id})"], events=[accepted])
    out = Outcome(log=[f"sid:{service_id} {kind} accepted (operation {op.id})"],
                  events=[accepted])
    return out.merge(start_next_queued(service_id, window, created, machines))


def start_next_queued(service_id: int, window: int = 0, known: Service | None = None,
                      machines: Mapping[str, Machine] = MACHINES) -> Outcome:
    """The oldest queued operation of a free service starts; one that may not run now (the
    service is suspended or gone) fails with its reason and the next one is tried; one under
    admission waits while ``window`` of its kind run (first come, first served in a burst).
    ``known``: the service's row as this transaction has it (else it is read)."""
    out = Outcome()
    while True:
        op = Operation.fetch_one(_FIRST_QUEUED, service_id)
        if op is None:
            return out
        machine = machines[op.kind]
        service = known if known is not None else Service.row(service_id)
        reason = not_allowed_now(machine, service)
        if reason is not None:
            database.execute_sql(
                "UPDATE operations SET status = %s, error = %s, finished_at = %s, "
                "version = version + 1 WHERE id = %s",
                (OpStatus.FAILED.value, reason, datetime.now(), op.id))
            out.log.append(oplog.refused_line(machine, op, reason))
            out.events.append(outbox.operation_event("operation.failed", op, reason=reason))
            continue
        if machine.admission and window and running(op.kind) >= window:
            return out  # its turn comes when one of its kind ends (admit_next)
        nudge = new_nudge_id()
        try:
            with database.atomic():
                database.execute_sql(
                    "UPDATE operations SET status = %s, active_service = %s, nudge_id = %s, "
                    "nudge_published = 0, prior_status = %s, version = version + 1 "
                    "WHERE id = %s",
                    (OpStatus.RUNNING.value, service_id, nudge, service.status, op.id))
        except IntegrityError:  # another operation holds the service; it starts ours when done
            return out
        if machine.busy_status:
            service_changes.mark_busy(service_id, machine.busy_status)
        out.publish.append(Nudge(machine.transitions[0].pool, op.id, nudge, op.state))
        return out


def unpublished_successors(op: Operation,
                           machines: Mapping[str, Machine] = MACHINES) -> list[Nudge]:
    """The first nudge of the operation that ``op``'s end started on its service, while the
    broker has not confirmed it (a crash between that commit and its publish): the redelivered
    message that ended ``op`` sends it again rather than waiting for the reconciler."""
    nxt = Operation.get_or_none((Operation.active_service == op.service_id)
                                & (Operation.status == OpStatus.RUNNING)
                                & (Operation.nudge_published == False)  # noqa: E712
                                & (Operation.id > op.id))
    again = nudge_for(nxt, machines) if nxt is not None else None
    return [again] if again is not None else []


def running(kind: str) -> int:
    return int(scalar("SELECT COUNT(*) FROM operations WHERE kind = %s AND status = %s",
                      kind, OpStatus.RUNNING.value))


def admit_next(kind: str, window: int, machines: Mapping[str, Machine] = MACHINES) -> Outcome:
    """An operation under admission ended: the oldest one of its kind waiting for a turn (on a
    free service) starts."""
    if not window or not machines[kind].admission:
        return Outcome()
    op = Operation.fetch_one(
        "SELECT o.* FROM operations o WHERE o.kind = %s AND o.status = %s AND NOT EXISTS "
        "(SELECT 1 FROM operations a WHERE a.active_service = o.service_id) "
        "ORDER BY o.id LIMIT 1", kind, OpStatus.QUEUED.value)
    return start_next_queued(op.service_id, window, machines=machines) if op is not None \
        else Outcome()


def not_allowed_now(machine: Machine, service: Service) -> str | None:
    """Why ``machine`` may not run on ``service`` now (None: it may): its ``starts_from``."""
    return refusal(machine, service.id, service.status, bool(service.suspended))


# --- ending ---------------------------------------------------------------------------------

def finish(op: Operation, machine: Machine, out: Outcome, window: int = 0,
           skipped: str | None = None, machines: Mapping[str, Machine] = MACHINES) -> Outcome:
    """The machine reached its final state: done; the service takes on its new columns and
    status (a suspended service stays suspended); the next queued operation starts.
    ``skipped``: why a one-step operation's step found nothing to do (billing hears
    ``result: skipped`` and the reason)."""
    cas(op, op.nudge_id, status=OpStatus.DONE, active_service=None, nudge_id=None,
        finished_at=datetime.now())
    given = json.loads(op.params or "{}").get("service", {})
    updates = {k: v for k, v in given.items() if k in machine.sets_when_done}
    if machine.suspended_after is not None:
        updates["suspended"] = machine.suspended_after
    status = machine.done_status
    if status == ServiceStatus.READY and updates.get("suspended", _suspended(op.service_id)):
        status = ServiceStatus.SUSPENDED
    if status:
        updates["status"] = status
    service_changes.complete(op.service_id, updates)
    out.log.append(oplog.complete_line(machine, op, status or "done"))
    out.events.append(outbox.completion(op, status or _status(op.service_id), skipped))
    service_event = outbox.service_event(status, op) if status else None
    if service_event is not None:
        out.events.append(service_event)
    if machine.completed_event:
        out.events.append(outbox.completed_event(machine.completed_event, op))
    _rescue_change(out, op, "done")
    out.merge(start_next_queued(op.service_id, window, machines=machines))
    return out.merge(admit_next(op.kind, window, machines))


def fail(op: Operation, machine: Machine, nudge: str | None, reason: str,
         window: int = 0, machines: Mapping[str, Machine] = MACHINES) -> Outcome:
    """A refusal: the operation fails at once with ``reason``, the service is freed and given
    back the status it had, and the next queued operation starts."""
    cas(op, nudge, status=OpStatus.FAILED, error=reason[:4000], active_service=None,
        nudge_id=None, prev_nudge_id=nudge, upid=None, upid_node=None, step_started_at=None,
        finished_at=datetime.now())
    _give_back_service(op, machine)
    if op.kind == "deploy":
        placement.release(op.id)
    extra = {"choices": way_out(op, machine)} if machine.way_out else {}
    out = Outcome(log=[oplog.refused_line(machine, op, reason)],
                  events=[outbox.operation_event("operation.failed", op, state=op.state,
                                                 reason=reason, **extra)])
    _rescue_change(out, op, "failed")
    out.merge(start_next_queued(op.service_id, window, machines=machines))
    return out.merge(admit_next(op.kind, window, machines))


def way_out(op: Operation, machine: Machine) -> list[dict[str, object]]:
    """What the client may do next after ``machine`` failed, as event bodies to send (type and
    parameters; intake accepts each for the service now): a restore offers every backup the
    service still holds and can restore where its VM is (pvekvm/backup_reach.py; the one that
    failed first: trying again) and a reinstall."""
    choices: list[dict[str, object]] = []
    for kind in machine.way_out:
        if kind == "backup_restore":
            failed = json.loads(op.params or "{}").get("backup_id")
            node = Service.get_by_id(op.service_id).node
            held = [b.id for b in Backup.select(Backup.id, Backup.node, Backup.storage).where(
                Backup.service_id == op.service_id).order_by(Backup.created_at.desc())
                if not backup_reach.unreachable(b.node, b.storage, node)]
            held.sort(key=lambda i: i != failed)  # stable: the failed one, then newest first
            choices += [{"type": kind, "backup_id": i} for i in held]
        else:
            choices.append({"type": kind})
    return choices


def pause(op: Operation, nudge: str, reason: str, dependency: str | None = None,
          engine: EngineSettings | None = None) -> Outcome:
    """A fault retrying could not fix: wait at the last good state, still holding the service;
    with ``engine``, it resumes by itself on its backoff (workers/autoresume.py) unless that
    has run out; ``dependency``: the one that did not answer (None: another fault)."""
    now = datetime.now()
    since, resumes = op.paused_since, op.auto_resumes
    if since is None or _progressed_since(op):
        since, resumes = now, 0
    at = next_auto_resume(engine, since, resumes, now) if engine else None
    dependency = dependency or dependency_of_reason(reason)
    cas(op, nudge, status=OpStatus.PAUSED, error=reason[:4000], nudge_id=None,
        prev_nudge_id=nudge, upid=None, upid_node=None, step_started_at=None, paused_at=now,
        paused_since=since, auto_resumes=resumes, auto_resume_at=at,
        pause_dependency=dependency)
    when: dict[str, Any] = {"auto_resume": at is not None, "auto_resumes": op.auto_resumes,
                            "dependency": dependency}
    if at is not None:
        when["auto_resume_in_s"] = round((at - now).total_seconds())
    return Outcome(events=[outbox.operation_event("operation.paused", op, state=op.state,
                                                  error=reason[:1000], **when)])


def _progressed_since(op: Operation) -> bool:
    """A step was done after the operation's last pause: this pause is a new one (its backoff
    and its ``auto_resume_for_h`` start afresh)."""
    return op.paused_at is not None and scalar(
        "SELECT 1 FROM step_runs WHERE operation_id = %s AND created_at > %s "
        "AND result IN ('success', 'skip', 'warn') LIMIT 1", op.id, op.paused_at) is not None


def resume(op: Operation, auto: bool = False) -> Outcome:
    """Restart a paused operation at the state it waits at, attempts counted afresh. ``auto``:
    the scheduler's auto-resume (counted); an operator's resume starts the backoff afresh."""
    if op.status != OpStatus.PAUSED:
        raise ValueError(f"operation {op.id} is {op.status}, not paused")
    nudge = new_nudge_id()
    count: dict[str, Any] = ({"auto_resumes": op.auto_resumes + 1} if auto
                             else {"auto_resumes": 0, "paused_since": None})
    cas(op, None, status=OpStatus.RUNNING, nudge_id=nudge, nudge_published=False, attempt=0,
        polls=0, nudge_delay_s=0, error=None, auto_resume_at=None, **count)
    again = nudge_for(op)
    assert again is not None
    line = f"sid:{op.service_id} {op.kind} resumed at ({op.state})"
    if auto:
        line += (f" by itself (auto-resume {op.auto_resumes}"
                 + (f", {op.pause_dependency} answers again)" if op.pause_dependency else ")"))
    return Outcome(publish=[again], log=[line],
                   events=[outbox.operation_event("operation.resumed", op, state=op.state,
                                                  by="auto" if auto else "operator",
                                                  auto_resumes=op.auto_resumes)])


def cancel(op: Operation, who: str = "operator", window: int = 0) -> Outcome:
    """Abandon a paused (or queued) operation: recorded, the service freed and given back its
    status, the next queued operation started. Proxmox is not touched."""
    if op.status not in (OpStatus.PAUSED, OpStatus.QUEUED):
        raise ValueError(f"operation {op.id} is {op.status}: only a paused or queued "
                         f"operation can be cancelled")
    machine = MACHINES[op.kind]
    was = op.status
    cas(op, None, status=OpStatus.CANCELLED, active_service=None, finished_at=datetime.now(),
        auto_resume_at=None,
        error=f"cancelled by {who} at ({op.state})" + (f"; was: {op.error}" if op.error else ""))
    AuditLog.create(service_id=op.service_id, operation_id=op.id, event="operation_cancelled",
                    detail=f"{op.kind} cancelled by {who} at ({op.state})",
                    created_at=datetime.now())
    if was == OpStatus.PAUSED:
        _give_back_service(op, machine)
    if op.kind == "deploy":
        placement.release(op.id)
    extra = {"choices": way_out(op, machine)} if machine.way_out else {}
    out = Outcome(log=[f"--- {machine.title} cancelled: service={op.service_id} "
                       f"at ({op.state}) ---"],
                  events=[outbox.operation_event("operation.cancelled", op, state=op.state,
                                                 **extra)])
    _rescue_change(out, op, "cancelled")
    if was == OpStatus.PAUSED:
        out.merge(start_next_queued(op.service_id, window))
    return out.merge(admit_next(op.kind, window))


def _rescue_change(out: Outcome, op: Operation, ended: str) -> None:
    """Billing hears a change of rescue mode the operation made without its machine's
    completion event announcing it (:func:`workers.outbox.rescue_change`)."""
    event = outbox.rescue_change(op, ended)
    if event is not None:
        out.events.append(event)


def _give_back_service(op: Operation, machine: Machine) -> None:
    if not machine.busy_status:
        return
    status = machine.failed_status or op.prior_status or ServiceStatus.READY
    service_changes.give_back(op.service_id, machine.busy_status, status)


def _status(service_id: int) -> str:
    return str(scalar("SELECT status FROM services WHERE id = %s", service_id))


def _suspended(service_id: int) -> bool:
    return bool(scalar("SELECT suspended FROM services WHERE id = %s", service_id))


# --- after the commit -----------------------------------------------------------------------

def mark_published(op_id: int, nudge_id: str) -> None:
    database.execute_sql(
        "UPDATE operations SET nudge_published = 1 WHERE id = %s AND nudge_id = %s",
        (op_id, nudge_id))


def deliver(outcome: Outcome, publisher: Sink) -> None:
    """Publish (confirmed) every nudge and event the committed change owes, then record each as
    published; a crash in between leaves them unpublished for the reconciler."""
    for nudge in outcome.publish:
        publisher.publish_nudge(nudge)
    for nudge in outcome.publish:
        if not nudge.resend:
            mark_published(nudge.operation_id, nudge.nudge_id)
    outbox.publish(outcome.events, publisher)
