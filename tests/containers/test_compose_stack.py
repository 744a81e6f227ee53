"""The compose stack end to end (slow): ``scripts/stack demo`` brings docker-compose.yml up with
local images on the host network, demo orders reach ``ready`` through the containerised workers,
and the stack stops leaving no container behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from pvekvm.config import ROOT
from tests import services


@pytest.mark.slow
def test_demo_orders_reach_ready_through_the_compose_stack_and_it_stops_cleanly():
    reason = services.engine_unavailable_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "STACK_NAME": "pvekvm_stack_test"}
    proc = subprocess.run(["bash", "scripts/stack", "demo"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "OK: 4 orders ready through the containerised workers" in out
    assert "no container or volume left" in out
    import docker

    left = docker.from_env().containers.list(
        all=True, filters={"label": "com.docker.compose.project=pvekvm_stack_test"})
    assert left == []
