"""Additional IPv4 addresses and a routed IPv6 prefix, through intake, the workers, pvesim and
the real PowerDNS (zones of this test only): deploy puts every address in cloud-init (one NIC per
extra IPv4), in the anti-spoofing IPSets and in reverse DNS; the client may set the PTR of an
extra address; a downgrade gives the extras back (NICs, ipconfigN, IPSet entries and PTRs gone),
an upgrade takes them again, a reinstall keeps them, terminate releases everything, the prefix
included."""

from __future__ import annotations

import ipaddress
import json

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from producers.api import OrderClient
from pvekvm import catalog, messaging
from pvekvm.models import DnsRecordRow, IpAddress, Operation, OutboxEvent, Product, Service
from steps import pvecfg
from tests.dns.dnsfakes import PDNS_API_KEY, PDNS_API_URL, powerdns_zones_or_skip
from tests.e2e.test_dns_deploy import _query
from tests.e2e.test_overage import _month_after, period  # noqa: F401
from workers import overage as overage_pass
from workers import scheduler
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until

FORWARD = "h14b-extra.pvekvm.test"
REVERSE4 = "14.64.100.in-addr.arpa"          # pool 100.64.14.0/24
REVERSE6 = "b.4.1.0.8.b.d.0.1.0.0.2.ip6.arpa"  # prefix pool 2001:db8:14b::/48
ZONES = (FORWARD, REVERSE4, REVERSE6)
SID = 7141


@pytest.fixture()
def zones():
    s, url = powerdns_zones_or_skip()
    for zone in ZONES:
        s.delete(f"{url}/{zone}.", timeout=5)
        r = s.post(url, json={"name": f"{zone}.", "kind": "Native",
                              "nameservers": ["ns1.pvekvm.test."]}, timeout=5)
        assert r.status_code == 201, r.text
    yield
    for zone in ZONES:
        s.delete(f"{url}/{zone}.", timeout=5)


def _catalog(settings) -> None:
    product = {"template": "debian-12", "cores": 1, "memory_mb": 1024, "disk_gb": 10,
               "target_node": "pve2", "target_storage": "local-lvm", "bridge": "vmbr0",
               "vlan": 14, "ip_pool": "extra-v4", "ip6_pool": "h14b-routed",
               "dns_zone": FORWARD}
    catalog.load({
        "ip_pools": [
            {"name": "extra-v4", "version": 4, "network": "100.64.14.0/24",
             "gateway": "100.64.14.1", "first": "100.64.14.10", "last": "100.64.14.250"},
            {"name": "h14b-routed", "version": 6, "network": "2001:db8:14b::/48",
             "gateway": "fe80::1", "assign": 64}],
        "products": [{"name": "vps-extra", "extra_ipv4": 2, **product},
                     {"name": "vps-plain", **product}],
        "dns_providers": [{"name": "pdns", "kind": "powerdns", "settings": {
            "api_url": PDNS_API_URL, "api_key": PDNS_API_KEY, "server_id": "localhost",
            "timeout": 2}}],
        "dns_zones": [{"name": z, "provider": "pdns"} for z in ZONES],
    }, settings.secret_key_file)


def _ptr(ip: str) -> list[str]:
    return _query(ipaddress.ip_address(ip).reverse_pointer, "PTR")


def _held() -> dict[tuple[int, int], IpAddress]:
    return {(r.version, r.slot): r for r in IpAddress.select().where(IpAddress.service_id == SID)}


def _done(kind: str, count: int = 1) -> None:
    try:
        wait_until(lambda: Operation.select().where(
            (Operation.service_id == SID) & (Operation.kind == kind)
            & (Operation.status == "done")).count() >= count, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def _ipsets(sim, svc: Service) -> dict[str, set[str]]:
    vm = sim.vm(svc.vmid)
    assert vm is not None
    return {name: {e["cidr"] for e in s["entries"]} for name, s in vm["firewall"]["ipsets"].items()}


def test_extra_ipv4_and_routed_prefix_in_cloudinit_ipset_dns_then_released(settings, sim, zones):
    _catalog(settings)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=SID, client_id=14, product="vps-extra", ipv6=True,
                       email="x@example.com")
        wait_until(all_ready([SID]), 60, "deploy")
        svc = Service.get_by_id(SID)
        host = svc.hostname
        held = _held()
        assert sorted(held) == [(4, 0), (4, 1), (4, 2), (6, 0)]
        v4, x1, x2 = (held[(4, n)].address for n in range(3))
        prefix = held[(6, 0)]
        assert prefix.prefixlen == 64 and prefix.address.startswith("2001:db8:14b:")
        net6 = f"{prefix.address}/64"
        host6 = str(ipaddress.ip_network(net6).network_address + 1)

        # cloud-init: the primary on ipconfig0, each extra on its own NIC and ipconfigN
        api = sim.proxmox().nodes(svc.node).qemu(svc.vmid)
        cfg = api.config.get()
        assert cfg["ipconfig0"] == f"ip={v4}/24,gw=100.64.14.1,ip6={host6}/64,gw6=fe80::1"
        assert (cfg["ipconfig1"], cfg["ipconfig2"]) == (f"ip={x1}/24", f"ip={x2}/24")
        for nic in ("net1", "net2"):
            assert "bridge=vmbr0" in cfg[nic] and "tag=14" in cfg[nic] and "firewall=1" in cfg[nic]
        network = api.cloudinit.dump.get(type="network")
        for address in (v4, x1, x2, f"{host6}/64"):
            assert f"address: '{address}'" in network, network
        # anti-spoofing: every NIC may send from every address of the service, and no other
        mine = {v4, x1, x2, net6}
        assert _ipsets(sim, svc) == {f"ipfilter-net{n}": mine for n in range(3)}
        # DNS: the host name resolves to the primaries; every address has its PTR
        assert _query(host, "A") == [v4] and _query(host, "AAAA") == [host6]
        for address in (v4, x1, x2, host6):
            assert _ptr(address) == [f"{host}."], address
        # billing hears every address (primary first) and the prefix
        ready = json.loads(OutboxEvent.select().where(
            (OutboxEvent.service_id == SID) & (OutboxEvent.type == "service.ready"))
            .order_by(OutboxEvent.id).first().body)
        assert (ready["ipv4"], ready["ipv6"]) == ([v4, x1, x2], [host6])
        assert ready["ipv6_prefixes"] == [net6]

        # the client's reverse DNS for an extra address (intake checks the service holds it)
        billing.rdns_set(service_id=SID, address=x2, hostname=f"mail.{host}")  # its own name
        _done("rdns_set")
        assert _ptr(x2) == [f"mail.{host}."] and _ptr(x1) == [f"{host}."]

        billing.change_package(service_id=SID, product="vps-plain")  # downgrade: extras go
        _done("change_package")
        assert sorted(_held()) == [(4, 0), (6, 0)]
        assert _held()[(4, 0)].address == v4 and _held()[(6, 0)].address == prefix.address
        for gone in (x1, x2):
            row = IpAddress.get(IpAddress.address == gone)
            assert row.service_id is None and row.ptr is None and row.released_at is not None
            assert _ptr(gone) == []
        cfg = api.config.get()
        assert not {"net1", "net2", "ipconfig1", "ipconfig2"} & set(cfg)
        assert cfg["ipconfig0"] == f"ip={v4}/24,gw=100.64.14.1,ip6={host6}/64,gw6=fe80::1"
        assert _ipsets(sim, svc) == {"ipfilter-net0": {v4, net6}}
        assert _query(host, "A") == [v4] and _ptr(v4) == [f"{host}."]

        billing.change_package(service_id=SID, product="vps-extra")  # upgrade: two again
        _done("change_package", 2)
        held = _held()
        assert sorted(held) == [(4, 0), (4, 1), (4, 2), (6, 0)]
        y1, y2 = held[(4, 1)].address, held[(4, 2)].address
        cfg = api.config.get()
        assert (cfg["ipconfig1"], cfg["ipconfig2"]) == (f"ip={y1}/24", f"ip={y2}/24")
        assert {"net1", "net2"} <= set(cfg)
        assert _ipsets(sim, svc) == {f"ipfilter-net{n}": {v4, y1, y2, net6} for n in range(3)}
        assert _ptr(y1) == _ptr(y2) == [f"{host}."]

        billing.reinstall(service_id=SID)  # a fresh clone gets its NICs and ipconfigN again
        _done("reinstall")
        svc = Service.get_by_id(SID)
        cfg = sim.proxmox().nodes(svc.node).qemu(svc.vmid).config.get()
        assert (cfg["ipconfig1"], cfg["ipconfig2"]) == (f"ip={y1}/24", f"ip={y2}/24")
        assert {"net1", "net2"} <= set(cfg) and sorted(_held()) == [(4, 0), (4, 1), (4, 2),
                                                                    (6, 0)]
        assert _ipsets(sim, svc) == {f"ipfilter-net{n}": {v4, y1, y2, net6} for n in range(3)}
        assert _ptr(y1) == _ptr(y2) == _ptr(host6) == [f"{host}."]

        billing.terminate(service_id=SID)
        wait_until(lambda: Service.get_by_id(SID).status == "terminated", 60, "terminate")
    assert _held() == {}
    for address in (v4, y1, y2):
        assert IpAddress.get(IpAddress.address == address).service_id is None
        assert _ptr(address) == []
    assert IpAddress.get(IpAddress.address == prefix.address).service_id is None
    assert _ptr(host6) == [] and _query(host, "A") == []
    assert DnsRecordRow.select().where(DnsRecordRow.service_id == SID).count() == 0


def test_a_throttled_service_is_throttled_on_its_extra_nics_too(settings, sim, period):  # noqa: F811
    """Over quota, the overage rate applies to every NIC (an extra NIC at the package rate would
    let the VM's traffic bypass the throttle); the next month brings the package rate back."""
    Product.update(extra_ipv4=2, traffic_quota_gb=1, overage_rate_mbps=1).where(
        Product.name == "vps-small").execute()
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=SID, client_id=14, product="vps-small",
                           email="t@example.com")
            wait_until(all_ready([SID]), 60, "deploy")
            assert _rates(sim) == {"net0": "12.5", "net1": "12.5", "net2": "12.5"}
            scheduler.build(settings, BackgroundScheduler).get_job("traffic_accounting").func()
            _done("throttle")
            assert _rates(sim) == {"net0": "1", "net1": "1", "net2": "1"}
            overage_pass.run_once(pub, now=_month_after(period), throttled_only=True)
            _done("unthrottle")
            assert _rates(sim) == {"net0": "12.5", "net1": "12.5", "net2": "12.5"}
    finally:
        pub.close()


def _rates(sim) -> dict[str, str | None]:
    cfg = sim.vm(Service.get_by_id(SID).vmid)["config"]
    return {k: pvecfg.parse(v, "model").get("rate") for k, v in cfg.items()
            if k.startswith("net") and k[3:].isdigit()}
