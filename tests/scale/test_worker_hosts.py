"""Worker hosts in their own network namespaces (workers/testing/netns.py): a host whose link is cut
in the middle of its tasks (no clean stop) loses nothing and does nothing twice once its
messages come back to the others (broker heartbeat), and carries on when it rejoins."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from producers.api import OrderClient
from pvekvm.models import Operation, OutboxEvent, StepRun
from tests.scale import invariants
from workers import scheduler
from workers.testing import netns
from workers.testing.harness import all_ready, describe_ops, wait_until, write_config
from workers.testing.netns import service_ports

HEARTBEAT_S = 4  # the broker drops a silent host after about twice this


def with_heartbeat(url: str, seconds: int) -> str:
    return ",".join(f"{u}{'&' if '?' in u else '?'}heartbeat={seconds}"
                    for u in url.split(","))


@pytest.fixture()
def hosts(settings) -> Iterator[list[netns.WorkerHost]]:
    why = netns.unavailable()
    if why:
        pytest.skip(f"no worker hosts in namespaces here: {why}")
    made = [netns.WorkerHost(i, service_ports(settings)) for i in (1, 2)]
    try:
        yield [h.up() for h in made]
    finally:
        for h in made:
            h.down()


def advanced_twice() -> list[tuple[int, str]]:
    rows = [(r.operation_id, r.from_state) for r in StepRun.select().where(
        StepRun.result.in_(("success", "skip", "warn")))]
    return sorted({r for r in rows if rows.count(r) > 1})


@pytest.mark.slow  # ~40 s: on demand (scripts/test -m slow tests/scale), CI's budget is ten minutes
def test_a_host_cut_off_mid_task_loses_nothing_does_nothing_twice_and_rejoins(
        settings, sim, tmp_path, hosts):
    from dataclasses import replace

    s = replace(settings, amqp_url=with_heartbeat(settings.amqp_url, HEARTBEAT_S))
    config = write_config(s, tmp_path / "worker.toml")
    sim.set_task_time_scale(0.05)  # a clone takes 1 s: the cut lands inside tasks
    sids = range(8000, 8008)
    log = tmp_path / "hosts.log"
    for h in hosts:
        h.start_worker(config, concurrency=2, log=log)
    sched = scheduler.build(s, BackgroundScheduler)
    sched.start()
    try:
        with OrderClient(settings.amqp_url, settings.namespace) as orders:
            for sid in sids:
                orders.create(service_id=sid, client_id=1, product="vps-small",
                              email=f"h{sid}@example.com")
        wait_until(lambda: StepRun.select().where(StepRun.worker.startswith("host1/"))
                   .count() >= 3, 90, "host 1 at work")
        hosts[0].cut()
        cut_at = time.monotonic()
        # host 2 carries on alone once the broker gives host 1's messages back
        wait_until(lambda: time.monotonic() - cut_at > 3 * HEARTBEAT_S, 60, "the cut to last",
                   db=False)
        hosts[0].restore()
        back = datetime.now()
        try:
            wait_until(all_ready(sids), 150, "every order ready", interval=0.5)
        except AssertionError:
            raise AssertionError(describe_ops(sids)) from None
        # the host that rejoined works again: more orders, and some of its steps run
        with OrderClient(settings.amqp_url, settings.namespace) as orders:
            for sid in range(8100, 8106):
                orders.create(service_id=sid, client_id=1, product="vps-small",
                              email=f"h{sid}@example.com")
        wait_until(all_ready(range(8100, 8106)), 120, "the later orders ready", interval=0.5)
        wait_until(lambda: OutboxEvent.select().where(OutboxEvent.published_at.is_null())
                   .count() == 0, 30, "every event published")
    finally:
        sched.shutdown(wait=False)
        for h in hosts:
            h.stop_workers()
    assert StepRun.select().where(StepRun.worker.startswith("host1/")
                                  & (StepRun.created_at > back)).count() > 0, \
        "host 1 took work again after rejoining"
    assert advanced_twice() == []
    figures = invariants.check(sim)
    assert figures.operations == {"done": 14} and figures.vms == 14
    assert Operation.select().where(Operation.status != "done").count() == 0
