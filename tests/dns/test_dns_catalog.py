"""Catalog load refuses DNS settings a provider would refuse on every apply."""

from __future__ import annotations

import pytest

from pvekvm import catalog, secrets
from pvekvm.models import DnsZone


def _load(tmp_path, kind: str, settings: dict, *zones: str):
    secrets.create_key(str(tmp_path / "key"))
    return catalog.load({
        "dns_providers": [{"name": "p", "kind": kind, "settings": settings}],
        "dns_zones": [{"name": z, "provider": "p"} for z in zones],
    }, str(tmp_path / "key"))


@pytest.mark.parametrize("kind,settings,zone,words", [
    ("cloudflare", {"token": "t", "ttl": 30}, "example.com", ["Cloudflare accepts ttl", "60"]),
    ("cloudflare", {"token": "t", "ttl": 172800}, "example.com", ["86400"]),
    ("cloudflare", {"api_key": "0" * 37}, "example.com", ["Global API Key", "email"]),
    ("cloudflare", {"token": "t"}, "0/26.2.0.192.in-addr.arpa", ["/24"]),
    ("hestiacp", {"api_url": "https://h:8083", "hash": "k:s", "hestia_user": "u"},
     "0/26.2.0.192.in-addr.arpa", ["0-63.2.0.192.in-addr.arpa"]),
    ("hestiacp", {"api_url": "https://h:8083", "hash": "k:s", "hestia_user": "u",
                  "last_a_placeholder": "none"}, "example.com", ["last_a_placeholder"]),
])
def test_dns_settings_a_provider_refuses_fail_the_load(clean_db, tmp_path, kind, settings,
                                                       zone, words):
    with pytest.raises(catalog.CatalogError) as err:
        _load(tmp_path, kind, settings, zone)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert DnsZone.select().count() == 0  # nothing half-loaded


def test_zone_id_on_a_provider_with_two_zones_fails_the_load(clean_db, tmp_path):
    _load(tmp_path, "cloudflare", {"token": "t", "zone_id": "abc"}, "a.org")
    with pytest.raises(catalog.CatalogError, match="zone_id"):  # together with the loaded one
        catalog.load({"dns_zones": [{"name": "b.org", "provider": "p"}]}, str(tmp_path / "key"))


def test_valid_dns_settings_load(clean_db, tmp_path):
    counts = _load(tmp_path, "cloudflare", {"token": "t", "ttl": 1}, "example.com",
                   "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")
    assert counts["dns_zones"] == 3


def test_rfc2136_and_webhook_settings_refused_or_loaded(clean_db, tmp_path):
    """Refused with the zone named and the secret never shown, nothing half-loaded; valid
    settings of both kinds load (an RFC 2317 zone on rfc2136 included)."""
    for kind, settings, words in [
        ("rfc2136", {"server": "ns1.example.net", "key_name": "k", "key_secret": "hunter2 x"},
         ["zone 'example.com'", "key_secret is not base64"]),
        ("rfc2136", {"server": "ns1.example.net"}, ["set key_name and key_secret"]),
        ("webhook", {"url": "https://dns.example.net/dns.php", "secret": "hunter2"},
         ["zone 'example.com'", "secret must be whsec_"]),
    ]:
        with pytest.raises(catalog.CatalogError) as err:
            _load(tmp_path, kind, settings, "example.com")
        assert all(w in str(err.value) for w in words) and "hunter2" not in str(err.value)
    assert DnsZone.select().count() == 0
    _load(tmp_path, "rfc2136", {"server": "192.0.2.53", "key_name": "pvekvm-key",
                                "key_secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
          "example.com", "0/26.2.0.192.in-addr.arpa")
    counts = catalog.load({
        "dns_providers": [{"name": "w", "kind": "webhook", "settings": {
            "url": "https://dns.example.net/dns.php",
            "secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}}],
        "dns_zones": [{"name": "example.org", "provider": "w"}]}, str(tmp_path / "key"))
    assert counts["dns_zones"] == 1 and DnsZone.select().count() == 3
