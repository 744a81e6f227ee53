"""Shared fixtures: a real MariaDB database with schema.sql applied, a private RabbitMQ
namespace per test, and pvesim. With ``PVEKVM_CONTAINERS=1`` RabbitMQ, MariaDB and PowerDNS are
testcontainers (tests/services.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from pvekvm import db as dbmod
from pvekvm import messaging
from tests import services

# Containers mode: PowerDNS's ports must be in the environment before test modules read them.
PDNS_PORTS = services.reserve_pdns_ports()

PDNS_FIXTURES = {"pdns", "pdns_zones"}  # the fixtures of the tests that talk to PowerDNS


def _engine_or_skip() -> None:
    if services.containers_mode():
        reason = services.engine_unavailable_reason()
        if reason:
            pytest.skip(f"containers mode: {reason}")


_pdns_container = contextlib.ExitStack()
_pdns_started: set[str] = set()  # {"started"} once the PowerDNS container is up


def pytest_runtest_setup(item) -> None:
    """Containers mode: PowerDNS as a testcontainer, started before the first test that uses
    it (a test without it never waits for it); without an engine those tests are skipped."""
    if PDNS_PORTS is None or not PDNS_FIXTURES & set(getattr(item, "fixturenames", ())):
        return
    _engine_or_skip()
    if not _pdns_started:
        _pdns_container.enter_context(services.powerdns_container(PDNS_PORTS))
        _pdns_started.add("started")


def pytest_sessionfinish(session) -> None:
    _pdns_container.close()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    _engine_or_skip()
    with services.amqp_url() as url:
        yield url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    _engine_or_skip()
    with services.database_url() as url:
        yield url


@pytest.fixture(scope="session")
def database(database_url: str):
    dbmod.create_database(database_url)
    db = dbmod.bind(database_url)
    dbmod.apply_schema(db)
    yield db
    db.close()


@pytest.fixture()
def clean_db(database):
    """The bound database with every table emptied before the test."""
    dbmod.reset_data(database)
    return database


@pytest.fixture()
def topology(amqp_url: str) -> Iterator[messaging.Topology]:
    """A private, declared namespace of exchanges and queues, deleted afterwards."""
    topo = messaging.Topology(f"t-{uuid.uuid4().hex[:8]}")
    messaging.declare(amqp_url, topo)
    yield topo
    messaging.delete_topology(amqp_url, topo)
