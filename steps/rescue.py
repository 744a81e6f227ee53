"""Rescue mode: the VM boots the provider's rescue ISO (``[engine] rescue_iso``) with its disks
attached after it in the boot order; leaving it puts back the boot order and CD-ROM it replaced.

What the rescue boot replaced is kept on the service (``rescue_before``: JSON of ``boot``, the
CD-ROM ``slot`` and what that slot held, each None when absent), written once when rescue begins
(a retried step keeps the first record) and cleared when it ends; NULL means not in rescue mode.
A client ISO already in the CD-ROM is replaced by the rescue ISO and comes back at rescue_off
(with the boot order it had: ``boot_before_iso`` is not touched, so a later iso_unmount still
restores the order from before that mount). The VM's cloud-init drive stays attached with the
client's user, password and keys: a rescue image that reads cloud-init (NoCloud) takes them.
"""

from __future__ import annotations

import json
import re

from pvekvm import service_changes
from pvekvm.config import EngineSettings
from pvekvm.models import Service
from pvekvm.proxmox import ProxmoxError
from steps import pvecfg
from steps.context import StepContext
from steps.lifecycle import ISO_SLOTS, _iso_slot, boot_order
from steps.machine import Done, Refused, StepResult

RESCUE_VOLID = re.compile(r"([A-Za-z][A-Za-z0-9._-]{0,63}):iso/([A-Za-z0-9][A-Za-z0-9._+-]{0,200}"
                          r"\.iso)")


def rescue_volume(engine: EngineSettings) -> tuple[str, str] | None:
    """``(storage, file)`` of the configured rescue ISO, or None when rescue mode is off or the
    setting is not a ``storage:iso/file.iso`` volume."""
    m = RESCUE_VOLID.fullmatch(engine.rescue_iso or "")
    return (m.group(1), m.group(2)) if m else None


def in_rescue(service: Service) -> bool:
    return service.rescue_before is not None


def _keep(ctx: StepContext, saved: str | None) -> None:
    service_changes.keep_rescue_record(ctx.service, saved)


def boot_rescue(ctx: StepContext) -> StepResult:
    """The rescue ISO into the CD-ROM slot, first in the boot order, the VM's disks after it;
    what it replaces recorded once."""
    volume = (ctx.params["storage"], ctx.params["iso"]) if "iso" in ctx.params \
        else rescue_volume(ctx.settings.engine)  # the one intake chose
    if volume is None:
        raise Refused("rescue mode is not configured ([engine] rescue_iso)")
    storage, iso = volume
    volid = f"{storage}:iso/{iso}"
    isos = {c["volid"] for c in ctx.pve.get(f"nodes/{ctx.node}/storage/{storage}/content",
                                            content="iso")}
    if volid not in isos:
        raise Refused(f"rescue ISO {iso} not found on storage {storage} (node {ctx.node})")
    cfg = ctx.config()
    saved = json.loads(str(ctx.service.rescue_before)) if in_rescue(ctx.service) else None
    slot = saved["slot"] if saved else _iso_slot(cfg)
    first = [slot] + [d for d in boot_order(cfg) if d != slot]
    if saved is None:
        here = pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") == volid
        rest = [d for d in boot_order(cfg) if d != slot]  # a lost record: the disks' order
        _keep(ctx, json.dumps({"boot": f"order={';'.join(rest)}" if here else cfg.get("boot"),
                               "slot": slot, "media": None if here else cfg.get(slot)}))
    elif pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") == volid \
            and boot_order(cfg) == first:
        return Done(f"rescue ISO {iso} in {slot}, boots first", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config",
                **{slot: f"{volid},media=cdrom", "boot": f"order={';'.join(first)}"})
    return Done(f"rescue ISO {iso} in {slot}, boot order {';'.join(first)}")


def adopt_restored_rescue(ctx: StepContext) -> str | None:
    """After a snapshot rollback or a backup restore: PVE put back the config the snapshot or
    backup holds, and one taken in rescue mode boots the rescue ISO. The service then records
    rescue mode (as a lost record: the disks' boot order, an empty CD-ROM to go back to), so
    the view says ``rescue`` and rescue_off boots the disk; otherwise rescue_off would be
    refused while the VM boots the rescue system. Returns what it noted (None: nothing)."""
    volume = rescue_volume(ctx.settings.engine)
    if in_rescue(ctx.service) or volume is None:
        return None
    volid = f"{volume[0]}:iso/{volume[1]}"
    cfg = ctx.config()
    for slot in ISO_SLOTS:
        if pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") == volid:
            rest = [d for d in boot_order(cfg) if d != slot]
            _keep(ctx, json.dumps({"boot": f"order={';'.join(rest)}" if rest else None,
                                   "slot": slot, "media": None}))
            return "taken in rescue mode: the service is in rescue mode again (rescue_off)"
    return None


def leave_rescue(ctx: StepContext) -> StepResult:
    """The CD-ROM slot and boot order as they were before rescue_on; the record cleared. A
    client ISO that is not on the VM's node any more (it migrated) leaves the slot empty."""
    if not in_rescue(ctx.service):
        return Done("not in rescue mode", skipped=True)
    saved = json.loads(str(ctx.service.rescue_before))
    cfg, slot = ctx.config(), str(saved["slot"])
    media, gone = saved.get("media"), None
    if media is not None and not _iso_here(ctx, str(media)):
        gone = pvecfg.parse(str(media), "file").get("file")
        media = "none,media=cdrom"  # the CD-ROM stays, empty: the VM boots its disk
    change: dict[str, str] = {}
    deletes = []
    for key, value in ((slot, media), ("boot", saved.get("boot"))):
        if value is None and key in cfg:
            deletes.append(key)
        elif value is not None and str(cfg.get(key, "")) != value:
            change[key] = value
    if deletes:
        change["delete"] = ",".join(deletes)
    if change:
        ctx.pve.put(f"{ctx.vm_path}/config", **change)
    _keep(ctx, None)
    shown = saved.get("boot") or "default"
    if gone:
        return Done(f"{slot} emptied ({gone} is not on node {ctx.node}: the VM migrated), "
                    f"boot {shown}", skipped=not change)
    return Done(f"{slot} {'restored' if saved.get('media') else 'removed'}, boot {shown}",
                skipped=not change)


def _iso_here(ctx: StepContext, media: str) -> bool:
    """Whether the CD-ROM content rescue_on replaced can go back on this node: anything but an
    ISO volume, or an ISO its storage lists here (a client ISO on the old node's local storage
    is not on the node a migrate took the VM to, and PVE refuses a drive of a missing volume:
    rescue_off would fail on every try and the client could never leave rescue mode)."""
    file = str(pvecfg.parse(media, "file").get("file") or "")
    if ":iso/" not in file:
        return True
    storage = file.split(":", 1)[0]
    try:
        held = ctx.pve.get(f"nodes/{ctx.node}/storage/{storage}/content", content="iso")
    except ProxmoxError as exc:
        if exc.transient:
            raise
        return False  # the storage is not on this node (PVE: "storage ... does not exist")
    return any(v.get("volid") == file for v in held)
