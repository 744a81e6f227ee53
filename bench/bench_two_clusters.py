"""A fleet under a burst (issue 24 item 5): N orders at task time 0 over 2 clusters x 3 nodes.

    .venv/bin/python bench/bench_two_clusters.py --orders 1000 [--runs calm down]
        [--down-at 10] [--api-time-ms 20] [--workers-procs 2 --concurrency 8]
        [--node-mem-gib 384] [--ams-memory-overcommit 1.5]

Two pvesim processes (clusters ``default`` and ``ams``, each its own state, CA and port), each
serving every node's API (``--per-node-api``) under its limits (pvesim/limits.py: 3 pveproxy
and 3 pvedaemon workers per node, the 30 s proxy timeout, the 10 s config lock, handlers holding
their worker ``--api-time-ms``); a template copy on every node of each. One product,
``vps-fleet`` (2 GiB, 2 vCPUs, 20 GB), placed on any of ``pve1``..``pve3`` by headroom
(pvekvm/placement.py, default ``[placement]``: memory 1.0, CPU 4.0), offered in both
locations; order ``i`` names ``default`` when ``i`` is even, ``ams`` when odd. Every node has
``--node-mem-gib`` of RAM (the VMs fill it to ~90 % at 1,000 orders), 256 threads, 4 GiB
host use. The rest is bench_deploy.py's run: fresh database, RabbitMQ namespace, K worker
processes of C threads over every pool.

- ``calm``: nothing disturbed;
- ``down``: ``default``'s pve1 API (the endpoint every worker prefers there) is taken down
  ``--down-at`` s after the orders were published, for the rest of the run.

Reported per run, from both pvesims' state and the database: all ready, Proxmox timeouts and
config-lock timeouts (``/_sim/limits``), every node's committed memory (its VMs' configured
memory + host use) against its cluster's ``memory_overcommit`` x its RAM (``--ams-memory-
overcommit``: ams' own, as a ``[clusters.placement]`` would set), VMs per node and the spread
(max/min per cluster), orders lost (not ready), VMs not one per service, VMs started twice,
steps recorded done twice, wall time, worker CPU per step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bench_deploy as bd

from producers.api import OrderClient
from pvekvm import catalog, messaging, secrets
from pvekvm import db as dbmod
from pvekvm.config import (
    ClusterSettings,
    PlacementSettings,
    ProxmoxSettings,
    Settings,
)
from pvekvm.models import Operation, Service, StepRun, database
from workers.testing.harness import write_config
from workers.testing.smtp_sink import SmtpSink

CLUSTERS = ("default", "ams")
DONE = ("success", "skip", "warn")
GiB = 2**30
HOST_MEM = 4 * GiB


def control(conn: dict, path: str, method: str = "GET", body: dict | None = None):
    """A /_sim control call on the last listener (never taken down here)."""
    base = conn["node_endpoints"][conn["nodes"][-1]].rsplit("/api2/json", 1)[0]
    r = requests.request(method, f"{base}/_sim/{path}", json=body, verify=conn["ca_bundle"],
                         timeout=30)
    r.raise_for_status()
    return r.json()["data"]


def fleet_catalog() -> dict:
    """The shipped vps-small as ``vps-fleet`` on any node of either cluster, both clusters'
    templates with a copy per node, one IPv4 pool big enough for 1,000 shared by both."""
    shipped = tomllib.loads((ROOT / "config" / "catalog.toml").read_text())
    small = next(p for p in shipped["products"] if p["name"] == "vps-small")
    product = {k: v for k, v in small.items() if k not in ("target_node", "templates",
                                                           "ip6_pool", "dns_zone")}
    product.update(name="vps-fleet", nodes=list(bd.NODES), ip_pool=bd.BENCH_POOL["name"],
                   locations={"ams": {"template": "debian-12-ams"}})
    tpl = {"vmid": 9000, "node": "pve1", "os_user": "debian", "replicas": bd.TEMPLATE_COPIES}
    return {"templates": [{"name": "debian-12", **tpl},
                          {"name": "debian-12-ams", **tpl, "cluster": "ams"}],
            "ip_pools": [{**bd.BENCH_POOL, "shared": True}], "products": [product]}


def fresh_database(settings: Settings) -> None:
    dbmod.create_database(bd.DATABASE_URL)
    db = dbmod.bind(bd.DATABASE_URL)
    dbmod.apply_schema(db)
    dbmod.reset_data(db)
    from pvekvm.catalog_cache import _catalog

    _catalog.clear()
    catalog.load(fleet_catalog(), settings.secret_key_file, settings.cluster_names)
    secrets.create_key(settings.secret_key_file)


def take_down_later(at_s: float, conn: dict, node: str = "pve1") -> threading.Timer:
    """``node``'s API of the cluster ``conn`` goes down ``at_s`` from now; the bench's own
    look-ups afterwards use the other endpoints."""
    def down() -> None:
        control(conn, f"api/{node}", "PUT", {"up": False})
        print(f"   ... {at_s:.0f} s: default's {node} API taken down", flush=True)
        rest = [u for n, u in conn["node_endpoints"].items() if n != node]
        conn["endpoints"], conn["base_url"] = rest + [conn["node_endpoints"][node]], rest[0]
    timer = threading.Timer(at_s, down)
    timer.start()
    return timer


def findings(conns: dict[str, dict], sids: list[int], settings: Settings) -> dict:
    """What both clusters hold and what Proxmox met: lost, twice, memory, spread."""
    services = list(Service.select(Service.id, Service.vmid, Service.status, Service.cluster,
                                   Service.node).where(Service.id.between(sids[0], sids[-1])))
    out: dict = {"lost": sum(s.status != "ready" for s in services) + len(sids) - len(services),
                 "proxy_timeouts": 0, "lock_timeouts": 0, "most_waiting": 0,
                 "vms_not_one_per_service": 0, "started_twice": 0, "nodes": {}}
    worst_spread, worst_mem = 0.0, 0.0
    for name, conn in conns.items():
        stats = control(conn, "limits")["stats"]
        out["proxy_timeouts"] += stats["proxy_timeouts"]
        out["lock_timeouts"] += stats["lock_timeouts"]
        out["most_waiting"] = max(out["most_waiting"], stats["most_waiting"])
        vms = {int(v): vm for v, vm in control(conn, "vms").items()
               if str(vm["config"].get("template", "0")) != "1"}
        vmids = [s.vmid for s in services if s.cluster == name and s.vmid is not None]
        out["vms_not_one_per_service"] += len(set(vms) ^ set(vmids)) + len(vmids) - len(
            set(vmids))
        starts = Counter(str(t["id"]) for t in bd.all_tasks(conn)
                         if t.get("status") == "OK" and t["type"] == "qmstart")
        out["started_twice"] += sum(n > 1 for n in starts.values())
        per_node = Counter(vm["node"] for vm in vms.values())
        for node in conn["nodes"]:
            committed = HOST_MEM + sum(int(str(vm["config"].get("memory", "512")).split(",")[0])
                                       * 2**20 for vm in vms.values() if vm["node"] == node)
            allowed = settings.placement_of(name).memory_overcommit * conn["node_mem"]
            worst_mem = max(worst_mem, committed / allowed)
            out["nodes"][f"{name}/{node}"] = (per_node[node], round(committed / GiB, 1))
        counts = [per_node[n] for n in conn["nodes"]]
        worst_spread = max(worst_spread, max(counts) / max(min(counts), 1))
    ops = [o.id for o in Operation.select(Operation.id)
           .where(Operation.service_id.between(sids[0], sids[-1]))]
    done = Counter(StepRun.select(StepRun.operation_id, StepRun.from_state).where(
        StepRun.operation_id.in_(ops) & StepRun.result.in_(DONE)).tuples())
    out.update(steps_done_twice=sum(n > 1 for n in done.values()),
               spread=round(worst_spread, 3), mem_of_allowed=round(worst_mem, 3))
    return out


def run_once(args: argparse.Namespace, kind: str) -> tuple[bd.Run, dict]:
    orders = args.orders
    run = bd.Run(orders, 0.0, args.workers_procs, args.concurrency, "vps-fleet", "copies")
    topo = messaging.Topology(f"bench-{uuid.uuid4().hex[:8]}")
    sim_args = ("--per-node-api", "--api-time-ms", str(args.api_time_ms))
    with tempfile.TemporaryDirectory(prefix="bench-fleet2-") as tmp, \
            contextlib.ExitStack() as stack, SmtpSink() as sink:
        workdir = Path(tmp)
        conns = {}
        for name in CLUSTERS:
            (workdir / name).mkdir()
            conn = conns[name] = stack.enter_context(
                bd.pvesim_process(workdir / name, 0.0, True, sim_args))
            conn["node_mem"] = args.node_mem_gib * GiB
            for node in conn["nodes"]:  # equal nodes, sized so the VMs fill them
                control(conn, f"nodes/{node}", "PUT", {
                    "maxmem": conn["node_mem"], "maxcpu": 256, "host_mem": HOST_MEM})
        ams_placement = (PlacementSettings(memory_overcommit=args.ams_memory_overcommit)
                         if args.ams_memory_overcommit else None)
        clusters = tuple(ClusterSettings(name, ProxmoxSettings.from_connection(conns[name]),
                                         vmid_min=500000 if name == "ams" else None,
                                         vmid_max=899999 if name == "ams" else None,
                                         placement=ams_placement if name == "ams" else None)
                         for name in CLUSTERS)
        settings = Settings(database_url=bd.DATABASE_URL, amqp_url=bd.AMQP_URL,
                            namespace=topo.namespace, proxmox=clusters[0].proxmox,
                            clusters=clusters, smtp=sink.settings(),
                            engine=bd.engine_settings(args),
                            secret_key_file=str(workdir / "secret.key"))
        run.window = settings.engine.deploy_window
        fresh_database(settings)
        messaging.declare(bd.AMQP_URL, topo)
        config = write_config(settings, workdir / "worker.toml")
        procs = bd.start_workers(config, args.workers_procs, args.concurrency, workdir, None,
                                 bd.ROOT / "bench" / "_worker.py")
        timer = None
        try:
            bd.wait_for_consumers(topo, args.workers_procs * args.concurrency, procs)
            sids = list(range(100001, 100001 + orders))
            t0_wall, t0 = datetime.now(), time.perf_counter()
            with OrderClient(bd.AMQP_URL, topo.namespace) as billing:
                for sid in sids:
                    billing.create(service_id=sid, client_id=sid % 97 + 1, product="vps-fleet",
                                   email=f"c{sid}@example.com", location=CLUSTERS[sid % 2])
            run.publish_s = time.perf_counter() - t0
            if kind == "down":
                timer = take_down_later(args.down_at, conns["default"])
            load0 = os.getloadavg()[0]
            run.timed_out = not bd.wait_all_ready(run, sids, t0, args.timeout or
                                                  120 + 1.0 * orders)
            run.load = (load0, os.getloadavg()[0])
            database.connect(reuse_if_open=True)
            last = (Operation.select(Operation.finished_at).where(Operation.status == "done")
                    .order_by(Operation.finished_at.desc()).scalar())
            run.ready = Service.select().where(Service.status == "ready").count()
            if last is not None and run.ready == orders:
                run.ready_s = (last - t0_wall).total_seconds()
            run.paused = [f"{o.service_id}@{o.state}: {o.error}" for o in
                          Operation.select().where(Operation.status == "paused").limit(5)]
            extra = findings(conns, sids, settings)
        finally:
            if timer is not None:
                timer.cancel()
            bd.stop_workers(procs)
            with contextlib.suppress(Exception):
                messaging.delete_topology(bd.AMQP_URL, topo)
            database.close()
        for _, path in procs:
            if path.exists():
                data = json.loads(path.read_text())
                run.samples += [tuple(r) for r in data["rows"]]
                run.worker_cpu_s += data["cpu_s"]
        if run.timed_out or run.ready != orders:
            tail = (workdir / "workers.log").read_text(errors="replace")[-3000:]
            print(f"!! workers.log tail:\n{tail}", file=sys.stderr)
    return run, extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=1000)
    ap.add_argument("--runs", nargs="+", default=["calm", "down"], choices=["calm", "down"])
    ap.add_argument("--api-time-ms", type=float, default=20.0)
    ap.add_argument("--down-at", type=float, default=10.0)
    ap.add_argument("--workers-procs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--node-mem-gib", type=int, default=384)
    ap.add_argument("--ams-memory-overcommit", type=float, default=0,
                    help="ams' own memory_overcommit ([clusters.placement]; 0: [placement]'s)")
    ap.add_argument("--timeout", type=float, default=0)
    ap.add_argument("--name", default=os.environ.get("BENCH_NAME", "pvekvm_bench"))
    args = ap.parse_args()
    args.poll_delays, args.deploy_window_now = None, None
    bd.AMQP_URL = f"{bd.AMQP_SERVER}/{args.name}"
    bd.DATABASE_URL = f"{bd.DB_SERVER}/{args.name}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", args.name], capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", args.name, "guest", ".*",
                    ".*", ".*"], capture_output=True, check=True)
    rows = []
    for kind in args.runs:
        print(f"-- {kind}: N={args.orders} over {' + '.join(CLUSTERS)} x 3 nodes, "
              f"{args.workers_procs} x {args.concurrency}; uptime: {os.getloadavg()}",
              flush=True)
        run, x = run_once(args, kind)
        s = bd.report(run, [])
        print(f"   findings: {x}", flush=True)
        rows.append((kind, s, x, run.load))
    print("\n| run | wall | worker CPU per step | ready | Proxmox timeouts | lock timeouts | "
          "memory committed / allowed (worst node) | spread max/min (worst cluster) | lost | "
          "done twice | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    calm = next((s["wall_s"] for k, s, _, _ in rows if k == "calm"), None)
    for kind, s, x, load in rows:
        twice = x["steps_done_twice"] + x["started_twice"] + x["vms_not_one_per_service"]
        ratio = f" ({s['wall_s'] / calm:.2f}×)" if calm and kind != "calm" else ""
        print(f"| {kind} | {s['wall_s']:.1f} s{ratio} | {s['cpu_per_step_ms']:.2f} ms | "
              f"{args.orders - x['lost']}/{args.orders} | {x['proxy_timeouts']} | "
              f"{x['lock_timeouts']} | {x['mem_of_allowed']:.2f} | {x['spread']:.2f} | "
              f"{x['lost']} | {twice} | {load[0]:.1f} → {load[1]:.1f} |")
    bad = any(x["lost"] or x["steps_done_twice"] or x["started_twice"]
              or x["vms_not_one_per_service"] or x["mem_of_allowed"] > 1 for _, _, x, _ in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
