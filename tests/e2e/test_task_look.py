"""The look at a task the step has just started, inside the message that started it: never at
once (PVE has only just forked it), at most twice (after 10 and 30 ms); a short task is followed
there, a longer one is left to a delayed poll message."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pvekvm.proxmox import Proxmox, client
from steps.machine import Wait
from workers.engine import Engine


def _counted(pve: Proxmox, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When (seconds after the task started) each status look was made."""
    looks: list[float] = []
    real, started = pve.task_status, time.monotonic()

    def look(*args: Any, **kwargs: Any) -> Any:
        looks.append(time.monotonic() - started)
        return real(*args, **kwargs)

    monkeypatch.setattr(pve, "task_status", look)
    return looks


def _start_task(pve: Proxmox, vmid: int) -> Wait:
    upid = pve.post("nodes/pve1/qemu", vmid=vmid, name=f"look-{vmid}", memory=512)
    return Wait(upid, "pve1")


def test_a_short_task_is_seen_done_at_the_first_look_not_before(settings, sim, monkeypatch):
    pve = client(settings.proxmox)
    wait = _start_task(pve, 4101)  # pvesim at scale 0: the task ends 5 ms after it starts
    looks = _counted(pve, monkeypatch)
    assert Engine(settings, worker="t")._task_done_soon(pve, wait)
    assert len(looks) == 1 and looks[0] >= 0.01
    assert sim.task(wait.upid)["exitstatus"] == "OK"


def test_a_longer_task_gets_two_looks_then_a_poll_message(settings, sim, monkeypatch):
    sim.set_task_time_scale(1)  # qmcreate: 3 s, far longer than the 30 ms of looks
    pve = client(settings.proxmox)
    wait = _start_task(pve, 4102)
    looks = _counted(pve, monkeypatch)
    t0 = time.monotonic()
    assert not Engine(settings, worker="t")._task_done_soon(pve, wait)
    assert len(looks) == 2
    assert looks[0] >= 0.01 and looks[1] >= 0.03
    assert time.monotonic() - t0 < 1.5  # the thread is not held until the task ends
    assert sim.task(wait.upid).get("status") == "running"
