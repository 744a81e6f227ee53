"""Chaos over the whole lifecycle on the private three-node cluster: services through a billing
mix (create, suspend/unsuspend, change package, reinstall, snapshots, backups and restore,
reset password, terminate) while workers are SIGKILLed, the scheduler is killed and two run at
once, a broker node stops, MariaDB (a private server, tests/scale/conftest.py) shuts down and
comes back, then is SIGKILLed and comes back, and pvesim answers 5xx bursts, latency, lock
timeouts, failing tasks and a node down — each fault bounded in time. The promises are then
read from pvesim and MariaDB (tests/scale/invariants.py) and from billing's durable queue.

The runs draw addresses from a pool of their own (``CHAOS_POOL``, 1,000 addresses): the
example catalog's public-v4 pool holds about 240, fewer than 300 services."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.config import ROOT, Settings
from pvekvm.models import Backup, IpPool, Operation, OutboxEvent, Product, Service
from tests.scale import invariants
from tests.scale.common import (
    DurableBilling,
    assert_dead_queue_recorded,
    queue_depths,
    work_queues_empty,
)
from tests.services import PrivateMariaDB
from workers.operations import UNFINISHED
from workers.testing.harness import SubprocessWorker, wait_until, write_config


@dataclass
class Chaos:
    """What was injected, for the report."""

    faults: Counter = field(default_factory=Counter)
    events_sent: Counter = field(default_factory=Counter)


class Scheduler:
    """``python -m workers.scheduler`` as a process (so it can be SIGKILLed)."""

    def __init__(self, config, log) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "AMQP_URL", "PVEKVM_NAMESPACE")}
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.scheduler", "--config",
                                      str(config)], cwd=ROOT, env=env,
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


#: the chaos runs' IPv4 pool (a benchmarking range, as bench/bench_deploy.py's): every product
#: of the example catalog draws from it in these runs
CHAOS_POOL = {"name": "chaos-v4", "version": 4, "network": "198.18.0.0/22",
              "gateway": "198.18.0.1", "nameservers": "198.18.0.53",
              "first": "198.18.0.10", "last": "198.18.3.250"}


def use_chaos_pool(settings: Settings) -> None:
    catalog.load({"ip_pools": [CHAOS_POOL]}, settings.secret_key_file)
    pool = IpPool.get(IpPool.name == CHAOS_POOL["name"])
    Product.update(ip_pool_id=pool.id).execute()


def _unfinished() -> int:
    return Operation.select().where(Operation.status.in_(UNFINISHED)).count()


def run_chaos(settings, sim, cluster, tmp_path, n: int, seed: int = 12,
              stop_a_node: bool = True, mariadb: PrivateMariaDB | None = None,
              workers_n: int = 3, budget_s: float = 540) -> tuple[Chaos, invariants.Figures]:
    """``mariadb``: the private server behind ``settings.database_url``, shut down and
    restarted during phase 1 and SIGKILLed and restarted during phase 2 (None: not touched).
    ``budget_s``: the whole run's time limit; phase 2 is sent once phase 1 is done or 5/9 of
    it has passed (then the phases overlap)."""
    started = time.monotonic()
    rng = random.Random(seed)
    chaos = Chaos()
    config = write_config(settings, tmp_path / "worker.toml")
    log = tmp_path / "chaos.log"
    billing = DurableBilling(settings)
    sim.set_task_time_scale(0.02)
    sids = list(range(30000, 30000 + n))
    workers = [SubprocessWorker(config, concurrency=3, log=log).start()
               for _ in range(workers_n)]
    schedulers = [Scheduler(config, log)]
    deadline = time.monotonic() + budget_s

    def send(client: OrderClient, kind: str, sid: int, **kw) -> None:
        getattr(client, kind)(service_id=sid, idempotency_key=f"chaos-{sid}-{kind}-"
                              f"{chaos.events_sent[(sid, kind)]}", **kw)
        chaos.events_sent[(sid, kind)] += 1
        chaos.events_sent[kind] += 1

    def kill_a_worker() -> None:
        i = rng.randrange(len(workers))
        workers[i].kill()
        workers[i] = SubprocessWorker(config, concurrency=3, log=log).start()
        chaos.faults["worker SIGKILL"] += 1

    def supervise() -> None:
        """What systemd's Restart=always does (README): a process that exited is started
        again — one started while MariaDB is down refuses to start, by design."""
        for i, w in enumerate(workers):
            if w.proc is not None and w.proc.poll() is not None:
                workers[i] = SubprocessWorker(config, concurrency=3, log=log).start()
                chaos.faults["process exited, restarted by the supervisor"] += 1
        for i, sched in enumerate(schedulers):
            if sched.proc.poll() is not None:
                schedulers[i] = Scheduler(config, log)
                chaos.faults["process exited, restarted by the supervisor"] += 1

    def settled() -> bool:
        supervise()
        return _unfinished() == 0

    def pvesim_burst(**faults) -> None:
        sim.set_faults(**faults)
        chaos.faults[f"pvesim {', '.join(sorted(faults))}"] += 1

    try:
        with OrderClient(settings.amqp_url, settings.namespace) as client:
            # phase 1: every create, and right behind it most of the lifecycle
            for sid in sids:
                send(client, "create", sid, client_id=sid % 9 + 1, product="vps-small",
                     email=f"x{sid}@example.com")
            for sid in sids:
                for kind in rng.sample(["suspend_pair", "change_package", "reinstall",
                                        "snapshot_create", "backup_create", "reset_password"],
                                       k=3):
                    if kind == "suspend_pair":
                        send(client, "suspend", sid)
                        send(client, "unsuspend", sid)
                    elif kind == "change_package":
                        send(client, "change_package", sid, product="vps-large")
                    elif kind == "snapshot_create":
                        send(client, "snapshot_create", sid, name="before")
                    else:
                        send(client, kind, sid)
            # the faults, each bounded in time, while phase 1 runs
            pvesim_burst(error_rate=0.3)                       # a 5xx burst
            time.sleep(2)  # how long the burst lasts (a fault's duration, not a wait for a state)
            pvesim_burst(latency_ms=150, lock_timeout_rate=0.1)
            kill_a_worker()
            time.sleep(2)  # latency and lock timeouts last this long
            pvesim_burst(task_error_rate=0.15)
            schedulers[0].kill()
            chaos.faults["scheduler SIGKILL"] += 1
            schedulers = [Scheduler(config, log), Scheduler(config, log)]
            chaos.faults["two schedulers at once"] += 1
            kill_a_worker()
            if stop_a_node:
                cluster.stop_node(1)
                chaos.faults["broker node stopped"] += 1
            pvesim_burst(down_nodes=["pve2"])
            if mariadb is not None:
                mariadb.restart()
                chaos.faults["MariaDB restarted (SIGTERM, start)"] += 1
            time.sleep(3)  # failing tasks, a node down and a stopped broker node last this long
            kill_a_worker()
            sim.set_faults()
            phase_2_at = deadline - budget_s * 4 / 9
            wait_until(lambda: settled() or time.monotonic() > phase_2_at, budget_s,
                       "phase 1 finished", interval=1.0)
            # phase 2: what needs phase 1 done: restore a backup, drop a snapshot, terminate
            for sid in sids:
                backup = Backup.select().where(Backup.service_id == sid).first()
                if backup is not None:
                    send(client, "backup_restore", sid, backup_id=backup.id)
                if rng.random() < 0.5:
                    send(client, "snapshot_delete", sid, name="before")
                if rng.random() < 0.25:
                    send(client, "terminate", sid)
            kill_a_worker()
            pvesim_burst(error_rate=0.2)
            if mariadb is not None:
                mariadb.kill()
                chaos.faults["MariaDB SIGKILLed (crash, start)"] += 1
            time.sleep(2)  # the phase-2 error burst lasts this long
            sim.set_faults()
        wait_until(settled, max(30.0, deadline - time.monotonic()),
                   "every operation finished", interval=1.0)
        wait_until(lambda: OutboxEvent.select().where(OutboxEvent.published_at.is_null())
                   .count() == 0, 60, "every event published")
        try:
            wait_until(lambda: work_queues_empty(settings), 60, "queues empty", db=False)
        except AssertionError:
            raise AssertionError(f"queues: {queue_depths(settings)}") from None
        assert_dead_queue_recorded(settings)
        heard = billing.heard_all(OutboxEvent.select().count())
    finally:
        sim.set_faults()
        for w in workers:
            w.stop()
        for s in schedulers:
            s.stop()
    duplicates_on_wire = invariants.check_events_once(heard)
    chaos.faults["duplicate event deliveries seen by billing"] = duplicates_on_wire
    billing.delete()
    figures = invariants.check(sim, sids)
    assert " crashed for operation " not in log.read_text()
    print(f"\nchaos {n} services in {time.monotonic() - started:.0f} s: {figures}; "
          f"faults: {dict(chaos.faults)}; events sent: "
          f"{ {k: v for k, v in chaos.events_sent.items() if isinstance(k, str)} }; "
          f"events heard {len(heard)} (distinct {len({e['event_id'] for e in heard})}); "
          f"load: {os.getloadavg()}")
    return chaos, figures


def test_chaos_in_ci(private_db_cluster_settings, cluster, sim, private_mariadb, tmp_path):
    """CI's version (~30 s): three services through the lifecycle and every fault but the
    broker node stop (tests/scale/test_cluster.py stops one on its own), MariaDB restarted and
    SIGKILLed included; every invariant holds afterwards."""
    settings = private_db_cluster_settings
    use_chaos_pool(settings)
    # seed 3: one of the three is terminated in phase 2, two stay live
    _, figures = run_chaos(settings, sim, cluster, tmp_path, n=3, seed=3, stop_a_node=False,
                           mariadb=private_mariadb, workers_n=2)
    assert private_mariadb.restarts == ["restart", "kill"]
    assert figures.operations["done"] > 3
    assert (figures.live_services, figures.terminated_services, figures.vms) == (2, 1, 2)


@pytest.mark.slow
def test_chaos_short(private_db_cluster_settings, cluster, sim, private_mariadb, tmp_path):
    """The short on-demand version (~30 s): six services through the same faults but the
    broker node stop, the MariaDB restart and SIGKILL included."""
    settings = private_db_cluster_settings
    use_chaos_pool(settings)
    _, figures = run_chaos(settings, sim, cluster, tmp_path, n=6, stop_a_node=False,
                           mariadb=private_mariadb)
    assert figures.operations["done"] > 6
    assert Service.select().count() == 6


@pytest.mark.slow
def test_chaos_at_scale(private_db_cluster_settings, cluster, sim, private_mariadb, tmp_path):
    """On demand: PVEKVM_CHAOS_SERVICES services (default 80; bench/RESULTS.md has 300)
    through the whole lifecycle and every fault, the broker node stop and the MariaDB restart
    and SIGKILL included; PVEKVM_CHAOS_NODE_STOP=0 leaves the node stop out;
    PVEKVM_CHAOS_BUDGET_S (default 540) bounds the run (a slower machine may need more)."""
    settings = private_db_cluster_settings
    use_chaos_pool(settings)
    n = int(os.environ.get("PVEKVM_CHAOS_SERVICES", "80"))
    stop = os.environ.get("PVEKVM_CHAOS_NODE_STOP", "1") != "0"
    budget = float(os.environ.get("PVEKVM_CHAOS_BUDGET_S", "540"))
    _, figures = run_chaos(settings, sim, cluster, tmp_path, n=n, stop_a_node=stop,
                           mariadb=private_mariadb, budget_s=budget)
    assert Service.select().count() == n and figures.operations["done"] > n
