"""The Proxmox client repeats a call inline only where PVE guarantees nothing was done: a read
that failed, or a call that never reached PVE. A failed POST is left to the step."""

from __future__ import annotations

import pytest

from pvekvm.config import ProxmoxSettings
from pvekvm.proxmox import Proxmox, ProxmoxError


class CountingApi:
    def __init__(self, api) -> None:
        self.api, self.calls = api, 0

    def __call__(self, path: str):
        self.calls += 1
        return self.api(path)


def _client(connection: dict) -> tuple[Proxmox, CountingApi]:
    pve = Proxmox(ProxmoxSettings.from_connection(connection))
    counting = CountingApi(pve._api)
    pve._api = counting
    return pve, counting


def test_a_failed_read_is_retried_but_a_failed_post_is_not(sim):
    pve, api = _client(sim.connection)
    sim.set_faults(error_rate=1.0, error_status=500)
    with pytest.raises(ProxmoxError) as read:
        pve.get("cluster/resources", type="vm")
    assert read.value.transient and api.calls == 3
    api.calls = 0
    with pytest.raises(ProxmoxError) as post:
        pve.post("nodes/pve1/qemu/9000/clone", newid=4321, full=1)
    assert post.value.transient and api.calls == 1   # it may have been carried out


def test_a_call_that_never_reached_proxmox_is_repeated_even_for_a_post(sim):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pve, api = _client({**sim.connection, "base_url": f"https://127.0.0.1:{port}"})
    with pytest.raises(ProxmoxError) as exc:
        pve.post("nodes/pve1/qemu/9000/clone", newid=4321, full=1)
    assert exc.value.not_sent and api.calls == 3
