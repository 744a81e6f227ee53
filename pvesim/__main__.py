"""Command line entry point: ``python -m pvesim``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .faults import Faults
from .limits import Limits
from .server import Simulator

EPILOG = """\
connection file (JSON): base_url, host, port, nodes, user, password (ticket auth), token_id,
token_name, token_secret (API token), ca_bundle (CA to verify TLS), control_url, templates
{name: {vmid, node, storage}} (the original of each), template_copies [{name, vmid, node,
storage}] (originals and replicas), storages, fingerprint.

faults file (JSON, all optional): {"error_rate": 0.1, "error_status": 500, "latency_ms": 20,
"task_error_rate": 0.05, "lock_timeout_rate": 0.05, "status_400_after_dispatch": 500,
"down_nodes": ["pve3"], "apply_to_ticket": false, "seed": 1}. Change at runtime with
PUT /_sim/faults (JSON body); POST /_sim/reset clears faults ({"state": true} also resets VMs);
GET /_sim/vms dumps the VM state.

every node's API: --per-node-api serves one listener per node (ports --port, --port+1, ...; 0:
free ports), all on one shared state; the connection file lists them as "endpoints" (and
"node_endpoints"). PUT /_sim/api/NODE {"up": false} takes a node's API down (connections
refused and cut; the node runs on and other nodes still proxy to it), {"up": true} brings it
back. Two clusters at once: two pvesim processes with two --state-dir (and ports).

limits (pvesim/limits.py, after pveproxy/pvedaemon): pveproxy and pvedaemon run 3 workers per
node, a proxied request waits 30 s then answers 596, the VM config lock waits 10 s then
"can't lock file '/var/lock/qemu-server/lock-VMID.conf' - got timeout"; a handler takes
--api-time-ms in its worker (default 0: the limits are in place but rarely met). GET/PUT
/_sim/limits reads/changes them (GET adds counters: proxy_timeouts, lock_timeouts, late_runs);
POST /_sim/vms/VMID/hold-lock {"seconds": 5} holds a VM's config lock (another actor).
"""


def _settings_connection_file() -> tuple[Path | None, str]:
    """The connection file pvekvm's settings name, so workers find this simulator."""
    try:
        from pvekvm.config import ConfigError, connection_file_setting
    except ImportError:  # pvesim installed without pvekvm
        return None, ""
    try:
        found = connection_file_setting()
    except ConfigError as exc:
        print(f"pvesim: not writing a connection file: {exc}", file=sys.stderr)
        return None, ""
    return (Path(found[0]), found[1]) if found else (None, "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvesim", description=(
        "Proxmox VE 8.4 API simulator: HTTPS /api2/json with tickets, API tokens, "
        "async tasks, locks and fault injection."), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8006, help="listen port; 0 picks a free one")
    ap.add_argument("--state-dir", type=Path, default=Path("./pvesim-state"),
                    help="CA/certs, secrets and state JSON (saved on shutdown, reloaded)")
    ap.add_argument("--task-time-scale", type=float, default=1.0,
                    help="task duration factor: 1.0 realistic (clone 20s, migrate 30s...), "
                    "0 finishes tasks almost immediately (still asynchronous)")
    ap.add_argument("--faults", type=Path, help="JSON file with fault settings (see below)")
    ap.add_argument("--connection-file", type=Path,
                    help="write connection JSON here (default: the file pvekvm's settings "
                    "name: $PVE_CONNECTION_FILE, else [proxmox] connection_file of "
                    "$PVEKVM_CONFIG or config/pvekvm.toml)")
    ap.add_argument("--nodes", default="pve1,pve2,pve3", help="comma separated node names")
    ap.add_argument("--clone-storage-limit", type=int, default=2,
                    help="parallel full clones per node+storage before lock timeouts")
    ap.add_argument("--template-replicas", action="store_true",
                    help="seed a copy of each local-storage template on every other node "
                    "(VMID + 10 per node index: 9010/9011 on pve2, 9020/9021 on pve3)")
    ap.add_argument("--per-node-api", action="store_true",
                    help="one API listener per node (ports --port, --port+1, ...)")
    lim = Limits()
    ap.add_argument("--proxy-workers", type=int, default=lim.proxy_workers,
                    help="pveproxy workers per node (0: no limit; default 3)")
    ap.add_argument("--daemon-workers", type=int, default=lim.daemon_workers,
                    help="pvedaemon workers per node (0: no limit; default 3)")
    ap.add_argument("--proxy-timeout", type=float, default=lim.proxy_timeout_s,
                    help="seconds a proxied request waits before 596 (default 30)")
    ap.add_argument("--lock-wait", type=float, default=lim.lock_wait_s,
                    help="seconds the VM config lock is waited for (default 10)")
    ap.add_argument("--api-time-ms", type=float, default=lim.api_time_ms,
                    help="time a handler holds its worker (default 0)")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = ap.parse_args(argv)

    faults = Faults.from_dict(json.loads(args.faults.read_text())) if args.faults else Faults()
    sim = Simulator(host=args.host, port=args.port, state_dir=args.state_dir,
                    task_time_scale=args.task_time_scale, faults=faults,
                    nodes=[n for n in args.nodes.split(",") if n],
                    clone_storage_limit=args.clone_storage_limit, verbose=args.verbose,
                    template_replicas=args.template_replicas, per_node_api=args.per_node_api,
                    limits=Limits.from_dict({
                        "proxy_workers": args.proxy_workers,
                        "daemon_workers": args.daemon_workers,
                        "proxy_timeout_s": args.proxy_timeout, "lock_wait_s": args.lock_wait,
                        "api_time_ms": args.api_time_ms}))
    conn = sim.connection()
    target, named_by = args.connection_file, "--connection-file"
    if target is None:
        target, named_by = _settings_connection_file()
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(conn, indent=1))
        tmp.chmod(0o600)
        tmp.replace(target)
        print(f"pvesim wrote {target} (named by {named_by})", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim.start()
    print(f"pvesim listening on {conn['base_url']}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    sim.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
