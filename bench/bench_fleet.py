"""Every node's API and Proxmox's own limits under a burst (issue 24, items 2 and 4).

    .venv/bin/python bench/bench_fleet.py --orders 300 [--runs bounded down unbounded]
        [--bounds 6] [--api-time-ms 20] [--proxy-timeout 30] [--down-at 10]
        [--workers-procs 2 --concurrency 8] [--paths copies]

Each run is bench_deploy.py's (fresh pvesim process, database, RabbitMQ namespace, K worker
processes of C threads, every pool) with pvesim serving every node's API (``--per-node-api``:
3 listeners, one state) under its limits (pvesim/limits.py: 3 pveproxy and 3 pvedaemon workers
per node, the proxy timeout, the 10 s config lock, each handler holding its worker
``--api-time-ms``), and the engine's ``[proxmox] endpoints`` = the three listeners:

- ``bounded``: ``max_calls_per_node`` = each of ``--bounds`` (several: the sweep that chose
  the default);
- ``down``: the same, and the first endpoint's API (the one every worker prefers) is taken down
  ``--down-at`` s after the orders were published, for the rest of the run;
- ``unbounded``: ``max_calls_per_node = 0`` (today's engine: no bound of its own).

After each run, from pvesim (``GET /_sim/limits``, its VMs and tasks) and the database: Proxmox
timeouts (596 past the proxy timeout), config-lock timeouts, late runs, the most requests that
waited for one node's daemon workers at once; orders not ready (lost), VMs per service, clone and
start tasks per VM, steps recorded done twice. Figures go to bench/RESULTS.md (issue 24).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bench_deploy as bd

from pvekvm.models import Operation, Service, StepRun

DONE = ("success", "skip", "warn")


def _control(conn: dict, path: str, method: str = "GET", body: dict | None = None) -> dict:
    """A /_sim control call on a listener that is up (the last one: never taken down here)."""
    base = conn["node_endpoints"][conn["nodes"][-1]].rsplit("/api2/json", 1)[0]
    r = requests.request(method, f"{base}/_sim/{path}", json=body, verify=conn["ca_bundle"],
                         timeout=30)
    r.raise_for_status()
    return r.json()["data"]


def take_down_later(at_s: float, node: str = "pve1"):
    """A ``started`` hook: ``node``'s API goes down ``at_s`` after the orders were published.
    The bench's own look-ups afterwards use the other endpoints (the dict is shared)."""
    def started(conn: dict) -> None:
        def down() -> None:
            _control(conn, f"api/{node}", "PUT", {"up": False})
            print(f"   ... {at_s:.0f} s: {node}'s API taken down", flush=True)
            rest = [u for n, u in conn["node_endpoints"].items() if n != node]
            conn["endpoints"], conn["base_url"] = rest + [conn["node_endpoints"][node]], rest[0]
        threading.Timer(at_s, down).start()
    return started


def findings(conn: dict, sids: list[int]) -> dict:
    """The ``finished`` hook: what Proxmox met and whether anything was lost or done twice."""
    stats = _control(conn, "limits")["stats"]
    vms = _control(conn, "vms")
    ours = {int(v) for v, vm in vms.items() if str(vm["config"].get("template", "0")) != "1"}
    services = list(Service.select(Service.id, Service.vmid, Service.status)
                    .where(Service.id.between(sids[0], sids[-1])))
    vmids = [s.vmid for s in services if s.vmid is not None]
    tasks = [t for t in bd.all_tasks(conn) if t.get("status") == "OK"]
    starts = Counter(str(t["id"]) for t in tasks if t["type"] == "qmstart")
    clones = sum(t["type"] == "qmclone" for t in tasks)
    ops = [o.id for o in Operation.select(Operation.id)
           .where(Operation.service_id.between(sids[0], sids[-1]))]
    done = Counter(StepRun.select(StepRun.operation_id, StepRun.from_state).where(
        StepRun.operation_id.in_(ops) & StepRun.result.in_(DONE)).tuples())
    return {
        "proxy_timeouts": stats["proxy_timeouts"], "lock_timeouts": stats["lock_timeouts"],
        "late_runs": stats["late_runs"], "most_waiting": stats["most_waiting"],
        "most_in_flight": stats["most_in_flight"],
        "lost": sum(s.status != "ready" for s in services) + len(sids) - len(services),
        "vms_not_one_per_service": len(ours ^ set(vmids)) + len(vmids) - len(set(vmids)),
        "clones": clones, "started_twice": sum(n > 1 for n in starts.values()),
        "steps_done_twice": sum(n > 1 for n in done.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--runs", nargs="+", default=["bounded", "down", "unbounded"],
                    choices=["bounded", "down", "unbounded"])
    ap.add_argument("--bounds", type=int, nargs="+", default=[6],
                    help="max_calls_per_node values for the bounded/down runs")
    ap.add_argument("--repeat", type=int, default=1, help="each run this many times")
    ap.add_argument("--api-time-ms", type=float, default=20.0,
                    help="pvesim: time each handler holds its worker (default 20)")
    ap.add_argument("--proxy-timeout", type=float, default=30.0,
                    help="pvesim: seconds a proxied request waits before 596 (default 30)")
    ap.add_argument("--down-at", type=float, default=10.0)
    ap.add_argument("--workers-procs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--paths", nargs="+", default=["copies"],
                    choices=["fallback", "copies", "linked"])
    ap.add_argument("--timeout", type=float, default=0)
    ap.add_argument("--name", default=os.environ.get("BENCH_NAME", "pvekvm_bench"))
    args = ap.parse_args()
    # what bench_deploy.run_once reads of its own arguments
    args.product, args.profile, args.worker_script = "vps-small", None, bd.ROOT / "bench" / \
        "_worker.py"
    args.poll_delays, args.deploy_window_now = None, None
    bd.AMQP_URL = f"{bd.AMQP_SERVER}/{args.name}"
    bd.DATABASE_URL = f"{bd.DB_SERVER}/{args.name}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", args.name], capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", args.name, "guest", ".*",
                    ".*", ".*"], capture_output=True, check=True)
    sim_args = ("--per-node-api", "--api-time-ms", str(args.api_time_ms),
                "--proxy-timeout", str(args.proxy_timeout))
    plan = [(kind, bound) for kind in args.runs
            for bound in (args.bounds if kind != "unbounded" else [0])] * args.repeat
    rows = []
    for path in args.paths:
        for kind, bound in plan:
            hooks = bd.Hooks(sim_args=sim_args, tuning={"max_calls_per_node": bound},
                             started=take_down_later(args.down_at) if kind == "down" else None,
                             finished=findings)
            timeout = args.timeout or 120 + 1.0 * args.orders
            print(f"-- {kind} (max_calls_per_node {bound}), N={args.orders}, path {path}, "
                  f"api time {args.api_time_ms:g} ms, proxy timeout {args.proxy_timeout:g} s; "
                  f"uptime: {os.getloadavg()}", flush=True)
            run = bd.run_once(args, args.orders, 0.0, timeout, path, hooks)
            summary = bd.report(run, [])
            rows.append((kind, bound, path, summary, run.extra, run.load))
            print(f"   Proxmox: {run.extra}", flush=True)
    print("\n| run | bound | wall | worker CPU per step | Proxmox timeouts | lock timeouts | "
          "most waiting for a daemon worker | lost | done twice | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, bound, path, s, x, load in rows:
        twice = x.get("steps_done_twice", 0) + x.get("started_twice", 0) + x.get(
            "vms_not_one_per_service", 0)
        print(f"| {kind} ({path}) | {bound or 'none'} | {s['wall_s']:.1f} s | "
              f"{s['cpu_per_step_ms']:.2f} ms | {x.get('proxy_timeouts')} | "
              f"{x.get('lock_timeouts')} | {x.get('most_waiting')} | {x.get('lost')} | "
              f"{twice} | {load[0]:.1f} → {load[1]:.1f} |")
    bad = any(x.get("lost") or x.get("steps_done_twice") or x.get("started_twice")
              or x.get("vms_not_one_per_service") for *_, x, _ in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
