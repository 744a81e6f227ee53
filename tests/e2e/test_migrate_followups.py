"""What a migration leaves behind (issue 25 item 2's loose ends), through the real path: billing's
events on RabbitMQ, intake and workers on MariaDB, the API over HTTP, pvesim as Proxmox.

- A backup on the old node's local storage stays there: the API says it is not restorable
  and why, a restore is refused with the reason (PVE could not restore it where the VM is), a
  delete goes through the old node's API, and ``service.migrated`` names it.
- An ISO detached for the move is mounted again on the target when the target's storage lists
  the same volume (the boot order as it was), else left out, and billing hears which.
- Snapshots on local disks: refused as PVE would refuse them (live always; offline on
  lvm-thin), moved offline where PVE carries them (ZFS), and a drain reports such a VM with
  its reason instead of stalling.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from typing import Any

import pytest
from proxmoxer.core import ResourceException

from producers.api import OrderClient
from pvekvm.apps.api.auth import hash_token
from pvekvm.apps.cli.main import main
from pvekvm.config import ApiSettings, Settings
from pvekvm.models import Backup, Operation, Product, Service
from pvesim.testing import RunningSimulator
from tests.api.server import ApiServer
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

TOKEN = "billing-" + uuid.uuid4().hex


def _done(sid: int, kind: str, count: int = 1) -> Operation:
    """The ``count``-th finished operation of ``kind`` on ``sid`` (polled with a deadline)."""
    def check() -> list[Operation]:
        ops = list(Operation.select().where(
            (Operation.service_id == sid) & (Operation.kind == kind)
            & Operation.status.in_(("done", "failed", "cancelled"))).order_by(Operation.id))
        return ops if len(ops) >= count else []
    try:
        return wait_until(check, 60, f"{kind} of {sid}")[count - 1]
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None


def _cfg(sim: RunningSimulator, node: str, vmid: int) -> dict[str, Any]:
    cfg: dict[str, Any] = sim.proxmox().nodes(node).qemu(vmid).config.get()
    return cfg


def _vm(sim: RunningSimulator, vmid: int | None) -> dict[str, Any]:
    assert vmid is not None
    vm = sim.vm(vmid)
    assert vm is not None, f"VM {vmid} is gone"
    return vm


def _vmid(sid: int) -> int:
    vmid = Service.get_by_id(sid).vmid
    assert vmid is not None
    return int(vmid)


def _volumes(sim: RunningSimulator, node: str, storage: str) -> set[str]:
    return {v["volid"] for v in sim.proxmox().nodes(node).storage(storage).content.get()}


def _deploy(billing: OrderClient, *sids: int) -> None:
    for sid in sids:
        billing.create(service_id=sid, client_id=8, product="vps-small", email="f@example.com")
    wait_until(all_ready(list(sids)), 60, "deploys")


def test_a_local_backup_stays_listed_on_its_node_not_restorable_and_deletable(
        settings: Settings, sim: RunningSimulator) -> None:
    load_catalog(settings, backup_storage="local")  # the node's own dir storage
    heard = BillingQueue(settings, "#")
    api_settings = replace(settings, api=ApiSettings(tokens=(("whmcs", hash_token(TOKEN)),)))
    with InProcessWorkers(settings, concurrency=4), ApiServer(api_settings) as api, \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 521)
        billing.backup_create(service_id=521)
        assert _done(521, "backup_create").status == "done"
        backup = Backup.get(Backup.service_id == 521)
        svc = Service.get_by_id(521)
        assert (backup.node, svc.node) == ("pve2", "pve2") and backup.volid.startswith("local:")
        assert backup.volid in _volumes(sim, "pve2", "local")

        billing.migrate(service_id=521, node="pve3")
        assert _done(521, "migrate").status == "done", describe_ops([521])
        moved = heard.wait_for(lambda e: e["type"] == "service.migrated", 10, "migrated")
        assert moved["node"] == "pve3" and moved["backups_left"] == [backup.id]

        # the client is told where the backup is and that it cannot be restored
        views = api.get("/v1/services/521/backups", TOKEN)
        assert views.status_code == 200, views.text
        (view,) = views.json()
        assert view["node"] == "pve2" and view["restorable"] is False
        assert "pve2" in view["not_restorable_because"] and "pve3" in view["not_restorable_because"]

        # a restore is refused with that reason; the VM is not touched (not even stopped)
        billing.backup_restore(service_id=521, backup_id=backup.id)
        refused = heard.wait_for(lambda e: e["type"] == "event.refused"
                                 and e.get("service_id") == 521, 10, "restore refused")
        assert "cannot be restored" in refused["reason"] and "pve2" in refused["reason"]
        assert not Operation.select().where(Operation.kind == "restore").exists()
        assert _vm(sim, svc.vmid)["status"] == "running" and _vm(sim, svc.vmid)["node"] == "pve3"

        # a delete goes through the node that holds it
        billing.backup_delete(service_id=521, backup_id=backup.id)
        assert _done(521, "backup_delete").status == "done", describe_ops([521])
        assert backup.volid not in _volumes(sim, "pve2", "local")
        assert not Backup.select().where(Backup.service_id == 521).exists()

        # back on the node that holds a (new) local backup: restorable again, and restored
        billing.backup_create(service_id=521)
        assert _done(521, "backup_create", 2).status == "done"
        second = Backup.get(Backup.service_id == 521)
        assert second.node == "pve3"
        billing.migrate(service_id=521, node="pve1")
        assert _done(521, "migrate", 2).status == "done"
        assert api.get("/v1/services/521/backups", TOKEN).json()[0]["restorable"] is False
        billing.migrate(service_id=521, node="pve3")
        assert _done(521, "migrate", 3).status == "done"
        assert api.get("/v1/services/521/backups", TOKEN).json()[0]["restorable"] is True
        billing.backup_restore(service_id=521, backup_id=second.id)
        assert _done(521, "restore").status == "done", describe_ops([521])
        assert _vm(sim, svc.vmid)["node"] == "pve3"
    heard.close()


def test_a_shared_backup_follows_every_move_and_a_stale_row_is_repaired(
        settings: Settings, sim: RunningSimulator) -> None:
    """Shared storage: reached from any node, so the row follows the VM whatever moved it (a
    package change's relocation too); a row listed before that rule is put right by the
    scheduled backup sync, so a restorable backup is never refused."""
    from pvekvm import proxmox
    from workers import backup_sync

    assert settings.proxmox is not None
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 525)
        billing.backup_create(service_id=525)  # on "backup", shared
        assert _done(525, "backup_create").status == "done"
        billing.change_package(service_id=525, product="vps-large")  # to pve3 (relocation)
        assert _done(525, "change_package").status == "done", describe_ops([525])
        backup = Backup.get(Backup.service_id == 525)
        assert Service.get_by_id(525).node == "pve3" and backup.node == "pve3"

        Backup.update(node="pve2").where(Backup.id == backup.id).execute()  # a stale row
        result = backup_sync.run_once(proxmox.client(settings.proxmox), None)
        assert result.followed == 1 and result.gone == [] and not result.errors
        assert Backup.get_by_id(backup.id).node == "pve3"
        billing.backup_restore(service_id=525, backup_id=backup.id)
        assert _done(525, "restore").status == "done", describe_ops([525])


def test_pvesim_refuses_a_restore_on_a_node_other_than_the_vms(
        settings: Settings, sim: RunningSimulator) -> None:
    """What the engine avoids: PVE restores on the node that holds the VM's config (pmxcfs
    refuses the VMID on a second node), and no node opens another's local archive."""
    load_catalog(settings, backup_storage="local")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 522)
        billing.power(service_id=522, action="stop")
        _done(522, "power")
        billing.backup_create(service_id=522)
        _done(522, "backup_create")
        volid = Backup.get(Backup.service_id == 522).volid
        vmid = _vmid(522)
        billing.migrate(service_id=522, node="pve3")
        assert _done(522, "migrate").status == "done"
    px = sim.proxmox()
    with pytest.raises(ResourceException, match="File exists"):  # the VM's config is on pve3
        px.nodes("pve2").qemu.post(vmid=vmid, archive=volid, force=1)
    with pytest.raises(ResourceException, match="can't find file"):  # pve3 has no such file
        px.nodes("pve3").qemu.post(vmid=vmid, archive=volid, force=1)
    assert _vm(sim, vmid)["node"] == "pve3"


def test_a_detached_iso_is_mounted_again_where_the_target_has_it_else_left_out(
        settings: Settings, sim: RunningSimulator) -> None:
    load_catalog(settings, iso_storage="local")
    iso = "rescue.iso"
    for node in ("pve2", "pve3"):  # pve1's local storage has no such file
        with sim.sim.cluster.lock:
            sim.sim.cluster.add_volume(node, f"local:iso/{iso}", 1 << 20, "iso", fmt="iso")
    heard = BillingQueue(settings, "service.migrated")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 531)
        vmid = _vmid(531)
        before_iso = _cfg(sim, "pve2", vmid).get("boot")
        billing.iso_mount(service_id=531, iso=iso)
        assert _done(531, "iso_mount").status == "done"
        mounted = _cfg(sim, "pve2", vmid)
        assert f"local:iso/{iso}" in mounted["ide3"] and mounted["boot"] != before_iso

        billing.migrate(service_id=531, node="pve3")
        assert _done(531, "migrate").status == "done", describe_ops([531])
        cfg = _cfg(sim, "pve3", vmid)
        assert f"local:iso/{iso}" in cfg["ide3"] and cfg["boot"] == mounted["boot"]
        event = heard.wait_for(lambda e: e["node"] == "pve3", 10, "migrated to pve3")
        assert (event["iso_reattached"], event["iso_left_out"]) == (f"local:iso/{iso}", None)

        billing.migrate(service_id=531, node="pve1")
        assert _done(531, "migrate", 2).status == "done", describe_ops([531])
        cfg = _cfg(sim, "pve1", vmid)
        assert iso not in str(cfg) and cfg.get("boot") == before_iso  # as before the mount
        event = heard.wait_for(lambda e: e["node"] == "pve1", 10, "migrated to pve1")
        assert event["iso_reattached"] is None
        assert event["iso_left_out"].startswith(f"local:iso/{iso}: ")
        assert "pve1" in event["iso_left_out"]
        # the client can unmount (nothing there) and mount again where the ISO exists
        billing.migrate(service_id=531, node="pve2")
        assert _done(531, "migrate", 3).status == "done"
        assert iso not in str(_cfg(sim, "pve2", vmid))  # nothing was detached this time
    heard.close()


def _snapshot(billing: OrderClient, sid: int, name: str = "keep") -> None:
    billing.snapshot_create(service_id=sid, name=name)
    assert _done(sid, "snapshot_create").status == "done", describe_ops([sid])


def test_local_snapshots_refused_as_pve_refuses_them_and_moved_where_pve_moves_them(
        settings: Settings, sim: RunningSimulator) -> None:
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 541)
        vmid = _vmid(541)
        _snapshot(billing, 541)
        billing.migrate(service_id=541, node="pve3")  # running: never live
        op = _done(541, "migrate")
        assert op.status == "failed" and op.error is not None
        assert "online storage migration not possible" in op.error
        billing.power(service_id=541, action="stop")
        _done(541, "power")
        billing.migrate(service_id=541, node="pve3")  # stopped, on lvm-thin: not either
        op = _done(541, "migrate", 2)
        assert op.status == "failed" and op.error is not None
        assert "non-migratable snapshot exists" in op.error and "lvmthin" in op.error
        assert _vm(sim, vmid)["node"] == "pve2"
        # a package on another node is refused before anything changes (VM not stopped)
        billing.power(service_id=541, action="start")
        _done(541, "power", 2)
        billing.change_package(service_id=541, product="vps-large")
        op = _done(541, "change_package")
        assert op.status == "failed" and op.error is not None
        assert "non-migratable snapshot exists" in op.error
        assert _vm(sim, vmid)["status"] == "running" and _vm(sim, vmid)["node"] == "pve2"
        assert Service.get_by_id(541).product_id == Product.get(name="vps-small").id

    # ZFS carries snapshots in an offline migration (zfs send -R): the same VM on local ZFS
    with sim.sim.cluster.lock:
        c = sim.sim.cluster
        c.storages["local-zfs"] = {"type": "zfspool", "content": ["images", "rootdir"],
                                   "shared": 0, "total": 4096 * 2**30}
    load_catalog(settings, target_storage="local-zfs")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 542)
        vmid = _vmid(542)
        assert "local-zfs:" in _cfg(sim, "pve2", vmid)["scsi0"]
        _snapshot(billing, 542)
        billing.power(service_id=542, action="stop")
        _done(542, "power")
        billing.migrate(service_id=542, node="pve3")
        assert _done(542, "migrate").status == "done", describe_ops([542])
        vm = _vm(sim, vmid)
        assert vm["node"] == "pve3" and "keep" in vm["snapshots"]


def test_a_drain_reports_a_vm_pve_cannot_move_and_moves_the_rest(
        settings: Settings, sim: RunningSimulator, tmp_path: Any, capsys: Any) -> None:
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 551, 552, 553)
        _snapshot(billing, 552)
        config = write_config(settings, tmp_path / "drain.toml")
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(main(
            ["--config", str(config), "node", "drain", "pve2", "--timeout", "60"])),
            daemon=True)
        thread.start()
        thread.join(90)
        assert not thread.is_alive(), "the drain stalled"
        out = capsys.readouterr().out
        assert codes == [1], out  # not drained: one VM stays, and the CLI says why
        assert "sid:552 not moved (failed)" in out and "snapshot" in out, out
    p = drain.progress("pve2")
    assert (p.left, p.moved, p.failed, p.moving, p.waiting) == (1, 2, 1, 0, 0)
    assert {Service.get_by_id(s).node for s in (551, 553)} <= {"pve1", "pve3"}
    assert Service.get_by_id(552).node == "pve2"
    assert "sid:552 not moved" in drain.node_status("pve2")


def test_a_failed_restores_way_out_offers_no_backup_left_on_another_node(
        settings: Settings, sim: RunningSimulator) -> None:
    """The choices billing hears after a failed restore are ones that can work: a backup left
    on the old node's local storage is not among them (it would be refused)."""
    load_catalog(settings, backup_storage="local")
    heard = BillingQueue(settings, "operation.failed")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _deploy(billing, 561)
        billing.backup_create(service_id=561, note="local")
        assert _done(561, "backup_create").status == "done"
        load_catalog(settings)  # the package's backups on shared storage from now on
        billing.backup_create(service_id=561, note="shared")
        assert _done(561, "backup_create", 2).status == "done"
        local, shared = (Backup.get(note=n) for n in ("local", "shared"))
        assert (local.storage, shared.storage) == ("local", "backup")
        billing.migrate(service_id=561, node="pve3")
        assert _done(561, "migrate").status == "done", describe_ops([561])
        assert (Backup.get_by_id(local.id).node, Backup.get_by_id(shared.id).node) == (
            "pve2", "pve3")
        # the shared archive is deleted behind our back: its restore fails
        sim.proxmox().nodes("pve3").storage("backup").content(shared.volid).delete()
        billing.backup_restore(service_id=561, backup_id=shared.id)
        failed = heard.wait_for(lambda e: e["kind"] == "restore", 60, "the restore fails")
        assert failed["choices"] == [{"type": "reinstall"}], failed
    heard.close()
