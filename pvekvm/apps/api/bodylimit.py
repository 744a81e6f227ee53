"""Bounds on every request body before any route or FastAPI's own JSON parsing sees it: at
most ``max_bytes`` read (a larger body is refused as soon as it passes the bound, not held),
and JSON nested deeper than :data:`pvekvm.jsonsafe.MAX_DEPTH` refused by the linear pre-scan.
Each refusal is a 422 whose ``detail`` says why, logged with the path and recorded like every
other refusal (:mod:`pvekvm.apps.api.refusals`, naming the caller the bearer token stands
for); a body within bounds is handed on unchanged."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pvekvm import jsonsafe

log = logging.getLogger("pvekvm.apps.api")
Scope = dict[str, Any]


class BoundedBodies:
    """Pure ASGI middleware (no buffering beyond ``max_bytes``)."""

    def __init__(self, app: Any, max_bytes: int = jsonsafe.WIRE_MAX_BYTES,
                 max_depth: int = jsonsafe.MAX_DEPTH) -> None:
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, receive, send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send,
                                          f"body too large: over {self.max_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            nested = jsonsafe.depth(jsonsafe.decode_text(body)) if body else 0
        except jsonsafe.JsonRefused:  # not text: the route says what it thinks of it
            nested = 0
        if nested > self.max_depth:
            return await self._refuse(scope, receive, send, f"body is not JSON the API reads: "
                                      f"nested {nested} levels deep (max {self.max_depth})")
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                message: dict[str, Any] = await receive()
                return message
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Any, send: Any, reason: str) -> None:
        log.warning("refused a request body: %s %s: %s", scope["method"], scope["path"], reason)
        await run_in_threadpool(_record, Request(scope), reason)
        await JSONResponse({"detail": reason}, status_code=422)(scope, receive, send)


def _record(request: Request, reason: str) -> None:
    """The refusal's audit row, under the principal the bearer token stands for (the routes'
    dependency never ran: the body was refused first)."""
    from pvekvm.apps.api import refusals
    from pvekvm.apps.api.auth import authenticate

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    settings = getattr(request.app.state, "settings", None) if "app" in request.scope else None
    if scheme.lower() == "bearer" and token and settings is not None:
        try:
            who = authenticate(settings.api, token.strip())
        except Exception:  # noqa: BLE001 - the database is down: recorded as an unknown caller
            who = None
        if who is not None:
            request.state.principal = who.name
    refusals.record(request, 422, reason)
