"""What the manual promises about packages, storage, DHCP, snapshots, ISO media, restores and
VMIDs, each through the real path: billing event → RabbitMQ → intake → workers → pvesim and
MariaDB."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator

import pytest

from producers.api import OrderClient
from pvekvm import catalog, secrets
from pvekvm.catalog_cache import _catalog
from pvekvm.config import ROOT
from pvekvm.models import Backup, DeadLetter, IpAddress, Operation, Product, Service, Template
from workers.testing.harness import InProcessWorkers, describe_ops, wait_until


@pytest.fixture()
def billing(settings) -> Iterator[OrderClient]:
    _catalog.clear()  # row ids restart with each test's fresh database: no stale packages
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as client:
        yield client
    _catalog.clear()


def _product(name: str, like: str = "vps-small", **overrides: object) -> Product:
    """A new package (a new row, so no worker holds a cached copy of it)."""
    base = Product.get(Product.name == like)
    data = {f.name: getattr(base, f.name) for f in Product._meta.sorted_fields if f.name != "id"}
    data.update(name=name, **overrides)
    return Product.create(**data)


def _wait_op(sid: int, kind: str, count: int = 1) -> None:
    def done() -> bool:
        return Operation.select().where(
            (Operation.service_id == sid) & (Operation.kind == kind)
            & (Operation.status == "done")).count() >= count
    try:
        wait_until(done, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None


def _deploy(billing: OrderClient, sid: int, product: str) -> Service:
    billing.create(service_id=sid, client_id=7, product=product, email="c@example.com")
    _wait_op(sid, "deploy")
    return Service.get_by_id(sid)


def _disks(sim, vmid: int) -> dict[str, str]:
    """Data disks of the VM in pvesim: slot → storage."""
    cfg = sim.vm(vmid)["config"]
    return {k: v.split(":", 1)[0] for k, v in cfg.items()
            if k[:4] in ("scsi", "virt", "sata") and k[-1].isdigit() and "cloudinit" not in v
            and "media=cdrom" not in v}


def _volumes_of(sim, vmid: int, node: str, storage: str, content: str = "images") -> list[str]:
    volumes = sim.proxmox().nodes(node).storage(storage).content.get(content=content)
    return [v["volid"] for v in volumes if v.get("vmid") == vmid]


# --- packages and storage ---------------------------------------------------------------------

def test_change_package_migrates_the_vm_and_moves_its_disks(settings, sim, billing):
    _product("far-nfs", target_node="pve3", target_storage="nfs-shared")
    _product("far-lvm", target_node="pve3", target_storage="local-lvm")
    svc = _deploy(billing, 801, "vps-small")
    vmid = svc.vmid
    assert vmid is not None
    assert (sim.vm(vmid)["node"], _disks(sim, vmid)) == ("pve2", {"scsi0": "local-lvm"})

    billing.change_package(service_id=801, product="far-nfs")  # other node and storage
    _wait_op(801, "change_package")
    assert sim.vm(vmid)["node"] == "pve3" and Service.get_by_id(801).node == "pve3"
    assert _disks(sim, vmid) == {"scsi0": "nfs-shared"}
    assert _volumes_of(sim, vmid, "pve2", "local-lvm") == []
    assert sim.vm(vmid)["status"] == "running"

    billing.snapshot_create(service_id=801, name="before_move")
    _wait_op(801, "snapshot_create")
    billing.change_package(service_id=801, product="far-lvm")  # same node, other storage
    _wait_op(801, "change_package", 2)
    assert _disks(sim, vmid) == {"scsi0": "local-lvm"}
    kept = _volumes_of(sim, vmid, "pve3", "nfs-shared")  # the snapshot still needs them
    cfg = sim.vm(vmid)["config"]
    assert sorted(kept) == sorted(v for k, v in cfg.items() if k.startswith("unused"))
    assert any("disk-0" in v for v in kept)
    assert sim.vm(vmid)["status"] == "running"


def test_deploy_on_the_template_node_honours_the_target_storage(settings, sim, billing):
    _product("home-nfs", target_node="pve1", target_storage="nfs-shared")  # template: pve1/lvm
    svc = _deploy(billing, 802, "home-nfs")
    assert svc.vmid is not None
    assert sim.vm(svc.vmid)["node"] == "pve1"
    assert _disks(sim, svc.vmid) == {"scsi0": "nfs-shared"}
    assert _volumes_of(sim, svc.vmid, "pve1", "local-lvm") == []


# --- VMIDs ------------------------------------------------------------------------------------

def test_a_terminated_services_vmid_is_never_given_out_again(settings, sim, billing):
    first = _deploy(billing, 803, "vps-small").vmid
    billing.terminate(service_id=803)
    _wait_op(803, "terminate")
    assert sim.vm(first) is None and Service.get_by_id(803).vmid is None
    second = _deploy(billing, 804, "vps-small").vmid
    assert second != first
    billing.create(service_id=803, client_id=7, product="vps-small", email="c@example.com",
                   idempotency_key="803-again")  # the same service ordered anew
    wait_until(lambda: Service.get_by_id(803).status == "ready", 60, "redeploy")
    assert Service.get_by_id(803).vmid not in (first, second)


# --- restore ----------------------------------------------------------------------------------

def test_a_restore_brings_back_the_os_user_and_password_of_the_backup(settings, sim, billing):
    svc = _deploy(billing, 805, "vps-small")
    assert svc.password_enc is not None
    debian, password = svc.template_id, secrets.decrypt(settings.secret_key_file, svc.password_enc)
    billing.backup_create(service_id=805)
    _wait_op(805, "backup_create")
    backup = Backup.get(Backup.service_id == 805)
    billing.reinstall(service_id=805, template="ubuntu-2204")
    _wait_op(805, "reinstall")
    svc = Service.get_by_id(805)
    assert (svc.username, svc.template_id) == ("ubuntu", Template.get(name="ubuntu-2204").id)

    billing.backup_restore(service_id=805, backup_id=backup.id)
    _wait_op(805, "restore")
    svc = Service.get_by_id(805)
    assert sim.vm(svc.vmid)["config"]["ciuser"] == "debian"  # the VM is the backed-up one
    assert (svc.template_id, svc.username) == (debian, "debian")
    assert svc.password_enc is not None
    assert secrets.decrypt(settings.secret_key_file, svc.password_enc) == password


def test_a_deleted_backup_leaves_the_storage_and_the_list_and_only_its_owner_may_delete(
        settings, sim, billing):
    svc = _deploy(billing, 806, "vps-small")
    assert svc.vmid is not None
    _deploy(billing, 807, "vps-small")
    billing.backup_create(service_id=806)
    _wait_op(806, "backup_create")
    backup = Backup.get(Backup.service_id == 806)
    assert _volumes_of(sim, svc.vmid, backup.node, backup.storage, content="backup")
    billing.backup_delete(service_id=807, backup_id=backup.id)  # someone else's backup
    refused = wait_until(lambda: DeadLetter.get_or_none(
        DeadLetter.reason.contains(f"backup {backup.id} does not belong to service 807")), 30,
        "refused at intake with its reason")
    assert refused is not None and Backup.get_or_none(id=backup.id) is not None
    billing.backup_delete(service_id=806, backup_id=backup.id)
    _wait_op(806, "backup_delete")
    assert Backup.get_or_none(id=backup.id) is None
    assert not _volumes_of(sim, svc.vmid, backup.node, backup.storage, content="backup")
    assert not Operation.select().where((Operation.service_id == 807)
                                        & (Operation.kind == "backup_delete")).exists()


def test_a_protected_pbs_backup_is_kept_and_its_delete_refused_with_the_reason(
        settings, sim, billing):
    """A package backing up to a Proxmox Backup Server datastore: backups are PBS snapshots
    that restore like any archive; one an operator protected is never deleted (the step reads
    the flag first), the client hears why, and it goes once unprotected."""
    _product("vps-pbs", backup_storage="pbs")
    _deploy(billing, 821, "vps-pbs")
    billing.backup_create(service_id=821, note="on pbs")
    _wait_op(821, "backup_create")
    backup = Backup.get(Backup.service_id == 821)
    assert backup.storage == "pbs" and backup.volid.startswith("pbs:backup/vm/")
    billing.backup_restore(service_id=821, backup_id=backup.id)
    _wait_op(821, "restore")
    content = sim.proxmox().nodes(backup.node).storage("pbs").content(backup.volid)
    content.put(protected=1)
    billing.backup_delete(service_id=821, backup_id=backup.id)
    wait_until(lambda: Operation.get_or_none(service_id=821, kind="backup_delete",
                                             status="failed"), 30, "the delete refused")
    refused = Operation.get(service_id=821, kind="backup_delete")
    assert refused.error == (f"backup {backup.id} is protected on storage pbs: an operator must "
                             "lift the protection before it can be deleted")
    assert Backup.get_or_none(id=backup.id) is not None and content.get()["protected"] == 1
    content.put(protected=0)
    billing.backup_delete(service_id=821, backup_id=backup.id)
    _wait_op(821, "backup_delete")
    assert Backup.get_or_none(id=backup.id) is None
    assert sim.proxmox().nodes(backup.node).storage("pbs").content.get(content="backup") == []


def test_backups_of_one_node_run_one_at_a_time_without_waiting_inside_proxmox(settings, sim,
                                                                             billing):
    """vzdump's global lock lets one backup job run per node: the engine gives the turns
    (oldest first), so no job of ours ever waits for the lock inside PVE, and all finish."""
    sids = (811, 812, 813)
    for sid in sids:
        _deploy(billing, sid, "vps-small")
    sim.set_task_time_scale(0.01)  # a vzdump takes 0.6 s: three at once would overlap
    for sid in sids:
        billing.backup_create(service_id=sid, note=f"b{sid}")
    for sid in sids:
        _wait_op(sid, "backup_create")
    sim.set_task_time_scale(0)
    assert {b.service_id for b in Backup.select()} == set(sids)
    px = sim.proxmox()
    jobs = [t for t in sim.sim.tasks.tasks.values() if t.type == "vzdump"]
    node = Service.get_by_id(sids[0]).node
    assert len(jobs) == 3 and {t.node for t in jobs} == {node}
    for job in jobs:
        log = [line["t"] for line in px.nodes(job.node).tasks(job.upid).log.get()]
        assert not any("global lock" in line for line in log), log


# --- snapshots --------------------------------------------------------------------------------

def test_a_rollback_leaves_the_vm_powered_as_it_was(settings, sim, billing):
    svc = _deploy(billing, 806, "vps-small")
    billing.snapshot_create(service_id=806, name="disk_only")
    _wait_op(806, "snapshot_create")
    billing.snapshot_rollback(service_id=806, name="disk_only")  # running → PVE stops it
    _wait_op(806, "snapshot_rollback")
    assert sim.vm(svc.vmid)["status"] == "running"

    vm = sim.proxmox().nodes(svc.node).qemu(svc.vmid)
    sim.wait_task(vm.snapshot.post(snapname="with_ram", vmstate=1))  # made by an operator
    billing.power(service_id=806, action="stop")
    _wait_op(806, "power")
    billing.snapshot_rollback(service_id=806, name="with_ram")  # stopped → PVE resumes RAM
    _wait_op(806, "snapshot_rollback", 2)
    assert sim.vm(svc.vmid)["status"] == "stopped"


# --- ISO media --------------------------------------------------------------------------------

def test_a_mounted_iso_boots_first_and_unmount_restores_the_boot_order(settings, sim, billing):
    svc = _deploy(billing, 807, "vps-small")
    vm = sim.proxmox().nodes(svc.node).qemu(svc.vmid)
    before = vm.config.get()["boot"]
    billing.iso_mount(service_id=807, iso="Debian-12.5.0-amd64-netinst.iso")
    _wait_op(807, "iso_mount")
    cfg = vm.config.get()
    slot = next(k for k, v in cfg.items() if "netinst" in str(v))
    assert cfg["boot"] == f"order={slot};" + before.removeprefix("order=")
    billing.iso_unmount(service_id=807)
    _wait_op(807, "iso_unmount")
    cfg = vm.config.get()
    assert cfg["boot"] == before and not any("netinst" in str(v) for v in cfg.values())


# --- DHCP -------------------------------------------------------------------------------------

def test_a_dhcp_package_manages_only_bandwidth_bridge_and_vlan(settings, sim, billing):
    svc = _deploy(billing, 808, "vps-dhcp")
    vm = sim.vm(svc.vmid)
    assert IpAddress.select().where(IpAddress.service_id == 808).count() == 0
    assert vm["firewall"] == {"options": {}, "rules": [], "ipsets": {}}  # as cloned
    net0 = vm["config"]["net0"]
    assert {"bridge=vmbr1", "tag=300", "rate=12.5"} <= set(net0.split(","))
    assert "firewall=1" not in net0
    assert vm["config"]["ipconfig0"] == "ip=dhcp"

    static = _deploy(billing, 809, "vps-small")  # a static package moving to DHCP
    assert sim.vm(static.vmid)["firewall"]["ipsets"]
    billing.change_package(service_id=809, product="vps-dhcp")
    _wait_op(809, "change_package")
    vm = sim.vm(static.vmid)
    assert IpAddress.select().where(IpAddress.service_id == 809).count() == 0
    options = sim.proxmox().nodes(vm["node"]).qemu(static.vmid).firewall.options.get()
    assert vm["firewall"]["ipsets"] == {} and options["ipfilter"] == 0
    assert vm["config"]["ipconfig0"] == "ip=dhcp"


def test_the_catalog_refuses_a_dhcp_product_with_ip_pools(clean_db, tmp_path):
    data = tomllib.loads((ROOT / "config" / "catalog.toml").read_text())
    dhcp = next(p for p in data["products"] if p.get("dhcp"))
    dhcp["ip_pool"] = "public-v4"
    with pytest.raises(catalog.CatalogError, match="DHCP product has no IP pools"):
        catalog.load(data, str(tmp_path / "key"))
