"""Moving VMs (issue 25 items 2 and 3) through the real path: billing's or the operator's
``migrate`` event on RabbitMQ, intake and workers on MariaDB, pvesim as Proxmox; and draining a
node with ``python -m pvekvm node drain`` while orders keep arriving."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from producers.api import OrderClient
from pvekvm.apps.cli.main import main
from pvekvm.models import Backup, IpAddress, Operation, Service
from workers import drain
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    describe_ops,
    load_catalog,
    wait_until,
    write_config,
)


def _finished(sid: int, kind: str = "migrate", count: int = 1) -> Callable[[], list[Operation]]:
    def check() -> list[Operation]:
        ops = list(Operation.select().where((Operation.service_id == sid)
                                            & (Operation.kind == kind)
                                            & Operation.status.in_(("done", "failed",
                                                                    "cancelled"))))
        return ops if len(ops) >= count else []
    return check


def _wait_finished(sid: int, kind: str = "migrate", count: int = 1) -> Operation:
    try:
        ops = wait_until(_finished(sid, kind, count), 60, f"{kind} of {sid}")
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None
    return sorted(ops, key=lambda o: o.id)[-1]


def _tasks(sim, vmid: int, wtype: str) -> list:
    with sim.sim.cluster.lock:
        return [t for t in sim.sim.tasks.tasks.values()
                if t.type == wtype and str(t.id) == str(vmid)]


def _cfg(sim, node: str, vmid: int) -> dict:
    return sim.proxmox().nodes(node).qemu(vmid).config.get()


def test_a_running_vm_moves_live_a_stopped_one_offline_and_billing_hears_the_node(
        settings, sim):
    billing_events = BillingQueue(settings, "service.migrated")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in (501, 502):
            billing.create(service_id=sid, client_id=5, product="vps-small",
                           email="m@example.com")
        wait_until(all_ready([501, 502]), 60, "deploys")
        billing.power(service_id=502, action="stop")
        _wait_finished(502, "power")
        live, cold = Service.get_by_id(501), Service.get_by_id(502)
        assert live.node == cold.node == "pve2"
        billing.backup_create(service_id=501)  # on storage "backup", shared
        _wait_finished(501, "backup_create")
        ip = IpAddress.get((IpAddress.service_id == 501) & (IpAddress.version == 4)).address
        assert live.vmid is not None and live.macaddr is not None

        # --node: the operator's target, live (the VM runs throughout: no stop task)
        billing.migrate(service_id=501, node="pve3")
        op = _wait_finished(501)
        assert op.status == "done", describe_ops([501])
        vm = sim.vm(live.vmid)
        assert vm["node"] == "pve3" and vm["status"] == "running"
        assert Service.get_by_id(501).node == "pve3"
        assert _tasks(sim, live.vmid, "qmigrate") and not _tasks(sim, live.vmid, "qmstop")
        cfg = _cfg(sim, "pve3", live.vmid)  # MAC, VLAN, address and firewall followed
        assert live.macaddr.lower() in cfg["net0"].lower() and "tag=100" in cfg["net0"]
        assert ip in cfg["ipconfig0"]
        fw = sim.proxmox().nodes("pve3").qemu(live.vmid).firewall
        assert fw.options.get()["enable"] == 1
        assert any(ip in e["cidr"] for s in fw.ipset.get()
                   for e in fw.ipset(s["name"]).get())
        assert Backup.get(Backup.service_id == 501).node == "pve3"  # reached via the new node
        heard = billing_events.wait_for(lambda e: e.get("service_id") == 501, 10,
                                        "service.migrated")
        assert (heard["node"], heard["from_node"], heard["vmid"]) == ("pve3", "pve2", live.vmid)

        # no --node: placement picks the online node with the most free memory (pve3 now
        # runs 501, so pve1); the VM is stopped: offline
        billing.migrate(service_id=502)
        op = _wait_finished(502)
        assert op.status == "done", describe_ops([502])
        assert Service.get_by_id(502).node == "pve1"
        vm = sim.vm(cold.vmid)
        assert vm["node"] == "pve1" and vm["status"] == "stopped"
        assert billing_events.wait_for(lambda e: e.get("service_id") == 502, 10,
                                       "service.migrated")["node"] == "pve1"

        # a node that cannot take it: refused with the reason, the VM untouched
        billing.migrate(service_id=502, node="pve9")
        op = _wait_finished(502, count=2)
        assert op.status == "failed" and op.error is not None and "pve9" in op.error
        assert sim.vm(cold.vmid)["node"] == "pve1"
    billing_events.close()


def test_a_local_iso_is_detached_because_pve_cannot_migrate_it(settings, sim):
    """qemu-server's QemuMigrate refuses a CD-ROM holding an ISO on local storage ("local
    cdrom image"): pvesim does too, and the engine detaches it (boot order put back) first."""
    load_catalog(settings, iso_storage="local")
    iso = "rescue.iso"
    for node in ("pve1", "pve2"):  # not on pve3: left out there (test_migrate_followups.py)
        with sim.sim.cluster.lock:
            sim.sim.cluster.add_volume(node, f"local:iso/{iso}", 1 << 20, "iso", fmt="iso")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=511, client_id=5, product="vps-small", email="m@example.com")
        wait_until(all_ready([511]), 60, "deploy")
        svc = Service.get_by_id(511)
        assert svc.vmid is not None
        boot = _cfg(sim, "pve2", svc.vmid).get("boot")
        billing.iso_mount(service_id=511, iso=iso)
        assert _wait_finished(511, "iso_mount").status == "done"
        assert f"local:iso/{iso}" in str(_cfg(sim, "pve2", svc.vmid))

        upid = sim.proxmox().nodes("pve2").qemu(svc.vmid).migrate.post(
            target="pve3", online=1, **{"with-local-disks": 1})
        task = sim.wait_task(upid)
        assert task["exitstatus"] != "OK"
        with sim.sim.cluster.lock:
            log = "\n".join(sim.sim.tasks.tasks[upid].log)
        assert "local cdrom image" in log

        billing.migrate(service_id=511, node="pve3")
        op = _wait_finished(511)
        assert op.status == "done", describe_ops([511])
        vm = sim.vm(svc.vmid)
        assert vm["node"] == "pve3" and vm["status"] == "running"
        cfg = _cfg(sim, "pve3", svc.vmid)
        assert iso not in str(cfg) and cfg.get("boot") == boot


def _drain_cli(settings, tmp_path, out: list[int]) -> threading.Thread:
    config = write_config(settings, tmp_path / "drain.toml")

    def run() -> None:
        out.append(main(["--config", str(config), "node", "drain", "pve2", "--timeout", "90"]))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _drain_while_orders_arrive(settings, sim, tmp_path, capsys, vms: int) -> None:
    first = list(range(600, 600 + vms))
    later = list(range(700, 700 + max(2, vms // 3)))
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in first:
            billing.create(service_id=sid, client_id=6, product="vps-small",
                           email="d@example.com")
        wait_until(all_ready(first), 30 + 5 * vms, "deploys")
        assert {s.node for s in Service.select()} == {"pve2"}
        billing.power(service_id=first[0], action="stop")  # one goes offline
        _wait_finished(first[0], "power")
        codes: list[int] = []
        thread = _drain_cli(settings, tmp_path, codes)
        wait_until(lambda: drain.progress("pve2").draining, 10, "drain started")
        for sid in later:  # orders keep arriving: the product's node is in maintenance
            billing.create(service_id=sid, client_id=6, product="vps-small",
                           email="d@example.com")
        thread.join(120)
        assert codes == [0], capsys.readouterr()
        wait_until(all_ready(first + later), 30 + 5 * vms, "new orders")
        output = capsys.readouterr()
        assert "drained" in output.out and "[####" in output.err  # the bar, then the verdict
    on_pve2 = [vm["vmid"] for vm in sim.sim.cluster.vms.values()
               if vm["node"] == "pve2" and not vm["config"].get("template")]
    assert on_pve2 == []
    services = {s.id: s for s in Service.select()}
    assert set(services) == set(first + later)  # nothing lost
    assert all(s.node != "pve2" and s.status == "ready" for s in services.values())
    assert all(sim.vm(services[sid].vmid)["node"] == services[sid].node for sid in services)
    moves = Operation.select().where(Operation.kind == "migrate")
    assert sorted(m.service_id for m in moves) == first
    assert {m.status for m in moves} == {"done"}
    p = drain.progress("pve2")
    assert (p.left, p.moved, p.moving, p.failed, p.maintenance) == (0, vms, 0, 0, True)
    assert main(["--config", str(tmp_path / "drain.toml"), "node", "undrain", "pve2"]) == 0
    assert not drain.progress("pve2").maintenance


def test_drain_a_node_while_orders_keep_arriving(settings, sim, tmp_path, capsys):
    _drain_while_orders_arrive(settings, sim, tmp_path, capsys, vms=6)


@pytest.mark.slow
def test_drain_a_node_of_twenty_vms_while_orders_keep_arriving(settings, sim, tmp_path,
                                                               capsys):
    _drain_while_orders_arrive(settings, sim, tmp_path, capsys, vms=20)
