"""Power steps: start, stop (graceful with a forced fallback), verify running."""

from __future__ import annotations

from steps.context import StepContext
from steps.machine import Done, Retry, StepResult, Wait


def _status(ctx: StepContext) -> str:
    return ctx.pve.get(f"{ctx.vm_path}/status/current").get("status", "unknown")


def start_vm(ctx: StepContext) -> StepResult:
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
    status = _status(ctx)
    if status != "running":
        return Retry(f"VM failed to start (status: {status})", delay_s=5.0)
    return Done("running")
