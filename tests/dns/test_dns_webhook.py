"""The ``webhook`` provider against a receiver that verifies each call's signature with its own
code (tests/dns/dnsreceiver.py, the way an operator's dns.php would)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from dnsfakes import HOSTILE_HOSTNAMES, free_port
from dnsreceiver import DnsReceiver, new_secret

from pvekvm.dns import (
    DnsError,
    ZoneConfig,
    apply_records,
    build_provider,
    check_zones,
    plan_records,
    remove_records,
)

FORWARD, REV24, CLASSLESS = "vps.example.net", "2.0.192.in-addr.arpa", "0/26.2.0.192.in-addr.arpa"
REV6 = "0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa"
HOST = "web1.vps.example.net"


@pytest.fixture
def receiver():
    secret = new_secret()
    r = DnsReceiver(secret, (FORWARD, REV24, CLASSLESS, REV6))
    r.secret = secret
    yield r
    r.close()


def zones(receiver, *names: str, **changes: object) -> list[ZoneConfig]:
    settings = {"url": receiver.url, "secret": receiver.secret, "timeout": 2, "ttl": 300,
                **changes}
    return [ZoneConfig(z, "webhook", dict(settings)) for z in names or
            (FORWARD, REV24, CLASSLESS, REV6)]


def test_each_rrset_change_is_one_signed_call_the_receiver_verifies(receiver):
    zs = zones(receiver)
    apply_records(plan_records(HOST, ["192.0.2.10", "192.0.2.200"], ["2001:db8:100::10"], zs),
                  zs)
    assert [c.verdict for c in receiver.calls] == ["ok"] * 5  # A, AAAA and three PTRs
    assert receiver.rrset(HOST, "A") == ["192.0.2.10", "192.0.2.200"]
    assert receiver.rrset(HOST, "AAAA") == ["2001:db8:100::10"]
    assert receiver.rrset(f"10.{CLASSLESS}", "PTR") == [HOST]  # RFC 2317: in the /26 zone
    assert receiver.rrset(f"200.{REV24}", "PTR") == [HOST]
    first = receiver.calls[0]
    assert first.body.count(b"\n") == 0 and first.body.isascii()
    assert json.loads(first.body) == {"action": "replace", "zone": FORWARD, "name": HOST,
                                      "type": "A", "contents": ["192.0.2.10", "192.0.2.200"],
                                      "ttl": 300}
    ids = [c.headers["webhook-id"] for c in receiver.calls]
    assert len(set(ids)) == len(ids)  # one id per call: a receiver may drop replays by id

    remove_records(HOST, ["192.0.2.10", "192.0.2.200"], ["2001:db8:100::10"], zs)
    assert receiver.rrset(HOST, "A") == [] and receiver.rrset(f"10.{CLASSLESS}", "PTR") == []
    assert receiver.changes()[-1] == {"action": "delete", "zone": REV6, "type": "PTR",
                                      "name": "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1."
                                              "0.8.b.d.0.1.0.0.2.ip6.arpa"}


def test_the_signature_covers_id_timestamp_and_body(receiver):
    zs = zones(receiver, FORWARD)
    apply_records(plan_records(HOST, ["192.0.2.10"], [], zs), zs)
    sent = receiver.calls[0]
    headers = {k: v for k, v in sent.headers.items() if k.lower().startswith("webhook-")}
    replay = requests.post(receiver.url, data=sent.body, headers=headers, timeout=5)
    assert (replay.status_code, replay.json()) == (401, {"error": "replayed webhook-id"})
    forged = sent.body.replace(b"192.0.2.10", b"203.0.113.6")
    headers["webhook-id"] = headers["webhook-id"] + "x"
    tampered = requests.post(receiver.url, data=forged, headers=headers, timeout=5)
    assert tampered.json() == {"error": "bad signature"}
    assert receiver.rrset(HOST, "A") == ["192.0.2.10"]


def test_a_wrong_secret_is_a_permanent_error_that_never_shows_the_secret(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = new_secret()
    zs = zones(receiver, FORWARD, secret=wrong)
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(HOST, ["192.0.2.10"], [], zs), zs)
    assert "refused the signature (HTTP 401)" in str(err.value) and not err.value.transient
    for secret in (wrong, receiver.secret, wrong.removeprefix("whsec_")):
        assert secret not in str(err.value) + caplog.text + repr(build_provider(zs[0]))


def test_two_secrets_while_rotating_sign_each_call_twice(receiver):
    """The receiver holds either secret: the old one until it is switched, the new one after."""
    zs = zones(receiver, FORWARD, secret=[new_secret(), receiver.secret])
    apply_records(plan_records(HOST, ["192.0.2.10"], [], zs), zs)
    zs = zones(receiver, FORWARD, secret=[receiver.secret, new_secret()])
    apply_records(plan_records(HOST, ["192.0.2.11"], [], zs), zs)
    assert [c.verdict for c in receiver.calls] == ["ok", "ok"]
    assert [len(c.headers["webhook-signature"].split()) for c in receiver.calls] == [2, 2]
    assert receiver.rrset(HOST, "A") == ["192.0.2.11"]


@pytest.mark.parametrize(("status", "body", "reason", "transient"), [
    (422, b'{"error": "zone is locked\\nby the registrar"}', "HTTP 422: zone is locked by the "
     "registrar", False),
    (409, b"name held elsewhere", "HTTP 409: name held elsewhere", False),
    (503, b"maintenance", "HTTP 503: maintenance", True),
    (429, b"", "HTTP 429", True),
    (500, b"x" * 1_000_000, "HTTP 500: " + "x" * 200 + "...", True),
    (302, b"", "redirect, not followed: set url to where the receiver answers", False),
])
def test_a_receiver_refusal_is_recorded_with_its_reason(receiver, status, body, reason,
                                                        transient):
    receiver.refuse_with = (status, body)
    zs = zones(receiver, FORWARD)
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(HOST, ["192.0.2.10"], [], zs), zs)
    assert str(err.value).endswith(reason) and err.value.transient is transient
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_an_unreachable_receiver_is_transient(receiver):
    zs = zones(receiver, FORWARD, url=f"http://127.0.0.1:{free_port()}/dns.php?token=abc")
    with pytest.raises(DnsError, match="cannot connect") as err:
        apply_records(plan_records(HOST, ["192.0.2.10"], [], zs), zs)
    assert err.value.transient and "token=abc" not in str(err.value)


def test_hostile_names_and_newlines_never_reach_the_receiver(receiver):
    zs = zones(receiver)
    for bad in HOSTILE_HOSTNAMES + [f"a\nb.{FORWARD}", f"x.{FORWARD}\r\nwebhook-id: 1",
                                    "x." * 130 + FORWARD]:
        with pytest.raises(ValueError):
            plan_records(bad, ["192.0.2.10"], [], zs)
        with pytest.raises(ValueError):  # a client's reverse DNS name for its address
            plan_records(HOST, ["192.0.2.10"], [], zs, ptr_hosts={"192.0.2.10": bad})
    provider = build_provider(zs[0])
    for name in ("evil.example.org", f"x{FORWARD}", f"a\n.{FORWARD}", 'a"},"x":{.' + FORWARD):
        with pytest.raises(ValueError, match="not inside zone"):
            provider.upsert(FORWARD, name, "A", ["192.0.2.10"], 300)
        with pytest.raises(ValueError, match="not inside zone"):
            provider.delete(FORWARD, name, "A")
    assert receiver.calls == []


def test_probe_asks_the_receiver_and_changes_nothing(receiver):
    build_provider(zones(receiver, FORWARD)[0]).probe(FORWARD)
    assert [json.loads(c.body) for c in receiver.calls] == [{"action": "probe",
                                                             "zone": FORWARD}]
    assert receiver.records == {}
    other = ZoneConfig("other.example", "webhook", zones(receiver, FORWARD)[0].settings)
    with pytest.raises(DnsError, match="HTTP 404: zone other.example not served here"):
        build_provider(other).probe("other.example")


@pytest.mark.parametrize(("changes", "problem"), [
    ({"url": "ftp://dns.example.net/"}, "http:// or https://"),
    ({"url": "http:///dns.php"}, "http:// or https://"),
    ({"url": "https://dns.example.net/dns.php\r\nX: y"}, "http:// or https://"),
    ({"url": "https://user:pw@dns.example.net/"}, "no credentials in url"),
    ({"url": "https://dns.example.net:99999/"}, "invalid port"),
    ({"secret": "plain-secret-without-prefix"}, "whsec_ followed by base64"),
    ({"secret": "whsec_not base64!"}, "not base64"),
    ({"secret": "whsec_c2hvcnQ="}, "at least 16 bytes"),
    ({"verify_tls": "no"}, "verify_tls"),
    ({"secret": []}, "a list of two while rotating"),
    ({"secret": [new_secret(), "whsec_c2hvcnQ="]}, "at least 16 bytes"),
])
def test_settings_every_call_would_fail_with_are_refused_at_catalog_check(changes, problem):
    base = {"url": "https://dns.example.net/dns.php", "secret": new_secret()}
    check_zones([ZoneConfig(FORWARD, "webhook", dict(base))])  # the baseline passes
    with pytest.raises(ValueError, match=problem) as err:
        check_zones([ZoneConfig(FORWARD, "webhook", {**base, **changes})])
    assert base["secret"] not in str(err.value) and "pw@" not in str(err.value)


@pytest.fixture
def php_receiver(tmp_path):
    """tests/dns/dns_receiver.php under PHP's built-in server: a verifier in another language."""
    php = shutil.which("php")
    if php is None:
        message = "PHP not installed (Debian package php-cli)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    secret, store, port = new_secret(), tmp_path / "records.json", free_port()
    proc = subprocess.Popen(
        [php, "-S", f"127.0.0.1:{port}", str(Path(__file__).with_name("dns_receiver.php"))],
        env={**os.environ, "DNS_SECRET": secret, "DNS_STORE": str(store)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.02)  # poll interval while PHP binds its port
    yield f"http://127.0.0.1:{port}/dns.php", secret, store
    proc.terminate()
    proc.wait(timeout=10)


def test_a_php_receiver_verifies_the_signature_with_its_own_code(php_receiver):
    url, secret, store = php_receiver
    zs = [ZoneConfig(z, "webhook", {"url": url, "secret": secret, "ttl": 300})
          for z in (FORWARD, CLASSLESS)]
    apply_records(plan_records(HOST, ["192.0.2.10"], [], zs), zs)
    assert json.loads(store.read_text()) == {
        f"{HOST} A": {"contents": ["192.0.2.10"], "ttl": 300},
        f"10.{CLASSLESS} PTR": {"contents": [HOST], "ttl": 300}}
    build_provider(zs[0]).probe(FORWARD)
    wrong = [ZoneConfig(FORWARD, "webhook", {"url": url, "secret": new_secret()})]
    with pytest.raises(DnsError, match=r"refused the signature \(HTTP 401\).*bad signature"):
        remove_records(HOST, ["192.0.2.10"], [], wrong)
    remove_records(HOST, ["192.0.2.10"], [], zs)
    assert json.loads(store.read_text()) == {}
