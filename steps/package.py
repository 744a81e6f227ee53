"""Change package: the first step moves the service to the new package and brings its
addresses, DNS and cloud-init network in line; the rest reuses the deploy steps."""

from __future__ import annotations

from pvekvm import placement, service_changes
from steps import allocation, cloudinit, local_snapshots
from steps import dns as dns_steps
from steps.context import StepContext
from steps.machine import Done, Refused, StepResult


def update_ip_dns_firewall(ctx: StepContext) -> StepResult:
    """Upgrading takes the package's further extra IPv4 (and their ``ipconfigN``), a downgrade
    releases the surplus (their ``ipconfigN`` deleted here; their NICs and IPSet entries go in
    the network and firewall steps that follow). A new node PVE cannot take the VM to (its
    local disks' snapshots: steps/local_snapshots.py) is refused here, before anything changes."""
    if ctx.service.vmid is not None and not ctx.after_task:
        node = placement.deploy_node(ctx)
        found = ctx.pve.find_vm(ctx.vmid, ctx.service.node)
        blocked = local_snapshots.blocker(ctx, found[0], running=False) \
            if found is not None and found[0] != node else None
        if blocked:
            raise Refused(f"the package's node is {node}: {blocked}")
    before = sorted(ctx.firewall_cidrs())
    service_changes.change_package(ctx.service, ctx.product.id)
    allocation.allocate_ips(ctx)
    after = sorted(ctx.firewall_cidrs())
    dns_result = dns_steps.set_dns_records(ctx)
    notes = [dns_result.message if isinstance(dns_result, Done) else ""]
    network, stale = cloudinit.network_settings(ctx)
    have = ctx.config()
    if after != before or stale or any(str(have.get(k)) != v for k, v in network.items()):
        ctx.pve.put(f"{ctx.vm_path}/config", **network,
                    **({"delete": ",".join(stale)} if stale else {}))
        ctx.pve.put(f"{ctx.vm_path}/cloudinit")
        notes.insert(0, f"addresses {before} -> {after}" if after != before
                     else "cloud-init network updated")
    return Done("; ".join(n for n in notes if n))
