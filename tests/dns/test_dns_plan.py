"""plan_records and input validation: pure, no provider involved."""

from __future__ import annotations

import pytest
from dnsfakes import HOSTILE_HOSTNAMES

from pvekvm.dns import (
    DnsRecord,
    ZoneConfig,
    apply_records,
    check_zones,
    plan_records,
    remove_records,
)


def Z(name: str, provider: str = "powerdns", **settings) -> ZoneConfig:
    return ZoneConfig(name, provider, settings)


ZONES = [
    Z("example.com"),
    Z("vm.example.com", ttl=300),
    Z("2.0.192.in-addr.arpa"),
    Z("0/26.2.0.192.in-addr.arpa"),
    Z("64-127.2.0.192.in-addr.arpa", "hestiacp"),
    Z("51.198.in-addr.arpa"),
    Z("8.b.d.0.1.0.0.2.ip6.arpa"),
    Z("1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
]


def by_type(records: list[DnsRecord], rtype: str) -> list[tuple[str, str, str]]:
    return [(r.zone, r.name, r.content) for r in records if r.type == rtype]


def test_forward_records_go_to_longest_zone_with_its_ttl():
    recs = plan_records("web1.vm.example.com", ["192.0.2.200"], ["2001:db8::5"], ZONES)
    assert by_type(recs, "A") == [("vm.example.com", "web1.vm.example.com", "192.0.2.200")]
    assert by_type(recs, "AAAA") == [("vm.example.com", "web1.vm.example.com", "2001:db8::5")]
    assert {r.ttl for r in recs if r.type != "PTR"} == {300}
    other = plan_records("web1.example.com", ["192.0.2.200"], [], ZONES)
    assert by_type(other, "A") == [("example.com", "web1.example.com", "192.0.2.200")]


def test_zone_match_is_by_label_not_by_string_suffix():
    recs = plan_records("web1.notexample.com", ["192.0.2.200"], [], ZONES)
    assert by_type(recs, "A") == []
    assert len(by_type(recs, "PTR")) == 1


def test_ipv4_slash24_reverse_zone():
    recs = plan_records("web1.example.com", ["192.0.2.200"], [], ZONES)
    assert by_type(recs, "PTR") == [
        ("2.0.192.in-addr.arpa", "200.2.0.192.in-addr.arpa", "web1.example.com")
    ]
    assert recs[-1].ttl == 3600


def test_classless_zones_win_over_their_slash24():
    recs = plan_records("web1.example.com", ["192.0.2.5", "192.0.2.63", "192.0.2.64"], [], ZONES)
    assert by_type(recs, "PTR") == [
        ("0/26.2.0.192.in-addr.arpa", "5.0/26.2.0.192.in-addr.arpa", "web1.example.com"),
        ("0/26.2.0.192.in-addr.arpa", "63.0/26.2.0.192.in-addr.arpa", "web1.example.com"),
        ("64-127.2.0.192.in-addr.arpa", "64.64-127.2.0.192.in-addr.arpa", "web1.example.com"),
    ]


def test_slash16_reverse_zone():
    recs = plan_records("web1.example.com", ["198.51.100.7"], [], ZONES)
    assert by_type(recs, "PTR") == [
        ("51.198.in-addr.arpa", "7.100.51.198.in-addr.arpa", "web1.example.com")
    ]


def test_ipv6_nibble_zone_longest_wins():
    recs = plan_records("web1.example.com", [], ["2001:db8::1", "2001:db8:1::2"], ZONES)
    ptrs = by_type(recs, "PTR")
    assert ptrs[0][0] == "8.b.d.0.1.0.0.2.ip6.arpa"
    assert ptrs[0][1] == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.ip6.arpa"
    assert ptrs[1][0] == "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    assert ptrs[1][1] == "2." + "0." * 19 + "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"


def test_no_zone_means_no_record():
    recs = plan_records("host.elsewhere.org", ["203.0.113.9"], ["2001:db9::1"], ZONES)
    assert recs == []
    assert plan_records("web1.example.com", [], [], []) == []


def test_input_is_normalized_and_deduplicated():
    recs = plan_records(
        "WEB1.Example.COM.", ["192.0.2.200", "192.0.2.200"], ["2001:DB8:0::1"], ZONES
    )
    assert by_type(recs, "A") == [("example.com", "web1.example.com", "192.0.2.200")]
    assert by_type(recs, "AAAA") == [("example.com", "web1.example.com", "2001:db8::1")]
    assert len(by_type(recs, "PTR")) == 2


@pytest.mark.parametrize("hostname", HOSTILE_HOSTNAMES)
def test_hostile_hostname_is_refused(hostname):
    with pytest.raises(ValueError):
        plan_records(hostname, ["192.0.2.1"], [], ZONES)
    with pytest.raises(ValueError):
        remove_records(hostname, ["192.0.2.1"], [], ZONES)


@pytest.mark.parametrize(
    "ipv4,ipv6",
    [
        (["192.0.2.300"], []),
        (["2001:db8::1"], []),
        ([], ["192.0.2.1"]),
        (["192.0.2.1; rm -rf /"], []),
        ("192.0.2.1", []),
    ],
)
def test_bad_addresses_are_refused(ipv4, ipv6):
    with pytest.raises(ValueError):
        plan_records("web1.example.com", ipv4, ipv6, ZONES)


@pytest.mark.parametrize(
    "zone",
    [
        Z("exa mple.com"),
        Z("example.com;rm -rf /"),
        Z("a..b"),
        Z("-x.example.com"),
        Z("example.com", "route53"),
        Z("0/23.2.0.192.in-addr.arpa"),  # classless must be narrower than /24
        Z("5/26.2.0.192.in-addr.arpa"),  # not aligned
        Z("0/26.example.com"),
        Z("300.0.192.in-addr.arpa"),
        Z("xy.8.b.d.0.1.0.0.2.ip6.arpa"),
        Z("example.com", ttl="1; drop"),
        Z("0/26\n.2.0.192.in-addr.arpa"),
        Z("example.com\n"),
        Z("5\n.2.0.192.in-addr.arpa"),
    ],
)
def test_bad_zones_are_refused(zone):
    with pytest.raises(ValueError):
        plan_records("web1.example.com", ["192.0.2.1"], [], [*ZONES[:1], zone])


def test_duplicate_zone_is_refused():
    with pytest.raises(ValueError):
        plan_records("web1.example.com", [], [], [Z("example.com"), Z("Example.com.")])


@pytest.mark.parametrize(
    "record",
    [
        DnsRecord("example.com", "evil;rm -rf /.example.com", "A", "192.0.2.1"),
        DnsRecord("example.com", "web1.other.org", "A", "192.0.2.1"),
        DnsRecord("example.com", "web1.example.com", "A", "2001:db8::1"),
        DnsRecord("example.com", "web1.example.com", "TXT", "hello"),
        DnsRecord("nowhere.org", "web1.nowhere.org", "A", "192.0.2.1"),
        DnsRecord("2.0.192.in-addr.arpa", "1.2.0.192.in-addr.arpa", "PTR", "a..b"),
        DnsRecord("0/26.2.0.192.in-addr.arpa", "x;y.0/26.2.0.192.in-addr.arpa", "PTR", "a.b"),
    ],
)
def test_apply_refuses_bad_records_before_any_provider(record):
    # The zone points at a closed port: reaching a provider would raise DnsError, not ValueError.
    zones = [Z(z.name, "powerdns", api_url="http://127.0.0.1:9") for z in ZONES]
    with pytest.raises(ValueError):
        apply_records([record], zones)


def test_zone_repr_hides_credentials():
    zone = Z("example.com", api_key="secret-key")
    assert "secret-key" not in repr(zone)
    assert hash(zone) == hash(Z("example.com", api_key="other"))


@pytest.mark.parametrize(
    "zone,words",
    [
        # HestiaCP refuses "/" in a domain name (func/main.sh is_domain_format_valid).
        (Z("0/26.2.0.192.in-addr.arpa", "hestiacp"), ["HestiaCP", "0-63.2.0.192.in-addr.arpa"]),
        (Z("64/27.2.0.192.in-addr.arpa", "hestiacp"), ["64-95.2.0.192.in-addr.arpa"]),
        # Cloudflare reverse zones: /24, /16 and ip6.arpa only.
        (Z("0/26.2.0.192.in-addr.arpa", "cloudflare", token="t"), ["Cloudflare", "/24"]),
        (Z("0-63.2.0.192.in-addr.arpa", "cloudflare", token="t"), ["Cloudflare", "/16"]),
        (Z("192.in-addr.arpa", "cloudflare", token="t"), ["Cloudflare", "PowerDNS"]),
    ],
)
def test_reverse_zone_forms_a_provider_refuses_are_refused_before_any_request(zone, words):
    with pytest.raises(ValueError) as err:
        check_zones([zone])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_reverse_zone_forms_each_provider_accepts():
    check_zones([
        Z("0/26.2.0.192.in-addr.arpa"),  # PowerDNS: RFC 2317 "/" form
        Z("64-127.2.0.192.in-addr.arpa", "hestiacp"),
        Z("2.0.192.in-addr.arpa", "cloudflare", token="t"),
        Z("51.198.in-addr.arpa", "cloudflare", token="t2", zone_id="a1"),
        Z("8.b.d.0.1.0.0.2.ip6.arpa", "cloudflare", token="t"),
    ])


@pytest.mark.parametrize("ttl,enterprise,ok", [
    (1, False, True), (60, False, True), (86400, False, True), (30, True, True),
    (30, False, False), (59, False, False), (86401, False, False), (29, True, False),
    (3_000_000, False, False),
])
def test_cloudflare_ttl_range(ttl, enterprise, ok):
    """cloudflare/api-schemas dns-records_ttl: 1 = automatic, else 60..86400 (30 on
    Enterprise); anything else fails on every apply, so it is refused up front."""
    zone = Z("example.com", "cloudflare", token="t", ttl=ttl, enterprise=enterprise)
    if ok:
        assert plan_records("a.example.com", ["192.0.2.1"], [], [zone])[0].ttl == ttl
    else:
        with pytest.raises(ValueError, match="Cloudflare accepts ttl 1"):
            plan_records("a.example.com", ["192.0.2.1"], [], [zone])


@pytest.mark.parametrize("settings,words", [
    ({"api_key": "0" * 37}, ["Global API Key", "email"]),
    ({}, ["token"]),
    ({"token": "t", "zone_id": "x;y"}, ["zone_id"]),
    ({"token": "cfk_" + "a" * 44}, ["Global API Key", "api_key", "email"]),
])
def test_cloudflare_credentials_shape(settings, words):
    with pytest.raises(ValueError) as err:
        check_zones([ZoneConfig("example.com", "cloudflare", settings)])
    assert all(w in str(err.value) for w in words)


def test_one_cloudflare_zone_id_serves_one_zone():
    settings = {"token": "t", "zone_id": "abc123"}
    with pytest.raises(ValueError, match="zone_id"):
        check_zones([ZoneConfig("a.org", "cloudflare", settings),
                     ZoneConfig("b.org", "cloudflare", settings)])


def test_hestia_placeholder_must_be_ipv4():
    with pytest.raises(ValueError, match="last_a_placeholder"):
        check_zones([Z("example.com", "hestiacp", last_a_placeholder="2001:db8::1")])
