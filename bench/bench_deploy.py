"""Deploy benchmark: N orders through the whole engine (RabbitMQ, MariaDB, pvesim) until every
service is ready; prints wall time, orders/min, step messages/s, engine overhead and Proxmox time
per step message (p50/p95), and what a sequential one-cron-tick-per-minute engine (the PHP
module) would need for the same N.

    .venv/bin/python bench/bench_deploy.py --orders 10 100 500 [--task-time-scale 0]
        [--workers-procs K --concurrency C] [--realistic [--realistic-orders 10]]
        [--product vps-small|vps-large|mix] [--profile DIR]

Every run gets a fresh pvesim process (``python -m pvesim``, its own GIL), a fresh
``pvekvm_bench`` database (schema.sql, catalog from config/catalog.toml plus a 198.18.0.0/21
benchmark-range IPv4 pool so 500 orders fit), a private RabbitMQ namespace ``bench-<uuid8>``
(deleted at the end), an SMTP sink in this process, and K worker processes
(``bench/_worker.py``: ``workers.consumer.WorkerProcess`` over all pools with C threads, the engine
observer hook and timing wrappers). Engine settings are the production defaults
(``EngineSettings()``: 2 clones per template node, poll delays 0.25/0.5/1/2 s then every 2 s).
Figures are explained in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests

from producers.api import OrderClient
from pvekvm import catalog, messaging, secrets
from pvekvm import db as dbmod
from pvekvm.config import EngineSettings, ProxmoxSettings, Settings
from pvekvm.models import IpPool, Operation, OutboxEvent, Product, Service, database
from workers.testing.harness import load_catalog, write_config
from workers.testing.smtp_sink import SmtpSink

AMQP_SERVER = os.environ.get("BENCH_AMQP_SERVER", "amqp://guest:guest@127.0.0.1:5672")
DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
# the database and RabbitMQ vhost of the runs (--name or BENCH_NAME; several people may run the
# bench on one machine at once): main() sets them
AMQP_URL = f"{AMQP_SERVER}/%2F"
DATABASE_URL = f"{DB_SERVER}/pvekvm_bench"
NODES = ("pve1", "pve2", "pve3")
TEMPLATE_COPIES = [{"node": n, "vmid": 9000 + 10 * i, "storage": "local-lvm"}
                   for i, n in enumerate(NODES)]  # pvesim --template-replicas seeds these
BENCH_POOL = {"name": "bench-v4", "version": 4, "network": "198.18.0.0/21",
              "gateway": "198.18.0.1", "nameservers": "198.18.0.53",
              "first": "198.18.0.10", "last": "198.18.7.250"}
CRON_TICK_S = 60.0


# --- processes -----------------------------------------------------------------------------------

def stop_workers(procs: list) -> None:
    """SIGTERM every worker process of ``procs`` ((Popen, ...) pairs), then wait (40 s each)
    for it to finish the message in hand; one that does not is killed."""
    for p, _ in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    for p, _ in procs:
        try:
            p.wait(40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


@contextlib.contextmanager
def pvesim_process(workdir: Path, scale: float, replicas: bool = False,
                   extra: tuple[str, ...] = ()):
    """``python -m pvesim`` on a free port (``extra``: more of its options); yields its
    connection dict; stops it on exit."""
    conn_file = workdir / "pvesim.json"
    log = open(workdir / "pvesim.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvesim", "--port", "0", "--state-dir", str(workdir / "pvesim"),
         "--task-time-scale", str(scale), "--connection-file", str(conn_file)]
        + (["--template-replicas"] if replicas else []) + list(extra),
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not conn_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pvesim did not start; see {workdir / 'pvesim.log'}")
            time.sleep(0.1)
        conn = json.loads(conn_file.read_text())
        conn["pid"] = proc.pid  # for its CPU time (process_cpu_s)
        ca = conn["ca_bundle"]
        while True:  # the file is written before the listener accepts: wait for an answer
            try:
                requests.get(f"{conn['control_url']}/connection", verify=ca, timeout=2)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # room for every order: placement counts memory, CPU and storage (issue 24)
        room = {"maxmem": 4 * 2**40, "maxcpu": 4096}
        for what, body in [*((f"nodes/{n}", room) for n in NODES),
                           ("storages/local-lvm", {"total": 64 * 2**40})]:
            requests.put(f"{conn['control_url']}/{what}", json=body, verify=ca,
                         timeout=5).raise_for_status()
        yield conn
    finally:
        stop_process(proc, 15)
        log.close()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVICES = ("mariadbd", "mysqld", "beam.smp")  # the machine's MariaDB and RabbitMQ


def services_cpu_s() -> float:
    """CPU seconds used so far by every MariaDB and RabbitMQ process of the machine (shared:
    what other users make them do is in it too)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if (proc / "comm").read_text().strip() in SERVICES:
                    total += process_cpu_s(int(proc.name))
    return total


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_workers(config: Path, procs: int, concurrency: int, workdir: Path,
                  profile: Path | None, script: Path) -> list[tuple[subprocess.Popen, Path]]:
    out = []
    log = open(workdir / "workers.log", "ab")  # noqa: SIM115
    for i in range(procs):
        samples = workdir / f"samples-{i}.json"
        cmd = [sys.executable, str(script), "--config", str(config),
               "--concurrency", str(concurrency), "--samples", str(samples)]
        if profile is not None:
            cmd += ["--profile", str(profile.with_name(f"{profile.stem}-w{i}.prof")),
                    "--profile-threads"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "AMQP_URL", "PVEKVM_NAMESPACE")}
        out.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT), samples))
    log.close()
    return out


def wait_for_consumers(topo: messaging.Topology, want: int, procs, timeout: float = 60) -> None:
    """Until every worker thread consumes a step queue (each thread has its own channel; the
    orders queue counts only its single active consumer)."""
    conn = messaging.connect(AMQP_URL)
    try:
        ch = conn.channel()
        deadline = time.monotonic() + timeout
        while True:
            n = ch.queue_declare(topo.step_queue("mail"), passive=True).method.consumer_count
            if n >= want:
                return
            if any(p.poll() is not None for p, _ in procs):
                raise RuntimeError("a worker process exited during start-up; see workers.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n}/{want} consumers after {timeout}s")
            time.sleep(0.1)
    finally:
        conn.close()


# --- database ------------------------------------------------------------------------------------

def fresh_database(settings: Settings, path: str = "fallback") -> None:
    """Schema, catalog and the benchmark pool. ``path``: ``fallback`` = the catalog as shipped
    (templates on pve1 only: clone there, then migrate); ``copies`` = a copy of debian-12 on
    every node (full clone on the target node); ``linked`` = copies, and linked clones. With
    copies, ``vps-small`` also exists as ``vps-small-pve1``/``-pve3`` so orders spread over the
    three nodes (round robin)."""
    dbmod.create_database(DATABASE_URL)
    db = dbmod.bind(DATABASE_URL)
    dbmod.apply_schema(db)
    dbmod.reset_data(db)
    catalog.load({"ip_pools": [BENCH_POOL]}, settings.secret_key_file)
    pool = IpPool.get(IpPool.name == BENCH_POOL["name"])
    load_catalog(settings, ip_pool_id=pool.id)  # every product draws from the big pool
    if path != "fallback":
        catalog.load({"templates": [{"name": "debian-12", "vmid": 9000, "node": "pve1",
                                     "os_user": "debian", "replicas": TEMPLATE_COPIES}]},
                     settings.secret_key_file)
        small = Product.get(Product.name == "vps-small")
        for node in ("pve1", "pve3"):
            row = {f.name: getattr(small, f.name) for f in Product._meta.sorted_fields
                   if f.name != "id"}
            Product.create(**{**row, "name": f"vps-small-{node}", "target_node": node})
        if path == "linked":
            Product.update(linked_clone=True).execute()
    secrets.create_key(settings.secret_key_file)  # as init-db does, before workers start


# --- figures -------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


@dataclass
class Run:
    orders: int
    scale: float
    procs: int
    concurrency: int
    product: str
    path: str = "fallback"
    window: int = 0
    publish_s: float = 0.0
    ready_at: list[float] = field(default_factory=list)  # each order's time to ready, sorted
    floor: tuple[float, str] = (math.nan, "")
    ready_s: float = math.nan
    ready: int = 0
    paused: list[str] = field(default_factory=list)
    samples: list[tuple] = field(default_factory=list)
    step_runs: dict[str, int] = field(default_factory=dict)
    task_s: float = 0.0
    tasks: int = 0
    timed_out: bool = False
    worker_cpu_s: float = 0.0
    pvesim_cpu_s: float = 0.0
    services_cpu_s: float = 0.0  # the machine's MariaDB + RabbitMQ processes, all users
    statements: dict[str, int] = field(default_factory=dict)  # SQL text -> times executed
    load: tuple[float, float] = (0.0, 0.0)
    event_lag_ms: list[float] = field(default_factory=list)  # commit -> confirmed publish
    extra: dict = field(default_factory=dict)  # what a caller's hooks found (bench_fleet.py)


@dataclass
class Hooks:
    """What another benchmark adds to a run: pvesim options, [proxmox] tuning, a call once the
    orders are published (``started(conn)``) and one after all are ready, database still
    open (``finished(conn, sids) -> dict``, kept in ``Run.extra``)."""

    sim_args: tuple[str, ...] = ()
    tuning: dict = field(default_factory=dict)
    started: object = None
    finished: object = None


def collect_tasks(conn: dict) -> tuple[int, float]:
    """(number of Proxmox tasks, sum of their durations in s) from the simulator's task lists.
    PVE task times are whole seconds: each duration is ±1 s, the sum over many is unbiased."""
    px = ProxmoxSettings.from_connection(conn)
    headers = {"Authorization": f"PVEAPIToken={px.token_id}={px.token_secret}"}
    n, total = 0, 0.0
    for node in conn["nodes"]:
        name = node if isinstance(node, str) else node.get("node", node.get("name"))
        r = requests.get(f"{px.base_url}/nodes/{name}/tasks", params={"limit": 1000000},
                         headers=headers, verify=px.ca_bundle, timeout=30)
        r.raise_for_status()
        for t in r.json()["data"]:
            if t.get("endtime") is not None:
                n += 1
                total += max(0, int(t["endtime"]) - int(t["starttime"]))
    return n, total


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    kw: dict = {}
    if args.poll_delays:
        kw["poll_delays_s"] = tuple(args.poll_delays)
    if getattr(args, "deploy_window_now", None) is not None:
        kw["deploy_window"] = args.deploy_window_now
    return EngineSettings(**kw)


def all_tasks(conn: dict) -> list[dict]:
    px = ProxmoxSettings.from_connection(conn)
    headers = {"Authorization": f"PVEAPIToken={px.token_id}={px.token_secret}"}
    out = []
    for node in conn["nodes"]:
        r = requests.get(f"{px.base_url}/nodes/{node}/tasks", params={"limit": 1000000},
                         headers=headers, verify=px.ca_bundle, timeout=30)
        r.raise_for_status()
        out += r.json()["data"]
    return out


def clone_floor(conn: dict, orders: int, limit: int) -> tuple[float, str]:
    """The least time Proxmox's task durations and storage locks allow for this run's orders,
    if the engine cost nothing: per clone node, its full clones in waves of ``limit`` (PVE's
    storage lock) — linked clones need no slot — then the tail of one order (the median over
    orders of its own tasks after the clone, run one after another: migrate, config, start).
    Task times are PVE's whole seconds."""
    tasks = [t for t in all_tasks(conn) if t.get("endtime") is not None]
    vmids = {int(s.vmid) for s in Service.select(Service.vmid).where(
        Service.vmid.is_null(False)) if s.vmid is not None}

    def dur(t: dict) -> int:
        return max(0, int(t["endtime"]) - int(t["starttime"]))

    clones = [t for t in tasks if t["type"] == "qmclone" and t.get("status") == "OK"]
    if not clones:
        return math.nan, "no clone tasks"
    per_node: dict[str, list[int]] = {}
    for t in clones:
        per_node.setdefault(t["node"], []).append(dur(t))
    tails = sorted(sum(dur(t) for t in tasks if t["id"] == str(v)) for v in vmids)
    tail = tails[len(tails) // 2] if tails else 0
    clone_s = sorted(dur(t) for t in clones)[len(clones) // 2]
    linked = clone_s <= 3  # pvesim: linked 1 s, full 20 s at scale 1
    waves = {n: 1 if linked else math.ceil(len(ds) / limit) for n, ds in per_node.items()}
    worst = max(waves.values())
    floor = worst * clone_s + tail
    spread = ", ".join(f"{n}: {len(per_node[n])}" for n in sorted(per_node))
    how = (f"{'linked' if linked else 'full'} clones on {spread}; {worst} wave(s) x "
           f"{clone_s} s + tail {tail} s")
    return float(floor), how


def order_products(product: str, n: int, spread: bool = False) -> list[str]:
    if product == "mix":  # 3 small : 1 large
        return ["vps-large" if i % 4 == 3 else "vps-small" for i in range(n)]
    if spread and product == "vps-small":  # target nodes pve1, pve2, pve3 in turn
        return [("vps-small-pve1", "vps-small", "vps-small-pve3")[i % 3] for i in range(n)]
    return [product] * n


def run_once(args: argparse.Namespace, orders: int, scale: float, timeout: float,
             path: str = "fallback", hooks: Hooks | None = None) -> Run:
    run = Run(orders, scale, args.workers_procs, args.concurrency, args.product, path)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    topo = messaging.Topology(namespace)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp, \
            pvesim_process(Path(tmp), scale, path != "fallback",
                           hooks.sim_args if hooks else ()) as conn, SmtpSink() as sink:
        workdir = Path(tmp)
        pve = ProxmoxSettings.from_connection(conn, **(hooks.tuning if hooks else {}))
        settings = Settings(database_url=DATABASE_URL, amqp_url=AMQP_URL, namespace=namespace,
                            proxmox=pve, smtp=sink.settings(),
                            engine=engine_settings(args),
                            secret_key_file=str(workdir / "secret.key"))
        run.window = settings.engine.deploy_window
        fresh_database(settings, path)
        messaging.declare(AMQP_URL, topo)
        config = write_config(settings, workdir / "worker.toml")
        profile = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = args.profile / f"n{orders}-s{scale:g}.prof"
        procs = start_workers(config, args.workers_procs, args.concurrency, workdir, profile,
                              args.worker_script)
        try:
            wait_for_consumers(topo, args.workers_procs * args.concurrency, procs)
            sids = list(range(100001, 100001 + orders))
            t0_wall, t0 = datetime.now(), time.perf_counter()
            sim_cpu0, services0 = process_cpu_s(conn["pid"]), services_cpu_s()
            with OrderClient(AMQP_URL, namespace) as billing:
                for sid, product in zip(sids, order_products(args.product, orders,
                                                             path != "fallback"), strict=True):
                    billing.create(service_id=sid, client_id=sid % 97 + 1, product=product,
                                   email=f"c{sid}@example.com")
            run.publish_s = time.perf_counter() - t0
            if hooks and hooks.started:
                hooks.started(conn)  # type: ignore[operator]
            load0 = os.getloadavg()[0]
            run.timed_out = not wait_all_ready(run, sids, t0, timeout)
            run.pvesim_cpu_s = process_cpu_s(conn["pid"]) - sim_cpu0
            run.services_cpu_s = services_cpu_s() - services0
            run.load = (load0, os.getloadavg()[0])
            database.connect(reuse_if_open=True)
            last = (Operation.select(Operation.finished_at).where(Operation.status == "done")
                    .order_by(Operation.finished_at.desc()).scalar())
            run.ready = Service.select().where(Service.status == "ready").count()
            if last is not None and run.ready == orders:
                run.ready_s = (last - t0_wall).total_seconds()
            run.paused = [f"{o.service_id}@{o.state}: {o.error}" for o in
                          Operation.select().where(Operation.status == "paused").limit(5)]
            run.step_runs = {str(result): int(n) for result, n in database.execute_sql(
                "SELECT result, COUNT(*) FROM step_runs GROUP BY result").fetchall()}
            run.tasks, run.task_s = collect_tasks(conn)
            run.ready_at = sorted(
                (o.finished_at - t0_wall).total_seconds() for o in Operation.select().where(
                    (Operation.kind == "deploy") & (Operation.status == "done"))
                if o.finished_at is not None)
            run.floor = clone_floor(conn, orders, settings.engine.clones_per_storage)
            run.event_lag_ms = [1000 * (e.published_at - e.created_at).total_seconds()
                                for e in OutboxEvent.select(OutboxEvent.created_at,
                                                            OutboxEvent.published_at)
                                .where(OutboxEvent.published_at.is_null(False))
                                if e.published_at is not None and e.created_at is not None]
            if hooks and hooks.finished:
                run.extra = hooks.finished(conn, sids)  # type: ignore[operator]
        finally:
            stop_workers(procs)
            with contextlib.suppress(Exception):
                messaging.delete_topology(AMQP_URL, topo)
            database.close()
        for _, samples in procs:
            if samples.exists():
                data = json.loads(samples.read_text())
                run.samples += [tuple(r) for r in data["rows"]]
                run.worker_cpu_s += data["cpu_s"]
                for text, n in data.get("statements", {}).items():
                    run.statements[text] = run.statements.get(text, 0) + n
        if run.timed_out or run.ready != orders:
            tail = (workdir / "workers.log").read_text(errors="replace")[-3000:]
            print(f"!! workers.log tail:\n{tail}", file=sys.stderr)
    return run


def wait_all_ready(run: Run, sids: list[int], t0: float, timeout: float) -> bool:
    """Poll the database until every service is ready (True) or the deadline passes (False)."""
    deadline = t0 + timeout
    lo, hi = sids[0], sids[-1]
    last_print = 0.0
    while True:
        database.connect(reuse_if_open=True)
        ready = Service.select().where(Service.id.between(lo, hi)
                                       & (Service.status == "ready")).count()
        now = time.perf_counter()
        if ready == len(sids):
            return True
        if now > deadline:
            return False
        if now - last_print > 15:
            last_print = now
            print(f"   ... {now - t0:5.0f} s: {ready}/{len(sids)} ready", flush=True)
        time.sleep(0.1 if run.scale == 0 else 0.5)


def cron_estimate_s(orders: int, per_order_s: float) -> float:
    """A sequential engine on a one-minute cron tick: one VM after another, each needing at least
    its Proxmox time; a tick that overruns delays the next (no overlap). Orders arrive just
    before a tick. T = 60 s * ceil(N * P / 60 s)."""
    return CRON_TICK_S * max(1, math.ceil(orders * per_order_s / CRON_TICK_S))


def fmt_s(s: float) -> str:
    if math.isnan(s):
        return "n/a"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def print_statements(counts: dict[str, int], messages: int, top: int = 25) -> None:
    """The statements the workers ran, most frequent first, per step run; then the Proxmox
    calls (counted under "PVE <method> <path>")."""
    sql = {k: v for k, v in counts.items() if not k.startswith("PVE ")}
    pve = {k: v for k, v in counts.items() if k.startswith("PVE ")}
    for title, group, limit in (("SQL statements", sql, top), ("Proxmox calls", pve, 40)):
        print(f"\n{title} per step ({sum(group.values()) / messages:.2f} in all):")
        for text, n in sorted(group.items(), key=lambda kv: -kv[1])[:limit]:
            print(f"  {n / messages:6.3f}  {' '.join(text.split())[:150]}")


def print_by_pool(samples: list[tuple]) -> None:
    """Per pool: messages, mean ms of the whole callback / Proxmox / MariaDB (statements), and
    the overhead p50/p95 (handle - Proxmox calls)."""
    pools: dict[str, list[tuple]] = {}
    for r in samples:
        pools.setdefault(r[0], []).append(r)
    print(f"   {'pool':<10}{'msgs':>6}{'total':>8}{'pve':>8}{'db':>8}{'stmts':>7}"
          f"{'ovh p50':>9}{'ovh p95':>9}   (ms, means unless p50/p95)")
    for pool, rs in sorted(pools.items(), key=lambda kv: -sum(r[1] for r in kv[1])):
        n = len(rs)
        ovh = [(r[2] - r[3]) * 1000 if r[0] != "intake" else (r[1] - r[3]) * 1000 for r in rs]
        print(f"   {pool:<10}{n:>6}{_mean([r[1] for r in rs]):>8.1f}"
              f"{_mean([r[3] for r in rs]):>8.1f}{_mean([r[6] for r in rs]):>8.1f}"
              f"{sum(r[7] for r in rs) / n:>7.1f}{pct(ovh, 50):>9.1f}{pct(ovh, 95):>9.1f}")


def report(run: Run, extra_n: list[int], by_pool: bool = False,
           statements: bool = False) -> dict:
    steps = [r for r in run.samples if r[0] != "intake"]
    intake = [r for r in run.samples if r[0] == "intake"]
    ms = 1000.0
    over = [(r[2] - r[3]) * ms for r in steps]                       # handle - Proxmox calls
    engine = [(r[2] - r[3] - r[4] - r[5]) * ms for r in steps]       # minus inline waits, SMTP
    follow = [(r[1] - r[2]) * ms for r in steps]                     # publish+confirm, mark, ack
    full = [(r[1] - r[3] - r[4] - r[5]) * ms for r in steps]         # whole message, no I/O
    pve = [r[3] * ms for r in steps]
    wall = run.ready_s
    n_msgs = len(steps)                                    # step deliveries from the broker
    n_steps = sum(r[8] if len(r) > 8 else 1 for r in steps)  # steps run (chains included)
    pve_calls_per_order = sum(r[3] for r in steps) / run.orders
    task_per_order = run.task_s / run.orders
    per_order = pve_calls_per_order + task_per_order
    title = (f"N={run.orders} orders ({run.product}, clone path {run.path}), "
             f"pvesim task-time-scale {run.scale:g}, deploy_window {run.window}, "
             f"{run.procs} worker process(es) x {run.concurrency} threads")
    rows = [
        ("wall time to all ready", f"{fmt_s(wall)}" + (" (TIMED OUT)" if run.timed_out else "")
         + f"   [publishing the orders took {run.publish_s:.1f} s]"),
        ("services ready", f"{run.ready}/{run.orders}"
         + (f"   paused: {run.paused}" if run.paused else "")),
        ("orders/min", f"{run.orders / wall * 60:.0f}" if wall == wall else "n/a"),
        ("steps run/s", f"{n_steps / wall:.0f}   [{n_steps} steps = "
         f"{n_steps / run.orders:.1f}/order, of which {n_msgs} delivered by the broker "
         f"({n_msgs / run.orders:.1f}/order) and the rest run in a chain; {len(intake)} intake; "
         f"step_runs {run.step_runs}]"
         if wall == wall else f"n/a ({n_steps} steps)"),
        ("engine overhead/step p50 p95", f"{pct(over, 50):.1f} ms  {pct(over, 95):.1f} ms"
         f"   (observer: handle - Proxmox calls; mean {sum(over) / max(1, n_msgs):.1f})"),
        ("  engine work only p50 p95", f"{pct(engine, 50):.1f} ms  {pct(engine, 95):.1f} ms"
         "   (also minus inline task-wait sleeps and SMTP: DB + Python)"),
        ("  + follow-up p50 p95", f"{pct(follow, 50):.1f} ms  {pct(follow, 95):.1f} ms"
         "   (confirmed publish of the next nudge, mark published, ack)"),
        ("  whole message, no I/O p50 p95", f"{pct(full, 50):.1f} ms  {pct(full, 95):.1f} ms"
         "   (delivery callback minus Proxmox, inline waits, SMTP)"),
        ("whole message mean breakdown", breakdown(steps)),
        ("worker CPU per step", f"{run.worker_cpu_s / max(1, n_steps) * 1000:.1f} ms"
         f"   (per step delivery {run.worker_cpu_s / max(1, n_msgs) * 1000:.1f} ms; worker "
         "processes' user+sys CPU while serving / steps run; incl. intake, "
         "proxmoxer/TLS client work and idle polling)"),
        ("CPU per order: workers / pvesim",
         f"{run.worker_cpu_s / max(1, run.orders) * 1000:.0f} ms / "
         f"{run.pvesim_cpu_s / max(1, run.orders) * 1000:.0f} ms   (+ MariaDB and RabbitMQ "
         f"{run.services_cpu_s / max(1, run.orders) * 1000:.0f} ms: the machine's processes, "
         "other users' work included)"),
        ("load average (1 min) start/end", f"{run.load[0]:.2f} / {run.load[1]:.2f}"
         "   (2 cores; shared with other users of the machine)"),
        ("Proxmox time/step p50 p95", f"{pct(pve, 50):.1f} ms  {pct(pve, 95):.1f} ms"
         f"   (inside HTTP calls; mean {_mean([r[3] for r in steps]):.1f})"),
        ("Proxmox per order", f"{per_order:.2f} s = calls {pve_calls_per_order:.2f} s + "
         f"tasks {task_per_order:.2f} s ({run.tasks / run.orders:.1f} tasks/order)"),
        ("event lag p50 p95", f"{pct(run.event_lag_ms, 50):.1f} ms  "
         f"{pct(run.event_lag_ms, 95):.1f} ms   ({len(run.event_lag_ms)} events: state change "
         "committed -> published to billing, confirmed)"),
        ("sequential cron estimate", f"{fmt_s(cron_estimate_s(run.orders, per_order))}   "
         f"(60 s x ceil(N x {per_order:.2f} s / 60 s)); measured / cron = "
         f"{wall / cron_estimate_s(run.orders, per_order):.2f}"),
        ("time to ready: first / p50 / last", ready_figures(run)),
    ]
    if run.scale > 0:
        rows.append((f"floor of the clone path ({run.path})",
                     f"{fmt_s(run.floor[0])}   ({run.floor[1]}); measured / floor = "
                     f"{wall / run.floor[0]:.2f}"))
    for n in extra_n:
        rows.append((f"  cron estimate N={n}", f"{fmt_s(cron_estimate_s(n, per_order))}   "
                     "(same formula, P from this run)"))
    width = max(len(k) for k, _ in rows)
    print(f"\n== {title} ==")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if by_pool:
        print_by_pool(run.samples)
    if statements:
        print_statements(run.statements, max(1, n_steps))
    sys.stdout.flush()
    return {"orders": run.orders, "scale": run.scale, "procs": run.procs,
            "concurrency": run.concurrency, "wall_s": wall, "messages": n_msgs,
            "steps": n_steps,
            "overhead_p50": pct(over, 50), "overhead_p95": pct(over, 95),
            "engine_p50": pct(engine, 50), "engine_p95": pct(engine, 95),
            "follow_p50": pct(follow, 50), "follow_p95": pct(follow, 95),
            "pve_p50": pct(pve, 50), "pve_p95": pct(pve, 95), "per_order_s": per_order,
            "cron_s": cron_estimate_s(run.orders, per_order), "timed_out": run.timed_out,
            "path": run.path, "floor_s": run.floor[0], "first_ready_s":
            run.ready_at[0] if run.ready_at else math.nan,
            "p50_ready_s": pct(run.ready_at, 50),
            "cpu_per_step_ms": run.worker_cpu_s / max(1, n_steps) * 1000,
            "cpu_per_order_ms": run.worker_cpu_s / max(1, run.orders) * 1000}


def ready_figures(run: Run) -> str:
    r = run.ready_at
    if not r:
        return "n/a"
    p50 = pct(r, 50)
    marks = ", ".join(f"{sum(1 for x in r if x <= t)} by {t:g} s" for t in (10, 30, 60)
                      if t < r[-1])
    return (f"{r[0]:.1f} s / {p50:.1f} s / {r[-1]:.1f} s   (p50 / wall = {p50 / r[-1]:.2f}; "
            f"{marks or 'all within 10 s'})")


def breakdown(steps: list[tuple]) -> str:
    """Mean per step delivery: where the delivery callback's time goes."""
    if not steps:
        return "n/a"
    n = len(steps)
    tot, pve, inline, smtp, db = (sum(r[i] for r in steps) / n * 1000 for i in (1, 3, 4, 5, 6))
    nq = sum(r[7] for r in steps) / n
    rest = tot - pve - inline - smtp - db
    return (f"{tot:.1f} ms = Proxmox {pve:.1f} + inline waits {inline:.1f} + SMTP {smtp:.1f} "
            f"+ MariaDB {db:.1f} ({nq:.1f} statements) + Python/broker/GIL {rest:.1f}")


def _mean(seconds: list[float]) -> float:
    return sum(seconds) / len(seconds) * 1000 if seconds else math.nan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--task-time-scale", type=float, default=0.0,
                    help="pvesim task duration factor for the --orders runs (default 0)")
    ap.add_argument("--workers-procs", type=int, default=1, help="worker processes (K)")
    ap.add_argument("--concurrency", type=int, default=8, help="threads per worker process (C)")
    ap.add_argument("--product", default="vps-small", choices=["vps-small", "vps-large", "mix"])
    ap.add_argument("--realistic", action="store_true",
                    help="also run --realistic-orders with the seed's task durations (scale 1)")
    ap.add_argument("--realistic-orders", type=int, default=10)
    ap.add_argument("--realistic-scale", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per run before giving up (default: from N and the scale)")
    ap.add_argument("--profile", type=Path,
                    help="directory for cProfile stats of the workers' message handling")
    ap.add_argument("--poll-delays", type=float, nargs="+",
                    help="EngineSettings.poll_delays_s for the workers (default: the engine's)")
    ap.add_argument("--worker-script", type=Path, default=ROOT / "bench" / "_worker.py",
                    help="worker entry point (a wrapper of bench/_worker.py can try engine "
                    "changes without editing the tree)")
    ap.add_argument("--by-pool", action="store_true", help="also print a per-pool table")
    ap.add_argument("--statements", action="store_true",
                    help="also print the SQL statements the workers ran, per step run")
    ap.add_argument("--name", default=os.environ.get("BENCH_NAME", "pvekvm_bench"),
                    help="database and RabbitMQ vhost of the runs (env BENCH_NAME; default "
                    "pvekvm_bench); the vhost is created when missing (rabbitmqctl)")
    ap.add_argument("--paths", nargs="+", default=["fallback"],
                    choices=["fallback", "copies", "linked"],
                    help="clone paths to run, one after another, for every N: fallback (clone "
                    "on pve1, migrate), copies (a template copy per node, orders spread over "
                    "3 nodes), linked (copies and linked clones)")
    ap.add_argument("--deploy-window", type=int, nargs="+",
                    help="[engine] deploy_window values to compare (default: the engine's)")
    ap.add_argument("--json", type=Path, help="also write the summary figures here")
    args = ap.parse_args()

    global AMQP_URL, DATABASE_URL
    AMQP_URL = f"{AMQP_SERVER}/{args.name}"
    DATABASE_URL = f"{DB_SERVER}/{args.name}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", args.name], capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", args.name, "guest", ".*", ".*",
                    ".*"], capture_output=True, check=True)
    plan = [(n, args.task_time_scale) for n in args.orders]
    if args.realistic:
        plan.append((args.realistic_orders, args.realistic_scale))
    summary = []
    windows = args.deploy_window or [None]
    for (n, scale), path, window in [(p, path, w) for p in plan for path in args.paths
                                     for w in windows]:
        args.deploy_window_now = window
        timeout = args.timeout or (60 + 1.0 * n + scale * (90 + 15 * n))
        print(f"-- running N={n}, task-time-scale {scale:g}, clone path {path}, deploy_window "
              f"{window if window is not None else 'default'} (deadline {timeout:.0f} s); "
              f"uptime: {os.getloadavg()}", flush=True)
        run = run_once(args, n, scale, timeout, path)
        extra = [500] if scale > 0 and n < 500 else []
        summary.append(report(run, extra, args.by_pool, args.statements))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if any(s["timed_out"] for s in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
