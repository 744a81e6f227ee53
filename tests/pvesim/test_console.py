"""rrddata, vncproxy and vncwebsocket answer with the shapes of the PVE schema."""

from __future__ import annotations

import pytest
from proxmoxer.core import ResourceException

VMID = 7300


@pytest.fixture(scope="module")
def vm(sim):
    px = sim.proxmox()
    sim.wait_task(px.nodes("pve1").qemu(9000).clone.post(newid=VMID, name="console"))
    sim.wait_task(px.nodes("pve1").qemu(VMID).status.start.post())
    return px.nodes("pve1").qemu(VMID)


@pytest.mark.parametrize("timeframe,reso", [("hour", 60), ("day", 1800), ("year", 604800)])
def test_rrddata_rows_are_aligned_deterministic_and_scaled_to_the_vm(vm, timeframe, reso):
    rows = vm.rrddata.get(timeframe=timeframe)
    assert len(rows) == 70 and all(r["time"] % reso == 0 for r in rows)
    assert [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False)] == [reso] * 69
    again = vm.rrddata.get(timeframe=timeframe)
    assert again[-2] == rows[-2]  # the same row asked twice carries the same values
    cfg = vm.config.get()
    for r in rows:
        assert r["maxmem"] == int(cfg["memory"]) * 1024**2 and 0 < r["mem"] < r["maxmem"]
        assert 0 < r["cpu"] <= 1 and r["maxcpu"] == int(cfg["cores"])
        assert r.get("netin", 1) > 0 and r["diskwrite"] >= 0  # none in the start's row
    assert sum("netin" not in r for r in rows) <= (1 if reso == 60 else 0)
    peak = vm.rrddata.get(timeframe=timeframe, cf="MAX")
    assert sum(r["cpu"] for r in peak) > sum(r["cpu"] for r in rows)
    with pytest.raises(ResourceException) as e:
        vm.rrddata.get(timeframe="decade")
    assert e.value.status_code == 400


def test_the_minute_of_a_restart_has_no_network_rates(sim, vm):
    """New tap counters after a (re)start: PVE's DERIVE stores the negative step as unknown,
    rrddata leaves netin/netout out of that one row."""
    rows = vm.rrddata.get(timeframe="hour")
    reset = rows[-10]["time"]
    with sim.sim.cluster.lock:  # the restart happened 9 minutes ago, inside that row
        sim.sim.cluster.vms[VMID]["started"] = reset - 30
    rows = vm.rrddata.get(timeframe="hour")
    gaps = [r["time"] for r in rows if "netin" not in r or "netout" not in r]
    assert gaps == [reset] and all(r["cpu"] > 0 for r in rows)


def test_vnc_ticket_is_bound_to_user_and_vm(sim, vm):
    px = sim.proxmox()
    r = vm.vncproxy.post(websocket=1)
    assert set(r) == {"user", "ticket", "port", "upid", "cert"}
    assert r["user"] == sim.connection["token_id"] and r["ticket"].startswith("PVEVNC:")
    assert 5900 <= r["port"] <= 5999 and ":vncproxy:7300:" in r["upid"]
    assert r["cert"].startswith("-----BEGIN CERTIFICATE-----")
    second = vm.vncproxy.post(websocket=1)
    assert second["port"] != r["port"]  # a live session keeps its port
    assert vm.vncwebsocket.get(port=r["port"], vncticket=r["ticket"]) == {"port": str(r["port"])}
    for node, vmid, ticket in (("pve1", 9000, r["ticket"]), ("pve1", VMID, r["ticket"] + "0")):
        with pytest.raises(ResourceException) as e:
            px.nodes(node).qemu(vmid).vncwebsocket.get(port=r["port"], vncticket=ticket)
        assert "invalid PVEVNC ticket" in str(e.value)
    by_ticket = sim.proxmox_ticket().nodes("pve1").qemu(VMID)  # root@pam, not the token
    with pytest.raises(ResourceException):
        by_ticket.vncwebsocket.get(port=r["port"], vncticket=r["ticket"])


def test_vncproxy_task_fails_for_a_stopped_vm(sim):
    px = sim.proxmox()
    sim.wait_task(px.nodes("pve1").qemu(9000).clone.post(newid=VMID + 1, name="off"))
    upid = px.nodes("pve1").qemu(VMID + 1).vncproxy.post(websocket=1)["upid"]
    assert sim.wait_task(upid)["exitstatus"] == f"VM {VMID + 1} not running"


def _vnc(sim, vmid: int, ticket: str, port: int, password: str):
    """Open vncwebsocket with the engine's token and authenticate inside RFB: the screen's
    name, or the reason the stream ended."""
    import asyncio
    import struct
    from urllib.parse import quote

    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from pvekvm.console import rfb
    from pvekvm.console.proxy import _client_tls

    c = sim.connection

    async def go() -> str:
        url = (f"wss://{c['host']}:{c['port']}/api2/json/nodes/pve1/qemu/{vmid}/vncwebsocket"
               f"?port={port}&vncticket={quote(ticket, safe='')}")
        async with connect(url, ssl=_client_tls(c["ca_bundle"]),
                           subprotocols=[Subprotocol("binary")], proxy=None, additional_headers={
                               "Authorization": f"PVEAPIToken={c['token_id']}={c['token_secret']}"
                           }) as ws:
            assert ws.subprotocol == "binary"  # echoed, as pveproxy does

            async def recv() -> bytes:
                msg = await ws.recv()
                assert isinstance(msg, bytes), f"a text frame on the VNC socket: {msg!r}"
                return msg
            s = rfb.Stream(recv, ws.send)
            try:
                await rfb.client_handshake(s, password)
            except rfb.RfbError as exc:
                return f"refused: {exc}"
            except Exception:  # noqa: BLE001 - closed without a byte of RFB
                return "closed"
            await ws.send(b"\x01")
            init = await s.read(24)
            return (await s.read(struct.unpack(">I", init[20:])[0])).decode()

    return asyncio.run(go())


def test_vncwebsocket_speaks_rfb_with_the_ticket_as_vnc_password(sim, vm):
    r = vm.vncproxy.post(websocket=1)
    assert _vnc(sim, VMID, r["ticket"], r["port"], r["ticket"]) == "console"
    again = _vnc(sim, VMID, r["ticket"], r["port"], r["ticket"])  # the task took its one
    assert again == "closed"
    r = vm.vncproxy.post(websocket=1)
    assert "Authentication failed" in _vnc(sim, VMID, r["ticket"], r["port"], "wrong-pw")
    r = vm.vncproxy.post(websocket=1, **{"generate-password": 1})
    assert len(r["password"]) == 8 and _vnc(sim, VMID, r["ticket"], r["port"],
                                            r["password"]) == "console"


def test_a_stopped_vms_vnc_stream_closes_at_once(sim):
    px = sim.proxmox()
    if sim.vm(VMID + 2) is None:
        sim.wait_task(px.nodes("pve1").qemu(9000).clone.post(newid=VMID + 2, name="off2"))
    r = px.nodes("pve1").qemu(VMID + 2).vncproxy.post(websocket=1)
    assert _vnc(sim, VMID + 2, r["ticket"], r["port"], r["ticket"]) == "closed"
