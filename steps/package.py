"""Change package: the first step moves the service to the new package and brings its
addresses, DNS and cloud-init network in line; the rest reuses the deploy steps."""

from __future__ import annotations

from pvekvm.models import Service
from steps import allocation, cloudinit
from steps import dns as dns_steps
from steps.context import StepContext
from steps.machine import Done, StepResult


def update_ip_dns_firewall(ctx: StepContext) -> StepResult:
    before = ctx.ips()
    if ctx.service.product_id != ctx.product.id:
        ctx.service.product_id = ctx.product.id
        Service.update(product_id=ctx.product.id).where(Service.id == ctx.service.id).execute()
    allocation.allocate_ips(ctx)
    after = ctx.ips()
    dns_result = dns_steps.set_dns_records(ctx)
    notes = [dns_result.message if isinstance(dns_result, Done) else ""]
    if after != before:
        ctx.pve.put(f"{ctx.vm_path}/config", ipconfig0=cloudinit.ipconfig(ctx))
        ctx.pve.put(f"{ctx.vm_path}/cloudinit")
        notes.insert(0, f"addresses {before} -> {after}")
    return Done("; ".join(n for n in notes if n))
