"""Two orders placed at the same moment never both take a node's last room: 16 deploys run
their placement step at once (each in its own transaction, as the engine runs it, on real
MariaDB against pvesim's ``/cluster/resources``) for 3 nodes that hold 2 VMs each; exactly 6
are placed, 2 per node, and the other 10 wait with the reason; a redelivered step takes
nothing more."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from peewee import OperationalError

from pvekvm import catalog
from pvekvm.catalog_cache import _catalog
from pvekvm.config import PlacementSettings, ProxmoxSettings, Settings
from pvekvm.models import Operation, Placement, Reservation, Service, Template, database
from pvekvm.proxmox import client
from pvesim.model import GiB
from pvesim.testing import running_simulator
from steps.context import StepContext
from steps.machine import Done, Retry
from steps.provision import place_vm

ORDERS = 16
REDELIVER = (1205, 1213)  # lock wait timeout / deadlock: the engine's message comes again


@pytest.fixture()
def settings(clean_db, database_url: str, tmp_path):
    _catalog.clear()
    catalog.load({
        "templates": [{"name": "t", "vmid": 9000, "node": "pve1", "os_user": "debian"}],
        "node_groups": [{"name": "all", "nodes": ["pve1", "pve2", "pve3"]}],
        "products": [{"name": "p", "template": "t", "cores": 1, "memory_mb": 2048,
                      "disk_gb": 10, "group": "all", "target_storage": "local-lvm"}],
    }, str(tmp_path / "secret.key"))
    with running_simulator(tmp_path, task_time_scale=0) as sim:
        for node in ("pve1", "pve2", "pve3"):
            sim.set_node(node, maxmem=8 * GiB, host_mem=3 * GiB)  # 5 GiB: two 2 GiB VMs
        yield Settings(database_url=database_url, amqp_url="amqp://unused",
                       proxmox=ProxmoxSettings.from_connection(sim.connection),
                       placement=PlacementSettings(wait_max_s=600))


def _orders() -> list[int]:
    from pvekvm.models import Product

    pid, tpl = Product.get(Product.name == "p").id, Template.get(Template.name == "t").id
    sids = list(range(8001, 8001 + ORDERS))
    Service.insert_many([{"id": sid, "client_id": 1, "product_id": pid, "template_id": tpl,
                          "email": "p@example.com", "hostname": f"p{sid}.example.net",
                          "status": "deploying", "vmid": 2000 + sid - 8000} for sid in sids]
                        ).execute()
    Operation.insert_many([{"id": sid, "service_id": sid, "kind": "deploy", "params": "{}",
                            "idempotency_key": f"k{sid}", "state": "vmid_reserved",
                            "status": "running"} for sid in sids]).execute()
    return sids


def _place_all(settings: Settings, sids: list[int]) -> dict[int, object]:
    start = threading.Barrier(len(sids), timeout=30)
    proxmox = settings.proxmox
    assert proxmox is not None

    def one(sid: int) -> object:
        start.wait()
        pve = client(proxmox)
        try:
            for _ in range(20):
                ctx = StepContext(settings, Operation.get_by_id(sid), Service.get_by_id(sid),
                                  pve)
                try:
                    with database.atomic():
                        return place_vm(ctx)
                except OperationalError as exc:
                    if exc.args[0] not in REDELIVER:
                        raise
            raise AssertionError(f"{sid}: redelivered 20 times")
        finally:
            database.close()

    with ThreadPoolExecutor(len(sids)) as pool:
        return dict(zip(sids, pool.map(one, sids), strict=True))


def test_simultaneous_placements_never_share_a_nodes_last_room(settings):
    sids = _orders()
    results = _place_all(settings, sids)
    placed = {sid: r for sid, r in results.items() if isinstance(r, Done)}
    waiting = {sid: r for sid, r in results.items() if isinstance(r, Retry)}
    assert len(placed) == 6 and len(waiting) == ORDERS - 6, results
    per_node = Counter(p.node for p in Placement.select())
    assert per_node == {"pve1": 2, "pve2": 2, "pve3": 2}
    assert Counter(r.node for r in Reservation.select() if r.node) == per_node
    assert all(r.tell and r.reason.startswith("no node of group all has 2.0 GiB memory free")
               for r in waiting.values())
    assert Reservation.select().where(Reservation.node.is_null()).count() == ORDERS - 6

    again = _place_all(settings, sids)  # every message delivered again: nothing more taken
    assert {s for s, r in again.items() if isinstance(r, Done) and r.skipped} == set(placed)
    assert all(isinstance(r, Retry) and not r.tell for s, r in again.items() if s in waiting)
    assert Counter(p.node for p in Placement.select()) == per_node
