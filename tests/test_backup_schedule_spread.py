"""Backup times are drawn at random (the manual's rule) but spread over a node's day: its
vzdump lock runs one backup at a time, so bunched times become a queue."""

from __future__ import annotations

from collections import Counter

from producers.api import utc_now
from producers.events import BackupScheduleEvent
from pvekvm.models import BackupSchedule, Product, Service, Template
from pvekvm.wire.orders import Weekday
from workers.intake import SCHEDULE_WINDOW_MIN, handle_order

WINDOWS = 24 * 60 // SCHEDULE_WINDOW_MIN


def _services(clean_db, node: str, first: int, count: int) -> list[int]:
    tpl = Template.get_or_create(name="t", vmid=9000, node="pve1")[0]
    prod = Product.get_or_create(name="p", defaults=dict(
        cores=1, memory_mb=512, disk_gb=10, template_id=tpl.id, target_node="pve1",
        target_storage="local-lvm"))[0]
    for sid in range(first, first + count):
        Service.create(id=sid, client_id=1, product_id=prod.id, template_id=tpl.id, node=node,
                       email="d@example.com", hostname=f"h{sid}.example.com", status="ready")
    return list(range(first, first + count))


def _schedule(sid: int, days: list[Weekday]) -> None:
    body = BackupScheduleEvent(service_id=sid, occurred_at=utc_now(), days=tuple(days),
                               idempotency_key=f"sched-{sid}-{len(days)}").to_json()
    assert handle_order(body).dead_reason is None


def test_a_nodes_backup_times_fill_every_half_hour_before_any_gets_two(clean_db):
    on_pve1 = _services(clean_db, "pve1", 5000, WINDOWS)
    on_pve2 = _services(clean_db, "pve2", 6000, 3)
    for sid in on_pve2 + on_pve1:
        _schedule(sid, ["mon", "thu"])
    per_window = Counter(s.minute_of_day // SCHEDULE_WINDOW_MIN
                         for s in BackupSchedule.select().where(
                             BackupSchedule.service_id.in_(on_pve1)))
    assert sorted(per_window.values()) == [1] * WINDOWS  # pve2's three took nothing of pve1's
    _schedule(on_pve1[0], ["mon"])  # saved again: a new draw, still in an empty half hour
    assert BackupSchedule.get_by_id(on_pve1[0]).days == "mon"
    per_window = Counter(s.minute_of_day // SCHEDULE_WINDOW_MIN
                         for s in BackupSchedule.select().where(
                             BackupSchedule.service_id.in_(on_pve1)))
    assert sorted(per_window.values()) == [1] * WINDOWS
