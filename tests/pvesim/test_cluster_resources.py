"""``/cluster/resources`` moves as PVE's does: a node's ``mem`` is the host's used memory
(PVE::ProcFSTools::read_meminfo), so a guest counts once it runs and stops counting when it
stops; a clone's disk fills its storage (a thin pool: the data written) until the VM is
destroyed; a node's hardware and a storage's size can be changed and a node can join the
cluster (``/_sim/nodes/NODE``, ``/_sim/storages/STORAGE``)."""

from __future__ import annotations

from pvesim.model import QEMU_OVERHEAD, GiB


def _resources(px) -> dict[str, dict]:
    return {r["id"]: r for r in px.cluster.resources.get()}


def test_node_memory_cpu_and_storage_follow_the_guests(px, sim):
    sim.set_node("pve1", maxmem=32 * GiB, maxcpu=8, host_mem=2 * GiB)
    before = _resources(px)
    assert before["node/pve1"]["maxmem"] == 32 * GiB and before["node/pve1"]["maxcpu"] == 8
    idle_mem, idle_cpu = before["node/pve1"]["mem"], before["node/pve1"]["cpu"]
    disk0 = before["storage/pve1/local-lvm"]["disk"]
    node = px.nodes("pve1")
    sim.wait_task(node.qemu(9000).clone.post(newid=431, name="r431", full=1,
                                             storage="local-lvm"))
    pve1 = node
    pve1.qemu(431).config.put(memory=4096, cores=4)
    cloned = _resources(px)
    assert cloned["qemu/431"]["maxmem"] == 4 * GiB and cloned["qemu/431"]["maxcpu"] == 4
    assert cloned["node/pve1"]["mem"] == idle_mem  # stopped: its memory is not in use
    assert cloned["storage/pve1/local-lvm"]["disk"] > disk0  # its disk is
    sim.wait_task(pve1.qemu(431).resize.put(disk="scsi0", size="+18G"))
    resized = _resources(px)  # LVM-thin reports the data written: a resize writes none
    assert resized["storage/pve1/local-lvm"]["disk"] == cloned["storage/pve1/local-lvm"]["disk"]
    assert resized["qemu/431"]["maxdisk"] == 20 * GiB
    sim.set_storage("local-lvm", 800 * GiB)
    assert _resources(px)["storage/pve1/local-lvm"]["maxdisk"] == 800 * GiB
    sim.wait_task(pve1.qemu(431).status.start.post())
    running = _resources(px)["node/pve1"]
    assert running["mem"] == idle_mem + 4 * GiB + QEMU_OVERHEAD
    assert running["cpu"] > idle_cpu
    assert pve1.status.get()["memory"]["used"] == running["mem"]
    sim.wait_task(pve1.qemu(431).status.stop.post())
    sim.wait_task(pve1.qemu(431).delete())
    after = _resources(px)
    assert after["node/pve1"]["mem"] == idle_mem and "qemu/431" not in after
    assert after["storage/pve1/local-lvm"]["disk"] == disk0


def test_a_node_joins_the_cluster(px, sim):
    assert "node/pve7" not in _resources(px)
    sim.set_node("pve7", maxmem=16 * GiB)
    res = _resources(px)
    assert res["node/pve7"]["status"] == "online" and res["node/pve7"]["maxmem"] == 16 * GiB
    assert res["storage/pve7/local-lvm"]["status"] == "available"
