"""A DNS name belongs to the service that published it: DNS sync never overwrites or removes
a record another service owns. Real PowerDNS, answers checked over DNS.

Each test uses its own forward zone (named after its RabbitMQ namespace): PowerDNS is shared by
every checkout on the machine, and a zone another run deletes and recreates meanwhile would
fail these tests for nothing."""

from __future__ import annotations

import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.models import DnsRecordRow, IpAddress, Product, Service, StepRun
from tests.dns.dnsfakes import PDNS_API_KEY, PDNS_API_URL, TcpProxy, powerdns_zones_or_skip
from tests.e2e.test_dns_deploy import _query
from workers import admin, scheduler
from workers.testing.harness import InProcessWorkers, all_ready, wait_until


@pytest.fixture()
def zone(topology, settings):
    """A fresh forward zone on PowerDNS for this test only; vps-small's hosts live in it."""
    name = f"{topology.namespace}.example.net"
    s, url = powerdns_zones_or_skip()
    r = s.post(url, json={"name": f"{name}.", "kind": "Native",
                          "nameservers": ["ns1.pvekvm.test."]}, timeout=5)
    assert r.status_code == 201, r.text
    Product.update(dns_zone=name).where(Product.name == "vps-small").execute()
    yield name
    s.delete(f"{url}/{name}.", timeout=5)


def _use_powerdns(settings, zone: str, api_url: str) -> None:
    catalog.load({
        "dns_providers": [{"name": "pdns", "kind": "powerdns", "settings": {
            "api_url": api_url, "api_key": PDNS_API_KEY, "server_id": "localhost",
            "timeout": 1}}],
        "dns_zones": [{"name": zone, "provider": "pdns"}],
    }, settings.secret_key_file)


def _dns_line(service_id: int, label: str) -> str:
    return next(ln for ln in reversed(admin.history(service_id).splitlines()) if label in ln)


def test_a_name_whose_old_owner_still_owes_its_delete_is_held_then_published(settings, zone):
    """Service A is terminated while PowerDNS is down (its delete is owed); B then orders the
    same, now free, host name. B's DNS step must not overwrite A's rrset (A's owed delete
    would then remove B's record): B's record is held until A's delete went through, then
    the retry job publishes it."""
    api_port = int(PDNS_API_URL.rsplit(":", 1)[1])
    proxy = TcpProxy(api_port).start()
    _use_powerdns(settings, zone, f"http://127.0.0.1:{proxy.port}")
    host = f"shop.{zone}"
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6101, client_id=3, product="vps-small",
                           email="a@example.com", hostname=host)
            wait_until(all_ready([6101]), 60, "A deployed")
            ip_a = IpAddress.get(IpAddress.service_id == 6101).address
            assert _query(host, "A") == [ip_a]
            proxy.stop()
            billing.terminate(service_id=6101)
            wait_until(lambda: Service.get_by_id(6101).status == "terminated", 60, "A gone")
            assert DnsRecordRow.select().where(DnsRecordRow.service_id == 6101).count() == 1
            proxy.start()
            billing.create(service_id=6102, client_id=4, product="vps-small",
                           email="b@example.com", hostname=host.upper())
            wait_until(all_ready([6102]), 60, "B deployed")
        ip_b = IpAddress.get(IpAddress.service_id == 6102).address
        line = _dns_line(6102, "Set DNS records")
        assert line.startswith("[~]") and "service 6101" in line, line
        assert _query(host, "A") == [ip_a]  # B did not overwrite what A still owns
        held = DnsRecordRow.get(DnsRecordRow.service_id == 6102)
        assert held.held_by == 6101 and not held.synced

        wait_until(lambda: scheduler.dns_retry_once(settings) is not None
                   and not scheduler.dnssync.owed_services(), 10, "the DNS retry job")
        assert _query(host, "A") == [ip_b]
        assert DnsRecordRow.select().where(DnsRecordRow.service_id == 6101).count() == 0
        assert DnsRecordRow.get(DnsRecordRow.service_id == 6102).held_by is None
    finally:
        proxy.stop()


def test_terminate_never_removes_a_record_another_service_owns(settings, zone):
    """An engine before the ownership rules let service X publish over V's name (the row is
    what such a version left behind). Neither X's DNS retry (which drops rows X no longer
    wants) nor terminating X removes V's A record; X's DNS step says it left a name alone."""
    _use_powerdns(settings, zone, PDNS_API_URL)
    victim = f"victim.{zone}"
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=6201, client_id=3, product="vps-small",
                       email="v@example.com", hostname=victim)
        wait_until(all_ready([6201]), 60, "V deployed")
        billing.create(service_id=6202, client_id=4, product="vps-small", email="x@example.com")
        wait_until(all_ready([6202]), 60, "X deployed")
        ip_v = IpAddress.get(IpAddress.service_id == 6201).address
        ip_x = IpAddress.get(IpAddress.service_id == 6202).address
        x_host = Service.get_by_id(6202).hostname
        assert _query(victim, "A") == [ip_v] and _query(x_host, "A") == [ip_x]
        # X's retry finds the row stale (not X's host): the row goes, V's record stays.
        DnsRecordRow.create(service_id=6202, zone=zone, name=victim, type="A", content=ip_x,
                            synced=False)
        assert scheduler.dns_retry_once(settings) == 1
        assert _query(victim, "A") == [ip_v] and _query(x_host, "A") == [ip_x]
        assert not DnsRecordRow.select().where((DnsRecordRow.service_id == 6202)
                                               & (DnsRecordRow.name == victim)).exists()
        # Terminating X removes X's records only.
        DnsRecordRow.create(service_id=6202, zone=zone, name=victim, type="A", content=ip_x,
                            synced=True)
        billing.terminate(service_id=6202)
        wait_until(lambda: Service.get_by_id(6202).status == "terminated", 60, "X gone")
    assert _query(victim, "A") == [ip_v]
    assert _query(x_host, "A") == []
    step = StepRun.get((StepRun.service_id == 6202) & (StepRun.label == "Delete DNS records"))
    assert step.message == "records removed; 1 name(s) of other services left alone"
    assert [r.name for r in DnsRecordRow.select()] == [victim]  # V's, untouched
