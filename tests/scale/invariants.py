"""The promises checked after every scale scenario, read from pvesim and MariaDB (never from
logs): no operation stuck, exactly one VM per live service and none for a terminated one, no
VMID or address given twice, no orphan VM or disk, every refusal with its reason, nothing held,
and billing's events each recorded once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pvekvm.models import DeadLetter, HeldEvent, IpAddress, Operation, OutboxEvent, Service
from workers.operations import UNFINISHED, OpStatus


@dataclass
class Figures:
    """What a run did, for the report: operations by status, VMs, refusals, events."""

    operations: Counter
    live_services: int
    terminated_services: int
    vms: int
    refused: int
    events: int

    def __str__(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.operations.items()))
        return (f"operations: {ops}; live services {self.live_services}, terminated "
                f"{self.terminated_services}; VMs {self.vms}; refused {self.refused}; "
                f"events {self.events}")


def client_vms(sim) -> dict[int, dict]:
    """Every non-template VM in pvesim: vmid → its config."""
    with sim.sim.cluster.lock:
        return {vmid: dict(vm["config"]) for vmid, vm in sim.sim.cluster.vms.items()
                if str(vm["config"].get("template", "0")) != "1"}


def image_volumes(sim) -> list[dict]:
    """Every disk image (not a backup or ISO) on every storage of pvesim."""
    with sim.sim.cluster.lock:
        return [dict(v) for scope in sim.sim.cluster.volumes.values() for v in scope.values()
                if v.get("content") == "images"]


def check(sim, service_ids: Iterable[int] | None = None) -> Figures:
    """Assert every invariant over ``service_ids`` (default: every service) and return the
    figures of the run."""
    q = Service.select()
    if service_ids is not None:
        q = q.where(Service.id.in_(list(service_ids)))
    services = {s.id: s for s in q}
    ops = list(Operation.select().where(Operation.service_id.in_(list(services) or [0])))

    stuck = [f"{o.service_id}:{o.kind}@{o.state}/{o.status}/{o.error or ''}" for o in ops
             if o.status in UNFINISHED]
    assert not stuck, f"operations not finished: {stuck[:20]}"
    reasonless = [o.id for o in ops if o.status == OpStatus.FAILED and not (o.error or "")]
    assert not reasonless, f"failed operations without a reason: {reasonless}"

    vms = client_vms(sim)
    owner: dict[int, int] = {}
    for vmid, cfg in vms.items():
        desc = cfg.get("description", "") + " "
        tags = [sid for sid in services if f"service={sid} " in desc]
        assert len(tags) <= 1, f"VM {vmid} claims services {tags}"
        if tags:
            owner[vmid] = tags[0]
    live = {sid: s for sid, s in services.items() if s.status != "terminated"}
    dead = {sid for sid, s in services.items() if s.status == "terminated"}
    for sid, svc in live.items():
        mine = [vmid for vmid, o in owner.items() if o == sid]
        assert mine == [svc.vmid], f"service {sid} ({svc.status}) has VMs {mine}, " \
                                   f"recorded {svc.vmid}"
    ghosts = {vmid: o for vmid, o in owner.items() if o in dead}
    assert not ghosts, f"VMs of terminated services: {ghosts}"
    orphans = set(vms) - {s.vmid for s in live.values()}
    assert not orphans, f"orphan VMs: {sorted(orphans)}"
    vmids = [s.vmid for s in live.values()]
    assert len(vmids) == len(set(vmids)), "a VMID given twice"
    disks = [v["volid"] for v in image_volumes(sim)
             if v.get("vmid") is not None and int(v["vmid"]) not in sim.sim.cluster.vms]
    assert not disks, f"orphan disks: {disks[:20]}"

    addrs = [a.address for a in IpAddress.select().where(IpAddress.service_id.in_(list(live)
                                                                                  or [0]))]
    assert len(addrs) == len(set(addrs)), "an address given twice"
    vm_ips = [cfg["ipconfig0"].split("ip=", 1)[1].split("/", 1)[0]
              for cfg in vms.values() if "ip=" in cfg.get("ipconfig0", "")]
    assert len(vm_ips) == len(set(vm_ips)), f"two VMs with one address: {Counter(vm_ips)}"

    assert HeldEvent.select().count() == 0, "events still held"
    refusals = list(DeadLetter.select())
    assert all(d.reason for d in refusals), "a refusal without its reason"
    events = list(OutboxEvent.select())
    assert all(e.published_at is not None for e in events), "events never published"
    return Figures(Counter(str(o.status) for o in ops), len(live), len(dead), len(vms),
                   len(refusals), len(events))


def check_events_once(received: list[dict]) -> int:
    """Billing's view: every recorded event heard, de-duplicated by event id, and every heard
    event recorded (nothing invented). Returns how many copies came twice on the wire."""
    by_id = {e["event_id"]: e for e in received}
    recorded = {r.event_id for r in OutboxEvent.select()}
    assert set(by_id) == recorded, (f"missing {len(recorded - set(by_id))}, "
                                    f"unknown {len(set(by_id) - recorded)}")
    return len(received) - len(by_id)
