"""Placement by headroom (issue 24 item 3) through the real path: billing's orders on RabbitMQ,
intake and workers on MariaDB, pvesim's ``/cluster/resources`` moving as VMs come and go.
Orders spread over equal nodes, no node takes more than its memory, an order with no room
waits with the reason (billing hears it) and goes on when a VM is terminated, or fails after
the bound; a node in maintenance gets nothing; a template copy wins among close nodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.catalog_cache import _catalog
from pvekvm.config import PlacementSettings
from pvekvm.models import Node, Operation, Product, Reservation, Service, StepRun
from pvesim.model import GiB
from pvesim.testing import RunningSimulator, running_simulator
from workers import admin
from workers.testing.harness import (
    BillingQueue,
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
)

NODES = ("pve1", "pve2", "pve3")


@pytest.fixture()
def sim(tmp_path) -> Iterator[RunningSimulator]:
    # every node holds a copy of each local template (only the copies the catalog names count)
    with running_simulator(tmp_path, task_time_scale=0, template_replicas=True) as s:
        yield s


def _group(settings, *nodes: str, name: str = "all") -> None:
    catalog.load({"node_groups": [{"name": name, "nodes": list(nodes)}],
                  "products": [{**_product_row("vps-small"), "group": name}]},
                 settings.secret_key_file)
    _catalog.clear()


def _product_row(name: str) -> dict:
    p = Product.get(Product.name == name)
    skip = {"id", "template_id", "ip_pool_id", "ip6_pool_id", "nodes", "node_group",
            "target_node"}
    row = {k: v for k, v in p.__data__.items() if k not in skip and v is not None}
    row["net_rate_mbps"] = float(row["net_rate_mbps"])
    row.pop("overage_rate_mbps", None)
    return {**row, "template": "debian-12", "ip_pool": "public-v4"}


def _per_node(sids) -> Counter:
    return Counter(Service.get_by_id(s).node for s in sids)


def _deploy(sid: int) -> Operation:
    return Operation.get((Operation.service_id == sid) & (Operation.kind == "deploy"))


def test_orders_spread_take_no_more_than_a_node_holds_and_the_last_waits_for_a_terminate(
        settings, sim):
    for node in NODES:  # 8 GiB, 3 GiB of it the host's: two 2 GiB VMs each
        sim.set_node(node, maxmem=8 * GiB, host_mem=3 * GiB)
    _group(settings, *NODES)
    events = BillingQueue(settings, "#")
    sids = list(range(7301, 7308))
    with InProcessWorkers(settings, concurrency=6), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in sids:  # all at once: the placements race
            billing.create(service_id=sid, client_id=73, product="vps-small",
                           email="p@example.com")
        waiting = events.wait_for(lambda e: e["type"] == "operation.waiting", 60, "a wait")
        late = waiting["service_id"]
        first = [s for s in sids if s != late]
        wait_until(all_ready(first), 90, "six ready")
        assert _per_node(first) == {n: 2 for n in NODES}  # spread, and each node's cap held
        for node in NODES:
            with sim.sim.cluster.lock:
                mem, _ = sim.sim.cluster.node_load(node)
            assert mem <= 8 * GiB - 0.8 * GiB, (node, mem)  # PVE's own figure agrees
        assert waiting["reason"].startswith(
            "no node of group all has 2.0 GiB memory free; best pve")
        assert waiting["state"] == "vmid_reserved" and waiting["kind"] == "deploy"
        assert Service.get_by_id(late).status == "deploying"
        waits = [r.message for r in StepRun.select().where(
            (StepRun.service_id == late) & (StepRun.result == "wait"))]
        assert len(waits) == 1 and waits[0] == waiting["reason"]  # once, with its reason
        assert "[.]" in admin.history(late) and "waiting for room" in admin.history(late)

        gone = first[0]
        freed = Service.get_by_id(gone).node
        billing.terminate(service_id=gone)
        wait_until(all_ready([late]), 60, f"the waiting order after a terminate "
                   f"({describe_ops([late])})")
    assert Service.get_by_id(late).node == freed
    assert len([e for e in events.drain() if e["type"] == "operation.waiting"]) == 1
    ready = {e["service_id"]: e for e in events.received if e["type"] == "service.ready"}
    assert ready[late]["node"] == freed
    assert ready[late]["placement"].startswith(f"{freed}: most room of group all (")
    assert "Choose node" in admin.history(late) and ready[late]["placement"] in \
        admin.history(late)
    assert not Reservation.select().count()  # every VM on its node: nothing held any more
    events.close()


def test_no_room_fails_after_the_bound_and_a_node_in_maintenance_gets_nothing(settings, sim):
    settings = replace(settings, placement=PlacementSettings(wait_max_s=1.5))
    sim.set_node("pve2", maxmem=4 * GiB, host_mem=3 * GiB)  # 1 GiB left: too little
    _group(settings, "pve2", "pve3", name="pair")
    Node.insert(name="pve3", maintenance=True).execute()  # roomy, but in maintenance
    events = BillingQueue(settings, "operation.*")
    with InProcessWorkers(settings, concurrency=2), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7401, client_id=74, product="vps-small", email="f@example.com")
        failed = events.wait_for(lambda e: e["type"] == "operation.failed", 30, "the failure")
    reason = ("no node of group pair has 2.0 GiB memory free; best pve2 with 1.0 GiB "
              "(pve3 in maintenance)")
    waiting = next(e for e in events.received if e["type"] == "operation.waiting")
    assert waiting["reason"] == f"{reason}: waiting for room"
    assert failed["reason"].startswith(f"{reason}; waited ") and "wait_max_s = 1.5" in \
        failed["reason"]
    op = _deploy(7401)
    assert op.status == "failed" and op.state == "vmid_reserved"
    assert Service.get_by_id(7401).node is None
    assert not Reservation.select().count()
    with sim.sim.cluster.lock:  # nothing was cloned anywhere
        assert all(vm["config"].get("template") == "1" for vm in sim.sim.cluster.vms.values())
    events.close()


def test_a_node_with_a_template_copy_wins_when_headroom_is_close(settings, sim):
    catalog.load({"templates": [{"name": "debian-12", "vmid": 9000, "node": "pve1",
                                 "os_user": "debian", "replicas": [
                                     {"node": "pve3", "vmid": 9020, "storage": "local-lvm"}]}]},
                 settings.secret_key_file)
    _group(settings, "pve2", "pve3", name="pair")
    sim.set_node("pve2", maxmem=64 * GiB)
    sim.set_node("pve3", maxmem=63 * GiB)  # 1 GiB less than pve2: close (close_mb 2048)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7501, client_id=75, product="vps-small", email="c@example.com")
        wait_until(all_ready([7501]), 60, "the first")
        # pve3 now holds 2 GiB more and 1 GiB less: 3 GiB behind, not close: memory decides
        billing.create(service_id=7502, client_id=75, product="vps-small", email="c@example.com")
        wait_until(all_ready([7502]), 60, "the second")
    near, far = Service.get_by_id(7501), Service.get_by_id(7502)
    assert (near.node, far.node) == ("pve3", "pve2")
    history = admin.history(7501)
    assert "template copy here" in history
    assert "full clone of template copy 9020 on pve3 onto local-lvm: no migration" in history
    assert "template copy here" not in admin.history(7502)


def test_a_waiting_order_goes_on_by_itself_when_a_node_joins_the_cluster(settings, sim):
    sim.set_node("pve2", maxmem=4 * GiB, host_mem=3 * GiB)  # 1 GiB left: too little
    _group(settings, "pve2", "pve4", name="grow")
    events = BillingQueue(settings, "operation.waiting")
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7601, client_id=76, product="vps-small", email="g@example.com")
        waiting = events.wait_for(lambda e: True, 30, "the wait")
        assert waiting["reason"] == ("no node of group grow has 2.0 GiB memory free; best "
                                     "pve2 with 1.0 GiB (pve4 not in the cluster): waiting "
                                     "for room")
        sim.set_node("pve4")  # pvecm add: a node (512 GiB, 64 threads) joins
        wait_until(all_ready([7601]), 60, f"the order on the new node ({describe_ops([7601])})")
    assert Service.get_by_id(7601).node == "pve4" == sim.vm(Service.get_by_id(7601).vmid)["node"]
    events.close()
