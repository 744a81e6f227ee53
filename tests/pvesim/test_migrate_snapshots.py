"""Offline and live migration of local disks that have snapshots, as qemu-server's
QemuMigrate.pm (``scan_local_volumes``) and pve-storage (``storage_migrate`` with
``with_snapshots``: ``volume_export_formats`` per plugin) decide it: never live; offline on ZFS
(``zfs send -R``) and as qcow2 on a directory storage, never on lvm-thin ("non-migratable
snapshot exists"). A disk no snapshot refers to moves as before."""

from __future__ import annotations

from typing import Any

import pytest

from pvesim.testing import RunningSimulator

from .conftest import wait_upid

STORAGES = {
    "zfs-local": {"type": "zfspool", "content": ["images", "rootdir"], "shared": 0,
                  "total": 1024 * 2**30},
    "dir-local": {"type": "dir", "content": ["images"], "shared": 0, "path": "/var/lib/dirl",
                  "total": 1024 * 2**30},
}


@pytest.fixture()
def storages(sim: RunningSimulator) -> None:
    with sim.sim.cluster.lock:
        for name, scfg in STORAGES.items():
            sim.sim.cluster.storages.setdefault(name, dict(scfg))


def _vm(px: Any, vmid: int, disk: str, *, snapshot: bool, start: bool = False) -> Any:
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu.post(vmid=vmid, scsi0=disk, memory=512))["exitstatus"] == "OK"
    vm = node.qemu(vmid)
    if snapshot:
        assert wait_upid(px, vm.snapshot.post(snapname="s1"))["exitstatus"] == "OK"
    if start:
        assert wait_upid(px, vm.status.start.post())["exitstatus"] == "OK"
    return vm


def _node(sim: RunningSimulator, vmid: int) -> str:
    vm = sim.vm(vmid)
    assert vm is not None
    return str(vm["node"])


def _snaps(sim: RunningSimulator, vmid: int) -> dict[str, Any]:
    vm = sim.vm(vmid)
    assert vm is not None
    return dict(vm["snapshots"])


def _migrate(px: Any, sim: RunningSimulator, vm: Any, **extra: Any) -> tuple[dict, str]:
    upid = vm.migrate.post(target="pve2", **extra)
    status = wait_upid(px, upid)
    with sim.sim.cluster.lock:
        log = "\n".join(sim.sim.tasks.tasks[upid].log)
    return status, log


@pytest.mark.parametrize(("vmid", "disk", "moves"), [
    (801, "local-lvm:2", False),                 # lvmthin: no export format with snapshots
    (802, "zfs-local:2", True),                  # zfs send -R carries them
    (803, "dir-local:2,format=qcow2", True),     # qcow2+size: in-qcow2 snapshots
])
def test_offline_migration_with_snapshots_per_storage_type(
        px: Any, sim: RunningSimulator, storages: None, vmid: int, disk: str,
        moves: bool) -> None:
    vm = _vm(px, vmid, disk, snapshot=True)
    volid = vm.config.get()["scsi0"].split(",")[0]
    status, log = _migrate(px, sim, vm, **{"with-local-disks": 1})
    if moves:
        assert status["exitstatus"] == "OK", log
        assert _node(sim, vmid) == "pve2" and "s1" in _snaps(sim, vmid)
        assert volid in {v["volid"] for v in px.nodes("pve2").storage(
            volid.split(":")[0]).content.get()}
    else:
        assert status["exitstatus"] != "OK" and _node(sim, vmid) == "pve1"
        assert f"can't migrate local disk '{volid}': non-migratable snapshot exists" in log
        assert "Problem found while scanning volumes - can't migrate VM - check log" in log


def test_a_disk_no_snapshot_refers_to_moves_offline_on_lvm_thin(
        px: Any, sim: RunningSimulator) -> None:
    vm = _vm(px, 811, "local-lvm:2", snapshot=False)
    status, log = _migrate(px, sim, vm)
    assert status["exitstatus"] == "OK", log
    assert _node(sim, 811) == "pve2"


@pytest.mark.parametrize(("vmid", "disk"), [(821, "zfs-local:2"), (822, "local-lvm:2")])
def test_live_migration_of_a_local_disk_with_snapshots_is_refused_on_any_storage(
        px: Any, sim: RunningSimulator, storages: None, vmid: int, disk: str) -> None:
    vm = _vm(px, vmid, disk, snapshot=True, start=True)
    volid = vm.config.get()["scsi0"].split(",")[0]
    status, log = _migrate(px, sim, vm, online=1, **{"with-local-disks": 1})
    assert status["exitstatus"] != "OK" and _node(sim, vmid) == "pve1"
    assert (f"can't migrate local disk '{volid}': online storage migration not possible if "
            "non-replicated snapshot exists") in log
