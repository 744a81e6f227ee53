"""The API served for real over TCP: uvicorn in a thread on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict, Unpack

import requests
import uvicorn

from pvekvm.apps.api.app import create_app
from pvekvm.config import ROOT, Settings


class ApiServer:
    """``with ApiServer(settings) as api: requests.get(api.url + "/openapi.json")``"""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False,
                                proxy_headers=False)  # as pvekvm.apps.api.app.serve
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True, name="api-server")

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    # The request parts tests pass, typed (not **kwargs passed through): params, json, data.
    def get(self, path: str, token: str | None = None, **parts: Unpack[_Parts]
            ) -> requests.Response:
        return requests.get(self.url + path, headers=_auth(token), timeout=30, **parts)

    def post(self, path: str, token: str | None = None, **parts: Unpack[_Parts]
             ) -> requests.Response:
        return requests.post(self.url + path, headers=_auth(token), timeout=30, **parts)

    def put(self, path: str, token: str | None = None, **parts: Unpack[_Parts]
            ) -> requests.Response:
        return requests.put(self.url + path, headers=_auth(token), timeout=30, **parts)

    def delete(self, path: str, token: str | None = None, **parts: Unpack[_Parts]
               ) -> requests.Response:
        return requests.delete(self.url + path, headers=_auth(token), timeout=30, **parts)


class _Parts(TypedDict, total=False):
    params: Mapping[str, Any]
    json: Any
    data: bytes | str


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def api_command(config: Path, workers: int, log: Path) -> Iterator[str]:
    """``python -m pvekvm --config CONFIG api --workers N`` on a free port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL")}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pvekvm", "--config", str(config), "api",
                                 "--port", str(port), "--workers", str(workers),
                                 "--log-level", "info"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(url + "/openapi.json", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"api command did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(20)
