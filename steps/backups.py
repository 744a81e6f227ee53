"""Snapshots and backups: limits from the package, PVE tasks, and our rows kept in step."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

from pvekvm import backup_reach, service_changes
from pvekvm.models import AuditLog, Backup, Service, Snapshot
from pvekvm.proxmox import ProxmoxError
from steps import backup_follow, power, rescue, slots
from steps.context import StepContext
from steps.machine import Done, Refused, Retry, StepResult, Wait


def _snapshot_list(ctx: StepContext) -> dict[str, dict]:
    return {s["name"]: s for s in ctx.pve.get(f"{ctx.vm_path}/snapshot")
            if s["name"] != "current"}


def _snapshots(ctx: StepContext) -> set[str]:
    return set(_snapshot_list(ctx))


def create_snapshot(ctx: StepContext) -> StepResult:
    """A snapshot this operation made carries its tag in the description: one of that name
    without the tag (an operator's, another tool's) is not adopted as the client's: refused."""
    name, tag = ctx.params["name"], _notes_tag(ctx)
    there = _snapshot_list(ctx).get(name)
    if there is not None:
        if tag not in str(there.get("description", "")):
            raise Refused(f"snapshot {name} already exists on Proxmox and is not this order's")
        _remember_snapshot(ctx, name)
        return Done(f"snapshot {name}", skipped=not ctx.after_task)
    count = Snapshot.select().where(Snapshot.service_id == ctx.service.id).count()
    if count >= ctx.product.snapshot_limit:
        raise Refused(f"snapshot limit reached ({count}/{ctx.product.snapshot_limit})")
    cfg = ctx.config()
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    description = f"{ctx.params.get('description') or 'pvekvm'} ({tag})"
    return Wait(ctx.pve.post(f"{ctx.vm_path}/snapshot", snapname=name, description=description),
                ctx.node)


def _remember_snapshot(ctx: StepContext, name: str) -> None:
    now = datetime.now()
    Snapshot.insert(service_id=ctx.service.id, name=name,
                    description=ctx.params.get("description") or "", created_at=now,
                    expires_at=now + timedelta(days=int(ctx.product.snapshot_days))
                    ).on_conflict_ignore().execute()


def delete_snapshot(ctx: StepContext, name: str | None = None) -> StepResult:
    name = name or ctx.params["name"]
    if name not in _snapshots(ctx):
        Snapshot.delete().where((Snapshot.service_id == ctx.service.id)
                                & (Snapshot.name == name)).execute()
        return Done(f"snapshot {name} gone", skipped=not ctx.after_task)
    return Wait(ctx.pve.delete(f"{ctx.vm_path}/snapshot/{name}"), ctx.node)


def delete_all_snapshots(ctx: StepContext) -> StepResult:
    """Reinstall: snapshots go (backups stay)."""
    if ctx.service.vmid is None or ctx.pve.locate(ctx.vmid) is None:
        Snapshot.delete().where(Snapshot.service_id == ctx.service.id).execute()
        return Done("no VM", skipped=True)
    left = sorted(_snapshots(ctx))
    if not left:
        Snapshot.delete().where(Snapshot.service_id == ctx.service.id).execute()
        return Done("no snapshots", skipped=not ctx.after_task)
    return delete_snapshot(ctx, left[0])


def rollback_snapshot(ctx: StepContext) -> StepResult:
    """Roll back and leave the VM powered as it was before: PVE's rollback stops the VM, or
    starts it when the snapshot holds RAM. The power state before is kept in the audit log
    (once per operation), so the step can put it back after the rollback task."""
    name = ctx.params["name"]
    if ctx.after_task:
        noted = rescue.adopt_restored_rescue(ctx)  # a snapshot taken in rescue mode
        before = _power_before_rollback(ctx)
        now = _power(ctx)
        if before == "running" and now != "running":
            return power.start_vm(ctx)
        if before == "stopped" and now == "running":
            return power.stop_vm(ctx)
        return Done(f"rolled back to {name}, VM {now}" + (f"; {noted}" if noted else ""))
    if name not in _snapshots(ctx):
        raise Refused(f"snapshot {name} does not exist")
    cfg = ctx.config()
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    before = _power_before_rollback(ctx) or _power(ctx)
    AuditLog.insert(service_id=ctx.service.id, operation_id=ctx.operation.id,
                    event=_POWER_BEFORE, detail=before, created_at=datetime.now()).execute()
    start = {"start": 1} if before == "running" else {}
    return Wait(ctx.pve.post(f"{ctx.vm_path}/snapshot/{name}/rollback", **start),
                ctx.node)


_POWER_BEFORE = "power_before_rollback"


def _power(ctx: StepContext) -> str:
    return str(ctx.pve.get(f"{ctx.vm_path}/status/current").get("status", "unknown"))


def _power_before_rollback(ctx: StepContext) -> str | None:
    row = (AuditLog.select(AuditLog.detail)
           .where((AuditLog.operation_id == ctx.operation.id) & (AuditLog.event == _POWER_BEFORE))
           .order_by(AuditLog.id).first())
    return row.detail if row else None


def _notes_tag(ctx: StepContext) -> str:
    return f"pvekvm-op-{ctx.operation.id}"


def _backup_volumes(ctx: StepContext, storage: str) -> list[dict]:
    return ctx.pve.get(f"nodes/{ctx.service.node}/storage/{storage}/content", content="backup",
                       vmid=ctx.vmid)


def create_backup(ctx: StepContext) -> StepResult:
    storage = ctx.product.backup_storage
    if not storage or ctx.product.backup_limit <= 0:
        raise Refused("the package allows no backups")
    tag = _notes_tag(ctx)
    mine = [v for v in _backup_volumes(ctx, storage) if tag in str(v.get("notes", ""))]
    if mine:
        vol = mine[0]
        Backup.insert(service_id=ctx.service.id, volid=vol["volid"], storage=storage,
                      node=ctx.service.node, size_bytes=int(vol.get("size", 0)),
                      scheduled=bool(ctx.params.get("scheduled")),
                      note=(ctx.params.get("note") or "")[:255], created_at=datetime.now(),
                      operation_id=ctx.operation.id,
                      **_what_the_vm_runs(ctx.service)).on_conflict_ignore().execute()
        slots.release(ctx)
        return Done(vol["volid"], skipped=not ctx.after_task)
    held = list(Backup.select().where(Backup.service_id == ctx.service.id)
                .order_by(Backup.created_at))
    if len(held) >= ctx.product.backup_limit:
        if not ctx.params.get("scheduled"):
            raise Refused(f"backup limit reached ({len(held)}/{ctx.product.backup_limit})")
        return _delete_volume(ctx, held[0])  # rotate: the oldest makes room, then run again
    cfg = ctx.config()
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    busy = slots.take(ctx, slots.BACKUP, f"vzdump/{ctx.service.node}")
    if busy:  # vzdump's global lock: one job per node; ours waits its turn here, not in PVE
        return Retry(busy, counts=False)
    upid = ctx.pve.post(f"nodes/{ctx.service.node}/vzdump", vmid=ctx.vmid, storage=storage,
                        mode="snapshot", compress="zstd",
                        **{"notes-template": f"{{{{guestname}}}} {tag}"})
    return Wait(upid, ctx.node)


def _delete_volume(ctx: StepContext, backup: Backup) -> StepResult:
    """Delete the archive and its row. A backup the operator protected on its storage (PVE's
    ``protected`` flag; PBS snapshots too) is refused with the reason and kept."""
    volume = quote(backup.volid, safe="")  # a volid holds ':' and '/'
    path = f"nodes/{backup.node}/storage/{backup.storage}/content/{volume}"
    try:
        if ctx.pve.get(path).get("protected"):
            raise Refused(f"backup {backup.id} is protected on storage {backup.storage}: "
                          "an operator must lift the protection before it can be deleted")
        upid = ctx.pve.delete(path)
    except ProxmoxError as exc:
        if "does not exist" not in str(exc):
            raise
        upid = None
    backup.delete_instance()
    if isinstance(upid, str) and upid.startswith("UPID:"):
        return Wait(upid, backup.node)
    return Retry("oldest backup removed", counts=False)


def delete_backup(ctx: StepContext) -> StepResult:
    backup = Backup.get_or_none((Backup.id == ctx.params["backup_id"])
                                & (Backup.service_id == ctx.service.id))
    if backup is None:
        return Done("backup already gone", skipped=not ctx.after_task)
    result = _delete_volume(ctx, backup)
    return result if isinstance(result, Wait) else Done(f"{backup.volid} deleted")


def forget_gone(backup: Backup, operation_id: int | None = None) -> bool:
    """The storage no longer holds the archive: the row goes, so the client is never offered a
    backup that does not exist; the audit log keeps what was lost. False: already gone."""
    if not Backup.delete().where(Backup.id == backup.id).execute():
        return False
    AuditLog.create(service_id=backup.service_id, operation_id=operation_id,
                    event="backup_gone", detail=f"{backup.volid} not on {backup.storage}",
                    created_at=datetime.now())
    return True


def delete_all_backups(ctx: StepContext) -> StepResult:
    """Terminate: the client's backups go with the service."""
    first = Backup.select().where(Backup.service_id == ctx.service.id).first()
    if first is None:
        return Done("no backups", skipped=not ctx.after_task)
    result = _delete_volume(ctx, first)
    if isinstance(result, Wait):
        return result
    return delete_all_backups(ctx)


_RESTORED_FIELDS = ("template_id", "username", "password_enc")


def _what_the_vm_runs(service: Service) -> dict[str, object]:
    """Recorded with a backup: the OS, login and password the backed-up VM has."""
    return {f: getattr(service, f) for f in _RESTORED_FIELDS}


def restore_backup(ctx: StepContext) -> StepResult:
    """Restore over the existing VM (same VMID); the VM is stopped by the step before. When the
    restore is done, the service row says what the restored VM has: the OS, login and password
    of the backup (a backup taken before a reinstall brings the old OS back)."""
    backup = Backup.get_or_none((Backup.id == ctx.params["backup_id"])
                                & (Backup.service_id == ctx.service.id))
    if backup is None:
        raise Refused(f"backup {ctx.params['backup_id']} not found for this service")
    if ctx.after_task:
        restored = {f: getattr(backup, f) for f in _RESTORED_FIELDS
                    if getattr(backup, f) is not None}
        service_changes.restored_from_backup(ctx.service, restored)
        noted = rescue.adopt_restored_rescue(ctx)  # a backup taken in rescue mode
        return Done(f"restored {backup.volid}" + (f"; {noted}" if noted else ""))
    if backup.node != ctx.node:  # a row from before shared backups followed every move
        backup_follow.follow_vm(ctx, ctx.node)
        backup = Backup.get_by_id(backup.id)
    why = backup_reach.unreachable(backup.node, backup.storage, ctx.service.node)
    if why:  # intake refuses it; a migration may have come between
        raise Refused(f"backup {backup.id} cannot be restored: {why}")
    held = ctx.pve.get(f"nodes/{backup.node}/storage/{backup.storage}/content",
                       content="backup", vmid=ctx.vmid)
    if not any(v.get("volid") == backup.volid for v in held):
        forget_gone(backup, ctx.operation.id)
        raise Refused(f"backup {backup.id} is gone from storage {backup.storage} (pruned or "
                      "deleted outside pvekvm): restore another backup or reinstall")
    upid = ctx.pve.post(f"nodes/{ctx.service.node}/qemu", vmid=ctx.vmid, archive=backup.volid,
                        force=1, storage=ctx.product.target_storage)
    return Wait(upid, ctx.node)


def record_found(service: Service, volume: dict, storage: str, node: str) -> str | None:
    """Adoption: a backup archive of the service's VM found on its package's storage joins the
    service's list (OS and login unknown: not recorded). Why not, when the archive is another
    VM's or another service lists it; listing it again is a no-op."""
    volid = str(volume.get("volid", ""))
    if int(volume.get("vmid") or -1) != service.vmid or f"-{service.vmid}-" not in volid:
        return f"{volid} is not an archive of VM {service.vmid}"
    held = Backup.get_or_none(Backup.volid == volid)
    if held is not None:
        return None if held.service_id == service.id else \
            f"{volid} is listed by service {held.service_id}"
    ctime = volume.get("ctime")
    Backup.insert(service_id=service.id, volid=volid, storage=storage, node=node,
                  size_bytes=int(volume.get("size") or 0),
                  note=str(volume.get("notes") or "")[:255],
                  created_at=datetime.fromtimestamp(int(ctime)) if ctime else datetime.now()
                  ).on_conflict_ignore().execute()
    return None
