"""Reinstall from an ISO (the second reinstall mode): the VM's disks are destroyed and the
package's disks created empty, then the installer ISO goes into the CD-ROM and boots first
(``boot: order=<cd>;<system disk>``). The VM itself stays: its VMID, MAC, network and firewall
(the IPSet, rules and options) are untouched. Each step looks at the VM's config first, so a
retried step does nothing twice."""

from __future__ import annotations

from pvekvm import service_changes
from steps import pvecfg
from steps.context import StepContext
from steps.hardware import system_disk
from steps.lifecycle import _iso_slot, _keep_boot, package_iso
from steps.machine import Done, Retry, StepResult, Wait
from steps.provision import DISK_KEYS


def _disks(cfg: dict) -> list[str]:
    """The VM's data disks (drives that are neither a CD-ROM nor the cloud-init drive)."""
    return [k for k in DISK_KEYS if k in cfg and "media=cdrom" not in str(cfg[k])
            and "cloudinit" not in str(cfg[k])]


def detach_disks(ctx: StepContext) -> StepResult:
    """Every data disk off the VM (PVE keeps each as ``unusedN``; the VM is stopped)."""
    cfg = ctx.config()
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    disks = _disks(cfg)
    if not disks:
        return Done("no disk attached", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config", delete=",".join(disks))
    return Done(f"{', '.join(disks)} detached")


def destroy_detached_disks(ctx: StepContext) -> StepResult:
    """Every ``unusedN`` volume destroyed (deleting it from the config frees it in PVE). The
    old system's login goes with it: the service keeps no user or password the new install
    does not have (the credentials read shows none; ``service.ready`` says ``os_user: null``)."""
    service_changes.forget_login(ctx.service)
    cfg = ctx.config()
    unused = sorted(k for k in cfg if k.startswith("unused"))
    if not unused:
        return Done("no detached disk", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config", delete=",".join(unused))
    return Done(f"{len(unused)} volume(s) destroyed, the old login forgotten")


def create_system_disk(ctx: StepContext) -> StepResult:
    """An empty system disk of the package's size on its storage."""
    disk = system_disk(ctx.product)
    cfg = ctx.config()
    if disk.slot in cfg:
        return Done(f"{disk.slot} exists", skipped=True)
    upid = ctx.pve.post(f"{ctx.vm_path}/config", **{disk.slot: f"{disk.storage}:{disk.size_gb}"})
    if isinstance(upid, str) and upid.startswith("UPID:"):
        return Wait(upid, ctx.node)
    return Done(f"empty {disk.slot} {disk.size_gb}G on {disk.storage}")


def insert_installer(ctx: StepContext) -> StepResult:
    """The installer ISO in the CD-ROM, booted before the empty system disk. The boot order it
    replaces is kept for iso_unmount (as an ISO mount keeps it), so after installing, an
    iso_unmount boots the VM from its disk."""
    volid, iso = package_iso(ctx), ctx.params["iso"]
    cfg = ctx.config()
    slot, disk = _iso_slot(cfg), system_disk(ctx.product).slot
    want = f"order={slot};{disk}"
    if pvecfg.parse(str(cfg.get(slot, "")), "file").get("file") == volid \
            and cfg.get("boot") == want:
        return Done(f"{iso} in {slot}, boot {want}", skipped=True)
    if ctx.service.boot_before_iso is None:
        _keep_boot(ctx, str(cfg.get("boot", "")))
    ctx.pve.put(f"{ctx.vm_path}/config", **{slot: f"{volid},media=cdrom", "boot": want})
    return Done(f"{iso} in {slot}, boot {want}")
