"""IP addresses and VMIDs, allocated under unique indexes: two orders never share one."""

from __future__ import annotations

from datetime import datetime

from peewee import IntegrityError, fn

from pvekvm.models import IpAddress, Service, VmidAllocation, database
from pvekvm.proxmox import ProxmoxError
from steps.context import StepContext
from steps.machine import Done, StepFailed, StepResult

_TAKE_FREE_IP = (
    "UPDATE ip_addresses SET service_id = %s, released_at = NULL, ptr = NULL "
    "WHERE pool_id = %s AND service_id IS NULL ORDER BY id LIMIT 1")


def allocate_ips(ctx: StepContext) -> StepResult:
    """VMSetDedicatedIp: one IPv4 (and an IPv6 when ordered and the package has a v6 pool). A
    DHCP package allocates none, and a service moving to one gives its addresses back."""
    if ctx.product.dhcp:
        released = release_ips(ctx.service.id)
        ctx.addresses_changed()
        return Done(f"DHCP package: {released} address(es) released" if released
                    else "DHCP package: no address to allocate", skipped=not released)
    wanted = [(4, ctx.product.ip_pool_id)]
    if ctx.service.want_ipv6:
        wanted.append((6, ctx.product.ip6_pool_id))
    got: list[str] = []
    changed = False
    for version, pool_id in wanted:
        if pool_id is None:
            continue
        held = ctx.address(version)
        if held is None or held.pool_id != pool_id:
            changed = True
            if held is not None:  # package moved to another pool: give the old one back
                release_ips(ctx.service.id, version)
            cursor = database.execute_sql(_TAKE_FREE_IP, (ctx.service.id, pool_id))
            ctx.addresses_changed()
            if cursor.rowcount != 1:
                raise StepFailed(f"IPv{version} pool {pool_id} has no free address")
            held = ctx.address(version)
            if held is None:
                raise StepFailed(f"IPv{version} address taken but not found")
        got.append(held.address)
    if not got:
        return Done("DHCP package: no address to allocate", skipped=True)
    return Done(", ".join(got), skipped=not changed)


def release_ips(service_id: int, version: int | None = None) -> int:
    """Give a service's addresses back to the free pool (terminate, pool change)."""
    cond = IpAddress.service_id == service_id
    if version is not None:
        cond &= IpAddress.version == version
    return IpAddress.update(service_id=None, released_at=fn.NOW(3), ptr=None).where(cond).execute()


def reserve_vmid(ctx: StepContext) -> StepResult:
    """A VMID never given out before (``vmid_allocations`` keeps every VMID ever handed out, so
    a terminated service's VMID is not reused) and free in Proxmox (``nextid?vmid=``). Two
    workers racing for the same number: the primary key lets one win, the other takes the
    next."""
    if ctx.service.vmid is not None:
        return Done(f"VMID {ctx.service.vmid} already reserved", skipped=True)
    eng = ctx.settings.engine
    top = (VmidAllocation.select(fn.MAX(VmidAllocation.vmid))
           .where(VmidAllocation.vmid.between(eng.vmid_min, eng.vmid_max)).scalar())
    candidate = max(eng.vmid_min, (top or 0) + 1)
    for _ in range(200):
        if candidate > eng.vmid_max:
            raise StepFailed("VMID range exhausted")
        if _free_in_proxmox(ctx, candidate):
            try:
                with database.atomic():
                    VmidAllocation.insert(vmid=candidate, service_id=ctx.service.id,
                                          allocated_at=datetime.now()).execute()
                    Service.update(vmid=candidate).where(
                        (Service.id == ctx.service.id) & Service.vmid.is_null()).execute()
            except IntegrityError:
                candidate += 1
                continue
            ctx.service.vmid = candidate
            return Done(f"VMID {candidate}")
        candidate += 1
    raise StepFailed("no free VMID found after 200 candidates")


def _free_in_proxmox(ctx: StepContext, vmid: int) -> bool:
    try:
        ctx.pve.get("cluster/nextid", vmid=vmid)
    except ProxmoxError as exc:
        if exc.status == 400:  # "VM <id> already exists"
            return False
        raise
    return True
