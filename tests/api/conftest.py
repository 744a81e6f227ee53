"""One environment for all API tests (package scope, built once): pvesim, the engine's workers
on a private namespace, two services deployed through the engine — A ready (client 1), B
suspended (client 2) — and the API served over TCP with a billing token and client tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from producers.api import OrderClient
from pvekvm import db as dbmod
from pvekvm import messaging
from pvekvm.apps.api.auth import hash_token
from pvekvm.config import ApiSettings, Settings
from pvekvm.models import Service
from pvesim.testing import RunningSimulator, running_simulator
from tests.api.server import ApiServer
from workers.testing.harness import (
    InProcessWorkers,
    all_ready,
    load_catalog,
    make_settings,
    wait_until,
)
from workers.testing.smtp_sink import SmtpSink

SID_A, SID_B = 7101, 7102
BILLING_TOKEN = "billing-" + uuid.uuid4().hex


@dataclass
class ApiEnv:
    settings: Settings
    sim: RunningSimulator
    api: ApiServer
    billing: OrderClient
    minted: dict[int, str] = field(default_factory=dict)

    def client_token(self, service_id: int) -> str:
        """A client token of the service, minted once over HTTP with the billing token."""
        if service_id not in self.minted:
            r = self.api.post(f"/v1/services/{service_id}/client-token", BILLING_TOKEN)
            assert r.status_code == 200, r.text
            self.minted[service_id] = r.json()["token"]
        return self.minted[service_id]


def api_settings(base: Settings, **kw: Any) -> Settings:
    return replace(base, api=ApiSettings(tokens=(("whmcs", hash_token(BILLING_TOKEN)),), **kw))


@pytest.fixture(scope="package")
def api_env(tmp_path_factory, amqp_url, database_url, database) -> Iterator[ApiEnv]:
    tmp = tmp_path_factory.mktemp("api")
    dbmod.reset_data(database)
    topo = messaging.Topology(f"t-{uuid.uuid4().hex[:8]}")
    messaging.declare(amqp_url, topo)
    try:
        with running_simulator(tmp, task_time_scale=0) as sim, SmtpSink() as sink:
            settings = api_settings(make_settings(tmp, amqp_url, database_url, topo.namespace,
                                                  sim.connection, sink.settings()),
                                    proxmox_timeout_s=2.0)
            load_catalog(settings)
            with InProcessWorkers(settings, concurrency=4), \
                    OrderClient(amqp_url, topo.namespace) as billing:
                billing.create(service_id=SID_A, client_id=1, product="vps-small",
                               email="a@example.com")
                billing.create(service_id=SID_B, client_id=2, product="vps-small",
                               email="b@example.com")
                wait_until(all_ready([SID_A, SID_B]), 90, "both services deployed")
                billing.suspend(service_id=SID_B)
                wait_until(lambda: Service.get_by_id(SID_B).status == "suspended", 60,
                           "B suspended")
                with ApiServer(settings) as api:
                    yield ApiEnv(settings, sim, api, billing)
    finally:
        messaging.delete_topology(amqp_url, topo)
