"""Traffic accounting benchmark: one ``workers.traffic.run_once`` over N running VMs in pvesim.

    .venv/bin/python bench/bench_traffic.py [--vms 1000] [--runs 2]

Set-up: pvesim as its own process (``python -m pvesim``, tasks at once), N VMs cloned from
template 9000 on pve1 and started, a fresh ``pvekvm_t14_bench`` database
(schema.sql + config/catalog.toml) with one ``ready`` service per VM, and a private RabbitMQ
namespace (deleted afterwards) for the ``usage.reported`` events. Run 1 meets every VM for the
first time (70 rows each: cursor created, 2 hours touched); later runs add the rows of the last
minute or so. Prints wall time per run, the share spent in Proxmox HTTP calls, rows and events,
and ``uptime`` (everything shares the machine's cores).
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
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_deploy import pvesim_process

from pvekvm import db as dbmod
from pvekvm import messaging, secrets
from pvekvm.config import ProxmoxSettings, Settings, SmtpSettings
from pvekvm.models import Product, Service
from pvekvm.proxmox import Proxmox
from workers import traffic
from workers.testing.harness import load_catalog

DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
DATABASE_URL = f"{DB_SERVER}/pvekvm_t14_bench"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
FIRST_VMID, FIRST_SID = 20000, 800000


def wait_task(px: Proxmox, node: str, upid: str) -> None:
    deadline = time.monotonic() + 60
    while px.task_status(node, upid).running:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {upid} did not finish")
        time.sleep(0.01)


def prepare(workdir: Path, conn: dict, vms: int) -> Proxmox:
    settings = Settings(database_url=DATABASE_URL, amqp_url=AMQP_URL, namespace="unused",
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
    product = Product.get(Product.name == "vps-small")
    started = time.perf_counter()
    rows = []
    for i in range(vms):
        vmid, node = FIRST_VMID + i, "pve1"  # the template's disks are local to pve1
        wait_task(px, node, px.post(f"nodes/{node}/qemu/9000/clone", newid=vmid,
                                    name=f"bench-{vmid}"))
        wait_task(px, node, px.post(f"nodes/{node}/qemu/{vmid}/status/start"))
        rows.append({"id": FIRST_SID + i, "client_id": 1, "product_id": product.id,
                     "template_id": product.template_id, "email": "bench@example.com",
                     "hostname": f"bench-{vmid}.example.com", "status": "ready",
                     "vmid": vmid, "node": node, "username": "debian"})
    for chunk in range(0, len(rows), 500):
        Service.insert_many(rows[chunk:chunk + 500]).execute()
    print(f"set-up: {vms} VMs cloned and started in "
          f"{time.perf_counter() - started:.1f}s", flush=True)
    return px


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    topo = messaging.Topology(f"pvekvm_t14_bench-{uuid.uuid4().hex[:8]}")
    messaging.declare(AMQP_URL, topo)
    try:
        with tempfile.TemporaryDirectory() as tmp, pvesim_process(Path(tmp), 0) as conn:
            px = prepare(Path(tmp), conn, args.vms)
            pub = messaging.Publisher(AMQP_URL, topo, app_id="bench-traffic")
            try:
                for n in range(1, args.runs + 1):
                    Proxmox._timing.seconds = 0.0
                    t0 = time.perf_counter()
                    result = traffic.run_once(px, pub)
                    wall = time.perf_counter() - t0
                    pve_s = Proxmox.time_spent()
                    print(f"run {n}: {wall:.2f}s wall for {result.services} VMs "
                          f"({1000 * wall / max(result.services, 1):.2f} ms/VM; Proxmox HTTP "
                          f"{pve_s:.2f}s = {100 * pve_s / wall:.0f}%), rows {result.rows}, "
                          f"usage.reported {result.events}, errors {len(result.errors)}",
                          flush=True)
            finally:
                pub.close()
    finally:
        messaging.delete_topology(AMQP_URL, topo)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
