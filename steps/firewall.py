"""VMSetFirewall: options and policies, and the anti-spoofing IPSets holding the VM's own
addresses and routed prefix."""

from __future__ import annotations

import ipaddress

from pvekvm.addresses import MAX_EXTRA_IPV4
from steps.context import StepContext
from steps.machine import Done, StepResult

IPSET = "ipfilter-net0"  # the name PVE's ipfilter option looks for on net0


def ipset_name(nic: int) -> str:
    """PVE's ipfilter option looks for ``ipfilter-net<N>`` on NIC ``net<N>`` (an interface
    without one may send from no IP address but its link-local one)."""
    return f"ipfilter-net{nic}"


def set_firewall(ctx: StepContext) -> StepResult:
    """A DHCP package's firewall is not ours to manage (the manual): nothing is set, only our
    anti-spoofing IPSets from an earlier static package are taken away.

    Every NIC of the VM (net0, and netN of extra IPv4 N) gets an IPSet with *all* of the
    service's addresses and its routed prefix: the guest may send from any of its own addresses
    on any of its NICs (its default route is on net0), never from one it does not hold. The
    IPSet of an extra NIC a downgrade removed is deleted."""
    p = ctx.product
    if p.dhcp:
        return _leave_to_dhcp(ctx)
    base = f"{ctx.vm_path}/firewall"
    mine = ctx.firewall_cidrs()
    want = wanted_options(ctx)
    have = ctx.pve.get(f"{base}/options")
    change = {k: v for k, v in want.items() if str(have.get(k, "")) != str(v)}
    changed = []
    if change:
        ctx.pve.put(f"{base}/options", **change)
        changed.append("options")
    existing = {s.get("name") for s in ctx.pve.get(f"{base}/ipset")}
    nics = [0] + [row.slot for row in ctx.extra_ipv4()]
    for nic in nics:
        if _sync_ipset(ctx, base, ipset_name(nic), mine, ipset_name(nic) in existing):
            changed.append(f"{ipset_name(nic)} {sorted(mine)}")
    for nic in range(1, MAX_EXTRA_IPV4 + 1):
        if nic not in nics and ipset_name(nic) in existing:
            ctx.pve.delete(f"{base}/ipset/{ipset_name(nic)}", force=1)
            changed.append(f"{ipset_name(nic)} removed")
    if not changed:
        return Done("no change", skipped=True)
    return Done(", ".join(changed))


def wanted_options(ctx: StepContext) -> dict[str, object]:
    """The firewall options a static package gives the VM (drift compares with them too)."""
    p = ctx.product
    return {"enable": int(bool(p.firewall_enabled)), "policy_in": p.firewall_policy_in,
            "policy_out": p.firewall_policy_out, "ipfilter": int(bool(ctx.firewall_cidrs())),
            "macfilter": 1}


def norm(cidr: str) -> str:
    """An IPSet entry as one spelling (PVE may answer ``192.0.2.5/32`` for ``192.0.2.5``)."""
    return str(ipaddress.ip_network(cidr, strict=False))


def _sync_ipset(ctx: StepContext, base: str, name: str, mine: set[str], exists: bool) -> bool:
    """Make IPSet ``name`` hold exactly ``mine``; whether anything changed. A stale network
    entry (an old routed prefix: its '/' cannot be named in the entry's URL) is removed by
    building the set anew."""
    entries = {norm(e["cidr"]): e["cidr"] for e in ctx.pve.get(f"{base}/ipset/{name}")} \
        if exists else {}
    wanted = {norm(c): c for c in mine}
    stale = [cidr for key, cidr in entries.items() if key not in wanted]
    if exists and any("/" in c and not c.endswith(("/32", "/128")) for c in stale):
        ctx.pve.delete(f"{base}/ipset/{name}", force=1)
        exists, entries, stale = False, {}, []
    if not exists:
        ctx.pve.post(f"{base}/ipset", name=name, comment="pvekvm anti-spoofing")
    for key in sorted(set(wanted) - set(entries)):
        ctx.pve.post(f"{base}/ipset/{name}", cidr=wanted[key])
    for cidr in sorted(stale):
        ctx.pve.delete(f"{base}/ipset/{name}/{cidr.split('/')[0]}")
    return not exists or set(wanted) != set(entries)


def _leave_to_dhcp(ctx: StepContext) -> StepResult:
    base = f"{ctx.vm_path}/firewall"
    ours = [s.get("name") for s in ctx.pve.get(f"{base}/ipset")
            if s.get("name") in {ipset_name(n) for n in range(MAX_EXTRA_IPV4 + 1)}]
    if not ours:
        return Done("DHCP package: firewall not managed", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/firewall/options", ipfilter=0)
    for name in sorted(ours):
        ctx.pve.delete(f"{base}/ipset/{name}", force=1)
    return Done(f"DHCP package: anti-spoofing IPSet(s) {', '.join(sorted(ours))} removed")
