"""The console proxy: ``python -m pvekvm console-proxy --port N`` (asyncio, ``websockets``).

It alone, of the console's path, holds the Proxmox token. What it serves:

* ``GET /console/?token=…[&service=N]``: the noVNC page (Debian's ``novnc`` files under
  ``/console/novnc/``), or a 403 page naming why the token cannot open a console;
* ``GET /console/websocket?token=…[&service=N]`` (websocket): claims the single-use console
  token (:mod:`pvekvm.console.sessions`), calls ``vncproxy`` (websocket=1) on the VM's node,
  opens PVE's ``vncwebsocket`` with the engine's token, authenticates inside RFB with the VNC
  password ``vncproxy`` made, then greets the browser as an RFB server with security type None
  and relays bytes both ways. The browser never sees the VNC ticket or password: its console
  token already proved who it is, and what it could replay is used up;
* ``GET /healthz``: ``ok``.

A session ends when either side closes, after ``idle_timeout_s`` without user input, after
``max_session_s``, or within ``check_interval_s`` of its service being suspended, terminated or
re-created, or of the client token it was minted with ending (a heartbeat over all sessions of
this process, one query). The browser is told why in the close frame (code 4000-4099).
Stateless apart from its open sessions: run as many as you like behind a balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import signal
import socket
import ssl
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from pvekvm import endpoints
from pvekvm import pve_reads as pve
from pvekvm.config import ProxmoxSettings, Settings
from pvekvm.console import rfb, sessions
from pvekvm.forwarded import real_caller

log = logging.getLogger("pvekvm.console")
MAX_FRAME = 128 * 1024  # what pveproxy accepts from a client; noVNC's messages are far smaller
MAX_QUERY = 512
CLOSE_CODES = {"idle": 4001, "max": 4002, "cut": 4003, "proxmox": 4004, "refused": 4005,
               "error": 4011}
PAGE_FILES = ("index.html", "console.js", "console.css")


@dataclass
class Live:
    """One open session, as this process sees it."""

    claim: sessions.Claim
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = ""
    up: int = 0
    down: int = 0

    def end(self, why: str) -> None:
        if not self.cut.is_set():
            self.why = why
            self.cut.set()


def _query(request: Request) -> tuple[str, int | None] | None:
    """(token, service id or None) from the request's query, None when malformed."""
    query = urlsplit(request.path).query
    if len(query) > MAX_QUERY:
        return None
    params = parse_qs(query, max_num_fields=4)
    token = params.get("token", [""])[0]
    service = params.get("service", [""])[0]
    if not token or (service and not (service.isdigit() and len(service) <= 10)):
        return None
    return token, int(service) if service else None


class ConsoleProxy:
    def __init__(self, settings: Settings) -> None:
        if settings.proxmox is None:
            raise ValueError("the console proxy needs a Proxmox connection ([proxmox])")
        self.settings = settings
        self.console = settings.console
        self.live: dict[str, Live] = {}
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.novnc = Path(self.console.novnc_dir).resolve()
        page = resources.files("pvekvm.console") / "page"
        self.page = {name: (page / name).read_bytes() for name in PAGE_FILES}
        self.server: Server | None = None

    # --- HTTP ---------------------------------------------------------------------------
    def _peer(self, connection: ServerConnection, request: Request) -> str:
        peer = connection.remote_address[0] if connection.remote_address else None
        return real_caller(peer, request.headers.get_all("X-Forwarded-For"),
                           self.settings.api.trusted_proxies) or "unknown"

    @staticmethod
    def _response(status: int, body: bytes, ctype: str, **extra: str) -> Response:
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
                           ("X-Content-Type-Options", "nosniff"), ("Connection", "close"),
                           *extra.items()])
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed"}.get(status, "Error")
        return Response(status, reason, headers, body)

    def _refusal(self, status: int, why: str) -> Response:
        html = ("<!doctype html><meta charset=utf-8><title>Console refused</title>"
                f"<body data-state=refused><p id=refused>Console refused: {_escape(why)}</p>")
        return self._response(status, html.encode(), "text/html; charset=utf-8")

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/console/websocket":
            if "upgrade" not in request.headers.get("Connection", "").lower():
                return self._refusal(400, "a websocket is expected here")
            query = _query(request)
            if query is None:
                return self._refusal(400, "malformed console link")
            peer = self._peer(connection, request)
            try:
                claim = await asyncio.to_thread(
                    sessions.claim, query[0], query[1], peer, self.name,
                    self.console.sessions_per_service)
            except sessions.Refused as exc:
                log.info("console refused from %s: %s", peer, exc)
                return self._refusal(403, str(exc))
            connection.claim = claim  # type: ignore[attr-defined]
            return None  # the websocket handshake goes on: handler()
        if path == "/healthz":
            return self._response(200, b"ok\n", "text/plain")
        if path == "/console/":
            query = _query(request)
            if query is None:
                return self._refusal(400, "malformed console link")
            try:
                await asyncio.to_thread(sessions.check, query[0], query[1],
                                        self._peer(connection, request))
            except sessions.Refused as exc:
                return self._refusal(403, str(exc))
            return self._response(200, self.page["index.html"], "text/html; charset=utf-8",
                                  **{"Content-Security-Policy": "default-src 'self'; "
                                     "connect-src 'self'; img-src 'self' data:; "
                                     "style-src 'self'; script-src 'self'; frame-ancestors "
                                     + " ".join(self.console.frame_ancestors)})
        if path.startswith("/console/") and path[len("/console/"):] in PAGE_FILES:
            name = path[len("/console/"):]
            return self._response(200, self.page[name], mimetypes.guess_type(name)[0]
                                  or "application/octet-stream")
        if path.startswith("/console/novnc/"):
            return await asyncio.to_thread(self._novnc_file, path[len("/console/novnc/"):])
        return self._refusal(404, "not found")

    async def process_response(self, connection: ServerConnection, request: Request,
                               response: Response) -> None:
        """A token claimed for a websocket whose handshake then failed (a bad key, no
        upgrade): end its session now rather than let it wait for a stale heartbeat."""
        claim = getattr(connection, "claim", None)
        if claim is not None and response.status_code != 101:
            await asyncio.to_thread(sessions.end, claim, "websocket handshake failed", 0, 0)

    def _novnc_file(self, rel: str) -> Response:
        """A file of the noVNC package (no way out of its folder)."""
        target = (self.novnc / rel).resolve()
        if (not rel or ".." in rel.split("/") or not target.is_relative_to(self.novnc)
                or not target.is_file()):
            return self._refusal(404, "not found")
        ctype = "text/javascript" if target.suffix == ".js" else (
            mimetypes.guess_type(target.name)[0] or "application/octet-stream")
        return self._response(200, target.read_bytes(), ctype,
                              **{"Cache-Control": "public, max-age=3600"})

    # --- websocket ----------------------------------------------------------------------
    async def handler(self, browser: ServerConnection) -> None:
        claim: sessions.Claim = browser.claim  # type: ignore[attr-defined]
        live = Live(claim)
        self.live[claim.session_id] = live
        why, code = "the browser closed the console", 1000
        vm: ClientConnection | None = None
        try:
            try:
                vm, vm_stream = await self._open_vm(claim)
            except Exception as exc:  # noqa: BLE001 - any failure to reach the VM is told
                why, code = await self._vm_unavailable(claim, exc), CLOSE_CODES["proxmox"]
                return
            browser_stream = rfb.Stream(_recv(browser), browser.send)
            try:
                client_init = await asyncio.wait_for(rfb.server_handshake(browser_stream), 30)
            except (rfb.RfbError, TimeoutError) as exc:
                why, code = f"the browser did not speak RFB: {exc}", CLOSE_CODES["error"]
                return
            await vm.send(client_init + browser_stream.rest())
            if vm_stream.rest():
                await browser.send(vm_stream.rest())
            why, code = await self._relay(browser, vm, live)
        except ConnectionClosed:
            why, code = "the browser closed the console", 1000
        finally:
            self.live.pop(claim.session_id, None)
            if vm is not None:
                with contextlib.suppress(Exception):
                    await vm.close()
            with contextlib.suppress(Exception):
                await browser.close(code, why[:120])
            log.info("console session %s of service %s from %s ended: %s", claim.session_id,
                     claim.service_id, claim.peer, why)
            try:
                await asyncio.to_thread(sessions.end, claim, why, live.up, live.down)
            except Exception:  # the database is down: the heartbeat goes stale
                log.exception("console session %s: end not recorded", claim.session_id)

    async def _relay(self, browser: ServerConnection, vm: ClientConnection,
                     live: Live) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        meter = rfb.InputMeter()
        started = last_input = loop.time()

        async def up() -> tuple[str, int]:
            nonlocal last_input
            async for msg in browser:
                data = msg.encode() if isinstance(msg, str) else msg
                live.up += len(data)
                if meter.feed(data):
                    last_input = loop.time()
                await vm.send(data)
            return "the browser closed the console", 1000

        async def down() -> tuple[str, int]:
            async for msg in vm:
                data = msg.encode() if isinstance(msg, str) else msg
                live.down += len(data)
                await browser.send(data)
            return "Proxmox closed the VNC stream", CLOSE_CODES["proxmox"]

        async def limits() -> tuple[str, int]:
            idle, most = self.console.idle_timeout_s, self.console.max_session_s
            while True:
                now = loop.time()
                if now - started >= most:
                    return f"the session reached its maximum of {most} s", CLOSE_CODES["max"]
                if now - last_input >= idle:
                    return f"no input for {idle} s", CLOSE_CODES["idle"]
                await asyncio.sleep(max(0.05, min(started + most, last_input + idle) - now))

        async def cut() -> tuple[str, int]:
            await live.cut.wait()
            return live.why, CLOSE_CODES["cut"]

        tasks = [asyncio.create_task(f()) for f in (up, down, limits, cut)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = done.pop()
        if first.exception() is not None:
            exc = first.exception()
            if isinstance(exc, ConnectionClosed):
                side = "Proxmox" if first is tasks[1] else "the browser"
                return f"{side} closed the connection", (
                    CLOSE_CODES["proxmox"] if side == "Proxmox" else 1000)
            return f"relay failed: {type(exc).__name__}", CLOSE_CODES["error"]
        return first.result()

    async def _open_vm(self, claim: sessions.Claim) -> tuple[ClientConnection, rfb.Stream]:
        """vncproxy on the VM's node, vncwebsocket with the engine's token, RFB auth."""
        conn = self.settings.proxmox_of(claim.cluster)  # the service's cluster's API
        if conn is None:
            raise pve.Unreachable(f"cluster {claim.cluster} is not in the settings")
        path = f"nodes/{quote(claim.node, safe='')}/qemu/{claim.vmid}"
        data = await asyncio.to_thread(pve.call, conn, self.settings.api.proxmox_timeout_s,
                                       "post", f"{path}/vncproxy", websocket=1)
        password = str(data.get("password") or data["ticket"])
        query = f"?port={int(data['port'])}&vncticket={quote(str(data['ticket']), safe='')}"
        vm = await _vnc_websocket(conn, f"/api2/json/{path}/vncwebsocket{query}")
        stream = rfb.Stream(_recv(vm), vm.send)
        try:
            await asyncio.wait_for(rfb.client_handshake(stream, password), 10)
        except BaseException:
            await vm.close()
            raise
        return vm, stream

    async def _vm_unavailable(self, claim: sessions.Claim, exc: Exception) -> str:
        """Why the VM's console could not be opened, in words for the browser."""
        log.warning("console of service %s (vmid %s): %s: %s", claim.service_id, claim.vmid,
                    type(exc).__name__, exc)
        if isinstance(exc, pve.Unreachable):
            return "Proxmox is unreachable"
        try:
            st = await asyncio.to_thread(
                pve.call, self.settings.proxmox_of(claim.cluster),
                self.settings.api.proxmox_timeout_s, "get",
                f"nodes/{quote(claim.node, safe='')}/qemu/{claim.vmid}/status/current")
            if st.get("status") != "running":
                return f"the VM is not running ({st.get('status', 'unknown')})"
        except Exception:  # noqa: BLE001 - only a better reason; the first one stands
            pass
        if isinstance(exc, rfb.RfbError):
            return f"VNC refused: {exc}"[:120]
        if isinstance(exc, ConnectionClosed | WebSocketException | EOFError):
            return "Proxmox closed the VNC stream"
        return f"the console could not be opened ({type(exc).__name__})"

    # --- heartbeat ----------------------------------------------------------------------
    async def watchdog(self) -> None:
        """Every ``check_interval_s``: mark this process's sessions alive in one query and end
        those whose service, token or client token no longer allows them."""
        while True:
            await asyncio.sleep(self.console.check_interval_s)
            ids = list(self.live)
            if not ids:
                continue
            try:
                verdicts = await asyncio.to_thread(sessions.heartbeat, ids)
            except Exception:  # database away: try again next round
                log.exception("console heartbeat failed")
                continue
            for sid, why in verdicts.items():
                if sid in self.live:
                    self.live[sid].end(why)

    def stop(self) -> None:
        """SIGTERM: tell every browser why, record the ends, then stop serving."""
        for live in list(self.live.values()):
            live.end("the console proxy stopped")
        if self.server is not None:
            asyncio.get_running_loop().call_later(0.5, self.server.close)

    async def run(self, host: str, port: int, ready: Any = None) -> None:
        tls = None
        if self.console.tls_cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.console.tls_cert, self.console.tls_key)
        async with serve(self.handler, host, port, process_request=self.process_request,
                         process_response=self.process_response, close_timeout=2,
                         ssl=tls, compression=None, max_size=MAX_FRAME, ping_interval=20,
                         select_subprotocol=_binary_if_offered,
                         ping_timeout=20, server_header="pvekvm-console") as server:
            self.server = server
            if threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.stop)
            dog = asyncio.create_task(self.watchdog())
            if ready is not None:
                ready(server)
            try:
                await server.serve_forever()
            finally:
                dog.cancel()


def _binary_if_offered(connection: Any, offered: Any) -> Subprotocol | None:
    """noVNC asks for ``binary``; a client asking for nothing is served too (as pveproxy)."""
    return Subprotocol("binary") if "binary" in offered else None


def _recv(ws: ServerConnection | ClientConnection) -> Any:
    async def recv() -> bytes:
        msg = await ws.recv()
        return msg.encode() if isinstance(msg, str) else msg
    return recv


async def _vnc_websocket(conn: ProxmoxSettings, path: str) -> ClientConnection:
    """The VM's websocket through the first of the cluster's endpoints that can be reached,
    in the order (and with the failing marks) the API calls use (pvekvm/endpoints.py): the
    ticket is the cluster's, any node's pveproxy carries it to the VM's node. An endpoint
    that refuses, times out or answers 5xx is marked failing and the next one tried; the
    handshake had not reached the VM, so nothing is done twice."""
    state = endpoints.endpoints(conn.urls, conn.endpoint_retry_s, conn.max_calls_per_node)
    auth = {"Authorization": f"PVEAPIToken={conn.token_id}={conn.token_secret}"}
    order = state.order()
    for n, i in enumerate(order):
        host, port = endpoints.host_port(state.urls[i])
        try:
            vm = await connect(f"wss://{host}:{port}{path}", ssl=_client_tls(conn.ca_bundle),
                               subprotocols=[Subprotocol("binary")], additional_headers=auth,
                               compression=None, proxy=None, max_size=2**20, open_timeout=10,
                               ping_interval=None, user_agent_header="pvekvm-console")
        except (OSError, TimeoutError, InvalidStatus) as exc:
            if isinstance(exc, InvalidStatus) and exc.response.status_code < 500:
                raise  # Proxmox answered: the ticket or the VM is the matter, not the node
            state.failed(i)
            log.warning("console websocket via %s: %s", state.urls[i], exc)
            if n == len(order) - 1:
                raise
            continue
        state.answered(i)
        return vm
    raise pve.Unreachable("no Proxmox endpoint configured")


def _client_tls(ca_bundle: str | bool) -> ssl.SSLContext:
    if ca_bundle is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=None if ca_bundle is True else str(ca_bundle))


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def startup_problem(settings: Settings) -> str | None:
    """Why the proxy cannot serve with these settings (one line naming the setting), or None."""
    console, where = settings.console, f"{settings.origin.get('file', 'settings')} [console]"
    if not (Path(console.novnc_dir) / "core" / "rfb.js").is_file():
        return (f"{where} novnc_dir = {console.novnc_dir}: noVNC is not there "
                "(apt-get install novnc, or point novnc_dir at its folder)")
    for key in ("tls_cert", "tls_key"):
        value = getattr(console, key)
        if value and not Path(value).is_file():
            return f"{where} {key} = {value}: no such file"
    return None


def serve_forever(settings: Settings, host: str, port: int) -> None:
    """Run the proxy until interrupted (``python -m pvekvm console-proxy``); exit 3 with one
    line when noVNC or the TLS files are missing."""
    import sys

    from pvekvm.db import bind

    problem = startup_problem(settings)
    if problem:
        print(f"python -m pvekvm console-proxy: cannot start: {problem}", file=sys.stderr)
        raise SystemExit(3)
    bind(settings.database_url, read_timeout_s=settings.database_read_timeout_s)
    proxy = ConsoleProxy(settings)
    log.info("console proxy %s on %s:%s (noVNC from %s)", proxy.name, host, port, proxy.novnc)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(proxy.run(host, port))
