"""The overage rule (pvekvm/overage.py): periods are UTC calendar months, what the pass decides
for each combination of throttle state, quota and usage, which rate net0 gets, and the catalog
refusing quota settings that cannot work, with the reason."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from pvekvm import catalog, overage
from pvekvm.catalog_check import validate
from pvekvm.config import ROOT, Settings
from pvekvm.models import Operation, Product, Service, Template, TrafficUsage
from pvekvm.overage import GB, Action
from workers.engine import Engine
from workers.testing import EngineDriver

NOV, DEC, JAN = date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)


def _product(quota_gb: int | None = 100, overage_mbps: float | None = 1,
             rate: float = 12.5, name: str = "p") -> Product:
    return Product(name=name, traffic_quota_gb=quota_gb, net_rate_mbps=Decimal(str(rate)),
                   overage_rate_mbps=None if overage_mbps is None else Decimal(str(overage_mbps)))


def test_a_period_is_the_utc_calendar_month():
    assert overage.period_of(datetime(2026, 11, 30, 23, 59, 59)) == NOV
    assert overage.period_of(datetime(2026, 12, 1, 0, 0)) == DEC
    # 00:30 on 1 December in UTC+2 is still November in UTC
    tz = timezone(timedelta(hours=2))
    assert overage.period_of(datetime(2026, 12, 1, 0, 30, tzinfo=tz)) == NOV
    assert overage.period_of(datetime(2026, 12, 1, 0, 30, tzinfo=UTC)) == DEC
    assert overage.next_period(NOV) == DEC and overage.next_period(DEC) == JAN


def test_usage_counts_both_directions_of_the_hours_starting_in_the_month(clean_db):
    for hour, b_in, b_out in ((datetime(2026, 10, 31, 23), 7 * GB, 0),  # October
                              (datetime(2026, 11, 1, 0), GB, 2 * GB),
                              (datetime(2026, 11, 30, 23), 3 * GB, GB),
                              (datetime(2026, 12, 1, 0), 5 * GB, 0)):     # December
        TrafficUsage.create(service_id=9, period_start=hour, bytes_in=b_in, bytes_out=b_out)
    TrafficUsage.create(service_id=10, period_start=datetime(2026, 11, 5), bytes_in=1,
                        bytes_out=2)
    assert overage.used_bytes(9, NOV) == 7 * GB
    assert overage.used_by_service(NOV) == {9: 7 * GB, 10: 3}
    assert overage.used_bytes(11, NOV) == 0


@pytest.mark.parametrize(("quota", "throttled", "used", "action", "why"), [
    (100, None, 99 * GB, None, "99.00 GB used in 2026-12, quota 100.00 GB"),
    (100, None, 100 * GB, Action.THROTTLE, "over quota"),
    (None, None, 10**6 * GB, None, "no quota"),                 # unlimited: never throttled
    (100, DEC, 150 * GB, None, "throttled"),                    # once per period
    (100, NOV, 0, Action.UNTHROTTLE, "period 2026-11 ended"),   # a new month began
    (100, NOV, 100 * GB, Action.THROTTLE, "over quota already"),  # ... and it is over again
    (500, DEC, 150 * GB, Action.UNTHROTTLE, "quota 500.00 GB"),   # a larger package
    (None, DEC, 150 * GB, Action.UNTHROTTLE, "no quota"),         # an unlimited package
    (100, JAN, 150 * GB, None, "later period"),
])
def test_what_the_pass_decides(quota, throttled, used, action, why):
    decision = overage.decide(_product(quota), throttled, used, DEC)
    assert decision.action == action and why in decision.reason


def test_net0_runs_at_the_overage_rate_only_while_throttled_this_month_and_over_quota():
    at = datetime(2026, 12, 10, 12)
    small, large = _product(100, 1), _product(500, 5, rate=125, name="large")
    assert overage.net_rate(small, DEC, 120 * GB, at).mbps == 1           # throttled
    assert overage.net_rate(small, None, 120 * GB, at).mbps == Decimal("12.5")  # not yet
    assert overage.net_rate(small, NOV, 120 * GB, at).mbps == Decimal("12.5")   # last month's
    changed = overage.net_rate(large, DEC, 120 * GB, at)  # package change to a larger quota
    assert changed.mbps == 125 and not changed.throttled and "package large" in changed.reason
    still = overage.net_rate(_product(100, 5, rate=125), DEC, 120 * GB, at)  # used up too
    assert still.mbps == 5 and still.throttled and still.text == "5"
    assert overage.net_rate(_product(None, None, rate=0), DEC, 0, at).text == ""  # unlimited


def _catalog(**vps_small: object) -> dict:
    data = tomllib.loads((ROOT / "config" / "catalog.toml").read_text())
    data["products"][0].update(vps_small)
    return data


@pytest.mark.parametrize(("fields", "problem"), [
    ({"traffic_quota_gb": 500}, "traffic_quota_gb is set but overage_rate_mbps is not"),
    ({"overage_rate_mbps": 1}, "overage_rate_mbps is set but traffic_quota_gb is not"),
    ({"traffic_quota_gb": 0, "overage_rate_mbps": 1}, "must be a positive whole number"),
    ({"traffic_quota_gb": 500, "overage_rate_mbps": 0}, "must be a positive number of MB/s"),
    ({"traffic_quota_gb": 500, "overage_rate_mbps": 20}, "must be below net_rate_mbps (12.5)"),
])
def test_the_catalog_refuses_quota_settings_that_cannot_work(fields, problem, clean_db,
                                                             tmp_path):
    errors = validate(_catalog(**fields), "cat.toml")
    assert len(errors) == 1 and errors[0].startswith(
        "cat.toml: [[products]] #1 (vps-small) traffic quota: ") and problem in errors[0]
    with pytest.raises(catalog.CatalogError, match="product vps-small: "):
        catalog.load(_catalog(**fields), str(tmp_path / "key"))


def test_a_quota_loads_and_leaving_it_out_makes_the_product_unlimited_again(clean_db, tmp_path):
    key = str(tmp_path / "key")
    assert validate(_catalog(traffic_quota_gb=500, overage_rate_mbps=1.5), "cat.toml") == []
    catalog.load(_catalog(traffic_quota_gb=500, overage_rate_mbps=1.5), key)
    p = Product.get(Product.name == "vps-small")
    assert (p.traffic_quota_gb, p.overage_rate_mbps) == (500, Decimal("1.50"))
    catalog.load(_catalog(), key)
    p = Product.get(Product.name == "vps-small")
    assert (p.traffic_quota_gb, p.overage_rate_mbps) == (None, None)


@pytest.fixture()
def driver(clean_db, database_url) -> EngineDriver:
    from pvekvm.catalog_cache import _catalog

    _catalog.clear()  # row ids restart with each test's fresh data: no stale package
    settings = Settings(database_url=database_url, amqp_url="amqp://unused", proxmox=None)
    return EngineDriver(Engine(settings, worker="driver"))


def _service(quota_gb: int | None, throttled: date | None) -> Service:
    tpl = Template.create(name="t", vmid=9000, node="pve1")
    prod = Product.create(name="p", cores=1, memory_mb=512, disk_gb=10, template_id=tpl.id,
                          target_node="pve1", target_storage="local-lvm", net_rate_mbps=10,
                          traffic_quota_gb=quota_gb, overage_rate_mbps=quota_gb and 1)
    TrafficUsage.create(service_id=77, period_start=datetime(2026, 12, 3), bytes_in=5 * GB,
                        bytes_out=0)
    return Service.create(id=77, client_id=1, product_id=prod.id, template_id=tpl.id,
                          email="o@example.com", hostname="o.example.com", status="ready",
                          vmid=177, node="pve1", throttled_period=throttled,
                          created_at=datetime(2026, 12, 1))  # its life began before the traffic


@pytest.mark.parametrize(("kind", "quota", "throttled", "reason"), [
    ("throttle", None, None, "not over quota (package p: 5.00 GB used in 2026-12, no quota)"),
    ("throttle", 10, None, "not over quota (package p: 5.00 GB used in 2026-12, quota 10.00"),
    ("unthrottle", 2, DEC, "still over quota (package p: 5.00 GB used in 2026-12, quota 2.00"),
])
def test_a_decision_that_no_longer_holds_when_its_turn_comes_fails_with_the_reason(
        driver, kind, quota, throttled, reason):
    """The package changed while the operation waited: Proxmox is not touched (there is no
    connection here), the operation fails with the reason and the throttle state stays."""
    _service(quota, throttled)
    driver.begin(77, kind, f"{kind}:77:2026-12:1", {
        "period": DEC.isoformat(), "reason": "test",
        "service": {"throttled_period": DEC.isoformat() if kind == "throttle" else None}})
    driver.run()
    op = Operation.get(Operation.kind == kind)
    assert op.status == "failed" and op.error is not None and op.error.startswith(reason), op.error
    assert Service.get_by_id(77).throttled_period == throttled
    assert any("refused" in line and reason in line for line in driver.log)
