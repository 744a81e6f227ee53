"""Day-2 operations on one VM, each through the engine against pvesim: change package,
snapshots, backups and restore, reset password, reinstall, ISO, power, suspend, terminate."""

from __future__ import annotations

from producers.api import OrderClient
from pvekvm import secrets
from pvekvm.isos import iso_group
from pvekvm.models import Backup, IpAddress, Operation, Product, Service, Snapshot
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until

SID = 4242


def _op_done(kind: str, count: int = 1):
    def check() -> bool:
        q = Operation.select().where((Operation.service_id == SID) & (Operation.kind == kind))
        return q.where(Operation.status == "done").count() >= count
    return check


def _wait(kind: str, count: int = 1) -> None:
    try:
        wait_until(_op_done(kind, count), 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def _cfg(sim, svc: Service) -> dict:
    return sim.proxmox().nodes(svc.node).qemu(svc.vmid).config.get()


def _password(settings, svc: Service) -> str:
    """The service's password, decrypted."""
    assert svc.password_enc is not None, f"service {svc.id} stores no password"
    return secrets.decrypt(settings.secret_key_file, svc.password_enc)


def test_a_vm_through_its_whole_life(settings, sim, sink):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID, client_id=9, product="vps-small", email="o@example.com")
        wait_until(all_ready([SID]), 60, "deploy")
        svc = Service.get_by_id(SID)
        vmid, mac = svc.vmid, svc.macaddr
        assert mac is not None
        ip = IpAddress.get((IpAddress.service_id == SID) & (IpAddress.version == 4)).address

        billing.backup_create(service_id=SID, note="first")
        _wait("backup_create")
        backup = Backup.get(Backup.service_id == SID)
        assert backup.volid.startswith("backup:backup/vzdump-qemu-")

        billing.change_package(service_id=SID, product="vps-large")
        _wait("change_package")
        svc = Service.get_by_id(SID)
        cfg = _cfg(sim, svc)
        assert (int(cfg["cores"]), int(cfg["memory"])) == (4, 8192)
        assert "size=80G" in cfg["scsi0"] and "size=100G" in cfg["scsi1"]
        assert "tag=200" in cfg["net0"] and svc.product_id == Product.get(name="vps-large").id
        assert sim.vm(vmid)["status"] == "running" and svc.status == "ready"

        # after the package change: its move to vps-large's node could not carry a snapshot
        # on local-lvm (PVE: 'non-migratable snapshot exists'; tests/e2e/test_migrate_followups)
        billing.snapshot_create(service_id=SID, name="after_upgrade")
        _wait("snapshot_create")
        assert "after_upgrade" in sim.vm(vmid)["snapshots"]
        snapshot = Snapshot.get(Snapshot.service_id == SID)
        assert snapshot.created_at is not None and snapshot.expires_at > snapshot.created_at

        old_password = _password(settings, svc)
        billing.reset_password(service_id=SID)
        _wait("reset_password")
        new_password = _password(settings, Service.get_by_id(SID))
        assert new_password != old_password
        mail = sink.wait_for(lambda m: new_password in m.body, 5)
        assert mail.rcpt_tos == ["o@example.com"]

        billing.iso_mount(service_id=SID, iso="Debian-12.5.0-amd64-netinst.iso")
        _wait("iso_mount")
        assert any("Debian-12.5.0-amd64-netinst.iso" in str(v)
                   for v in _cfg(sim, Service.get_by_id(SID)).values())
        billing.iso_unmount(service_id=SID)
        _wait("iso_unmount")
        assert not any("netinst" in str(v) for v in _cfg(sim, Service.get_by_id(SID)).values())

        billing.power(service_id=SID, action="stop")
        _wait("power")
        assert sim.vm(vmid)["status"] == "stopped"

        billing.reinstall(service_id=SID, template="ubuntu-2204")
        _wait("reinstall")
        svc = Service.get_by_id(SID)
        assert (svc.vmid, svc.macaddr) == (vmid, mac)  # VMID, MAC and IP are kept
        assert IpAddress.get((IpAddress.service_id == SID) & (IpAddress.version == 4)).address \
            == ip
        cfg = _cfg(sim, svc)
        assert cfg["ciuser"] == "ubuntu" and mac.lower() in cfg["net0"].lower()
        assert sim.vm(vmid)["snapshots"] == {} and Snapshot.select().count() == 0
        assert Backup.select().count() == 1  # backups survive a reinstall

        billing.backup_restore(service_id=SID, backup_id=backup.id)
        _wait("restore")
        assert sim.vm(vmid)["status"] == "running"
        sink.wait_for(lambda m: "restor" in m.subject.lower(), 5)

        billing.suspend(service_id=SID)
        wait_until(lambda: Service.get_by_id(SID).status == "suspended", 30, "suspended")
        assert sim.vm(vmid)["status"] == "stopped"
        billing.unsuspend(service_id=SID)
        _wait("unsuspend")
        assert Service.get_by_id(SID).status == "ready"

        billing.terminate(service_id=SID)
        wait_until(lambda: Service.get_by_id(SID).status == "terminated", 60, "terminated")
    assert sim.vm(vmid) is None
    assert Service.get_by_id(SID).vmid is None
    assert IpAddress.select().where(IpAddress.service_id == SID).count() == 0
    assert Backup.select().count() == 0 and not _backup_files(sim)


def _backup_files(sim) -> list[str]:
    px = sim.proxmox()
    return [v["volid"] for v in px.nodes("pve1").storage("backup").content.get(content="backup")]


def test_iso_groups_follow_the_manual():
    assert iso_group("Debian-12.5.0-amd64-netinst.iso") == "Debian"
    assert iso_group("Ubuntu-22.04.4-live-server-amd64.iso") == "Ubuntu"
    assert iso_group("proxmox-ve_8.1-2.iso") == "proxmox"
    assert iso_group("myfile.iso") == "OTHER"


def test_operator_commands_show_pool_usage_and_grouped_isos(settings, sim):
    from pvekvm.apps.cli.main import list_isos, pool_usage

    IpAddress.update(service_id=1).where(IpAddress.address == "192.0.2.10").execute()
    usage = {line.split()[0]: line.split() for line in pool_usage().splitlines()[1:]}
    assert usage["public-v4"][-2:] == ["240", "1"]
    groups = dict(line.split(": ", 1) for line in list_isos(settings, "iso", "pve1").splitlines())
    assert groups["Debian"] == "Debian-12.5.0-amd64-netinst.iso"
    assert groups["proxmox"] == "proxmox-ve_8.1-2.iso"
    assert list(groups)[-1] == "OTHER" and "myfile.iso" in groups["OTHER"]
