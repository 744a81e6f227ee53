"""hostname_change on the real PowerDNS, answers checked over DNS: the A record and the PTR
move to the new name (the old name's records removed), cloud-init gets the name, the service
view shows the address's PTR; another live service's name is refused, and so is any rename of
a suspended service."""

from __future__ import annotations

from producers.api import OrderClient
from pvekvm.apps.api import routes
from pvekvm.models import DeadLetter, DnsRecordRow, IpAddress, Operation, Service
from tests.dns.dnsfakes import PDNS_API_URL
from tests.e2e.test_dns_deploy import _ptr_name, _query, _use_powerdns, pdns_zones  # noqa: F401
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until

A, B = 6301, 6302


def _done(sid: int, count: int = 1) -> None:
    try:
        wait_until(lambda: Operation.select().where(
            (Operation.service_id == sid) & (Operation.kind == "hostname_change")
            & (Operation.status == "done")).count() >= count, 60, "hostname_change done")
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None


def _refused(words: str) -> DeadLetter:
    return wait_until(lambda: DeadLetter.select().where(DeadLetter.reason.contains(words))
                      .first(), 30, f"refusal: {words}")


def test_rename_moves_dns_and_cloudinit_and_refuses_another_services_name(
        settings, sim, pdns_zones):  # noqa: F811
    _use_powerdns(settings, PDNS_API_URL)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in (A, B):
            billing.create(service_id=sid, client_id=3, product="vps-small",
                           email="h@example.com")
        wait_until(all_ready([A, B]), 60, "deploy")
        old = Service.get_by_id(A).hostname
        ip = IpAddress.get((IpAddress.service_id == A) & (IpAddress.version == 4)).address
        assert _query(old, "A") == [ip] and _query(_ptr_name(ip), "PTR") == [f"{old}."]

        new = "Shop.VPS.example.net"
        billing.hostname_change(service_id=A, hostname=new)
        _done(A)
        assert Service.get_by_id(A).hostname == "shop.vps.example.net"
        assert _query("shop.vps.example.net", "A") == [ip]
        assert _query(old, "A") == []  # the old name's record is gone
        assert _query(_ptr_name(ip), "PTR") == ["shop.vps.example.net."]
        vm = sim.vm(Service.get_by_id(A).vmid)
        assert vm is not None and vm["config"]["name"] == "shop.vps.example.net"
        assert vm["ci_applied"]["name"] == "shop.vps.example.net"  # the drive regenerated
        view = routes.get_service(Service.get_by_id(A), settings)  # the client area's view
        assert [(a.address, a.ptr, a.ptr_published) for a in view.addresses] == [
            (ip, "shop.vps.example.net", True)]

        other = Service.get_by_id(B).hostname  # another customer's name
        billing.hostname_change(service_id=A, hostname=other)
        assert _refused(f"hostname {other!r} is another live service's").source == "intake"
        assert Service.get_by_id(A).hostname == "shop.vps.example.net"
        assert _query(other, "A") == [IpAddress.get(IpAddress.service_id == B).address]

        billing.suspend(service_id=B)
        wait_until(lambda: Service.get_by_id(B).status == "suspended", 60, "suspend")
        billing.hostname_change(service_id=B, hostname="renamed.vps.example.net")
        _refused(f"service {B} is suspended")
        assert Service.get_by_id(B).hostname == other
        assert _query("renamed.vps.example.net", "A") == []


def test_a_name_another_service_published_in_dns_is_not_taken(clean_db):
    """A name whose records another service published (its delete still owed after a
    terminate, say) is refused like a live service's; the service's own records are not."""
    from steps.hostname import hostname_problem

    DnsRecordRow.create(service_id=9999, zone="vps.example.net", name="taken.vps.example.net",
                        type="A", content="192.0.2.9", synced=True)
    DnsRecordRow.create(service_id=A, zone="vps.example.net", name="mine.vps.example.net",
                        type="A", content="192.0.2.10", synced=True)
    assert hostname_problem("taken.vps.example.net", A) == (
        "hostname 'taken.vps.example.net' is published in DNS for another service")
    assert hostname_problem("mine.vps.example.net", A) is None
    assert hostname_problem("free.vps.example.net", A) is None
