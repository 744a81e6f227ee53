"""Bringing the VM into existence where the package wants it: clone, migrate, delete."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from pvekvm import placement, service_changes
from pvekvm.catalog_cache import _catalog
from pvekvm.models import TemplateReplica
from pvekvm.proxmox import ProxmoxError
from steps import backup_follow, hardware, pvecfg, slots
from steps.context import StepContext
from steps.machine import Done, Refused, Retry, StepFailed, StepResult, Wait

DISK_KEYS = tuple(f"{bus}{n}" for bus in ("scsi", "virtio", "sata", "ide") for n in range(6))


def _is_disk(key: str, value: object) -> bool:
    return key in DISK_KEYS and isinstance(value, str) and "media=cdrom" not in value \
        and "cloudinit" not in value


@dataclass(frozen=True)
class ClonePlan:
    """Where and how a VM is cloned. ``node``/``source``: the template copy whose node runs the
    clone task; ``target``: another node to clone to (only from shared storage); ``storage``: a
    full clone's destination (None: the copy's own storage); ``slot``: the storage lock a full
    clone holds ("<node>/<storage>", "shared/<storage>")."""

    node: str
    source: int
    target: str | None
    storage: str | None
    linked: bool
    slot: str
    path: str  # for the operator log

    @property
    def dest_node(self) -> str:
        return self.target or self.node


def replicas(template_id: int, max_age_s: float) -> dict[str, TemplateReplica]:
    """The template's copies by node (kept per process with the catalog rows)."""
    key = (TemplateReplica, int(template_id))
    hit = _catalog.get(key)
    now = time.monotonic()
    if hit is None or now - hit[0] > max_age_s:
        rows = TemplateReplica.select().where(TemplateReplica.template_id == template_id)
        hit = _catalog[key] = (now, {r.node: r for r in rows})
    return hit[1]


def clone_plan(ctx: StepContext) -> ClonePlan:
    """A copy on the target node: clone there onto the product's storage (linked when the
    product asks and the copy is on that storage). Else a copy on shared storage: clone to the
    target node (the disk is then moved to the product's storage). Else the manual's path:
    full clone on the template's node, then an offline migration."""
    tpl, product = ctx.template, ctx.product
    node, storage = placement.deploy_node(ctx), product.target_storage
    copies = replicas(tpl.id, ctx.settings.engine.catalog_cache_s)
    here = copies.get(node)
    if here is not None:
        linked = bool(product.linked_clone) and here.storage == storage
        kind = "linked" if linked else "full"
        return ClonePlan(node, here.vmid, None, None if linked else storage, linked,
                         f"{node}/{storage}",
                         f"{kind} clone of template copy {here.vmid} on {node} onto {storage}: "
                         "no migration")
    shared = next((r for r in copies.values() if r.shared), None)
    if shared is not None:
        linked = bool(product.linked_clone) and shared.storage == storage
        kind = "linked" if linked else "full"
        return ClonePlan(shared.node, shared.vmid, node if node != shared.node else None,
                         None, linked, f"shared/{shared.storage}",
                         f"{kind} clone of template copy {shared.vmid} ({shared.storage}, "
                         f"shared) to {node}: no migration")
    own = copies.get(tpl.node)  # the original listed as a copy: its storage is known
    return ClonePlan(tpl.node, tpl.vmid, None, None, False,
                     f"{tpl.node}/{own.storage if own is not None else '*'}",
                     f"full clone on template node {tpl.node} (no template copy on {node}): "
                     "migration follows")


PLACEMENT_SLOT = "placement"  # one cluster today; per cluster once there are several


def place_vm(ctx: StepContext) -> StepResult:
    """Choose the deploy's node by headroom (:mod:`pvekvm.placement`) and reserve what the VM
    will take there. No node fits: wait (billing hears why, once), look again every few
    seconds, and fail with the reason after ``[placement] wait_max_s``."""
    row = placement.recorded(ctx.operation.id)
    if row is not None:
        return Done(row.why or f"on {row.node}", skipped=True)
    slots.lock_slot(PLACEMENT_SLOT)  # until this commit: one placement at a time
    copies = {node for node, r in replicas(ctx.template.id, ctx.settings.engine.catalog_cache_s)
              .items() if r.storage == ctx.product.target_storage and not r.shared}
    choice = placement.decide(ctx, copies)
    if choice.node is not None:
        placement.reserve(ctx, choice)
        return Done(choice.why)
    since, news = placement.waiting(ctx, choice.why)
    waited = (datetime.now() - since).total_seconds()
    cluster = ctx.service.cluster
    limit = ctx.settings.placement_of(cluster).wait_max_s
    if waited >= limit:
        placement.release(ctx.operation.id)
        raise Refused(f"{choice.why}; waited {waited:.0f} s "
                      f"({ctx.settings.placement_where(cluster)} wait_max_s = {limit:g})")
    return Retry(f"{choice.why}: waiting for room", counts=False, tell=news)


def clone_vm(ctx: StepContext) -> StepResult:
    """VMClone: clone the template where :func:`clone_plan` says. A full clone first takes a
    clone slot of its node+storage (:mod:`steps.slots`: oldest order first). A VM already at
    our VMID that carries our marker is adopted (a retried step after a crash); a foreign one
    stops us."""
    plan = clone_plan(ctx)
    found = ctx.pve.find_vm(ctx.vmid, ctx.service.node)
    if found is not None:
        node, cfg = found
        if cfg.get("lock"):  # PVE writes the description when the clone finishes
            return Retry(f"clone in progress (lock: {cfg['lock']})")
        if ctx.marker() not in str(cfg.get("description", "")):
            raise StepFailed(f"VMID {ctx.vmid} is taken by a VM that is not ours")
        _record_node(ctx, node)
        slots.release(ctx)
        if ctx.after_task:
            return Done(f"VM {ctx.vmid} on {node}: {plan.path}")
        return Done(f"VM {ctx.vmid} exists on {node}", skipped=True)
    if not plan.linked:
        busy = slots.take(ctx, slots.CLONE, plan.slot)
        if busy:
            return Retry(busy, counts=False)
    extra: dict[str, object] = {"full": 0 if plan.linked else 1}
    if plan.target:
        extra["target"] = plan.target
    if plan.storage:
        extra["storage"] = plan.storage
    upid = ctx.pve.post(
        f"nodes/{plan.node}/qemu/{plan.source}/clone", newid=ctx.vmid,
        name=ctx.service.hostname, description=f"{ctx.marker()} op={ctx.operation.id}", **extra)
    _record_node(ctx, plan.dest_node)
    return Wait(upid, plan.node)


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
    # after our migrate or move_disk task the VM is on the target node: look there first
    hint = placement.deploy_node(ctx) if ctx.after_task else ctx.service.node
    found = ctx.pve.find_vm(ctx.vmid, hint)
    if found is None:
        raise StepFailed(f"VM {ctx.vmid} has vanished")
    node, cfg = found
    _record_node(ctx, node)
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    target, storage = placement.deploy_node(ctx), ctx.product.target_storage
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
    if not ctx.after_task and ctx.operation.kind in ("deploy", "reinstall"):
        where = f"{where}; cloned here: {clone_plan(ctx).path}"  # which clone path was taken
    if ctx.operation.kind == "deploy":
        placement.release(ctx.operation.id)  # the VM is on its node: PVE counts it now
    moved, _ = backup_follow.follow_vm(ctx, target)  # shared ones; local ones stay
    if moved:
        where = f"{where}; {moved} backups now via {target}"
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
    found = ctx.pve.find_vm(ctx.vmid, ctx.service.node)
    if found is None:
        return Done(f"VM {ctx.vmid} already gone", skipped=True)
    node, cfg = found
    _record_node(ctx, node)
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
    service_changes.place_vm(ctx.service, node)
