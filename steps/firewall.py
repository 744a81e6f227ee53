"""VMSetFirewall: options and policies, the anti-spoofing IPSets holding the VM's own
addresses and routed prefix, and the client's own rules after the engine's (firewall_rules_set).

Anti-spoofing is PVE's ``ipfilter`` option: pve-firewall drops a packet the VM sends from an
address its ``ipfilter-net<N>`` IPSet does not hold *before* the VM's rules are evaluated, so a
client rule (even ``out ACCEPT`` from 0.0.0.0/0) can never let the VM spoof. The client's rules
follow every other rule of the VM (``pos`` after them), carry ``pvekvm/clientfw.py``'s mark in
their comment and are replaced as one set; a rule without the mark is never touched."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pvekvm import clientfw
from pvekvm.addresses import MAX_EXTRA_IPV4
from pvekvm.models import ClientFirewallRules, Product
from steps.context import StepContext
from steps.machine import Done, Refused, StepResult

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
    rules = sync_client_rules(ctx, allowed_rules(p, saved_rules(ctx.service.id)))
    if rules:
        changed.append(rules)
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
    sync_client_rules(ctx, [])  # without anti-spoofing no client rule stays either
    return Done(f"DHCP package: anti-spoofing IPSet(s) {', '.join(sorted(ours))} removed")


# --------------------------------------------------------------------------- the client's rules

def rules_problem(product: Product, count: int) -> str | None:
    """Why the package does not take ``count`` client rules (None: it does)."""
    if product.dhcp or not product.firewall_enabled:
        return "the package's firewall is not managed (DHCP or firewall off): no client rules"
    if product.client_fw_rules <= 0:
        return "the package allows no client firewall rules"
    if count > product.client_fw_rules:
        return (f"too many firewall rules: {count} (the package allows "
                f"{product.client_fw_rules})")
    return None


def saved_rules(service_id: int) -> list[dict[str, Any]]:
    """The client's rules as the last firewall_rules_set saved them ([] when none)."""
    row = ClientFirewallRules.get_or_none(ClientFirewallRules.service_id == service_id)
    return json.loads(row.rules) if row is not None else []


def allowed_rules(product: Product, rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The saved rules the package lets stand: none when it allows none (or its firewall is
    not ours), else the first ``client_fw_rules`` (a smaller package keeps the first ones)."""
    if rules_problem(product, 0) is not None:
        return []
    return list(rules[:product.client_fw_rules])


def _listed(rule: dict[str, Any]) -> dict[str, str]:
    keys = ("type", "action", "enable", "comment", "proto", "dport", "sport", "source", "dest",
            "icmp-type")
    return {k: str(rule[k]) for k in keys if rule.get(k) not in (None, "")}


def sync_client_rules(ctx: StepContext, wanted: Sequence[dict[str, Any]]) -> str | None:
    """Make the VM's client rules exactly ``wanted``, in order, after every other rule; what
    changed (None: nothing). Deleted from the highest position down, so the positions of the
    rules still to delete hold; the engine's (unmarked) rules are left as they are."""
    base = f"{ctx.vm_path}/firewall/rules"
    have = sorted(ctx.pve.get(base), key=lambda r: int(r["pos"]))
    ours = [r for r in have if clientfw.is_client_rule(r)]
    want = [clientfw.pve_rule(r) for r in wanted]
    tail = have[len(have) - len(ours):] if ours else []
    if [_listed(r) for r in tail] == want and all(clientfw.is_client_rule(r) for r in tail):
        return None
    for rule in sorted(ours, key=lambda r: int(r["pos"]), reverse=True):
        ctx.pve.delete(f"{base}/{int(rule['pos'])}")
    first = len(have) - len(ours)
    for at, rule in enumerate(want):
        ctx.pve.post(base, pos=first + at, **rule)
    return f"{len(want)} client firewall rule(s)"


def set_client_rules(ctx: StepContext) -> StepResult:
    """firewall_rules_set: the client's new set is saved (replacing the old one) and applied
    as one unit; the package is asked again (it may have changed since intake)."""
    rules = ctx.params.get("rules", [])
    problem = rules_problem(ctx.product, len(rules))
    if problem and rules:
        raise Refused(problem)
    ClientFirewallRules.insert(service_id=ctx.service.id, rules=json.dumps(rules),
                               operation_id=ctx.operation.id, updated_at=datetime.now()
                               ).on_conflict(update={
                                   ClientFirewallRules.rules: json.dumps(rules),
                                   ClientFirewallRules.operation_id: ctx.operation.id,
                                   ClientFirewallRules.updated_at: datetime.now()}).execute()
    changed = sync_client_rules(ctx, allowed_rules(ctx.product, rules))
    if changed is None:
        return Done(f"{len(rules)} client firewall rule(s) already in place", skipped=True)
    return Done(changed)
