"""Every event the engine publishes to billing matches its shipped JSON Schema
(``schemas/events/billing/<type>.json``, generated from pvekvm/wire/billing.py), and carries no
field the schema does not declare: a service driven through its life by billing's own client,
through RabbitMQ, MariaDB and pvesim, with a refusal, a failure, a pause resumed, a pause
cancelled, traffic reported, a throttle and its lift, rescue mode on and off, an order waiting
for room. The events are read off a queue bound to ``{ns}.events`` as billing would; each is
validated by jsonschema-rs (formats checked)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import jsonschema_rs
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from producers.api import OrderClient
from pvekvm import messaging, overage, proxmox
from pvekvm.models import Backup, Operation, Product, TrafficUsage
from pvekvm.wire.schemas import SHIPPED
from workers import admin, backup_sync, scheduler
from workers import overage as overage_pass
from workers.testing.harness import BillingQueue, InProcessWorkers, all_ready, replace, wait_until

SID = 7301
EVERY_TYPE = {p.stem for p in (SHIPPED / "billing").glob("*.json")}


def _schemas() -> dict[str, tuple[Any, set[str]]]:
    out = {}
    for path in (SHIPPED / "billing").glob("*.json"):
        schema = json.loads(path.read_text())
        out[path.stem] = (jsonschema_rs.validator_for(schema, validate_formats=True),
                          set(schema["properties"]))
    return out


def _done(kind: str, n: int = 1):
    return lambda: Operation.select().where(
        (Operation.service_id == SID) & (Operation.kind == kind)
        & (Operation.status == "done")).count() >= n


def _status(kind: str, status: str):
    return lambda: Operation.get_or_none((Operation.service_id == SID) & (Operation.kind == kind)
                                         & (Operation.status == status))


def _within_one_month() -> datetime:
    now = overage.now_utc()
    start = datetime(now.year, now.month, 1)
    nxt = overage.next_period(start.date())
    if now - start < timedelta(minutes=75) or datetime(nxt.year, nxt.month, 1) - now \
            < timedelta(minutes=10):
        pytest.skip("the traffic accounting window would straddle a month boundary")
    return datetime(nxt.year, nxt.month, 1, 0, 0, 30)


def test_every_event_published_in_a_service_life_matches_its_schema(settings, sim):
    next_month = _within_one_month()
    settings = replace(settings, engine=replace(
        settings.engine, max_attempts=1, rescue_iso="iso:iso/systemrescue-11.02-amd64.iso"))
    Product.update(traffic_quota_gb=1, overage_rate_mbps=1).where(
        Product.name == "vps-small").execute()
    queue = BillingQueue(settings)
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=SID, client_id=3, product="vps-small",
                           email="s@example.com", ipv6=True, idempotency_key="whmcs-7301")
            wait_until(all_ready([SID]), 60, "deploy")
            billing.migrate(service_id=SID)  # service.migrated (placement picks the node)
            wait_until(_done("migrate"), 60, "migrate")
            billing.rescue_on(service_id=SID)  # service.rescue_on, then service.rescue_off
            billing.rescue_off(service_id=SID)
            wait_until(_done("rescue_off"), 60, "rescue off")
            billing.snapshot_create(service_id=SID, name="before")
            billing.backup_create(service_id=SID, note="first")
            billing.power(service_id=SID, action="reboot")
            billing.iso_mount(service_id=SID, iso="missing.iso")  # fails: not on the storage
            billing.publish_raw(b'{"version": 1, "type": "suspend", "idempotency_key": "bad-1",'
                                b' "service_id": "7301"}', "order.suspend")  # refused
            wait_until(_done("power"), 60, "power")
            first = wait_until(lambda: Backup.get_or_none(note="first"), 30, "first backup")
            assert isinstance(first, Backup)
            storage = sim.proxmox().nodes(first.node).storage(first.storage)
            sim.wait_task(storage.content(first.volid).delete())  # pruned behind our back
            assert backup_sync.run_once(proxmox.client(settings.proxmox), pub).gone  # backup.gone

            # traffic: usage.reported, then the overage pass throttles, next month lifts it.
            # The quota counts this life's hours only (pvesim's RRD also has rows from before
            # the VM existed): the VM has moved 2 GB this hour already
            hour = overage.now_utc().replace(minute=0, second=0, microsecond=0, tzinfo=None)
            TrafficUsage.create(service_id=SID, period_start=hour, bytes_in=2 * overage.GB,
                                bytes_out=0)
            scheduler.build(settings, BackgroundScheduler).get_job("traffic_accounting").func()
            wait_until(_done("throttle"), 30, "throttle")
            assert overage_pass.run_once(pub, now=next_month, throttled_only=True).unthrottled
            wait_until(_done("unthrottle"), 30, "unthrottle")

            sim.set_faults(task_error_rate=1.0)  # every task fails: paused, then resumed
            billing.snapshot_create(service_id=SID, name="paused1")
            wait_until(_status("snapshot_create", "paused"), 60, "a pause")
            sim.set_faults()
            assert "resumed" in admin.resume(settings, str(SID))
            wait_until(_done("snapshot_create", 2), 60, "resumed snapshot")
            sim.set_faults(task_error_rate=1.0)  # paused again, then cancelled
            billing.backup_create(service_id=SID, note="second")
            wait_until(_status("backup_create", "paused"), 60, "a second pause")
            sim.set_faults()
            assert "cancelled" in admin.cancel(settings, str(SID))

            sim.set_node("pve2", maxmem=3 * 2**30)  # no room for another VM: it waits
            billing.create(service_id=SID + 1, client_id=3, product="vps-small",
                           email="s@example.com")
            queue.wait_for(lambda e: e["type"] == "operation.waiting", 60, "operation.waiting")

            billing.suspend(service_id=SID)
            billing.unsuspend(service_id=SID)
            billing.terminate(service_id=SID)
            queue.wait_for(lambda e: e["type"] == "service.terminated", 60,
                           "service.terminated")
        events = queue.drain()
    finally:
        queue.close()
        pub.close()

    schemas, wrong = _schemas(), {}
    for event in events:
        validator, declared = schemas[event["type"]]
        problems = [e.message for e in validator.iter_errors(event)]
        undeclared = set(event) - declared
        if problems or undeclared:
            wrong[event["type"]] = (problems, sorted(undeclared), event)
    assert wrong == {}
    assert {e["type"] for e in events} == EVERY_TYPE  # every type was published and checked
    assert len(events) >= 30


def test_a_schema_refuses_an_event_that_breaks_it() -> None:
    """The check above can fail: a ready event without its vmid, with a password, or with a
    string for a number is refused by the shipped schema (or names the undeclared field)."""
    schemas = _schemas()
    validator, declared = schemas["service.ready"]
    ready = {"event_id": "0b6f1d1e-8a44-4a7e-9a59-3f2b5a7c9d10", "type": "service.ready",
             "service_id": 1, "operation_id": 2, "idempotency_key": "k", "kind": "deploy",
             "occurred_at": "2026-12-06T22:00:00.000+00:00", "status": "ready", "vmid": 100,
             "node": "pve1", "hostname": "h.example", "ipv4": ["192.0.2.1"], "ipv6": [],
             "os_user": "debian"}
    assert validator.is_valid(ready)
    assert not validator.is_valid({k: v for k, v in ready.items() if k != "vmid"})
    assert not validator.is_valid({**ready, "vmid": "100"})
    assert not validator.is_valid({**ready, "occurred_at": "yesterday"})
    assert set({**ready, "password": "x"}) - declared == {"password"}
