"""HestiaCP provider against a local fake of web/api/index.php and the v-*-dns-record commands."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
import requests
from dnsfakes import DNS_COMMANDS, HOSTILE_HOSTNAMES, PROFILE_UPDATE_DNS_RECORDS

from pvekvm.dns import DnsError, ZoneConfig, apply_records, plan_records, remove_records

HOST = "web1.example.com"
NAMES = ("example.com", "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")


@pytest.fixture
def zones(hestia):
    for name in NAMES:
        hestia.add_domain(name)
    hestia.seed("example.com", "@", "A", "192.0.2.1")  # the panel's template apex record
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
    assert form["hash"] == [hestia.hash] and form["returncode"] == ["no"]
    assert [form[f"arg{i}"][0] for i in range(1, 6)] == [
        "admin",
        "example.com",
        "web1",
        "A",
        "192.0.2.10",
    ]


def test_apex_record_uses_at(hestia, zones):
    apply_records(plan_records("example.com", ["192.0.2.7"], [], zones), zones)
    assert values(hestia, "example.com", "@", "A") == ["192.0.2.7"]  # replaced the template's
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
    assert remove_records(HOST, ["192.0.2.10"], ["2001:db8::10"], zones) == []
    for domain in NAMES:
        left = {(r["RECORD"], r["TYPE"]) for r in hestia.domains[domain].values()}
        assert left == ({("@", "NS"), ("@", "A")} if domain == "example.com" else {("@", "NS")})
    remove_records(HOST, ["192.0.2.10"], ["2001:db8::10"], zones)


@pytest.mark.parametrize("login", ["password", "legacy-hash"])
def test_legacy_path_login_deploy_and_remove(hestia, zones, login):
    """web/api/index.php api_legacy: HTTP 200, the output ("OK" when empty) and no
    Hestia-Exit-Code header; failures come back only as "Error: ..." text."""
    creds = ({"user": "admin", "password": hestia.password} if login == "password"
             else {"hash": hestia.legacy_hash})
    settings = dict(creds, api_url=hestia.api_url, hestia_user="admin")
    zs = [ZoneConfig(z.name, "hestiacp", dict(settings)) for z in zones]
    deploy(zs, ["192.0.2.10"], ["2001:db8::10"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]
    deploy(zs, ["192.0.2.11"])  # replace: add, then delete the stale record by id
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.11"]
    remove_records(HOST, ["192.0.2.11"], [], zs)
    assert values(hestia, "example.com", "web1", "A") == []
    answer = requests.post(hestia.api_url + "/api/", data=dict(
        creds, cmd="v-delete-dns-record", arg1="admin", arg2="example.com", arg3="999"), timeout=5)
    assert answer.status_code == 200 and "Hestia-Exit-Code" not in answer.headers
    assert answer.text.startswith("Error:")


def test_legacy_path_errors_are_classified_from_the_message(hestia, zones):
    legacy = [ZoneConfig(z.name, "hestiacp", {"api_url": hestia.api_url,
                                               "user": "admin", "password": hestia.password})
              for z in zones]
    del hestia.domains["example.com"]
    with pytest.raises(DnsError) as err:
        deploy(legacy[:1], ["192.0.2.10"])
    assert err.value.transient is False and "doesn't exist" in str(err.value)
    hestia.add_domain("example.com")
    hestia.restart_fails = True
    with pytest.raises(DnsError) as err:
        deploy(legacy, ["192.0.2.10"])
    assert err.value.transient is True and "restart failed" in str(err.value)
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]  # written
    hestia.restart_fails = False
    with pytest.raises(DnsError) as err:  # the zone's only A record: the panel keeps it
        remove_records(HOST, ["192.0.2.10"], [], legacy)
    assert "last A record" in str(err.value) and err.value.transient is False


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


def test_restart_failure_after_add_is_written_and_transient(hestia, zones):
    """v-add-dns-record reports a failed DNS restart as exit 2 (check_result's arguments are
    swapped upstream), after writing the record: not an invalid-input error."""
    hestia.restart_fails = True
    with pytest.raises(DnsError) as err:
        deploy(zones, ["192.0.2.10"], ["2001:db8::10"])
    assert err.value.transient is True, err.value
    assert "restart failed" in str(err.value) and "E_INVALID" not in str(err.value)
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]
    hestia.restart_fails = False  # the retry converges and restarts the panel's DNS
    deploy(zones, ["192.0.2.10"], ["2001:db8::10"])
    assert values(hestia, "example.com", "web1", "AAAA") == ["2001:db8::10"]
    assert values(hestia, "2.0.192.in-addr.arpa", "10", "PTR") == [HOST + "."]
    assert hestia.restarts > 0


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


def test_key_with_the_bundled_dns_profile_is_told_which_permissions_it_lacks(hestia, zones):
    """install/common/api/update-dns-records allows v-list-dns-records and
    v-change-dns-record only: adding is E_FORBIDEN (10), not an authentication failure."""
    key = hestia.add_key("admin", PROFILE_UPDATE_DNS_RECORDS)
    limited = [ZoneConfig(z.name, z.provider, dict(z.settings, hash=key)) for z in zones]
    with pytest.raises(DnsError) as err:
        deploy(limited, ["192.0.2.10"])
    text = str(err.value)
    assert err.value.transient is False and "authentication refused" not in text
    assert "forbidden" in text and "v-add-dns-record" in text and "v-delete-dns-record" in text
    assert "update-dns-records" in text
    full = hestia.add_key("admin", PROFILE_UPDATE_DNS_RECORDS | {
        "v-add-dns-record", "v-delete-dns-record"}, access="F" * 20)
    enough = [ZoneConfig(z.name, z.provider, dict(z.settings, hash=full)) for z in zones]
    deploy(enough, ["192.0.2.10"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.10"]


def test_api_disabled_for_users_is_reported(hestia, zones):
    hestia.api_system = 1  # API for the admin only
    key = hestia.add_key("bob", DNS_COMMANDS)
    bob = [ZoneConfig(z.name, z.provider, dict(z.settings, hash=key)) for z in zones]
    with pytest.raises(DnsError) as err:
        deploy(bob, ["192.0.2.10"])
    assert "E_API_DISABLED" in str(err.value) and "non-admin" in str(err.value)
    assert err.value.transient is False


def test_last_a_record_of_a_zone_without_placeholder_is_refused_clearly(hestia):
    hestia.add_domain("only.example")
    zs = [ZoneConfig("only.example", "hestiacp",
                     {"api_url": hestia.api_url, "hash": hestia.hash, "hestia_user": "admin"})]
    apply_records(plan_records("web1.only.example", ["192.0.2.10"], ["2001:db8::10"], zs), zs)
    with pytest.raises(DnsError) as err:
        remove_records("web1.only.example", ["192.0.2.10"], ["2001:db8::10"], zs)
    assert err.value.transient is False
    assert "last A record" in str(err.value) and "last_a_placeholder" in str(err.value)
    assert values(hestia, "only.example", "web1", "AAAA") == []  # the rest is removed


def test_last_a_record_of_a_zone_becomes_the_operators_placeholder(hestia):
    """func/domain.sh is_dns_record_critical: the zone's last A record cannot be deleted; with
    last_a_placeholder it is changed into "@ A <placeholder>" instead, and reported."""
    hestia.add_domain("only.example")
    zs = [ZoneConfig("only.example", "hestiacp",
                     {"api_url": hestia.api_url, "hash": hestia.hash, "hestia_user": "admin",
                      "last_a_placeholder": "192.0.2.254"})]
    apply_records(plan_records("web1.only.example", ["192.0.2.10"], [], zs), zs)
    notes = remove_records("web1.only.example", ["192.0.2.10"], [], zs)
    assert len(notes) == 1 and "192.0.2.254" in notes[0] and "last A record" in notes[0]
    assert values(hestia, "only.example", "web1", "A") == []
    assert values(hestia, "only.example", "@", "A") == ["192.0.2.254"]
    assert remove_records("web1.only.example", ["192.0.2.10"], [], zs) == []
    # the placeholder is another A: the next host's record is deleted normally
    apply_records(plan_records("web2.only.example", ["192.0.2.11"], [], zs), zs)
    assert remove_records("web2.only.example", ["192.0.2.11"], [], zs) == []
    assert values(hestia, "only.example", "web2", "A") == []


def test_backslash_in_another_record_does_not_break_the_zone(hestia, zones):
    """v-list-dns-records json escapes only '"': a TXT value with a backslash makes the answer
    invalid JSON; the client still reads it."""
    hestia.seed("example.com", "_dmarc", "TXT", '"v=DMARC1; p=none; rua=a\\b"')
    hestia.seed("example.com", "k1._domainkey", "TXT", "v=DKIM1;     p=ab\\")
    listing = requests.post(hestia.api_url + "/api/", data={
        "hash": hestia.hash, "cmd": "v-list-dns-records", "arg1": "admin",
        "arg2": "example.com", "arg3": "json"}, timeout=5).text
    with pytest.raises(ValueError):
        json.loads(listing)
    deploy(zones, ["192.0.2.10"])
    deploy(zones, ["192.0.2.11"])
    assert values(hestia, "example.com", "web1", "A") == ["192.0.2.11"]
    remove_records(HOST, ["192.0.2.11"], [], zones)
    assert values(hestia, "example.com", "web1", "A") == []


def test_classless_zone_in_the_form_hestia_accepts(hestia):
    hestia.add_domain("0-63.2.0.192.in-addr.arpa")
    settings = {"api_url": hestia.api_url, "hash": hestia.hash, "hestia_user": "admin"}
    zs = [ZoneConfig("0-63.2.0.192.in-addr.arpa", "hestiacp", settings)]
    apply_records(plan_records(HOST, ["192.0.2.5"], [], zs), zs)
    assert values(hestia, "0-63.2.0.192.in-addr.arpa", "5", "PTR") == [HOST + "."]
    with pytest.raises(ValueError):  # the panel itself refuses the "/" form
        hestia.add_domain("0/26.2.0.192.in-addr.arpa")
