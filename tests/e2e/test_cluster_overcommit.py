"""Overcommit ratios per cluster (issue 24: "configurable overcommit ratios per cluster"),
through the real path: billing's orders on RabbitMQ, intake and workers on MariaDB, two
pvesims (clusters ``default`` and ``ams``) with the same hardware. ``ams`` counts memory at
1.5x its RAM (its own ``[clusters.placement]``), ``default`` at ``[placement]``'s 1.0x: the
same orders for the same product take twice as many VMs in Amsterdam before they wait."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from producers.api import OrderClient
from pvekvm import catalog, preflight
from pvekvm.catalog_cache import _catalog
from pvekvm.config import ClusterSettings, ProxmoxSettings, Settings
from pvekvm.models import Product, Reservation, Service
from pvekvm.placement import allowed_nodes
from pvesim.model import GiB
from pvesim.testing import RunningSimulator, running_clusters
from tests.e2e.test_clusters import two_cluster_catalog
from workers.testing.harness import BillingQueue, InProcessWorkers, describe_ops, wait_until

# every node 4 GiB, 1.5 GiB of it the host's: one 2 GiB VM at 1.0x (2.5 GiB of room), two at
# 1.5x (6 - 1.5 = 4.5 GiB), never three (6.5 GiB)
NODE = {"maxmem": 4 * GiB, "host_mem": 3 * GiB // 2}


@pytest.fixture()
def fleet_sims(tmp_path) -> Iterator[dict[str, RunningSimulator]]:
    with running_clusters(tmp_path, ("default", "ams"), task_time_scale=0) as sims:
        yield sims


@pytest.fixture()
def sim(fleet_sims) -> RunningSimulator:
    """The e2e settings fixture's pvesim: the first cluster's."""
    return fleet_sims["default"]


@pytest.fixture()
def fleet(settings, fleet_sims) -> Settings:
    """Two clusters; ``ams`` with its own memory ratio (1.5), the rest from ``[placement]``."""
    ams = ProxmoxSettings.from_connection(fleet_sims["ams"].connection)
    own = replace(settings.placement, memory_overcommit=1.5)
    both = replace(settings, clusters=(
        ClusterSettings("default", settings.proxmox),
        ClusterSettings("ams", ams, vmid_min=5000, vmid_max=5999, placement=own)))
    catalog.load(two_cluster_catalog(), settings.secret_key_file, both.cluster_names)
    _catalog.clear()
    for s in fleet_sims.values():
        for node in ("pve1", "pve2", "pve3"):
            s.set_node(node, **NODE)
    return both


def _committed(sim: RunningSimulator) -> dict[str, int]:
    """Per node: the configured memory of its VMs plus the host's use (what the ratio caps)."""
    out = {n: NODE["host_mem"] for n in ("pve1", "pve2", "pve3")}
    with sim.sim.cluster.lock:
        for vm in sim.sim.cluster.vms.values():
            if str(vm["config"].get("template", "0")) != "1":
                out[vm["node"]] += int(str(vm["config"].get("memory", "512"))) * 2**20
    return out


def test_a_cluster_with_a_higher_memory_ratio_takes_more_of_the_same_vms(fleet, fleet_sims):
    assert fleet.placement_of("default").memory_overcommit == 1.0
    assert fleet.placement_of("ams") == replace(fleet.placement, memory_overcommit=1.5)
    lines = {v.name: v.line() for v in preflight.check_proxmox(fleet, privileges=False)}
    assert "memory 1.5x, cpu 4x, disk 1x" in lines["Proxmox ams placement"], lines
    assert "Proxmox default placement" not in lines  # [placement] as it is: nothing to say
    k = len(allowed_nodes(Product.get(Product.name == "vps-small")))  # the same names in both
    orders = {"default": list(range(9701, 9702 + 2 * k)),
              "ams": list(range(9801, 9802 + 2 * k))}  # 2k + 1 each: more than either holds
    events = BillingQueue(fleet, "operation.waiting")
    with InProcessWorkers(fleet, concurrency=4), \
            OrderClient(fleet.amqp_url, fleet.namespace) as billing:
        for location, sids in orders.items():
            for sid in sids:
                billing.create(service_id=sid, client_id=97, product="vps-small",
                               email="o@example.com", location=location)
        every = orders["default"] + orders["ams"]

        def settled() -> bool:  # each order is ready or waits for room: nothing else moves
            ready = Service.select().where(Service.id.in_(every)
                                           & (Service.status == "ready")).count()
            waits = Reservation.select().where(Reservation.service_id.in_(every)
                                               & Reservation.waiting_since.is_null(False))
            return ready + waits.count() == len(every)

        wait_until(settled, 90, f"every order ready or waiting ({describe_ops(every)})")

        def ready_in(location: str) -> list[int]:
            return [s.id for s in Service.select().where(
                Service.id.in_(orders[location]) & (Service.status == "ready"))]

        assert len(ready_in("default")) == k, describe_ops(orders["default"])
        assert len(ready_in("ams")) == 2 * k, describe_ops(orders["ams"])
        assert all(Service.get_by_id(s).cluster == loc for loc, sids in orders.items()
                   for s in sids)
        # billing heard each waiting order, with the reason in its own cluster's terms
        wait_until(lambda: len({e["service_id"] for e in events.drain()}) >= 2 * k + 1, 30,
                   "a wait for every order without room")
        waiting = {e["service_id"]: e["reason"] for e in events.received}
        assert set(waiting) == (set(orders["default"]) - set(ready_in("default"))) | (
            set(orders["ams"]) - set(ready_in("ams")))
        assert all("2.0 GiB memory free; best pve" in r for r in waiting.values()), waiting
    # what Proxmox holds: each node within its own cluster's ratio, Amsterdam's above its RAM
    for location, ratio in (("default", 1.0), ("ams", 1.5)):
        committed = _committed(fleet_sims[location])
        assert max(committed.values()) <= ratio * NODE["maxmem"], (location, committed)
    assert max(_committed(fleet_sims["ams"]).values()) > NODE["maxmem"]
    events.close()


def test_the_wait_bound_is_the_clusters_own_and_its_reason_names_where_it_is_set(
        fleet, fleet_sims):
    """``ams`` with ``wait_max_s`` 1.5 of its own: an order without room there fails after it,
    the refusal naming the cluster's setting, while ``[placement]``'s hour still holds for
    the default cluster's order, which waits."""
    ams = fleet.cluster("ams")
    assert ams is not None and ams.placement is not None
    fleet = replace(fleet, clusters=(fleet.clusters[0], replace(
        ams, placement=replace(ams.placement, wait_max_s=1.5))))
    for s in fleet_sims.values():  # no room for a 2 GiB VM anywhere (Amsterdam: 3 - 1.5 GiB)
        for node in ("pve1", "pve2", "pve3"):
            s.set_node(node, maxmem=2 * GiB, host_mem=3 * GiB // 2)
    events = BillingQueue(fleet, "operation.*")
    with InProcessWorkers(fleet, concurrency=2), \
            OrderClient(fleet.amqp_url, fleet.namespace) as billing:
        billing.create(service_id=9901, client_id=99, product="vps-small",
                       email="w@example.com", location="ams")
        billing.create(service_id=9902, client_id=99, product="vps-small",
                       email="w@example.com", location="default")
        failed = events.wait_for(lambda e: e["type"] == "operation.failed", 30, "the failure")
        assert failed["service_id"] == 9901
        assert "([[clusters]] ams placement wait_max_s = 1.5)" in failed["reason"], failed
        wait_until(lambda: any(e["type"] == "operation.waiting" and e["service_id"] == 9902
                               for e in events.drain()), 30, "the default cluster's wait")
    assert Service.get_by_id(9902).status == "deploying"
    events.close()
