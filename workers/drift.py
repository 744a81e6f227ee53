"""Drift: what a VM's config says against what its package and our records say
(``python -m pvekvm drift [SID] [--fix]``).

Compared, with the same rules the configure steps apply (steps/hardware.py, firewall.py,
cloudinit.py, overage.py): cores, sockets, memory; each package disk's size (smaller than the
package: disks only grow) and I/O limits; net0's bridge, VLAN tag, rate and firewall flag; the
cloud-init ``ipconfigN`` of the recorded addresses; the firewall options; the anti-spoofing
IPSet against the recorded addresses. ``--fix`` hands a differing service to the change-package
machine for its own package (an order through intake, as billing's would be: each of its steps
writes only what differs). A service with an operation in flight is neither compared nor
touched: its VM is mid-change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pvekvm import messaging, placement
from pvekvm.config import Settings
from pvekvm.lifecycle import UNFINISHED, ServiceStatus
from pvekvm.models import Operation, Product, Service, database
from pvekvm.proxmox import Proxmox, ProxmoxError
from pvekvm.wire.orders import ChangePackageEvent
from steps import cloudinit, firewall, hardware, overage, pvecfg
from steps.context import StepContext
from steps.machine import StepFailed
from workers import intake, operations

COMPARED = (ServiceStatus.READY, ServiceStatus.SUSPENDED)


@dataclass
class Report:
    service_id: int
    vmid: int | None
    differences: list[str] = field(default_factory=list)
    skipped: str | None = None
    fixed: str | None = None  # what --fix did (an operation, or why not)

    def line(self) -> str:
        head = f"sid:{self.service_id} VM {self.vmid or '-'}"
        if self.skipped:
            return f"{head}: not compared: {self.skipped}"
        body = "; ".join(self.differences) if self.differences else "matches its package"
        return f"{head}: {body}" + (f" -> {self.fixed}" if self.fixed else "")


def _in_flight(service_id: int) -> Operation | None:
    return (Operation.select().where((Operation.service_id == service_id)
                                     & Operation.status.in_(UNFINISHED))
            .order_by(Operation.id).first())


def services(service_id: int | None) -> list[Service]:
    query = Service.select().where(Service.status.in_(COMPARED) & Service.vmid.is_null(False))
    if service_id is not None:
        query = Service.select().where(Service.id == service_id)
    return list(query.order_by(Service.id))


def compare(settings: Settings, pve: Proxmox, service: Service) -> Report:
    report = Report(service.id, service.vmid)
    busy = _in_flight(service.id)
    if busy is not None:
        report.skipped = f"operation {busy.id} ({busy.kind}, {busy.status}) in flight"
        return report
    if service.vmid is None or service.status not in COMPARED:
        report.skipped = f"status {service.status}, VM {service.vmid or 'none'}"
        return report
    ctx = StepContext(settings, Operation(id=0, kind="drift", params="{}"), service, pve)
    try:
        found = pve.find_vm(int(service.vmid), service.node)
        if found is None:
            report.differences.append("the VM does not exist on Proxmox")
            return report
        if found[0] != service.node:
            report.differences.append(f"node: VM on {found[0]}, recorded {service.node}")
            service.node = found[0]  # compared where it is (only this report's copy)
        allowed = placement.allowed_nodes(ctx.product)
        if found[0] not in allowed:  # change_package migrates it (stopped)
            report.differences.append(f"node: VM on {found[0]}, package "
                                      f"{', '.join(allowed)}")
        report.differences += _hardware(ctx, found[1]) + _network(ctx, found[1])
        if not ctx.product.dhcp:
            report.differences += _firewall(ctx)
    except (ProxmoxError, StepFailed, ValueError) as exc:
        report.skipped = f"could not read the VM: {exc}"
    return report


def _differs(what: str, have: object, want: object, whose: str = "package") -> list[str]:
    return [] if str(have) == str(want) else [f"{what}: VM {have or 'unset'}, {whose} {want}"]


def _hardware(ctx: StepContext, cfg: dict) -> list[str]:
    out: list[str] = []
    for key, want in hardware.cpu_ram(ctx.product).items():
        out += _differs(key, cfg.get(key, "1" if key in ("cores", "sockets") else ""), want)
    if ctx.product.cpu_type:
        out += _differs("cpu", pvecfg.parse(str(cfg.get("cpu", "")), "cputype").get(
            "cputype", ""), ctx.product.cpu_type)
    disks = [hardware.system_disk(ctx.product)]
    if hardware.additional_disk(ctx.product).size_gb > 0:
        disks.append(hardware.additional_disk(ctx.product))
    for disk in disks:
        if disk.slot not in cfg:
            out.append(f"{disk.slot}: missing, package {disk.size_gb}G")
            continue
        props = pvecfg.parse(cfg[disk.slot], "file")
        have = pvecfg.size_gb(props.get("size", "0"))
        if have < disk.size_gb:
            out.append(f"{disk.slot} size: VM {have:g}G, package {disk.size_gb}G")
        for key in hardware.LIMIT_KEYS:
            out += _differs(f"{disk.slot} {key}", props.get(key, ""), disk.limits[key] or "")
    return out


def _network(ctx: StepContext, cfg: dict) -> list[str]:
    p, out = ctx.product, []
    net0 = pvecfg.parse(str(cfg.get("net0", "")), "model")
    out += _differs("net0 bridge", net0.get("bridge", ""), p.bridge)
    out += _differs("net0 VLAN tag", net0.get("tag", ""), p.vlan or "")
    out += _differs("net0 rate", net0.get("rate", ""), overage.rate_for(ctx).text or "")
    if not p.dhcp:
        out += _differs("net0 firewall", net0.get("firewall", ""), "1")
    network, stale = cloudinit.network_settings(ctx)
    for key, want in network.items():
        out += _differs(key, cfg.get(key, ""), want, "records")
    out += [f"{key}: VM {cfg[key]}, records none" for key in stale]
    return out


def _firewall(ctx: StepContext) -> list[str]:
    base = f"{ctx.vm_path}/firewall"
    have = ctx.pve.get(f"{base}/options")
    out = [d for key, want in firewall.wanted_options(ctx).items()
           for d in _differs(f"firewall {key}", have.get(key, ""), want)]
    mine = sorted(firewall.norm(c) for c in ctx.firewall_cidrs())
    name = firewall.ipset_name(0)
    if name not in {s.get("name") for s in ctx.pve.get(f"{base}/ipset")}:
        return out + ([f"IPSet {name}: missing, records {mine}"] if mine else [])
    entries = sorted(firewall.norm(e["cidr"]) for e in ctx.pve.get(f"{base}/ipset/{name}"))
    return out + ([f"IPSet {name}: VM {entries}, records {mine}"] if entries != mine else [])


def fix(settings: Settings, report: Report, publisher: messaging.Publisher) -> str:
    """The service's own package again, through the change-package machine; never while an
    operation is in flight (checked under the service's row lock)."""
    with database.atomic():
        service = Service.fetch_one("SELECT * FROM services WHERE id = %s FOR UPDATE",
                                    report.service_id)
        busy = _in_flight(report.service_id)
        if service is None or busy is not None:
            return f"not fixed: operation {busy.id} ({busy.kind}) in flight" if busy else \
                "not fixed: no such service"
        product = Product.get_by_id(service.product_id)
        event = ChangePackageEvent(service_id=service.id, product=product.name,
                                   idempotency_key=f"drift-fix:{service.id}:{uuid.uuid4().hex}")
        out = intake.handle_order(event.to_json(), settings.engine)
    if out.dead_reason:
        return f"not fixed: {out.dead_reason}"
    operations.deliver(out, publisher)
    op = Operation.get_or_none(Operation.idempotency_key == event.idempotency_key)
    return f"change_package to {product.name} accepted (operation {op.id if op else '?'})"
