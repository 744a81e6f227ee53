"""Worker hosts benchmark: the same N orders deployed by 1, then 2 worker hosts, each a network
namespace (workers/testing/netns.py) running one ``python -m workers`` process with C threads that
reaches RabbitMQ, MariaDB, pvesim and SMTP only over its veth link. Prints wall time and
orders/min per host count. Needs root (``ip netns``) and socat.

    .venv/bin/python bench/bench_hosts.py [--orders 30] [--concurrency 4] [--hosts 1 2]
        [--task-time-scale 0.02]

Uses AMQP_URL (default the local broker, vhost /) and a database named
``<PVEKVM_TEST_NAME or pvekvm>_bench_hosts`` on the local MariaDB; pvesim runs in this process
with tasks at ``--task-time-scale`` of their real length.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from producers.api import OrderClient
from pvekvm import db as dbmod
from pvekvm import messaging
from pvesim.testing import running_simulator
from workers.testing import netns
from workers.testing.harness import (
    all_ready,
    load_catalog,
    make_settings,
    wait_until,
    write_config,
)
from workers.testing.netns import service_ports
from workers.testing.smtp_sink import SmtpSink

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
DB_NAME = f"{os.environ.get('PVEKVM_TEST_NAME', 'pvekvm')}_bench_hosts"
DATABASE_URL = f"{os.environ.get('BENCH_DB_SERVER', 'mysql://root@127.0.0.1:3306')}/{DB_NAME}"


def run(hosts: int, orders: int, concurrency: int, scale: float) -> float:
    """Seconds until ``orders`` deploys are ready with ``hosts`` worker hosts."""
    db = dbmod.bind(DATABASE_URL)
    dbmod.reset_data(db)
    topo = messaging.Topology(f"bench-{uuid.uuid4().hex[:8]}")
    messaging.declare(AMQP_URL, topo)
    with tempfile.TemporaryDirectory() as tmp, running_simulator(tmp, task_time_scale=scale) \
            as sim, SmtpSink() as sink:
        settings = make_settings(Path(tmp), AMQP_URL, DATABASE_URL, topo.namespace,
                                 sim.connection, sink.settings())
        load_catalog(settings)
        config = write_config(settings, Path(tmp) / "worker.toml")
        made = [netns.WorkerHost(i, service_ports(settings)).up() for i in range(1, hosts + 1)]
        try:
            for h in made:
                h.start_worker(config, concurrency=concurrency)
            sids = range(20000, 20000 + orders)
            t0 = time.monotonic()
            with OrderClient(AMQP_URL, topo.namespace) as client:
                for sid in sids:
                    client.create(service_id=sid, client_id=1, product="vps-small",
                                  email=f"b{sid}@example.com")
            wait_until(all_ready(sids), 900, f"{orders} orders ready", interval=0.25)
            return time.monotonic() - t0
        finally:
            for h in made:
                h.down()
            messaging.delete_topology(AMQP_URL, topo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--hosts", type=int, nargs="+", default=[1, 2])
    p.add_argument("--task-time-scale", type=float, default=0.02)
    args = p.parse_args()
    why = netns.unavailable()
    if why:
        sys.exit(f"cannot run: {why}")
    dbmod.create_database(DATABASE_URL)
    dbmod.apply_schema(dbmod.bind(DATABASE_URL))
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"{'hosts':>5} {'orders':>6} {'threads/host':>12} {'seconds':>8} {'orders/min':>10}")
    for n in args.hosts:
        secs = run(n, args.orders, args.concurrency, args.task_time_scale)
        print(f"{n:>5} {args.orders:>6} {args.concurrency:>12} {secs:>8.1f} "
              f"{args.orders / secs * 60:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
