"""Where a VM is cloned: a template copy on the target node (full onto the product's storage or
linked), and clone slots per node+storage under many parallel orders. Real RabbitMQ, MariaDB,
pvesim (seeded with a copy of each template on every node) and SMTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from producers.api import OrderClient
from pvekvm import catalog
from pvekvm.catalog_cache import _catalog
from pvekvm.models import Product, Service, Template
from pvesim.testing import RunningSimulator, running_simulator
from workers import admin
from workers.testing.harness import InProcessWorkers, all_ready, wait_until

COPIES = [{"node": "pve1", "vmid": 9000, "storage": "local-lvm"},
          {"node": "pve2", "vmid": 9010, "storage": "local-lvm"},
          {"node": "pve3", "vmid": 9020, "storage": "local-lvm"}]


@pytest.fixture()
def sim(tmp_path) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path, task_time_scale=0, template_replicas=True) as s:
        yield s


def _declare_copies(settings) -> None:
    _catalog.clear()
    catalog.load({"templates": [{"name": "debian-12", "vmid": 9000, "node": "pve1",
                                 "os_user": "debian", "replicas": COPIES}]},
                 settings.secret_key_file)


def _tasks_of(sim: RunningSimulator, vmid: int) -> list[str]:
    with sim.sim.cluster.lock:
        return [t.type for t in sim.sim.tasks.tasks.values() if t.id == str(vmid)]


def _clone_tasks(sim: RunningSimulator) -> list[tuple[str, str, list[str]]]:
    with sim.sim.cluster.lock:
        return [(t.node, t.id, list(t.log)) for t in sim.sim.tasks.tasks.values()
                if t.type == "qmclone"]


def test_a_copy_on_the_target_node_is_cloned_there_onto_the_product_storage(settings, sim):
    _declare_copies(settings)
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7101, client_id=7, product="vps-small", email="a@example.com")
        billing.create(service_id=7102, client_id=7, product="vps-large", email="b@example.com")
        wait_until(all_ready([7101, 7102]), 60, "both ready")

    clones = _clone_tasks(sim)
    for sid, node, copy in ((7101, "pve2", 9010), (7102, "pve3", 9020)):
        svc = Service.get_by_id(sid)
        assert svc.vmid is not None
        vm = sim.vm(svc.vmid)
        assert vm["node"] == node == svc.node and vm["status"] == "running"
        assert not {"qmigrate", "qmmove"} & set(_tasks_of(sim, svc.vmid))  # no migration
        assert any(n == node and src == str(copy) and f"to {svc.vmid}" in log[0]
                   for n, src, log in clones), clones
        disks = {k: v for k, v in vm["config"].items() if k in ("scsi0", "scsi1")}
        assert disks and all(v.startswith(f"local-lvm:vm-{svc.vmid}-disk-") for v in
                             disks.values()), disks  # a full copy on the product's storage
        history = admin.history(sid)
        assert f"full clone of template copy {copy} on {node} onto local-lvm: no migration" \
            in history
    assert "(clone -> migrated)" in admin.history(7101)  # the migrate step had nothing to do


def test_linked_clone_from_the_copy_and_the_copy_cannot_be_removed_meanwhile(settings, sim):
    _declare_copies(settings)
    Product.update(linked_clone=True).where(Product.name == "vps-small").execute()
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7201, client_id=7, product="vps-small", email="a@example.com")
        wait_until(all_ready([7201]), 60, "ready")

    svc = Service.get_by_id(7201)
    assert svc.vmid is not None
    vm = sim.vm(svc.vmid)
    assert vm["node"] == "pve2" and vm["status"] == "running"
    assert vm["config"]["scsi0"].startswith(f"local-lvm:base-9010-disk-0/vm-{svc.vmid}-disk-")
    assert "size=20G" in vm["config"]["scsi0"]  # the package's size, grown from the base
    assert not {"qmigrate", "qmmove"} & set(_tasks_of(sim, svc.vmid))
    assert "linked clone of template copy 9010 on pve2 onto local-lvm" in admin.history(7201)

    px = sim.proxmox()
    status = sim.wait_task(px.nodes("pve2").qemu(9010).delete())
    assert "base volume 'local-lvm:base-9010-disk-0' is still in use by linked cloned" \
        in status["exitstatus"]
    assert sim.vm(9010) is not None


def test_a_copy_on_shared_storage_is_cloned_to_the_target_node_and_moved(settings, sim):
    """No copy on pve2, but one on shared storage: PVE clones it to pve2 (``target``; a full
    clone to another node must stay on shared storage), then the disk moves to local-lvm."""
    _catalog.clear()
    catalog.load({"templates": [{"name": "almalinux-9", "vmid": 9002, "node": "pve1",
                                 "os_user": "almalinux", "replicas": [
                                     {"node": "pve1", "vmid": 9002, "storage": "nfs-shared",
                                      "shared": True}]}]}, settings.secret_key_file)
    small = Product.get(Product.name == "vps-small")
    row = {f.name: getattr(small, f.name) for f in Product._meta.sorted_fields if f.name != "id"}
    tpl = Template.get(Template.name == "almalinux-9")
    Product.create(**{**row, "name": "vps-alma", "template_id": tpl.id})
    with InProcessWorkers(settings, concurrency=4), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        billing.create(service_id=7401, client_id=7, product="vps-alma", email="a@example.com")
        wait_until(all_ready([7401]), 60, "ready")

    svc = Service.get_by_id(7401)
    assert svc.vmid is not None
    vm = sim.vm(svc.vmid)
    assert vm["node"] == "pve2" and vm["status"] == "running"
    assert vm["config"]["scsi0"].startswith(f"local-lvm:vm-{svc.vmid}-disk-")
    tasks = _tasks_of(sim, svc.vmid)
    assert "qmigrate" not in tasks and "qmmove" in tasks
    assert any(n == "pve1" and src == "9002" and f"to {svc.vmid}" in log[0]
               for n, src, log in _clone_tasks(sim))


def test_clone_slots_per_node_and_storage_never_exceed_the_limit(settings, sim):
    """50 orders at once, clones lasting 0.4 s: PVE's storage lock would fail a third
    concurrent full clone on pve2/local-lvm (pvesim --clone-storage-limit 2)."""
    _declare_copies(settings)
    # room for 50 VMs: placement counts their memory, their 100 vCPUs (cpu_overcommit 4) and
    # the 20 GiB of each one's disk in flight
    sim.set_node("pve2", maxmem=128 * 2**30, maxcpu=32)
    sim.set_storage("local-lvm", 2 * 2**40)
    sim.set_task_time_scale(0.02)
    ids = list(range(7300, 7350))
    with InProcessWorkers(settings, concurrency=6), \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        for sid in ids:
            billing.create(service_id=sid, client_id=7, product="vps-small",
                           email="c@example.com")
        wait_until(all_ready(ids), 240, "50 ready")

    assert sim.sim.most_clones == {("pve2", "local-lvm"): 2}  # the slots were used, never more
    with sim.sim.cluster.lock:
        failed = [t.exitstatus for t in sim.sim.tasks.tasks.values()
                  if t.type == "qmclone" and t.exitstatus != "OK"]
    assert failed == []
    assert {Service.get_by_id(sid).node for sid in ids} == {"pve2"}
