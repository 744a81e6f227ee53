"""One pvekvm for the WHMCS module's tests (package scope): pvesim, the engine's workers on a
private namespace, the API over TCP with a billing token; and the PHP side that calls into it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from peewee import MySQLDatabase

from pvekvm import db as dbmod
from pvekvm import messaging
from pvekvm.apps.api.auth import hash_token
from pvekvm.config import ApiSettings
from pvesim.testing import running_simulator
from tests.api.server import ApiServer
from tests.whmcs.phpcall import Whmcs, php_or_skip
from workers.testing.harness import InProcessWorkers, load_catalog, make_settings
from workers.testing.smtp_sink import SmtpSink

TOKEN = "whmcs-" + uuid.uuid4().hex


@contextlib.contextmanager
def whmcs_stack(tmp: Path, amqp_url: str, database_url: str, database: MySQLDatabase,
                token: str, rescue_iso: str = "", **catalog: Any) -> Iterator[Whmcs]:
    """pvesim, the workers on a private namespace and the API with billing token ``token``,
    on a database emptied first; ``rescue_iso``: ``[engine] rescue_iso``; ``catalog``: what
    load_catalog changes in the shipped catalog."""
    php = php_or_skip()
    dbmod.reset_data(database)
    topo = messaging.Topology(f"t-{uuid.uuid4().hex[:8]}")
    messaging.declare(amqp_url, topo)
    try:
        with running_simulator(tmp, task_time_scale=0) as sim, SmtpSink() as sink:
            settings = make_settings(tmp, amqp_url, database_url, topo.namespace,
                                     sim.connection, sink.settings())
            settings = replace(settings, api=ApiSettings(
                tokens=(("whmcs", hash_token(token)),), proxmox_timeout_s=2.0),
                engine=replace(settings.engine, rescue_iso=rescue_iso))
            load_catalog(settings, **catalog)
            with InProcessWorkers(settings, concurrency=4), ApiServer(settings) as api:
                yield Whmcs(php, api.url, token, tmp, settings, sim)
    finally:
        messaging.delete_topology(amqp_url, topo)


@pytest.fixture(scope="package")
def whmcs(tmp_path_factory, amqp_url, database_url, database) -> Iterator[Whmcs]:
    with whmcs_stack(tmp_path_factory.mktemp("whmcs"), amqp_url, database_url, database,
                     TOKEN) as stack:
        yield stack
