"""What the console tests drive: the console proxy in a thread of its own (its own event loop,
port 0), and a minimal RFB client speaking to it over its websocket as noVNC does."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from pvekvm.config import Settings
from pvekvm.console import rfb
from pvekvm.console.proxy import ConsoleProxy


class ProxyThread:
    """``with ProxyThread(settings) as p: p.url`` — one proxy process's server."""

    def __init__(self, settings: Settings) -> None:
        self.proxy = ConsoleProxy(settings)
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name="console-proxy")

    def _ready(self, server: Any) -> None:
        self.port = next(iter(server.sockets)).getsockname()[1]
        self.started.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.proxy.run("127.0.0.1", 0, ready=self._ready))
        with contextlib.suppress(asyncio.CancelledError, Exception):  # stopped
            self.loop.run_until_complete(self.task)

    def __enter__(self) -> ProxyThread:
        self.thread.start()
        if not self.started.wait(15):
            raise RuntimeError("console proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}" + path.replace("/console/?", "/console/websocket?")


class Console:
    """An RFB client through the proxy (security type None: the proxy authenticated to PVE)."""

    width: int  # the framebuffer's, from ServerInit (set by open)
    height: int

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.stream = rfb.Stream(self._recv, ws.send)
        self.name = b""

    async def _recv(self) -> bytes:
        msg = await self.ws.recv()
        return msg.encode() if isinstance(msg, str) else msg

    @classmethod
    async def open(cls, url: str, **kw: Any) -> Console:
        self = cls(await connect(url, compression=None, proxy=None, open_timeout=10, **kw))
        s = self.stream
        assert await s.read(12) == b"RFB 003.008\n"
        await s.send(b"RFB 003.008\n")
        assert await s.read(2) == b"\x01\x01"  # one security type: None
        await s.send(b"\x01")
        assert await s.read(4) == b"\0\0\0\0"
        await s.send(b"\x01")  # ClientInit, shared
        init = await s.read(24)
        self.width, self.height = struct.unpack(">HH", init[:4])
        self.name = await s.read(struct.unpack(">I", init[20:])[0])
        return self

    async def update(self, incremental: bool) -> tuple[int, int, int, int]:
        """Ask for the screen and read one raw rectangle (x, y, w, h)."""
        await self.ws.send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width,
                                       self.height))
        _, count, x, y, w, h, enc = struct.unpack(">BxHHHHHi", await self.stream.read(16))
        assert (count, enc) == (1, 0)
        await self.stream.read(w * h * 4)
        return x, y, w, h

    async def key(self, keysym: int) -> None:
        await self.ws.send(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0,
                                                                             keysym))

    async def closed(self, timeout: float) -> tuple[int | None, str]:
        """Wait for the proxy to close: (code, reason)."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except Exception:  # noqa: BLE001 - ConnectionClosed* carry the frame
                pass
        return self.ws.close_code, self.ws.close_reason or ""
