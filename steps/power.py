"""Power steps: start, stop (graceful with a forced fallback), verify running."""

from __future__ import annotations

from steps.context import StepContext
from steps.machine import Done, Retry, StepResult, Wait


def _status(ctx: StepContext) -> str:
    return ctx.pve.get(f"{ctx.vm_path}/status/current").get("status", "unknown")


def held_stopped(ctx: StepContext) -> bool:
    """A suspended service's VM stays stopped whatever the operation (only unsuspend starts
    it)."""
    return bool(ctx.service.suspended) and ctx.operation.kind != "unsuspend"


def start_vm(ctx: StepContext) -> StepResult:
    if held_stopped(ctx):
        return Done("service suspended: the VM stays stopped", skipped=True)
    if _status(ctx) == "running":
        return Done("running", skipped=not ctx.after_task)
    return Wait(ctx.pve.post(f"{ctx.vm_path}/status/start"), ctx.service.node)


def stop_vm(ctx: StepContext) -> StepResult:
    if ctx.service.vmid is None or ctx.pve.locate(ctx.vmid) is None:
        return Done("no VM", skipped=True)
    if _status(ctx) == "stopped":
        return Done("stopped", skipped=not ctx.after_task)
    upid = ctx.pve.post(f"{ctx.vm_path}/status/shutdown", forceStop=1, timeout=60)
    return Wait(upid, ctx.service.node)


def verify_running(ctx: StepContext) -> StepResult:
    if held_stopped(ctx):
        return Done("service suspended: the VM stays stopped", skipped=True)
    status = _status(ctx)
    if status != "running":
        return Retry(f"VM failed to start (status: {status})")
    return Done("running")
