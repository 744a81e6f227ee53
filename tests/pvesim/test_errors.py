"""Failure answers with PVE's status codes and messages."""

from __future__ import annotations

import pytest
from proxmoxer.core import ResourceException

from .conftest import wait_until, wait_upid


def _err(call, *args, **kw) -> ResourceException:
    with pytest.raises(ResourceException) as e:
        call(*args, **kw)
    return e.value


def test_locked_vm_refuses_changes_while_clone_runs(slow_sim):
    px = slow_sim.proxmox()
    upid = px.nodes("pve1").qemu(9000).clone.post(newid=300, full=1)
    assert px.nodes("pve1").tasks(upid).status.get()["status"] == "running"
    assert slow_sim.vm(300)["config"] == {"lock": "clone"}
    e = _err(px.nodes("pve1").qemu(300).config.put, cores=2)
    assert e.status_code == 500 and "VM is locked (clone)" in str(e)
    assert e.content == "VM is locked (clone)"
    # the source template is only flock()ed, not config-locked
    assert "lock" not in px.nodes("pve1").qemu(9000).config.get()


def test_parameter_errors(px):
    vm = px.nodes("pve1").qemu(9000)
    e = _err(vm.config.put, foo="bar")
    assert e.status_code == 400 and e.content == "Parameter verification failed."
    assert e.errors == {"foo": "property is not defined in schema and the schema does not "
                               "allow additional properties"}
    e = _err(vm.clone.post, name="x")
    assert e.errors == {"newid": "property is missing and it is not optional"}
    e = _err(vm.config.put, net1="virtio,bogus=1")
    assert e.errors == {"net1": "invalid format - invalid key in comma-separated list property:"
                                " bogus\n"}
    e = _err(vm.config.put, name="not_a_dns_name!")
    assert e.errors == {"name": "invalid format - value does not look like a valid DNS name\n"}
    e = _err(vm.config.put, ostype="plan9")
    assert e.errors["ostype"].startswith("value 'plan9' does not have a value in the enumeration")
    e = _err(vm.config.put, memory="abc")
    assert e.status_code == 400 and "memory" in e.errors
    e = _err(px.nodes("pve1").qemu("99").config.get)
    assert e.errors == {"vmid": "invalid format - value does not look like a valid VM ID\n"}


def test_shrink_refused_in_task(px):
    upid = px.nodes("pve1").qemu(9000).clone.post(newid=301, full=1)
    assert wait_upid(px, upid)["exitstatus"] == "OK"
    upid = px.nodes("pve1").qemu(301).resize.put(disk="scsi0", size="1G")
    assert wait_upid(px, upid)["exitstatus"] == "shrinking disks is not supported"
    assert px.nodes("pve1").qemu(301).config.get()["scsi0"].endswith("size=2G")


def test_migrate_running_vm_with_local_disks_refused(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9000).clone.post(newid=302, full=1))["exitstatus"] == "OK"
    assert wait_upid(px, node.qemu(302).status.start.post())["exitstatus"] == "OK"
    e = _err(node.qemu(302).migrate.post, target="pve2")
    assert e.status_code == 500 and e.content == "can't migrate running VM without --online"
    upid = node.qemu(302).migrate.post(target="pve2", online=1)
    st = wait_upid(px, upid)
    assert st["exitstatus"] == "migration aborted"
    log = "\n".join(line["t"] for line in node.tasks(upid).log.get())
    assert "can't live migrate attached local disks without with-local-disks option" in log
    assert {v["vmid"] for v in node.qemu.get()} >= {302}


def test_local_cdrom_blocks_migration(px):
    node = px.nodes("pve1")
    assert wait_upid(px, node.qemu(9002).clone.post(newid=303))["exitstatus"] == "OK"
    node.qemu(303).config.put(ide1="cdrom,media=cdrom")
    st = wait_upid(px, node.qemu(303).migrate.post(target="pve2"))
    assert st["exitstatus"] == "migration aborted"
    log = "\n".join(line["t"] for line in node.tasks(st["upid"]).log.get())
    assert "can't migrate local cdrom drive" in log


def test_task_error_exitstatus_and_no_half_apply(px, sim):
    sim.set_faults(task_error_rate=1.0)
    upid = px.nodes("pve1").qemu(9000).clone.post(newid=304, full=1)
    st = wait_upid(px, upid)
    assert st["status"] == "stopped" and st["exitstatus"] == "pvesim: injected task failure"
    assert sim.vm(304) is None
    sim.set_faults()


def test_digest_mismatch(px):
    vm = px.nodes("pve1").qemu(9001)
    digest = vm.config.get()["digest"]
    vm.config.put(description="one", digest=digest)
    e = _err(vm.config.put, description="two", digest=digest)
    assert e.status_code == 500
    assert e.content == ("detected modified configuration - file changed by other user? "
                         "Try again.")


def test_delete_missing_vm(px):
    e = _err(px.nodes("pve2").qemu(4242).delete)
    assert e.status_code == 500
    assert e.content == "Configuration file 'nodes/pve2/qemu-server/4242.conf' does not exist"


def test_clone_to_existing_vmid_and_local_storage_to_other_node(px):
    node = px.nodes("pve1")
    e = _err(node.qemu(9000).clone.post, newid=9001)
    assert e.content == "unable to create VM 9001: config file already exists"
    e = _err(node.qemu(9000).clone.post, newid=305, target="pve2")
    assert e.content == "can't clone VM to node 'pve2' (VM uses local storage)"


def test_storage_lock_contention_on_parallel_full_clones(slow_sim):
    px = slow_sim.proxmox()
    upids = [px.nodes("pve1").qemu(9001).clone.post(newid=310 + i, full=1) for i in range(3)]
    # the third full clone to pve1/local-lvm exceeds the default limit of 2
    slow_sim.sim.tasks.finish_all()
    st = wait_until(lambda: slow_sim.task(upids[2]) if slow_sim.task(upids[2])["status"]
                    == "stopped" else None)
    assert st["exitstatus"] == ("clone failed: can't lock file "
                                "'/var/lock/pve-manager/pve-storage-local-lvm' - got timeout")
    assert slow_sim.task(upids[0])["exitstatus"] == "OK"
    assert slow_sim.vm(312) is None and slow_sim.vm(310)["config"]["name"]


def test_unknown_path_not_implemented(px):
    e = _err(px.nodes("pve1").qemu(9000).frobnicate.get)
    assert e.status_code == 501
    assert e.content == "Method 'GET /nodes/pve1/qemu/9000/frobnicate' not implemented"


def test_package_details_and_firewall_rules_checked_as_pve_does(px):
    """CPU model, cpulimit/cpuunits ranges, the balloon against the memory, disk burst pools
    (schema types), and a VM firewall rule through pve-firewall's verify_rule."""
    vm = px.nodes("pve1").qemu(9000)
    e = _err(vm.config.put, cpu="pentium9")
    assert e.errors == {"cpu": "invalid format - Built-in cputype 'pentium9' is not defined "
                               "(missing 'custom-' prefix?)\n"}
    assert _err(vm.config.put, cpulimit=129).errors == {
        "cpulimit": "value must have a maximum value of 128"}
    assert _err(vm.config.put, cpuunits=0).errors == {
        "cpuunits": "value must have a minimum value of 1"}
    memory = int(str(vm.config.get()["memory"]).split("=")[-1])
    e = _err(vm.config.put, balloon=memory + 1)
    assert e.status_code == 500 and "balloon value too large" in e.content
    disk = vm.config.get()["scsi0"]
    assert "mbps_rd_max" in _err(vm.config.put, scsi0=f"{disk},mbps_rd_max=fast").errors["scsi0"]
    vm.config.put(cpu="x86-64-v2-AES", cpulimit="1.5", cpuunits=2048, balloon=memory // 2,
                  scsi0=f"{disk},mbps_rd=100,mbps_rd_max=300")
    cfg = vm.config.get()
    assert (cfg["cpu"], str(cfg["cpulimit"]), str(cfg["balloon"])) == (
        "x86-64-v2-AES", "1.5", str(memory // 2))
    vm.config.put(delete="cpu,cpulimit,cpuunits,balloon", scsi0=disk)
    rules = vm.firewall.rules
    e = _err(rules.post, type="in", action="ACCEPT", proto="tcp", dport="70000")
    assert e.errors == {"dport": "invalid port '70000'"}
    e = _err(rules.post, type="in", action="ACCEPT", source="10.0.0.0/8", dest="2001:db8::1")
    assert e.errors == {"dest": "detected mixed ipv4/ipv6 addresses in rule"}
    assert rules.get() == []
