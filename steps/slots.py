"""Task slots: how many Proxmox tasks of one kind may run at once in one place.

PVE serialises some work behind locks of its own: a full clone holds its storage's lock (we
allow ``clones_per_storage`` per node+storage), a backup job holds the node's
``/var/run/vzdump.lock`` (one ``vzdump`` per node; another waits inside PVE for up to
``lockwait`` minutes). We take the turn before sending the task, so a burst waits in our
queues, fairly and visibly, instead of inside PVE.

Invariants: a slot's row (``task_slots``) is locked until our transaction ends, so two workers
never both take its last turn; an operation's claim (``task_claims``) names the one slot it
waits for or holds; the operations waiting are served oldest first; an operation holds a turn
while its row carries a task of the slot's type, and that task is checked against PVE's active
tasks, so a turn frees as soon as PVE's task ends, not when its operation next polls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pvekvm.config import DEFAULT_CLUSTER
from pvekvm.lifecycle import OpStatus
from pvekvm.models import TaskClaim, TaskSlot, database
from steps.context import StepContext


@dataclass(frozen=True)
class SlotKind:
    """One kind of turn: the PVE task type that holds it, the states whose step sends that task
    (told by the machines: :data:`SENDING`), the turns per slot."""

    what: str
    task_type: str
    states: Callable[[], tuple[str, ...]]
    limit: Callable[[StepContext], int]


# The states whose step sends each task type (a step module may not import the machines, which
# import the steps): steps/machines.py tells them here as it builds the machines.
SENDING: dict[str, tuple[str, ...]] = {}


def _sending(task_type: str) -> Callable[[], tuple[str, ...]]:
    return lambda: SENDING[task_type]


CLONE = SlotKind("clone", "qmclone", _sending("qmclone"),
                 lambda ctx: ctx.settings.engine.clones_per_storage)
BACKUP = SlotKind("backup", "vzdump", _sending("vzdump"),
                  lambda ctx: ctx.settings.engine.backups_per_node)
# migrations leaving one node ("qmigrate/<node>": the task runs on the source node)
QMIGRATE = SlotKind("migration", "qmigrate", _sending("qmigrate"),
                    lambda ctx: ctx.settings.engine.migrations_per_node)

_CLAIMS = ("SELECT o.id, o.upid, o.upid_node FROM task_claims c "
           "JOIN operations o ON o.id = c.operation_id "
           f"WHERE c.slot = %s AND o.status = '{OpStatus.RUNNING}' AND o.state IN ({{states}}) "
           "ORDER BY o.created_at, o.id")


def lock_slot(slot: str) -> None:
    """Lock the slot's row until the transaction ends, creating it the first time. One
    statement that takes the exclusive lock at once, whether it inserts or meets the row: an
    ``INSERT IGNORE`` meeting it takes a shared lock, and two transactions both upgrading
    theirs to exclusive deadlock (InnoDB kills one; under load most concurrent clone attempts
    did)."""
    TaskSlot.insert(slot=slot).on_conflict(update={TaskSlot.slot: slot}).execute()


def release(ctx: StepContext) -> None:
    """The operation's task is over (or never needed a turn): it waits for nothing."""
    TaskClaim.delete().where(TaskClaim.operation_id == ctx.operation.id).execute()


def take(ctx: StepContext, kind: SlotKind, slot: str) -> str | None:
    """Take a turn of ``slot`` for this operation's next task. None: the turn is ours (send
    the task in this transaction); else why we wait (retry later, not counted as a fault).
    Node names repeat across clusters: a slot outside the "default" cluster is its own."""
    limit = kind.limit(ctx)
    if ctx.service.cluster != DEFAULT_CLUSTER:
        slot = f"{ctx.service.cluster}:{slot}"
    lock_slot(slot)
    TaskClaim.insert(operation_id=ctx.operation.id, slot=slot).on_conflict(
        update={TaskClaim.slot: slot}).execute()
    states = kind.states()
    sql = _CLAIMS.format(states=", ".join(["%s"] * len(states)))
    rows = database.execute_sql(sql, (slot, *states)).fetchall()
    marker = f":{kind.task_type}:"
    running = [(upid, node) for op_id, upid, node in rows
               if op_id != ctx.operation.id and upid and marker in upid]
    waiting = [op_id for op_id, upid, _ in rows if not (upid and marker in upid)]
    ahead = waiting.index(ctx.operation.id) if ctx.operation.id in waiting else 0
    if ahead + len(running) < limit:
        return None
    if ahead >= limit:
        return f"{ahead} older operations wait for a {kind.what} slot on {slot}"
    active: set[str] = set()
    for node in {n for _, n in running}:
        active |= {t.get("upid") for t in ctx.pve.get(
            f"nodes/{node}/tasks", source="active", typefilter=kind.task_type, limit=1000)}
    busy = sum(1 for upid, _ in running if upid in active)
    if ahead + busy < limit:
        return None
    return (f"{busy} {kind.what} tasks running on {slot}, {ahead} older operations first: "
            "waiting for a slot")
