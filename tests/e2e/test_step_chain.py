"""A worker that serves the next step's pool runs it at once after the commit (a chain), and
hands it to the broker otherwise: every step is still recorded, in order, once."""

from __future__ import annotations

import threading

import pytest

from producers.api import OrderClient
from pvekvm import messaging, metrics
from pvekvm.models import Operation, StepRun
from steps.machines import DEPLOY
from workers.consumer import all_pools
from workers.engine import Engine
from workers.outcome import Nudge, Outcome
from workers.runner import Runner
from workers.testing.harness import InProcessWorkers, all_ready, wait_until


def _count(result: str) -> float:
    return sum(metrics.MESSAGES.labels(pool, result)._value.get() for pool in all_pools())


def _deploy_steps(sid: int) -> list[tuple[str, str]]:
    return [(r.from_state, r.result) for r in StepRun.select().where(StepRun.service_id == sid)
            .order_by(StepRun.id)]


def test_a_worker_serving_every_pool_chains_a_deploy_and_records_every_step_once(settings, sim):
    chained0, delivered0 = _count("chained"), _count("ok")
    with InProcessWorkers(settings, concurrency=1), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7101, client_id=71, product="vps-small",
                       email="chain@example.com")
        wait_until(all_ready([7101]), 60, "service 7101 ready")
    runs = _deploy_steps(7101)
    assert [state for state, _ in runs] == [t.state for t in DEPLOY.transitions]
    assert all(result in ("success", "skip") for _, result in runs)
    chained = _count("chained") - chained0
    delivered = _count("ok") - delivered0  # the order itself, and step messages
    ran = sum(1 for _, result in runs if result == "success")
    # by the broker: the first step, and a step whose Proxmox task outlived the inline look
    # (clone, migrate, resize, start: at most one poll each at task time 0) with the step after
    assert chained >= ran - 6, (chained, delivered, ran)
    op = Operation.get(Operation.service_id == 7101)
    assert op.status == "done" and op.nudge_id is None


def _runner(settings, pools: list[str], stop: threading.Event | None = None) -> Runner:
    """The runner as a worker thread serving ``pools`` builds it (workers/consumer.py)."""
    stop = stop or threading.Event()
    return Runner(Engine(settings), messaging.Publisher(settings.amqp_url,
                                                        messaging.Topology(settings.namespace)),
                  pools, stopping=stop.is_set)


@pytest.mark.parametrize(("pools", "nudge", "runs_it"), [
    (["ip", "dns"], Nudge("dns", 5, "n", "ip_allocated"), True),
    (["ip"], Nudge("dns", 5, "n", "ip_allocated"), False),          # not this thread's pool
    (["ip", "dns"], Nudge("dns", 5, "n", "ip_allocated", 0.5), False),  # due later
    (["ip", "dns"], Nudge("dns", 6, "n", "new"), False),            # another operation
])
def test_a_thread_runs_a_continuation_only_of_its_pools_due_now_of_the_operation_in_hand(
        settings, pools, nudge, runs_it):
    out = Outcome(publish=[nudge], in_hand=5)
    picked = _runner(settings, pools)._continuation(out, last=False)
    assert (picked == nudge) is runs_it
    assert out.publish == ([] if runs_it else [nudge])  # what is not run goes to the broker


def test_a_stopping_thread_or_a_full_chain_hands_the_continuation_to_the_broker(settings):
    nudge = Nudge("dns", 5, "n", "ip_allocated")
    stop = threading.Event()
    runner = _runner(settings, ["ip", "dns"], stop)
    assert runner._continuation(Outcome(publish=[nudge], in_hand=5), last=True) is None
    stop.set()
    assert runner._continuation(Outcome(publish=[nudge], in_hand=5), last=False) is None
