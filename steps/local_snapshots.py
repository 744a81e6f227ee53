"""Whether PVE can migrate a VM whose local disks are referenced by snapshots.

qemu-server's ``QemuMigrate::scan_local_volumes`` refuses any local volume a snapshot refers
to when the VM runs ("online storage migration not possible if non-replicated snapshot
exists"); offline it copies the volume with its snapshots only where pve-storage's
``volume_export_formats(..., with_snapshots)`` has a format: ZFS (``zfs``), a qcow2 file on a
directory-type storage (``qcow2+size``; not with ``snapshot-as-volume-chain``) and raw on btrfs.
lvm-thin and lvm have none: "non-migratable snapshot exists". Shared storage is not copied.

Invariant: the engine refuses exactly what PVE would, before it sends a migration (the move
step, and a package change whose new node differs), so the client hears the reason rather than
a failed task after its VM was stopped.
"""

from __future__ import annotations

from steps import pvecfg
from steps.context import StepContext
from steps.provision import DISK_KEYS


def volume_format(volid: str) -> str:
    """The format PVE's ``parse_volname`` reads from a volume's name: a file's suffix
    (``100/vm-100-disk-0.qcow2``), raw for block storage (``vm-100-disk-0``)."""
    name = volid.split(":", 1)[-1].rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[1] if "." in name else "raw"


def movable_with_snapshots(plugintype: str, fmt: str) -> bool:
    """An offline migration can carry this local volume together with its snapshots."""
    return plugintype == "zfspool" or (plugintype == "btrfs" and fmt == "raw") or fmt == "qcow2"


def _referenced(ctx: StepContext, node: str) -> dict[str, str]:
    """Volume -> the first snapshot whose config refers to it (CD-ROMs left out)."""
    base = f"nodes/{node}/qemu/{ctx.vmid}/snapshot"
    out: dict[str, str] = {}
    for snap in ctx.pve.get(base):
        name = str(snap.get("name"))
        if name == "current":
            continue
        for key, value in ctx.pve.get(f"{base}/{name}/config").items():
            if key in DISK_KEYS and "media=cdrom" not in str(value):
                out.setdefault(str(pvecfg.parse(str(value), "file").get("file")), name)
    return out


def blocker(ctx: StepContext, node: str, running: bool) -> str | None:
    """Why PVE would refuse to migrate the VM (on ``node``) because of snapshots on its local
    disks, or None. ``running``: the migration would be live."""
    refs = _referenced(ctx, node)
    if not refs:
        return None
    storages = {str(r["storage"]): r for r in ctx.pve.get("cluster/resources", type="storage")
                if r.get("node") == node}
    for volid, snap in sorted(refs.items()):
        store = storages.get(pvecfg.storage_of(volid))
        if store is None or store.get("shared"):
            continue
        kind, fmt = str(store.get("plugintype", "")), volume_format(volid)
        if running:
            return (f"disk {volid} (local {kind} storage) is in snapshot {snap}: PVE cannot "
                    "move it live ('online storage migration not possible if non-replicated "
                    "snapshot exists'): stop the VM or delete its snapshots first")
        if not movable_with_snapshots(kind, fmt):
            return (f"disk {volid} is in snapshot {snap} on local {kind} storage, where PVE "
                    "cannot migrate snapshots ('non-migratable snapshot exists'): delete the "
                    "VM's snapshots first")
    return None
