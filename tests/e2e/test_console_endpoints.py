"""The console through every node's API (issue 24 item 2 for issue 27's proxy): with the first
endpoint's API down, the console proxy still opens the VM's screen, through the endpoint the
API calls also go to; the failed endpoint is marked failing like theirs (pvekvm/endpoints.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests

from producers.api import OrderClient
from pvekvm import endpoints
from pvekvm.config import ConsoleSettings, Settings
from pvekvm.console import sessions
from pvekvm.models import Service
from pvesim.testing import RunningSimulator, running_simulator
from tests.api.console_client import Console, ProxyThread
from workers.testing.harness import InProcessWorkers, all_ready, wait_until

SID = 9401


@pytest.fixture()
def sim(tmp_path) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path, task_time_scale=0, per_node_api=True) as s:
        yield s


def _console_path(settings: Settings) -> str:
    svc = Service.get_by_id(SID)
    assert svc.created_at is not None
    minted = sessions.mint(SID, svc.client_id, svc.created_at, 60, "test", None, None)
    assert minted is not None
    return f"/console/?service={SID}&token={minted.token}"


def test_the_console_opens_while_the_first_endpoint_is_down(settings, sim):
    assert settings.proxmox is not None and len(settings.proxmox.urls) == 3
    with InProcessWorkers(settings, concurrency=2):
        with OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=SID, client_id=4, product="vps-small",
                           email="c@example.com")
        wait_until(all_ready([SID]), 60, "the VM deployed")
    hostname = Service.get_by_id(SID).hostname
    sim.set_api("pve1", False)  # the first endpoint: the one the websocket always took
    console = replace(settings, console=ConsoleSettings(
        check_interval_s=0.25, frame_ancestors=("https://billing.example.net",)))

    async def look(url: str) -> tuple[bytes, tuple[int, int, int, int]]:
        c = await Console.open(url)
        try:
            return c.name, await c.update(incremental=False)
        finally:
            await c.ws.close()

    with ProxyThread(console) as proxy:
        page = requests.get(proxy.url + _console_path(settings), timeout=10)
        assert page.status_code == 200, page.text
        # only the billing client area may frame it (clickjacking of the client's console)
        assert page.headers["Content-Security-Policy"].endswith(
            "frame-ancestors https://billing.example.net")
        name, rect = asyncio.run(look(proxy.ws_url(_console_path(settings))))
    assert name.decode() == hostname, name  # the VM's own screen (pvesim shows its name)
    assert rect[2] > 0 and rect[3] > 0
    state = endpoints.endpoints(settings.proxmox.urls, settings.proxmox.endpoint_retry_s,
                                settings.proxmox.max_calls_per_node)
    assert settings.proxmox.urls[0] in state.failing()
