"""The service API over real HTTP against the engine's database, pvesim and RabbitMQ."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
import requests

from producers.events import MAX_EVENT_BYTES
from pvekvm import secrets
from pvekvm.apps.api.auth import hash_token
from pvekvm.config import ProxmoxSettings
from pvekvm.models import AuditLog, IpAddress, Operation, Service, database
from tests.api.conftest import BILLING_TOKEN, SID_A, SID_B, ApiEnv
from tests.api.server import ApiServer, api_command
from workers.testing.harness import all_ready, describe_ops, wait_until, write_config

TOKEN = BILLING_TOKEN


def _wait_op(kind: str, key: str) -> Operation:
    def done() -> Operation | None:
        return Operation.get_or_none((Operation.idempotency_key == key)
                                     & (Operation.status == "done"))
    try:
        return wait_until(done, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID_A])) from None


def test_tokens_decide_who_sees_what(api_env: ApiEnv):
    api = api_env.api
    assert api.get(f"/v1/services/{SID_A}").status_code == 401
    assert api.get(f"/v1/services/{SID_A}", "not-a-token").status_code == 401
    assert api.get(f"/v1/services/{SID_A}", api_env.client_token(SID_A) + "x").status_code == 401
    assert api.get("/v1/services/999999", TOKEN).status_code == 404
    # a client token reads its own service only; another client's service does not exist for it
    own, other = api_env.client_token(SID_A), api_env.client_token(SID_B)
    assert api.get(f"/v1/services/{SID_A}", own).json()["id"] == SID_A
    for path in ("", "/credentials", "/operations", "/snapshots", "/graphs?metric=cpu"):
        assert api.get(f"/v1/services/{SID_B}{path}", own).status_code == 404, path
    assert api.post(f"/v1/services/{SID_B}/console", own).status_code == 404
    event = {"version": 1, "type": "terminate", "idempotency_key": "k1", "service_id": SID_B}
    assert api.post("/v1/events", other, json=event).status_code == 403
    assert api.post(f"/v1/services/{SID_A}/client-token", own).status_code == 403
    minted = api.post(f"/v1/services/{SID_A}/client-token", TOKEN).json()
    assert minted["token"] != own and minted["token"].startswith(f"svc.{minted['token_id']}.")
    assert api.get(f"/v1/services/{SID_A}", minted["token"]).status_code == 200


def test_service_view_carries_live_state_from_proxmox(api_env: ApiEnv):
    a = api_env.api.get(f"/v1/services/{SID_A}", TOKEN).json()
    svc = Service.get_by_id(SID_A)
    ip = IpAddress.get((IpAddress.service_id == SID_A) & (IpAddress.version == 4)).address
    assert (a["status"], a["vmid"], a["node"], a["product"]) == ("ready", svc.vmid, svc.node,
                                                                 "vps-small")
    assert {"address": ip, "version": 4, "primary": True, "routed_prefix": None, "ptr": None,
            "ptr_published": False} in a["addresses"] and a["hostname"] == svc.hostname
    assert a["live"]["iso"] is None  # nothing in the CD-ROM (no DNS configured: no PTR)
    assert a["operation"] is None and a["proxmox_unreachable"] is False
    assert svc.vmid is not None
    vm = api_env.sim.vm(svc.vmid)
    assert vm is not None, f"no VM {svc.vmid} in pvesim"
    assert a["live"]["power"] == vm["status"] == "running"
    assert a["live"]["maxmem_bytes"] == int(vm["config"]["memory"]) * 1024**2
    b = api_env.api.get(f"/v1/services/{SID_B}", TOKEN).json()
    assert b["status"] == "suspended" and b["live"]["power"] == "stopped"
    assert b["live"]["uptime_s"] == 0
    assert a["throttled_period"] is None  # traffic overage: the package rate
    Service.update(throttled_period=date(2026, 11, 1)).where(Service.id == SID_A).execute()
    assert api_env.api.get(f"/v1/services/{SID_A}", TOKEN).json()["throttled_period"] == \
        "2026-11"
    Service.update(throttled_period=None).where(Service.id == SID_A).execute()
    assert (a["language"], a["mail_language"]) == (svc.language, "en")
    for ordered, sent in (("fa", "fa"), ("de-AT", "de"), ("pt-BR", "en"), ("no", "nb")):
        Service.update(language=ordered).where(Service.id == SID_A).execute()
        got = api_env.api.get(f"/v1/services/{SID_A}", TOKEN).json()
        assert (got["language"], got["mail_language"]) == (ordered, sent)
    Service.update(language=svc.language).where(Service.id == SID_A).execute()


@pytest.mark.parametrize("how", ["refused", "silent"])
def test_proxmox_down_is_reported_quickly(api_env: ApiEnv, how: str):
    """Proxmox not listening, or accepting but never answering: the status still answers,
    within the short timeout, with proxmox_unreachable."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        if how == "silent":
            dead.listen(8)
        port = dead.getsockname()[1]
        if how == "refused":
            dead.close()
        assert api_env.settings.proxmox is not None
        pve = ProxmoxSettings(base_url=f"https://127.0.0.1:{port}/api2/json",
                              token_id="root@pam!pvekvm", token_secret="x",
                              ca_bundle=api_env.settings.proxmox.ca_bundle)
        settings = replace(api_env.settings, proxmox=pve,
                           api=replace(api_env.settings.api, proxmox_timeout_s=1.0))
        with ApiServer(settings) as api:
            start = time.monotonic()
            r = api.get(f"/v1/services/{SID_A}", TOKEN)
            elapsed = time.monotonic() - start
            assert r.status_code == 200
            body = r.json()
            assert body["proxmox_unreachable"] is True and body["live"] is None
            assert body["status"] == "ready"  # what the engine knows is still answered
            assert elapsed < 3.0
            assert api.get(f"/v1/services/{SID_A}/graphs?metric=cpu", TOKEN).status_code == 503


def test_credentials_are_decrypted_and_their_reads_audited(api_env: ApiEnv):
    r = api_env.api.get(f"/v1/services/{SID_A}/credentials", TOKEN)
    svc = Service.get_by_id(SID_A)
    assert svc.password_enc is not None
    password = secrets.decrypt(api_env.settings.secret_key_file, svc.password_enc)
    assert r.json() == {"service_id": SID_A, "username": svc.username, "password": password}
    row = (AuditLog.select().where((AuditLog.service_id == SID_A)
                                   & (AuditLog.event == "api_credentials_read"))
           .order_by(AuditLog.id.desc()).first())
    assert json.loads(row.detail)["by"] == "billing:whmcs" and password not in row.detail


def test_operations_history_has_the_step_lines(api_env: ApiEnv):
    api = api_env.api
    ops = api.get(f"/v1/services/{SID_A}/operations", TOKEN).json()
    deploy = next(o for o in ops if o["kind"] == "deploy")
    assert deploy["status"] == "done" and len(deploy["steps"]) >= 15
    assert all(s["line"].startswith(("[+]", "[~]", "[!]", "[-]")) for s in deploy["steps"])
    one = api.get(f"/v1/services/{SID_A}/operations/{deploy['id']}", TOKEN).json()
    assert one == deploy
    b_op = Operation.get(Operation.service_id == SID_B).id
    assert api.get(f"/v1/services/{SID_A}/operations/{b_op}", TOKEN).status_code == 404


def test_events_posted_over_http_run_and_show_in_the_lists(api_env: ApiEnv):
    api = api_env.api
    bad = api.post("/v1/events", TOKEN, json={"version": 1, "type": "snapshot_create",
                                              "idempotency_key": "k-bad", "service_id": SID_A,
                                              "name": "1bad"})
    assert bad.status_code == 422 and "name" in bad.json()["detail"]
    assert api.post("/v1/events", TOKEN, data=b"{not json").status_code == 422
    huge = api.post("/v1/events", TOKEN, data=b" " * (MAX_EVENT_BYTES + 1))
    assert huge.status_code == 422 and "too large" in huge.json()["detail"]

    r = api.post("/v1/events", TOKEN, json={"version": 1, "type": "snapshot_create",
                                            "idempotency_key": "whmcs-call-1",
                                            "service_id": SID_A, "name": "api_snap"})
    assert r.status_code == 202 and r.json()["idempotency_key"] == "whmcs-call-1"
    _wait_op("snapshot_create", r.json()["idempotency_key"])
    snaps = api.get(f"/v1/services/{SID_A}/snapshots", TOKEN).json()
    assert [s["name"] for s in snaps] == ["api_snap"]

    r = api.post("/v1/events", TOKEN, json={"version": 1, "type": "backup_create",
                                            "idempotency_key": "whmcs-call-2",
                                            "service_id": SID_A, "note": "via api"})
    _wait_op("backup_create", r.json()["idempotency_key"])
    backups = api.get(f"/v1/services/{SID_A}/backups", TOKEN).json()
    assert [b["note"] for b in backups] == ["via api"]
    assert backups[0]["volid"].startswith("backup:backup/vzdump-qemu-")

    assert api.get(f"/v1/services/{SID_A}/backup-schedule", TOKEN).json() == {
        "days": [], "time": None}
    r = api.post("/v1/events", TOKEN, json={"version": 1, "type": "backup_schedule",
                                            "idempotency_key": "whmcs-call-3",
                                            "service_id": SID_A, "days": ["fri", "mon"]})
    key = r.json()["idempotency_key"]
    wait_until(lambda: api.get(f"/v1/services/{SID_A}/backup-schedule", TOKEN).json()["days"],
               30, f"schedule {key} saved")
    sched = api.get(f"/v1/services/{SID_A}/backup-schedule", TOKEN).json()
    assert sched["days"] == ["mon", "fri"] and len(sched["time"]) == 5


def test_graphs_are_proxmox_rrddata(api_env: ApiEnv):
    svc = Service.get_by_id(SID_A)
    rrd = api_env.sim.proxmox().nodes(svc.node).qemu(svc.vmid).rrddata.get(timeframe="day")
    g = api_env.api.get(f"/v1/services/{SID_A}/graphs?metric=network&timeframe=day",
                        TOKEN).json()
    assert g["series"] == ["netin", "netout"] and len(g["points"]) == len(rrd) == 70
    assert [p["time"] for p in g["points"]] == [r["time"] for r in rrd]
    assert g["points"][-1]["values"]["netin"] == rrd[-1]["netin"] > 0
    for bad in ("metric=load", "metric=cpu&timeframe=decade", ""):
        assert api_env.api.get(f"/v1/services/{SID_A}/graphs?{bad}", TOKEN).status_code == 422


def test_console_answers_a_console_token_and_is_refused_when_suspended(api_env: ApiEnv):
    """Issue 27: the answer names the console proxy's page and a single-use token; nothing in
    it opens Proxmox (the proxy holds the token; tests/api/test_console.py goes through it)."""
    api = api_env.api
    r = api.post(f"/v1/services/{SID_A}/console", TOKEN)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["path"] == f"/console/?service={SID_A}&token={c['token']}"
    conn = api_env.settings.proxmox
    assert conn is not None
    assert conn.token_secret not in r.text and "PVEVNC" not in r.text and "vncticket" not in r.text
    assert c["bound_address"] is None  # billing named no client address
    row = (AuditLog.select().where((AuditLog.service_id == SID_A)
                                   & (AuditLog.event == "api_console_token_issued"))
           .order_by(AuditLog.id.desc()).first())
    assert row is not None and c["token"] not in row.detail
    assert c["token"].split(".")[2] not in row.detail
    refused = api.post(f"/v1/services/{SID_B}/console", TOKEN)
    assert refused.status_code == 409 and "suspended" in refused.json()["detail"]


def test_isos_are_grouped_as_the_manual_says(api_env: ApiEnv):
    lists = api_env.api.get("/v1/isos", TOKEN).json()
    assert [x["storage"] for x in lists] == ["iso"]
    groups = {g["group"]: g["isos"] for g in lists[0]["groups"]}
    assert groups["Debian"] == ["Debian-12.5.0-amd64-netinst.iso"]
    assert "myfile.iso" in groups["OTHER"] and lists[0]["groups"][-1]["group"] == "OTHER"
    assert api_env.api.get("/v1/isos", api_env.client_token(SID_A)).json() == lists


def test_openapi_document_is_served(api_env: ApiEnv):
    doc = api_env.api.get("/openapi.json").json()
    paths = set(doc["paths"])
    assert {"/v1/services/{service_id}", "/v1/services/{service_id}/credentials",
            "/v1/services/{service_id}/graphs", "/v1/services/{service_id}/console",
            "/v1/events", "/v1/isos"} <= paths
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _api_config(api_env: ApiEnv, path, **overrides: Any):
    config = write_config(replace(api_env.settings, **overrides), path)
    with config.open("a") as fh:
        fh.write(f'[api.tokens]\nwhmcs = "{hash_token(BILLING_TOKEN)}"\n')
    return config


def test_the_api_command_serves_with_several_worker_processes(api_env: ApiEnv, tmp_path):
    """``python -m pvekvm api --workers 2``: stateless processes built from one config file;
    with the access log on, a console token still never reaches the log."""
    log = tmp_path / "api.log"
    with api_command(_api_config(api_env, tmp_path / "pvekvm.toml"), 2, log) as url:
        headers = {"Authorization": f"Bearer {BILLING_TOKEN}"}
        bodies = [requests.get(f"{url}/v1/services/{SID_A}", headers=headers, timeout=10)
                  for _ in range(4)]
        assert {r.json()["status"] for r in bodies} == {"ready"}
        assert requests.get(f"{url}/v1/services/{SID_A}", timeout=10).status_code == 401
        own = requests.get(f"{url}/v1/services/{SID_A}", timeout=10, headers={
            "Authorization": f"Bearer {api_env.client_token(SID_A)}"})
        assert own.status_code == 200
        token = requests.post(f"{url}/v1/services/{SID_A}/console", headers=headers,
                              timeout=10).json()["token"]
    text = log.read_text()
    assert f"POST /v1/services/{SID_A}/console" in text and token not in text
    assert token.split(".")[2] not in text


def test_database_down_answers_503_not_a_crash(api_env: ApiEnv, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"mysql://root@127.0.0.1:{s.getsockname()[1]}/nothing"
    config = _api_config(api_env, tmp_path / "pvekvm.toml", database_url=dead)
    with api_command(config, 1, tmp_path / "api.log") as url:
        r = requests.get(f"{url}/v1/services/{SID_A}", timeout=30,
                         headers={"Authorization": f"Bearer {BILLING_TOKEN}"})
    assert r.status_code == 503 and r.json() == {"detail": "database_unavailable"}


def test_a_running_operation_shows_with_its_last_step_line(api_env: ApiEnv):
    """While a reset-password runs (tasks slowed down), the status names the operation and the
    last step line written; when it is done, the service shows no operation again."""
    api = api_env.api
    api_env.sim.set_task_time_scale(0.3)
    try:
        r = api.post("/v1/events", TOKEN, json={"version": 1, "type": "reset_password",
                                                "idempotency_key": "whmcs-call-rp",
                                                "service_id": SID_A})
        assert r.status_code == 202

        def in_progress() -> dict[str, Any] | None:
            op = api.get(f"/v1/services/{SID_A}", TOKEN).json()["operation"]
            return op if op and op["last_step"] else None
        op = wait_until(in_progress, 30, "a step line of the running operation", db=False)
        assert op["kind"] == "reset_password" and op["status"] == "running"
        assert op["last_step"].startswith("[+] ") and "success (" in op["last_step"]
        assert api.get(f"/v1/services/{SID_A}", TOKEN).json()["status"] == "resetting"
    finally:
        api_env.sim.set_task_time_scale(0)
    _wait_op("reset_password", "whmcs-call-rp")
    body = api.get(f"/v1/services/{SID_A}", TOKEN).json()
    assert body["operation"] is None and body["status"] == "ready"
    history = api.get(f"/v1/services/{SID_A}/operations/{op['id']}", TOKEN).json()
    assert op["last_step"] in [s["line"] for s in history["steps"]]


def test_a_client_sets_and_resets_the_ptr_of_its_own_address_only(api_env: ApiEnv):
    api, mine = api_env.api, api_env.client_token(SID_A)
    ip = IpAddress.get((IpAddress.service_id == SID_A) & (IpAddress.version == 4)).address
    other = IpAddress.get(IpAddress.service_id == SID_B).address
    host = Service.get_by_id(SID_A).hostname  # a name under it is the service's own
    r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine, json={"hostname": f"Mail.{host}"})
    assert r.status_code == 202 and r.json()["type"] == "rdns_set", r.text
    _wait_op("rdns_set", r.json()["idempotency_key"])
    assert IpAddress.get(IpAddress.address == ip).ptr == f"mail.{host}"

    foreign = api.put(f"/v1/services/{SID_A}/rdns/{other}", mine, json={"hostname": "x.example"})
    assert foreign.status_code == 409 and "not held by service" in foreign.json()["detail"]
    assert api.put(f"/v1/services/{SID_B}/rdns/{other}", mine,
                   json={"hostname": "x.example"}).status_code == 404
    bad = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine, json={"hostname": "bad_name!"})
    assert bad.status_code == 422 and "hostname" in bad.json()["detail"]
    assert api.put(f"/v1/services/{SID_A}/rdns/not-an-ip", mine,
                   json={"hostname": "x.example"}).status_code == 422
    assert IpAddress.get(IpAddress.address == other).ptr is None

    r = api.delete(f"/v1/services/{SID_A}/rdns/{ip}", mine)
    assert r.status_code == 202 and r.json()["type"] == "rdns_reset"
    _wait_op("rdns_reset", r.json()["idempotency_key"])
    assert IpAddress.get(IpAddress.address == ip).ptr is None


def test_usage_is_served_per_hour_from_the_accounting_table(api_env: ApiEnv):
    from decimal import Decimal

    from pvekvm.models import TrafficUsage

    # the service's life began in hour h0 (UTC): an hour before it is an earlier life's
    (offset_s,) = database.execute_sql(
        "SELECT TIMESTAMPDIFF(SECOND, NOW(), UTC_TIMESTAMP())").fetchone()
    created_at = Service.get_by_id(SID_A).created_at
    assert created_at is not None
    began = created_at + timedelta(seconds=int(offset_s))
    h0 = began.replace(minute=0, second=0, microsecond=0)
    TrafficUsage.create(service_id=SID_A, period_start=h0 - timedelta(hours=1),
                        bytes_in=Decimal(999_999), bytes_out=Decimal(999_999))
    hours = [h0 + timedelta(hours=h) for h in (0, 1, 2)]
    for i, h in enumerate(hours):
        TrafficUsage.create(service_id=SID_A, period_start=h,
                            bytes_in=Decimal("1000.6") * (i + 1), bytes_out=Decimal(10) * (i + 1))
    api, mine = api_env.api, api_env.client_token(SID_A)
    plus_one = (h0 + timedelta(hours=3)).strftime("%Y-%m-%dT%H:00:00+01:00")  # = h0 + 2 h, UTC
    r = api.get(f"/v1/services/{SID_A}/usage", mine,
                params={"from": f"{h0 + timedelta(hours=1):%Y-%m-%dT%H:00:00}Z", "to": plus_one})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["period_start"][:13] for h in body["hours"]] == [f"{hours[1]:%Y-%m-%dT%H}"]
    assert (body["bytes_in"], body["bytes_out"]) == (2001, 20)
    whole = api.get(f"/v1/services/{SID_A}/usage", mine, params={
        "from": f"{h0 - timedelta(days=1):%Y-%m-%dT%H:00:00}Z",
        "to": f"{h0 + timedelta(days=1):%Y-%m-%dT%H:00:00}Z"}).json()
    assert [h["period_start"][:13] for h in whole["hours"]] == [
        f"{h:%Y-%m-%dT%H}" for h in hours]  # not the hour of the id's earlier life
    assert api.get(f"/v1/services/{SID_B}/usage", mine,
                   params={"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
                   ).status_code == 404
    assert api.get(f"/v1/services/{SID_A}/usage", mine,
                   params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
                   ).status_code == 422


def test_extra_addresses_and_a_routed_prefix_in_the_view_and_their_ptrs_for_the_client(
        api_env: ApiEnv):
    sid, api = 7103, api_env.api
    api_env.billing.create(service_id=sid, client_id=3, product="vps-multi", ipv6=True,
                           email="m@example.com")
    wait_until(all_ready([sid]), 90, "vps-multi deployed")
    view = api.get(f"/v1/services/{sid}", TOKEN).json()["addresses"]
    held = {(r.version, r.slot): r for r in IpAddress.select().where(IpAddress.service_id == sid)}
    prefix = held[(6, 0)]
    host6 = f"{prefix.address}1"  # the prefix's ::1, what the VM is configured with
    assert view == [
        {"address": held[(4, 0)].address, "version": 4, "primary": True, "routed_prefix": None,
         "ptr": None, "ptr_published": False},
        {"address": held[(4, 1)].address, "version": 4, "primary": False, "routed_prefix": None,
         "ptr": None, "ptr_published": False},
        {"address": held[(4, 2)].address, "version": 4, "primary": False, "routed_prefix": None,
         "ptr": None, "ptr_published": False},
        {"address": host6, "version": 6, "primary": True,
         "routed_prefix": f"{prefix.address}/64", "ptr": None,
         "ptr_published": False}]
    mine, mx = api_env.client_token(sid), f"mx.{Service.get_by_id(sid).hostname}"
    for address, row in ((held[(4, 2)].address, held[(4, 2)]), (host6, prefix)):
        r = api.put(f"/v1/services/{sid}/rdns/{address}", mine, json={"hostname": mx})
        assert r.status_code == 202, r.text
        def rdns_set_done(r: requests.Response = r) -> Operation | None:
            return Operation.get_or_none(
                (Operation.idempotency_key == r.json()["idempotency_key"])
                & (Operation.status == "done"))
        wait_until(rdns_set_done, 60, "rdns_set done")
        assert IpAddress.get_by_id(row.id).ptr == mx
    other = f"{prefix.address}2"  # inside the /64, but no PTR of ours
    assert api.put(f"/v1/services/{sid}/rdns/{other}", mine,
                   json={"hostname": "x.example"}).status_code == 409
