"""Operator commands: ``python -m pvekvm <command>``.

  init-db                  apply schema.sql to the configured database
  load-catalog FILE        load templates, IP pools, products, DNS zones (TOML)
  history SERVICE_ID       print the service's operations as the manual's --- Deploy --- blocks
  resume SID|op:N          restart a paused operation from the state it waits at
  cancel SID|op:N          abandon a paused operation (service freed, VM state printed)
  dead-letters [--limit N] list refused messages with their reasons
  status                   operations by kind and status, services by status, queue depths
  pools                    IP pools: addresses free / held
  isos STORAGE [--node N]  ISO images on a storage, grouped as the client area shows them
  api [--host H] [--port P] [--workers N]   the HTTP service API (see pvekvm.api)
"""

from __future__ import annotations

import argparse
import sys

from pvekvm import catalog, messaging
from pvekvm.config import load_settings
from pvekvm.db import apply_schema, bind


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvekvm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init-db")
    p = sub.add_parser("load-catalog")
    p.add_argument("file")
    p = sub.add_parser("history")
    p.add_argument("service_id", type=int)
    for name in ("resume", "cancel"):
        p = sub.add_parser(name)
        p.add_argument("ref", help="a service id, or op:N for an operation id")
    p = sub.add_parser("dead-letters")
    p.add_argument("--limit", type=int, default=20)
    sub.add_parser("pools")
    sub.add_parser("status")
    p = sub.add_parser("isos")
    p.add_argument("storage")
    p.add_argument("--node", default=None)
    add_api_command(sub)
    args = ap.parse_args(argv)
    settings = load_settings(args.config)
    db = bind(settings.database_url)
    if args.cmd == "init-db":
        apply_schema(db)
        print("schema applied")
    elif args.cmd == "load-catalog":
        apply_schema(db)
        print(catalog.load_file(args.file, settings.secret_key_file))
    elif args.cmd == "history":
        from workers import admin

        print(admin.history(args.service_id))
    elif args.cmd in ("resume", "cancel"):
        from workers import admin

        print(getattr(admin, args.cmd)(settings, args.ref))
    elif args.cmd == "dead-letters":
        from pvekvm.models import DeadLetter

        rows = DeadLetter.select().order_by(DeadLetter.id.desc()).limit(args.limit)
        for r in rows:
            print(f"{r.created_at}  {r.source:<10} {r.reason}  {bytes(r.body)[:120]!r}")
    elif args.cmd == "pools":
        print(pool_usage())
    elif args.cmd == "status":
        print(engine_status(settings))
    elif args.cmd == "api":
        args.run(args)
    elif args.cmd == "isos":
        if settings.proxmox is None:
            ap.error("no Proxmox configured (PVE_CONNECTION_FILE or [proxmox])")
        print(list_isos(settings, args.storage, args.node))
    return 0


def add_api_command(sub) -> None:
    """``api``: serve the HTTP service API with uvicorn (stateless; run several behind a
    balancer or give ``--workers N``)."""
    p = sub.add_parser("api")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="info")

    def run(args) -> None:
        from pvekvm.api.app import serve

        serve(args.host, args.port, args.workers, args.config, args.log_level)

    p.set_defaults(run=run)


def engine_status(settings) -> str:
    """What an operator checks first: what runs, what waits, what is stuck, what is queued."""
    from peewee import fn

    from pvekvm.models import Operation, Service

    lines = ["operations:"]
    rows = (Operation.select(Operation.kind, Operation.status, fn.COUNT(Operation.id).alias("n"))
            .group_by(Operation.kind, Operation.status).order_by(Operation.kind))
    lines += [f"  {r.kind:<18} {r.status:<8} {r.n:>6}" for r in rows]
    paused = Operation.select().where(Operation.status == "paused").order_by(Operation.id)
    lines += [f"  paused: sid:{op.service_id} {op.kind} at ({op.state}) — {op.error}"
              for op in paused.limit(20)]
    lines.append("services:")
    rows = (Service.select(Service.status, fn.COUNT(Service.id).alias("n"))
            .group_by(Service.status).order_by(Service.status))
    lines += [f"  {r.status:<18} {r.n:>6}" for r in rows]
    lines.append("queues (messages ready):")
    topo = messaging.Topology(settings.namespace)
    conn = messaging.connect(settings.amqp_url)
    try:
        ch = conn.channel()
        for queue in topo.all_queues():
            try:
                depth = ch.queue_declare(queue, passive=True).method.message_count
            except Exception:  # noqa: BLE001 - not declared yet: no worker has started
                ch = conn.channel()
                depth = "-"
            lines.append(f"  {queue:<32} {depth:>6}")
    finally:
        conn.close()
    return "\n".join(lines)


def pool_usage() -> str:
    from peewee import fn

    from pvekvm.models import IpAddress, IpPool

    lines = [f"{'pool':<16} {'v':>1} {'network':<22} {'free':>6} {'held':>6}"]
    for pool in IpPool.select().order_by(IpPool.name):
        held = (IpAddress.select(fn.COUNT(IpAddress.id))
                .where((IpAddress.pool_id == pool.id) & IpAddress.service_id.is_null(False))
                .scalar())
        total = IpAddress.select().where(IpAddress.pool_id == pool.id).count()
        lines.append(f"{pool.name:<16} {pool.version:>1} {pool.network:<22} "
                     f"{total - held:>6} {held:>6}")
    return "\n".join(lines)


def list_isos(settings, storage: str, node: str | None) -> str:
    from pvekvm.proxmox import client
    from steps.lifecycle import iso_group

    pve = client(settings.proxmox)
    node = node or pve.get("nodes")[0]["node"]
    groups: dict[str, list[str]] = {}
    for item in pve.get(f"nodes/{node}/storage/{storage}/content", content="iso"):
        name = item["volid"].split("/", 1)[-1]
        groups.setdefault(iso_group(name), []).append(name)
    return "\n".join(f"{g}: {', '.join(sorted(n))}"
                     for g, n in sorted(groups.items(), key=lambda kv: (kv[0] == "OTHER", kv[0])))


if __name__ == "__main__":
    sys.exit(main())
