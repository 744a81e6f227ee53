"""The API served for real over TCP: uvicorn in a thread on a free port."""

from __future__ import annotations

import socket
import threading
import time

import requests
import uvicorn

from pvekvm.api.app import create_app
from pvekvm.config import Settings


class ApiServer:
    """``with ApiServer(settings) as api: requests.get(api.url + "/openapi.json")``"""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
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

    def get(self, path: str, token: str | None = None, **kw: object) -> requests.Response:
        return requests.get(self.url + path, headers=_auth(token), timeout=30, **kw)

    def post(self, path: str, token: str | None = None, **kw: object) -> requests.Response:
        return requests.post(self.url + path, headers=_auth(token), timeout=30, **kw)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
