"""Pools never give one address or prefix twice: 200 orders allocate at once (the deploy's
``allocate_ips`` step, each in its own transaction as the engine runs it, on real MariaDB), each
taking a primary IPv4, two extra IPv4 and a routed /64; then half are released and 100 new
orders race the reuse of what was freed while the other half re-runs its step (a redelivered
message must take nothing more); a pool too small for everyone says so to those left over."""

from __future__ import annotations

import ipaddress
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from peewee import OperationalError

from pvekvm import catalog
from pvekvm.catalog_cache import _catalog
from pvekvm.config import Settings
from pvekvm.models import IpAddress, Operation, Service, Template, database
from steps.allocation import allocate_ips, release_ips
from steps.context import StepContext
from steps.machine import Done, StepFailed

IN_FLIGHT = 48  # concurrent transactions (connections): the MariaDB server is shared
REDELIVER = (1205, 1213)  # lock wait timeout / deadlock: the engine's message is redelivered


@pytest.fixture()
def settings(clean_db, database_url: str, tmp_path) -> Settings:
    _catalog.clear()
    catalog.load({
        "templates": [{"name": "t", "vmid": 9000, "node": "pve1", "os_user": "debian"}],
        "ip_pools": [
            {"name": "v4", "version": 4, "network": "100.64.12.0/22", "gateway": "100.64.12.1"},
            {"name": "v6", "version": 6, "network": "2001:db8:14b::/48", "gateway": "fe80::1",
             "assign": 64},
            {"name": "tiny6", "version": 6, "network": "2001:db8:14c::/62",
             "gateway": "fe80::1", "assign": 64}],
        "products": [
            {"name": "extra", "template": "t", "cores": 1, "memory_mb": 512, "disk_gb": 10,
             "target_node": "pve1", "target_storage": "local-lvm", "ip_pool": "v4",
             "ip6_pool": "v6", "extra_ipv4": 2},
            {"name": "tiny", "template": "t", "cores": 1, "memory_mb": 512, "disk_gb": 10,
             "target_node": "pve1", "target_storage": "local-lvm", "ip6_pool": "tiny6"}],
    }, str(tmp_path / "secret.key"))
    return Settings(database_url=database_url, amqp_url="amqp://unused")


def _order(settings: Settings, sids: range, product: str) -> None:
    from pvekvm.models import Product

    pid = Product.get(Product.name == product).id
    tpl = Template.get(Template.name == "t").id
    Service.insert_many([{"id": sid, "client_id": 1, "product_id": pid, "template_id": tpl,
                          "email": "p@example.com", "hostname": f"p{sid}.example.net",
                          "status": "deploying", "want_ipv6": True} for sid in sids]).execute()


def _allocate_all(settings: Settings, sids: list[int]) -> tuple[dict[int, object], int]:
    """Run every service's allocation step at once; the step's result (or StepFailed) by
    service, and how many transactions the database sent back (redelivered, as the engine's
    message would be)."""
    start = threading.Event()
    redelivered = 0
    lock = threading.Lock()

    def one(sid: int) -> object:
        start.wait(timeout=30)
        try:
            return attempts(sid)
        finally:
            database.close()  # the thread's connection

    def attempts(sid: int) -> object:
        nonlocal redelivered
        for _ in range(20):
            ctx = StepContext(settings, Operation(params="{}", service_id=sid),
                              Service.get_by_id(sid), None)
            try:
                with database.atomic():
                    return allocate_ips(ctx)
            except StepFailed as exc:
                return exc
            except OperationalError as exc:
                if exc.args and exc.args[0] in REDELIVER:
                    with lock:
                        redelivered += 1
                    continue
                raise
        raise AssertionError(f"service {sid}: still busy after 20 deliveries")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        futures = [pool.submit(one, sid) for sid in sids]
        start.set()  # all at once: IN_FLIGHT transactions race, the rest follow as they end
        results = {sid: f.result() for sid, f in zip(sids, futures, strict=True)}
    print(f"{len(sids)} allocation steps, {IN_FLIGHT} in flight: "
          f"{time.perf_counter() - t0:.1f} s, {redelivered} redelivered")
    return results, redelivered


def _holdings() -> dict[int, list[IpAddress]]:
    out: dict[int, list[IpAddress]] = {}
    for row in IpAddress.select().where(IpAddress.service_id.is_null(False)):
        assert row.service_id is not None  # the query's condition
        out.setdefault(row.service_id, []).append(row)
    return out


def _check_distinct(holdings: dict[int, list[IpAddress]], sids: list[int]) -> None:
    """Each service holds its primary, two extras and one /64; no address or prefix is held by
    two services, and no two prefixes overlap."""
    for sid in sids:
        assert sorted((r.version, r.slot) for r in holdings[sid]) == [(4, 0), (4, 1), (4, 2),
                                                                     (6, 0)], sid
    v4 = [r.address for rows in holdings.values() for r in rows if r.version == 4]
    assert len(v4) == len(set(v4)) == 3 * len(holdings)
    nets = sorted(ipaddress.IPv6Network(f"{r.address}/{r.prefixlen}")
                  for rows in holdings.values() for r in rows if r.version == 6)
    assert len(nets) == len(holdings) and all(n.prefixlen == 64 for n in nets)
    assert all(not a.overlaps(b) for a, b in zip(nets, nets[1:], strict=False))
    assert all(n.subnet_of(ipaddress.IPv6Network("2001:db8:14b::/48")) for n in nets)


def test_200_parallel_orders_never_share_an_address_or_prefix(settings):
    first = list(range(1000, 1200))
    _order(settings, range(1000, 1200), "extra")
    results, _ = _allocate_all(settings, first)
    assert all(isinstance(r, Done) and not r.skipped for r in results.values()), \
        [r for r in results.values() if not isinstance(r, Done)][:3]
    _check_distinct(_holdings(), first)

    freed = first[::2]  # terminate half: their addresses and prefixes go back to the pools
    for sid in freed:
        release_ips(sid)
    Service.update(status="terminated").where(Service.id.in_(freed)).execute()
    _order(settings, range(2000, 2100), "extra")
    kept, new = first[1::2], list(range(2000, 2100))
    results, _ = _allocate_all(settings, new + kept)
    assert all(isinstance(r := results[s], Done) and not r.skipped for s in new)
    assert all(isinstance(r := results[s], Done) and r.skipped for s in kept)  # no more
    holdings = _holdings()
    assert set(holdings) == set(kept + new)
    _check_distinct(holdings, kept + new)
    prefix_rows = IpAddress.select().where(IpAddress.prefixlen.is_null(False)).count()
    assert prefix_rows == 200  # the freed /64s were handed out again before new ones


def test_a_prefix_pool_too_small_refuses_the_orders_left_over(settings):
    sids = list(range(3000, 3006))
    _order(settings, range(3000, 3006), "tiny")  # a /62 holds four /64
    results, _ = _allocate_all(settings, sids)
    given = [s for s, r in results.items() if isinstance(r, Done)]
    refused = [r for r in results.values() if isinstance(r, StepFailed)]
    assert len(given) == 4 and len(refused) == 2
    assert all("prefix pool tiny6 has no free /64" in str(r) for r in refused)
    nets = {r.address for r in IpAddress.select().where(IpAddress.service_id.in_(given))}
    assert len(nets) == 4
