"""``python -m workers --pools all --concurrency 4``: one worker process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from pvekvm import logs, preflight
from pvekvm.db import bind
from workers.consumer import WorkerProcess, all_pools

#: pools whose steps never call Proxmox; every other pool needs it, intake too (an order is
#: accepted only where it can run)
NO_PROXMOX = {"dns", "mail"}


def needs(pools: list[str]) -> list[str]:
    """The dependencies a worker serving ``pools`` checks at start."""
    out = ["database", "broker", "secret-key"]
    if set(pools) - NO_PROXMOX:
        out.append("proxmox")
    if "mail" in pools:
        out.append("smtp")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    ap.add_argument("--pools", default="all",
                    help=f"comma-separated pools to consume, or 'all' ({','.join(all_pools())})")
    ap.add_argument("--concurrency", type=int, default=4, help="messages handled in parallel")
    ap.add_argument("--config", help="TOML settings file (default: $PVEKVM_CONFIG)")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--log-format", choices=("text", "json"),
                    help="text (the step lines) or json (one object per line); default: settings")
    ap.add_argument("--metrics-port", type=int,
                    help="port of /metrics (default: settings' observability.port; 0 = any)")
    args = ap.parse_args(argv)
    pools = all_pools() if args.pools == "all" else [p.strip() for p in args.pools.split(",")]
    unknown = set(pools) - set(all_pools())
    if unknown:
        ap.error(f"unknown pools: {', '.join(sorted(unknown))}")
    settings = preflight.settings_or_exit(args.config, "python -m workers")
    logs.setup(args.log_level, args.log_format or settings.metrics.log_format)
    preflight.require(settings, needs(pools), "python -m workers")
    bind(settings.database_url, read_timeout_s=settings.database_read_timeout_s)
    proc = WorkerProcess(settings, pools, max(1, args.concurrency),
                         metrics_port=args.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: proc.stop.set())
    signal.signal(signal.SIGINT, lambda *_: proc.stop.set())
    proc.start()
    logging.getLogger("pvekvm.worker").info(
        "serving pools %s with %d threads", ",".join(pools), len(proc.threads))
    proc.stop.wait()
    proc.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
