"""Steps of the day-2 operations: power, suspend, terminate, reset password, ISO media."""

from __future__ import annotations

from datetime import datetime

from pvekvm import service_changes, tokens
from pvekvm.models import AuditLog, BackupSchedule, ClientFirewallRules, Snapshot
from steps import cloudinit, pvecfg
from steps.allocation import release_ips
from steps.context import StepContext
from steps.machine import Done, Refused, StepFailed, StepResult, Wait
from steps.provision import DISK_KEYS

ISO_SLOTS = ("ide2", "ide3", "ide0", "ide1")


def power_action(ctx: StepContext) -> StepResult:
    """start / stop (hard) / shutdown (graceful, then forced) / reboot, from the event."""
    action = ctx.params.get("action", "start")
    if ctx.service.suspended and action in ("start", "reboot"):
        raise Refused("the service is suspended: its VM may not be started")
    status = ctx.pve.get(f"{ctx.vm_path}/status/current").get("status")
    if ctx.after_task or (action == "start" and status == "running") or (
            action in ("stop", "shutdown") and status == "stopped"):
        return Done(f"VM {status}", skipped=not ctx.after_task)
    if action == "reboot" and status != "running":
        action = "start"
    extra = {"forceStop": 1, "timeout": 60} if action == "shutdown" else {}
    return Wait(ctx.pve.post(f"{ctx.vm_path}/status/{action}", **extra), ctx.node)


def release_addresses(ctx: StepContext) -> StepResult:
    """Terminate: the IPs go back to the free pool, the VMID is no longer held."""
    n = release_ips(ctx.service.id)
    ctx.addresses_changed()
    service_changes.forget_vm(ctx.service)
    return Done(f"{n} address(es) released")


def forget_client_secrets(ctx: StepContext) -> StepResult:
    """Terminate's last step, committed with the status ``terminated``: this life's client
    tokens are revoked, its password erased, and what the deleted VM left keyed by the service
    id (snapshot rows, the backup schedule, the client's firewall rules) goes, so a re-created
    id starts clean. Backups (and the passwords recorded with them) went in ``tm_backups``."""
    sid = ctx.service.id
    revoked = tokens.revoke_service(sid, "service terminated")
    service_changes.forget_password(ctx.service)
    Snapshot.delete().where(Snapshot.service_id == sid).execute()
    BackupSchedule.delete().where(BackupSchedule.service_id == sid).execute()
    ClientFirewallRules.delete().where(ClientFirewallRules.service_id == sid).execute()
    return Done(f"password erased, {revoked} client token(s) revoked")


def reset_password(ctx: StepContext) -> StepResult:
    """A new password once per operation (a retried step re-sends the same one)."""
    done = AuditLog.get_or_none((AuditLog.operation_id == ctx.operation.id)
                                & (AuditLog.event == "password_generated"))
    if done is None:
        AuditLog.create(service_id=ctx.service.id, operation_id=ctx.operation.id,
                        event="password_generated", detail="cloud-init password reset",
                        created_at=datetime.now())
    return cloudinit.set_cloudinit(ctx, new_password=done is None)


def _iso_slot(cfg: dict) -> str:
    for slot in ISO_SLOTS:
        value = str(cfg.get(slot, ""))
        if "cloudinit" not in value:
            return slot
    raise StepFailed("no free IDE slot for a CD-ROM")


def package_iso(ctx: StepContext) -> str:
    """The volume of the order's ``iso`` on the package's ISO storage, as the VM's node lists
    it; refused when the package has no ISO storage or the node's storage has no such ISO."""
    storage = ctx.product.iso_storage
    if not storage:
        raise Refused("the package has no ISO storage")
    iso = ctx.params["iso"]
    volid = f"{storage}:iso/{iso}"
    isos = {c["volid"] for c in ctx.pve.get(f"nodes/{ctx.node}/storage/{storage}/content",
                                            content="iso")}
    if volid not in isos:
        raise Refused(f"ISO {iso} not found on storage {storage}")
    return volid


def mount_iso(ctx: StepContext) -> StepResult:
    """The ISO goes into the CD-ROM slot and the CD-ROM first in the boot order; the order it
    replaces is kept on the service (once: mounting again keeps the original) for unmount."""
    return mount_volume(ctx, package_iso(ctx))


def mount_volume(ctx: StepContext, volid: str) -> StepResult:
    """:func:`mount_iso` of an ISO volume the caller found on the VM's node (a migration puts
    back the one it detached: steps/migrate.py)."""
    iso = volid.split(":iso/", 1)[-1]
    cfg = ctx.config()
    slot = _iso_slot(cfg)
    order = boot_order(cfg)
    first = [slot] + [d for d in order if d != slot]
    if pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") == volid and order == first:
        return Done(f"{iso} already in {slot}, boots first", skipped=True)
    if ctx.service.boot_before_iso is None:
        _keep_boot(ctx, str(cfg.get("boot", "")))
    ctx.pve.put(f"{ctx.vm_path}/config",
                **{slot: f"{volid},media=cdrom", "boot": f"order={';'.join(first)}"})
    return Done(f"{iso} in {slot}, boot order {';'.join(first)}")


def unmount_iso(ctx: StepContext) -> StepResult:
    """Empty the CD-ROM and put back the boot order the mount replaced."""
    cfg = ctx.config()
    slot = _iso_slot(cfg)
    change: dict[str, str] = {}
    if pvecfg.parse(str(cfg.get(slot, "none")), "file").get("file") not in ("none", None, ""):
        change[slot] = "none,media=cdrom"
    saved = ctx.service.boot_before_iso
    if saved is not None and saved != str(cfg.get("boot", "")):
        if saved:
            change["boot"] = saved
        else:
            change["delete"] = "boot"
    if not change:
        if saved is not None:
            _keep_boot(ctx, None)
        return Done("no ISO mounted", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config", **change)
    _keep_boot(ctx, None)
    return Done(f"{slot} emptied, boot {saved or 'default'}")


def mounted_iso(cfg: dict) -> str | None:
    """The ISO file in the VM's CD-ROM (the first IDE slot holding an ``iso/`` volume), or None;
    read from the VM's config, so one an operator mounted by hand shows too."""
    for slot in ISO_SLOTS:
        file = pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") or ""
        if "media=cdrom" in str(cfg.get(slot, "")) and ":iso/" in file:
            return file.split(":iso/", 1)[1]
    return None


def boot_order(cfg: dict) -> list[str]:
    """The devices of ``boot: order=a;b;c``; without one, PVE's default: disks, then net0."""
    props = pvecfg.parse(str(cfg.get("boot", "")), "legacy")
    if "order" in props:
        return [d for d in props["order"].split(";") if d]
    disks = [k for k in DISK_KEYS if k in cfg and "media=cdrom" not in str(cfg[k])]
    return disks[:1] + (["net0"] if "net0" in cfg else [])


def _keep_boot(ctx: StepContext, boot: str | None) -> None:
    service_changes.remember_boot_order(ctx.service, boot)
