"""VM statistics (``rrddata``) and the noVNC console pair ``vncproxy`` / ``vncwebsocket``.

rrddata: PVE 8 keeps five RRAs of 70 rows (1 min, 30 min, 3 h, 12 h, 1 week resolution) and
answers rows ``{time, maxcpu, cpu, maxmem, mem, maxdisk, disk, netin, netout, diskread,
diskwrite}`` aligned to the resolution. Here the values are a deterministic function of
(vmid, row time): the same question always gets the same series, with a daily rhythm plus noise,
scaled to the VM's configured cores/memory/disk. A stopped VM's rows carry zero load. The
minute row whose interval (t - 60, t] holds the VM's last (re)start has no ``netin``/``netout``:
the new QEMU process's tap counters start again at 0 and PVE's DERIVE data source (minimum 0)
stores the negative step as unknown, which ``rrddata`` leaves out of the row.

vncproxy (``websocket=1``): a ``PVEVNC:`` ticket bound to the calling user, ``/vms/{vmid}`` and
the port (PVE's assemble_vnc_ticket), a port from 5900-5999 free on the node, the node
certificate and the ``vncproxy`` task's UPID; ``generate-password=1`` adds the VNC password.
vncwebsocket: checks the ticket (user, ``/vms/{vmid}``, port, 40 s lifetime, like PVE's
verify_vnc_ticket) and answers ``{"port": "<port>"}``; with ``Upgrade: websocket`` the server
then speaks RFB over the websocket (:mod:`pvesim.vnc`), with the VNC password ``qm vncproxy``
sets: the generated one, else the ticket.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import struct
import time
from typing import Any

from .model import PVEError
from .qemu import V, vm_of
from .routes import Ctx, route
from .tasks import Task, TaskError

#: timeframe -> seconds per row (PVE 8 RRA layout, 70 rows each)
RRD_RESOLUTION: dict[str, int] = {"hour": 60, "day": 1800, "week": 10800, "month": 43200,
                                  "year": 604800}
RRD_ROWS = 70
VNC_TICKET_MAX_AGE = 40
VNC_PORTS = range(5900, 6000)


def _noise(vmid: int, t: int, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) for (vmid, time, series)."""
    h = hashlib.blake2b(f"{vmid}:{t}:{salt}".encode(), digest_size=8).digest()
    return struct.unpack(">Q", h)[0] / 2**64


def _row(vm: dict[str, Any], maxdisk: int, t: int, peak: bool,
         reso: int = 60) -> dict[str, Any]:
    conf = vm["config"]
    vmid = vm["vmid"]
    cpus = int(conf.get("cores", "1")) * int(conf.get("sockets", "1"))
    maxmem = int(str(conf.get("memory", "512")).split(",")[0].replace("current=", "")) * 1024**2
    row: dict[str, Any] = {"time": t, "maxcpu": cpus, "maxmem": maxmem, "maxdisk": maxdisk,
                           "disk": 0}
    if vm["status"] != "running":
        row.update(cpu=0, mem=0, netin=0, netout=0, diskread=0, diskwrite=0)
        return row
    day = 0.5 + 0.5 * math.sin(2 * math.pi * ((t % 86400) / 86400 - 0.375))  # peak at 15:00
    bump = 1.35 if peak else 1.0

    def load(salt: str) -> float:
        return min(1.0, (0.15 + 0.55 * day + 0.3 * _noise(vmid, t, salt)) * bump)

    row.update(
        cpu=round(0.02 + 0.45 * load("cpu") ** 2, 6),
        mem=int(maxmem * (0.25 + 0.5 * load("mem"))),
        netin=round(2e6 * load("netin"), 2),
        netout=round(5e5 * load("netout"), 2),
        diskread=round(4e6 * load("diskread") ** 3, 2),
        diskwrite=round(1.5e6 * load("diskwrite") ** 2, 2),
    )
    if reso == 60 and t - reso < vm.get("started", 0.0) <= t:  # counters reset: unknown
        del row["netin"], row["netout"]
    return row


@route("GET", V + "/rrddata")
def rrddata(ctx: Ctx, p: dict[str, Any]) -> list[dict[str, Any]]:
    vm = vm_of(ctx, p)
    reso = RRD_RESOLUTION[p["timeframe"]]
    last = int(time.time()) // reso * reso
    maxdisk = ctx.cluster.root_disk_size(vm["config"])
    peak = p.get("cf") == "MAX"
    return [_row(vm, maxdisk, last - (RRD_ROWS - 1 - i) * reso, peak, reso)
            for i in range(RRD_ROWS)]


# --- console --------------------------------------------------------------------------------

def _vnc_sig(ctx: Ctx, plain: str, user: str, path: str, port: int | str) -> str:
    return hmac.new(ctx.sim.auth.key, f"{plain}:{user}:{path}:{port}".encode(),
                    hashlib.sha256).hexdigest()


def _live_sessions(ctx: Ctx) -> dict[str, dict[str, Any]]:
    now = time.time()
    sessions = ctx.sim.vnc_sessions
    for ticket in [t for t, s in sessions.items() if now - s["issued"] > VNC_TICKET_MAX_AGE]:
        del sessions[ticket]
    return sessions


@route("POST", V + "/vncproxy")
def vncproxy(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    vm = vm_of(ctx, p)
    vmid, node = vm["vmid"], vm["node"]
    sessions = _live_sessions(ctx)
    used = {s["port"] for s in sessions.values() if s["node"] == node and not s.get("closed")}
    port = next((n for n in VNC_PORTS if n not in used), None)
    if port is None:
        raise PVEError("unable to find free port (5900-5999)")
    plain = f"PVEVNC:{int(time.time()):08X}"
    ticket = f"{plain}::{_vnc_sig(ctx, plain, ctx.user, f'/vms/{vmid}', port)}"
    generate = str(p.get("generate-password", "0")) in ("1", "true")
    password = "".join(chr(33 + b % 94) for b in secrets.token_bytes(8)) if generate else None
    sessions[ticket] = {"node": node, "vmid": vmid, "port": port, "user": ctx.user,
                        "issued": time.time(), "password": password or ticket,
                        "connected": False}
    running = vm["status"] == "running"

    def work(task: Task) -> None:  # the real proxy waits 10 s for a connection, then ends
        if not running:
            raise TaskError(f"VM {vmid} not running")

    task = ctx.sim.tasks.start(node, "vncproxy", vmid, ctx.user, work,
                               duration=10.0 if running else 0.1)
    out = {"user": ctx.user, "ticket": ticket, "port": port, "upid": task.upid,
           "cert": ctx.sim.cert_pem}
    if password is not None:
        out["password"] = password
    return out


@route("GET", V + "/vncwebsocket")
def vncwebsocket(ctx: Ctx, p: dict[str, Any]) -> dict[str, str]:
    vm = vm_of(ctx, p)
    ticket = str(p["vncticket"])
    plain, _, sig = ticket.partition("::")
    session = _live_sessions(ctx).get(ticket)
    valid = (session is not None and session["vmid"] == vm["vmid"]
             and session["user"] == ctx.user
             and hmac.compare_digest(sig, _vnc_sig(ctx, plain, ctx.user, f"/vms/{vm['vmid']}",
                                                   p["port"])))
    if not valid:  # PVE::Ticket dies plainly: HTTP 500 with the message
        raise PVEError("permission denied - invalid PVEVNC ticket")
    return {"port": str(p["port"])}  # like PVE: the port is checked inside the VNC protocol


def vnc_stream(sim: Any, params: dict[str, Any]) -> tuple[Any, str] | None:
    """(the VM's screen, the VNC password) for the websocket a good ``vncwebsocket`` call
    upgrades to; None when the vncproxy task has no connection to give: already taken, its
    10 s accept window passed, or the VM is not running (``qm vncproxy`` dies)."""
    from .vnc import ACCEPT_WINDOW_S, Screen

    with sim.cluster.lock:
        session = sim.vnc_sessions.get(str(params.get("vncticket")))
        vm = sim.cluster.vms.get(int(params["vmid"]))
        if session is None or vm is None or session["connected"]:
            return None
        session["connected"] = True
        if time.time() - session["issued"] > ACCEPT_WINDOW_S or vm["status"] != "running":
            return None
        screens = sim.vnc_screens
        if vm["vmid"] not in screens or screens[vm["vmid"]].name != (
                vm["config"].get("name") or f"VM {vm['vmid']}"):
            screens[vm["vmid"]] = Screen(vm)
        return screens[vm["vmid"]], session["password"]
