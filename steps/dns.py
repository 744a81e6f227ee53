"""VMSetDNSRecords / VMDeleteDNSRecords. Non-blocking: a provider failure is recorded (the rows
stay unsynced for the retry job) and the operation goes on; the step line says so."""

from __future__ import annotations

from collections.abc import Callable

from pvekvm import dns, dnssync
from pvekvm.models import Service
from steps.context import StepContext
from steps.machine import Done, StepFailed, StepResult


def _non_blocking(ctx: StepContext, change: Callable[[Service, str], tuple[str, bool]],
                  what: str) -> StepResult:
    try:
        summary, changed = change(ctx.service, ctx.settings.secret_key_file)
        return Done(summary, skipped=not changed)
    except dns.DnsError as exc:
        return Done(f"DNS {what} deferred, will retry in background: {exc}", warning=True)
    except ValueError as exc:  # a hostile name or zone never reaches a provider
        raise StepFailed(f"DNS: {exc}") from exc


def set_dns_records(ctx: StepContext) -> StepResult:
    return _non_blocking(ctx, dnssync.publish, "update")


def delete_dns_records(ctx: StepContext) -> StepResult:
    return _non_blocking(ctx, dnssync.withdraw, "delete")
