"""HestiaCP provider against a local fake of web/api/index.php and the v-*-dns-record commands."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from dnsfakes import HOSTILE_HOSTNAMES

from pvekvm.dns import DnsError, ZoneConfig, apply_records, plan_records, remove_records

HOST = "web1.example.com"
NAMES = ("example.com", "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")


@pytest.fixture
def zones(hestia):
    for name in NAMES:
        hestia.add_domain(name)
    settings = {"api_url": hestia.api_url, "hash": hestia.hash, "hestia_user": "admin"}
    return [ZoneConfig(name, "hestiacp", dict(settings)) for name in NAMES]


def deploy(zones, v4, v6=()):
    apply_records(plan_records(HOST, list(v4), list(v6), zones), zones)


def values(fake, domain, record, rtype):
    return sorted(r["VALUE"] for r in fake.rrset(domain, record, rtype))


def test_create_a_aaaa_and_ptr(hestia, zones):
    deploy(zones, ["192.0.2.10"], ["2001:db8::10"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]
    assert values(hestia, "example.com", "web1", "AAAA") == ["2001:db8::10"]
    assert values(hestia, "2.0.192.in-addr.arpa", "10", "PTR") == [HOST + "."]
    v6rec = "0.1." + "0." * 21 + "0"
    assert values(hestia, "8.b.d.0.1.0.0.2.ip6.arpa", v6rec, "PTR") == [HOST + "."]
    assert hestia.rrset("example.com", "web1", "A")[0]["TTL"] == "3600"
    # the documented form fields, nothing else
    add = next(s for s in hestia.requests if b"v-add-dns-record" in s.body)
    form = parse_qs(add.body.decode(), keep_blank_values=True)
    assert form["hash"] == [hestia.hash] and form["returncode"] == ["yes"]
    assert [form[f"arg{i}"][0] for i in range(1, 6)] == [
        "admin",
        "example.com",
        "web1",
        "A",
        "192.0.2.10",
    ]


def test_apex_record_uses_at(hestia, zones):
    apply_records(plan_records("example.com", ["192.0.2.7"], [], zones), zones)
    assert values(hestia, "example.com", "@", "A") == ["192.0.2.7"]
    assert len(hestia.rrset("example.com", "@", "NS")) == 2  # untouched


def test_same_twice_changes_nothing(hestia, zones):
    deploy(zones, ["192.0.2.10"])
    before = {d: dict(r) for d, r in hestia.domains.items()}
    hestia.requests.clear()
    deploy(zones, ["192.0.2.10"])
    assert hestia.domains == before
    assert all(b"v-list-dns-records" in s.body for s in hestia.requests)


def test_ip_change_replaces(hestia, zones):
    deploy(zones, ["192.0.2.10"])
    deploy(zones, ["192.0.2.11"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.11"]
    assert values(hestia, "2.0.192.in-addr.arpa", "11", "PTR") == [HOST + "."]


def test_duplicates_and_ttl_drift_converge(hestia, zones):
    hestia.seed("example.com", "web1", "A", "192.0.2.10")
    hestia.seed("example.com", "web1", "A", "192.0.2.10")
    hestia.seed("example.com", "web1", "A", "192.0.2.12", ttl=60)
    deploy(zones, ["192.0.2.10", "192.0.2.12"])
    recs = hestia.rrset("example.com", "web1", "A")
    assert sorted((r["VALUE"], r["TTL"]) for r in recs) == [
        ("192.0.2.10", "3600"),
        ("192.0.2.12", "3600"),
    ]


def test_remove_and_remove_again(hestia, zones):
    deploy(zones, ["192.0.2.10"], ["2001:db8::10"])
    remove_records(HOST, ["192.0.2.10"], ["2001:db8::10"], zones)
    for domain in NAMES:
        assert {r["TYPE"] for r in hestia.domains[domain].values()} == {"NS"}
    remove_records(HOST, ["192.0.2.10"], ["2001:db8::10"], zones)


def test_user_password_login(hestia, zones):
    login = {"api_url": hestia.api_url, "user": "admin", "password": hestia.password}
    zs = [ZoneConfig(z.name, "hestiacp", dict(login)) for z in zones]
    deploy(zs, ["192.0.2.10"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]


@pytest.mark.parametrize("change", [{"hash": "A" * 20 + ":" + "x" * 40}, {"hash": "nope"}])
def test_auth_failure_is_permanent(hestia, zones, change):
    bad = [ZoneConfig(z.name, z.provider, dict(z.settings, **change)) for z in zones]
    with pytest.raises(DnsError) as err:
        deploy(bad, ["192.0.2.10"])
    assert err.value.transient is False
    assert "hestiacp" in str(err.value) and "authentication" in str(err.value)
    assert "x" * 40 not in str(err.value)


def test_wrong_password_is_permanent(hestia, zones):
    login = {"api_url": hestia.api_url, "user": "admin", "password": "wrong"}
    with pytest.raises(DnsError) as err:
        deploy([ZoneConfig(z.name, "hestiacp", dict(login)) for z in zones], ["192.0.2.10"])
    assert err.value.transient is False


def test_unknown_domain_is_permanent(hestia, zones):
    del hestia.domains["example.com"]
    with pytest.raises(DnsError) as err:
        deploy(zones, ["192.0.2.10"])
    assert err.value.transient is False
    assert "example.com" in str(err.value) and "E_NOTEXIST" in str(err.value)


def test_http_5xx_is_transient_then_converges(hestia, zones):
    hestia.fail_status = 503
    with pytest.raises(DnsError) as err:
        deploy(zones, ["192.0.2.10"])
    assert err.value.transient is True and "503" in str(err.value)
    hestia.fail_status = None
    deploy(zones, ["192.0.2.10"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]


def test_restart_failure_code_is_transient(hestia, zones):
    hestia.fail_code = 20  # E_RESTART
    with pytest.raises(DnsError) as err:
        deploy(zones, ["192.0.2.10"])
    assert err.value.transient is True and "E_RESTART" in str(err.value)


def test_invalid_code_is_permanent(hestia, zones):
    hestia.fail_code = 2  # E_INVALID
    with pytest.raises(DnsError) as err:
        deploy(zones, ["192.0.2.10"])
    assert err.value.transient is False and "E_INVALID" in str(err.value)


@pytest.mark.parametrize("hostname", HOSTILE_HOSTNAMES)
def test_hostile_hostname_never_reaches_the_server(hestia, zones, hostname):
    with pytest.raises(ValueError):
        apply_records(plan_records(hostname, ["192.0.2.10"], [], zones), zones)
    with pytest.raises(ValueError):
        remove_records(hostname, ["192.0.2.10"], [], zones)
    assert hestia.requests == []
