"""The OS picker, reinstall from an ISO and rescue mode, through RabbitMQ, MariaDB and pvesim:
what the catalog does not offer is refused with its reason, an ISO reinstall leaves empty disks
and the installer booted first with the network and firewall as they were, rescue boots the
rescue ISO before the disks and leaving it puts back what it replaced."""

from __future__ import annotations

from dataclasses import replace

import pytest

from producers.api import OrderClient
from pvekvm.config import Settings
from pvekvm.models import Operation, Service
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
)

SID, OTHER = 2801, 2802
RESCUE = "systemrescue-11.02-amd64.iso"


@pytest.fixture()
def rescue_settings(settings: Settings) -> Settings:
    return replace(settings, engine=replace(settings.engine, rescue_iso=f"iso:iso/{RESCUE}"))


def _done(kind: str, count: int = 1) -> None:
    def check() -> bool:
        return Operation.select().where((Operation.service_id == SID) & (Operation.kind == kind)
                                        & (Operation.status == "done")).count() >= count
    try:
        wait_until(check, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def _cfg(sim, vmid: int, node: str) -> dict:
    """The VM's config as PVE's GET shows it: pending changes (a running VM's boot order)
    applied."""
    return sim.proxmox().nodes(node).qemu(vmid).config.get()


def _refused(events: BillingQueue, key: str) -> str:
    return events.wait_for(lambda e: e["type"] == "event.refused" and e["idempotency_key"] == key,
                           20, f"{key} refused")["reason"]


def test_picker_iso_reinstall_and_rescue_end_to_end(rescue_settings, sim):
    events = BillingQueue(rescue_settings)
    with InProcessWorkers(rescue_settings, concurrency=4), \
            OrderClient(rescue_settings.amqp_url, rescue_settings.namespace) as billing:
        billing.create(service_id=OTHER, client_id=8, product="vps-multi", email="o@example.com",
                       template="ubuntu-2204", idempotency_key="create-unoffered")
        assert _refused(events, "create-unoffered") == (
            "template 'ubuntu-2204' is not offered by product 'vps-multi' (offered: debian-12)")
        assert Service.get_or_none(Service.id == OTHER) is None

        billing.create(service_id=SID, client_id=8, product="vps-small", email="o@example.com")
        wait_until(all_ready([SID]), 60, "deploy")
        svc = Service.get_by_id(SID)
        vmid, node = svc.vmid, svc.node
        assert vmid is not None and node is not None
        billing.reinstall(service_id=SID, template="almalinux-9", idempotency_key="rs-unoffered")
        assert "not offered by product 'vps-small'" in _refused(events, "rs-unoffered")

        # rescue over a client's ISO: the rescue ISO takes the CD-ROM, rescue_off gives it back
        original = _cfg(sim, vmid, node)
        billing.iso_mount(service_id=SID, iso="myfile.iso")
        _done("iso_mount")
        mounted = _cfg(sim, vmid, node)
        assert mounted["ide3"] == "iso:iso/myfile.iso,media=cdrom"
        assert mounted["boot"] == "order=ide3;scsi0"
        billing.rescue_on(service_id=SID)
        _done("rescue_on")
        vm = sim.vm(vmid)
        assert vm["config"]["ide3"] == f"iso:iso/{RESCUE},media=cdrom"
        assert vm["config"]["boot"] == "order=ide3;scsi0"  # the disks stay, after the CD
        assert "scsi0" in vm["config"] and "cloudinit" in vm["config"]["ide2"]
        assert vm["status"] == "running" and Service.get_by_id(SID).rescue_before is not None
        on = events.wait_for(lambda e: e["type"] == "service.rescue_on", 10, "rescue_on event")
        assert (on["service_id"], on["iso"]) == (SID, RESCUE)

        for order, key in ((billing.reinstall, "rs-in-rescue"), (billing.rescue_on, "again")):
            order(service_id=SID, idempotency_key=key)
        assert "in rescue mode: send rescue_off first (a reinstall would" in _refused(
            events, "rs-in-rescue")
        assert _refused(events, "again") == f"service {SID} is in rescue mode already"

        billing.rescue_off(service_id=SID)
        _done("rescue_off")
        vm = sim.vm(vmid)
        assert (vm["config"]["ide3"], vm["config"]["boot"]) == (mounted["ide3"], mounted["boot"])
        assert vm["status"] == "running" and Service.get_by_id(SID).rescue_before is None
        events.wait_for(lambda e: e["type"] == "service.rescue_off", 10, "rescue_off event")
        billing.rescue_off(service_id=SID, idempotency_key="off-again")
        assert _refused(events, "off-again") == f"service {SID} is not in rescue mode"
        billing.iso_unmount(service_id=SID)
        _done("iso_unmount")
        assert _cfg(sim, vmid, node)["boot"] == original["boot"] == "order=scsi0"

        # reinstall from an ISO: empty disks, the installer first, network and firewall kept
        before = sim.vm(vmid)
        cluster = sim.sim.cluster
        with cluster.lock:  # the client's data: a mark on the volume the system disk is now
            cluster.volume(before["config"]["scsi0"].split(",")[0], node)["client_data"] = 1
        billing.reinstall_iso(service_id=SID, iso="Debian-12.5.0-amd64-netinst.iso")
        _done("reinstall_iso")
        vm = sim.vm(vmid)
        cfg = vm["config"]
        assert "size=20G" in cfg["scsi0"] and "mbps_rd=200" in cfg["scsi0"]  # the package's
        assert not [k for k in cfg if k.startswith("unused")]
        with cluster.lock:  # the old volume destroyed, a new (empty) one allocated
            assert not [v for v in cluster.storage_volumes("local-lvm", node)
                        if v.get("client_data")]
            assert cluster.volume(cfg["scsi0"].split(",")[0], node) is not None
        assert cfg["ide3"] == "iso:iso/Debian-12.5.0-amd64-netinst.iso,media=cdrom"
        assert cfg["boot"] == "order=ide3;scsi0"
        assert cfg["net0"] == before["config"]["net0"] and vm["firewall"] == before["firewall"]
        assert vm["status"] == "running"
        svc = Service.get_by_id(SID)
        assert (svc.status, svc.vmid, svc.boot_before_iso) == ("ready", vmid, original["boot"])
        assert (svc.username, svc.password_enc) == (None, None)  # the old OS's login is gone
        ready = events.wait_for(lambda e: e["type"] == "service.ready"
                                and e["kind"] == "reinstall_iso", 10, "ready after ISO install")
        assert ready["os_user"] is None and ready["vmid"] == vmid

        billing.suspend(service_id=SID)
        wait_until(lambda: Service.get_by_id(SID).status == "suspended", 30, "suspended")
        billing.rescue_on(service_id=SID, idempotency_key="rescue-suspended")
        assert "is suspended" in _refused(events, "rescue-suspended")
    events.close()
