"""Fixtures of the scale tests: pvesim and an SMTP sink (as tests/e2e), a private three-node
RabbitMQ cluster for the session, settings bound to it, and a private MariaDB server (its own
``mariadbd``) a test may restart or kill without touching the machine's."""

from __future__ import annotations

import os
import shutil
import uuid
import zlib
from collections.abc import Iterator

import pytest
from peewee import MySQLDatabase

from pvekvm import db as dbmod
from pvekvm import messaging, models
from pvekvm.config import Settings
from tests import services
from tests.e2e.conftest import settings, sim, sink  # noqa: F401 - the same fixtures
from tests.scale.cluster import Cluster
from tests.scale.galera import GaleraCluster, galera_port
from workers.testing.harness import load_catalog, make_settings


def cluster_port(name: str) -> int:
    """The first AMQP port of this run's cluster: 5713 for the default test name, another
    block of ten per other name (checkouts running side by side on one machine)."""
    return 5713 if name == "pvekvm_test" else 5723 + 10 * (zlib.crc32(name.encode()) % 60)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Started once per session and stopped at its end (no process is left behind)."""
    why = Cluster.available()
    if why:
        pytest.skip(f"no RabbitMQ cluster here: {why}")
    name = os.environ.get("PVEKVM_TEST_NAME", "pvekvm_test")
    c = Cluster(name=name, vhost=name, port=int(os.environ.get("PVEKVM_CLUSTER_PORT",
                                                               cluster_port(name))))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture()
def cluster_topology(cluster: Cluster) -> Iterator[messaging.Topology]:
    """A private namespace declared through node 1 (so node 1 leads its queues), each quorum
    queue replicated on all three nodes; deleted afterwards."""
    cluster.start()  # every node up, whatever the last test stopped
    topo = messaging.Topology(f"c-{uuid.uuid4().hex[:8]}")
    messaging.declare(cluster.urls, topo)
    yield topo
    cluster.start()  # a queue with a member down is slow to delete: bring the node back first
    messaging.delete_topology(cluster.urls, topo)


@pytest.fixture()
def cluster_settings(tmp_path, cluster, cluster_topology, database_url, clean_db, sim,  # noqa: F811
                     sink) -> Settings:  # noqa: F811
    s = make_settings(tmp_path, cluster.urls, database_url, cluster_topology.namespace,
                      sim.connection, sink.settings())
    load_catalog(s)
    return s


@pytest.fixture(scope="session")
def private_mariadb(tmp_path_factory) -> Iterator[services.PrivateMariaDB]:
    """A ``mariadbd`` of this session's own (datadir under pytest's temp directory, a free
    port): tests restart or SIGKILL it (``.restart()`` / ``.kill()``), never the machine's
    server. Skipped, with the reason, where mariadbd is missing or cannot start."""
    why = services.mariadbd_unavailable_reason()
    if why:
        pytest.skip(f"no private MariaDB here: {why}")
    workdir = tmp_path_factory.mktemp("mariadb")
    server = services.PrivateMariaDB(workdir)
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        pytest.skip(f"a private mariadbd cannot start here: {exc}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)  # ~100 MB; its log stays


def _bound_fresh(url: str) -> Iterator[MySQLDatabase]:
    """The database at ``url`` created, its schema applied, every table emptied and the models
    bound to it while the caller's fixture lasts (the previous binding put back after)."""
    dbmod.create_database(url)
    previous = models.database.obj
    db = dbmod.bind(url)
    try:
        dbmod.apply_schema(db)
        dbmod.reset_data(db)
        yield db
    finally:
        db.close()
        if previous is not None:
            models.database.initialize(previous)


@pytest.fixture()
def private_database(private_mariadb: services.PrivateMariaDB) -> Iterator[MySQLDatabase]:
    """This test's database on the private server: schema applied, every table emptied, and
    the models bound to it for the test (the previous binding is put back afterwards)."""
    yield from _bound_fresh(private_mariadb.url(services.test_name()))


@pytest.fixture()
def private_db_cluster_settings(tmp_path, cluster, cluster_topology, private_mariadb,
                                private_database, sim, sink) -> Settings:  # noqa: F811
    """As ``cluster_settings``, but the database is on the private server (the example
    catalog loaded; a test adds what it needs)."""
    s = make_settings(tmp_path, cluster.urls, private_mariadb.url(services.test_name()),
                      cluster_topology.namespace, sim.connection, sink.settings())
    load_catalog(s)
    return s


@pytest.fixture(scope="session")
def galera() -> Iterator[GaleraCluster]:
    """A private three-node Galera cluster (scripts/galera-cluster.sh; its name and base port
    PVEKVM_GALERA_NAME and PVEKVM_GALERA_PORT, default from the test name), started once per
    session and stopped at its end (no mariadbd is left behind; its data stays in var/galera/
    for the next run, which bootstraps it by the safe_to_bootstrap rule)."""
    why = GaleraCluster.available()
    if why:
        pytest.skip(f"no Galera cluster here: {why}")
    name = os.environ.get("PVEKVM_GALERA_NAME") or os.environ.get("PVEKVM_TEST_NAME",
                                                                  "pvekvm_test")
    g = GaleraCluster(name=name, port=int(os.environ.get("PVEKVM_GALERA_PORT",
                                                         galera_port(name))))
    try:
        g.start()
    except RuntimeError as exc:
        g.stop()
        pytest.skip(f"a Galera cluster cannot start here: {exc}")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture()
def galera_database(galera: GaleraCluster) -> Iterator[MySQLDatabase]:
    """This test's database on the cluster (schema applied through the writer, every table
    emptied), the models bound to it for the test; every node up at its start (whatever the
    last test stopped)."""
    galera.start()
    yield from _bound_fresh(galera.url(services.test_name()))
