"""Traffic accounting against pvesim's rrddata, MariaDB and RabbitMQ: runs over overlapping
windows, a migration and a reboot between runs count every RRD row once; the totals match an
independent integration of pvesim's series, and usage.reported carries them to billing."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from producers.api import OrderClient
from pvekvm import messaging, proxmox
from pvekvm.models import Service, TrafficCursor, TrafficUsage
from pvesim.console import _row
from workers import traffic
from workers.testing.harness import BillingQueue, InProcessWorkers, all_ready, wait_until


def _expected(vm: dict, first: int, last: int) -> dict[datetime, tuple[Decimal, Decimal]]:
    """pvesim's series integrated by hand: each 60 s row's B/s x 60, per UTC hour (the row of
    a counter reset has no rate: nothing)."""
    hours: dict[datetime, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for t in range(first, last + 1, 60):
        row = _row(vm, 0, t, False)
        hour = datetime.fromtimestamp((t - 60) // 3600 * 3600, UTC).replace(tzinfo=None)
        hours[hour][0] += Decimal(str(row.get("netin", 0))) * 60
        hours[hour][1] += Decimal(str(row.get("netout", 0))) * 60
    return {h: (a, b) for h, (a, b) in hours.items()}


def _stored(sid: int) -> dict[datetime, tuple[Decimal, Decimal]]:
    return {u.period_start: (u.bytes_in, u.bytes_out)
            for u in TrafficUsage.select().where(TrafficUsage.service_id == sid)}


def test_overlapping_runs_a_counter_reset_and_a_migration_count_every_byte_once(settings, sim):
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=6301, client_id=3, product="vps-small", email="t@example.com")
        wait_until(all_ready([6301]), 60, "deploy")
    svc = Service.get_by_id(6301)
    pve = proxmox.client(settings.proxmox)
    pub = messaging.Publisher(settings.amqp_url, messaging.Topology(settings.namespace))
    events = BillingQueue(settings, "usage.reported")
    try:
        now = time.time()
        first = traffic.run_once(pve, pub, now=now - 1800)  # the first 40 of 70 minutes
        again = traffic.run_once(pve, pub, now=now - 1800)  # the same window again: nothing
        assert first.rows >= 39 and again.rows == 0 and not first.errors

        upid = pve.post(f"nodes/{svc.node}/qemu/{svc.vmid}/status/reboot")
        sim.wait_task(upid)  # new tap counters; its minute's row shows once that minute ends:
        with sim.sim.cluster.lock:  # place the reboot 20 minutes ago, not to wait for it
            sim.sim.cluster.vms[svc.vmid]["started"] = now - 1200
        reset_row = (int(now) - 1200) // 60 * 60 + 60
        rrd = pve.get(f"nodes/{svc.node}/qemu/{svc.vmid}/rrddata", timeframe="hour")
        assert [r["time"] for r in rrd if "netin" not in r] == [reset_row]
        traffic.run_once(pve, pub, now=now - 600)           # overlaps the first window

        target = "pve1" if svc.node != "pve1" else "pve2"
        upid = pve.post(f"nodes/{svc.node}/qemu/{svc.vmid}/migrate", target=target, online=1,
                        **{"with-local-disks": 1})
        sim.wait_task(upid)
        assert sim.vm(svc.vmid)["node"] == target
        mid = traffic.run_once(pve, pub)                     # read on the new node
        assert not mid.errors and mid.rows > 0
        done = traffic.run_once(pve, pub, now=time.time())
        assert "ago" in traffic.run_once(pve, pub, min_gap_s=1800).skipped  # once per hour

        cursor = TrafficCursor.get_by_id(6301)
        assert cursor.missed_s == 0
        assert int(time.time()) // 60 * 60 - cursor.counted_to in (0, 60)  # up to the last row
        assert not done.errors
        assert cursor.counted_from < reset_row < cursor.counted_to
        expected = _expected(sim.vm(svc.vmid), cursor.counted_from, cursor.counted_to)
        assert _stored(6301) == expected
        assert (cursor.counted_to - cursor.counted_from) // 60 + 1 >= 69

        latest: dict[str, dict] = {}
        wait_until(lambda: events.drain() and {e["period_start"] for e in events.received}
                   >= {h.isoformat() + "Z" for h in expected}, 10, "usage.reported events",
                   db=False)
        for e in events.received:
            assert e["service_id"] == 6301
            latest[e["period_start"]] = e
        for hour, (b_in, b_out) in expected.items():
            e = latest[hour.isoformat() + "Z"]
            assert (e["bytes_in"], e["bytes_out"]) == (int(b_in), int(b_out))
    finally:
        events.close()
        pub.close()


def test_a_counter_reset_row_adds_nothing_and_a_restart_resumes_from_the_cursor(settings):
    """A row with no value (PVE drops the negative step of a reset counter) adds nothing; a new
    process (a restarted scheduler) continues from the stored cursor: nothing twice."""
    base = 1_800_000_000 // 3600 * 3600
    rows: list[dict[str, Any]] = [{"time": base + 60 * i, "netin": 100.5, "netout": 10}
                                  for i in range(1, 11)]
    rows[4]["netin"] = rows[4]["netout"] = None  # the reset
    result = traffic.RunResult()
    traffic.account_service(42, 900, rows[:6], now=base + 600, result=result)
    traffic.account_service(42, 900, rows, now=base + 600, result=result)  # overlap
    traffic.account_service(42, 900, rows, now=base + 600, result=result)  # restart: again
    usage = TrafficUsage.get(TrafficUsage.service_id == 42)
    assert usage.bytes_in == Decimal("100.5") * 60 * 9 and usage.bytes_out == 10 * 60 * 9
    assert result.rows == 10 and TrafficCursor.get_by_id(42).counted_to == base + 600


def test_a_missed_hour_is_taken_from_the_30_minute_series(settings):
    """The job did not run for three hours: the minute rows no longer reach the cursor, so the
    gap comes from the day series (rate x the seconds of each row inside the gap); what that
    series lacks is counted as missed, never guessed."""
    base = 1_800_000_000 // 3600 * 3600
    result = traffic.RunResult()
    minute = [{"time": base + 60 * i, "netin": 10, "netout": 1} for i in range(1, 11)]
    traffic.account_service(43, 901, minute, now=base + 600, result=result)
    later = [{"time": base + 10800 + 60 * i, "netin": 10, "netout": 1} for i in range(1, 6)]
    day = [{"time": base + 1800 * k, "netin": 1000, "netout": 100} for k in range(1, 7)]
    del day[3]  # (base + 5400, base + 7200] is not in the series either
    traffic.account_service(43, 901, later, now=base + 11100, result=result, gap_rows=day)
    got = {u.period_start: (u.bytes_in, u.bytes_out)
           for u in TrafficUsage.select().where(TrafficUsage.service_id == 43)}
    hour = [datetime.fromtimestamp(base + 3600 * h, UTC).replace(tzinfo=None) for h in range(4)]
    assert got == {hour[0]: (10 * 600 + 1000 * 3000, 600 + 100 * 3000),  # 1200 s + 1800 s
                   hour[1]: (1000 * 1800, 100 * 1800),                    # one row of two
                   hour[2]: (1000 * 3600, 100 * 3600),
                   hour[3]: (10 * 300, 300)}
    cursor = TrafficCursor.get_by_id(43)
    assert cursor.missed_s == 1800 and cursor.counted_to == base + 11100
