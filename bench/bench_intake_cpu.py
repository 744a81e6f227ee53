"""Intake's CPU per order event: what validating an event costs, alone and inside intake.

    .venv/bin/python bench/bench_intake_cpu.py [--rounds 2000] [--orders 400] [--no-db]

1. *validation*: ``parse_event`` (bounded JSON decode + the event's schema) over one valid event
   of every type (as billing sends them, optional fields filled) and over a set of refused
   ones (one bad field each, unknown fields, wrong types), CPU µs per event (``process_time``,
   best of 5 runs of ``--rounds`` events each).
2. *intake*: ``workers.intake.handle_order`` end to end against MariaDB (a fresh
   ``pvekvm_bench_intake`` database, the shipped catalog): ``--orders`` creates, then a
   snapshot, a power and a suspend order for each service (queued behind the deploy: nothing
   runs them), then the same events again (quiet duplicates); CPU ms per event of this process
   (MariaDB's own CPU is not counted) and wall ms per event.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from producers.events import InvalidEvent, parse_event

DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
ENVELOPE = {"version": 1, "idempotency_key": "whmcs:call-1", "service_id": 5546,
            "occurred_at": "2026-04-10T03:49:18+00:00"}
VALID: dict[str, dict[str, Any]] = {
    "create": {"client_id": 17, "product": "vps-small", "email": "client@example.com",
               "hostname": "web1.example.com", "template": "debian-12", "ipv6": True,
               "language": "de"},
    "change_package": {"product": "vps-large"}, "reinstall": {"template": "ubuntu-24.04"},
    "suspend": {}, "unsuspend": {}, "terminate": {}, "reset_password": {}, "iso_unmount": {},
    "snapshot_create": {"name": "before_upgrade", "description": "before apt upgrade"},
    "snapshot_delete": {"name": "before_upgrade"},
    "snapshot_rollback": {"name": "before_upgrade"},
    "backup_create": {"note": "manual"}, "backup_delete": {"backup_id": 9},
    "backup_restore": {"backup_id": 9}, "backup_schedule": {"days": ["mon", "thu"]},
    "iso_mount": {"iso": "debian-12.5.0-amd64-netinst.iso"}, "power": {"action": "reboot"},
    "rdns_set": {"address": "192.0.2.10", "hostname": "mail.client.example"},
    "rdns_reset": {"address": "2001:db8::10"},
}
CREATE = {**ENVELOPE, "type": "create", **VALID["create"]}
REFUSED: list[dict[str, Any]] = [
    {**CREATE, "service_id": "5546"}, {**CREATE, "client_id": True}, {**CREATE, "product": "VPS"},
    {**CREATE, "email": "a@b"}, {**CREATE, "hostname": "localhost"}, {**CREATE, "extra": 1},
    {**CREATE, "language": "klingon"}, {**CREATE, "occurred_at": "2026-04-10T03:49:18"},
    {**CREATE, "type": "nope"}, {**CREATE, "version": 2},
    {k: v for k, v in CREATE.items() if k != "email"},
    {**ENVELOPE, "type": "snapshot_create", "name": "current"},
    {**ENVELOPE, "type": "power", "action": "dance"},
    {**ENVELOPE, "type": "backup_schedule", "days": ["mon", "mon"]},
    {**ENVELOPE, "type": "rdns_set", "address": "300.1.1.1", "hostname": "a.example"},
]


def _bodies(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def _cpu_us_per_event(bodies: list[bytes], rounds: int, refused: bool) -> float:
    def once() -> None:
        for raw in bodies:
            try:
                parse_event(raw)
            except InvalidEvent:
                if not refused:
                    raise
            else:
                if refused:
                    raise AssertionError(f"accepted: {raw[:80]!r}")

    once()
    n = max(1, rounds // len(bodies))
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            once()
        best = min(best, time.process_time() - start)
    return best / (n * len(bodies)) * 1e6


def validation(rounds: int) -> None:
    valid = _bodies([{**ENVELOPE, "type": t, **f} for t, f in VALID.items()])
    print(f"validation, CPU per event (best of 5 x {rounds}):")
    print(f"  valid, one of each of {len(valid)} types: "
          f"{_cpu_us_per_event(valid, rounds, False):7.1f} us")
    print(f"  create alone:                       "
          f"{_cpu_us_per_event(valid[:1], rounds, False):7.1f} us")
    print(f"  suspend alone:                      "
          f"{_cpu_us_per_event(_bodies([{**ENVELOPE, 'type': 'suspend'}]), rounds, False):7.1f}"
          " us")
    print(f"  refused ({len(REFUSED)} kinds of fault):          "
          f"{_cpu_us_per_event(_bodies(REFUSED), rounds, True):7.1f} us")


def intake(orders: int) -> None:
    from pvekvm import catalog, secrets
    from pvekvm import db as dbmod
    from workers.intake import handle_order

    url = f"{DB_SERVER}/pvekvm_bench_intake"
    dbmod.create_database(url)
    db = dbmod.bind(url)
    dbmod.apply_schema(db)
    dbmod.reset_data(db)
    with tempfile.TemporaryDirectory() as tmp:
        key = str(Path(tmp) / "secret.key")
        secrets.create_key(key)
        catalog.load_file(ROOT / "config" / "catalog.toml", key)

    def event(sid: int, etype: str, **fields: Any) -> bytes:
        return json.dumps({"version": 1, "type": etype, "service_id": sid,
                           "idempotency_key": f"bench-{etype}-{sid}",
                           "occurred_at": "2026-04-10T03:49:18+00:00", **fields}).encode()

    sids = range(100_001, 100_001 + orders)
    creates = [event(s, "create", client_id=7, product="vps-small", email="c@example.com",
                     hostname=f"vm{s}.bench.example") for s in sids]
    others = [b for s in sids for b in (
        event(s, "snapshot_create", name="nightly"), event(s, "power", action="reboot"),
        event(s, "suspend"))]

    def run(label: str, bodies: list[bytes], check: Callable[[Any], bool]) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        for raw in bodies:
            out = handle_order(raw)
            if not check(out):
                raise AssertionError(f"{label}: {out.dead_reason} for {raw[:80]!r}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"  {label:34s} {len(bodies):5d} events  CPU {cpu / len(bodies) * 1e3:6.2f} ms"
              f"  wall {wall / len(bodies) * 1e3:6.2f} ms per event")

    print(f"intake (handle_order, MariaDB {url.rsplit('/', 1)[0]}):")
    run("create (first time)", creates, lambda o: o.dead_reason is None)
    run("snapshot/power/suspend (queued)", others, lambda o: o.dead_reason is None)
    run("the same again (duplicates)", creates + others, lambda o: o.dead_reason is None)
    run("refused at validation", _bodies(REFUSED) * 20, lambda o: o.dead_reason is not None)
    db.execute_sql("DROP DATABASE pvekvm_bench_intake")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument("--no-db", action="store_true", help="validation only")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    validation(args.rounds)
    if not args.no_db:
        intake(args.orders)


if __name__ == "__main__":
    main()
