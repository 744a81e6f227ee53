"""Cloudflare provider against a local fake that checks the v4 request shapes."""

from __future__ import annotations

import pytest
from dnsfakes import HOSTILE_HOSTNAMES

from pvekvm.dns import DnsError, ZoneConfig, apply_records, plan_records, remove_records

HOST = "web1.example.com"


@pytest.fixture
def zones(cloudflare):
    for name in ("example.com", "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"):
        cloudflare.add_zone(name)
    settings = {"api_url": cloudflare.api_url, "token": cloudflare.token, "ttl": 300}
    return [
        ZoneConfig(name, "cloudflare", dict(settings))
        for name in ("example.com", "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")
    ]


def deploy(zones, v4, v6=()):
    apply_records(plan_records(HOST, list(v4), list(v6), zones), zones)


def contents(fake, zone, name, rtype):
    return sorted(r["content"] for r in fake.rrset(zone, name, rtype))


def test_create_a_aaaa_and_ptr(cloudflare, zones):
    deploy(zones, ["192.0.2.10"], ["2001:db8::10"])
    assert contents(cloudflare, "example.com", HOST, "A") == ["192.0.2.10"]
    assert contents(cloudflare, "example.com", HOST, "AAAA") == ["2001:db8::10"]
    assert contents(cloudflare, "2.0.192.in-addr.arpa", "10.2.0.192.in-addr.arpa", "PTR") == [HOST]
    v6name = "0.1." + "0." * 22 + "8.b.d.0.1.0.0.2.ip6.arpa"
    assert contents(cloudflare, "8.b.d.0.1.0.0.2.ip6.arpa", v6name, "PTR") == [HOST]
    rec = cloudflare.rrset("example.com", HOST, "A")[0]
    assert rec["ttl"] == 300 and rec["proxied"] is False


def test_same_twice_changes_nothing(cloudflare, zones):
    deploy(zones, ["192.0.2.10"])
    ids = {r["id"] for r in cloudflare.rrset("example.com", HOST, "A")}
    cloudflare.requests.clear()
    deploy(zones, ["192.0.2.10"])
    assert {r["id"] for r in cloudflare.rrset("example.com", HOST, "A")} == ids
    assert {s.method for s in cloudflare.requests} == {"GET"}


def test_ip_change_replaces_in_place(cloudflare, zones):
    deploy(zones, ["192.0.2.10"])
    old_id = cloudflare.rrset("example.com", HOST, "A")[0]["id"]
    deploy(zones, ["192.0.2.11"])
    recs = cloudflare.rrset("example.com", HOST, "A")
    assert [(r["id"], r["content"]) for r in recs] == [(old_id, "192.0.2.11")]
    assert contents(cloudflare, "2.0.192.in-addr.arpa", "11.2.0.192.in-addr.arpa", "PTR") == [HOST]


def test_pagination_multi_value_rrset_and_stale_duplicates(cloudflare, zones):
    # Five stale records spread over three pages of two: all must be seen and cleaned up.
    for i in range(5):
        cloudflare.seed("example.com", HOST, "A", f"198.51.100.{i}")
    deploy(zones, ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    assert contents(cloudflare, "example.com", HOST, "A") == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    pages = {
        s.query["page"][0]
        for s in cloudflare.requests
        if s.method == "GET" and s.path.endswith("dns_records")
    }
    assert {"1", "2", "3"} <= pages
    deploy(zones, ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    assert len(cloudflare.rrset("example.com", HOST, "A")) == 3
    deploy(zones, ["192.0.2.3"])
    assert contents(cloudflare, "example.com", HOST, "A") == ["192.0.2.3"]


def test_remove_and_remove_again(cloudflare, zones):
    deploy(zones, ["192.0.2.10"], ["2001:db8::10"])
    other = cloudflare.seed("example.com", "other.example.com", "A", "192.0.2.99")
    remove_records(HOST, ["192.0.2.10"], ["2001:db8::10"], zones)
    for zone in cloudflare.zones.values():
        assert [r["id"] for r in zone.records.values()] == (
            [other] if zone.name == "example.com" else []
        )
    remove_records(HOST, ["192.0.2.10"], ["2001:db8::10"], zones)  # absent: fine


def test_auth_failure_is_permanent(cloudflare, zones):
    bad = [ZoneConfig(z.name, z.provider, dict(z.settings, token="w" * 40)) for z in zones]
    with pytest.raises(DnsError) as err:
        deploy(bad, ["192.0.2.10"])
    assert err.value.transient is False
    assert "cloudflare" in str(err.value) and "example.com" in str(err.value)
    assert "w" * 40 not in str(err.value)
    assert "Authentication error" in str(err.value)


def test_server_error_is_transient_then_converges(cloudflare, zones):
    cloudflare.fail_status = 502
    with pytest.raises(DnsError) as err:
        deploy(zones, ["192.0.2.10"])
    assert err.value.transient is True
    assert "cloudflare" in str(err.value) and "502" in str(err.value)
    cloudflare.fail_status = None
    deploy(zones, ["192.0.2.10"])
    assert contents(cloudflare, "example.com", HOST, "A") == ["192.0.2.10"]


def test_closed_port_is_transient(zones):
    dead = [
        ZoneConfig(z.name, z.provider, dict(z.settings, api_url="http://127.0.0.1:9"))
        for z in zones
    ]
    with pytest.raises(DnsError) as err:
        deploy(dead, ["192.0.2.10"])
    assert err.value.transient is True


def test_unknown_zone_is_permanent(cloudflare, zones):
    extra = [*zones, ZoneConfig("missing.org", "cloudflare", dict(zones[0].settings))]
    with pytest.raises(DnsError) as err:
        apply_records(plan_records("a.missing.org", ["203.0.113.1"], [], extra), extra)
    assert err.value.transient is False and "missing.org" in str(err.value)


@pytest.mark.parametrize("hostname", HOSTILE_HOSTNAMES)
def test_hostile_hostname_never_reaches_the_server(cloudflare, zones, hostname):
    with pytest.raises(ValueError):
        deploy_host = plan_records(hostname, ["192.0.2.10"], [], zones)
        apply_records(deploy_host, zones)
    with pytest.raises(ValueError):
        remove_records(hostname, ["192.0.2.10"], [], zones)
    assert cloudflare.requests == []


def test_global_api_key_goes_with_email_in_x_auth_headers(cloudflare, zones):
    glob = {"api_url": cloudflare.api_url, "api_key": cloudflare.global_key,
            "email": cloudflare.email, "ttl": 300}
    zs = [ZoneConfig(z.name, "cloudflare", dict(glob)) for z in zones]
    deploy(zs, ["192.0.2.10"])
    assert contents(cloudflare, "example.com", HOST, "A") == ["192.0.2.10"]
    sent = cloudflare.requests[-1].headers
    assert sent["x-auth-key"] == cloudflare.global_key and "authorization" not in sent


def test_global_api_key_sent_as_token_is_refused_with_the_fix(cloudflare, zones):
    """A Global API Key as a Bearer token: 400, 6003 Invalid request headers / 6111."""
    bad = [ZoneConfig(z.name, z.provider, dict(z.settings, token=cloudflare.global_key))
           for z in zones[:1]]
    with pytest.raises(DnsError) as err:
        deploy(bad, ["192.0.2.10"])
    text = str(err.value)
    assert err.value.transient is False and "6111" in text
    assert "api_key" in text and "email" in text and cloudflare.global_key not in text


def test_token_without_zone_read_needs_zone_id(cloudflare, zones):
    """GET /zones?name= lists only zones the token may read (Zone:Zone:Read)."""
    cloudflare.token_zone_read = False
    with pytest.raises(DnsError) as err:
        deploy(zones[:1], ["192.0.2.10"])
    assert "Zone:Zone:Read" in str(err.value) and "zone_id" in str(err.value)
    zid = cloudflare.zone("example.com").id
    fixed = [ZoneConfig("example.com", "cloudflare", dict(zones[0].settings, zone_id=zid))]
    deploy(fixed, ["192.0.2.10"])
    assert contents(cloudflare, "example.com", HOST, "A") == ["192.0.2.10"]
    wrong = [ZoneConfig("example.com", "cloudflare", dict(zones[0].settings, zone_id="f" * 32))]
    with pytest.raises(DnsError, match="zone_id"):
        deploy(wrong, ["192.0.2.11"])


def test_ttl_below_sixty_is_refused_by_a_non_enterprise_zone(cloudflare, zones):
    """dns-records_ttl: the 30 s minimum is for Enterprise zones; claiming enterprise for a
    zone that is not gets Cloudflare's own refusal (permanent)."""
    low = [ZoneConfig(z.name, z.provider, dict(z.settings, ttl=30, enterprise=True))
           for z in zones[:1]]
    with pytest.raises(DnsError) as err:
        deploy(low, ["192.0.2.10"])
    assert err.value.transient is False and "9021" in str(err.value)
    cloudflare.zone("example.com").enterprise = True
    deploy(low, ["192.0.2.10"])
    assert cloudflare.rrset("example.com", HOST, "A")[0]["ttl"] == 30
