"""CPU, memory, disks and the network card: each step compares the package with the VM's config
and changes only what differs, so running it twice changes nothing the second time."""

from __future__ import annotations

from dataclasses import dataclass

from pvekvm import service_changes
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.models import Product
from steps import overage, pvecfg
from steps.context import StepContext
from steps.machine import Done, Retry, StepFailed, StepResult, Wait

LIMIT_KEYS = ("mbps_rd", "mbps_wr", "iops_rd", "iops_wr",
              "mbps_rd_max", "mbps_wr_max", "iops_rd_max", "iops_wr_max")  # *_max: burst pools


@dataclass(frozen=True)
class DiskSpec:
    slot: str
    size_gb: int
    storage: str
    limits: dict[str, int]


def _limits(p: Product, prefix: str) -> dict[str, int]:
    return {key: int(getattr(p, f"{prefix}_{key}") or 0) for key in LIMIT_KEYS}


def system_disk(p: Product) -> DiskSpec:
    return DiskSpec(f"{p.disk_bus}0", p.disk_gb, p.target_storage, _limits(p, "disk"))


def additional_disk(p: Product) -> DiskSpec:
    return DiskSpec(f"{p.disk_bus}1", p.add_disk_gb, p.add_disk_storage or p.target_storage,
                    _limits(p, "add_disk"))


# package details that PVE's default stands for when the package leaves them unset: a value
# the VM holds from an earlier package is deleted (cpu_type unset keeps the template's own)
UNSET_DELETES = ("cpulimit", "cpuunits", "balloon")


def cpu_ram(p: Product) -> dict[str, int | str]:
    """The config keys the package sets for CPU and memory (pvekvm/package_details.py checks
    the ranges when the catalog loads)."""
    want: dict[str, int | str] = {"cores": p.cores, "sockets": p.sockets,
                                  "memory": p.memory_mb}
    if p.cpulimit is not None and float(p.cpulimit) > 0:
        want["cpulimit"] = f"{float(p.cpulimit):g}"
    if p.cpuunits is not None:
        want["cpuunits"] = int(p.cpuunits)
    if p.balloon_mb is not None:
        want["balloon"] = int(p.balloon_mb)
    return want


def _same(key: str, have: object, want: object) -> bool:
    if key == "cpulimit":
        try:
            return float(str(have)) == float(str(want))
        except ValueError:
            return False
    return str(have) == str(want)


def set_cpu_ram(ctx: StepContext) -> StepResult:
    """Cores, sockets, memory, CPU type, cpulimit, cpuunits and the balloon minimum, each
    compared with the VM's config first: only what differs is written, a detail the package no
    longer sets is deleted (``UNSET_DELETES``)."""
    p, cfg = ctx.product, ctx.config()
    want = cpu_ram(p)
    change: dict[str, object] = {k: v for k, v in want.items()
                                 if k not in cfg or not _same(k, cfg[k], v)}
    if p.cpu_type:
        props = pvecfg.parse(str(cfg.get("cpu", "")), "cputype")
        if props.get("cputype") != p.cpu_type:
            change["cpu"] = pvecfg.render({**props, "cputype": p.cpu_type}, "cputype")
    gone = [k for k in UNSET_DELETES if k in cfg and k not in want]
    if gone:
        change["delete"] = ",".join(gone)
    if not change:
        return Done("no change", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config", **change)
    shown = [f"{p.cores} cores × {p.sockets}, {p.memory_mb} MB"]
    shown += [f"{k}={v}" for k, v in change.items() if k not in ("cores", "sockets", "memory",
                                                                  "delete")]
    shown += [f"{k} removed" for k in gone]
    return Done(", ".join(shown))


def _resize(ctx: StepContext, disk: DiskSpec) -> StepResult:
    cfg = ctx.config()
    if disk.slot not in cfg:
        raise StepFailed(f"disk {disk.slot} not found on VM {ctx.vmid}")
    have = pvecfg.size_gb(pvecfg.parse(cfg[disk.slot], "file").get("size", "0"))
    if have >= disk.size_gb:
        note = "no change" if have == disk.size_gb else \
            f"disk is {have:g}G, package {disk.size_gb}G: disks only grow"
        return Done(note, skipped=True)
    upid = ctx.pve.put(f"{ctx.vm_path}/resize", disk=disk.slot, size=f"{disk.size_gb}G")
    if isinstance(upid, str) and upid.startswith("UPID:"):
        return Wait(upid, ctx.node)
    return Done(f"{disk.slot} {have:g}G -> {disk.size_gb}G")


def _set_io(ctx: StepContext, disk: DiskSpec) -> StepResult:
    cfg = ctx.config()
    if disk.slot not in cfg:
        raise StepFailed(f"disk {disk.slot} not found on VM {ctx.vmid}")
    props = pvecfg.parse(cfg[disk.slot], "file")
    new = {k: v for k, v in props.items() if k not in LIMIT_KEYS}
    new.update({k: str(v) for k, v in disk.limits.items() if v})
    if new == props:
        return Done("no change", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config", **{disk.slot: pvecfg.render(new, "file")})
    shown = ", ".join(f"{k}={v}" for k, v in disk.limits.items() if v) or "unlimited"
    return Done(shown)


def resize_system_disk(ctx: StepContext) -> StepResult:
    return _resize(ctx, system_disk(ctx.product))


def set_system_disk_io(ctx: StepContext) -> StepResult:
    return _set_io(ctx, system_disk(ctx.product))


def no_additional_disk(ctx: StepContext) -> str | None:
    """The three additional-disk steps have nothing to do when the package has no such disk
    (a disk the VM already has is kept: see :func:`create_additional_disk`)."""
    return "no additional disk in package" if additional_disk(ctx.product).size_gb <= 0 \
        else None


def create_additional_disk(ctx: StepContext) -> StepResult:
    """Skipped when the package has none. A disk the VM already has is kept (never destroyed
    by a downgrade: the data on it is the client's)."""
    disk = additional_disk(ctx.product)
    if (reason := no_additional_disk(ctx)) is not None:
        return Done(reason, skipped=True)
    cfg = ctx.config()
    if cfg.get("lock"):
        return Retry(f"VM is locked ({cfg['lock']})")
    if disk.slot in cfg:
        return Done(f"{disk.slot} exists", skipped=True)
    upid = ctx.pve.post(f"{ctx.vm_path}/config", **{disk.slot: f"{disk.storage}:{disk.size_gb}"})
    if isinstance(upid, str) and upid.startswith("UPID:"):
        return Wait(upid, ctx.node)
    return Done(f"{disk.slot} {disk.size_gb}G on {disk.storage}")


def resize_additional_disk(ctx: StepContext) -> StepResult:
    disk = additional_disk(ctx.product)
    if (reason := no_additional_disk(ctx)) is not None:
        return Done(reason, skipped=True)
    return _resize(ctx, disk)


def set_additional_disk_io(ctx: StepContext) -> StepResult:
    disk = additional_disk(ctx.product)
    if (reason := no_additional_disk(ctx)) is not None:
        return Done(reason, skipped=True)
    return _set_io(ctx, disk)


def set_network(ctx: StepContext) -> StepResult:
    """VMSetNetwork: bridge, VLAN tag, MAC (kept across reinstall) and rate limit on net0; one
    more NIC per extra IPv4 (``netN`` for slot N, same bridge, VLAN and rate, MAC chosen by
    PVE), and the extra NICs a smaller package no longer has are removed. The rate is the
    package's, or its overage rate while the service is throttled for this month and the
    package's quota is used up (steps/overage.py ``rate_for``)."""
    p, cfg = ctx.product, ctx.config()
    props = pvecfg.parse(cfg.get("net0", ""), "model")
    mac = ctx.service.macaddr or next(
        (v for k, v in props.items() if k in ("virtio", "e1000") or ":" in v), None)
    want = {"virtio": mac} if mac else {"model": "virtio"}
    want["bridge"] = p.bridge
    if not p.dhcp:  # DHCP: only bandwidth, bridge and VLAN are ours
        want["firewall"] = "1"
    elif "firewall" in props:
        want["firewall"] = props["firewall"]
    if p.vlan:
        want["tag"] = str(p.vlan)
    rate = overage.rate_for(ctx)
    if rate.text:
        want["rate"] = rate.text
    note = f" ({rate.reason})" if ctx.service.throttled_period is not None else ""
    current = {k: v for k, v in props.items() if k != "model" or "virtio" not in props}
    extras = _set_extra_nics(ctx, cfg, rate.text)
    if mac and current == want:
        _remember_mac(ctx, mac)
        return Done((", ".join(extras) or "no change") + note, skipped=not extras)
    ctx.pve.put(f"{ctx.vm_path}/config", net0=_render_net(want))
    if not mac:
        mac = pvecfg.parse(ctx.config()["net0"], "model").get("virtio")
    _remember_mac(ctx, mac)
    return Done(f"{p.bridge}" + (f" vlan {p.vlan}" if p.vlan else "") + f" mac {mac}"
                + (f" rate {rate.text} MB/s" if rate.text else "") + note
                + "".join(f", {e}" for e in extras))


def _link(p: Product, rate: str | None) -> dict[str, str]:
    link = {"bridge": p.bridge, "firewall": "1"}
    if p.vlan:
        link["tag"] = str(p.vlan)
    if rate:
        link["rate"] = rate
    return link


def _set_extra_nics(ctx: StepContext, cfg: dict, rate: str | None) -> list[str]:
    """NIC ``netN`` for each extra IPv4 slot N (the NIC ``ipconfigN`` configures), at net0's
    ``rate`` (a throttled service is throttled on every NIC); netN of a slot no longer held
    (1..MAX_EXTRA_IPV4) is removed."""
    slots = {row.slot for row in ctx.extra_ipv4()}
    changes: dict[str, str] = {}
    for slot in sorted(slots):
        key = f"net{slot}"
        props = pvecfg.parse(str(cfg.get(key, "")), "model")
        mac = props.get("virtio")
        want = ({"virtio": mac} if mac else {"model": "virtio"}) | _link(ctx.product, rate)
        current = {k: v for k, v in props.items() if k != "model" or "virtio" not in props}
        if not mac or current != want:
            changes[key] = _render_net(want)
    gone = [f"net{n}" for n in range(1, MAX_EXTRA_IPV4 + 1)
            if f"net{n}" in cfg and n not in slots]
    if gone:
        changes["delete"] = ",".join(gone)
    if changes:
        ctx.pve.put(f"{ctx.vm_path}/config", **changes)
    return [f"{k} set" for k in changes if k != "delete"] + [f"{k} removed" for k in gone]


def _render_net(want: dict[str, str]) -> str:
    if "virtio" in want:
        return ",".join(f"{k}={v}" for k, v in want.items())
    rest = {k: v for k, v in want.items() if k != "model"}
    return ",".join(["virtio"] + [f"{k}={v}" for k, v in rest.items()])


def _remember_mac(ctx: StepContext, mac: str | None) -> None:
    service_changes.remember_mac(ctx.service, mac)
