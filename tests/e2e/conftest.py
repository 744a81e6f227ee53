"""Fixtures for end-to-end tests: pvesim, an SMTP sink and settings bound to this test's
database and RabbitMQ namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pvekvm.config import Settings
from pvesim.testing import RunningSimulator, running_simulator
from workers.testing.harness import load_catalog, make_settings
from workers.testing.smtp_sink import SmtpSink


@pytest.fixture()
def sim(tmp_path) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path, task_time_scale=0) as s:
        yield s


@pytest.fixture()
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


@pytest.fixture()
def settings(tmp_path, amqp_url, database_url, clean_db, topology, sim, sink) -> Settings:
    s = make_settings(tmp_path, amqp_url, database_url, topology.namespace, sim.connection,
                      sink.settings())
    load_catalog(s)
    return s
