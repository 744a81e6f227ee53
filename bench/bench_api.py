"""Service API benchmark: ``GET /v1/services/{id}`` (database rows plus a live Proxmox
``status/current`` call) requests/s and p50/p95 latency with 1 and 4 API processes
(``python -m pvekvm api --workers N``), plus a database-only endpoint for comparison.

    .venv/bin/python bench/bench_api.py [--workers 1 4] [--clients 8] [--seconds 10]

Set-up: a fresh ``pvekvm_t10_bench`` database (schema.sql + config/catalog.toml), pvesim as its
own process (``python -m pvesim``) with one running VM, one ``ready`` service row pointing at it,
and a config file with a billing token. The load comes from ``--clients`` threads in this
process, each with its own keep-alive HTTP session, for ``--seconds`` per figure. Everything
shares the machine's cores (client, API processes, MariaDB, pvesim): print ``uptime`` with the
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import requests
from bench_deploy import pct, pvesim_process, stop_process

from pvekvm import db as dbmod
from pvekvm import secrets
from pvekvm.apps.api.auth import hash_token, new_token
from pvekvm.config import ProxmoxSettings, Settings, SmtpSettings
from pvekvm.models import Product, Service
from pvekvm.proxmox import Proxmox
from workers.testing.harness import load_catalog, write_config

DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
DATABASE_URL = f"{DB_SERVER}/pvekvm_t10_bench"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SID, VMID = 900001, 4242


def prepare(workdir: Path, conn: dict, token: str) -> Path:
    """Database with one ready service whose VM runs in pvesim; the API's config file."""
    settings = Settings(database_url=DATABASE_URL, amqp_url=AMQP_URL, namespace="pvekvm_t10_bench",
                        proxmox=ProxmoxSettings.from_connection(conn), smtp=SmtpSettings(),
                        secret_key_file=str(workdir / "secret.key"))
    secrets.create_key(settings.secret_key_file)
    dbmod.create_database(DATABASE_URL)
    db = dbmod.bind(DATABASE_URL)
    dbmod.apply_schema(db)
    dbmod.reset_data(db)
    load_catalog(settings)
    assert settings.proxmox is not None
    px = Proxmox(settings.proxmox)
    upid = px.post("nodes/pve1/qemu/9000/clone", newid=VMID, name="bench-api")
    wait_task(px, upid)
    wait_task(px, px.post(f"nodes/pve1/qemu/{VMID}/status/start"))
    product = Product.get(Product.name == "vps-small")
    Service.insert(id=SID, client_id=1, product_id=product.id, template_id=product.template_id,
                   email="bench@example.com", hostname="bench.example.com", status="ready",
                   vmid=VMID, node="pve1", username="debian",
                   password_enc=secrets.encrypt(settings.secret_key_file, "pw")).execute()
    config = write_config(settings, workdir / "pvekvm.toml")
    with config.open("a") as fh:
        fh.write(f'[api]\n[api.tokens]\nbench = "{hash_token(token)}"\n')
    return config


def wait_task(px: Proxmox, upid: str) -> None:
    deadline = time.monotonic() + 30
    while px.task_status("pve1", upid).running:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {upid} did not finish")
        time.sleep(0.05)


@contextlib.contextmanager
def api_process(config: Path, workers: int, workdir: Path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL")}
    log = open(workdir / f"api-{workers}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvekvm", "--config", str(config), "api", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/openapi.json", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API did not start; see {workdir}/api-{workers}.log")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        stop_process(proc, 20)
        log.close()


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its child processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def load(url: str, token: str, clients: int, seconds: float) -> tuple[int, int, list[float]]:
    """``clients`` threads hammer ``url`` for ``seconds``: (ok, errors, latencies in ms)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            r = session.get(url, timeout=30)
            if r.status_code == 200:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), errors[0], latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="pvekvm_t10_bench_api_") as tmp:
        workdir = Path(tmp)
        with pvesim_process(workdir, 0) as conn:
            config = prepare(workdir, conn, token)
            print(f"load before: {os.getloadavg()[0]:.2f} (1-min), clients={args.clients}, "
                  f"{args.seconds:.0f} s per figure")
            print(f"{'processes':>9} {'endpoint':<28} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
                  f"{'API CPU ms/req':>14} {'errors':>6}")
            for workers in args.workers:
                with api_process(config, workers, workdir) as (url, pid):
                    load(f"{url}/v1/services/{SID}", token, args.clients, 1.0)  # warm up
                    for label, path in (("status (DB + PVE live)", f"/v1/services/{SID}"),
                                        ("snapshots (DB only)", f"/v1/services/{SID}/snapshots")):
                        cpu0 = tree_cpu_s(pid)
                        ok, bad, lat = load(url + path, token, args.clients, args.seconds)
                        cpu_ms = (tree_cpu_s(pid) - cpu0) * 1000 / max(ok, 1)
                        print(f"{workers:>9} {label:<28} {ok / args.seconds:>7.0f} "
                              f"{pct(lat, 50):>7.1f} {pct(lat, 95):>7.1f} {cpu_ms:>14.1f} "
                              f"{bad:>6}", flush=True)
            print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
