"""What billing hears says what happened without a poll (issue 30), through the real broker,
intake, workers and pvesim: every operation event names what it is about (the power action,
the snapshot, the backup, the ISO, the rDNS address), ``operation.completed`` always has the
service's ``status`` and a ``result`` (``skipped`` with the reason when nothing was done: a VM
already running, an rDNS change with no DNS configured), a new backup's id; and the service
view (``GET /v1/services/{id}``, served over TCP) shows the mounted ISO and each address's PTR."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from producers.api import OrderClient
from pvekvm.apps.api.auth import hash_token
from pvekvm.config import ApiSettings
from pvekvm.models import Backup, IpAddress, Service
from tests.api.server import ApiServer
from tests.dns.dnsfakes import PDNS_API_URL
from tests.e2e.test_dns_deploy import FORWARD, _use_powerdns, pdns_zones  # noqa: F401 - fixture
from workers.testing.harness import BillingQueue, InProcessWorkers, all_ready, wait_until

TOKEN = "billing-issue-30-token"


@pytest.fixture()
def billing_queue(settings) -> Iterator[BillingQueue]:
    q = BillingQueue(settings)
    yield q
    q.close()


def _ipv4(sid: int) -> str:
    return IpAddress.get((IpAddress.service_id == sid) & (IpAddress.version == 4)
                         & (IpAddress.slot == 0)).address


def _done(queue: BillingQueue, key: str) -> dict:
    """The terminal event of the operation billing ordered with ``key``."""
    return queue.wait_for(lambda e: e["idempotency_key"] == key and e["type"] in (
        "operation.completed", "operation.failed"), 30, f"{key} finished")


def test_day_two_events_name_their_subject_result_and_backup_id(settings, billing_queue):
    sid = 7301
    settings = replace(settings, api=ApiSettings(tokens=(("whmcs", hash_token(TOKEN)),)))
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=sid, client_id=3, product="vps-small", email="e@example.com")
        wait_until(all_ready([sid]), 60, "deploy")
        ip = _ipv4(sid)
        orders = [
            ("stop", lambda k: billing.power(service_id=sid, action="stop", idempotency_key=k)),
            ("start", lambda k: billing.power(service_id=sid, action="start", idempotency_key=k)),
            ("again", lambda k: billing.power(service_id=sid, action="start", idempotency_key=k)),
            ("snap", lambda k: billing.snapshot_create(service_id=sid, name="before_upgrade",
                                                       idempotency_key=k)),
            ("backup", lambda k: billing.backup_create(service_id=sid, idempotency_key=k)),
            ("iso", lambda k: billing.iso_mount(service_id=sid, iso="myfile.iso",
                                                idempotency_key=k)),
            ("rdns", lambda k: billing.rdns_set(service_id=sid, address=ip,
                                                hostname=Service.get_by_id(sid).hostname,
                                                idempotency_key=k)),
        ]
        done = {}
        for key, order in orders:
            order(f"t30-{key}")
            done[key] = _done(billing_queue, f"t30-{key}")
        events = billing_queue.drain()
        with ApiServer(settings) as api:
            view = api.get(f"/v1/services/{sid}", TOKEN).json()
            backups = api.get(f"/v1/services/{sid}/backups", TOKEN).json()

    assert {k: e["type"] for k, e in done.items()} == dict.fromkeys(done, "operation.completed")
    assert all(e["status"] == "ready" for e in done.values()), done
    assert (done["stop"]["action"], done["start"]["action"]) == ("stop", "start")
    assert done["stop"]["result"] == done["start"]["result"] == "done"
    assert done["again"]["result"] == "skipped" and done["again"]["reason"] == "VM running"
    accepted = [e for e in events if e["type"] == "operation.accepted" and e["kind"] == "power"]
    assert accepted and all(e["action"] in ("stop", "start") for e in accepted)
    assert done["snap"]["snapshot"] == "before_upgrade" and done["snap"]["result"] == "done"
    backup = Backup.get(Backup.service_id == sid)
    assert done["backup"]["backup_id"] == backup.id == backups[0]["id"]
    assert done["iso"]["iso"] == "myfile.iso" and done["iso"]["result"] == "done"
    # the catalog configures no DNS: the name is kept, nothing is published, billing hears why
    assert (done["rdns"]["address"], done["rdns"]["result"]) == (ip, "skipped")
    assert done["rdns"]["reason"] == "no DNS zones configured: no PTR published"
    assert IpAddress.get(IpAddress.address == ip).ptr == Service.get_by_id(sid).hostname
    assert view["live"]["iso"] == "myfile.iso"
    assert [(a["ptr"], a["ptr_published"]) for a in view["addresses"]] == \
        [(None, False)] * len(view["addresses"])


def test_the_service_view_shows_each_address_ptr_as_dns_holds_it(settings, pdns_zones,  # noqa: F811
                                                                 billing_queue):
    sid = 7302
    _use_powerdns(settings, PDNS_API_URL)
    settings = replace(settings, api=ApiSettings(tokens=(("whmcs", hash_token(TOKEN)),)))
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=sid, client_id=3, product="vps-small", email="e@example.com",
                       hostname=f"shop.{FORWARD}")
        wait_until(all_ready([sid]), 60, "deploy")
        ip = _ipv4(sid)
        name = f"mail.shop.{FORWARD}"
        billing.rdns_set(service_id=sid, address=ip, hostname=name, idempotency_key="t30-ptr")
        completed = _done(billing_queue, "t30-ptr")
        with ApiServer(settings) as api:
            view = api.get(f"/v1/services/{sid}", TOKEN).json()
    assert completed["type"] == "operation.completed" and completed["result"] == "done"
    shown = {a["address"]: (a["ptr"], a["ptr_published"]) for a in view["addresses"]}
    assert shown[ip] == (name, True)
