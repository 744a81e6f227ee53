"""Client reverse DNS on the real PowerDNS, answers checked over DNS: rdns_set / rdns_reset
events through intake and the workers, a refusal for an address the service does not hold or a
name that is another live service's, and terminate removing the client's PTR."""

from __future__ import annotations

from producers.api import OrderClient
from pvekvm.models import DeadLetter, DnsRecordRow, IpAddress, Operation, Service
from tests.dns.dnsfakes import PDNS_API_URL
from tests.e2e.test_dns_deploy import _ptr_name, _query, _use_powerdns, pdns_zones  # noqa: F401
from workers.testing.harness import InProcessWorkers, all_ready, wait_until


def _done(sid: int, kind: str, count: int = 1):
    return lambda: Operation.select().where(
        (Operation.service_id == sid) & (Operation.kind == kind)
        & (Operation.status == "done")).count() >= count


def test_client_sets_and_resets_its_ptr_refused_for_foreign_address(settings, pdns_zones):  # noqa: F811
    _use_powerdns(settings, PDNS_API_URL)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in (6201, 6202):
            billing.create(service_id=sid, client_id=3, product="vps-small",
                           email="r@example.com")
        wait_until(all_ready([6201, 6202]), 60, "deploy")
        host = Service.get_by_id(6201).hostname
        ip = IpAddress.get(IpAddress.service_id == 6201).address
        other_ip = IpAddress.get(IpAddress.service_id == 6202).address
        assert _query(_ptr_name(ip), "PTR") == [f"{host}."]

        billing.rdns_set(service_id=6201, address=ip, hostname=f"Mail.{host.upper()}.")
        wait_until(_done(6201, "rdns_set"), 30, "rdns_set")  # a name under its own: owned
        assert _query(_ptr_name(ip), "PTR") == [f"mail.{host}."]

        billing.rdns_set(service_id=6201, address=other_ip, hostname="steal.example.org")
        dead = wait_until(lambda: DeadLetter.select().where(
            DeadLetter.reason.contains(f"address {other_ip} is not held by service 6201"))
            .first(), 30, "the refusal")
        assert dead.source == "intake"
        assert _query(_ptr_name(other_ip), "PTR") == [f"{Service.get_by_id(6202).hostname}."]

        other_host = Service.get_by_id(6202).hostname  # another customer's name for my address
        billing.rdns_set(service_id=6201, address=ip, hostname=other_host)
        assert wait_until(lambda: DeadLetter.select().where(DeadLetter.reason.contains(
            "the name is another live service's host name")).first(), 30,
            "intake's refusal").source == "intake"
        assert _query(_ptr_name(ip), "PTR") == [f"mail.{host}."]

        billing.rdns_reset(service_id=6201, address=ip)
        wait_until(_done(6201, "rdns_reset"), 30, "rdns_reset")
        assert _query(_ptr_name(ip), "PTR") == [f"{host}."]

        billing.rdns_set(service_id=6201, address=ip, hostname=f"mx.{host}")
        wait_until(_done(6201, "rdns_set", 2), 30, "second rdns_set")
        assert _query(_ptr_name(ip), "PTR") == [f"mx.{host}."]

        billing.terminate(service_id=6201)
        wait_until(lambda: Service.get_by_id(6201).status == "terminated", 60, "terminate")
    assert _query(_ptr_name(ip), "PTR") == []
    assert IpAddress.get(IpAddress.address == ip).ptr is None  # the next holder starts clean
    assert DnsRecordRow.select().where(DnsRecordRow.service_id == 6201).count() == 0
