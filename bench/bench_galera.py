"""Galera against the single server, side by side in one sitting (issue 31).

    .venv/bin/python bench/bench_galera.py [--orders 1000] [--rounds 2] [--micro-only]
        [--workers-procs 2 --concurrency 4]

1. **Deploys**: ``bench/bench_deploy.py --orders N`` (task time 0) alternately against the
   machine's MariaDB (``BENCH_DB_SERVER`` default) and the private three-node cluster
   (scripts/galera-cluster.sh, started when down and left running: `... stop` ends it), R
   rounds; one line per
   run (wall, worker CPU per step, first/p50 ready, load), the Galera/single wall ratio.
2. **Why** (micro, one connection and then 8 at once, on each side): the latency of a
   commit of one step's writes (step_runs insert + operation CAS, as the engine commits them),
   of a point read with ``wsrep_sync_wait`` 0 and 1, and commits per second with 8 writers
   (group commit: Galera certifies and orders a batch of writesets in one group round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINGLE = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
SCRIPT = ROOT / "scripts" / "galera-cluster.sh"
GALERA_ENV = {**os.environ, "PVEKVM_GALERA_NAME": os.environ.get("PVEKVM_GALERA_NAME",
                                                                   "pvekvm_galera"),
              "PVEKVM_GALERA_PORT": os.environ.get("PVEKVM_GALERA_PORT", "22100")}


def galera_server() -> str:
    url = subprocess.run(["bash", str(SCRIPT), "urls"], env=GALERA_ENV, capture_output=True,
                         text=True, check=True).stdout.strip()
    return url.rsplit("/", 1)[0]


def deploy(server: str, orders: int, name: str, procs: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "BENCH_DB_SERVER": server}
        load0 = os.getloadavg()[0]
        subprocess.run([sys.executable, str(ROOT / "bench" / "bench_deploy.py"), "--orders",
                        str(orders), "--name", name, "--workers-procs", str(procs),
                        "--concurrency", str(threads), "--statements", "--json", out.name],
                       cwd=ROOT, env=env, check=True, stdout=sys.stderr)
        fig = json.loads(Path(out.name).read_text())[0]
        fig["load"] = (load0, os.getloadavg()[0])
        return fig


# --- micro: what one step's commit costs ------------------------------------------------------

def _connect(server: str, db: str):
    from pvekvm.dburl import parse_url
    from pvekvm.galera import connect_writer

    target = parse_url(f"{server}/{db}")
    return connect_writer(target, database=db, autocommit=False)


def _setup(server: str, db: str) -> None:
    from pvekvm.dburl import parse_url
    from pvekvm.galera import connect_writer

    conn = connect_writer(parse_url(f"{server}/{db}"), autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
        cur.execute(f"USE `{db}`")
        cur.execute(f"CREATE TABLE IF NOT EXISTS `{db}`.op (id INT PRIMARY KEY, version INT, "
                    "state VARCHAR(40)) ENGINE=InnoDB")
        cur.execute(f"CREATE TABLE IF NOT EXISTS `{db}`.run (id BIGINT AUTO_INCREMENT PRIMARY "
                    "KEY, op INT, label VARCHAR(40), message VARCHAR(255)) ENGINE=InnoDB")
        cur.execute(f"TRUNCATE `{db}`.run")
        cur.execute(f"INSERT IGNORE INTO `{db}`.op SELECT seq, 0, 'x' FROM seq_1_to_64")
    conn.close()


def _step_commit(cur, conn, op: int) -> None:
    """What the engine commits per step: lock the row, record the run, CAS the row."""
    cur.execute("BEGIN")
    cur.execute("SELECT * FROM op WHERE id = %s FOR UPDATE NOWAIT", (op,))
    cur.execute("INSERT INTO run (op, label, message) VALUES (%s, 'clone', 'done in 12 ms')",
                (op,))
    cur.execute("UPDATE op SET version = version + 1, state = 'next' WHERE id = %s", (op,))
    conn.commit()


def micro(server: str, db: str, n: int = 400) -> dict:
    _setup(server, db)
    conn = _connect(server, db)
    cur = conn.cursor()
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        _step_commit(cur, conn, 1 + i % 64)
        lat.append(time.perf_counter() - t0)
    reads: dict[int, list[float]] = {}
    for wait in (0, 1):
        cur.execute(f"SET SESSION wsrep_sync_wait = {wait}")
        reads[wait] = []
        for i in range(n):
            t0 = time.perf_counter()
            cur.execute("SELECT state FROM op WHERE id = %s", (1 + i % 64,))
            cur.fetchall()
            conn.commit()
            reads[wait].append(time.perf_counter() - t0)
    conn.close()
    # 8 writers at once, each on its own rows: commits per second
    done = []
    stop = time.monotonic() + 5.0

    def writer(k: int) -> None:
        c = _connect(server, db)
        cu = c.cursor()
        count = 0
        while time.monotonic() < stop:
            _step_commit(cu, c, 1 + k * 8 + count % 8)
            count += 1
        done.append(count)
        c.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(done) / (time.monotonic() - t0)
    return {"commit_ms": statistics.median(lat) * 1000,
            "commit_p95_ms": sorted(lat)[int(0.95 * n)] * 1000,
            "read_ms": statistics.median(reads[0]) * 1000,
            "read_sync_ms": statistics.median(reads[1]) * 1000,
            "commits_per_s_8": rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers-procs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--name", default="pvekvm_galera_bench")
    ap.add_argument("--micro-only", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    subprocess.run(["bash", str(SCRIPT), "start"], env=GALERA_ENV, check=True)
    sides = {"single": SINGLE, "galera": galera_server()}
    rows = []
    if not args.micro_only:
        for r in range(1, args.rounds + 1):
            for side, server in sides.items():
                fig = deploy(server, args.orders, args.name, args.workers_procs,
                             args.concurrency)
                rows.append((side, r, fig))
                print(f"{side} r{r}: wall {fig['wall_s']:.1f} s, worker CPU/step "
                      f"{fig['cpu_per_step_ms']:.1f} ms, first/p50 ready "
                      f"{fig['first_ready_s']:.1f}/{fig['p50_ready_s']:.1f} s, load "
                      f"{fig['load'][0]:.1f} -> {fig['load'][1]:.1f}", flush=True)
        walls = {s: [f["wall_s"] for side, _, f in rows if side == s] for s in sides}
        ratio = statistics.mean(walls["galera"]) / statistics.mean(walls["single"])
        print(f"wall galera / single: {ratio:.2f} (single {walls['single']}, galera "
              f"{walls['galera']})")
    for side, server in sides.items():
        m = micro(server, f"{args.name}_micro")
        print(f"{side}: step commit p50 {m['commit_ms']:.2f} ms (p95 {m['commit_p95_ms']:.2f}), "
              f"point read {m['read_ms']:.2f} ms, with wsrep_sync_wait=1 "
              f"{m['read_sync_ms']:.2f} ms, 8 writers {m['commits_per_s_8']:.0f} commits/s; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
