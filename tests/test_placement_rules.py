"""How placement weighs a node (pvekvm/placement.py), on ``/cluster/resources`` as PVE answers
it: overcommit ratios cap what a node takes, a VM on its way to its node counts there once,
a template copy wins only among nodes close in memory, and the reason names the best node."""

from __future__ import annotations

from pvekvm.config import PlacementSettings
from pvekvm.placement import GiB, MiB, Need, choose, rooms

NEED = Need(memory=2 * GiB, cores=2, disk=20 * GiB, storage="local-lvm")


def _node(name: str, maxmem: int = 16 * GiB, mem: int = 2 * GiB, maxcpu: int = 8,
          status: str = "online") -> list[dict]:
    return [{"type": "node", "node": name, "status": status, "maxmem": maxmem, "mem": mem,
             "maxcpu": maxcpu, "cpu": 0.05},
            {"type": "storage", "node": name, "storage": "local-lvm", "status": "available",
             "shared": 0, "disk": 10 * GiB, "maxdisk": 500 * GiB}]


def _vm(vmid: int, node: str, memory_gib: int, cores: int = 2, template: int = 0) -> dict:
    return {"type": "qemu", "vmid": vmid, "node": node, "maxmem": memory_gib * GiB,
            "maxcpu": cores, "status": "stopped", "template": template}


def test_the_memory_overcommit_ratio_caps_configured_memory_not_only_what_runs():
    # 12 GiB configured on a 16 GiB node, all stopped (mem shows only the host's 2 GiB)
    res = _node("pve1") + [_vm(100 + i, "pve1", 2) for i in range(6)]
    strict = PlacementSettings(memory_overcommit=1.0)
    found, _ = rooms(res, ["pve1"], NEED, [], strict, set(), set())
    assert found[0].memory == 2 * GiB  # 16 - 12 - 2: one more fits
    res.append(_vm(200, "pve1", 2))
    found, _ = rooms(res, ["pve1"], NEED, [], strict, set(), set())
    assert choose(found, NEED, strict, "node pve1", []).why == (
        "no node of node pve1 has 2.0 GiB memory free; best pve1 with 0.0 GiB")
    loose = PlacementSettings(memory_overcommit=1.5)  # 24 GiB of VMs on 16 GiB
    found, _ = rooms(res, ["pve1"], NEED, [], loose, set(), set())
    assert choose(found, NEED, loose, "node pve1", []).node == "pve1"


def test_what_the_host_itself_uses_counts_beside_the_running_guests():
    res = _node("pve1", mem=9 * GiB) + [_vm(100, "pve1", 4)]
    res[-1]["status"] = "running"  # PVE's mem: the host's 5 GiB and this guest's 4
    found, _ = rooms(res, ["pve1"], NEED, [], PlacementSettings(), set(), set())
    assert found[0].memory == 7 * GiB


def test_cpu_overcommit_and_storage_free_space_refuse_with_their_own_reason():
    ps = PlacementSettings(cpu_overcommit=1.0)
    res = _node("pve1") + [_vm(100, "pve1", 1, cores=7)]
    found, _ = rooms(res, ["pve1"], NEED, [], ps, set(), set())
    assert "has 2 vCPUs free; best pve1 with 1" in choose(found, NEED, ps, "x", []).why
    big = Need(memory=GiB, cores=1, disk=600 * GiB, storage="local-lvm")
    found, _ = rooms(_node("pve1"), ["pve1"], big, [], ps, set(), set())
    assert "600.0 GiB free on local-lvm; best pve1 with 490.0 GiB" in choose(
        found, big, ps, "x", []).why


def test_a_reservation_counts_once_on_its_node_even_while_its_clone_sits_elsewhere():
    res = _node("pve1") + _node("pve2") + [_vm(300, "pve1", 2)]  # cloned on pve1, for pve2
    held: list[tuple[str, str, int, int, int, int | None]] = [
        ("pve2", "local-lvm", 2048, 2, 20, 300)]  # rooms' reservations: (..., vmid or None)
    found, _ = rooms(res, ["pve1", "pve2"], NEED, held, PlacementSettings(), set(), set())
    room = {r.node: r for r in found}
    assert room["pve1"].memory == 14 * GiB and room["pve2"].memory == 12 * GiB
    res[-1]["node"] = "pve2"  # migrated there: PVE counts it, the reservation no more
    found, _ = rooms(res, ["pve1", "pve2"], NEED, held, PlacementSettings(), set(), set())
    assert {r.node: r.memory for r in found} == {"pve1": 14 * GiB, "pve2": 12 * GiB}
    held[0] = ("pve1", *held[0][1:])  # and on its own node it is not counted twice
    found, _ = rooms(res[:-1] + [_vm(300, "pve1", 2)], ["pve1"], NEED, held,
                     PlacementSettings(), set(), set())
    assert found[0].memory == 12 * GiB


def test_a_template_copy_wins_only_among_nodes_close_in_memory():
    ps = PlacementSettings(close_mb=2048)
    close = _node("pve1") + _node("pve2", maxmem=15 * GiB)
    found, _ = rooms(close, ["pve1", "pve2"], NEED, [], ps, {"pve2"}, set())
    picked = choose(found, NEED, ps, "group g", [])
    assert picked.node == "pve2" and "template copy here" in picked.why
    far = _node("pve1") + _node("pve2", maxmem=12 * GiB)  # 4 GiB less: memory decides
    found, _ = rooms(far, ["pve1", "pve2"], NEED, [], ps, {"pve2"}, set())
    assert choose(found, NEED, ps, "group g", []).node == "pve1"


def test_offline_maintenance_and_storageless_nodes_get_nothing_and_are_named():
    res = _node("pve1", status="offline") + _node("pve2") + _node("pve3")[:1]
    found, notes = rooms(res, ["pve1", "pve2", "pve3", "pve9"], NEED, [], PlacementSettings(),
                         set(), {"pve2"})
    assert found == []
    assert notes == ["pve1 offline", "pve2 in maintenance", "pve3 without storage local-lvm",
                     "pve9 not in the cluster"]
    assert choose(found, NEED, PlacementSettings(), "group g", notes).why == (
        "no node of group g can take a VM (pve1 offline, pve2 in maintenance, pve3 without "
        "storage local-lvm, pve9 not in the cluster)")
    assert MiB * 1024 == GiB
