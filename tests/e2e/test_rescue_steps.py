"""Guarantee 2 for the ISO reinstall and rescue machines: each step run twice in a row against
pvesim changes nothing the second time (Proxmox and the service row). And what intake decides
from the operations already accepted: a reinstall behind a queued rescue_on is refused, as are
an ISO reinstall without ISO storage and rescue mode without a rescue ISO."""

from __future__ import annotations

from dataclasses import replace

from producers.events import (
    CreateEvent,
    ReinstallEvent,
    ReinstallIsoEvent,
    RescueOffEvent,
    RescueOnEvent,
)
from pvekvm.models import Operation, Product, Service
from steps.machine import Done
from steps.machines import DEPLOY, MACHINES
from steps.power import verify_running
from tests.e2e.test_idempotent_steps import _run
from workers.intake import handle_order

SID = 9200
RESCUE = "iso:iso/systemrescue-11.02-amd64.iso"


def _state(sim) -> tuple:
    svc = Service.get_by_id(SID)
    vm = sim.vm(svc.vmid)
    config = {k: v for k, v in vm["config"].items() if k != "digest"}
    with sim.sim.cluster.lock:
        volumes = sorted(v["volid"] for v in sim.sim.cluster.storage_volumes("local-lvm",
                                                                              svc.node))
    return (config, vm["pending"], vm["status"], vm["firewall"], volumes, svc.rescue_before,
            svc.boot_before_iso, svc.macaddr)


def _twice(settings, sim, kind: str) -> None:
    op = Operation.get((Operation.service_id == SID) & (Operation.kind == kind))
    for t in MACHINES[kind].transitions:
        _run(settings, op, t.run)
        once = _state(sim)
        again = _run(settings, op, t.run)
        assert isinstance(again, Done)
        assert _state(sim) == once, f"{kind} {t.label}: the second run changed something"
        assert again.skipped or t.run is verify_running, f"{kind} {t.label}: {again}"
    Operation.update(status="done", active_service=None).where(Operation.id == op.id).execute()


def test_iso_reinstall_and_rescue_steps_run_twice_are_the_same_as_once(settings, sim, sink):
    engine = replace(settings.engine, rescue_iso=RESCUE)
    settings = replace(settings, engine=engine)
    assert handle_order(CreateEvent(service_id=SID, client_id=4, product="vps-large",
                                    email="i@example.com").to_json()).dead_reason is None
    deploy = Operation.get(Operation.service_id == SID)
    for t in DEPLOY.transitions:
        _run(settings, deploy, t.run)
    Operation.update(status="done", active_service=None).where(Operation.id == deploy.id).execute()
    Service.update(status="ready").where(Service.id == SID).execute()

    no_rescue = handle_order(RescueOnEvent(service_id=SID).to_json())  # default settings
    assert no_rescue.dead_reason == ("rescue mode is not offered here ([engine] rescue_iso is "
                                     "not set)")
    assert handle_order(RescueOnEvent(service_id=SID).to_json(), engine).dead_reason is None
    behind = handle_order(ReinstallEvent(service_id=SID).to_json(), engine)  # rescue_on queued
    assert "is in rescue mode: send rescue_off first (a reinstall would" in str(behind.dead_reason)
    _twice(settings, sim, "rescue_on")
    assert Service.get_by_id(SID).rescue_before is not None

    assert handle_order(RescueOffEvent(service_id=SID).to_json(), engine).dead_reason is None
    _twice(settings, sim, "rescue_off")
    assert Service.get_by_id(SID).rescue_before is None

    Product.update(iso_storage=None).where(Product.name == "vps-large").execute()
    iso = ReinstallIsoEvent(service_id=SID, iso="Debian-12.5.0-amd64-netinst.iso")
    assert handle_order(iso.to_json(), engine).dead_reason == (
        "the package has no ISO storage: no reinstall from an ISO")
    Product.update(iso_storage="iso").where(Product.name == "vps-large").execute()
    assert handle_order(iso.to_json(), engine).dead_reason is None
    disks_before = _state(sim)[4]
    _twice(settings, sim, "reinstall_iso")
    cfg = sim.vm(Service.get_by_id(SID).vmid)["config"]
    assert cfg["boot"] == "order=ide3;scsi0" and "netinst" in cfg["ide3"]
    assert "size=80G" in cfg["scsi0"] and "size=100G" in cfg["scsi1"]  # both disks anew, empty
    assert len(_state(sim)[4]) == len(disks_before)  # system, additional, cloud-init: no leftover
