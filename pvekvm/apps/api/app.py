"""The ASGI application and how to serve it (uvicorn, one or many worker processes)."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from peewee import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from pvekvm.apps.api.bodylimit import BoundedBodies
from pvekvm.config import Settings, load_settings
from pvekvm.db import bind
from pvekvm.secrets import KeyFileMissing, KeyMismatch


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: :func:`load_settings`, i.e. ``PVEKVM_CONFIG`` and the
    environment). Binds the models to the configured database."""
    import pvekvm.apps.api
    from pvekvm.apps.api import refusals, routes, webhooks

    settings = settings or load_settings()
    if "api_note" in settings.origin:
        logging.getLogger(__name__).warning("%s", settings.origin["api_note"])
    if not settings.api.tokens and os.environ.get(_WARNED) != "1":
        logging.getLogger(__name__).warning("%s", no_token_warning(settings))
    # on Galera each read waits for the cluster's last commit (wsrep_sync_wait): a caller that
    # published an event sees what the workers committed since, whichever node serves it
    bind(settings.database_url, causal_reads=True,
         read_timeout_s=settings.database_read_timeout_s)
    app = FastAPI(title="pvekvm service API", version="1",
                  description=(pvekvm.apps.api.__doc__ or "").strip())
    app.state.settings = settings
    app.add_middleware(BoundedBodies)  # size and JSON depth, before any route parses a body
    app.include_router(routes.router)
    webhooks.include(app)  # /v1/webhooks, GET /v1/events and the OpenAPI webhooks section

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The database is restarting or unreachable: say so (the next request reconnects)."""
        return JSONResponse({"detail": "database_unavailable"}, status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Every HTTP refusal: a Problem, recorded (see :mod:`pvekvm.apps.api.refusals`); a 405
        lists every method of the path (Starlette's names only the first route's)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request))
        await run_in_threadpool(refusals.record, request, exc.status_code, str(exc.detail))
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """400 for a body that is not JSON; else 422 with a one-line ``detail`` and the
        per-field ``errors`` (location, message, type: never the value sent, which may be a
        secret or a megabyte)."""
        status, body = validation_problem(exc.errors())
        await run_in_threadpool(refusals.record, request, status, body["detail"])
        return JSONResponse(body, status_code=status)

    @app.exception_handler(KeyFileMissing)
    @app.exception_handler(KeyMismatch)
    async def secret_key_missing(request: Request, exc: Exception) -> JSONResponse:
        """The key file went away after start (start-up refuses to run without it), or it is
        not the one the stored value was encrypted with: say so, never a bare 500."""
        logging.getLogger("pvekvm.apps.api").error("%s", exc)
        return JSONResponse({"detail": "secret_key_unavailable"}, status_code=503)

    return app


_WARNED = "PVEKVM_API_NO_TOKEN_WARNED"  # serve() said it once; its worker processes need not


def no_token_warning(settings: Settings) -> str:
    """The line the API says at start when no billing token is configured."""
    where = settings.origin.get("file") or "the settings file"
    return (f"WARNING: no billing token in [api.tokens] of {where}: every request will be "
            "refused 401 and no client token can be minted. Make one with `python -m pvekvm "
            "api new-token`, put its line under [api.tokens], and restart")


MAX_ERRORS = 20


def validation_problem(errors: Any) -> tuple[int, dict[str, Any]]:
    """(status, Problem body) for pydantic's errors, at most :data:`MAX_ERRORS` of them."""
    items = [{"loc": [p if isinstance(p, int) else str(p)[:60] for p in e.get("loc", ())][:8],
              "msg": str(e.get("msg", ""))[:200], "type": str(e.get("type", ""))[:60]}
             for e in list(errors)[:MAX_ERRORS]]
    if any(e["type"] == "json_invalid" for e in items):
        return 400, {"detail": "malformed JSON body"}
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in items[:5])
    return 422, {"detail": f"invalid request: {summary}"[:500], "errors": items}


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this request's path (what the routes serve:
    the document is generated from them)."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        table = app.state.allow_table = [
            (compile_path(path)[0], sorted(m.upper() for m in item))
            for path, item in app.openapi()["paths"].items()]
    return sorted({m for regex, methods in table if regex.match(request.url.path)
                   for m in methods})


def serve(host: str, port: int, workers: int = 1, config: str | None = None,
          log_level: str = "info") -> None:
    """Run uvicorn. Worker processes each build the app from the same settings (stateless)."""
    import uvicorn

    if config:
        os.environ["PVEKVM_CONFIG"] = os.path.abspath(config)
    os.environ[_WARNED] = "1"  # the caller (python -m pvekvm api) warned before serving
    uvicorn.run("pvekvm.apps.api.app:create_app", factory=True, host=host, port=port,
                workers=workers, log_level=log_level,
                proxy_headers=False)  # X-Forwarded-For: only from [api] trusted_proxies (routes)
