"""Webhook delivery benchmark: N services x M events to one loopback receiver.

    .venv/bin/python bench/bench_webhooks.py [--services 50] [--events 20] [--threads 1,4,8]

Set-up: a fresh ``pvekvm_webhooks_bench`` database (schema.sql), one ``[[webhooks]]`` endpoint
(a ThreadingHTTPServer on 127.0.0.1 that verifies every signature with ``standardwebhooks``
and answers 204), the events written through ``workers.outbox.record`` (one commit each) before
the deliverer starts. Per thread count it prints the wall time from the deliverer's start to the
last acknowledgement, deliveries per second, and ``uptime`` (everything shares the machine's
cores). A service's events go one after another (in order), so parallelism is across services.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pvekvm import db as dbmod
from pvekvm.webhooks.config import EndpointSetting
from pvekvm.webhooks.signing import new_secret
from workers import webhooks
from workers.testing.webhook_receiver import Receiver
from workers.testing.webhooks import FAST, emit, make_settings

DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
DATABASE_URL = f"{DB_SERVER}/pvekvm_webhooks_bench"


def run(services: int, events: int, threads: int, tmp: Path) -> float:
    db = dbmod.bind(DATABASE_URL)
    dbmod.reset_data(db)
    secret = new_secret()
    with Receiver(secret) as receiver:
        settings = make_settings(tmp, DATABASE_URL, "amqp://unused/", endpoints=(
            EndpointSetting("bench", receiver.url, (secret,)),), delivery=FAST)
        webhooks.store.sync_settings(settings.secret_key_file, settings.webhooks.endpoints)
        for sid in range(1, services + 1):
            emit(sid, events)
        total = services * events
        started = time.perf_counter()
        with webhooks.Deliverer(settings, threads=threads):
            while len(receiver.acked_ids()) < total:
                time.sleep(0.01)
            took = time.perf_counter() - started
        assert all(r.verified for r in receiver.received)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--threads", default="1,4,8")
    args = ap.parse_args()
    dbmod.create_database(DATABASE_URL)
    dbmod.apply_schema(dbmod.bind(DATABASE_URL))
    total = args.services * args.events
    print(f"{total} events ({args.services} services x {args.events})")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (int(t) for t in args.threads.split(",")):
            took = run(args.services, args.events, threads, Path(tmp))
            print(f"threads {threads:>2}: {took:6.2f} s, {total / took:7.1f} deliveries/s")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
