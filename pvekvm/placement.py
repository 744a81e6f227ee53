"""Where a VM goes: the one place that picks a node (issue 24 grows this into full placement).

Today a product names one ``target_node`` and may run on any node of the cluster that has its
``target_storage``. A candidate is such a node, online, not in maintenance (pvekvm/nodes.py) and
not excluded; the one with the most free memory (``maxmem - mem``, ``/cluster/resources``) wins,
ties by name. A choice is written once per operation (``placements``) and read back by every
later step, so an operation never changes its mind halfway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvekvm.config import DEFAULT_CLUSTER
from pvekvm.models import Node, Placement, Product

if TYPE_CHECKING:
    from pvekvm.proxmox import Proxmox
    from steps.context import StepContext


@dataclass(frozen=True)
class Candidate:
    node: str
    free_mem: int


def in_maintenance(cluster: str = DEFAULT_CLUSTER) -> set[str]:
    """``cluster``'s nodes that take no new VM (node names repeat across clusters)."""
    return {n.name for n in Node.select(Node.name).where(
        (Node.cluster == cluster) & (Node.maintenance == True))}  # noqa: E712


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
    return Placement.get_or_none(Placement.operation_id == operation_id)


def record(ctx: StepContext, source: str | None, node: str) -> Placement:
    """Write the operation's choice (once: a second call keeps the first)."""
    Placement.insert(operation_id=ctx.operation.id, service_id=ctx.service.id, source=source,
                     node=node, cluster=ctx.service.cluster).on_conflict_ignore().execute()
    return Placement.get_by_id(ctx.operation.id)


def deploy_node(ctx: StepContext) -> str:
    """The node a deploy, reinstall or package change puts the VM on: the product's
    ``target_node``, unless that node is in maintenance (then the best candidate, chosen once
    for the operation). A cluster with no candidate at all keeps the product's node."""
    row = recorded(ctx.operation.id)
    if row is not None:
        return str(row.node)
    wanted, cluster = str(ctx.product.target_node), ctx.service.cluster
    if wanted not in in_maintenance(cluster):
        return wanted
    best = candidates(ctx.pve, ctx.product, cluster=cluster)
    if not best:
        return wanted
    return str(record(ctx, ctx.service.node, best[0].node).node)
