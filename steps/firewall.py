"""VMSetFirewall: options and policies, and the anti-spoofing IPSet holding the VM's own IPs."""

from __future__ import annotations

from steps.context import StepContext
from steps.machine import Done, StepResult

IPSET = "ipfilter-net0"  # the name PVE's ipfilter option looks for on net0


def set_firewall(ctx: StepContext) -> StepResult:
    """A DHCP package's firewall is not ours to manage (the manual): nothing is set, only our
    anti-spoofing IPSet from an earlier static package is taken away."""
    p = ctx.product
    if p.dhcp:
        return _leave_to_dhcp(ctx)
    base = f"{ctx.vm_path}/firewall"
    v4, v6 = ctx.ips()
    mine = set(v4 + v6)
    want = {"enable": int(bool(p.firewall_enabled)), "policy_in": p.firewall_policy_in,
            "policy_out": p.firewall_policy_out, "ipfilter": int(bool(mine)), "macfilter": 1}
    have = ctx.pve.get(f"{base}/options")
    change = {k: v for k, v in want.items() if str(have.get(k, "")) != str(v)}
    changed = []
    if change:
        ctx.pve.put(f"{base}/options", **change)
        changed.append("options")
    if {s.get("name") for s in ctx.pve.get(f"{base}/ipset")} >= {IPSET}:
        entries = {e["cidr"].split("/")[0] for e in ctx.pve.get(f"{base}/ipset/{IPSET}")}
    else:
        ctx.pve.post(f"{base}/ipset", name=IPSET, comment="pvekvm anti-spoofing")
        entries = set()
    for ip in sorted(mine - entries):
        ctx.pve.post(f"{base}/ipset/{IPSET}", cidr=ip)
    for ip in sorted(entries - mine):
        ctx.pve.delete(f"{base}/ipset/{IPSET}/{ip}")
    if mine != entries:
        changed.append(f"ipset {sorted(mine)}")
    if not changed:
        return Done("no change", skipped=True)
    return Done(", ".join(changed))


def _leave_to_dhcp(ctx: StepContext) -> StepResult:
    base = f"{ctx.vm_path}/firewall"
    if IPSET not in {s.get("name") for s in ctx.pve.get(f"{base}/ipset")}:
        return Done("DHCP package: firewall not managed", skipped=True)
    ctx.pve.put(f"{base}/options", ipfilter=0)
    ctx.pve.delete(f"{base}/ipset/{IPSET}", force=1)
    return Done(f"DHCP package: anti-spoofing IPSet {IPSET} removed")
