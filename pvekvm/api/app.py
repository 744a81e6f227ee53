"""The ASGI application and how to serve it (uvicorn, one or many worker processes)."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from peewee import InterfaceError, OperationalError

from pvekvm.config import Settings, load_settings
from pvekvm.db import bind
from pvekvm.secrets import KeyFileMissing


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: :func:`load_settings`, i.e. ``PVEKVM_CONFIG`` and the
    environment). Binds the models to the configured database."""
    import pvekvm.api
    from pvekvm.api import routes

    settings = settings or load_settings()
    bind(settings.database_url)
    app = FastAPI(title="pvekvm service API", version="1",
                  description=(pvekvm.api.__doc__ or "").strip())
    app.state.settings = settings
    app.include_router(routes.router)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The database is restarting or unreachable: say so (the next request reconnects)."""
        return JSONResponse({"detail": "database_unavailable"}, status_code=503)

    @app.exception_handler(KeyFileMissing)
    async def secret_key_missing(request: Request, exc: Exception) -> JSONResponse:
        """The key file went away after start (start-up refuses to run without it)."""
        logging.getLogger("pvekvm.api").error("%s", exc)
        return JSONResponse({"detail": "secret_key_unavailable"}, status_code=503)

    return app


def serve(host: str, port: int, workers: int = 1, config: str | None = None,
          log_level: str = "info") -> None:
    """Run uvicorn. Worker processes each build the app from the same settings (stateless)."""
    import uvicorn

    if config:
        os.environ["PVEKVM_CONFIG"] = os.path.abspath(config)
    uvicorn.run("pvekvm.api.app:create_app", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, proxy_headers=True)
