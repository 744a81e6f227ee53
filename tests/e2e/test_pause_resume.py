"""Permanent trouble stops an operation visibly at its last good state; resume continues it.
SIGTERM lets a worker finish the message in hand and exit."""

from __future__ import annotations

import signal

from producers.api import OrderClient
from pvekvm.config import EngineSettings
from pvekvm.models import Operation, StepRun
from workers import admin
from workers.testing.harness import (
    InProcessWorkers,
    SubprocessWorker,
    all_ready,
    replace,
    wait_until,
    write_config,
)


def test_failing_tasks_pause_at_the_last_good_state_and_resume_finishes(settings, sim):
    settings = replace(settings, engine=replace(settings.engine, max_attempts=2))
    sim.set_faults(task_error_rate=1.0)  # every Proxmox task ends with an error
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=8001, client_id=2, product="vps-small", email="p@example.com")
        op = wait_until(lambda: Operation.get_or_none((Operation.service_id == 8001)
                                                      & (Operation.status == "paused")),
                        60, "the operation to pause")
        assert op.state == "welcome_sent"  # the clone never succeeded: last good state
        assert op.error is not None and "injected task failure" in op.error
        retries = StepRun.select().where((StepRun.operation_id == op.id)
                                         & (StepRun.result == "retry")).count()
        assert retries == 2
        block = admin.history(8001)
        assert "Will retry in" in block
        assert "--- Deploy paused: waiting at (welcome_sent)" in block

        sim.set_faults()
        assert "resumed at (welcome_sent)" in admin.resume(settings, "8001")
        wait_until(all_ready([8001]), 60, "deploy after resume")
    assert Operation.get_by_id(op.id).status == "done"


def test_sigterm_finishes_the_message_in_hand_and_exits(settings, sim, tmp_path):
    assert isinstance(settings.engine, EngineSettings)
    config = write_config(settings, tmp_path / "worker.toml")
    worker = SubprocessWorker(config, concurrency=2).start()
    try:
        with OrderClient(settings.amqp_url, settings.namespace) as billing:
            for sid in range(8100, 8105):
                billing.create(service_id=sid, client_id=2, product="vps-small",
                               email="t@example.com")
        wait_until(lambda: Operation.select().where(Operation.state != "new").count() >= 3,
                   30, "work in progress")
        assert worker.proc is not None  # started
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(30) == 0
    finally:
        worker.kill()
    with InProcessWorkers(settings, concurrency=4):  # another host carries on
        wait_until(all_ready(range(8100, 8105)), 60, "orders ready after the restart")


def test_status_command_shows_paused_operations_and_queue_depths(settings, sim):
    from pvekvm.apps.cli.main import engine_status

    settings = replace(settings, engine=replace(settings.engine, max_attempts=1))
    sim.set_faults(task_error_rate=1.0)
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=8201, client_id=2, product="vps-small", email="u@example.com")
        wait_until(lambda: Operation.get_or_none(status="paused"), 60, "pause")
    out = engine_status(settings)
    assert "deploy             paused         1" in out
    assert "paused: sid:8201 deploy at (welcome_sent)" in out
    assert f"{settings.namespace}.step.clone" in out and f"{settings.namespace}.dead" in out
