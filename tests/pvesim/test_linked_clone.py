"""pvesim refuses a linked clone where PVE does (qemu-server clone_vm with
PVE::Storage::volume_has_feature 'clone'), and keeps a template whose base volume a linked
clone uses."""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer.core import ResourceException

from pvesim.testing import RunningSimulator


def _vm(sim: RunningSimulator, vmid: int) -> dict[str, Any]:
    vm = sim.vm(vmid)
    assert vm is not None, f"no VM {vmid} in pvesim"
    return vm


def _clone(px, node: str, vmid: int, **kw):
    return px.nodes(node).qemu(vmid).clone.post(**kw)


def test_linked_clone_of_a_template_is_near_instant_and_shares_the_base(sim: RunningSimulator,
                                                                       px):
    sim.set_task_time_scale(1.0)
    try:
        upid = _clone(px, "pve1", 9000, newid=4101, full=0, name="linked")
        status = sim.wait_task(upid, timeout=5)
    finally:
        sim.set_task_time_scale(0)
    assert status["exitstatus"] == "OK"
    assert _vm(sim, 4101)["config"]["scsi0"].startswith("local-lvm:base-9000-disk-0/vm-4101-disk-")

    st = sim.wait_task(px.nodes("pve1").qemu(9000).delete())
    assert "is still in use by linked cloned" in st["exitstatus"] and sim.vm(9000) is not None
    sim.wait_task(px.nodes("pve1").qemu(4101).delete())
    # a linked clone of the shared template reaches another node (its storage is shared)
    sim.wait_task(_clone(px, "pve1", 9002, newid=4102, full=0, target="pve2"))
    assert _vm(sim, 4102)["node"] == "pve2"
    assert _vm(sim, 4102)["config"]["scsi0"].startswith("nfs-shared:9002/base-9002-disk-0.raw/")


@pytest.mark.parametrize(("source", "params", "message"), [
    (4201, {"full": 0}, "Linked clone feature is not supported for drive 'scsi0'"),
    (9000, {"full": 0, "storage": "local-lvm"},
     "parameter 'storage' not allowed for linked clones"),
    (9000, {"full": 0, "target": "pve2"},
     "can't clone VM to node 'pve2' (VM uses local storage)"),
], ids=["not-a-template", "storage-given", "local-storage-to-another-node"])
def test_linked_clone_refused_where_pve_refuses(sim: RunningSimulator, px, source, params,
                                                message):
    if source == 4201 and sim.vm(4201) is None:
        sim.wait_task(_clone(px, "pve1", 9000, newid=4201, full=1))
    with pytest.raises(ResourceException) as exc:
        _clone(px, "pve1", source, newid=4202, **params)
    assert message in str(exc.value)
    assert sim.vm(4202) is None


def test_linked_clone_refused_on_a_storage_type_that_cannot_clone(sim: RunningSimulator, px):
    storages = sim.sim.cluster.storages
    storages["local-lvm"]["type"] = "lvm"  # plain LVM: no 'clone' feature
    try:
        with pytest.raises(ResourceException) as exc:
            _clone(px, "pve1", 9001, newid=4301, full=0)
    finally:
        storages["local-lvm"]["type"] = "lvmthin"
    assert "Linked clone feature is not supported for drive 'scsi0'" in str(exc.value)
