"""Throttling a VM over its traffic quota (pvekvm/overage.py has the rule): ``throttle`` sets
``net0``'s rate to the package's overage rate, ``unthrottle`` back to the package rate. Each
changes only ``rate=`` and keeps the rest of ``net0`` (model and MAC, bridge, VLAN tag,
firewall) as it is; running either twice changes nothing the second time.

The scheduler's overage pass decides which is due; the step checks again what may have changed
while the operation waited behind another (a package change), and refuses with the reason when
its decision no longer holds. The operation's completion records the state on the service
(``params["service"]``) and sends billing ``service.throttled`` / ``service.unthrottled``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pvekvm import overage
from steps import pvecfg
from steps.context import StepContext
from steps.machine import Done, Refused, StepFailed, StepResult


def rate_for(ctx: StepContext) -> overage.Rate:
    """The rate the configure steps (deploy, change package, reinstall, restore) give net0:
    the overage rate while the service is throttled for this month and its package (the new
    one during a package change) is over quota; else the package rate."""
    throttled = ctx.service.throttled_period
    at = overage.now_utc()
    used = overage.used_bytes(ctx.service.id, throttled) \
        if throttled is not None and throttled == overage.period_of(at) else 0
    return overage.net_rate(ctx.product, throttled, used, at)


def throttle(ctx: StepContext) -> StepResult:
    """net0 to the overage rate of the service's package, while it is over quota in the
    operation's period."""
    period = date.fromisoformat(ctx.params["period"])
    p = ctx.product
    used = overage.used_bytes(ctx.service.id, period)
    usage = overage.usage_text(used, overage.quota_bytes(p), period)
    if not overage.over_quota(p, used) or not p.overage_rate_mbps:
        raise Refused(f"not over quota (package {p.name}: {usage})")
    return _set_rate(ctx, Decimal(str(p.overage_rate_mbps)), f"over quota: {usage}")


def unthrottle(ctx: StepContext) -> StepResult:
    """net0 back to the package rate. When the throttle being lifted is for the operation's own
    period (a package change, not a new month), the package must not be over quota."""
    period = date.fromisoformat(ctx.params["period"])
    p = ctx.product
    if ctx.service.throttled_period == period:
        used = overage.used_bytes(ctx.service.id, period)
        if overage.over_quota(p, used) and p.overage_rate_mbps:
            raise Refused(f"still over quota (package {p.name}: "
                          f"{overage.usage_text(used, overage.quota_bytes(p), period)})")
    return _set_rate(ctx, Decimal(str(p.net_rate_mbps or 0)),
                     str(ctx.params.get("reason") or "package rate"))


def _shown(rate: str | None) -> str:
    return f"{rate} MB/s" if rate else "unlimited"


def _set_rate(ctx: StepContext, mbps: Decimal, why: str) -> StepResult:
    """net0, and the NIC of each extra IPv4 (net1..netN), at ``mbps`` (0 = unlimited)."""
    cfg = ctx.config()
    net0 = cfg.get("net0")
    if not net0:
        raise StepFailed(f"VM {ctx.vmid} has no net0")
    changes: dict[str, str] = {}
    for key in ["net0"] + [f"net{row.slot}" for row in ctx.extra_ipv4()]:
        if key not in cfg:
            continue
        props = pvecfg.parse(str(cfg[key]), "model")
        want = dict(props)
        if mbps > 0:
            want["rate"] = f"{float(mbps):g}"
        else:
            want.pop("rate", None)
        if want != props:
            changes[key] = pvecfg.render(want, "model")
    before = pvecfg.parse(net0, "model").get("rate")
    if not changes:
        return Done(f"net0 already at {_shown(before)}: {why}", skipped=True)
    ctx.pve.put(f"{ctx.vm_path}/config", **changes)
    after = f"{float(mbps):g}" if mbps > 0 else None
    nics = "" if list(changes) == ["net0"] else f" ({', '.join(changes)})"
    return Done(f"net0 rate {_shown(before)} -> {_shown(after)}{nics}: {why}")
