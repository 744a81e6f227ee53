"""A service id billing re-creates after a terminate starts its month with nothing used: the
quota counts the present life only (pvekvm/overage.py), as the API's usage view shows it."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

from pvekvm import overage
from pvekvm.models import Operation, Product, Service, Template, TrafficUsage
from pvekvm.overage import GB
from workers import overage as overage_pass

NOV = date(2026, 11, 1)


def _life(sid: int, began_utc: datetime, product: Product, template: Template) -> Service:
    """A live service whose present life began at ``began_utc`` (created_at is stored on the
    database's clock, as the row's default writes it)."""
    return Service.create(
        id=sid, client_id=sid, product_id=product.id, template_id=template.id,
        email=f"c{sid}@example.com", hostname=f"h{sid}.example.com", status="ready",
        vmid=sid + 100, node="pve1",
        created_at=began_utc - timedelta(seconds=overage.utc_offset_s()))


def test_the_quota_counts_only_the_present_life_of_a_reused_service_id(clean_db):
    tpl = Template.create(name="t", vmid=9000, node="pve1")
    prod = Product.create(name="p", cores=1, memory_mb=512, disk_gb=10, template_id=tpl.id,
                          target_node="pve1", target_storage="local-lvm", net_rate_mbps=10,
                          traffic_quota_gb=100, overage_rate_mbps=1)
    # 77: terminated on 14 November after 500 GB, re-created for another client at 10:30 on
    # the 15th; 78: one life since 1 November, the same 500 GB
    _life(77, datetime(2026, 11, 15, 10, 30), prod, tpl)
    _life(78, datetime(2026, 11, 1, 0, 0), prod, tpl)
    for sid in (77, 78):
        TrafficUsage.create(service_id=sid, period_start=datetime(2026, 11, 3, 12),
                            bytes_in=400 * GB, bytes_out=100 * GB)   # before 77's new life
        TrafficUsage.create(service_id=sid, period_start=datetime(2026, 11, 15, 10),
                            bytes_in=GB, bytes_out=0)                # the hour it began: counts
        TrafficUsage.create(service_id=sid, period_start=datetime(2026, 11, 20, 8),
                            bytes_in=GB, bytes_out=GB)
    assert overage.used_bytes(77, NOV) == 3 * GB
    assert overage.used_bytes(78, NOV) == 503 * GB
    assert overage.used_by_service(NOV) == {77: 3 * GB, 78: 503 * GB}

    result = overage_pass.run_once(None, now=datetime(2026, 11, 20, 9))
    throttles = {o.service_id: o for o in Operation.select().where(Operation.kind == "throttle")}
    assert set(throttles) == {78}, result.lines  # the new client pays nothing for the old one
    assert json.loads(throttles[78].params)["used_bytes"] == 503 * GB
