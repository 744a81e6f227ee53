"""Bringing the VM into existence where the package wants it: clone, migrate, delete."""

from __future__ import annotations

from pvekvm.models import Operation, Service, Template
from pvekvm.proxmox import ProxmoxError
from steps import hardware, pvecfg
from steps.context import StepContext
from steps.machine import Done, Retry, StepFailed, StepResult, Wait

DISK_KEYS = tuple(f"{bus}{n}" for bus in ("scsi", "virtio", "sata", "ide") for n in range(6))


def _is_disk(key: str, value: object) -> bool:
    return key in DISK_KEYS and isinstance(value, str) and "media=cdrom" not in value \
        and "cloudinit" not in value


def clone_vm(ctx: StepContext) -> StepResult:
    """VMClone: full clone of the template on the template's node. A VM already at our VMID that
    carries our marker is adopted (a retried step after a crash); a foreign one stops us."""
    tpl = ctx.template
    node = ctx.pve.locate(ctx.vmid)
    if node is not None:
        cfg = ctx.pve.vm_config(node, ctx.vmid)
        if cfg.get("lock"):  # PVE writes the description when the clone finishes
            return Retry(f"clone in progress (lock: {cfg['lock']})")
        if ctx.marker() not in str(cfg.get("description", "")):
            raise StepFailed(f"VMID {ctx.vmid} is taken by a VM that is not ours")
        _record_node(ctx, node)
        return Done(f"VM {ctx.vmid} exists on {node}", skipped=True)
    busy = clones_in_flight(tpl.node)
    if busy >= ctx.settings.engine.clones_per_storage:
        return Retry(f"{busy} clones running on {tpl.node}: waiting for a slot", counts=False)
    upid = ctx.pve.post(
        f"nodes/{tpl.node}/qemu/{tpl.vmid}/clone", newid=ctx.vmid, name=ctx.service.hostname,
        full=1, description=f"{ctx.marker()} op={ctx.operation.id}")
    _record_node(ctx, tpl.node)
    return Wait(upid, tpl.node)


def clones_in_flight(node: str) -> int:
    """Full clones hold the storage lock on PVE: count ours running from ``node``'s templates
    (an operation waiting on a task whose UPID type is ``qmclone``).
    The template rows are locked until our transaction ends, so two workers cannot both take
    the last slot."""
    tpl_ids = [t.id for t in Template.select(Template.id).where(Template.node == node)
               .order_by(Template.id).for_update()]
    return (Operation.select().join(Service, on=(Operation.service_id == Service.id))
            .where(Operation.upid.contains(":qmclone:")
                   & (Operation.status == "running") & Service.template_id.in_(tpl_ids))
            .count())


def wanted_storages(ctx: StepContext, cfg: dict) -> dict[str, str]:
    """Where each volume of the VM belongs under the package: the additional disk on its own
    storage (when the package has one), every other disk and the cloud-init drive on the
    target storage."""
    extra = hardware.additional_disk(ctx.product)
    return {k: extra.storage if extra.size_gb > 0 and k == extra.slot
            else ctx.product.target_storage for k, v in cfg.items()
            if _is_disk(k, v) or (k in DISK_KEYS and "cloudinit" in str(v))}


def migrate_to_target(ctx: StepContext) -> StepResult:
    """migrateToTargetNode: the VM goes to the package's node and its disks to the package's
    storages, whatever node it starts from (deploy, reinstall, change package). Another node:
    offline migration with the local disks (``targetstorage``); then each disk still on the
    wrong storage is moved (``move_disk``; the source is deleted unless a snapshot needs it).
    One Proxmox task per run; the step runs again after each task until nothing is left."""
    node = ctx.pve.locate(ctx.vmid)
    if node is None:
        raise StepFailed(f"VM {ctx.vmid} has vanished")
    _record_node(ctx, node)
    cfg = ctx.pve.vm_config(node, ctx.vmid)
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    target, storage = ctx.product.target_node, ctx.product.target_storage
    if node != target:
        return _migrate(ctx, node, cfg, target, storage)
    misplaced = {k: want for k, want in wanted_storages(ctx, cfg).items()
                 if pvecfg.storage_of(cfg[k]) != want}
    if misplaced:
        key, want = next(iter(misplaced.items()))
        # a snapshot still refers to the source volume: PVE then keeps it (as unusedN)
        snapshots = [s for s in ctx.pve.get(f"nodes/{node}/qemu/{ctx.vmid}/snapshot")
                     if s.get("name") != "current"]
        return Wait(ctx.pve.post(f"nodes/{node}/qemu/{ctx.vmid}/move_disk", disk=key,
                                 storage=want, delete=0 if snapshots else 1), node)
    where = ", ".join(sorted({f"{k} on {pvecfg.storage_of(cfg[k])}"
                              for k in wanted_storages(ctx, cfg)}))
    return Done(f"on {target}: {where}", skipped=not ctx.after_task)


def _migrate(ctx: StepContext, node: str, cfg: dict, target: str, storage: str) -> StepResult:
    """Offline migration; an attached ISO blocks it, so it is detached first."""
    for key, value in cfg.items():
        if key in DISK_KEYS and "media=cdrom" in str(value) and "cloudinit" not in str(value) \
                and not str(value).startswith("none"):  # an ISO, not the cloud-init drive
            ctx.pve.put(f"nodes/{node}/qemu/{ctx.vmid}/config", **{key: "none,media=cdrom"})
    status = ctx.pve.get(f"nodes/{node}/qemu/{ctx.vmid}/status/current")
    if status.get("status") == "running":
        raise StepFailed("VM is running; offline migration needs it stopped")
    upid = ctx.pve.post(f"nodes/{node}/qemu/{ctx.vmid}/migrate", target=target, online=0,
                        **{"with-local-disks": 1, "targetstorage": storage})
    return Wait(upid, node)


def delete_vm(ctx: StepContext) -> StepResult:
    """Remove the VM with its disks. A VM that is already gone counts as deleted."""
    if ctx.service.vmid is None:
        return Done("no VM", skipped=True)
    node = ctx.pve.locate(ctx.vmid)
    if node is None:
        return Done(f"VM {ctx.vmid} already gone", skipped=True)
    _record_node(ctx, node)
    cfg = ctx.pve.vm_config(node, ctx.vmid)
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    status = ctx.pve.get(f"nodes/{node}/qemu/{ctx.vmid}/status/current")
    if status.get("status") == "running":
        return Wait(ctx.pve.post(f"nodes/{node}/qemu/{ctx.vmid}/status/stop"), node)
    try:
        upid = ctx.pve.delete(f"nodes/{node}/qemu/{ctx.vmid}", purge=1,
                              **{"destroy-unreferenced-disks": 1})
    except ProxmoxError as exc:
        if "does not exist" in str(exc):
            return Done(f"VM {ctx.vmid} already gone", skipped=True)
        raise
    return Wait(upid, node)


def _record_node(ctx: StepContext, node: str) -> None:
    if ctx.service.node != node:
        ctx.service.node = node
        Service.update(node=node).where(Service.id == ctx.service.id).execute()
