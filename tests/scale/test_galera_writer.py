"""The writer rule and what Galera changes, on the private three-node cluster
(tests/scale/galera.py): a node that is not synced is passed over and taken back once synced,
a certification conflict at COMMIT is a deadlock to the engine, a node outside the primary
component (1047) is left for the next, schema changes reach every node in total order, and the
API's and reconciler's reads wait for the last commit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymysql
import pytest

from pvekvm import db as dbmod
from pvekvm import galera as galeramod
from pvekvm.dberrors import DbError, classify
from tests import services
from tests.scale.galera import GaleraCluster


def _port(db) -> int:
    return int(db.execute_sql("SELECT @@port").fetchone()[0])


@pytest.fixture(scope="module")
def schema(galera) -> Iterator[str]:
    """The test name's database on the cluster, schema applied once for this module (these
    tests read no pvekvm rows; emptying 26 tables is a cluster-wide TOI statement each)."""
    galera.start()
    url = galera.url(services.test_name())
    dbmod.create_database(url)
    db = dbmod.open_database(url)
    dbmod.apply_schema(db)
    db.close()
    yield url


@pytest.fixture()
def probe(galera, schema) -> Iterator[str]:
    """A table of the test's own (with its primary key), dropped afterwards."""
    galera.start()  # every node up, whatever the last test stopped
    name = services.test_name()
    galera.query(1, f"CREATE TABLE IF NOT EXISTS `{name}`.galera_probe "
                    "(id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB")
    yield "galera_probe"
    galera.query(1, f"DROP TABLE IF EXISTS `{name}`.galera_probe")


def test_a_node_not_synced_is_passed_over_and_the_writer_moves_back(galera, probe,
                                                                    monkeypatch):
    """Node 1 desynced (wsrep_desync: state 2, as a donor): a new connection writes through
    node 2, not node 3; synced again, the connection moves back between statements."""
    monkeypatch.setattr(galeramod, "FAILBACK_CHECK_S", 0.2)
    url = galera.url(services.test_name())
    galera.query(1, "SET GLOBAL wsrep_desync = ON")
    try:
        db = dbmod.open_database(url)
        assert _port(db) == galera.sql_port(2)
        db.execute_sql("INSERT INTO galera_probe (id, name) VALUES (900, 'node 2')")
    finally:
        galera.query(1, "SET GLOBAL wsrep_desync = OFF")
    deadline = time.monotonic() + 20
    while _port(db) != galera.sql_port(1):
        assert time.monotonic() < deadline, "the connection never moved back to node 1"
        time.sleep(0.1)
    # what node 2 wrote is there on node 1 (the causality wait on connecting)
    assert db.execute_sql("SELECT name FROM galera_probe WHERE id = 900").fetchone() == \
        ("node 2",)
    db.close()


def test_a_certification_conflict_at_commit_is_retried_as_a_deadlock(galera, probe):
    """Two nodes change one row: the second COMMIT fails certification with 1213, which the
    engine, intake and the consumer read as a deadlock (nothing committed: run again)."""
    name = services.test_name()
    conns = [pymysql.connect(host="127.0.0.1", port=galera.sql_port(i), user="root",
                             database=name, autocommit=False) for i in (1, 2)]
    try:
        conns[0].cursor().execute("INSERT INTO galera_probe (id, name) VALUES (901, 'a')")
        conns[0].commit()
        for c in conns:
            c.begin()
        conns[1].cursor().execute("UPDATE galera_probe SET name = 'two' WHERE id = 901")
        conns[0].cursor().execute("UPDATE galera_probe SET name = 'one' WHERE id = 901")
        conns[0].commit()
        with pytest.raises(pymysql.err.OperationalError) as caught:
            conns[1].commit()  # or earlier: node 2 aborts its local transaction (BF abort)
        assert caught.value.args[0] == 1213
        assert classify(caught.value) is DbError.DEADLOCK
        conns[1].rollback()
        cur = conns[1].cursor()
        cur.execute("SELECT name FROM galera_probe WHERE id = 901")
        assert cur.fetchone() == ("one",)
    finally:
        for c in conns:
            c.close()


def test_schema_changes_reach_every_node_in_total_order(galera, probe):
    """init-db through the writer: every node has every table, the same version recorded; a
    table without a primary key is refused on these nodes (innodb_force_primary_key)."""
    name = services.test_name()
    ref = None
    for i in (1, 2, 3):
        tables = galera.query(i, "SELECT COUNT(*) FROM information_schema.tables WHERE "
                              "table_schema = %s", name)
        version = galera.query(i, f"SELECT MAX(version) FROM `{name}`.schema_version")
        assert tables and version, f"node {i} does not answer"
        ref = ref or (tables, version)
        assert (tables, version) == ref, f"node {i}: {tables} {version}, node 1: {ref}"
    assert ref is not None and ref[1][0][0] == dbmod.latest_version()
    with pytest.raises(pymysql.err.MySQLError):
        conn = pymysql.connect(host="127.0.0.1", port=galera.sql_port(1), user="root",
                               database=name)
        try:
            conn.cursor().execute("CREATE TABLE no_key (x INT) ENGINE=InnoDB")
        finally:
            conn.close()


def test_the_api_and_the_reconciler_read_causally_the_workers_do_not(galera, schema):
    url = schema
    causal, plain = dbmod.open_database(url, causal_reads=True), dbmod.open_database(url)
    assert causal.execute_sql("SELECT @@wsrep_sync_wait").fetchone()[0] == 1
    assert plain.execute_sql("SELECT @@wsrep_sync_wait").fetchone()[0] == 0
    causal.close()
    plain.close()


@pytest.mark.slow
def test_a_node_outside_the_primary_component_is_left_for_the_next(galera: GaleraCluster,
                                                                   probe):
    """On demand (~15 s): node 1 cut off the group (gmcast.isolate) answers 1047; the open
    connection's next statement runs on node 2; node 1 rejoins afterwards."""
    db = dbmod.open_database(galera.url(services.test_name()))
    assert _port(db) == galera.sql_port(1)
    galera.query(1, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'")
    try:
        deadline = time.monotonic() + 30
        while galera.status(1, "wsrep_ready").get("wsrep_ready") != "OFF":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert db.execute_sql("SELECT COUNT(*) FROM galera_probe").fetchone() == (0,)
        assert _port(db) == galera.sql_port(2)
    finally:
        galera.query(1, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
        db.close()
    galera.start()


def test_the_start_up_check_names_the_writer_it_reached(galera, schema):
    """``python -m pvekvm check`` (and every program's start-up check) on the cluster's URL:
    ok through the first synced node, the next when node 1 is desynced."""
    from pvekvm.config import Settings
    from pvekvm.preflight import check_database

    settings = Settings(database_url=schema, amqp_url="amqp://unused")
    verdict = check_database(settings)
    assert verdict.status == "ok" and f":{galera.sql_port(1)}," in verdict.detail, verdict
    galera.query(1, "SET GLOBAL wsrep_desync = ON")
    try:
        verdict = check_database(settings)
    finally:
        galera.query(1, "SET GLOBAL wsrep_desync = OFF")
    assert verdict.status == "ok" and f":{galera.sql_port(2)}," in verdict.detail, verdict
