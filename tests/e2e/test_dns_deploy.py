"""Deploy and terminate with DNS on the real PowerDNS, answers checked over DNS (dnspython), and
on a HestiaCP panel (the fake in tests/dns/dnsfakes.py)."""

from __future__ import annotations

import dns.message
import dns.query
import dns.rdatatype
import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.models import DnsRecordRow, IpAddress, Operation, Service
from tests.dns.dnsfakes import (
    PDNS_API_KEY,
    PDNS_API_URL,
    PDNS_DNS_PORT,
    FakeHestia,
    TcpProxy,
    powerdns_zones_or_skip,
)
from workers import admin, scheduler
from workers.testing.harness import InProcessWorkers, all_ready, wait_until

FORWARD, REVERSE4 = "vps.example.net", "2.0.192.in-addr.arpa"


def _query(name: str, rtype: str) -> list[str]:
    answer = dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1",
                           port=PDNS_DNS_PORT, timeout=3)
    want = dns.rdatatype.from_text(rtype)
    return sorted(rd.to_text() for rr in answer.answer if rr.rdtype == want for rd in rr)


@pytest.fixture()
def pdns_zones():
    s, url = powerdns_zones_or_skip()
    for zone in (FORWARD, REVERSE4):
        s.delete(f"{url}/{zone}.", timeout=5)
        r = s.post(url, json={"name": f"{zone}.", "kind": "Native",
                              "nameservers": ["ns1.pvekvm.test."]}, timeout=5)
        assert r.status_code == 201, r.text
    yield
    for zone in (FORWARD, REVERSE4):
        s.delete(f"{url}/{zone}.", timeout=5)


def _use_powerdns(settings, api_url: str) -> None:
    catalog.load({
        "dns_providers": [{"name": "pdns", "kind": "powerdns", "settings": {
            "api_url": api_url, "api_key": PDNS_API_KEY, "server_id": "localhost",
            "timeout": 1}}],
        "dns_zones": [{"name": FORWARD, "provider": "pdns"},
                      {"name": REVERSE4, "provider": "pdns"}],
    }, settings.secret_key_file)


def _ptr_name(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def test_deploy_publishes_a_and_ptr_and_terminate_removes_them(settings, pdns_zones):
    _use_powerdns(settings, PDNS_API_URL)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=6001, client_id=3, product="vps-small", email="d@example.com")
        wait_until(all_ready([6001]), 60, "deploy")
        host = Service.get_by_id(6001).hostname
        ip = IpAddress.get((IpAddress.service_id == 6001) & (IpAddress.version == 4)).address
        assert host == "vps-3-6001.vps.example.net"
        assert _query(host, "A") == [ip]
        assert _query(_ptr_name(ip), "PTR") == [f"{host}."]

        billing.terminate(service_id=6001)
        wait_until(lambda: Service.get_by_id(6001).status == "terminated", 60, "terminate")
    assert _query(host, "A") == [] and _query(_ptr_name(ip), "PTR") == []
    assert DnsRecordRow.select().count() == 0


def test_powerdns_down_during_deploy_vm_ready_then_dns_converges(settings, pdns_zones):
    api_port = int(PDNS_API_URL.rsplit(":", 1)[1])
    proxy = TcpProxy(api_port)  # PowerDNS' API as the engine reaches it; not started = down
    _use_powerdns(settings, f"http://127.0.0.1:{proxy.port}")
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6002, client_id=3, product="vps-small",
                           email="e@example.com")
            wait_until(all_ready([6002]), 60, "deploy despite DNS being down")
        host = Service.get_by_id(6002).hostname
        ip = IpAddress.get((IpAddress.service_id == 6002) & (IpAddress.version == 4)).address
        assert _query(host, "A") == []
        owed = list(DnsRecordRow.select().where(DnsRecordRow.service_id == 6002))
        assert owed and not any(r.synced for r in owed) and "powerdns" in (owed[0].error or "")
        assert scheduler.dns_retry_once(settings) == 0  # still down: nothing converges
        line = next(ln for ln in admin.history(6002).splitlines() if "Set DNS records" in ln)
        assert line.startswith("[~]") and "DNS update deferred" in line and "powerdns" in line

        proxy.start()  # PowerDNS reachable again: the retry job brings DNS in step
        wait_until(lambda: scheduler.dns_retry_once(settings) or not scheduler.dnssync
                   .owed_services(), 10, "the DNS retry job")
        assert _query(host, "A") == [ip]
        assert _query(_ptr_name(ip), "PTR") == [f"{host}."]
        assert scheduler.dnssync.owed_services() == []
    finally:
        proxy.stop()


def test_change_package_to_another_pool_replaces_a_and_ptr(settings, pdns_zones):
    """A package on another IPv4 pool moves the VM's address: A is replaced and the old PTR
    goes, never leaving two of either."""
    _use_powerdns(settings, PDNS_API_URL)
    catalog.load({
        "ip_pools": [{"name": "second-v4", "version": 4, "network": "192.0.2.0/24",
                      "gateway": "192.0.2.1", "first": "192.0.2.251", "last": "192.0.2.254"}],
        "products": [{"name": "vps-moved", "template": "debian-12", "cores": 2,
                      "memory_mb": 2048, "disk_gb": 20, "target_node": "pve2",
                      "target_storage": "local-lvm", "ip_pool": "second-v4",
                      "dns_zone": FORWARD}],
    }, settings.secret_key_file)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=6003, client_id=3, product="vps-small", email="f@example.com")
        wait_until(all_ready([6003]), 60, "deploy")
        host = Service.get_by_id(6003).hostname
        old_ip = IpAddress.get(IpAddress.service_id == 6003).address
        billing.change_package(service_id=6003, product="vps-moved")
        wait_until(lambda: Operation.get_or_none((Operation.kind == "change_package")
                                                 & (Operation.status == "done")),
                   60, "change package")
    new_ip = IpAddress.get(IpAddress.service_id == 6003).address
    assert new_ip.startswith("192.0.2.25")
    assert _query(host, "A") == [new_ip]
    assert _query(_ptr_name(new_ip), "PTR") == [f"{host}."]
    assert _query(_ptr_name(old_ip), "PTR") == []
    assert IpAddress.get(IpAddress.address == old_ip).service_id is None  # back in the pool


def _use_hestia(settings, hestia, **extra) -> None:
    catalog.load({
        "dns_providers": [{"name": "panel", "kind": "hestiacp", "settings": {
            "api_url": hestia.api_url, "hash": hestia.hash, "hestia_user": "admin",
            "timeout": 2, **extra}}],
        "dns_zones": [{"name": FORWARD, "provider": "panel"}],
    }, settings.secret_key_file)


def test_terminating_the_last_vm_of_a_hestia_zone(settings):
    """HestiaCP keeps a zone's last A record (is_dns_record_critical). Terminating the zone's
    only VM completes (never pauses); the step line says why its A record stays and what to
    set. Once the operator sets last_a_placeholder, the DNS retry job turns that record into
    "@ A <placeholder>" and the service owes nothing more."""
    hestia = FakeHestia()
    hestia.add_domain(FORWARD)  # only the template's NS records: the VM's A will be the last
    _use_hestia(settings, hestia)
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6101, client_id=3, product="vps-small",
                           email="h@example.com")
            wait_until(all_ready([6101]), 60, "deploy")
            host = Service.get_by_id(6101).hostname
            label = host[: -len(FORWARD) - 1]
            ip = IpAddress.get((IpAddress.service_id == 6101) & (IpAddress.version == 4)).address
            assert [r["VALUE"] for r in hestia.rrset(FORWARD, label, "A")] == [ip]
            billing.terminate(service_id=6101)
            wait_until(lambda: Service.get_by_id(6101).status == "terminated", 60, "terminate")
        terminate = Operation.get((Operation.service_id == 6101)
                                  & (Operation.kind == "terminate"))
        assert terminate.status == "done"
        line = next(ln for ln in admin.history(6101).splitlines() if "Delete DNS records" in ln)
        assert line.startswith("[~]") and "last A record" in line
        assert "last_a_placeholder" in line
        assert [r["VALUE"] for r in hestia.rrset(FORWARD, label, "A")] == [ip]
        assert scheduler.dnssync.owed_services() == [6101]

        _use_hestia(settings, hestia, last_a_placeholder="192.0.2.254")
        assert scheduler.dns_retry_once(settings) == 1
        assert hestia.rrset(FORWARD, label, "A") == []
        assert [r["VALUE"] for r in hestia.rrset(FORWARD, "@", "A")] == ["192.0.2.254"]
        assert scheduler.dnssync.owed_services() == []
        assert DnsRecordRow.select().count() == 0
        assert hestia.violations == []
    finally:
        hestia.close()
