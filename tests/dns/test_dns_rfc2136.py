"""RFC 2136 provider against a real BIND 9 (tests/dns/bindserver.py, Debian's bind9): what it
did is checked by asking that server over DNS, never by reading our own state."""

from __future__ import annotations

import ipaddress
import logging
import socket
import uuid

import pytest
from bindserver import CLASSLESS, FORWARD, LOCKED, REV6, REV24
from dnsfakes import HOSTILE_HOSTNAMES, SilentServer, TcpProxy, free_port

from pvekvm.dns import (
    DnsError,
    ZoneConfig,
    apply_records,
    build_provider,
    check_zones,
    plan_records,
    remove_records,
)
from pvekvm.redact import is_secret_name

ALL = (FORWARD, REV24, CLASSLESS, REV6)


def zones(bind, *names: str, **changes: object) -> list[ZoneConfig]:
    return [ZoneConfig(z, "rfc2136", bind.settings(**changes)) for z in names]


def updates_of(bind, name: str) -> int:
    """How many UPDATE messages for ``name`` BIND logged (each rrset change logs its lines)."""
    return sum(1 for line in bind.log().splitlines()
               if "updating zone" in line and f"at '{name}'" in line)


def last(ip: str) -> str:
    return ip.rsplit(".", 1)[1]


def test_forward_and_reverse_records_rfc2317_classless_included(bind9, bind_names):
    n, zs = bind_names, zones(bind9, *ALL)
    host = n["host"]
    apply_records(plan_records(host, [n["low"], n["high"]], [n["v6"]], zs), zs)
    assert bind9.query(host, "A") == sorted([n["low"], n["high"]])
    assert bind9.query(host, "AAAA") == [n["v6"]]
    # .low sits in the delegated /26: the /24 CNAMEs it there, the PTR is written in the child
    low = last(n["low"])
    assert bind9.query(f"{low}.{REV24}", "CNAME") == [f"{low}.{CLASSLESS}."]
    assert bind9.query(f"{low}.{CLASSLESS}", "PTR") == [f"{host}."]
    assert bind9.resolve(ipaddress.ip_address(n["low"]).reverse_pointer, "PTR") == [f"{host}."]
    assert bind9.query(ipaddress.ip_address(n["high"]).reverse_pointer, "PTR") == [f"{host}."]
    assert bind9.query(ipaddress.ip_address(n["v6"]).reverse_pointer, "PTR") == [f"{host}."]
    assert bind9.answer(host, "A").answer[0].ttl == 300  # the zone's ttl setting


def test_a_repeat_sends_no_update_and_a_new_address_replaces_the_old(bind9, bind_names):
    n, zs = bind_names, zones(bind9, *ALL)
    host = n["host"]
    apply_records(plan_records(host, [n["low"]], [], zs), zs)
    serial, sent = bind9.soa_serial(FORWARD), updates_of(bind9, host)
    apply_records(plan_records(host, [n["low"]], [], zs), zs)
    assert (bind9.soa_serial(FORWARD), updates_of(bind9, host)) == (serial, sent)
    # a changed address replaces the rrset in one UPDATE: never two A records
    apply_records(plan_records(host, [n["high"]], [], zs), zs)
    assert bind9.query(host, "A") == [n["high"]]
    assert bind9.soa_serial(FORWARD) == serial + 1
    # and a changed ttl alone is a change too
    zs300 = zones(bind9, *ALL, ttl=600)
    apply_records(plan_records(host, [n["high"]], [], zs300), zs300)
    assert bind9.answer(host, "A").answer[0].ttl == 600


def test_remove_then_remove_again_sends_nothing(bind9, bind_names):
    n, zs = bind_names, zones(bind9, *ALL)
    host, low = n["host"], last(n["low"])
    apply_records(plan_records(host, [n["low"]], [n["v6"]], zs), zs)
    remove_records(host, [n["low"]], [n["v6"]], zs)
    assert bind9.query(host, "A") == [] and bind9.query(host, "AAAA") == []
    assert bind9.query(f"{low}.{CLASSLESS}", "PTR") == []
    assert bind9.query(ipaddress.ip_address(n["v6"]).reverse_pointer, "PTR") == []
    serial, sent = bind9.soa_serial(FORWARD), updates_of(bind9, host)
    remove_records(host, [n["low"]], [n["v6"]], zs)  # absent: fine, and nothing sent
    assert (bind9.soa_serial(FORWARD), updates_of(bind9, host)) == (serial, sent)


REFUSALS = [
    pytest.param(FORWARD, {"key_secret": "other"}, "(BADSIG): key_secret differs", id="BADSIG"),
    pytest.param(FORWARD, {"key_name": "nokey."}, "(BADKEY)", id="BADKEY-name"),
    pytest.param(FORWARD, {"key_algorithm": "hmac-sha512"}, "(BADKEY)", id="BADKEY-algorithm"),
    pytest.param(LOCKED, {}, "refused (REFUSED): its update-policy / allow-update does not let "
                 "TSIG key 'pvekvm.'", id="REFUSED-policy"),
    pytest.param(FORWARD, {"unsigned": True, "key_name": "", "key_secret": ""},
                 "does not let unsigned updates", id="REFUSED-unsigned"),
    pytest.param(f"sub.{FORWARD}", {}, "not authoritative for the zone (NOTAUTH)",
                 id="NOTAUTH"),
    pytest.param("nothere.example", {}, "refuses queries for the zone (REFUSED)",
                 id="REFUSED-query"),
]


@pytest.mark.parametrize(("zone", "changes", "reason"), REFUSALS)
def test_a_refusal_is_a_permanent_error_naming_the_cause(bind9, zone, changes, reason, caplog):
    if changes.get("key_secret") == "other":
        changes = {"key_secret": bind9.other_secret}
    zs = zones(bind9, zone, **changes)
    host = f"h{uuid.uuid4().hex[:8]}.{zone}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(host, ["192.0.2.77"], [], zs), zs)
    assert reason in str(err.value) and not err.value.transient
    assert f"rfc2136 127.0.0.1:{bind9.port} zone {zone}" in str(err.value)
    if zone != "nothere.example":  # a zone the server serves: nothing was written
        assert bind9.query(host, "A") == []
    for secret in (bind9.secret, bind9.other_secret):
        assert secret not in str(err.value) and secret not in caplog.text
        assert secret not in repr(build_provider(zones(bind9, FORWARD)[0]))
        assert secret not in repr(zs)


def test_the_tsig_secret_setting_is_one_redaction_knows():
    assert is_secret_name("key_secret")


def test_a_cname_at_the_name_is_reported_not_taken_for_success(bind9, bind_names):
    """The /26 configured at the ISP but not here: the PTR lands on the /24's CNAME, which BIND
    ignores (RFC 2136 3.4.2.2) while answering NOERROR; the read-back says what it holds."""
    n, zs = bind_names, zones(bind9, FORWARD, REV24)
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(n["host"], [n["low"]], [], zs), zs)
    low = last(n["low"])
    assert f"answers CNAME {low}.{CLASSLESS}." in str(err.value)
    assert bind9.query(n["host"], "A") == [n["low"]]  # the forward record went through


def test_probe_checks_authority_key_and_write_permission_without_changing_anything(bind9):
    serials = {z: bind9.soa_serial(z) for z in ALL}
    for zone in zones(bind9, *ALL):
        build_provider(zone).probe(zone.name)
    assert {z: bind9.soa_serial(z) for z in ALL} == serials
    with pytest.raises(DnsError, match=r"may the key write A: .*\(REFUSED\)"):
        build_provider(zones(bind9, LOCKED)[0]).probe(LOCKED)
    with pytest.raises(DnsError, match="BADSIG"):
        build_provider(zones(bind9, FORWARD, key_secret=bind9.other_secret)[0]).probe(FORWARD)
    with pytest.raises(DnsError, match="REFUSED"):
        build_provider(zones(bind9, "nothere.example")[0]).probe("nothere.example")


def test_a_server_given_by_host_name_is_reached_at_an_address_it_listens_on(bind9,
                                                                            bind_names,
                                                                            monkeypatch):
    """The name resolves to 127.0.0.2, where nothing listens, then 127.0.0.1, where BIND does:
    the update goes through the second. (Only the name look-up is a stand-in: the machine's
    resolver is never asked.)"""
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "ns1.bind.test":
            return [info for a in ("127.0.0.2", "127.0.0.1") for info in real(a, *args, **kwargs)]
        if host == "nowhere.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    zs = zones(bind9, FORWARD, server="ns1.bind.test")
    apply_records(plan_records(bind_names["host"], [bind_names["low"]], [], zs), zs)
    assert bind9.query(bind_names["host"], "A") == [bind_names["low"]]
    unknown = zones(bind9, FORWARD, server="nowhere.invalid")
    with pytest.raises(DnsError, match="cannot resolve server 'nowhere.invalid'") as err:
        apply_records(plan_records(bind_names["host"], [bind_names["low"]], [], unknown),
                      unknown)
    assert err.value.transient


def test_down_or_silent_server_is_transient(bind9):
    host = f"h{uuid.uuid4().hex[:8]}.{FORWARD}"
    down = zones(bind9, FORWARD, port=free_port())
    with pytest.raises(DnsError, match="cannot talk to the server") as err:
        apply_records(plan_records(host, ["192.0.2.78"], [], down), down)
    assert err.value.transient
    silent = SilentServer()
    try:
        slow = zones(bind9, FORWARD, port=silent.port, timeout=0.3)
        with pytest.raises(DnsError, match=r"no answer within 0.3s") as err:
            apply_records(plan_records(host, ["192.0.2.78"], [], slow), slow)
        assert err.value.transient
    finally:
        silent.close()


def test_hostile_names_never_reach_the_server(bind9):
    """Every name is checked before a packet leaves: a host outside the configured zones gets
    no record, a malformed or huge one is refused, and the provider itself refuses a name
    outside its zone (a row read back from the database, say)."""
    proxy = TcpProxy(bind9.port).start()
    try:
        zs = zones(bind9, *ALL, port=proxy.port)
        for bad in HOSTILE_HOSTNAMES + ["x." * 130 + FORWARD, f"a\nb.{FORWARD}",
                                        f"{'a' * 64}.{FORWARD}"]:
            with pytest.raises(ValueError):
                plan_records(bad, ["192.0.2.79"], [], zs)
        assert plan_records("web.other.example", [], [], zs) == []
        provider = build_provider(zs[0])
        for name in ("evil.example.org", f"x{FORWARD}", f"{'a' * 250}.{FORWARD}"):
            with pytest.raises(ValueError, match="not inside zone"):
                provider.upsert(FORWARD, name, "A", ["192.0.2.79"], 300)
            with pytest.raises(ValueError, match="not inside zone"):
                provider.delete(FORWARD, name, "A")
        with pytest.raises(ValueError, match="unsupported record type"):
            provider.upsert(FORWARD, f"x.{FORWARD}", "TXT", ["hi"], 300)
        assert proxy.connections == 0
    finally:
        proxy.stop()


SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
BASE = {"server": "ns1.example.net", "key_name": "pvekvm.", "key_secret": SECRET}


@pytest.mark.parametrize(("changes", "problem"), [
    ({"server": ""}, "server must be"),
    ({"server": "bad host;rm"}, "server must be"),
    ({"port": True}, "port must be"),
    ({"port": 70000}, "port must be"),
    ({"key_secret": "not base64 !!"}, "key_secret is not base64"),
    ({"key_secret": "c2hvcnQ="}, "at least 16 bytes"),
    ({"key_name": "bad key"}, "key_name must be"),
    ({"key_algorithm": "hmac-sha3"}, "key_algorithm must be one of"),
    ({"key_name": "", "key_secret": ""}, "set key_name and key_secret"),
    ({"unsigned": True}, "choose one"),
    ({"unsigned": "yes", "key_name": "", "key_secret": ""}, "unsigned must be"),
])
def test_settings_every_update_would_fail_with_are_refused_at_catalog_check(changes, problem):
    check_zones([ZoneConfig(FORWARD, "rfc2136", dict(BASE))])  # the baseline passes
    with pytest.raises(ValueError, match=problem) as err:
        check_zones([ZoneConfig(FORWARD, "rfc2136", {**BASE, **changes})])
    assert SECRET not in str(err.value) and "not base64 !!" not in str(err.value)
