"""Moving one VM to another node (the ``migrate`` machine), as PVE's qemu-server allows it.

PVE (PVE/API2/Qemu.pm ``migrate_vm``, PVE/QemuMigrate.pm) migrates a running VM only with
``online=1``, and its local disks only with ``with-local-disks=1``; a stopped VM goes offline
(its local disks are copied, ``targetstorage`` maps each storage). A CD-ROM holding an ISO on
local storage (or the host's drive) aborts any migration ("local cdrom image"): it is
detached first, the boot order it replaced put back; an ISO on shared storage follows the VM.
Local disks referenced by a snapshot move only as PVE moves them (steps/local_snapshots.py: offline
on ZFS or as qcow2; never live, never on lvm-thin): otherwise refused with PVE's reason.

Invariants: the target is chosen once (``placements``: pvekvm/placement.py); at most
``[engine] migrations_per_node`` migrations leave a node (its ``qmigrate/<node>`` task slot)
and arrive on one (counted under the ``qmigrate-to/<node>`` slot lock) at a time; a step that
finds the VM already on the target has nothing to do.
"""

from __future__ import annotations

import json
from datetime import datetime

from pvekvm import placement, service_changes
from pvekvm.config import DEFAULT_CLUSTER
from pvekvm.lifecycle import OpStatus
from pvekvm.models import AuditLog, Placement, database
from steps import backup_follow, lifecycle, local_snapshots, pvecfg, slots
from steps.context import StepContext
from steps.machine import Done, Refused, Retry, StepFailed, StepResult, Wait
from steps.provision import _record_node

_INBOUND = ("SELECT COUNT(*) FROM placements p JOIN operations o ON o.id = p.operation_id "
            "WHERE p.cluster = %s AND p.node = %s AND o.kind = 'migrate' "
            f"AND o.status = '{OpStatus.RUNNING}' AND o.id <> %s "
            "AND p.source <> p.node")


def _placed(ctx: StepContext) -> Placement:
    row = placement.recorded(ctx.operation.id)
    if row is None:
        raise StepFailed("no target node recorded for this migration")
    return row


def _stays(row: Placement) -> bool:
    return row.source == row.node


def _arrivals_free(ctx: StepContext, node: str) -> bool:
    """Fewer than the limit of migrations arrive on ``node`` (its slot row locked until this
    transaction ends, so two workers never both take its last turn)."""
    cluster = ctx.service.cluster  # node names repeat across clusters
    slots.lock_slot(f"qmigrate-to/{node}" if cluster == DEFAULT_CLUSTER
                    else f"{cluster}:qmigrate-to/{node}")
    cursor = database.execute_sql(_INBOUND, (cluster, node, ctx.operation.id))
    return int(cursor.fetchone()[0]) < ctx.settings.engine.migrations_per_node


def choose_target(ctx: StepContext) -> StepResult:
    """Where the VM goes: the operator's node (checked: a node of the cluster, online, not in
    maintenance, with the product's storage), else the placement's best node that has a free
    arrival turn. A drain move whose VM has already left the drained node stays put."""
    row = placement.recorded(ctx.operation.id)
    if row is not None:
        return Done(f"{row.source} -> {row.node}", skipped=True)
    found = ctx.pve.find_vm(ctx.vmid, ctx.service.node)
    if found is None:
        raise StepFailed(f"VM {ctx.vmid} has vanished")
    node = found[0]
    _record_node(ctx, node)
    drain = ctx.params.get("drain")
    if drain and node != drain:
        placement.record(ctx, node, node)
        return Done(f"already off {drain} (on {node}): nothing to move", skipped=True)
    wanted = ctx.params.get("node")
    if wanted:
        if wanted == node:
            raise Refused(f"VM {ctx.vmid} is already on {node}")
        usable = {c.node for c in placement.candidates(ctx.pve, ctx.product, {node},
                                                        cluster=ctx.service.cluster)}
        if wanted not in usable:
            raise Refused(f"node {wanted} cannot take the VM: not a node of the cluster, "
                          f"offline, in maintenance or without storage "
                          f"{ctx.product.target_storage}")
        if not _arrivals_free(ctx, wanted):
            return Retry(f"{ctx.settings.engine.migrations_per_node} migrations arrive on "
                         f"{wanted} already: waiting for a turn", counts=False)
        placement.record(ctx, node, wanted)
        return Done(f"{node} -> {wanted} (asked)")
    options = placement.candidates(ctx.pve, ctx.product, {node}, cluster=ctx.service.cluster)
    if not options:
        raise Refused(f"no other node can take the VM (online, not in maintenance, with "
                      f"storage {ctx.product.target_storage})")
    for option in options:
        if _arrivals_free(ctx, option.node):
            placement.record(ctx, node, option.node)
            return Done(f"{node} -> {option.node} (most free memory: "
                        f"{option.free_mem // 2**20} MiB)")
    return Retry(f"every node that can take the VM has {ctx.settings.engine.migrations_per_node}"
                 " migrations arriving: waiting for a turn", counts=False)


def detach_local_iso(ctx: StepContext) -> StepResult:
    """An ISO on local storage (or the host's CD-ROM) blocks every migration: empty the drive
    and put back the boot order the mount replaced (the ISO mount's own undo)."""
    row = _placed(ctx)
    if _stays(row):
        return Done("nothing to move", skipped=True)
    cfg = ctx.config()
    files = [str(pvecfg.parse(str(cfg.get(k, "")), "file").get("file") or "")
             for k in lifecycle.ISO_SLOTS if "media=cdrom" in str(cfg.get(k, ""))]
    isos = [f for f in files if ":iso/" in f]
    host_drive = "cdrom" in files
    if not isos and not host_drive:
        return Done("no ISO in the CD-ROM", skipped=True)
    shared = backup_follow.shared_storages(ctx, ctx.node)
    if not host_drive and all(f.split(":", 1)[0] in shared for f in isos):
        return Done(f"ISO {isos[0]} is on shared storage: it follows the VM", skipped=True)
    iso = isos[0] if isos else None
    if _noted(ctx, ISO_DETACHED) is None:  # what reattach_iso puts back on the target
        _note(ctx, ISO_DETACHED, json.dumps({"volid": iso or "cdrom",
                                             "boot": str(cfg.get("boot", "")),
                                             "saved": ctx.service.boot_before_iso}))
    lifecycle.unmount_iso(ctx)  # the usual slot, and the boot order the mount replaced
    cfg = ctx.config()
    left = {k: "none,media=cdrom" for k in lifecycle.ISO_SLOTS if "media=cdrom" in str(
        cfg.get(k, "")) and _blocks(str(pvecfg.parse(str(cfg[k]), "file").get("file")), shared)}
    if left:  # an ISO an operator put in another slot by hand
        ctx.pve.put(f"{ctx.vm_path}/config", **left)
    what = f"ISO {iso} (local storage)" if iso else "the host's CD-ROM drive"
    return Done(f"{what} detached: PVE cannot migrate a local CD-ROM image")


ISO_DETACHED, ISO_REATTACHED, ISO_LEFT_OUT = "iso_detached", "iso_reattached", "iso_left_out"


def _noted(ctx: StepContext, event: str) -> str | None:
    row = (AuditLog.select(AuditLog.detail).where((AuditLog.operation_id == ctx.operation.id)
                                                  & (AuditLog.event == event))
           .order_by(AuditLog.id).first())
    return str(row.detail) if row else None


def _note(ctx: StepContext, event: str, detail: str) -> None:
    AuditLog.insert(service_id=ctx.service.id, operation_id=ctx.operation.id, event=event,
                    detail=detail, created_at=datetime.now()).execute()


def reattach_iso(ctx: StepContext) -> StepResult:
    """The ISO detached for the move goes back in when the target reaches the same volume (its
    storage on the target lists it), by the ISO mount itself, with the boot order it had;
    otherwise it is left out, and the audit log (and ``service.migrated``) says why."""
    detached = _noted(ctx, ISO_DETACHED)
    if detached is None:
        return Done("no ISO was detached", skipped=True)
    left = _noted(ctx, ISO_LEFT_OUT)
    if left is not None:
        return Done(f"left out: {left}", skipped=True)
    was = json.loads(detached)
    volid, boot = str(was["volid"]), str(was.get("boot") or "")
    why = _unreachable_iso(ctx, volid)
    if why:
        _note(ctx, ISO_LEFT_OUT, f"{volid}: {why}")
        return Done(f"{volid} left out: {why}")
    result = lifecycle.mount_volume(ctx, volid)
    if boot and str(ctx.config().get("boot", "")) != boot:  # one an operator ordered by hand
        ctx.pve.put(f"{ctx.vm_path}/config", boot=boot)
    if ctx.service.boot_before_iso != was.get("saved"):  # what an unmount will put back, as
        service_changes.remember_boot_order(ctx.service, was.get("saved"))  # before the move
    if _noted(ctx, ISO_REATTACHED) is None:
        _note(ctx, ISO_REATTACHED, volid)
    return Done(f"{volid} attached again on {ctx.node}"
                + (f" ({result.message})" if isinstance(result, Done) else ""))


def _unreachable_iso(ctx: StepContext, volid: str) -> str | None:
    if volid == "cdrom":
        return "the host's CD-ROM drive is not carried to another node"
    storage = volid.split(":", 1)[0]
    here = {r["storage"] for r in ctx.pve.get("cluster/resources", type="storage")
            if r.get("node") == ctx.node}
    if storage not in here:
        return f"storage {storage} is not on {ctx.node}"
    isos = {str(c.get("volid")) for c in ctx.pve.get(
        f"nodes/{ctx.node}/storage/{storage}/content", content="iso")}
    if volid not in isos:
        return f"storage {storage} on {ctx.node} does not hold it"
    return None


def _blocks(file: str, shared: set[str]) -> bool:
    return file == "cdrom" or (":iso/" in file and file.split(":", 1)[0] not in shared)


def move(ctx: StepContext) -> StepResult:
    """Send the migration: live (``online=1``) when the VM runs, offline otherwise; local
    disks with ``with-local-disks=1`` and ``targetstorage`` mapping each storage to itself.
    Takes a turn of the source node's ``qmigrate`` slot first. Done once the VM is on the
    target (after our task, or found there on a retry)."""
    row = _placed(ctx)
    if _stays(row):
        return Done("nothing to move", skipped=True)
    target = str(row.node)
    found = ctx.pve.find_vm(ctx.vmid, target if ctx.after_task else ctx.service.node)
    if found is None:
        raise StepFailed(f"VM {ctx.vmid} has vanished")
    node, cfg = found
    _record_node(ctx, node)
    if node == target:
        slots.release(ctx)
        return Done(f"on {target}", skipped=not ctx.after_task)
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    busy = slots.take(ctx, slots.QMIGRATE, f"qmigrate/{node}")
    if busy:
        return Retry(busy, counts=False)
    pre = ctx.pve.get(f"nodes/{node}/qemu/{ctx.vmid}/migrate", target=target)
    if target not in pre.get("allowed_nodes", [target]):
        raise Refused(f"PVE does not allow {target}: {pre.get('not_allowed_nodes', {})}")
    if pre.get("local_resources"):
        raise Refused(f"local devices block migration: {', '.join(pre['local_resources'])}")
    local = [d for d in pre.get("local_disks", []) if not d.get("cdrom")]
    running = bool(pre.get("running"))
    blocked = local_snapshots.blocker(ctx, node, running) if local else None
    if blocked:
        raise Refused(blocked)
    extra: dict[str, object] = {"online": 1 if running else 0}
    if local:
        storages = sorted({str(d["volid"]).split(":", 1)[0] for d in local})
        extra["with-local-disks"] = 1
        extra["targetstorage"] = ",".join(f"{s}:{s}" for s in storages)
    upid = ctx.pve.post(f"nodes/{node}/qemu/{ctx.vmid}/migrate", target=target, **extra)
    return Wait(upid, node)


def follow_backups(ctx: StepContext) -> StepResult:
    """Backups on shared storage are now reached through the new node; an archive on the old
    node's local storage stays where it is, listed there: it cannot be restored while the VM
    is elsewhere (pvekvm/backup_reach.py), it is deleted through its own node's API, and
    ``service.migrated`` names it (``backups_left``)."""
    row = _placed(ctx)
    if _stays(row):
        return Done("nothing moved", skipped=True)
    moved, stay = backup_follow.follow_vm(ctx, str(row.node))
    if not moved and not stay:
        return Done("no backups to follow", skipped=True)
    return Done(f"{moved} backups now via {row.node}"
                + (f", {stay} stay on {row.source}'s local storage" if stay else ""))
