"""Shared fixtures: a real MariaDB database with schema.sql applied, a private RabbitMQ
namespace per test, and pvesim."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pvekvm import db as dbmod
from pvekvm import messaging
from tests import services


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with services.amqp_url() as url:
        yield url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
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
