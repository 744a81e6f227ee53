"""Failover for a hung writer on the private three-node Galera cluster (tests/scale/galera.py):
orders, package changes and terminates in flight while the writer node is SIGSTOPped — its
sockets stay open, nothing answers, so only the connections' read timeout
(``[database] read_timeout_s``, pvekvm/dburl.py) tells the engine it is lost. The other two
nodes evict it, every process moves to node 2 (never node 3), and the work goes on; the node
is SIGCONTed, finds itself evicted, rejoins by IST, and the processes move back to it. After:
nothing lost, nothing done twice, no orphan VM, no VMID or address given twice, every
operation finished (tests/scale/invariants.py); the time from the SIGSTOP to the first step
committed on the new writer is measured and printed (compare test_galera.py's for a kill)."""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace

import pymysql
import pytest

from producers.api import OrderClient
from pvekvm import db as dbmod
from pvekvm import galera as galeramod
from pvekvm.config import Settings
from pvekvm.dburl import DatabaseTarget, parse_url
from pvekvm.galera import FAILBACK_CHECK_S, HUNG_SKIP_S
from pvekvm.models import Operation, OutboxEvent
from tests import services
from tests.scale import invariants
from tests.scale.common import queue_depths, work_queues_empty
from tests.scale.galera import GaleraCluster
from tests.scale.test_chaos import Scheduler
from tests.scale.test_galera import (  # noqa: F401 - galera_settings: the same fixture
    Report,
    _causal_count,
    _count_conflicts,
    _nothing_lost_nothing_twice,
    _steps_on,
    _transfer_lines,
    _unfinished,
    first_wave,
    galera_settings,
    sender,
    under_way_on_node_1,
)
from workers.operations import UNFINISHED
from workers.testing.harness import SubprocessWorker, wait_until, write_config

#: the short form's read timeout: what a hang costs is this plus the eviction (6 s here)
CI_READ_TIMEOUT_S = 10.0


def _stuck() -> list[tuple]:
    """What the unfinished operations are at (for a failed wait's message)."""
    return [(o.id, o.kind, o.state, o.status, o.version, o.nudge_published, o.attempt,
             str(o.updated_at)) for o in Operation.select().where(
                 Operation.status.in_(UNFINISHED))]


def _rejoined(galera: GaleraCluster, log_before: int) -> bool:
    """Node 1 went through a new view since its log was ``log_before`` long (it transferred
    state, or failed to: the log says which) and is synced in a cluster of three."""
    log = galera.error_log(1)[log_before:]
    return any(w in log for w in ("IST received", "SST", "State transfer")) \
        and galera.state(1) == "Synced" and all(
            galera.status(i, "wsrep_cluster_size").get("wsrep_cluster_size") == "3"
            for i in (1, 2))


def _moved_back(galera: GaleraCluster, db: str, synced: float, timeout: float) -> float:
    """Seconds from ``synced`` (node 1 synced again) until every connection works through
    node 1: a connection elsewhere is one idle since before its fail-back was due (it checks
    before its next statement, pvekvm/galera.py), and node 1 has some. AssertionError with
    where they are after ``timeout``."""
    due = FAILBACK_CHECK_S + HUNG_SKIP_S + 1  # a busy connection has looked by then
    while True:
        now = time.monotonic()
        rows = galera.query(2, "SELECT COMMAND, TIME FROM information_schema.PROCESSLIST "
                            "WHERE DB = %s AND USER <> 'system user'", db) + \
            galera.query(3, "SELECT COMMAND, TIME FROM information_schema.PROCESSLIST "
                         "WHERE DB = %s AND USER <> 'system user'", db)
        busy = [r for r in rows if r[0] != "Sleep" or int(r[1]) < now - synced - due]
        if now - synced > due and galera.clients(db, nodes=(1,)).get(1) and not busy:
            return now - synced
        if now - synced > timeout:
            raise AssertionError(f"{timeout} s after node 1 synced, connections still used "
                                 f"elsewhere: {busy}; where: {galera.clients(db)}")
        time.sleep(0.5)


def run_hang(settings: Settings, sim, galera: GaleraCluster, tmp_path, n: int, seed: int,
             workers_n: int = 2, reconciler: bool = True,
             budget_s: float = 600) -> tuple[Report, invariants.Figures, dict[str, float]]:
    """The scenario above; (report, invariants' figures, timings) with the timings
    ``evicted_s`` (SIGSTOP → nodes 2 and 3 in a primary component of two), ``hang_to_first_step_s``,
    ``rejoin_s`` (SIGCONT → node 1 synced) and ``fail_back_s`` (→ every connection on node 1)."""
    started = time.monotonic()
    rng = random.Random(seed)
    report = Report()
    timings: dict[str, float] = {}
    db = settings.database_url.rsplit("/", 1)[1]
    config = write_config(settings, tmp_path / "worker.toml")
    log = tmp_path / "hang.log"
    sim.set_task_time_scale(0.02)
    sids = list(range(41000, 41000 + n))
    workers = [SubprocessWorker(config, concurrency=3, log=log).start()
               for _ in range(workers_n)]
    scheduler = Scheduler(config, log) if reconciler else None

    send = sender(report, "gh")
    try:
        with OrderClient(settings.amqp_url, settings.namespace) as client:
            first_wave(client, send, sids, "h")
            under_way_on_node_1(galera, db, n, budget_s, "hang")
            time.sleep(rng.uniform(0, 1.5 if n < 50 else 8.0))  # a random moment in flight
            paused = time.monotonic()
            galera.pause_node(1)
            wait_until(lambda: galera.status(2, "wsrep_cluster_size").get(
                "wsrep_cluster_size") == "2", 60, "node 1 evicted", interval=0.2, db=False)
            timings["evicted_s"] = time.monotonic() - paused
            base = None
            while base is None and time.monotonic() - paused < 60:
                base = _causal_count(galera, 2, db)
            assert base is not None, "node 2 answered no causal read within 60 s of the hang"
            wait_until(lambda: (_causal_count(galera, 2, db) or 0) > base, 180,
                       "a step committed on the new writer", interval=0.05, db=False)
            timings["hang_to_first_step_s"] = report.kill_to_first_step_s = \
                time.monotonic() - paused
            where = galera.clients(db, nodes=(2, 3))
            assert where.get(2) and not where.get(3), \
                f"connections after the hang: {where} (node 2 only)"
            log_before = len(galera.error_log(1))
            resumed = time.monotonic()
            galera.resume_node(1)
            # a SIGCONTed node says Synced at once, in the view it had before the stop: it has
            # rejoined when its log says how (IST) and the cluster has three members again
            wait_until(lambda: _rejoined(galera, log_before), 180, "node 1 rejoined",
                       interval=0.2, db=False)
            timings["rejoin_s"] = time.monotonic() - resumed
            rejoin = galera.error_log(1)[log_before:]
            report.ist = "IST received" in rejoin
            report.transfer = _transfer_lines(rejoin)
            # a second wave: every process busy, so every connection checks for fail-back
            for sid in sids[::4]:
                send(client, "terminate", sid)
            for sid in sids[3::4]:
                send(client, "change_package", sid, product="vps-large")
            timings["fail_back_s"] = _moved_back(galera, db, time.monotonic(), 90) + \
                timings["rejoin_s"]
        try:
            wait_until(lambda: _unfinished() == 0, max(60.0, budget_s - (time.monotonic()
                                                                           - started)),
                       "every operation finished", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {_stuck()}; queues: {queue_depths(settings)}") \
                from None
        wait_until(lambda: OutboxEvent.select().where(OutboxEvent.published_at.is_null())
                   .count() == 0, 60, "every event published")
        wait_until(lambda: work_queues_empty(settings), 60, "queues empty", db=False)
    finally:
        if "node 1 SIGCONTed" not in galera.events:
            galera.resume_node(1)  # never leave a stopped mariadbd behind
        for w in workers:
            w.stop()
        if scheduler is not None:
            scheduler.stop()
    figures = invariants.check(sim, sids)
    _nothing_lost_nothing_twice(report, sids)
    assert " crashed for operation " not in log.read_text()
    for i in (1, 2, 3):
        _count_conflicts(report, galera, i)
    report.events = galera.events + report.events
    print(f"\ngalera hang, {n} services in {time.monotonic() - started:.0f} s, read timeout "
          f"{settings.database_read_timeout_s:g} s: SIGSTOP of the writer to the first step "
          f"committed on the new writer {timings['hang_to_first_step_s']:.2f} s (evicted after "
          f"{timings['evicted_s']:.1f} s); SIGCONT to synced {timings['rejoin_s']:.1f} s, by "
          f"IST: {report.ist}; every connection back on node 1 {timings['fail_back_s']:.1f} s "
          f"after SIGCONT; certification failures {report.cert_failures}, brute-force aborts "
          f"{report.bf_aborts}; {figures}; events: {report.events}; sent: "
          f"{ {k: v for k, v in report.sent.items() if isinstance(k, str)} }; "
          f"load {os.getloadavg()}")
    return report, figures, timings


def test_galera_hung_writer_in_ci(galera_settings, galera, sim, tmp_path):  # noqa: F811
    """CI's version: eight services; the writer SIGSTOPped mid-run with a 10 s read timeout:
    the work moves to node 2 within the read timeout plus the reconnect, node 1 rejoins by
    IST after SIGCONT and the processes move back to it; every promise holds."""
    s = replace(galera_settings, database_read_timeout_s=CI_READ_TIMEOUT_S)
    report, figures, timings = run_hang(s, sim, galera, tmp_path, n=8, seed=31,
                                        reconciler=False, budget_s=240)
    assert report.ist, "node 1 did not rejoin by IST; its state transfer lines:\n" + \
        "\n".join(report.transfer)
    assert figures.operations["done"] >= 8
    # the eviction and the read timeout run at once; then a reconnect (a few seconds)
    assert timings["hang_to_first_step_s"] < CI_READ_TIMEOUT_S + 15, timings


@pytest.mark.slow
def test_galera_hung_writer_at_scale(galera_settings, galera, sim, tmp_path):  # noqa: F811
    """On demand: PVEKVM_GALERA_SERVICES services (default 200), the shipped read timeout
    (or PVEKVM_GALERA_READ_TIMEOUT_S)."""
    n = int(os.environ.get("PVEKVM_GALERA_SERVICES", "200"))
    timeout = float(os.environ.get("PVEKVM_GALERA_READ_TIMEOUT_S",
                                   galera_settings.database_read_timeout_s))
    s = replace(galera_settings, database_read_timeout_s=timeout)
    report, figures, timings = run_hang(s, sim, galera, tmp_path, n=n, workers_n=3,
                                        seed=int(os.environ.get("PVEKVM_GALERA_SEED", "7")))
    assert report.ist and figures.operations["done"] >= n
    assert timings["hang_to_first_step_s"] < timeout + 30, timings


def test_a_hung_writer_is_passed_over_and_taken_back_only_once_it_is_back(galera,
                                                                          monkeypatch):
    """The writer rule with a hang, step by step: a statement on the SIGSTOPped writer ends
    after the read timeout and runs again on node 2 (peewee's reconnect, node 1 marked hung and
    passed over, no handshake wait on it); the SIGCONTed node, which says Synced at once in its
    old view, is not taken by the fail-back probe until it is really back (its causal read
    does not return); then the connection moves back to it."""
    monkeypatch.setattr(galeramod, "FAILBACK_CHECK_S", 0.2)
    monkeypatch.setattr(galeramod, "_hung", {})
    galera.start()
    url = galera.url(services.test_name())
    dbmod.create_database(url)
    target = parse_url(url)
    db = dbmod.open_database(url, read_timeout_s=4)
    assert _port(db) == galera.sql_port(1)
    galera.pause_node(1)
    try:
        t0 = time.monotonic()
        assert _port(db) == galera.sql_port(2)  # the same call: timed out, then node 2
        took = time.monotonic() - t0
        assert 4 <= took < 4 + 8, f"{took:.1f} s (read timeout 4 s, then node 2's wait " \
                                  "for the eviction)"
        assert galeramod.hung(target.nodes[0])
        t0 = time.monotonic()
        galeramod.connect_writer(target, read_timeout_s=4).close()
        assert time.monotonic() - t0 < 2, "a new connection waited on the hung node"
    finally:
        galera.resume_node(1)
    earlier = DatabaseTarget(target.nodes[:1], target.user, target.password, target.name)
    with pytest.raises(pymysql.err.MySQLError):  # what the fail-back asks, right after SIGCONT
        galeramod.connect_writer(earlier, connect_timeout=1, cluster=True, synced_only=True,
                                 read_timeout_s=1)
    deadline = time.monotonic() + 60
    while _port(db) != galera.sql_port(1):
        assert time.monotonic() < deadline, "the connection never moved back to node 1"
        time.sleep(0.2)
    db.close()


def _port(db) -> int:
    return int(db.execute_sql("SELECT @@port").fetchone()[0])
