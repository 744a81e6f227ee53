"""Fixtures: one fast simulator (tasks finish at once) and one with realistic durations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from pvesim.testing import RunningSimulator, running_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("pvesim"), task_time_scale=0) as s:
        yield s


@pytest.fixture()
def px(sim: RunningSimulator) -> Any:
    sim.set_faults()
    return sim.proxmox()


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("pvesim-slow"), task_time_scale=1.0) as s:
        yield s


def wait_until(cond: Any, timeout: float = 5.0) -> Any:
    """Poll ``cond`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met before deadline")


def wait_upid(px: Any, upid: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll the task status through the API until it stopped."""
    node = upid.split(":")[1]

    def done() -> dict[str, Any] | None:
        st = px.nodes(node).tasks(upid).status.get()
        return st if st["status"] == "stopped" else None

    return wait_until(done, timeout)
