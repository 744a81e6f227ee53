"""Deploy and terminate with DNS through RFC 2136 on a real BIND 9 (answers checked over DNS),
and through the signed webhook to a receiver that verifies each call.

BIND serves the forward zone, the RFC 2317 /26 (its parent /24, the "ISP's", CNAMEs .0-.63 into
it and is not configured here) and the IPv6 /64: the pool's first address, 192.0.2.10, gets its
PTR in 0/26.2.0.192.in-addr.arpa and resolves through the /24's CNAME."""

from __future__ import annotations

import ipaddress
import logging
import os

import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.models import DnsRecordRow, IpAddress, Service
from tests.dns.bindserver import CLASSLESS, FORWARD, NAMED, REV6, BindServer
from tests.dns.dnsfakes import TcpProxy
from tests.dns.dnsreceiver import DnsReceiver, new_secret
from workers import admin, scheduler
from workers.testing.harness import InProcessWorkers, all_ready, wait_until


@pytest.fixture()
def bind9(tmp_path):
    if not os.path.exists(NAMED):
        message = "BIND 9 not installed (/usr/sbin/named; Debian package bind9)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = BindServer(tmp_path / "bind").start()
    yield server
    server.stop()


def _use(settings, kind: str, provider: dict, zones=(FORWARD, CLASSLESS, REV6)) -> None:
    catalog.load({"dns_providers": [{"name": "dns1", "kind": kind, "settings": provider}],
                  "dns_zones": [{"name": z, "provider": "dns1"} for z in zones]},
                 settings.secret_key_file)


def _addresses(service_id: int) -> tuple[str, str | None]:
    rows = {r.version: r.address for r in IpAddress.select().where(
        IpAddress.service_id == service_id)}
    return rows[4], rows.get(6)


def _ptr(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


def _line(service_id: int, label: str) -> str:
    return next(ln for ln in reversed(admin.history(service_id).splitlines()) if label in ln)


def test_deploy_sets_a_aaaa_and_classless_ptr_in_bind_and_terminate_removes_them(settings,
                                                                                 bind9):
    _use(settings, "rfc2136", bind9.settings())
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=6301, client_id=3, product="vps-small", email="d@example.com",
                       ipv6=True)
        wait_until(all_ready([6301]), 60, "deploy")
        host = Service.get_by_id(6301).hostname
        v4, v6 = _addresses(6301)
        assert ipaddress.ip_address(v4) in ipaddress.ip_network("192.0.2.0/26")
        assert v6 is not None
        assert bind9.query(host, "A") == [v4] and bind9.query(host, "AAAA") == [v6]
        last = v4.rsplit(".", 1)[1]
        assert bind9.query(f"{last}.{CLASSLESS}", "PTR") == [f"{host}."]
        assert bind9.resolve(_ptr(v4), "PTR") == [f"{host}."]  # through the /24's CNAME
        assert bind9.query(_ptr(v6), "PTR") == [f"{host}."]
        assert _line(6301, "Set DNS records").startswith("[+]")

        billing.terminate(service_id=6301)
        wait_until(lambda: Service.get_by_id(6301).status == "terminated", 60, "terminate")
    assert bind9.query(host, "A") == [] and bind9.query(host, "AAAA") == []
    assert bind9.resolve(_ptr(v4), "PTR") == [] and bind9.query(_ptr(v6), "PTR") == []
    assert DnsRecordRow.select().count() == 0


def test_a_refused_key_is_recorded_with_its_reason_and_never_its_secret(settings, bind9,
                                                                        caplog):
    """The VM is ready (DNS never blocks a deploy); the step line and the owed rows say BADSIG
    and which setting to fix; the secret appears in no line, row or log record."""
    caplog.set_level(logging.DEBUG)
    wrong = bind9.other_secret
    _use(settings, "rfc2136", bind9.settings(key_secret=wrong))
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=6302, client_id=3, product="vps-small", email="e@example.com")
        wait_until(all_ready([6302]), 60, "deploy despite DNS refusing")
    host = Service.get_by_id(6302).hostname
    assert bind9.query(host, "A") == []
    line = _line(6302, "Set DNS records")
    assert line.startswith("[~]") and "(BADSIG): key_secret differs" in line, line
    rows = list(DnsRecordRow.select().where(DnsRecordRow.service_id == 6302))
    assert rows and all(not r.synced and "BADSIG" in (r.error or "") for r in rows)
    seen = admin.history(6302) + caplog.text + "".join(r.error or "" for r in rows)
    assert wrong not in seen and bind9.secret not in seen


def test_a_name_another_service_still_owns_is_held_then_published(settings, bind9):
    """A is terminated while BIND is unreachable (its delete is owed); B orders the same host
    name. B's record is held, BIND keeps A's address, until A's delete went through: then
    the DNS retry job publishes B's."""
    proxy = TcpProxy(bind9.port).start()
    _use(settings, "rfc2136", bind9.settings(port=proxy.port, timeout=1))
    host = f"shop.{FORWARD}"
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6303, client_id=3, product="vps-small",
                           email="a@example.com", hostname=host)
            wait_until(all_ready([6303]), 60, "A deployed")
            ip_a = _addresses(6303)[0]
            assert bind9.query(host, "A") == [ip_a]
            proxy.stop()
            billing.terminate(service_id=6303)
            wait_until(lambda: Service.get_by_id(6303).status == "terminated", 60, "A gone")
            proxy.start()
            billing.create(service_id=6304, client_id=4, product="vps-small",
                           email="b@example.com", hostname=host)
            wait_until(all_ready([6304]), 60, "B deployed")
        ip_b = _addresses(6304)[0]  # A's address back from the pool, likely: its PTR too
        line = _line(6304, "Set DNS records")
        assert line.startswith("[~]") and "service 6303" in line, line
        assert bind9.query(host, "A") == [ip_a]  # B did not overwrite what A still owns
        wait_until(lambda: scheduler.dns_retry_once(settings) is not None
                   and not scheduler.dnssync.owed_services(), 10, "the DNS retry job")
        assert bind9.query(host, "A") == [ip_b]
        assert bind9.resolve(_ptr(ip_b), "PTR") == [f"{host}."]
        if ip_a != ip_b:
            assert bind9.resolve(_ptr(ip_a), "PTR") == []
    finally:
        proxy.stop()


@pytest.mark.slow  # ~2.5 s: the steps' path is the rfc2136 tests' (dnssync, apply_records); the
# webhook's wire is proven in the suite by tests/dns/test_dns_webhook.py (Python and PHP receivers)
def test_deploy_and_terminate_through_the_signed_webhook(settings):
    secret = new_secret()
    receiver = DnsReceiver(secret, (FORWARD, CLASSLESS, REV6))
    _use(settings, "webhook", {"url": receiver.url, "secret": secret, "timeout": 2})
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6305, client_id=3, product="vps-small",
                           email="w@example.com", ipv6=True)
            wait_until(all_ready([6305]), 60, "deploy")
            host = Service.get_by_id(6305).hostname
            v4, v6 = _addresses(6305)
            assert v6 and receiver.rrset(host, "AAAA") == [v6]
            assert receiver.rrset(host, "A") == [v4]
            assert receiver.rrset(f"{v4.rsplit('.', 1)[1]}.{CLASSLESS}", "PTR") == [host]
            billing.terminate(service_id=6305)
            wait_until(lambda: Service.get_by_id(6305).status == "terminated", 60, "terminate")
        assert receiver.records == {}
        assert {c.verdict for c in receiver.calls} == {"ok"}  # every call's signature verified
        assert DnsRecordRow.select().count() == 0
    finally:
        receiver.close()
