"""The service API as a provider's engineer meets it in the first hour (issue 30), over real HTTP
against the engine: order events posted without a key (derived for the types whose retry is the
same order, refused with the reason for the repeatable ones), timestamps that carry their offset,
and the server's loud warning when it starts with no billing token."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

from producers.events import CreateEvent, derive_idempotency_key
from pvekvm.config import ROOT
from pvekvm.models import Operation, Service
from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv
from tests.cli_env import closed_port, wait_for
from workers.testing.harness import all_ready, wait_until, write_config

SID_NEW = 7120


def test_an_http_event_without_a_key_is_derived_or_refused_with_why(api_env: ApiEnv):
    api = api_env.api
    order: dict[str, Any] = {"version": 1, "type": "create", "service_id": SID_NEW,
                             "client_id": 9, "product": "vps-small", "email": "new@example.com"}
    first = api.post("/v1/events", BILLING_TOKEN, json=order)
    again = api.post("/v1/events", BILLING_TOKEN, json=order)  # billing retries a lost answer
    # the key the CLI and OrderClient derive for the same order
    key = CreateEvent(**{k: v for k, v in order.items() if k not in ("version", "type")}
                      ).idempotency_key
    assert key == derive_idempotency_key("create", SID_NEW, CreateEvent(
        service_id=SID_NEW, client_id=9, product="vps-small", email="new@example.com").payload())
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["idempotency_key"] == again.json()["idempotency_key"] == key
    wait_until(all_ready([SID_NEW]), 90, "the created service ready")
    assert Operation.select().where((Operation.service_id == SID_NEW)
                                    & (Operation.kind == "deploy")).count() == 1

    power = api.post("/v1/events", BILLING_TOKEN, json={
        "version": 1, "type": "power", "service_id": SID_NEW, "action": "reboot"})
    assert power.status_code == 422
    assert power.json()["detail"] == (
        "field 'idempotency_key': missing: a power may be ordered again on purpose, so only "
        "billing can tell a retry from a new order: send your own key (e.g. the module call's "
        "id)")
    assert Service.get_by_id(SID_NEW).status == "ready"  # nothing was ordered


def test_api_timestamps_carry_their_offset(api_env: ApiEnv):
    ops = api_env.api.get(f"/v1/services/{SID_A}/operations", BILLING_TOKEN).json()
    stamps = [ops[0]["created_at"], ops[0]["finished_at"], ops[0]["steps"][0]["at"]]
    for stamp in stamps:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert parsed.utcoffset() == timedelta(0), stamp  # an offset, and it is zero


def test_the_api_started_without_a_billing_token_says_so_loudly(api_env: ApiEnv, tmp_path):
    config = write_config(api_env.settings, tmp_path / "pvekvm.toml")  # no [api.tokens]
    port = closed_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pvekvm", "--config", str(config), "api",
                                 "--port", str(port)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "Application startup complete" in log.read_text()
                     or proc.poll() is not None, 30, "the API to start")
        finally:
            proc.terminate()
            proc.wait(10)
    text = log.read_text()
    assert text.count("WARNING: no billing token in [api.tokens] of ") == 1, text
    assert "every request will be refused 401" in text
    assert "`python -m pvekvm api new-token`" in text and "Traceback" not in text
