"""What the placement step costs the worker (issue 24 item 3): thread CPU and wall time of one
``place_vm`` run (in its own transaction, as the engine runs it) against MariaDB and pvesim,
for clusters holding 0, 300 and 1,000 VMs and 50 deploys in flight (their reservations
counted); and the part of it that is reading ``/cluster/resources`` (the call and its JSON).

    .venv/bin/python bench/bench_placement.py [--vms 0 300 1000] [--runs 300]
        [--name pvekvm_placement_bench]

pvesim runs in this process (its threads' CPU is not counted: ``time.thread_time`` measures
the calling thread only). The database ``--name`` is created afresh (schema.sql).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pvekvm import catalog
from pvekvm import db as dbmod
from pvekvm.catalog_cache import _catalog
from pvekvm.config import PlacementSettings, ProxmoxSettings, Settings
from pvekvm.models import Operation, Product, Service, Template, database
from pvekvm.proxmox import client
from pvesim.model import GiB
from pvesim.testing import running_simulator
from steps.context import StepContext
from steps.machine import Done
from steps.provision import place_vm

DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
NODES = ("pve1", "pve2", "pve3")
IN_FLIGHT = 50


def _seed_vms(sim, count: int) -> None:
    with sim.sim.cluster.lock:
        for i in range(count):
            vm = sim.sim.cluster.new_vm(20000 + i, NODES[i % 3], {
                "name": f"b{i}", "memory": "2048", "cores": "2",
                "scsi0": f"local-lvm:vm-{20000 + i}-disk-0,size=20G"})
            if i % 2:
                vm["status"] = "running"


def _fresh(url: str, tmp: Path) -> None:
    dbmod.create_database(url)
    db = dbmod.bind(url)
    dbmod.apply_schema(db)
    dbmod.reset_data(db)
    _catalog.clear()
    catalog.load({
        "templates": [{"name": "t", "vmid": 9000, "node": "pve1", "os_user": "debian"}],
        "node_groups": [{"name": "all", "nodes": list(NODES)}],
        "products": [{"name": "p", "template": "t", "cores": 2, "memory_mb": 2048,
                      "disk_gb": 20, "group": "all", "target_storage": "local-lvm"}],
    }, str(tmp / "secret.key"))


def measure(url: str, vms: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as tmp, \
            running_simulator(tmp, task_time_scale=0) as sim:
        _fresh(url, Path(tmp))
        for node in NODES:
            sim.set_node(node, maxmem=4 * 2**40, maxcpu=4096)  # every run is placed
        _seed_vms(sim, vms)
        settings = Settings(database_url=url, amqp_url="amqp://unused",
                            proxmox=ProxmoxSettings.from_connection(sim.connection),
                            placement=PlacementSettings())
        assert settings.proxmox is not None
        pve = client(settings.proxmox)
        pid, tpl = Product.get(Product.name == "p").id, Template.get(Template.name == "t").id
        cpu, wall, res_cpu = [], [], []
        for i in range(runs + 10):  # the first 10 warm the connections and caches
            sid = 1000 + i
            Service.insert(id=sid, client_id=1, product_id=pid, template_id=tpl,
                           email="b@example.com", hostname=f"b{sid}.example.net",
                           status="deploying", vmid=100000 + i).execute()
            Operation.insert(id=sid, service_id=sid, kind="deploy", params="{}",
                             idempotency_key=f"b{sid}", state="vmid_reserved",
                             status="running").execute()
            if i >= IN_FLIGHT:  # an older deploy's VM is on its node: it is done
                Operation.update(status="done").where(Operation.id == sid - IN_FLIGHT).execute()
            ctx = StepContext(settings, Operation.get_by_id(sid), Service.get_by_id(sid), pve)
            c0, w0 = time.thread_time(), time.perf_counter()
            with database.atomic():
                result = place_vm(ctx)
            c1, w1 = time.thread_time(), time.perf_counter()
            assert isinstance(result, Done), result
            r0 = time.thread_time()
            pve.get("cluster/resources")
            r1 = time.thread_time()
            if i >= 10:
                cpu.append((c1 - c0) * 1000)
                wall.append((w1 - w0) * 1000)
                res_cpu.append((r1 - r0) * 1000)
        database.close()
    return {"vms": vms, "cpu_p50": statistics.median(cpu), "cpu_mean": statistics.fmean(cpu),
            "wall_p50": statistics.median(wall), "resources_cpu_p50": statistics.median(res_cpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", type=int, nargs="+", default=[0, 300, 1000])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--name", default=os.environ.get("BENCH_NAME", "pvekvm_placement_bench"))
    args = ap.parse_args()
    url = f"{DB_SERVER}/{args.name}"
    print(f"load: {os.getloadavg()[0]:.2f} (1-min); {args.runs} placements per row, "
          f"{IN_FLIGHT} deploys in flight, {GiB // 2**30} GiB = 1 GiB")
    print("| VMs in the cluster | placement step: thread CPU p50 / mean | wall p50 | "
          "of which GET /cluster/resources (CPU p50) |")
    print("|---|---|---|---|")
    for vms in args.vms:
        r = measure(url, vms, args.runs)
        print(f"| {vms} | {r['cpu_p50']:.2f} / {r['cpu_mean']:.2f} ms | {r['wall_p50']:.2f} ms "
              f"| {r['resources_cpu_p50']:.2f} ms |")
    print(f"load: {os.getloadavg()[0]:.2f} (1-min)")


if __name__ == "__main__":
    main()
