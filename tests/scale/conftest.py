"""Fixtures of the scale tests: pvesim and an SMTP sink (as tests/e2e), a private three-node
RabbitMQ cluster for the session, and settings bound to it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pvekvm import messaging
from pvekvm.config import Settings
from tests.e2e.conftest import settings, sim, sink  # noqa: F401 - the same fixtures
from tests.e2e.harness import load_catalog, make_settings
from tests.scale.cluster import Cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Started once per session and stopped at its end (no process is left behind)."""
    why = Cluster.available()
    if why:
        pytest.skip(f"no RabbitMQ cluster here: {why}")
    name = os.environ.get("PVEKVM_TEST_NAME", "pvekvm_test")
    c = Cluster(name=name, vhost=name, port=int(os.environ.get("PVEKVM_CLUSTER_PORT", "5713")))
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
