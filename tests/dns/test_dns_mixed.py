"""Forward and reverse zones on different providers: one failing does not stop the other."""

from __future__ import annotations

import pytest

from pvekvm.dns import DnsError, ZoneConfig, apply_records, build_provider, plan_records
from pvekvm.dns.cloudflare import CloudflareProvider
from pvekvm.dns.hestiacp import HestiaProvider
from pvekvm.dns.powerdns import PowerDnsProvider

HOST = "web1.example.com"


@pytest.fixture
def zones(cloudflare, hestia):
    hestia.add_domain("example.com")
    cloudflare.add_zone("2.0.192.in-addr.arpa")
    return [
        ZoneConfig(
            "example.com",
            "hestiacp",
            {"api_url": hestia.api_url, "hash": hestia.hash, "hestia_user": "admin"},
        ),
        ZoneConfig(
            "2.0.192.in-addr.arpa",
            "cloudflare",
            {"api_url": cloudflare.api_url, "token": cloudflare.token},
        ),
    ]


def test_one_provider_down_the_other_still_applied(cloudflare, hestia, zones):
    cloudflare.fail_status = 500
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(HOST, ["192.0.2.10"], [], zones), zones)
    assert err.value.transient is True and "cloudflare" in str(err.value)
    assert [r["VALUE"] for r in hestia.rrset("example.com", "web1", "A")] == ["192.0.2.10"]
    cloudflare.fail_status = None
    apply_records(plan_records(HOST, ["192.0.2.10"], [], zones), zones)
    assert [
        r["content"]
        for r in cloudflare.rrset("2.0.192.in-addr.arpa", "10.2.0.192.in-addr.arpa", "PTR")
    ] == [HOST]


def test_permanent_plus_transient_is_permanent(cloudflare, hestia, zones):
    hestia.fail_status = 503
    bad = [zones[0], ZoneConfig(zones[1].name, "cloudflare", dict(zones[1].settings, token="x"))]
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(HOST, ["192.0.2.10"], [], bad), bad)
    assert err.value.transient is False
    assert "hestiacp" in str(err.value) and "cloudflare" in str(err.value)


def test_build_provider_picks_the_client():
    assert isinstance(build_provider(ZoneConfig("a.org", "powerdns", {})), PowerDnsProvider)
    assert isinstance(
        build_provider(ZoneConfig("a.org", "cloudflare", {"token": "t"})), CloudflareProvider
    )
    hz = ZoneConfig(
        "a.org", "hestiacp", {"api_url": "https://h:8083", "hash": "k:s", "hestia_user": "u"}
    )
    assert isinstance(build_provider(hz), HestiaProvider)
    with pytest.raises(ValueError):
        build_provider(ZoneConfig("a.org", "bind", {}))
    with pytest.raises(ValueError):
        build_provider(ZoneConfig("a.org", "hestiacp", {"api_url": "https://h:8083"}))
