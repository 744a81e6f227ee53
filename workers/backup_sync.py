"""The backup list follows the storage: a scheduled pass compares the backups we list with what
each storage holds and forgets the ones it no longer does (a retention job pruned them, a PBS
datastore's prune, an operator's delete), so a client is never offered a backup that no longer
exists; billing hears ``backup.gone``.

Invariants: the rows are read before the storages are listed, and a row is written only after
its archive exists, so an archive missing from a listing taken after the read is really gone; a
storage that cannot be listed forgets nothing; one pass at a time across scheduler hosts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from pvekvm.messaging import Publisher
from pvekvm.models import Backup, Service, database
from pvekvm.proxmox import Proxmox, ProxmoxError
from steps.backups import forget_gone
from workers import outbox

log = logging.getLogger("pvekvm.backup_sync")
LOCK = "pvekvm_backup_sync"


@dataclass
class SyncResult:
    checked: int = 0
    gone: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None
    followed: int = 0


def run_once(pve: Proxmox, publisher: Publisher | None,
             cluster: str | None = None) -> SyncResult:
    """One pass: one content listing per node+storage that holds a backup of ours (of the
    services in ``cluster`` when given: ``pve`` is its client)."""
    result = SyncResult()
    lock = f"{LOCK}:{database.database}" + (f":{cluster}" if cluster else "")
    lock = lock[:64]
    if not database.execute_sql("SELECT GET_LOCK(%s, 0)", (lock,)).fetchone()[0]:
        result.skipped = "another scheduler host is running it"
        return result
    try:
        places: dict[tuple[str, str], list[Backup]] = defaultdict(list)
        query = Backup.select()
        if cluster is not None:
            query = query.join(Service, on=(Service.id == Backup.service_id)).where(
                Service.cluster == cluster)
        rows = list(query)
        result.followed = _follow_vms(pve, rows, result)
        for b in rows:
            places[(b.node, b.storage)].append(b)
        for (node, storage), backups in sorted(places.items()):
            try:
                held = {v.get("volid") for v in pve.get(
                    f"nodes/{node}/storage/{storage}/content", content="backup")}
            except ProxmoxError as exc:
                result.errors.append(f"{node}/{storage}: {exc}")
                continue
            result.checked += len(backups)
            for b in backups:
                if b.volid not in held:
                    _forget(b, publisher, result)
    finally:
        database.execute_sql("SELECT RELEASE_LOCK(%s)", (lock,))
    return result


def _follow_vms(pve: Proxmox, rows: list[Backup], result: SyncResult) -> int:
    """A backup on shared storage whose row names another node than its VM's (listed before
    every move made shared backups follow: steps/backup_follow.py) is reached through the
    VM's node from now on, so it is offered for restore (pvekvm/backup_reach.py)."""
    nodes: dict[int, str] = {s.id: str(s.node) for s in Service.select(
        Service.id, Service.node).where(Service.id.in_({b.service_id for b in rows})
                                        & Service.node.is_null(False))} if rows else {}
    stray = [b for b in rows if nodes.get(b.service_id) not in (None, b.node)]
    if not stray:
        return 0
    try:
        shared = {(r.get("node"), r.get("storage")) for r in pve.get(
            "cluster/resources", type="storage") if r.get("shared")}
    except ProxmoxError as exc:
        result.errors.append(f"storages: {exc}")
        return 0
    followed = 0
    for b in stray:
        node = nodes[b.service_id]
        if (node, b.storage) in shared:
            followed += Backup.update(node=node).where(
                (Backup.id == b.id) & (Backup.node == b.node)).execute()
            b.node = node
    return followed


def _forget(backup: Backup, publisher: Publisher | None, result: SyncResult) -> None:
    with database.atomic():
        if not forget_gone(backup):
            return  # deleted meanwhile (backup_delete, terminate): nothing to tell
        pending = outbox.record("backup.gone", service_id=backup.service_id,
                                backup_id=backup.id, storage=backup.storage,
                                created_at=backup.created_at, note=backup.note)
    log.warning("sid:%d backup %d (%s) is gone from %s: no longer listed", backup.service_id,
                backup.id, backup.volid, backup.storage)
    result.gone.append(backup.id)
    if publisher is not None:
        outbox.publish([pending], publisher)
