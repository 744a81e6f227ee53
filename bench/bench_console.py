"""Console proxy benchmark (issue 27): N concurrent console sessions through ONE proxy process
(``python -m pvekvm console-proxy``), each typing a steady stream of keys into its own VM's
screen in pvesim; every key comes back as a screen update (a 640x18 raw rectangle, ~46 KB).

    .venv/bin/python bench/bench_console.py [--sessions 200] [--rate 2] [--seconds 20]

Figures: the proxy's CPU per session (ms of CPU per second of session, from /proc), frames
relayed per second, and the latency of a frame (key sent -> its update received), through the
proxy and straight to pvesim's vncwebsocket (the same client doing VNC auth itself), so the
proxy's added latency per frame is the difference. Set-up: a fresh ``pvekvm_console_bench``
database, pvesim and the proxy as processes of their own, one ready service and running VM per
session, tokens minted by :mod:`pvekvm.console.sessions`. Client, proxy, pvesim and MariaDB
share the machine's cores: print ``uptime`` with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_deploy import pct, pvesim_process, stop_process
from websockets.asyncio.client import connect

from pvekvm import db as dbmod
from pvekvm import secrets
from pvekvm.config import ProxmoxSettings, Settings, SmtpSettings
from pvekvm.console import rfb, sessions
from pvekvm.console.proxy import _client_tls
from pvekvm.models import Product, Service
from pvekvm.proxmox import Proxmox
from workers.testing.harness import load_catalog, write_config

DB_SERVER = os.environ.get("BENCH_DB_SERVER", "mysql://root@127.0.0.1:3306")
DATABASE_URL = f"{DB_SERVER}/pvekvm_console_bench"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PORT = 21090
SID0, VMID0 = 910000, 5000
#: PVE has 100 VNC ports per node (5900-5999): 200 sessions need VMs on several nodes
NODES = (("pve1", 9000), ("pve2", 9010), ("pve3", 9020))


def prepare(workdir: Path, conn: dict, n: int) -> tuple[Path, Settings]:
    settings = Settings(database_url=DATABASE_URL, amqp_url=AMQP_URL,
                        namespace="pvekvm_console_bench",
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
    upids = []
    for i in range(n):
        node, template = NODES[i % len(NODES)]
        upids.append((node, px.post(f"nodes/{node}/qemu/{template}/clone", newid=VMID0 + i,
                                    name=f"bench-{i}")))
    for node, upid in upids:
        wait_task(px, upid, node)
    for i in range(n):
        node = NODES[i % len(NODES)][0]
        wait_task(px, px.post(f"nodes/{node}/qemu/{VMID0 + i}/status/start"), node)
    now = datetime.now().replace(microsecond=0)
    Service.insert_many([dict(id=SID0 + i, client_id=1, product_id=product.id,
                              template_id=product.template_id, email="bench@example.com",
                              hostname=f"bench-{i}.example.com", status="ready",
                              vmid=VMID0 + i, node=NODES[i % len(NODES)][0],
                              created_at=now)
                         for i in range(n)]).execute()
    config = write_config(settings, workdir / "pvekvm.toml")
    with config.open("a") as fh:
        fh.write("[console]\nsessions_per_service = 0\nbind_client_address = false\n")
    return config, settings


def wait_task(px: Proxmox, upid: str, node: str) -> None:
    deadline = time.monotonic() + 60
    while px.task_status(node, upid).running:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {upid} did not finish")
        time.sleep(0.02)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Session:
    """One console client: keeps one incremental update request out, types at ``rate``."""

    def __init__(self, ws, stream: rfb.Stream) -> None:
        self.ws, self.s = ws, stream
        self.latencies: list[float] = []

    async def start(self, proxied: bool) -> None:
        s = self.s
        if proxied:  # the proxy: RFB 3.8, security None
            await s.read(12)
            await s.send(b"RFB 003.008\n")
            await s.read(2)
            await s.send(b"\x01")
            await s.read(4)
        await s.send(b"\x01")
        init = await s.read(24)
        await s.read(struct.unpack(">I", init[20:])[0])
        await self.request(False)
        await self.frame()

    async def request(self, incremental: bool) -> None:
        await self.ws.send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, 640, 400))

    async def frame(self) -> None:
        _, _, _, _, w, h, _ = struct.unpack(">BxHHHHHi", await self.s.read(16))
        await self.s.read(w * h * 4)

    async def run(self, rate: float, until: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(hash(id(self)) % 1000 / 1000 / rate)  # spread the sessions
        while loop.time() < until:
            await self.request(True)
            sent = loop.time()
            await self.ws.send(struct.pack(">BBxxI", 4, 1, ord("k"))
                               + struct.pack(">BBxxI", 4, 0, ord("k")))
            await self.frame()
            self.latencies.append(loop.time() - sent)
            await asyncio.sleep(max(0.0, sent + 1 / rate - loop.time()))


async def open_proxied(url: str) -> Session:
    ws = await connect(url, compression=None, proxy=None, max_size=2**22, open_timeout=60)
    s = Session(ws, rfb.Stream(_recv(ws), ws.send))
    await s.start(True)
    return s


async def open_direct(conn: dict, px: Proxmox, i: int) -> Session:
    vmid, node = VMID0 + i, NODES[i % len(NODES)][0]
    d = px.post(f"nodes/{node}/qemu/{vmid}/vncproxy", websocket=1)
    url = (f"wss://{conn['host']}:{conn['port']}/api2/json/nodes/{node}/qemu/{vmid}/vncwebsocket"
           f"?port={d['port']}&vncticket={quote(d['ticket'], safe='')}")
    ws = await connect(url, ssl=_client_tls(conn["ca_bundle"]), compression=None, proxy=None,
                       max_size=2**22, open_timeout=60, additional_headers={
                           "Authorization": f"PVEAPIToken={conn['token_id']}="
                                            f"{conn['token_secret']}"})
    s = Session(ws, rfb.Stream(_recv(ws), ws.send))
    await rfb.client_handshake(s.s, d["ticket"])
    await s.start(False)
    return s


def _recv(ws):
    async def recv() -> bytes:
        m = await ws.recv()
        return m.encode() if isinstance(m, str) else m
    return recv


async def measure(opened: list[Session], rate: float, seconds: float, pid: int | None) -> dict:
    loop = asyncio.get_running_loop()
    cpu0, t0 = (cpu_s(pid) if pid else 0.0), loop.time()
    await asyncio.gather(*(s.run(rate, t0 + seconds) for s in opened))
    wall = loop.time() - t0
    cpu = (cpu_s(pid) - cpu0) if pid else 0.0
    lat = [x for s in opened for x in s.latencies]
    for s in opened:
        await s.ws.close()
    return {"frames_s": len(lat) / wall, "p50_ms": pct(lat, 50) * 1e3,
            "p95_ms": pct(lat, 95) * 1e3, "cpu_core": cpu / wall,
            "cpu_ms_per_session_s": cpu / wall / len(opened) * 1e3,
            "cpu_ms_per_frame": cpu / max(1, len(lat)) * 1e3}


def _created_at(service_id: int) -> datetime:
    created = Service.get_by_id(service_id).created_at
    assert created is not None, f"service {service_id} has no created_at"
    return created


async def bench(args: argparse.Namespace, conn: dict, settings: Settings, proxy_pid: int) -> None:
    n = args.sessions
    assert settings.proxmox is not None
    px = Proxmox(settings.proxmox)
    tokens = [sessions.mint(SID0 + i, 1, _created_at(SID0 + i), 600, "bench", None, None)
              for i in range(n)]
    opened: list[Session] = []
    t = time.monotonic()
    for batch in range(0, n, 20):
        opened += await asyncio.gather(*(open_proxied(
            f"ws://127.0.0.1:{PORT}/console/websocket?token={m.token}")
            for m in tokens[batch:batch + 20] if m))
    print(f"{len(opened)} sessions opened through the proxy in {time.monotonic() - t:.1f} s")
    proxied = await measure(opened, args.rate, args.seconds, proxy_pid)
    direct_n = min(n, args.direct)
    direct = [await open_direct(conn, px, i) for i in range(direct_n)]
    straight = await measure(direct, args.rate, args.seconds, None)
    print(f"load (uptime): {os.getloadavg()}")
    print(f"through the proxy, {n} sessions x {args.rate}/s: {proxied['frames_s']:.0f} frames/s,"
          f" p50 {proxied['p50_ms']:.1f} ms, p95 {proxied['p95_ms']:.1f} ms; proxy CPU "
          f"{proxied['cpu_core']:.2f} core = {proxied['cpu_ms_per_session_s']:.2f} ms per "
          f"session-second, {proxied['cpu_ms_per_frame']:.2f} ms per frame")
    print(f"straight to pvesim, {direct_n} sessions x {args.rate}/s: "
          f"{straight['frames_s']:.0f} frames/s, p50 {straight['p50_ms']:.1f} ms, "
          f"p95 {straight['p95_ms']:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2.0, help="keys (frames) per second per session")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--direct", type=int, default=200, help="sessions of the straight run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        workdir = Path(tmp)
        with pvesim_process(workdir, 0.0, replicas=True) as conn:
            config, settings = prepare(workdir, conn, args.sessions)
            env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL")}
            log = open(workdir / "proxy.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen([sys.executable, "-m", "pvekvm", "--config", str(config),
                                     "console-proxy", "--port", str(PORT)], cwd=ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                import urllib.request
                while True:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=2)
                        break
                    except OSError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError((workdir / "proxy.log").read_text()) from None
                        time.sleep(0.2)
                asyncio.run(bench(args, conn, settings, proc.pid))
            finally:
                stop_process(proc, 10)


if __name__ == "__main__":
    main()
