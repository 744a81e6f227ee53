"""Traffic quota and overage against pvesim, MariaDB and RabbitMQ: traffic counted from
pvesim's rrddata by the accounting job puts a VM over its package's monthly quota, the overage
pass throttles its net0 (only ``rate=`` changes), billing hears ``service.throttled``, and the
next month (virtual time: the pass is given ``now``) brings the package rate back. A package
without a quota is never throttled, a suspended VM is never touched, and a package change
applies the new package's rate (its overage rate when its quota is used up too)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from playhouse.shortcuts import model_to_dict

from producers.api import OrderClient
from pvekvm import messaging, overage, proxmox
from pvekvm.models import Operation, Product, Service, StepRun
from steps import pvecfg
from workers import overage as overage_pass
from workers import scheduler, traffic
from workers.testing.harness import BillingQueue, InProcessWorkers, all_ready, wait_until

QUOTA_GB = 1  # pvesim's series moves 0.3 to 2.5 MB/s: its 70 minutes are well over 1 GB


@pytest.fixture()
def period() -> datetime:
    """Now (naive UTC), when the accounting window (the last 70 minutes) and the test lie in
    one month; the usage checked is the current month's."""
    now = overage.now_utc()
    start = datetime(now.year, now.month, 1)
    end = datetime(overage.next_period(start.date()).year,
                   overage.next_period(start.date()).month, 1)
    if now - start < timedelta(minutes=75) or end - now < timedelta(minutes=10):
        pytest.skip("the accounting window would straddle a month boundary")
    return now


def _metered(name: str, quota_gb: int | None, overage_mbps: float | None) -> None:
    Product.update(traffic_quota_gb=quota_gb, overage_rate_mbps=overage_mbps).where(
        Product.name == name).execute()


def _net0(sim, sid: int) -> dict[str, str]:
    vm = sim.vm(Service.get_by_id(sid).vmid)
    return pvecfg.parse(vm["config"]["net0"], "model")


def _done(sid: int, kind: str, n: int = 1) -> bool:
    return Operation.select().where((Operation.service_id == sid) & (Operation.kind == kind)
                                    & (Operation.status == "done")).count() >= n


def _publisher(settings) -> messaging.Publisher:
    return messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))


def _month_after(at: datetime) -> datetime:
    nxt = overage.next_period(at.date())
    return datetime(nxt.year, nxt.month, 1, 0, 0, 30)


def test_a_vm_over_quota_is_throttled_once_and_restored_next_month_one_without_quota_never(
        settings, sim, period):
    _metered("vps-small", QUOTA_GB, 1)  # package 12.5 MB/s; vps-large: 125 MB/s, no quota
    events = BillingQueue(settings, "service.*")
    pub = _publisher(settings)
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6401, client_id=3, product="vps-small",
                           email="q@example.com")
            billing.create(service_id=6402, client_id=3, product="vps-large",
                           email="u@example.com")
            wait_until(all_ready([6401, 6402]), 90, "deploy")
            before = _net0(sim, 6401)
            assert before["rate"] == "12.5" and _net0(sim, 6402)["rate"] == "125"

            # the scheduler's hourly job: accounting, then the overage pass
            sched = scheduler.build(settings, BackgroundScheduler)
            sched.get_job("traffic_accounting").func()
            month = overage.period_of(overage.now_utc())
            used = {sid: overage.used_bytes(sid, month) for sid in (6401, 6402)}
            assert used[6401] >= QUOTA_GB * overage.GB
            assert used[6402] >= 2 * QUOTA_GB * overage.GB  # far over any quota: has none
            wait_until(lambda: _done(6401, "throttle"), 30, "throttle")

            after = _net0(sim, 6401)
            assert after["rate"] == "1"
            assert {k: v for k, v in after.items() if k != "rate"} == \
                {k: v for k, v in before.items() if k != "rate"}  # MAC, bridge, tag, firewall
            assert Service.get_by_id(6401).throttled_period == month
            throttled = events.wait_for(lambda e: e["type"] == "service.throttled", 10,
                                        "service.throttled")
            assert throttled["service_id"] == 6401 and throttled["rate_mbps"] == 1.0
            assert throttled["period"] == f"{month:%Y-%m}"
            assert throttled["quota_bytes"] == QUOTA_GB * overage.GB
            assert throttled["used_bytes"] >= throttled["quota_bytes"]
            assert "over quota" in throttled["reason"]

            again = overage_pass.run_once(pub, now=overage.now_utc())  # later the same month
            assert again.started == 0 and again.checked == 1  # 6402 has no quota: not a candidate
            traffic.run_once(proxmox.client(settings.proxmox), pub)
            assert overage_pass.run_once(pub).started == 0  # still over: never a second throttle
            assert Operation.select().where(Operation.kind == "throttle").count() == 1

            nxt = _month_after(period)  # the minute pass at the start of the next month
            lifted = overage_pass.run_once(pub, now=nxt, throttled_only=True)
            assert lifted.unthrottled == 1
            assert any(f"period {month:%Y-%m} ended" in line for line in lifted.lines)
            wait_until(lambda: _done(6401, "unthrottle"), 30, "unthrottle")
            assert _net0(sim, 6401) == before
            assert Service.get_by_id(6401).throttled_period is None
            back = events.wait_for(lambda e: e["type"] == "service.unthrottled", 10,
                                   "service.unthrottled")
            assert back["service_id"] == 6401 and back["rate_mbps"] == 12.5
            assert overage_pass.run_once(pub, now=nxt).started == 0
            assert overage_pass.run_once(pub, now=nxt + timedelta(days=20)).started == 0

            assert _net0(sim, 6402)["rate"] == "125"
            assert not Operation.select().where((Operation.service_id == 6402) & Operation.kind
                                                .in_(("throttle", "unthrottle"))).exists()
            assert Service.get_by_id(6402).throttled_period is None
        events.drain()
        assert [e["service_id"] for e in events.received
                if e["type"] in ("service.throttled", "service.unthrottled")] == [6401, 6401]
    finally:
        events.close()
        pub.close()


def test_a_suspended_vm_is_not_touched_and_is_restored_after_unsuspend(settings, sim, period):
    _metered("vps-small", QUOTA_GB, 1)
    pub = _publisher(settings)
    pve = proxmox.client(settings.proxmox)
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            for sid in (6403, 6404):
                billing.create(service_id=sid, client_id=4, product="vps-small",
                               email=f"s{sid}@example.com")
            wait_until(all_ready([6403, 6404]), 90, "deploy")
            traffic.run_once(pve, pub)  # both used their quota while running
            billing.suspend(service_id=6404)
            wait_until(lambda: Service.get_by_id(6404).status == "suspended", 30, "suspend")

            first = overage_pass.run_once(pub, now=period)
            assert first.throttled == 1 and first.left_alone == 1
            assert any(line.startswith("sid:6404 throttle due (over quota")
                       and line.endswith("not touched: suspended") for line in first.lines)
            wait_until(lambda: _done(6403, "throttle"), 30, "throttle 6403")
            assert _net0(sim, 6403)["rate"] == "1" and _net0(sim, 6404)["rate"] == "12.5"
            assert Service.get_by_id(6404).throttled_period is None

            billing.suspend(service_id=6403)  # throttled, then suspended
            wait_until(lambda: Service.get_by_id(6403).status == "suspended", 30, "suspend")
            nxt = _month_after(period)
            held = overage_pass.run_once(pub, now=nxt, throttled_only=True)
            assert held.started == 0 and held.left_alone == 1  # not restored while suspended
            assert _net0(sim, 6403)["rate"] == "1"
            assert Service.get_by_id(6403).throttled_period == overage.period_of(period)

            billing.unsuspend(service_id=6403)
            wait_until(lambda: Service.get_by_id(6403).status == "ready", 30, "unsuspend")
            assert overage_pass.run_once(pub, now=nxt, throttled_only=True).unthrottled == 1
            wait_until(lambda: _done(6403, "unthrottle"), 30, "unthrottle after unsuspend")
            assert _net0(sim, 6403)["rate"] == "12.5"
        assert not Operation.select().where((Operation.service_id == 6404) & Operation.kind
                                            .in_(("throttle", "unthrottle"))).exists()
    finally:
        pub.close()


def test_a_package_change_applies_the_new_package_rate_or_its_overage_rate(settings, sim,
                                                                             period):
    """Throttled on vps-small; a change to vps-large, whose 1 GB quota is used up too, gives
    vps-large's overage rate and keeps the throttle; a change to a package without a quota
    gives its rate, and the minute pass records the lift (service.unthrottled)."""
    _metered("vps-small", QUOTA_GB, 1)
    _metered("vps-large", QUOTA_GB, 2)
    unmetered = model_to_dict(Product.get(Product.name == "vps-small"), recurse=False)
    unmetered.update(id=None, name="vps-unmetered", net_rate_mbps=50, traffic_quota_gb=None,
                     overage_rate_mbps=None)
    Product.create(**unmetered)
    events = BillingQueue(settings, "service.*")
    pub = _publisher(settings)
    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=6405, client_id=5, product="vps-small",
                           email="c@example.com")
            wait_until(all_ready([6405]), 90, "deploy")
            traffic.run_once(proxmox.client(settings.proxmox), pub)
            assert overage_pass.run_once(pub, now=period).throttled == 1
            wait_until(lambda: _done(6405, "throttle"), 30, "throttle")
            assert _net0(sim, 6405)["rate"] == "1"

            billing.change_package(service_id=6405, product="vps-large")
            wait_until(lambda: _done(6405, "change_package"), 60, "change to vps-large")
            assert _net0(sim, 6405)["rate"] == "2"  # vps-large's overage rate: still over
            assert Service.get_by_id(6405).throttled_period == overage.period_of(period)
            note = StepRun.get((StepRun.service_id == 6405) & (StepRun.from_state == "cp_network"))
            assert note.message is not None and "throttled" in note.message
            assert overage_pass.run_once(pub, now=overage.now_utc()).started == 0

            billing.change_package(service_id=6405, product="vps-unmetered")
            wait_until(lambda: _done(6405, "change_package", 2), 60, "change to vps-unmetered")
            assert _net0(sim, 6405)["rate"] == "50"  # the new package's rate at once
            lifted = overage_pass.run_once(pub, throttled_only=True)
            assert lifted.unthrottled == 1
            wait_until(lambda: _done(6405, "unthrottle"), 30, "unthrottle")
            assert _net0(sim, 6405)["rate"] == "50"
            assert Service.get_by_id(6405).throttled_period is None
            back = events.wait_for(lambda e: e["type"] == "service.unthrottled", 10,
                                   "service.unthrottled")
            assert back["rate_mbps"] == 50.0 and "vps-unmetered" in back["reason"]
            assert "no quota" in back["reason"]
            assert overage_pass.run_once(pub).started == 0
    finally:
        events.close()
        pub.close()
