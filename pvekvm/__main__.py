"""Operator commands: ``python -m pvekvm <command>``.

  init-db                  apply schema.sql to the configured database
  load-catalog FILE        load templates, IP pools, products, DNS zones (TOML)
  history SERVICE_ID       print the service's operations as the manual's --- Deploy --- blocks
  resume SERVICE_ID        restart a paused operation from the state it waits at
  dead-letters [--limit N] list refused messages with their reasons
"""

from __future__ import annotations

import argparse
import sys

from pvekvm import catalog, messaging, oplog
from pvekvm.config import load_settings
from pvekvm.db import apply_schema, bind


def resume(settings, service_id: int) -> str:
    from pvekvm.models import Operation, database
    from workers.engine import mark_published, new_nudge_id, nudge_for

    with database.atomic():
        op = (Operation.select().where((Operation.service_id == service_id)
                                       & (Operation.status == "paused")).for_update().first())
        if op is None:
            return f"service {service_id}: no paused operation"
        nudge = new_nudge_id()
        Operation.update(status="running", nudge_id=nudge, nudge_published=False, attempt=0,
                         error=None, version=Operation.version + 1).where(
            Operation.id == op.id).execute()
        op = Operation.get_by_id(op.id)
    n = nudge_for(op)
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        pub.publish_step(n.pool, n.payload(), n.nudge_id)
    finally:
        pub.close()
    mark_published(op.id, nudge)
    return f"service {service_id}: {op.kind} resumed at ({op.state})"


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
    p = sub.add_parser("resume")
    p.add_argument("service_id", type=int)
    p = sub.add_parser("dead-letters")
    p.add_argument("--limit", type=int, default=20)
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
        print(oplog.history(args.service_id))
    elif args.cmd == "resume":
        print(resume(settings, args.service_id))
    elif args.cmd == "dead-letters":
        from pvekvm.models import DeadLetter

        rows = DeadLetter.select().order_by(DeadLetter.id.desc()).limit(args.limit)
        for r in rows:
            print(f"{r.created_at}  {r.source:<10} {r.reason}  {bytes(r.body)[:120]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
