"""VMSetDNSRecords / VMDeleteDNSRecords. Non-blocking: a provider failure is recorded (the rows
stay unsynced for the retry job) and the operation goes on; the step line says so."""

from __future__ import annotations

from pvekvm import dns, dnssync
from steps.context import StepContext
from steps.machine import Done, StepFailed, StepResult


def set_dns_records(ctx: StepContext) -> StepResult:
    try:
        return Done(dnssync.publish(ctx.service, ctx.settings.secret_key_file))
    except dns.DnsError as exc:
        return Done(f"DNS deferred, will retry in background: {exc}", warning=True)
    except ValueError as exc:
        raise StepFailed(f"DNS: {exc}") from exc


def delete_dns_records(ctx: StepContext) -> StepResult:
    try:
        return Done(dnssync.withdraw(ctx.service, ctx.settings.secret_key_file))
    except dns.DnsError as exc:
        return Done(f"DNS delete deferred, will retry in background: {exc}", warning=True)
    except ValueError as exc:
        raise StepFailed(f"DNS: {exc}") from exc
