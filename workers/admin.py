"""The operator's actions on operations (``python -m pvekvm resume|cancel|history``): the app
layer above the core, built on :mod:`workers.operations`."""

from __future__ import annotations

from collections.abc import Callable

from pvekvm import messaging, oplog
from pvekvm.config import Settings
from pvekvm.lifecycle import OpStatus
from pvekvm.models import Operation, Service, StepRun, database
from pvekvm.proxmox import ProxmoxError, client
from steps.machines import MACHINES
from workers import operations
from workers.outcome import Outcome


class NothingDone(str):
    """A reply saying the command found nothing to act on (no such service, nothing paused):
    the operator CLI prints it and exits 1, as its --help says for a failed command."""


def _find(ref: str, statuses: tuple[OpStatus, ...]) -> Operation | None:
    """``ref`` is a service id, or ``op:N`` / ``#N`` for an operation id."""
    query = Operation.select().where(Operation.status.in_(statuses))
    if ref.startswith(("op:", "#")):
        query = query.where(Operation.id == int(ref.split(":", 1)[-1].lstrip("#")))
    else:
        query = query.where(Operation.service_id == int(ref))
    return query.order_by(Operation.id).for_update().first()


def _deliver(settings: Settings, out: Outcome) -> None:
    if not out.publish and not out.events:  # a cancel owes billing its event, and no nudge
        return
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        operations.deliver(out, pub)
    finally:
        pub.close()


def _bulk(settings: Settings, reason: str | None,
          act: Callable[[Operation], Outcome], cluster: str | None = None
          ) -> tuple[list[str], int]:
    """``act`` on every matching paused operation, one commit each, delivered on one
    connection; (log lines, how many)."""
    lines, done = [], 0
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        for op_id in _paused_matching(reason, cluster):
            with database.atomic():
                op = _take_paused(op_id)
                if op is None:
                    continue  # another operator or scheduler has it now
                out = act(op)
            operations.deliver(out, pub)
            lines += out.log
            done += 1
    finally:
        pub.close()
    return lines, done


def resume(settings: Settings, ref: str) -> str:
    """Restart a paused operation from the state it waits at."""
    with database.atomic():
        op = _find(ref, (OpStatus.PAUSED,))
        if op is None:
            return NothingDone(f"{ref}: no paused operation")
        out = operations.resume(op)
    _deliver(settings, out)
    return "\n".join(out.log)


def cancel(settings: Settings, ref: str, who: str = "operator") -> str:
    """Abandon a paused operation (or a queued one given as op:N): recorded, the service freed,
    and the state the VM is left in said."""
    with database.atomic():
        op = _find(ref, (OpStatus.PAUSED,)) if not ref.startswith(("op:", "#")) else \
            _find(ref, (OpStatus.PAUSED, OpStatus.QUEUED))
        if op is None:
            return NothingDone(f"{ref}: no paused operation")
        out = operations.cancel(op, who, settings.engine.deploy_window)
    where = vm_state(settings, op.service_id)  # as the cancel leaves it, before the next op
    _deliver(settings, out)
    return "\n".join([*out.log, where])


def _paused_matching(reason: str | None, cluster: str | None = None) -> list[int]:
    """Ids of the paused operations (all, those of services in ``cluster``, or those whose
    pause reason contains ``reason``, case-insensitively), oldest first."""
    if cluster is None:
        rows = database.execute_sql("SELECT id, error FROM operations WHERE status = %s "
                                    "ORDER BY id", (OpStatus.PAUSED.value,)).fetchall()
    else:
        rows = database.execute_sql(
            "SELECT o.id, o.error FROM operations o JOIN services s ON s.id = o.service_id "
            "WHERE o.status = %s AND s.cluster = %s ORDER BY o.id",
            (OpStatus.PAUSED.value, cluster)).fetchall()
    needle = reason.casefold() if reason is not None else None
    return [i for i, error in rows if needle is None or needle in (error or "").casefold()]


def _take_paused(op_id: int) -> Operation | None:
    """The paused operation, locked; None when another operator or scheduler has it now."""
    return Operation.fetch_one("SELECT * FROM operations WHERE id = %s "
                               f"AND status = '{OpStatus.PAUSED}' "
                               "FOR UPDATE SKIP LOCKED", op_id)


def resume_many(settings: Settings, reason: str | None = None,
                cluster: str | None = None) -> str:
    """``resume --all`` / ``--reason TEXT`` / ``--cluster C``: every matching paused
    operation resumes (``cluster``: those of services in that cluster)."""
    lines, done = _bulk(settings, reason, operations.resume, cluster)
    text = "\n".join([*lines, f"resumed {done} paused operation(s)"])
    return text if done else NothingDone(text)


def cancel_many(settings: Settings, reason: str | None = None, who: str = "operator",
                cluster: str | None = None) -> str:
    """``cancel --all`` / ``--reason TEXT`` / ``--cluster C``: every matching paused operation
    is abandoned (the VMs are left as they are; ``cancel SID`` says what one holds)."""
    lines, done = _bulk(settings, reason,
                        lambda op: operations.cancel(op, who, settings.engine.deploy_window),
                        cluster)
    text = "\n".join([*lines, f"cancelled {done} paused operation(s)"])
    return text if done else NothingDone(text)


def vm_state(settings: Settings, service_id: int) -> str:
    """One line on what Proxmox holds for the service's VM now."""
    svc = Service.get_or_none(Service.id == service_id)
    if svc is None or svc.vmid is None:
        return f"sid:{service_id} VM: none (no VMID reserved)"
    conn = settings.proxmox_of(svc.cluster)
    if conn is None:
        return f"sid:{service_id} VM {svc.vmid}: unknown (no Proxmox configured)"
    try:
        pve = client(conn)
        node = pve.locate(int(svc.vmid))
        if node is None:
            return f"sid:{service_id} VM {svc.vmid}: does not exist on Proxmox"
        st = pve.get(f"nodes/{node}/qemu/{svc.vmid}/status/current")
        lock = pve.vm_config(node, int(svc.vmid)).get("lock")
        return (f"sid:{service_id} VM {svc.vmid} on {node}: {st.get('status')}"
                + (f" (lock: {lock})" if lock else "") + f"; service status {svc.status}")
    except ProxmoxError as exc:
        return f"sid:{service_id} VM {svc.vmid}: Proxmox unreachable ({exc})"


def history(service_id: int) -> str:
    """Every operation of a service as the manual's ``--- Deploy: … ---`` blocks."""
    svc = Service.get_or_none(Service.id == service_id)
    if svc is None:
        return NothingDone(f"no service {service_id}")
    blocks: list[str] = []
    for op in Operation.select().where(Operation.service_id == service_id).order_by(Operation.id):
        machine = MACHINES.get(op.kind)
        runs = list(StepRun.select().where(StepRun.operation_id == op.id).order_by(StepRun.id))
        first = runs[0].from_state if runs else op.state
        title = oplog.title(machine, op)
        vmid = next((r.vmid for r in reversed(runs) if r.vmid), svc.vmid)
        lines = [f"--- {title}: service={service_id} vm={vmid or '-'} status={first} ---"]
        for r in runs:
            number = machine.number(r.from_state) if machine and machine.at(r.from_state) else 0
            lines.append(oplog.format_step(number, r.label, r.result, r.from_state, r.to_state,
                                           r.message or "", r.duration_ms / 1000))
        if op.status == OpStatus.DONE:
            lines.append(f"--- {title} complete: service={service_id} status="
                         f"{(machine.done_status if machine else None) or 'done'} ---")
        elif op.status == OpStatus.PAUSED:
            lines.append(f"--- {title} paused: waiting at ({op.state}) — {op.error} ---")
        elif op.status in (OpStatus.FAILED, OpStatus.CANCELLED):
            lines.append(f"--- {title} {op.status}: at ({op.state}) — {op.error} ---")
        else:
            lines.append(f"--- {title} {op.status}: at ({op.state}) ---")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) if blocks else f"service {service_id}: no operations"
