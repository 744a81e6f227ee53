"""Client reverse DNS is owned or forward-confirmed (issue 23): over real HTTP, the real broker,
intake and workers, FCrDNS asked of the suite's real PowerDNS (tests/e2e/harness.TEST_RDNS).

Service A (7101) and B (7102) are deployed in vps.example.net by tests/api/conftest.py; the
product's default policy is owned-or-fcrdns."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pvekvm.models import AuditLog, DeadLetter, IpAddress, Operation, Product, Service
from tests.api.conftest import SID_A, SID_B, ApiEnv
from tests.dns.dnsfakes import powerdns_zones_or_skip
from workers.testing.harness import wait_until

CLIENT_ZONE = "client-shop.example"  # the client's own domain, on a real DNS server
ELSEWHERE = "198.51.100.77"


def _ipv4(sid: int) -> str:
    return IpAddress.get((IpAddress.service_id == sid) & (IpAddress.version == 4)
                         & (IpAddress.slot == 0)).address


def _host(sid: int) -> str:
    return Service.get_by_id(sid).hostname


def _finished(key: str) -> Operation:
    return wait_until(lambda: Operation.get_or_none(
        (Operation.idempotency_key == key) & Operation.status.in_(("done", "failed"))),
        60, f"operation {key} finished")


def _audits(sid: int, event: str) -> list[dict[str, Any]]:
    return [json.loads(r.detail) for r in AuditLog.select().where(
        (AuditLog.service_id == sid) & (AuditLog.event == event)).order_by(AuditLog.id)]


def _fresh_window(sid: int) -> None:
    """Forget the service's earlier orders: each test starts with its whole hourly allowance."""
    AuditLog.delete().where((AuditLog.service_id == sid) & AuditLog.event.in_(
        ("api_rdns_set", "api_rdns_reset", "api_rdns_refused"))).execute()


@pytest.fixture()
def client_zone(api_env: ApiEnv):
    """The client's zone on the real PowerDNS: ``mail`` points at A's address, ``elsewhere`` not."""
    s, url = powerdns_zones_or_skip()
    s.delete(f"{url}/{CLIENT_ZONE}.", timeout=5)
    rrsets = [{"name": f"{label}.{CLIENT_ZONE}.", "type": "A", "ttl": 60, "changetype": "REPLACE",
               "records": [{"content": ip, "disabled": False}]}
              for label, ip in (("mail", _ipv4(SID_A)), ("elsewhere", ELSEWHERE))]
    r = s.post(url, json={"name": f"{CLIENT_ZONE}.", "kind": "Native",
                          "nameservers": ["ns1.pvekvm.test."], "rrsets": rrsets}, timeout=5)
    assert r.status_code == 201, r.text
    _fresh_window(SID_A)
    yield
    _fresh_window(SID_A)  # nor does a later test (or the OpenAPI fuzz) meet this one's count
    s.delete(f"{url}/{CLIENT_ZONE}.", timeout=5)


def test_a_ptr_naming_someone_elses_host_is_refused_with_a_reason_and_audited(
        api_env: ApiEnv, client_zone):
    api, mine, ip = api_env.api, api_env.client_token(SID_A), _ipv4(SID_A)
    before = IpAddress.get(IpAddress.address == ip).ptr
    ops = Operation.select().where(Operation.service_id == SID_A).count()
    cases = {
        "mail.google.com": "rdns policy 'owned-or-fcrdns'",
        _host(SID_B): "another live service's host name",
        f"mail.{_host(SID_B)}": "under another live service's host name",
        f"elsewhere.{CLIENT_ZONE}": f"A records do not include {ip}",
        f"nothing.{CLIENT_ZONE}": f"no A record pointing at {ip}",
    }
    for name, reason in cases.items():
        r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine, json={"hostname": name})
        assert r.status_code == 422 and reason in r.json()["detail"], (name, r.text)
        assert name not in r.json()["detail"]  # the reason never echoes the name
    refused = _audits(SID_A, "api_rdns_refused")[-len(cases):]
    assert [(a["hostname"], a["status"], a["by"].split("/")[0]) for a in refused] == [
        (name, 422, f"client:{SID_A}") for name in cases]  # by: client:<sid>/<token id>
    assert all(reason in a["reason"] for a, reason in zip(refused, cases.values(), strict=True))
    bad = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine,
                  json={"hostname": f"xn--n3h.{_host(SID_A)}"})  # a snowman: IDNA 2008 says no
    assert bad.status_code == 422 and "not an IDNA 2008 A-label" in bad.json()["detail"]
    assert _audits(SID_A, "api_rdns_refused")[-1]["status"] == 422
    assert Operation.select().where(Operation.service_id == SID_A).count() == ops  # none ordered
    assert IpAddress.get(IpAddress.address == ip).ptr == before


def test_a_name_the_service_owns_or_that_points_at_the_address_is_applied(
        api_env: ApiEnv, client_zone):
    api, mine, ip = api_env.api, api_env.client_token(SID_A), _ipv4(SID_A)
    for name in (f"smtp.{_host(SID_A)}", f"xn--bcher-kva.{_host(SID_A)}",  # owned
                 f"mail.{CLIENT_ZONE}"):  # forward-confirmed
        r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine, json={"hostname": name})
        assert r.status_code == 202, r.text
        op = _finished(r.json()["idempotency_key"])
        assert op.status == "done", op.error
        assert IpAddress.get(IpAddress.address == ip).ptr == name
        assert _audits(SID_A, "api_rdns_set")[-1]["hostname"] == name  # the name is recorded


def test_the_product_policy_decides_owned_only_or_off(api_env: ApiEnv, client_zone):
    api, mine, ip = api_env.api, api_env.client_token(SID_A), _ipv4(SID_A)
    product = Product.get_by_id(Service.get_by_id(SID_A).product_id)
    try:
        product.update(rdns_policy="owned").where(Product.id == product.id).execute()
        r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine,
                    json={"hostname": f"mail.{CLIENT_ZONE}"})  # resolves, but is not owned
        assert r.status_code == 422 and "rdns policy 'owned'" in r.json()["detail"], r.text
        product.update(rdns_policy="off").where(Product.id == product.id).execute()
        r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine, json={"hostname": _host(SID_B)})
        assert r.status_code == 422, r.text  # never another live service's name, even off
        r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine,
                    json={"hostname": f"elsewhere.{CLIENT_ZONE}"})
        assert r.status_code == 202, r.text
        assert _finished(r.json()["idempotency_key"]).status == "done"
    finally:
        product.update(rdns_policy="owned-or-fcrdns").where(Product.id == product.id).execute()


def test_billing_over_amqp_cannot_give_another_services_name_nor_an_unconfirmed_one(
        api_env: ApiEnv, client_zone):
    ip = _ipv4(SID_A)
    before = IpAddress.get(IpAddress.address == ip).ptr
    api_env.billing.rdns_set(service_id=SID_A, address=ip, hostname=_host(SID_B))
    dead = wait_until(lambda: DeadLetter.select().where(
        DeadLetter.reason.contains("another live service's host name")).first(), 30,
        "intake's refusal")
    assert dead.source == "intake"
    # intake cannot ask DNS (one consumer for every order): the step does, and refuses
    event = api_env.billing.rdns_set(service_id=SID_A, address=ip,
                                     hostname=f"elsewhere.{CLIENT_ZONE}")
    op = _finished(event.idempotency_key)
    assert op.status == "failed" and op.error is not None
    assert f"A records do not include {ip}" in op.error
    assert IpAddress.get(IpAddress.address == ip).ptr == before


def test_the_eleventh_ptr_change_in_an_hour_is_429_with_retry_after_and_audited(
        api_env: ApiEnv, client_zone):
    api, mine, ip = api_env.api, api_env.client_token(SID_A), _ipv4(SID_A)
    limit = api_env.settings.rdns.changes_per_hour
    assert limit == 10
    ops = Operation.select().where(Operation.service_id == SID_A).count()

    def put(i: int):
        return api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine,
                       json={"hostname": f"h{i}.{_host(SID_A)}"})

    with ThreadPoolExecutor(8) as pool:  # at once, as several API processes would see them
        answers = list(pool.map(put, range(limit + 5)))
    accepted = [r for r in answers if r.status_code == 202]
    limited = [r for r in answers if r.status_code == 429]
    assert (len(accepted), len(limited)) == (limit, 5), [r.status_code for r in answers]
    eleventh = api.delete(f"/v1/services/{SID_A}/rdns/{ip}", mine)  # a reset is a change too
    for r in (*limited, eleventh):
        assert r.status_code == 429 and "at most 10 PTR changes per hour" in r.json()["detail"]
        assert 3500 < int(r.headers["Retry-After"]) <= 3600
    refused = _audits(SID_A, "api_rdns_limited")
    assert len(refused) >= 6 and refused[-1]["address"] == ip and refused[-1]["status"] == 429
    for r in accepted:
        _finished(r.json()["idempotency_key"])
    assert Operation.select().where(Operation.service_id == SID_A).count() == ops + limit


def test_refused_names_count_as_client_events_so_dns_is_not_asked_without_bound(
        api_env: ApiEnv, client_zone):
    api, mine, ip = api_env.api, api_env.client_token(SID_A), _ipv4(SID_A)
    limit = api_env.settings.api.client_events_per_hour
    assert limit == 30
    for i in range(limit):  # each one a lookup in the client's zone that finds nothing
        r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine,
                    json={"hostname": f"n{i}.{CLIENT_ZONE}"})
        assert r.status_code == 422, r.text
    r = api.put(f"/v1/services/{SID_A}/rdns/{ip}", mine, json={"hostname": f"mail.{CLIENT_ZONE}"})
    assert r.status_code == 429 and "at most 30 client orders per hour" in r.json()["detail"]
    assert int(r.headers["Retry-After"]) > 3500
    assert _audits(SID_A, "api_rdns_limited")[-1]["hostname"] == f"mail.{CLIENT_ZONE}"
