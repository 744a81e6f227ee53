"""Nodes taken out of service (``python -m pvekvm node ...``): maintenance and drain.

A node in maintenance takes no new VM: placement skips it and a deploy whose product names it
goes to the best other node (pvekvm/placement.py). Draining puts the node in maintenance and
moves every VM of ours off it, each move a ``migrate`` operation (steps/migrate.py).

The state is in the database, so a drain survives any crash: ``nodes`` (this module owns its
rows) and the moves themselves, whose idempotency key ``drain:<node>:<round>:<service>`` makes
a pass run twice (the CLI's and the scheduler's, or after a crash) start each move once. A
pass keeps at most ``[engine] migrations_per_node`` moves of a node unfinished; the migrate
step also bounds arrivals per target node. A move refused (snapshots on local disks...) is not
retried in the same round: ``node drain`` again starts a new round.

Every node is a node of one cluster (``--cluster``, default the settings' first): names repeat
across clusters, so rows, residents and move keys are scoped by it (a key outside the "default"
cluster names ``<cluster>/<node>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pvekvm import messaging
from pvekvm.config import DEFAULT_CLUSTER, Settings
from pvekvm.lifecycle import UNFINISHED, OpStatus, ServiceStatus
from pvekvm.models import Node, Operation, Service, database
from workers import operations
from workers.outcome import Outcome


@dataclass(frozen=True)
class Progress:
    """A drain's counts this round: VMs of ours still on the node (``waiting``: no move yet),
    moves done, under way (queued, running or paused), failed."""

    node: str
    maintenance: bool
    draining: bool
    left: int
    waiting: int
    moved: int
    moving: int
    failed: int

    @property
    def finished(self) -> bool:
        """Nothing more will move this round (``left`` > 0: moves that failed)."""
        return self.waiting == 0 and self.moving == 0

    def line(self) -> str:
        state = "draining" if self.draining else "maintenance" if self.maintenance \
            else "in service"
        return (f"{self.node}: {state}: {self.left} VMs left, {self.moved} moved, "
                f"{self.moving} moving, {self.failed} failed")


def _label(cluster: str, node: str) -> str:
    return node if cluster == DEFAULT_CLUSTER else f"{cluster}/{node}"


def _row(cluster: str, node: str) -> Node | None:
    return Node.get_or_none((Node.cluster == cluster) & (Node.name == node))


def _upsert(cluster: str, node: str, **values: object) -> None:
    Node.insert(cluster=cluster, name=node, **values).on_conflict(update=values).execute()


def set_maintenance(node: str, on: bool, cluster: str = DEFAULT_CLUSTER) -> str:
    """Maintenance on: no new placement on the node (VMs already there stay). Off: it takes
    VMs again and a drain under way stops starting moves."""
    _upsert(cluster, node, maintenance=on, **({} if on else {"draining": False}))
    return f"{_label(cluster, node)}: maintenance {'on' if on else 'off'}"


def start_drain(node: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """Maintenance on and a new drain round (moves refused in an earlier round are tried
    again)."""
    with database.atomic():
        row = _row(cluster, node)
        _upsert(cluster, node, maintenance=True, draining=True,
                drain_round=(row.drain_round if row else 0) + 1)
    return f"{_label(cluster, node)}: maintenance on, draining"


def undrain(node: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """Back in service: no more moves start (those under way finish), placements may use it."""
    return set_maintenance(node, False, cluster)


def _residents(node: str, cluster: str) -> list[int]:
    """Services of ours whose VM is on the node."""
    return [s.id for s in Service.select(Service.id).where(
        (Service.cluster == cluster) & (Service.node == node) & Service.vmid.is_null(False)
        & (Service.status != ServiceStatus.TERMINATED)).order_by(Service.id)]


def _moves(node: str, round_: int, cluster: str) -> list[Operation]:
    return list(Operation.select().where(
        (Operation.kind == "migrate")
        & Operation.idempotency_key.startswith(f"drain:{_label(cluster, node)}:{round_}:")))


def progress(node: str, cluster: str = DEFAULT_CLUSTER) -> Progress:
    row = _row(cluster, node)
    moves = _moves(node, row.drain_round, cluster) if row else []
    tried = {m.service_id for m in moves}
    residents = _residents(node, cluster)
    return Progress(_label(cluster, node), bool(row and row.maintenance),
                    bool(row and row.draining),
                    len(residents), sum(1 for sid in residents if sid not in tried),
                    sum(1 for m in moves if m.status == OpStatus.DONE),
                    sum(1 for m in moves if m.status in UNFINISHED),
                    sum(1 for m in moves if m.status in (OpStatus.FAILED, OpStatus.CANCELLED)))


def refusals(node: str, cluster: str = DEFAULT_CLUSTER) -> list[str]:
    """This round's moves that failed, one line each with the reason the step gave (a VM PVE
    cannot migrate: snapshots on local disks, local devices...): the drain goes on without
    them, and ``node drain`` again tries them in a new round."""
    row = _row(cluster, node)
    failed = [m for m in (_moves(node, row.drain_round, cluster) if row else [])
              if m.status in (OpStatus.FAILED, OpStatus.CANCELLED)]
    return [f"sid:{m.service_id} not moved ({m.status}): {m.error or 'no reason recorded'}"
            for m in sorted(failed, key=lambda m: m.service_id)]


def draining() -> list[tuple[str, str]]:
    """(cluster, node) of every node being drained."""
    return [(n.cluster, n.name) for n in Node.select(Node.cluster, Node.name).where(
        Node.draining == True)]  # noqa: E712


def pass_once(settings: Settings, node: str, cluster: str = DEFAULT_CLUSTER) -> Outcome:
    """Start the next moves off ``node`` while fewer than the limit are unfinished (one
    transaction, the node's row locked: two passes at once start nothing twice)."""
    out = Outcome()
    with database.atomic():
        row = Node.fetch_one("SELECT * FROM nodes WHERE cluster = %s AND name = %s FOR UPDATE",
                             cluster, node)
        if row is None or not row.draining:
            return out
        moves = _moves(node, row.drain_round, cluster)
        tried = {m.service_id for m in moves}
        room = settings.engine.migrations_per_node - sum(
            1 for m in moves if m.status in UNFINISHED)
        for sid in _residents(node, cluster):
            if room <= 0:
                break
            if sid in tried:
                continue
            key = f"drain:{_label(cluster, node)}:{row.drain_round}:{sid}"
            out.merge(operations.begin(sid, "migrate", key, {"drain": node}))
            room -= 1
    return out


def run_once(settings: Settings, publisher: messaging.Publisher) -> int:
    """One pass over every draining node; how many moves it started."""
    started = 0
    for cluster, node in draining():
        out = pass_once(settings, node, cluster)
        operations.deliver(out, publisher)
        started += sum(1 for line in out.log if "migrate" in line)
    return started


# --------------------------------------------------------------------------- operator CLI

def migrate_command(settings: Settings, service_id: int, node: str | None) -> str:
    """``migrate SID [--node N]``: publish the admin event to the orders exchange, as billing
    would (intake checks it and runs it in the service's order)."""
    from producers.api import OrderClient

    if Service.get_or_none(Service.id == service_id) is None:
        return _nothing(f"{service_id}: no such service")
    with OrderClient(settings.amqp_url, settings.namespace) as orders:
        event = orders.migrate(service_id=service_id, node=node)
    where = f"to {node}" if node else "where placement chooses"
    return (f"sid:{service_id} migrate {where} sent ({event.idempotency_key}); "
            f"`python -m pvekvm history {service_id}` shows it")


def _nothing(text: str) -> str:
    from workers.admin import NothingDone

    return NothingDone(text)


def _bar(p: Progress, width: int = 30) -> str:
    total = p.moved + p.left
    done = width * p.moved // total if total else width
    return f"[{'#' * done}{'.' * (width - done)}] {p.line()}"


def drain_command(settings: Settings, node: str, watch: bool, timeout_s: float,
                  interval_s: float = 1.0, cluster: str = DEFAULT_CLUSTER) -> str:
    """``node drain NODE``: maintenance on, a new round, then (``watch``) passes with a
    progress bar until nothing more moves; leaving early is safe: the scheduler goes on."""
    import sys
    import time

    print(start_drain(node, cluster), flush=True)
    if not watch:
        return progress(node, cluster).line()
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            operations.deliver(pass_once(settings, node, cluster), pub)
            p = progress(node, cluster)
            print(_bar(p), file=sys.stderr, flush=True)
            if p.finished or time.monotonic() > deadline:
                break
            time.sleep(interval_s)
    finally:
        pub.close()
    if p.finished and p.left == 0:
        return f"{node}: drained, {p.moved} moved (maintenance stays on: `node undrain {node}`)"
    return _nothing("\n".join([p.line() + ("" if p.finished else " (still draining: the "
                                            "scheduler goes on)")] + refusals(node, cluster)))


def node_status(node: str | None, cluster: str | None = None) -> str:
    """``node`` of ``cluster`` (default the first), or every node with a row (of ``cluster``
    when given)."""
    if node:
        names = [(cluster or DEFAULT_CLUSTER, node)]
    else:
        q = Node.select(Node.cluster, Node.name).order_by(Node.cluster, Node.name)
        names = [(n.cluster, n.name) for n in (q.where(Node.cluster == cluster) if cluster
                                               else q)]
    return "\n".join("\n".join([progress(n, c).line()] + refusals(n, c)) for c, n in names) \
        or "no node in maintenance"
