"""The manual's package details (CPU type, cpulimit, cpuunits, balloon minimum, disk burst
pools) through intake, the workers and pvesim (which checks each key against PVE's schema, the
CPU model against qemu-server's list and the balloon against the memory): deploy writes them,
change package writes only what differs and deletes what the new package no longer sets, and a
package with the same details changes nothing (each step compares first). The client's own
firewall rules follow the package's cap through a change package and come back after a
reinstall (a new VM)."""

from __future__ import annotations

import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.catalog import CatalogError
from pvekvm.models import Operation, Service, StepRun
from steps import pvecfg
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until

SID = 7251
BASE = {"template": "debian-12", "cores": 2, "memory_mb": 2048, "disk_gb": 20,
        "target_node": "pve2", "target_storage": "local-lvm", "ip_pool": "public-v4"}
BIG = {**BASE, "name": "vps-tuned", "cpu_type": "host", "cpulimit": 1.5, "cpuunits": 2048,
       "balloon_mb": 1024, "disk_mbps_rd": 100, "disk_mbps_rd_max": 300, "disk_iops_wr": 500,
       "disk_iops_wr_max": 2000}
OTHER = {**BASE, "name": "vps-tuned-2", "cpu_type": "x86-64-v2-AES", "cpuunits": 512,
         "balloon_mb": 0, "disk_mbps_rd": 150, "disk_mbps_rd_max": 450, "client_fw_rules": 1}
RULES = [{"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22"},
         {"direction": "in", "action": "DROP", "proto": "tcp", "dport": "23"}]
SAME = {**OTHER, "name": "vps-tuned-3"}  # the same details under another name


def _done(kind: str, count: int) -> None:
    try:
        wait_until(lambda: Operation.select().where(
            (Operation.service_id == SID) & (Operation.kind == kind)
            & (Operation.status == "done")).count() >= count, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def _client_rules(sim) -> list[str]:
    vm = sim.vm(Service.get_by_id(SID).vmid)
    assert vm is not None
    return [r["dport"] for r in vm["firewall"]["rules"] if r["comment"] == "pvekvm-client"]


def _config(sim) -> dict:
    vm = sim.vm(Service.get_by_id(SID).vmid)
    assert vm is not None
    return vm["config"]


def test_details_written_compared_and_honoured_by_change_package(settings, sim):
    catalog.load({"products": [BIG, OTHER, SAME]}, settings.secret_key_file)
    with pytest.raises(CatalogError, match="balloon_mb .* must not exceed memory_mb"):
        catalog.load({"products": [{**BASE, "name": "x", "balloon_mb": 4096}]},
                     settings.secret_key_file)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID, client_id=25, product="vps-tuned", email="t@example.com")
        wait_until(all_ready([SID]), 60, "deploy")
        cfg = _config(sim)
        assert (cfg["cpu"], cfg["cpulimit"], cfg["cpuunits"], cfg["balloon"]) == \
            ("host", "1.5", "2048", "1024")
        disk = pvecfg.parse(cfg["scsi0"], "file")
        assert (disk["mbps_rd"], disk["mbps_rd_max"], disk["iops_wr"], disk["iops_wr_max"]) \
            == ("100", "300", "500", "2000")
        billing.firewall_rules_set(service_id=SID, rules=RULES)
        _done("firewall_rules_set", 1)
        assert _client_rules(sim) == ["22", "23"]

        billing.change_package(service_id=SID, product="vps-tuned-2")
        _done("change_package", 1)
        cfg = _config(sim)
        assert (cfg["cpu"], cfg["cpuunits"], cfg["balloon"]) == ("x86-64-v2-AES", "512", "0")
        assert "cpulimit" not in cfg  # the new package sets none: PVE's default (no limit)
        disk = pvecfg.parse(cfg["scsi0"], "file")
        assert (disk["mbps_rd"], disk["mbps_rd_max"]) == ("150", "450")
        assert not {"iops_wr", "iops_wr_max"} & set(disk)
        assert _client_rules(sim) == ["22"]  # the new package allows one: the first stands

        billing.change_package(service_id=SID, product="vps-tuned-3")
        _done("change_package", 2)
        assert _config(sim) == cfg
        last = Operation.select().where((Operation.service_id == SID)
                                        & (Operation.kind == "change_package")
                                        ).order_by(Operation.id.desc()).first()
        runs = {r.label: (r.result, r.message) for r in StepRun.select().where(
            StepRun.operation_id == last.id)}
        assert runs["Set CPU & RAM"] == ("skip", "no change")
        assert runs["Set system disk I/O"] == ("skip", "no change")

        billing.reinstall(service_id=SID)  # a new VM: the saved rule is applied again
        _done("reinstall", 1)
        assert _client_rules(sim) == ["22"]
