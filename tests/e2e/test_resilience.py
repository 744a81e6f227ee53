"""The guarantees under load and failure: many orders at once, workers killed with SIGKILL
mid-deploy, Proxmox answering 5xx and failing tasks."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from producers.api import OrderClient
from pvekvm.models import IpAddress, Operation, OutboxEvent, Service
from tests import services
from workers import scheduler
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    SubprocessWorker,
    all_ready,
    describe_ops,
    wait_until,
    write_config,
)


def _order(billing: OrderClient, sids: range, product: str = "vps-small") -> None:
    for sid in sids:
        billing.create(service_id=sid, client_id=sid % 7 + 1, product=product,
                       email=f"c{sid}@example.com")


def _vms_of_ours(sim) -> dict[int, str]:
    """Every non-template VM in pvesim → its description."""
    with sim.sim.cluster.lock:
        return {vmid: vm["config"].get("description", "")
                for vmid, vm in sim.sim.cluster.vms.items()
                if str(vm["config"].get("template", "0")) != "1"}


def _past(deadline: float) -> Callable[[], bool]:
    """A condition true once the monotonic clock is past ``deadline``."""
    return lambda: time.monotonic() > deadline


def _assert_one_vm_each(sim, sids: range) -> None:
    services = {s.id: s for s in Service.select().where(Service.id.in_(list(sids)))}
    vmids = [s.vmid for s in services.values()]
    assert len(set(vmids)) == len(sids), "VMIDs must be distinct"
    vms = _vms_of_ours(sim)
    assert set(vms) == set(vmids), f"orphans: {set(vms) - set(vmids)}"
    for sid, svc in services.items():
        assert svc.vmid is not None, f"service {sid} has no VM"
        assert f"service={sid} " in vms[svc.vmid] + " "
    ips = [a.address for a in IpAddress.select().where(IpAddress.service_id.in_(list(sids)))
           if a.version == 4]
    assert len(ips) == len(set(ips)) == len(sids), "IPv4 addresses must be distinct"


@pytest.fixture()
def reconciler(settings):
    sched = scheduler.build(settings, BackgroundScheduler)
    sched.start()
    yield sched
    sched.shutdown(wait=False)


def test_fifty_orders_at_once_all_become_ready_with_distinct_ips_and_vmids(settings, sim):
    sids = range(1000, 1050)
    with InProcessWorkers(settings, concurrency=8), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _order(billing, sids)
        wait_until(all_ready(sids), 240, "50 services ready", interval=0.5)
    _assert_one_vm_each(sim, sids)
    assert Operation.select().where(Operation.status != "done").count() == 0


def test_workers_killed_mid_deploy_lose_no_order_and_leave_no_orphan(
        settings, sim, tmp_path, reconciler):
    sim.set_task_time_scale(0.02)  # clone 0.4 s, start 0.16 s: kills land inside tasks
    config = write_config(settings, tmp_path / "worker.toml")
    log = tmp_path / "workers.log"
    sids = range(2000, 2012)
    rng = random.Random(7)
    events = BillingQueue(settings)
    workers = [SubprocessWorker(config, concurrency=3, log=log).start() for _ in range(2)]
    try:
        with OrderClient(settings.amqp_url, settings.namespace) as billing:
            _order(billing, sids, product="vps-large")
        for _ in range(5):  # several kills at random moments, each replaced by a new worker
            deadline = time.monotonic() + rng.uniform(0.3, 1.5)
            wait_until(_past(deadline), 5, "a random moment")
            victim = rng.randrange(len(workers))
            workers[victim].kill()
            workers[victim] = SubprocessWorker(config, concurrency=3, log=log).start()
        wait_until(all_ready(sids), 180, "every order ready after the kills", interval=0.5)
        wait_until(lambda: OutboxEvent.select().where(OutboxEvent.published_at.is_null())
                   .count() == 0, 30, "every event published")
    finally:
        for w in workers:
            w.stop()
    _assert_one_vm_each(sim, sids)
    assert " crashed for operation " not in log.read_text()  # no step hit an unexpected bug
    _assert_billing_heard_each_event_once(events, sids)


def _assert_billing_heard_each_event_once(events: BillingQueue, sids: range) -> None:
    """On the wire an event may come twice (at least once); by event id, billing hears every
    recorded event, and exactly one accepted, completed and ready per deploy."""
    received = {e["event_id"]: e for e in wait_until(
        lambda: events.received if len(events.drain()) >= OutboxEvent.select().count() else None,
        30, "the events on billing's queue", db=True)}
    events.close()
    assert set(received) == {r.event_id for r in OutboxEvent.select()}
    for sid in sids:
        mine = [e["type"] for e in received.values() if e["service_id"] == sid]
        assert sorted(mine) == ["operation.accepted", "operation.completed", "service.ready"]


def test_orders_converge_while_proxmox_fails_calls_and_tasks(settings, sim, reconciler):
    sim.set_faults(error_rate=0.10, task_error_rate=0.10)
    sids = range(3000, 3015)
    with InProcessWorkers(settings, concurrency=6), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _order(billing, sids)
        try:
            wait_until(all_ready(sids), 180, "orders ready despite faults", interval=0.5)
        except AssertionError:
            raise AssertionError(describe_ops(sids)) from None
    sim.set_faults()
    _assert_one_vm_each(sim, sids)


@pytest.mark.slow
def test_soak_kills_and_faults_together(settings, sim, tmp_path, reconciler):
    """On demand (scripts/test -m slow): 40 orders, a dozen SIGKILLs, Proxmox faults."""
    sim.set_task_time_scale(0.02)
    sim.set_faults(error_rate=0.05, task_error_rate=0.05)
    config = write_config(settings, tmp_path / "worker.toml")
    sids = range(5000, 5040)
    rng = random.Random(11)
    workers = [SubprocessWorker(config, concurrency=4).start() for _ in range(3)]
    try:
        with OrderClient(settings.amqp_url, settings.namespace) as billing:
            _order(billing, sids, product="vps-large")
        for _ in range(12):
            deadline = time.monotonic() + rng.uniform(0.5, 2.0)
            wait_until(_past(deadline), 5, "a random moment")
            victim = rng.randrange(len(workers))
            workers[victim].kill()
            workers[victim] = SubprocessWorker(config, concurrency=4).start()
        wait_until(all_ready(sids), 300, "every order ready", interval=1.0)
    finally:
        for w in workers:
            w.stop()
    sim.set_faults()
    _assert_one_vm_each(sim, sids)


@pytest.mark.slow
def test_orders_survive_a_broker_restart(settings, sim, reconciler):
    """On demand: RabbitMQ's app stops and starts mid-deploy; workers reconnect, nothing lost."""
    _deploy_through(settings, sim, range(5100, 5110),
                    lambda: services.restart_broker(settings.amqp_url))


def test_parallel_clones_stay_within_the_storage_lock_limit(settings, sim):
    """Full clones hold PVE's storage lock: the engine never has more in flight per template
    node than PVE tolerates, so no clone dies of a lock timeout."""
    from pvekvm.models import StepRun

    sim.set_task_time_scale(0.05)  # a clone takes 1 s: orders queue for the two slots
    sids = range(5200, 5208)
    with InProcessWorkers(settings, concurrency=8), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _order(billing, sids)
        wait_until(all_ready(sids), 120, "every order ready", interval=0.5)
    lock_failures = StepRun.select().where(StepRun.message.contains("got timeout")).count()
    assert lock_failures == 0
    _assert_one_vm_each(sim, sids)


@pytest.mark.slow
def test_orders_survive_a_database_restart(settings, sim, reconciler):
    """On demand: MariaDB shuts down mid-deploy and comes back; workers hold their messages,
    wait for it, and every order still becomes ready (nothing dead-lettered)."""
    from pvekvm.models import DeadLetter

    _deploy_through(settings, sim, range(5300, 5310),
                    lambda: services.restart_database(settings.database_url))
    assert DeadLetter.select().count() == 0


def _deploy_through(settings, sim, sids: range, disruption) -> None:
    """Ten orders under way when ``disruption`` runs; all must still become ready, one VM each."""
    sim.set_task_time_scale(0.05)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        _order(billing, sids)
        wait_until(lambda: Operation.select().where(Operation.state != "new").count() >= 5,
                   30, "deploys under way")
        disruption()
        wait_until(all_ready(sids), 180, "every order ready after the restart", interval=1.0)
    _assert_one_vm_each(sim, sids)
