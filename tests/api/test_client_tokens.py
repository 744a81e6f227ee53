"""Client tokens end with their service's life (issue 23 item 1), expire, are revoked one by one;
terminate erases the client's secrets; the audit log believes X-Forwarded-For from configured
proxies only; a client token is not shown the engine's Proxmox identity. Real HTTP, the real
engine (terminate and re-create go through the orders exchange), the real database."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import requests

from pvekvm import secrets
from pvekvm.config import ROOT, ConfigError, load_settings
from pvekvm.models import (
    AuditLog,
    Backup,
    BackupSchedule,
    ClientToken,
    Operation,
    Service,
    Snapshot,
    database,
)
from tests.api.conftest import BILLING_TOKEN, SID_A, ApiEnv
from tests.api.server import ApiServer
from workers.testing.harness import all_ready, describe_ops, wait_until, write_config

SID, FIRST_CLIENT, SECOND_CLIENT = 3001, 5001, 5002
READS = ("", "/credentials")


def _mint(api: ApiServer, sid: int, **body: object) -> dict:
    r = api.post(f"/v1/services/{sid}/client-token", BILLING_TOKEN, json=body or None)
    assert r.status_code == 200, r.text
    return r.json()


def _refused_everywhere(api: ApiServer, sid: int, token: str) -> None:
    for path in READS:
        r = api.get(f"/v1/services/{sid}{path}", token)
        assert r.status_code == 401, (path, r.status_code, r.text)
    assert api.post(f"/v1/services/{sid}/console", token).status_code == 401


def _wait_status(sid: int, status: str, client_id: int | None = None) -> None:
    def reached() -> bool:
        svc = Service.get_or_none(Service.id == sid)
        return svc is not None and svc.status == status and (
            client_id is None or svc.client_id == client_id)
    try:
        wait_until(reached, 90, f"service {sid} {status}")
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None


def test_a_client_token_ends_with_its_service_and_never_reads_a_reused_id(api_env: ApiEnv):
    """The issue's attack: a token of 3001 (client 5001) outlives the terminate and reads the
    next client's password once billing reuses 3001 for client 5002. Not any more."""
    api, billing, key = api_env.api, api_env.billing, api_env.settings.secret_key_file
    billing.create(service_id=SID, client_id=FIRST_CLIENT, product="vps-small",
                   email="first@example.com")
    wait_until(all_ready([SID]), 90, "3001 deployed for client 5001")
    old = _mint(api, SID)
    assert api.get(f"/v1/services/{SID}/credentials", old["token"]).status_code == 200
    console = api.post(f"/v1/services/{SID}/console", BILLING_TOKEN)
    assert console.status_code == 200
    billing.snapshot_create(service_id=SID, name="first_life", description="client 5001's")
    billing.backup_schedule(service_id=SID, days=["mon"])
    wait_until(lambda: Snapshot.get_or_none(Snapshot.service_id == SID)
               and BackupSchedule.get_or_none(BackupSchedule.service_id == SID), 60,
               "a snapshot and a backup schedule of the first life")

    billing.terminate(service_id=SID)
    _wait_status(SID, "terminated")
    _refused_everywhere(api, SID, old["token"])
    row = ClientToken.get_by_id(old["token_id"])
    assert row.revoked_at is not None and row.revoked_why == "service terminated"
    assert row.secret_sha256 != old["token"].rsplit(".", 1)[1].encode()  # a hash, not the secret
    gone = Service.get_by_id(SID)
    assert gone.password_enc is None
    assert not Backup.select().where(Backup.service_id == SID).exists()
    assert not Snapshot.select().where(Snapshot.service_id == SID).exists()
    assert not BackupSchedule.select().where(BackupSchedule.service_id == SID).exists()
    # what billing reads of the terminated service (issue 30): no password, no snapshot left
    creds = api.get(f"/v1/services/{SID}/credentials", BILLING_TOKEN).json()
    assert creds["password"] is None
    assert api.get(f"/v1/services/{SID}/snapshots", BILLING_TOKEN).json() == []
    assert api.post(f"/v1/services/{SID}/client-token", BILLING_TOKEN).status_code == 409

    billing.create(service_id=SID, client_id=SECOND_CLIENT, product="vps-small",
                   email="second@example.com")
    _wait_status(SID, "ready", SECOND_CLIENT)
    _refused_everywhere(api, SID, old["token"])
    # refused by life even if the row had not been revoked (terminate's revoke is the record;
    # the services row's client and created_at decide)
    ClientToken.update(revoked_at=None).where(ClientToken.id == old["token_id"]).execute()
    _refused_everywhere(api, SID, old["token"])
    # the first life's console token is refused by the console proxy's check (issue 27)
    from pvekvm.console import sessions as console_sessions

    with pytest.raises(console_sessions.Refused, match="re-created"):
        console_sessions.check(console.json()["token"], SID, "127.0.0.1")

    new = _mint(api, SID)["token"]
    first_life = [o.id for o in Operation.select().where(Operation.service_id == SID)
                  if o.kind in ("snapshot_create", "terminate")]
    assert len(first_life) == 2
    ops = api.get(f"/v1/services/{SID}/operations", new).json()
    assert [o["kind"] for o in ops] == ["deploy"]  # not the first life's history
    for op_id in first_life:
        assert api.get(f"/v1/services/{SID}/operations/{op_id}", new).status_code == 404
    creds = api.get(f"/v1/services/{SID}/credentials", new)
    assert creds.status_code == 200
    svc = Service.get_by_id(SID)
    assert svc.password_enc is not None
    assert creds.json()["password"] == secrets.decrypt(key, svc.password_enc)
    view = api.get(f"/v1/services/{SID}", new).json()
    assert view["client_id"] == SECOND_CLIENT
    assert api.get(f"/v1/services/{SID}/snapshots", new).json() == []
    assert api.get(f"/v1/services/{SID}/backup-schedule", new).json()["days"] == []


def test_a_token_of_the_old_derived_form_is_refused(api_env: ApiEnv):
    api = api_env.api
    old_form = f"svc.{SID_A}." + "A" * 43  # svc.<service id>.<HMAC>: no longer accepted
    assert api.get(f"/v1/services/{SID_A}", old_form).status_code == 401
    for bad in ("svc.", "svc." + "." * 60, "svc." + "a" * 16 + "." + "b" * 10_000):
        assert api.get(f"/v1/services/{SID_A}", bad).status_code == 401


def test_an_expired_token_is_refused_and_the_ttl_is_bounded(api_env: ApiEnv):
    api, limit = api_env.api, api_env.settings.api.client_token_ttl_s
    short = _mint(api, SID_A, ttl_s=60)
    assert api.get(f"/v1/services/{SID_A}", short["token"]).status_code == 200
    (lifetime,) = database.execute_sql(
        "SELECT TIMESTAMPDIFF(SECOND, created_at, expires_at) FROM client_tokens WHERE id = %s",
        (short["token_id"],)).fetchone()
    assert lifetime == 60
    default = _mint(api, SID_A)
    (lifetime,) = database.execute_sql(
        "SELECT TIMESTAMPDIFF(SECOND, created_at, expires_at) FROM client_tokens WHERE id = %s",
        (default["token_id"],)).fetchone()
    assert lifetime == limit == 86400
    # time passes (the database's clock decides): the token is refused
    database.execute_sql("UPDATE client_tokens SET expires_at = NOW(3) - INTERVAL 1 SECOND "
                         "WHERE id = %s", (short["token_id"],))
    assert api.get(f"/v1/services/{SID_A}", short["token"]).status_code == 401
    assert api.get(f"/v1/services/{SID_A}", default["token"]).status_code == 200
    longer = _mint(api, SID_A, ttl_s=limit + 3600)  # never longer than the settings allow
    (lifetime,) = database.execute_sql(
        "SELECT TIMESTAMPDIFF(SECOND, created_at, expires_at) FROM client_tokens WHERE id = %s",
        (longer["token_id"],)).fetchone()
    assert lifetime == limit
    for body in ({"ttl_s": 59}, {"ttl_s": "x"}, {"ttl_s": 60, "scope": "all"}):
        r = api.post(f"/v1/services/{SID_A}/client-token", BILLING_TOKEN, json=body)
        assert r.status_code == 422, (body, r.text)


def test_a_revoked_token_is_refused_while_another_of_the_service_works(api_env: ApiEnv):
    api = api_env.api
    one, two = _mint(api, SID_A), _mint(api, SID_A)
    assert api.delete(f"/v1/client-tokens/{one['token_id']}").status_code == 401
    assert api.delete(f"/v1/client-tokens/{one['token_id']}", two["token"]).status_code == 403
    r = api.delete(f"/v1/client-tokens/{one['token_id']}", BILLING_TOKEN)
    assert r.status_code == 204, r.text
    assert api.get(f"/v1/services/{SID_A}/credentials", one["token"]).status_code == 401
    assert api.get(f"/v1/services/{SID_A}/credentials", two["token"]).status_code == 200
    assert api.delete(f"/v1/client-tokens/{one['token_id']}", BILLING_TOKEN).status_code == 204
    assert api.delete("/v1/client-tokens/" + "Z" * 16, BILLING_TOKEN).status_code == 404
    assert api.delete("/v1/client-tokens/" + "z" * 65, BILLING_TOKEN).status_code == 422
    row = (AuditLog.select().where((AuditLog.service_id == SID_A)
                                   & (AuditLog.event == "api_client_token_revoked"))
           .order_by(AuditLog.id).first())
    assert json.loads(row.detail) == {"by": "billing:whmcs", "from": "127.0.0.1",
                                      "token_id": one["token_id"], "already": False}
    assert ClientToken.get_by_id(one["token_id"]).revoked_why == "revoked by billing:whmcs"


def _last_read(sid: int) -> dict:
    row = (AuditLog.select().where((AuditLog.service_id == sid)
                                   & (AuditLog.event == "api_credentials_read"))
           .order_by(AuditLog.id.desc()).first())
    return json.loads(row.detail)


def test_the_audit_log_records_the_peer_not_a_forged_forwarded_for(api_env: ApiEnv):
    forged = {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {BILLING_TOKEN}"}
    r = requests.get(f"{api_env.api.url}/v1/services/{SID_A}/credentials", headers=forged,
                     timeout=30)
    assert r.status_code == 200
    assert _last_read(SID_A)["from"] == "127.0.0.1"
    # behind a configured proxy (here: the loopback), the proxy's X-Forwarded-For names the
    # caller: the rightmost address no trusted proxy holds (what the caller wrote left of it
    # is not believed)
    behind = replace(api_env.settings, api=replace(api_env.settings.api,
                                                   trusted_proxies=("127.0.0.0/8",)))
    with ApiServer(behind) as api:
        for header, seen in (("203.0.113.9", "203.0.113.9"),
                             ("198.51.100.1, 203.0.113.9, 127.0.0.1", "203.0.113.9"),
                             ("not-an-address", "127.0.0.1")):
            r = requests.get(f"{api.url}/v1/services/{SID_A}/credentials", timeout=30,
                             headers={**forged, "X-Forwarded-For": header})
            assert r.status_code == 200
            assert _last_read(SID_A)["from"] == seen, header


def test_a_client_token_is_not_shown_the_engines_proxmox_identity(api_env: ApiEnv):
    """The console answer (issue 27) is a console token for the proxy: no PVE ticket, user,
    task or token, whoever asks."""
    assert api_env.settings.proxmox is not None
    engine_id = api_env.settings.proxmox.token_id
    for token in (BILLING_TOKEN, api_env.client_token(SID_A)):
        r = api_env.api.post(f"/v1/services/{SID_A}/console", token)
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"service_id", "token", "path", "url", "expires_at",
                                 "bound_address"}
        assert r.json()["token"].startswith("con.") and r.json()["token"] in r.json()["path"]
        assert engine_id.split("!")[0] not in r.text and "PVEVNC" not in r.text


def test_the_old_client_token_key_is_ignored_with_a_note_and_bad_proxies_refused(
        api_env: ApiEnv, tmp_path):
    config = write_config(api_env.settings, tmp_path / "pvekvm.toml")
    text = config.read_text()
    config.write_text(text + '[api]\nclient_token_key = "old-key"\n')
    loaded = load_settings(config)
    assert "client_token_key" in loaded.origin["api_note"]
    assert "no longer used" in loaded.origin["api_note"]
    check = subprocess.run([sys.executable, "-m", "pvekvm", "config-check", str(config)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert check.returncode == 0 and "settings ok" in check.stdout
    assert "note:" in check.stderr and "client_token_key" in check.stderr
    config.write_text(text + '[api]\ntrusted_proxies = ["10.0.0.0/8", "proxy.example"]\n')
    with pytest.raises(ConfigError, match="trusted_proxies: 'proxy.example' is not an IP"):
        load_settings(config)
    config.write_text(text + '[api]\nclient_token_ttl_s = 5\n')
    with pytest.raises(ConfigError, match="client_token_ttl_s: expected at least 60"):
        load_settings(config)


def test_a_scoped_billing_token_sees_and_orders_for_its_own_service_ids_only(api_env: ApiEnv):
    from tests.api.conftest import SID_B

    b_token = _mint(api_env.api, SID_B)
    brand = replace(api_env.settings, api=replace(api_env.settings.api,
                                                  scopes=(("whmcs", ((SID_A, SID_A),)),)))
    with ApiServer(brand) as api:
        assert api.get(f"/v1/services/{SID_A}", BILLING_TOKEN).status_code == 200
        for path in ("", "/credentials", "/operations"):
            assert api.get(f"/v1/services/{SID_B}{path}", BILLING_TOKEN).status_code == 404
        assert api.post(f"/v1/services/{SID_B}/client-token", BILLING_TOKEN).status_code == 404
        assert api.delete(f"/v1/client-tokens/{b_token['token_id']}",
                          BILLING_TOKEN).status_code == 404
        event = {"version": 1, "type": "power", "action": "start",
                 "idempotency_key": "scoped-1", "service_id": SID_B}
        r = api.post("/v1/events", BILLING_TOKEN, json=event)
        assert r.status_code == 403 and "outside the scope" in r.json()["detail"]
    assert api_env.api.get(f"/v1/services/{SID_B}", b_token["token"]).status_code == 200


@pytest.mark.parametrize("scopes, reason", [
    ('whmcs = ["10-5"]', "is not a service-id range"),
    ('whmcs = ["1-99999999999"]', "is not a service-id range"),
    ('whmcs = []', "non-empty list"),
    ('other = ["1-9"]', "no billing token of that name"),
])
def test_a_bad_scope_is_refused_with_its_reason(api_env: ApiEnv, tmp_path, scopes, reason):
    from pvekvm.apps.api.auth import hash_token

    config = write_config(api_env.settings, tmp_path / "pvekvm.toml")
    config.write_text(config.read_text() + f'[api.tokens]\nwhmcs = "{hash_token("x")}"\n'
                      f'[api.scopes]\n{scopes}\n')
    with pytest.raises(ConfigError, match=reason):
        load_settings(config)


def test_tokens_ended_a_month_ago_are_forgotten_the_others_kept(api_env: ApiEnv):
    from pvekvm import tokens

    live, old_revoked, old_expired = (_mint(api_env.api, SID_A) for _ in range(3))
    database.execute_sql("UPDATE client_tokens SET revoked_at = NOW(3) - INTERVAL 31 DAY "
                         "WHERE id = %s", (old_revoked["token_id"],))
    database.execute_sql("UPDATE client_tokens SET expires_at = NOW(3) - INTERVAL 31 DAY "
                         "WHERE id = %s", (old_expired["token_id"],))
    assert tokens.purge_ended() >= 2
    left = {t.id for t in ClientToken.select()}
    assert live["token_id"] in left
    assert not {old_revoked["token_id"], old_expired["token_id"]} & left
    assert api_env.api.get(f"/v1/services/{SID_A}", live["token"]).status_code == 200
