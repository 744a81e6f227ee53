"""Orders through the real path (RabbitMQ, MariaDB, workers, pvesim with a listener per node)
while a node's API is down, and when Proxmox's own limits are met: the config lock's timeout
and the daemons' workers (pvesim/limits.py). Nothing is lost, nothing is done twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from producers.api import OrderClient
from pvekvm.models import Operation, Service, StepRun
from pvesim.testing import RunningSimulator, running_simulator
from workers.testing.harness import (
    InProcessWorkers,
    SubprocessWorker,
    all_ready,
    describe_ops,
    wait_until,
    write_config,
)

DONE = ("success", "skip", "warn")


@pytest.fixture()
def sim(tmp_path) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path, task_time_scale=0, per_node_api=True) as s:
        yield s


def _order(settings, sids) -> None:
    with OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in sids:
            billing.create(service_id=sid, client_id=sid % 5 + 1, product="vps-small",
                           email=f"c{sid}@example.com")


def _nothing_twice(sim: RunningSimulator, sids) -> None:
    """One VM per service, one clone and one start task each, each step recorded done once."""
    services = list(Service.select().where(Service.id.in_(list(sids))))
    assert len({s.vmid for s in services}) == len(sids)
    with sim.sim.cluster.lock:
        ours = {v for v, vm in sim.sim.cluster.vms.items()
                if str(vm["config"].get("template", "0")) != "1"}
        tasks = [t.status_dict() for t in sim.sim.tasks.tasks.values()]
    assert ours == {s.vmid for s in services}, "a VM too many or missing"
    ok = [t for t in tasks if t.get("exitstatus") == "OK"]
    starts = Counter(t["id"] for t in ok if t["type"] == "qmstart")
    assert sorted(starts) == sorted(str(s.vmid) for s in services)
    assert set(starts.values()) == {1}, f"started twice: {starts}"
    assert sum(t["type"] == "qmclone" for t in ok) == len(sids)
    ops = [o.id for o in Operation.select().where(Operation.service_id.in_(list(sids)))]
    done = Counter(StepRun.select(StepRun.operation_id, StepRun.from_state).where(
        StepRun.operation_id.in_(ops) & StepRun.result.in_(DONE)).tuples())
    assert done and max(done.values()) == 1, "a step recorded done twice"


def test_an_order_deploys_while_the_first_endpoint_is_down(settings, sim):
    assert len(settings.proxmox.urls) == 3
    sim.set_api("pve1", False)
    with InProcessWorkers(settings, concurrency=2):
        _order(settings, [9301])
        wait_until(all_ready([9301]), 60, "the deploy through pve2's API")
    _nothing_twice(sim, [9301])


def test_a_node_api_taken_down_mid_burst_loses_nothing_and_does_nothing_twice(settings, sim):
    sids = range(9310, 9318)
    # every answer a little slower, so the burst is still under way when the API goes down
    sim.set_limits(api_time_ms=5)
    with InProcessWorkers(settings, concurrency=6):
        _order(settings, sids)
        wait_until(lambda: Service.select().where(Service.id.in_(list(sids))
                                                  & Service.vmid.is_null(False)).count() >= 2,
                   30, "the burst under way")
        sim.set_api("pve1", False)  # the preferred endpoint: every worker was using it
        wait_until(lambda: Service.select().where(Service.id.in_(list(sids))
                                                  & (Service.status == "ready")).count() >= 3,
                   60, "orders going on through the other endpoints")
        sim.set_api("pve1", True)
        try:
            wait_until(all_ready(sids), 90, "the whole burst ready")
        except AssertionError:
            pytest.fail(describe_ops(sids))
    _nothing_twice(sim, sids)


def test_the_config_lock_timeout_is_retried_by_the_step_and_the_order_completes(settings, sim):
    sim.set_limits(lock_wait_s=0.3)
    first_vmid = settings.engine.vmid_min  # the VMID the order will get
    sim.hold_lock(first_vmid, 1.5)  # another holder (a backup, an operator's qm set)
    fast = replace(settings, engine=replace(settings.engine, retry_first_s=0.3))
    with InProcessWorkers(fast, concurrency=2):
        _order(settings, [9320])
        wait_until(all_ready([9320]), 60, "the deploy after the lock was free")
    lock_text = (f"can't lock file '/var/lock/qemu-server/lock-{first_vmid}.conf' "
                 "- got timeout")
    retried = [r for r in StepRun.select().where(StepRun.service_id == 9320)
               if r.result == "retry" and lock_text in (r.message or "")]
    assert retried, "the lock timeout was met and retried by the transition's policy"
    assert sim.limit_stats()["lock_timeouts"] >= len(retried)
    _nothing_twice(sim, [9320])


def test_the_daemon_workers_limit_is_met_and_handled_by_the_retry_layers(settings, sim):
    """pvedaemon with one worker and a slow handler, no bound of ours: calls wait in Proxmox
    past the proxy timeout (596). A read goes on to the next endpoint and is retried inline; a
    write is retried by its step, which finds what the late run did. Nothing is done twice.
    (With the bound the burst waits here instead: test_endpoints.py and bench/bench_fleet.py.)"""
    sim.set_limits(daemon_workers=1, api_time_ms=30, proxy_timeout_s=0.05)
    unbounded = replace(settings, proxmox=replace(settings.proxmox, max_calls_per_node=0),
                        engine=replace(settings.engine, retry_first_s=0.2, retry_max_s=1.0))
    sids = range(9330, 9333)
    with InProcessWorkers(unbounded, concurrency=6):
        _order(settings, sids)
        wait_until(all_ready(sids), 90, "the burst ready")
    assert sim.limit_stats()["proxy_timeouts"] > 0, "pvedaemon's limit not met: proves nothing"
    retried = [r for r in StepRun.select().where(StepRun.service_id.in_(list(sids)))
               if r.result == "retry" and "Connection timed out" in (r.message or "")]
    assert retried, "no write met the timeout: the step's retry was not exercised"
    _nothing_twice(sim, sids)


@pytest.mark.slow
def test_slow_each_node_api_in_turn_down_under_a_burst_of_worker_processes(settings, sim,
                                                                           tmp_path):
    """On demand (scripts/test -m slow): two `python -m workers` processes reading
    `[proxmox] endpoints` from their settings file, 30 orders, pvedaemon handlers 10 ms, and
    every node's API taken down in turn for a while then back: all ready, nothing twice."""
    sim.set_limits(api_time_ms=10)
    config = write_config(settings, tmp_path / "worker.toml")
    assert "endpoints = [" in config.read_text()
    sids = range(9400, 9430)
    log = tmp_path / "workers.log"
    workers = [SubprocessWorker(config, concurrency=4, log=log).start() for _ in range(2)]
    try:
        _order(settings, sids)
        def ready_at_least(n: int) -> Callable[[], bool]:
            return lambda: Service.select().where(Service.id.in_(list(sids))
                                                  & (Service.status == "ready")).count() >= n
        for i, node in enumerate(("pve1", "pve2", "pve3")):
            wait_until(ready_at_least(3 * i), 120, f"progress before {node} goes down")
            sim.set_api(node, False)
            wait_until(ready_at_least(3 * i + 3), 120, f"progress while {node} is down")
            sim.set_api(node, True)
        try:
            wait_until(all_ready(sids), 180, "the whole burst ready")
        except AssertionError:
            pytest.fail(describe_ops(sids))
    finally:
        for w in workers:
            w.stop()
    _nothing_twice(sim, sids)
    assert " crashed for operation " not in log.read_text()
