"""Backups follow the VM: whatever moves it re-points the rows of its shared-storage backups.

Invariant: a backup row's ``node`` is the node whose API reaches its archive: the VM's node for
shared storage (after every move: the migrate machine's ``mg_backups``, the relocation of
deploy/reinstall/change package), the node that made it for local storage
(pvekvm/backup_reach.py says what that means for a restore). Imports nothing of ``steps`` but
the context, so every step that moves a VM can use it.
"""

from __future__ import annotations

from pvekvm.models import Backup
from steps.context import StepContext


def shared_storages(ctx: StepContext, node: str) -> set[str]:
    """Storages shared by the cluster's nodes, as ``node`` lists them."""
    return {r["storage"] for r in ctx.pve.get("cluster/resources", type="storage")
            if r.get("node") == node and r.get("shared")}


def follow_vm(ctx: StepContext, node: str) -> tuple[int, int]:
    """The VM is on ``node`` now: its backups on shared storage are reached through it (their
    rows' node); those on another node's local storage stay there (pvekvm/backup_reach.py).
    (moved, left) counts; nothing to do is (0, 0) without a Proxmox call."""
    rows = list(Backup.select().where((Backup.service_id == ctx.service.id)
                                      & (Backup.node != node)))
    if not rows:
        return 0, 0
    shared = shared_storages(ctx, node)
    moved = [b.id for b in rows if b.storage in shared]
    if moved:
        Backup.update(node=node).where(Backup.id.in_(moved)).execute()
    return len(moved), len(rows) - len(moved)
