"""The generic step runner: load the operation, check the nudge is the live one, run the step
for the operation's state, and hand the result to :mod:`workers.operations`, which owns every
write of the operation row.

Concurrency and crash safety, in short:
- the operation row is locked ``FOR UPDATE NOWAIT`` for the step: a duplicate delivery of the same
  nudge that arrives meanwhile is put back on a short delay instead of running the step twice;
- every change of state bumps ``version`` and names the next live nudge (``nudge_id``) in the
  same commit; a message whose nudge is not the live one is stale and dropped — except the
  redelivery of the very message that caused the last change (``prev_nudge_id``) while the next
  nudge is not yet confirmed published: that one re-publishes it (a crash between commit and
  publish loses nothing, and duplicates cannot multiply).
- what a step answers decides what happens: ``Done`` advances, ``Wait`` polls a Proxmox task,
  ``Retry`` and transient Proxmox errors retry under the transition's policy, ``Refused`` fails
  the operation at once, ``StepFailed`` and other errors pause it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from peewee import InterfaceError, OperationalError

from pvekvm import dberrors, metrics, oplog
from pvekvm.config import EngineSettings, Settings
from pvekvm.lifecycle import FINISHED, OpStatus
from pvekvm.models import Operation, Service, database
from pvekvm.proxmox import Proxmox, ProxmoxError, client, task_failure
from pvekvm.redact import safe_reason
from steps.context import StepContext
from steps.machine import (
    Done,
    Machine,
    Refused,
    Retry,
    RetryPolicy,
    StepFailed,
    StepResult,
    Transition,
    Wait,
    backoff,
)
from steps.machines import MACHINES
from workers import operations, outbox, pauses
from workers.operations import LostRace
from workers.outcome import Nudge, Outcome, read_step_message

log = logging.getLogger("pvekvm.engine")
# lock wait timeout / NOWAIT refused / deadlock victim or Galera certification conflict
# (pvekvm/dberrors.py): nothing of the attempt is committed, so the same nudge comes again after
# a short delay instead of going back to the queue (where each return counts against its
# delivery limit)
BUSY_DELAY_S = 0.25       # a duplicate delivery waits this long for the row lock
# The statements every step message runs, written once (peewee's SQL building costs more than
# the round trip on this hot path).
_LOCK_OPERATION = "SELECT * FROM operations WHERE id = %s FOR UPDATE NOWAIT"
_INSERT_STEP_RUN = (
    "INSERT INTO step_runs (operation_id, service_id, vmid, label, from_state, to_state, "
    "result, duration_ms, message, worker, created_at) VALUES ")
_STEP_RUN_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_LOCK_WITH_SERVICE = ("SELECT s.*, o.version AS op_version FROM operations o "
                      "JOIN services s ON s.id = o.service_id WHERE o.id = %s FOR UPDATE NOWAIT")
# (pool, seconds in handle, seconds inside Proxmox calls) for each message handled
Observer = Callable[[str, float, float], None]


def default_policy(engine: EngineSettings) -> RetryPolicy:
    """The settings' retry policy, under every transition's own overrides."""
    return RetryPolicy(first_s=engine.retry_first_s, max_s=engine.retry_max_s,
                       max_attempts=engine.max_attempts, wait_s=engine.wait_first_s,
                       wait_max_s=engine.wait_max_s)


def _lock(op_id: int, row: Operation | None) -> tuple[Operation | None, Service | None]:
    """The operation and its service, both rows locked for this step, in one statement when
    ``row`` (what the previous step of a chain committed) still has the locked row's version
    (every change bumps it); else the operation is read afresh. Only the operation running on a
    service writes its row (intake and the API create operations), so the lock waits on no one."""
    svc = Service.fetch_one(_LOCK_WITH_SERVICE, op_id)
    if svc is not None and row is not None and row.id == op_id \
            and svc.op_version == row.version:  # type: ignore[attr-defined]
        return row, svc
    return Operation.fetch_one(_LOCK_OPERATION, op_id), svc


@dataclass
class Attempt:
    """The message in hand: one step run of one operation."""

    op: Operation
    machine: Machine
    transition: Transition
    nudge: str
    started: datetime
    service: Service | None = None
    fault: str | None = None  # the dependency that did not answer (workers/pauses.py)


class Engine:
    def __init__(self, settings: Settings, worker: str = "", observer: Observer | None = None,
                 machines: Mapping[str, Machine] = MACHINES) -> None:
        self.settings = settings
        self.worker = worker
        self.observer = observer
        self.machines = machines
        self.policy = default_policy(settings.engine)
        self.window = settings.engine.deploy_window

    # --- entry point --------------------------------------------------------------------------

    def handle(self, pool: str, body: bytes) -> Outcome:
        """A step message from ``pool``'s queue."""
        try:
            op_id, nudge, state = read_step_message(body)
        except ValueError as exc:
            return Outcome(dead_reason=f"malformed step message: {exc}")
        return self.handle_nudge(Nudge(pool, op_id, nudge, state))

    def handle_nudge(self, nudge: Nudge, row: Operation | None = None) -> Outcome:
        """One nudge, delivered by the broker or handed over by the worker that committed it
        (a continuation run at once: see :mod:`workers.runner`), then with the ``row`` that
        commit left, used when the locked row still has its version."""
        t0, pve0 = time.perf_counter(), Proxmox.time_spent()
        try:
            out = self._handle(nudge, row)
        finally:
            if self.observer is not None:
                self.observer(nudge.pool, time.perf_counter() - t0,
                              Proxmox.time_spent() - pve0)
        out.in_hand = nudge.operation_id
        return out

    def _handle(self, nudge: Nudge, row: Operation | None = None) -> Outcome:
        try:
            with database.atomic():
                return self._handle_locked(nudge, row)
        except LostRace:
            return Outcome()
        except OperationalError as exc:
            if dberrors.retry_now(exc):  # the same nudge again, soon; it was published already
                return Outcome(publish=[replace(nudge, delay_s=BUSY_DELAY_S, resend=True)])
            raise

    def _handle_locked(self, nudge: Nudge, row: Operation | None = None) -> Outcome:
        op, service = _lock(nudge.operation_id, row)
        if op is None:
            return Outcome(dead_reason=f"unknown operation {nudge.operation_id}")
        if nudge.nudge_id != op.nudge_id:
            # an earlier message of this operation: what a commit owed and its worker may not
            # have sent (it lost the database or the broker after the commit) is sent now
            owed = outbox.unpublished_of(op.id)
            if (nudge.nudge_id == op.prev_nudge_id and op.nudge_id and not op.nudge_published
                    and op.status == OpStatus.RUNNING):
                again = operations.nudge_for(op, self.machines)
                return Outcome(publish=[again] if again else [], events=owed)
            if nudge.nudge_id == op.prev_nudge_id and op.status in FINISHED:
                # the message that ended it: the next operation it started may be unpublished
                return Outcome(publish=operations.unpublished_successors(op, self.machines),
                               events=owed)
            return Outcome(events=owed)  # stale: someone already moved this operation on
        if op.status != OpStatus.RUNNING:
            return Outcome()
        machine = self.machines[op.kind]
        t = machine.at(op.state)
        if t is None:
            return operations.finish(op, machine, Outcome(), self.window,
                                     machines=self.machines)
        if t.pool != nudge.pool:  # wrong queue (config change between versions): forward it
            return Outcome(publish=[Nudge(t.pool, op.id, nudge.nudge_id, op.state)])
        out = self._run(Attempt(op, machine, t, nudge.nudge_id,
                                op.step_started_at or datetime.now(), service))
        out.row = op  # every change above went through operations: the row as committed
        return out

    # --- running a step -------------------------------------------------------------------------

    def _run(self, a: Attempt) -> Outcome:
        op, t = a.op, a.transition
        if a.service is None:  # the join found no service row: read it, or fail as ever
            a.service = Service.row(op.service_id)
        conn = self.settings.proxmox_of(a.service.cluster)  # the client of its cluster
        pve = client(conn) if conn else None
        ctx = StepContext(self.settings, op, a.service, pve)
        try:
            if op.upid:
                status = ctx.pve.task_status(op.upid_node or ctx.node, op.upid,
                                             fresh=op.polls < 3)
                if status.running:
                    polls = op.polls + 1
                    delays = self.settings.engine.poll_delays_s
                    return self._reschedule(a, delays[min(polls, len(delays) - 1)],
                                            upid=op.upid, node=op.upid_node, polls=polls)
                if not status.ok:
                    raise task_failure(status.exitstatus)
                ctx.after_task = True
                op.upid = None
            result: StepResult = t.run(ctx)
            for _ in range(3):  # a step may run a short task or two (stop, then delete)
                if not (isinstance(result, Wait) and pve is not None
                        and self._task_done_soon(pve, result)):
                    break
                result = self._after_task(ctx, t)
        except Refused as exc:
            return self._refuse(a, str(exc))
        except StepFailed as exc:
            return self._pause(a, str(exc))
        except ProxmoxError as exc:
            a.fault = pauses.dependency_of(exc)
            if exc.refusal:  # the request can never succeed as asked: fail it, free the service
                return self._refuse(a, safe_reason(f"Proxmox refused: {exc}"))
            if not exc.transient:
                return self._pause(a, f"Proxmox: {exc}")
            result = Retry(str(exc))
        except (OperationalError, InterfaceError):
            raise  # the database went away: the message goes back and is redelivered
        except Exception as exc:  # an unexpected bug must stop visibly, not loop
            log.exception("step %s crashed for operation %s", t.label, op.id)
            return self._pause(a, f"{type(exc).__name__}: {exc}")

        if ctx.after_task and isinstance(result, Done) and result.skipped:
            result = Done(result.message, warning=result.warning)  # its own task did the work
        if isinstance(result, Wait):
            return self._reschedule(a, self.settings.engine.poll_delays_s[0],
                                    upid=result.upid, node=result.node, polls=0)
        if isinstance(result, Retry):
            return self._retry(a, result)
        return self._advance(a, result, ctx)

    def _task_done_soon(self, pve: Proxmox, wait: Wait) -> bool:
        """Short tasks (config writes, a start on an idle node) end within milliseconds: look a
        few times before handing the wait to a delayed poll message. The first look comes after
        a pause (a task PVE has just forked is not done yet: a look at once was a wasted call),
        the pauses double and add up to ``inline_task_wait_s`` at most (10 + 20 ms)."""
        limit, waited, pause = self.settings.engine.inline_task_wait_s, 0.0, 0.01
        while waited + pause <= limit + 1e-9:
            Proxmox.wait_for_task(pause)
            waited += pause
            status = pve.task_status(wait.node, wait.upid)
            if not status.running:
                if not status.ok:
                    raise task_failure(status.exitstatus)
                return True
            pause *= 2
        return False

    @staticmethod
    def _after_task(ctx: StepContext, t: Transition) -> StepResult:
        ctx.after_task = True
        ctx.operation.upid = None
        return t.run(ctx)

    # --- what the step's answer does --------------------------------------------------------------

    def _reschedule(self, a: Attempt, delay: float, *, upid: str | None, node: str | None,
                    polls: int, attempt: int | None = None) -> Outcome:
        nxt = operations.reschedule(a.op, a.nudge, delay, upid=upid, node=node, polls=polls,
                                    started=a.started, attempt=attempt)
        return Outcome(publish=[Nudge(a.transition.pool, a.op.id, nxt, a.op.state, delay)])

    def _retry(self, a: Attempt, result: Retry) -> Outcome:
        policy = a.transition.retry.over(self.policy)
        assert policy.max_attempts is not None
        attempt = a.op.attempt + 1 if result.counts else a.op.attempt
        if attempt > policy.max_attempts:
            return self._pause(a, f"{result.reason} (gave up after {attempt - 1} attempts)")
        waits = 0 if result.counts else a.op.polls + 1
        delay = backoff(policy, attempt if result.counts else waits, waiting=not result.counts)
        out = self._reschedule(a, delay.seconds, upid=None, node=None, polls=waits,
                               attempt=attempt)
        if result.tell:  # the start of a wait billing hears of (no room on any node)
            out.log.append(self._record(a, "wait", result.reason))
            out.events.append(outbox.operation_event("operation.waiting", a.op,
                                                     state=a.op.state,
                                                     reason=result.reason[:1000]))
        if result.counts:  # waiting for a slot is not news for the operator log
            out.log.append(self._record(a, "retry", f"{result.reason}. Will retry in "
                                        f"{_seconds(delay.seconds)} (attempt {attempt}/"
                                        f"{policy.max_attempts})."))
        return out

    def _pause(self, a: Attempt, reason: str) -> Outcome:
        line = self._record(a, "error", reason)
        out = operations.pause(a.op, a.nudge, reason, a.fault, self.settings.engine)
        out.log += [line, oplog.paused_line(a.machine, a.op)]
        return out

    def _refuse(self, a: Attempt, reason: str) -> Outcome:
        line = self._record(a, "error", f"refused: {reason}")
        out = operations.fail(a.op, a.machine, a.nudge, reason, self.window, self.machines)
        out.log.insert(0, line)
        return out

    def _advance(self, a: Attempt, result: Done, ctx: StepContext) -> Outcome:
        """Move on to the next step, passing by (recorded as skipped, in this same commit) the
        steps whose ``skip_if`` says they have nothing to do."""
        kind = "warn" if result.warning else "skip" if result.skipped else "success"
        records = [(a.transition, kind, result.message)]
        state = a.transition.then
        while (t := a.machine.at(state)) is not None and t.skip_if is not None:
            reason = t.skip_if(ctx)
            if reason is None:
                break
            records.append((t, "skip", reason))
            state = t.then
        out = Outcome(log=self._record_all(a, records))
        operations.advance(a.op, a.nudge, state)
        if a.machine.at(a.op.state) is None:
            one_step_skipped = result.skipped and len(a.machine.transitions) == 1
            return operations.finish(a.op, a.machine, out, self.window,
                                     skipped=result.message if one_step_skipped else None,
                                     machines=self.machines)
        nudge = operations.nudge_for(a.op, self.machines)
        assert nudge is not None
        out.publish.append(nudge)
        return out

    def _record(self, a: Attempt, result: str, message: str) -> str:
        """A step_runs row and the operator line for the attempt's step."""
        return self._record_all(a, [(a.transition, result, message)])[0]

    def _record_all(self, a: Attempt, records: list[tuple[Transition, str, str]]) -> list[str]:
        """The step_runs rows (one statement) and operator lines of the attempt's step and of
        the steps the engine passed by after it without running them (0 ms)."""
        op, now = a.op, datetime.now()
        vmid = a.service.vmid if a.service is not None else None
        values: list[object] = []
        lines = []
        for i, (t, result, message) in enumerate(records):
            ms = int((now - a.started).total_seconds() * 1000) if i == 0 else 0
            values += [op.id, op.service_id, vmid, t.label, t.state, t.then, result, ms,
                       message[:4000], self.worker[:64], now]
            metrics.observe_step(t.pool, t.label, result, ms / 1000)
            lines.append(oplog.step_line(op.service_id, a.machine.number(t.state), t.label,
                                         result, t.state, t.then, message, ms / 1000))
        database.execute_sql(_INSERT_STEP_RUN + ", ".join([_STEP_RUN_ROW] * len(records)),
                             values)
        return lines


def _seconds(s: float) -> str:
    return f"{s:g}s" if s < 60 or not math.isfinite(s) else f"{s / 60:g}min"
