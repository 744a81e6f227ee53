"""``python -m pvekvm adopt`` and ``drift``: their arguments and output (the logic is in
workers/adopt.py and workers/drift.py, imported when the command runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pvekvm.limits import MAX_SERVICE_ID

EXIT_FAILED = 1


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0 or int(text) > MAX_SERVICE_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive id")
    return int(text)


def add_commands(sub) -> None:
    p = sub.add_parser("adopt", help="link VMs made outside pvekvm to billing services",
                       description="Adopt one VM (--vmid ...) or every line of a mapping "
                       "file (--from FILE: CSV with a header, or a JSON list of objects; "
                       "fields vmid, service_id, client_id, product, node, hostname, email, "
                       "template, location).")
    p.add_argument("--from", dest="mapping", type=Path, help="CSV or JSON mapping file")
    p.add_argument("--vmid", type=_positive)
    p.add_argument("--service-id", type=_positive)
    p.add_argument("--client-id", type=_positive)
    p.add_argument("--product")
    p.add_argument("--node")
    p.add_argument("--hostname")
    p.add_argument("--email")
    p.add_argument("--template", help="the OS it runs (default: a linked clone's template, "
                   "else the product's)")
    p.add_argument("--cluster", help="the cluster the VMs are in (default: the first)")
    p = sub.add_parser("drift", help="VM configs against their packages and records")
    p.add_argument("service_id", nargs="?", type=_positive)
    p.add_argument("--fix", action="store_true",
                   help="apply the package to each differing VM (change_package)")


def cmd_adopt(settings, args) -> int:
    from pvekvm.proxmox import client
    from workers import adopt

    conn = settings.proxmox_of(args.cluster)
    if conn is None:
        print(f"adopt: --cluster {args.cluster}: not a cluster of the settings (known: "
              f"{', '.join(settings.cluster_names)})", file=sys.stderr)
        return 2
    pve = client(conn)
    if args.mapping is not None:
        try:
            results = adopt.adopt_file(settings, pve, args.mapping, args.cluster)
        except (OSError, ValueError) as exc:
            print(f"adopt: {exc}", file=sys.stderr)
            return 2
    else:
        missing = [f"--{n.replace('_', '-')}" for n in ("vmid", "service_id", "client_id",
                                                          "product") if getattr(args, n) is None]
        if missing:
            print(f"adopt: give --from FILE, or {', '.join(missing)}", file=sys.stderr)
            return 2
        m = adopt.Mapping(args.vmid, args.service_id, args.client_id, args.product,
                          args.node, args.hostname, args.email, args.template)
        results = [adopt.adopt(settings, pve, m, cluster=args.cluster)]
    for r in results:
        print(r.line())
    print(adopt.summary(results))
    return EXIT_FAILED if any(not r.ok for r in results) else 0


def cmd_drift(settings, args) -> int:
    from pvekvm import messaging, preflight
    from pvekvm.proxmox import client
    from workers import drift

    rows = drift.services(args.service_id)
    if args.service_id is not None and not rows:
        print(f"no service {args.service_id}")
        return EXIT_FAILED
    if args.fix:
        preflight.require(settings, ("broker",), "python -m pvekvm drift --fix")
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace)) \
        if args.fix else None
    left = 0
    try:
        reports = []
        for service in rows:
            conn = settings.proxmox_of(service.cluster)  # each VM in its service's cluster
            if conn is None:
                print(f"sid:{service.id}: cluster {service.cluster!r} is not in the settings")
                left += 1
                continue
            report = drift.compare(settings, client(conn), service)
            if report.differences and pub is not None:
                report.fixed = drift.fix(settings, report, pub)
            if report.differences and not (report.fixed or "").startswith("change_package"):
                left += 1
            reports.append(report)
            print(report.line(), flush=True)
    finally:
        if pub is not None:
            pub.close()
    differ = sum(1 for r in reports if r.differences)
    skipped = sum(1 for r in reports if r.skipped)
    print(f"{len(reports)} service(s) compared: {differ} differ, {skipped} not compared"
          + (f", {differ - left} handed to change_package" if args.fix else ""))
    return EXIT_FAILED if left else 0
