"""A real three-node RabbitMQ cluster: quorum queues replicated on every node; the node that
leads the step queues stops in the middle of a run and no order or event is lost, the clients
(workers, billing, the scheduler) carrying on through the other nodes."""

from __future__ import annotations

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from producers.api import OrderClient
from pvekvm.models import Operation, OutboxEvent
from tests.scale import invariants
from tests.scale.common import DurableBilling, assert_dead_queue_recorded, work_queues_empty
from workers import scheduler
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until


def _leader_index(cluster, queues: list[dict]) -> int:
    leaders = {q["leader"] for q in queues if ".step." in q["name"]}
    assert len(leaders) == 1, f"step queues led by {leaders}"
    return next(i for i in (1, 2, 3) if cluster.node(i) in leaders)


def _run_through_a_node_stop(cluster, settings, sim, sids: range) -> invariants.Figures:
    queues = cluster.queues(2, settings.namespace)
    quorum = [q for q in queues if q["type"] == "quorum"]
    assert quorum and all(len(q["members"]) == 3 for q in quorum), \
        "every quorum queue replicated on the three nodes"
    leader = _leader_index(cluster, queues)
    other = 3 if leader != 3 else 2
    billing = DurableBilling(settings)
    sim.set_task_time_scale(0.05)
    sched = scheduler.build(settings, BackgroundScheduler)
    sched.start()
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as orders:
            for sid in sids:
                orders.create(service_id=sid, client_id=1, product="vps-small",
                              email=f"c{sid}@example.com")
            wait_until(lambda: Operation.select().where(Operation.state != "new").count()
                       >= len(sids) // 2, 60, "deploys under way")
            cluster.stop_node(leader)
            try:
                wait_until(all_ready(sids), 150, "every order ready", interval=0.5)
            except AssertionError:
                raise AssertionError(describe_ops(sids)) from None
            wait_until(lambda: OutboxEvent.select().where(OutboxEvent.published_at.is_null())
                       .count() == 0, 60, "every event published")
        heard = billing.heard_all(OutboxEvent.select().count())
    finally:
        sched.shutdown(wait=False)
    moved = cluster.queues(other, settings.namespace)
    assert cluster.node(leader) not in {q["leader"] for q in moved}, "leaders moved on"
    wait_until(lambda: work_queues_empty(settings), 30, "queues empty", db=False)
    assert_dead_queue_recorded(settings)
    invariants.check_events_once(heard)
    billing.delete()
    return invariants.check(sim, sids)


def test_the_step_queues_leader_stops_mid_run_and_nothing_is_lost(cluster_settings, cluster,
                                                                    sim):
    figures = _run_through_a_node_stop(cluster, cluster_settings, sim, range(7000, 7006))
    assert figures.operations == {"done": 6} and figures.vms == 6


@pytest.mark.slow
def test_forty_orders_through_a_leader_stop(cluster_settings, cluster, sim):
    """On demand: a larger run through the same node stop."""
    figures = _run_through_a_node_stop(cluster, cluster_settings, sim, range(7100, 7140))
    assert figures.operations == {"done": 40}
