"""The generic step runner: load the operation, check the nudge is the live one, run the step
for the operation's state, commit the new state by compare-and-swap, and say what to publish.

Concurrency and crash safety, in short:
- the operation row is locked ``FOR UPDATE NOWAIT`` for the step: a duplicate delivery of the same
  nudge that arrives meanwhile is put back on a short delay instead of running the step twice;
- every change of state bumps ``version`` and names the next live nudge (``nudge_id``) in the
  same commit; a message whose nudge is not the live one is stale and dropped — except the
  redelivery of the very message that caused the last change (``prev_nudge_id``) while the next
  nudge is not yet confirmed published: that one re-publishes it (a crash between commit and
  publish loses nothing, and duplicates cannot multiply).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from peewee import IntegrityError, InterfaceError, OperationalError

from pvekvm import oplog
from pvekvm.config import Settings
from pvekvm.models import Operation, Service, database
from pvekvm.proxmox import Proxmox, ProxmoxError, client
from steps.context import StepContext
from steps.machine import Done, Machine, Retry, StepFailed, StepResult, Wait
from steps.machines import MACHINES
from workers.outcome import Nudge, Outcome, read_step_message

log = logging.getLogger("pvekvm.engine")
LOCK_BUSY = (1205, 3572)  # lock wait timeout / NOWAIT refused
# The statements every step message runs, written once (peewee's SQL building costs more than
# the round trip on this hot path).
_LOCK_OPERATION = "SELECT * FROM operations WHERE id = %s FOR UPDATE NOWAIT"
_LOAD_SERVICE = "SELECT * FROM services WHERE id = %s"
_INSERT_STEP_RUN = (
    "INSERT INTO step_runs (operation_id, service_id, vmid, label, from_state, to_state, "
    "result, duration_ms, message, worker, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def new_nudge_id() -> str:
    return str(uuid.uuid4())


def nudge_for(op: Operation) -> Nudge | None:
    """The message that moves ``op`` on from where it stands (None when nothing runs)."""
    machine = MACHINES.get(op.kind)
    t = machine.at(op.state) if machine else None
    if t is None or not op.nudge_id:
        return None
    return Nudge(t.pool, op.id, op.nudge_id, op.state, float(op.nudge_delay_s or 0))


class Engine:
    def __init__(self, settings: Settings, worker: str = "",
                 observer: Callable[[str, float, float], None] | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.observer = observer  # (pool, seconds in handle, seconds inside Proxmox calls)
        self._service: Service | None = None  # the message in hand's service (one engine/thread)

    # --- entry point --------------------------------------------------------------------------

    def handle(self, pool: str, body: bytes) -> Outcome:
        if self.observer is None:
            return self._handle(pool, body)
        t0, pve0 = time.perf_counter(), Proxmox.time_spent()
        try:
            return self._handle(pool, body)
        finally:
            self.observer(pool, time.perf_counter() - t0, Proxmox.time_spent() - pve0)

    def _handle(self, pool: str, body: bytes) -> Outcome:
        self._service = None
        try:
            op_id, nudge, state = read_step_message(body)
        except ValueError as exc:
            return Outcome(dead_reason=f"malformed step message: {exc}")
        try:
            with database.atomic():
                return self._handle_locked(pool, op_id, nudge)
        except _LostRace:
            return Outcome()
        except OperationalError as exc:
            if exc.args and exc.args[0] in LOCK_BUSY:
                busy = Nudge(pool, op_id, nudge, state, delay_s=0.25)
                return Outcome(publish=[busy])
            raise

    def _handle_locked(self, pool: str, op_id: int, nudge: str) -> Outcome:
        op = next(iter(Operation.raw(_LOCK_OPERATION, op_id)), None)
        if op is None:
            return Outcome(dead_reason=f"unknown operation {op_id}")
        if nudge != op.nudge_id:
            if (nudge == op.prev_nudge_id and op.nudge_id and not op.nudge_published
                    and op.status == "running"):
                again = nudge_for(op)
                return Outcome(publish=[again] if again else [],
                               mark_published=(op.id, op.nudge_id) if again else None)
            return Outcome()  # stale: someone already moved this operation on
        if op.status != "running":
            return Outcome()
        machine = MACHINES[op.kind]
        t = machine.at(op.state)
        if t is None:
            return self._finish(op, machine, Outcome())
        if t.pool != pool:  # wrong queue (config change between versions): forward, same id
            return Outcome(publish=[Nudge(t.pool, op.id, nudge, op.state)])
        return self._run(op, machine, nudge)

    # --- running a step -------------------------------------------------------------------------

    def _run(self, op: Operation, machine: Machine, nudge: str) -> Outcome:
        t = machine.at(op.state)
        assert t is not None
        service = self._service = next(iter(Service.raw(_LOAD_SERVICE, op.service_id)))
        pve = client(self.settings.proxmox) if self.settings.proxmox else None
        ctx = StepContext(self.settings, op, service, pve)  # type: ignore[arg-type]
        started = op.step_started_at or datetime.now()
        try:
            if op.upid:
                status = pve.task_status(op.upid_node, op.upid, fresh=op.polls < 3)
                if status.running:
                    polls = op.polls + 1
                    delays = self.settings.engine.poll_delays_s
                    return self._reschedule(op, nudge, delays[min(polls, len(delays) - 1)],
                                            started, upid=op.upid, node=op.upid_node, polls=polls)
                if not status.ok:
                    raise ProxmoxError(f"task failed: {status.exitstatus}", transient=True)
                ctx.after_task = True
                op.upid = None
            result: StepResult = t.step(ctx)
            for _ in range(3):  # a step may run a short task or two (stop, then delete)
                if not (isinstance(result, Wait) and self._task_done_soon(pve, result)):
                    break
                result = self._after_task(ctx, t.step)
        except StepFailed as exc:
            return self._pause(op, machine, nudge, started, str(exc))
        except ProxmoxError as exc:
            if exc.transient:
                result = Retry(str(exc), delay_s=2.0)
            else:
                return self._pause(op, machine, nudge, started, f"Proxmox: {exc}")
        except (OperationalError, InterfaceError):
            raise  # the database went away: the message goes back and is redelivered
        except Exception as exc:  # noqa: BLE001 - an unexpected bug must stop visibly, not loop
            log.exception("step %s crashed for operation %s", t.label, op.id)
            return self._pause(op, machine, nudge, started, f"{type(exc).__name__}: {exc}")

        if ctx.after_task and isinstance(result, Done) and result.skipped:
            result = Done(result.message, warning=result.warning)  # its own task did the work
        if isinstance(result, Wait):
            return self._reschedule(op, nudge, self.settings.engine.poll_delays_s[0], started,
                                    upid=result.upid, node=result.node, polls=0)
        if isinstance(result, Retry):
            return self._retry(op, machine, nudge, started, result)
        return self._advance(op, machine, nudge, started, result)

    def _task_done_soon(self, pve, wait: Wait) -> bool:
        """Short tasks (config writes, a start on an idle node) end within milliseconds: look a
        few times before handing the wait to a delayed poll message."""
        deadline = time.monotonic() + self.settings.engine.inline_task_wait_s
        pause = 0.005
        while True:
            status = pve.task_status(wait.node, wait.upid)
            if not status.running:
                if not status.ok:
                    raise ProxmoxError(f"task failed: {status.exitstatus}", transient=True)
                return True
            if time.monotonic() + pause > deadline:
                return False
            Proxmox.wait_for_task(pause)
            pause = min(pause * 2, 0.04)

    @staticmethod
    def _after_task(ctx: StepContext, step) -> StepResult:
        ctx.after_task = True
        ctx.operation.upid = None
        return step(ctx)

    def _cas(self, op: Operation, nudge: str, **changes: Any) -> None:
        """Compare-and-swap on (id, version, nudge): the losing side of a race changes nothing."""
        changes.setdefault("version", op.version + 1)
        n = (Operation.update(**changes)
             .where((Operation.id == op.id) & (Operation.version == op.version)
                    & (Operation.nudge_id == nudge)).execute())
        if n != 1:
            raise _LostRace()
        for k, v in changes.items():
            setattr(op, k, v)

    def _reschedule(self, op: Operation, nudge: str, delay: float, started: datetime, *,
                    upid: str | None, node: str | None, polls: int, **more: Any) -> Outcome:
        nxt = new_nudge_id()
        self._cas(op, nudge, upid=upid, upid_node=node, polls=polls, nudge_id=nxt,
                  prev_nudge_id=nudge, nudge_published=False, nudge_delay_s=delay,
                  step_started_at=started, **more)
        return Outcome(publish=[Nudge(MACHINES[op.kind].at(op.state).pool, op.id, nxt, op.state,
                                      delay)], mark_published=(op.id, nxt))

    def _retry(self, op: Operation, machine: Machine, nudge: str, started: datetime,
               result: Retry) -> Outcome:
        attempt = op.attempt + 1 if result.counts else op.attempt
        if attempt > self.settings.engine.max_attempts:
            return self._pause(op, machine, nudge, started,
                               f"{result.reason} (gave up after {attempt - 1} attempts)")
        waits = 0 if result.counts else op.polls + 1  # waiting our turn backs off to 4 s
        delay = min(result.delay_s * 2 ** max(attempt - 1, 0), 60.0) if result.counts \
            else min(result.delay_s * 2 ** (waits - 1), 4.0)
        out = self._reschedule(op, nudge, delay, started, upid=None, node=None, polls=waits,
                               attempt=attempt)
        if result.counts:  # waiting for a slot is not news for the operator log
            out.log.append(self._record(op, machine, started, "retry",
                                        f"{result.reason}. Will retry."))
        return out

    def _pause(self, op: Operation, machine: Machine, nudge: str, started: datetime,
               reason: str) -> Outcome:
        self._cas(op, nudge, status="paused", error=reason[:4000], nudge_id=None,
                  prev_nudge_id=nudge, upid=None, upid_node=None, step_started_at=None)
        out = Outcome(log=[self._record(op, machine, started, "error", reason)])
        out.log.append(oplog.paused_line(machine, op))
        return out

    def _advance(self, op: Operation, machine: Machine, nudge: str, started: datetime,
                 result: Done) -> Outcome:
        t = machine.at(op.state)
        assert t is not None
        kind = "warn" if result.warning else "skip" if result.skipped else "success"
        line = self._record(op, machine, started, kind, result.message, to_state=t.next_state)
        nxt = new_nudge_id()
        self._cas(op, nudge, state=t.next_state, attempt=0, nudge_id=nxt, prev_nudge_id=nudge,
                  nudge_published=False, nudge_delay_s=0, upid=None, upid_node=None, polls=0,
                  step_started_at=None, error=None)
        out = Outcome(log=[line])
        if machine.at(op.state) is None:
            return self._finish(op, machine, out)
        out.publish.append(nudge_for(op))  # type: ignore[arg-type]
        out.mark_published = (op.id, nxt)
        return out

    def _finish(self, op: Operation, machine: Machine, out: Outcome) -> Outcome:
        self._cas(op, op.nudge_id, status="done", active_service=None, nudge_id=None,
                  finished_at=datetime.now())
        updates = dict(json.loads(op.params or "{}").get("service", {}))
        if machine.done_status:
            updates["status"] = machine.done_status
        if updates:
            Service.update(**updates).where(Service.id == op.service_id).execute()
        out.log.append(oplog.complete_line(machine, op, machine.done_status or "done"))
        nxt = start_next_queued(op.service_id)
        if nxt is not None:
            out.publish.append(nxt)
            out.mark_published = (nxt.operation_id, nxt.nudge_id)
        return out

    def _record(self, op: Operation, machine: Machine, started: datetime, result: str,
                message: str, to_state: str | None = None) -> str:
        t = machine.at(op.state)
        assert t is not None
        ms = int((datetime.now() - started).total_seconds() * 1000)
        vmid = self._service.vmid if self._service is not None else None
        database.execute_sql(_INSERT_STEP_RUN, (
            op.id, op.service_id, vmid, t.label, op.state, to_state or t.next_state, result, ms,
            message[:4000], self.worker[:64], datetime.now()))
        return oplog.step_line(op.service_id, machine.number(op.state), t.label, result,
                               op.state, t.next_state, message, ms / 1000)


class _LostRace(Exception):
    """Another delivery moved the operation on first; this one must change nothing."""


def start_next_queued(service_id: int) -> Nudge | None:
    """When a service's operation ends, the oldest one waiting for it starts (inside the caller's
    transaction)."""
    op = (Operation.select().where((Operation.service_id == service_id)
                                   & (Operation.status == "queued"))
          .order_by(Operation.id).for_update().first())
    if op is None:
        return None
    nudge = new_nudge_id()
    try:
        with database.atomic():
            Operation.update(status="running", active_service=service_id, nudge_id=nudge,
                             nudge_published=False, version=Operation.version + 1).where(
                Operation.id == op.id).execute()
    except IntegrityError:  # another operation became active first; it starts ours when done
        return None
    machine = MACHINES[op.kind]
    if machine.busy_status:
        Service.update(status=machine.busy_status).where(Service.id == service_id).execute()
    return Nudge(machine.at(op.state).pool, op.id, nudge, op.state)


def mark_published(op_id: int, nudge_id: str) -> None:
    database.execute_sql(
        "UPDATE operations SET nudge_published = 1 WHERE id = %s AND nudge_id = %s",
        (op_id, nudge_id))
