"""Where a VM goes: the one place that picks a node.

A product names the nodes it may run on (``nodes``, a catalog ``group``, or its ``target_node``
alone). A deploy's placement step asks ``/cluster/resources`` once and counts, per node, what is
committed: the configured memory, vCPUs and disk of every VM there (running or not: a stopped VM
may start at any time) and of our in-flight deploys placed there whose VM is not there yet
(``reservations``). A node's headroom is ``overcommit × capacity − committed`` for memory (plus
the host's own use: PVE's ``mem`` beyond its running guests' memory), CPU threads and the
product's storage (the service's cluster's ratios: its own ``[clusters.placement]``, else
``[placement]``; ``Settings.placement_of``). Nodes offline, in maintenance or without the
storage get nothing. Of the nodes with room for the VM, those within ``close_mb`` of the most
memory headroom count as equal: one with a template copy on the product's storage (no migration
after the clone) wins, then more CPU, then more storage, then more memory, then the name.

Invariants: placements are decided one at a time (the step holds the ``placement`` slot row
until its transaction commits: two orders never both take a node's last room); reservations
are read before the resources, so a reservation released meanwhile (its VM now on its node)
is seen in one or the other; a choice is written once per operation (``placements``, with its
reason) and read back by every later step, so an operation never changes its mind halfway.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pvekvm.config import DEFAULT_CLUSTER
from pvekvm.models import Placement, Product, Reservation, database

if TYPE_CHECKING:
    from pvekvm.config import PlacementSettings
    from pvekvm.proxmox import Proxmox
    from steps.context import StepContext

MiB, GiB = 2**20, 2**30
UNFINISHED = ("queued", "running", "paused")
# the hot path's statements written once (peewee's SQL building costs more than the round trip)
_MAINTENANCE = "SELECT name FROM nodes WHERE cluster = %s AND maintenance = 1"
_COPIES = ("SELECT node FROM template_replicas WHERE template_id = %s AND storage = %s "
           "AND shared = 0")
_PLACE = ("INSERT IGNORE INTO placements (operation_id, service_id, source, node, why, "
          "cluster) VALUES (%s, %s, NULL, %s, %s, %s)")
_RESERVE = ("INSERT INTO reservations (operation_id, service_id, node, storage, memory_mb, "
            "cores, disk_gb, waiting_since, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, "
            "NULL) ON DUPLICATE KEY UPDATE node = VALUES(node), storage = VALUES(storage), "
            "memory_mb = VALUES(memory_mb), cores = VALUES(cores), disk_gb = VALUES(disk_gb), "
            "waiting_since = NULL, reason = NULL")
_RESERVED = ("SELECT r.node, r.storage, r.memory_mb, r.cores, r.disk_gb, s.vmid "
             "FROM reservations r JOIN operations o ON o.id = r.operation_id "
             "JOIN services s ON s.id = r.service_id WHERE r.node IS NOT NULL "
             "AND o.status IN ('queued', 'running', 'paused') AND r.operation_id <> %s "
             "AND s.cluster = %s")


@dataclass(frozen=True)
class Candidate:
    node: str
    free_mem: int


@dataclass(frozen=True)
class Need:
    """What one VM of the product takes."""

    memory: int  # bytes
    cores: int
    disk: int  # bytes on the product's storage
    storage: str


@dataclass(frozen=True)
class Room:
    """One node's headroom under the overcommit ratios, before the VM being placed."""

    node: str
    memory: float
    cores: float
    disk: float
    copy: bool  # a template copy on the product's storage is there

    def short(self, need: Need) -> str | None:
        """What the node lacks for ``need`` (None: it fits)."""
        if self.memory < need.memory:
            return f"{size(need.memory)} memory free; best {self.node} with {size(self.memory)}"
        if self.cores < need.cores:
            return (f"{need.cores} vCPUs free; best {self.node} with "
                    f"{max(self.cores, 0):g}")
        if self.disk < need.disk:
            return (f"{size(need.disk)} free on {need.storage}; best {self.node} with "
                    f"{size(self.disk)}")
        return None


@dataclass(frozen=True)
class Choice:
    node: str | None  # None: no node fits
    why: str          # the node's reason, or why none fits


def size(n: float) -> str:
    n = max(n, 0)
    return f"{n / GiB:.1f} GiB" if n >= GiB or n == 0 else f"{n / MiB:.0f} MiB"


def allowed_nodes(product: Product) -> list[str]:
    return str(product.nodes).split(",") if product.nodes else [str(product.target_node)]


def group_name(product: Product) -> str:
    if product.node_group:
        return f"group {product.node_group}"
    nodes = allowed_nodes(product)
    return f"node {nodes[0]}" if len(nodes) == 1 else "nodes " + ", ".join(nodes)


def need_of(product: Product) -> Need:
    disk = int(product.disk_gb)
    if product.add_disk_gb and product.add_disk_storage in (None, product.target_storage):
        disk += int(product.add_disk_gb)
    return Need(int(product.memory_mb) * MiB, int(product.cores) * int(product.sockets or 1),
                disk * GiB, str(product.target_storage))


def in_maintenance(cluster: str = DEFAULT_CLUSTER) -> set[str]:
    """``cluster``'s nodes that take no new VM (node names repeat across clusters)."""
    return {name for (name,) in database.execute_sql(_MAINTENANCE, (cluster,)).fetchall()}


def copy_nodes(template_id: int, storage: str) -> set[str]:
    """Nodes holding a copy of the template on ``storage`` (local: a copy on shared storage
    serves every node alike, so it prefers none)."""
    return {n for (n,) in database.execute_sql(_COPIES, (template_id, storage)).fetchall()}


def reserved(operation_id: int, cluster: str = DEFAULT_CLUSTER
             ) -> list[tuple[str, str, int, int, int, int | None]]:
    """(node, storage, memory_mb, cores, disk_gb, vmid) of the other unfinished operations'
    reservations in ``cluster``. Read before ``/cluster/resources`` (see the module's
    docstring)."""
    return list(database.execute_sql(_RESERVED, (operation_id, cluster)).fetchall())


def rooms(resources: list[dict[str, Any]], nodes: list[str], need: Need,
          reservations: list[tuple[str, str, int, int, int, int | None]],
          ps: PlacementSettings, copies: set[str], skip: set[str]) -> tuple[list[Room], list[str]]:
    """The headroom of each of ``nodes`` that may take a VM, and why the others may not.
    One pass over ``resources`` (a VM is most of them): a VM off ``nodes`` costs two look-ups."""
    wanted = set(nodes)
    node_rows: dict[str, dict[str, Any]] = {}
    stores: dict[str, dict[str, Any]] = {}
    mem, cpu, running = dict.fromkeys(wanted, 0), dict.fromkeys(wanted, 0), dict.fromkeys(
        wanted, 0)
    going = {int(v[5]): v[0] for v in reservations if v[5] is not None}  # vmid -> its node
    here: set[tuple[str, int]] = set()  # (node, vmid) of reserved VMs already on their node
    for r in resources:
        kind = r.get("type")
        if kind == "qemu":
            node = r.get("node")
            if node not in wanted or r.get("template"):
                continue
            if going:
                vmid = int(r.get("vmid") or 0)
                there = going.get(vmid)
                if there is not None:
                    if there != node:
                        continue  # cloned elsewhere, on its way: its reservation counts there
                    here.add((node, vmid))
            maxmem = int(r.get("maxmem") or 0)
            mem[node] += maxmem
            cpu[node] += int(r.get("maxcpu") or 0)
            if r.get("status") == "running":
                running[node] += maxmem
        elif kind == "node":
            node_rows[r["node"]] = r
        elif (kind == "storage" and r.get("storage") == need.storage
              and r.get("status") == "available"):
            stores[r["node"]] = r
    res_mem: dict[str, int] = defaultdict(int)
    res_cpu: dict[str, int] = defaultdict(int)
    res_disk: dict[str, int] = defaultdict(int)
    shared = any(int(s.get("shared") or 0) for s in stores.values())
    for node, storage, memory_mb, cores, disk_gb, its_vmid in reservations:
        if its_vmid is not None and (node, int(its_vmid)) in here:
            continue  # its VM is on its node: counted above
        res_mem[node] += int(memory_mb) * MiB
        res_cpu[node] += int(cores)
        if storage == need.storage:
            res_disk["*" if shared else node] += int(disk_gb) * GiB
    out, notes = [], []
    for node in nodes:
        row = node_rows.get(node)
        if row is None:
            notes.append(f"{node} not in the cluster")
        elif row.get("status") != "online":
            notes.append(f"{node} offline")
        elif node in skip:
            notes.append(f"{node} in maintenance")
        elif node not in stores:
            notes.append(f"{node} without storage {need.storage}")
        else:
            store = stores[node]
            # the host's own use: what PVE's mem shows beyond the running guests' memory
            host = max(int(row.get("mem") or 0) - running[node], 0)
            used_mem = mem[node] + host
            out.append(Room(
                node,
                ps.memory_overcommit * int(row.get("maxmem") or 0) - used_mem - res_mem[node],
                ps.cpu_overcommit * int(row.get("maxcpu") or 0) - cpu[node] - res_cpu[node],
                ps.disk_overcommit * int(store.get("maxdisk") or 0) - int(store.get("disk") or 0)
                - res_disk["*" if shared else node],
                node in copies))
    return out, notes


def choose(found: list[Room], need: Need, ps: PlacementSettings, where: str,
           notes: list[str]) -> Choice:
    """The node for ``need`` (see the module's docstring), with its reason."""
    aside = f" ({', '.join(notes)})" if notes else ""
    fit = [r for r in found if r.short(need) is None]
    if not fit:
        if not found:
            return Choice(None, f"no node of {where} can take a VM{aside}")
        best = max(found, key=lambda r: (r.memory, r.cores, r.disk, r.node))
        return Choice(None, f"no node of {where} has {best.short(need)}{aside}")
    top = max(r.memory for r in fit)
    near = [r for r in fit if r.memory >= top - ps.close_mb * MiB]
    r = min(near, key=lambda r: (not r.copy, -r.cores, -r.disk, -r.memory, r.node))
    why = (f"{r.node}: most room of {where} ({size(r.memory)} memory, {r.cores:g} vCPUs, "
           f"{size(r.disk)} on {need.storage} free before this VM"
           + ("; template copy here" if r.copy and len(near) > 1 else "") + ")" + aside)
    return Choice(r.node, why)


def decide(ctx: StepContext, copies: set[str] | None = None) -> Choice:
    """Where this deploy goes now (the caller holds the ``placement`` slot lock); ``copies``:
    the nodes with a template copy on the product's storage (None: read them)."""
    product, cluster = ctx.product, ctx.service.cluster
    ps = ctx.settings.placement_of(cluster)  # the cluster's own ratios, else [placement]
    need = need_of(product)
    held = reserved(ctx.operation.id, cluster)
    off = in_maintenance(cluster)
    resources = ctx.pve.get("cluster/resources")
    if copies is None:
        copies = copy_nodes(ctx.template.id, need.storage)
    nodes, where = allowed_nodes(product), group_name(product)
    if not product.nodes and nodes[0] in off:  # the old target_node in maintenance: as
        nodes += sorted(r["node"] for r in resources  # before, any other node takes it
                        if r.get("type") == "node" and r.get("node") != nodes[0])
        where = f"the cluster ({where} in maintenance)"
    found, notes = rooms(resources, nodes, need, held, ps, copies, off)
    return choose(found, need, ps, where, notes)


def reserve(ctx: StepContext, choice: Choice) -> None:
    """Write the choice (once) and what the VM will take there until it is on that node."""
    need, op, sid = need_of(ctx.product), ctx.operation.id, ctx.service.id
    assert choice.node is not None
    database.execute_sql(_PLACE, (op, sid, choice.node, choice.why[:500], ctx.service.cluster))
    database.execute_sql(_RESERVE, (op, sid, choice.node, need.storage, need.memory // MiB,
                                    need.cores, need.disk // GiB))


def waiting(ctx: StepContext, reason: str) -> tuple[datetime, bool]:
    """Record that the deploy waits for room: since when, and whether this is news."""
    row = Reservation.get_or_none(Reservation.operation_id == ctx.operation.id)
    if row is not None and row.waiting_since is not None:
        if row.reason != reason[:500]:
            Reservation.update(reason=reason[:500]).where(
                Reservation.operation_id == ctx.operation.id).execute()
        return row.waiting_since, False
    need, now = need_of(ctx.product), datetime.now()
    values = dict(service_id=ctx.service.id, node=None, storage=need.storage,
                  memory_mb=need.memory // MiB, cores=need.cores, disk_gb=need.disk // GiB,
                  waiting_since=now, reason=reason[:500])
    Reservation.insert(operation_id=ctx.operation.id, **values).on_conflict(
        update=values).execute()
    return now, True


def release(operation_id: int) -> None:
    """The VM is on its node (counted from ``/cluster/resources`` now), or the deploy ended."""
    Reservation.delete().where(Reservation.operation_id == operation_id).execute()


def candidates(pve: Proxmox, product: Product, exclude: set[str] | frozenset[str] = frozenset(),
               cluster: str = DEFAULT_CLUSTER) -> list[Candidate]:
    """The nodes of ``cluster`` (``pve`` is its client) the product may use now, best first
    (see the module's docstring)."""
    resources = pve.get("cluster/resources")
    with_storage = {r.get("node") for r in resources if r.get("type") == "storage"
                    and r.get("storage") == product.target_storage
                    and r.get("status") == "available"}
    skip = set(exclude) | in_maintenance(cluster)
    found = [Candidate(r["node"], int(r.get("maxmem", 0)) - int(r.get("mem", 0)))
             for r in resources if r.get("type") == "node" and r.get("status") == "online"
             and r.get("node") in with_storage and r.get("node") not in skip]
    return sorted(found, key=lambda c: (-c.free_mem, c.node))


def recorded(operation_id: int) -> Placement | None:
    return Placement.fetch_one("SELECT * FROM placements WHERE operation_id = %s", operation_id)


def record(ctx: StepContext, source: str | None, node: str, why: str | None = None
           ) -> Placement:
    """Write the operation's choice (once: a second call keeps the first)."""
    Placement.insert(operation_id=ctx.operation.id, service_id=ctx.service.id, source=source,
                     node=node, why=why, cluster=ctx.service.cluster).on_conflict_ignore().execute()
    return Placement.get_by_id(ctx.operation.id)


def deploy_node(ctx: StepContext) -> str:
    """The node a deploy, reinstall or package change puts the VM on: the one placed for the
    operation; else (reinstall, package change) the VM's node when the product allows it and
    it is not in maintenance; else the allowed node with most room, chosen once for the
    operation (the first allowed node when none has room: the operation then fails visibly)."""
    row = recorded(ctx.operation.id)
    if row is not None:
        return str(row.node)
    allowed = allowed_nodes(ctx.product)
    off = in_maintenance(ctx.service.cluster)
    if ctx.service.node in allowed and ctx.service.node not in off:
        return str(ctx.service.node)
    choice = decide(ctx)
    node = choice.node or next((n for n in allowed if n not in off), allowed[0])
    return str(record(ctx, ctx.service.node, node, choice.why[:500]).node)
