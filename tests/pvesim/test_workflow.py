"""End-to-end VM workflow through proxmoxer with an API token."""

from __future__ import annotations

import re

import pytest
from proxmoxer.core import ResourceException

from .conftest import wait_upid


def test_clone_resize_configure_start_snapshot(px, sim):
    node = px.nodes("pve1")
    upid = node.qemu(9000).clone.post(newid=201, name="web201", full=1, storage="local-lvm")
    assert upid.startswith("UPID:pve1:") and ":qmclone:9000:root@pam!pvekvm:" in upid
    assert wait_upid(px, upid)["exitstatus"] == "OK"

    vm = node.qemu(201)
    assert wait_upid(px, vm.resize.put(disk="scsi0", size="+8G"))["exitstatus"] == "OK"
    vm.config.put(cores=4, memory=4096, net0="virtio,bridge=vmbr0,tag=42,firewall=1",
                  ciuser="deploy", cipassword="s3cret", ipconfig0="ip=10.1.2.3/24,gw=10.1.2.1",
                  nameserver="9.9.9.9", searchdomain="example.com",
                  scsi1="local-lvm:20,iops_rd=500,mbps_wr=100", tags="web;prod")
    assert wait_upid(px, vm.status.start.post())["exitstatus"] == "OK"
    assert wait_upid(px, vm.snapshot.post(snapname="base", description="after setup"))[
        "exitstatus"] == "OK"

    cfg = vm.config.get()
    assert cfg["name"] == "web201" and cfg["cores"] == 4 and cfg["memory"] == "4096"
    assert cfg["scsi0"] == "local-lvm:vm-201-disk-0,size=10G"
    assert cfg["scsi1"] == "local-lvm:vm-201-disk-1,iops_rd=500,mbps_wr=100,size=20G"
    assert cfg["net0"].startswith("virtio=BC:24:11:") and "tag=42" in cfg["net0"]
    assert cfg["cipassword"] == "**********" and cfg["ipconfig0"].startswith("ip=10.1.2.3/24")
    assert cfg["ide2"] == "local-lvm:vm-201-cloudinit,media=cdrom"
    assert len(cfg["digest"]) == 40 and "template" not in cfg

    st = vm.status.current.get()
    assert st["status"] == "running" and st["qmpstatus"] == "running" and st["cpus"] == 4
    snaps = {s["name"]: s for s in vm.snapshot.get()}
    assert snaps["base"]["description"] == "after setup" and snaps["current"]["parent"] == "base"

    user = vm.cloudinit.dump.get(type="user")
    assert "hostname: web201\n" in user and "fqdn: web201.example.com\n" in user
    assert "user: deploy\n" in user and "password: $5$" in user
    net = vm.cloudinit.dump.get(type="network")
    assert "address: '10.1.2.3'" in net and "netmask: '255.255.255.0'" in net
    assert "gateway: '10.1.2.1'" in net and "- '9.9.9.9'" in net

    listed = {v["vmid"]: v for v in node.qemu.get()}
    assert listed[201]["status"] == "running" and listed[201]["name"] == "web201"
    res = {r["vmid"]: r for r in px.cluster.resources.get(type="vm")}
    assert res[201]["tags"] == "web;prod" and res[201]["node"] == "pve1"
    contents = {c["volid"] for c in node.storage("local-lvm").content.get(vmid=201)}
    assert {"local-lvm:vm-201-disk-0", "local-lvm:vm-201-disk-1"} <= contents
    assert sim.vm(201)["status"] == "running"


def test_linked_clone_iso_mount_and_destroy(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=202))["exitstatus"] == "OK"
    cfg = node.qemu(202).config.get()
    assert cfg["scsi0"].startswith("local-lvm:base-9000-disk-0/vm-202-disk-0")
    assert cfg["name"] == "Copy-of-VM-debian-12-cloud"
    node.qemu(202).config.put(ide0="iso:iso/Debian-12.5.0-amd64-netinst.iso,media=cdrom")
    assert node.qemu(202).config.get()["ide0"].startswith("iso:iso/Debian-12.5.0")
    node.qemu(202).config.put(ide0="none,media=cdrom")
    assert node.qemu(202).config.get()["ide0"] == "none,media=cdrom"
    assert wait_upid(px, node.qemu(202).delete(purge=1))["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as e:
        node.qemu(202).config.get()
    assert "Configuration file 'nodes/pve1/qemu-server/202.conf' does not exist" in str(e.value)


def test_offline_migrate_with_local_disks_moves_vm(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=203, full=1))["exitstatus"] == "OK"
    upid = node.qemu(203).migrate.post(target="pve2")
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    assert 203 in {v["vmid"] for v in px.nodes("pve2").qemu.get()}
    assert px.nodes("pve2").qemu(203).config.get()["scsi0"].startswith("local-lvm:vm-203-disk-0")


def test_move_disk_to_another_storage_keeps_or_deletes_the_source(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=261, full=1))["exitstatus"] == "OK"
    with pytest.raises(ResourceException, match="same storage with same format"):
        node.qemu(261).move_disk.post(disk="scsi0", storage="local-lvm")
    upid = node.qemu(261).move_disk.post(disk="scsi0", storage="nfs-shared")
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    cfg = node.qemu(261).config.get()
    assert cfg["scsi0"].startswith("nfs-shared:261/vm-261-disk-0.raw") and "size=2G" in cfg["scsi0"]
    assert cfg["unused0"] == "local-lvm:vm-261-disk-0"
    upid = node.qemu(261).move_disk.post(disk="scsi0", storage="local-lvm", delete=1)
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    volids = {v["volid"] for v in node.storage("nfs-shared").content.get()}
    assert not any("vm-261" in v for v in volids)
    assert node.qemu(261).config.get()["scsi0"].startswith("local-lvm:vm-261-disk-1")


def test_vzdump_and_restore(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=204, full=1, name="bk"))[
        "exitstatus"] == "OK"
    upid = node.vzdump.post(vmid=204, storage="backup", mode="snapshot", compress="zstd",
                            **{"notes-template": "{{guestname}} on {{node}}"})
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    backups = node.storage("backup").content.get(content="backup", vmid=204)
    assert len(backups) == 1
    b = backups[0]
    assert b["volid"].startswith("backup:backup/vzdump-qemu-204-") and b["volid"].endswith(
        ".vma.zst")
    assert b["notes"] == "bk on pve1" and b["vmid"] == 204 and b["size"] > 0
    upid = node.qemu.post(vmid=205, archive=b["volid"], storage="local-lvm")
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    assert node.qemu(205).config.get()["name"] == "bk"


def test_firewall_options_rules_ipset(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=206))["exitstatus"] == "OK"
    fw = node.qemu(206).firewall
    fw.options.put(enable=1, policy_in="DROP", ipfilter=1)
    opts = fw.options.get()
    assert opts["enable"] == 1 and opts["policy_in"] == "DROP" and opts["ipfilter"] == 1
    fw.rules.post(type="in", action="ACCEPT", proto="tcp", dport="22", enable=1)
    fw.rules.post(type="in", action="ACCEPT", proto="tcp", dport="443", enable=1)
    rules = fw.rules.get()
    assert [r["dport"] for r in rules] == ["443", "22"] and rules[0]["pos"] == 0
    fw.rules(0).delete()
    assert [r["dport"] for r in fw.rules.get()] == ["22"]
    fw.ipset.post(name="ipfilter-net0")
    fw.ipset("ipfilter-net0").post(cidr="10.1.2.3")
    assert [e["cidr"] for e in fw.ipset("ipfilter-net0").get()] == ["10.1.2.3"]


def test_nextid_and_vmid_taken(px):
    assert px.cluster.nextid.get() >= 100
    assert px.cluster.nextid.get(vmid=777) == 777
    with pytest.raises(ResourceException) as e:
        px.cluster.nextid.get(vmid=9000)
    assert e.value.status_code == 400 and e.value.errors == {"vmid": "VM 9000 already exists"}


def test_backup_of_locked_vm_ends_with_job_errors(slow_sim):
    px = slow_sim.proxmox()
    px.nodes("pve1").qemu(9000).clone.post(newid=250, full=1)  # 250 stays locked (clone)
    upid = px.nodes("pve1").vzdump.post(vmid=250, storage="backup")
    st = slow_sim.wait_task(upid, timeout=5)
    assert st["exitstatus"] == "job errors"
    log = [line["t"] for line in px.nodes("pve1").tasks(upid).log.get()]
    assert "ERROR: Backup of VM 250 failed - VM is locked (clone)" in log


def test_state_persists_across_restart(tmp_path):
    from pvesim.testing import running_simulator

    with running_simulator(tmp_path) as s:
        px = s.proxmox()
        assert wait_upid(px, px.nodes("pve1").qemu(9000).clone.post(newid=260))[
            "exitstatus"] == "OK"
        token = s.connection["token_secret"]
    with running_simulator(tmp_path) as s:
        assert s.connection["token_secret"] == token
        assert s.proxmox().nodes("pve1").qemu(260).config.get()["name"].startswith("Copy-of")


def test_failed_clone_tasks_give_their_storage_slot_back(px, sim):
    """An injected task failure must not leak the clone slot: later clones still succeed."""
    sim.set_faults(task_error_rate=1.0)
    for newid in (7301, 7302, 7303):
        upid = px.nodes("pve1").qemu(9000).clone.post(newid=newid, full=1)
        assert sim.wait_task(upid)["exitstatus"] == "pvesim: injected task failure"
    sim.set_faults()
    upids = [px.nodes("pve1").qemu(9000).clone.post(newid=n, full=1) for n in (7304, 7305)]
    assert [sim.wait_task(u)["exitstatus"] for u in upids] == ["OK", "OK"]
    assert sim.vm(7301) is None


@pytest.fixture(scope="module")
def brisk_sim(tmp_path_factory: pytest.TempPathFactory):
    """vzdump takes 0.6 s here (60 s at scale 0.01), so lock waits can be watched."""
    from pvesim.testing import running_simulator

    with running_simulator(tmp_path_factory.mktemp("pvesim-brisk"), task_time_scale=0.01) as s:
        yield s


def _log(px, upid: str) -> list[str]:
    return [line["t"] for line in px.nodes(upid.split(":")[1]).tasks(upid).log.get()]


def test_vzdump_jobs_of_one_node_wait_for_its_global_lock(brisk_sim):
    """PVE/VZDump.pm getlock: one backup job per node at a time; the next waits for the lock
    (its guest is not locked while it waits), a job on another node does not."""
    px = brisk_sim.proxmox()
    for newid in (280, 281):
        brisk_sim.wait_task(px.nodes("pve1").qemu(9000).clone.post(newid=newid))
    brisk_sim.wait_task(px.nodes("pve2").qemu.post(vmid=282, name="other", memory=512))
    first = px.nodes("pve1").vzdump.post(vmid=280, storage="backup")
    second = px.nodes("pve1").vzdump.post(vmid=281, storage="backup")
    other = px.nodes("pve2").vzdump.post(vmid=282, storage="backup")
    assert "lock" not in px.nodes("pve1").qemu(281).config.get()  # waiting: not yet its turn
    assert brisk_sim.wait_task(first)["exitstatus"] == "OK"
    assert px.nodes("pve1").tasks(second).status.get()["status"] == "running"
    assert px.nodes("pve1").qemu(281).config.get().get("lock") == "backup"
    assert brisk_sim.wait_task(second)["exitstatus"] == "OK"
    assert brisk_sim.wait_task(other)["exitstatus"] == "OK"
    assert "INFO: trying to get global lock - waiting..." in _log(px, second)
    assert "INFO: got global lock" in _log(px, second)
    assert not any("global lock" in line for line in _log(px, first) + _log(px, other))
    assert "lock" not in px.nodes("pve1").qemu(281).config.get()


def test_vzdump_gives_up_on_the_global_lock_after_lockwait(brisk_sim):
    px = brisk_sim.proxmox()
    for newid in (283, 284, 285):
        brisk_sim.wait_task(px.nodes("pve1").qemu(9000).clone.post(newid=newid))
    running = px.nodes("pve1").vzdump.post(vmid=283, storage="backup")
    at_once = px.nodes("pve1").vzdump.post(vmid=284, storage="backup", lockwait=0)
    assert brisk_sim.wait_task(at_once)["exitstatus"] == "unexpected status"
    assert ("ERROR: can't acquire lock '/var/run/vzdump.lock' (wait = 0)"
            in _log(px, at_once))
    # behind 0.6 s of backup with lockwait 1 min = 0.6 s here: a second job behind it waits
    # 1.2 s and meets the alarm
    queued = px.nodes("pve1").vzdump.post(vmid=284, storage="backup", lockwait=1)
    late = px.nodes("pve1").vzdump.post(vmid=285, storage="backup", lockwait=1)
    assert brisk_sim.wait_task(late)["exitstatus"] == "unexpected status"
    assert "ERROR: can't acquire lock '/var/run/vzdump.lock' - got timeout" in _log(px, late)
    assert [brisk_sim.wait_task(u)["exitstatus"] for u in (running, queued)] == ["OK", "OK"]


def test_pbs_backups_are_snapshots_that_restore_and_can_be_protected(px, sim):
    """pve-storage PBSPlugin: backup/vm/<vmid>/<UTC time>, format pbs-vm, notes = comment;
    a protected snapshot is not forgotten (PBS: "cannot remove protected snapshot")."""
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=290, full=1, name="pb"))[
        "exitstatus"] == "OK"
    upid = node.vzdump.post(vmid=290, storage="pbs", mode="snapshot",
                            **{"notes-template": "{{guestname}}"})
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    [b] = node.storage("pbs").content.get(content="backup", vmid=290)
    assert re.fullmatch(r"pbs:backup/vm/290/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b["volid"])
    assert (b["format"], b["notes"], b["subtype"]) == ("pbs-vm", "pb", "qemu")
    assert wait_upid(px, node.qemu.post(vmid=291, archive=b["volid"], storage="local-lvm"))[
        "exitstatus"] == "OK"
    assert node.qemu(291).config.get()["name"] == "pb"
    node.storage("pbs").content(b["volid"]).put(protected=1)
    assert node.storage("pbs").content(b["volid"]).get()["protected"] == 1
    upid = node.storage("pbs").content(b["volid"]).delete()
    assert ":imgdel:290@pbs:" in upid
    assert wait_upid(px, upid)["exitstatus"] == "cannot remove protected snapshot"
    node.storage("pbs").content(b["volid"]).put(protected=0)
    assert wait_upid(px, node.storage("pbs").content(b["volid"]).delete())["exitstatus"] == "OK"
    assert node.storage("pbs").content.get(content="backup", vmid=290) == []
