"""hostname_change: the client renames its VM. The new name obeys the create's rules (one
live service per name, and a DNS name another service published is not taken); the DNS step
after this one moves A/AAAA and the PTRs that follow the host name (old records removed), then
cloud-init gets the name (the guest takes it at its next boot)."""

from __future__ import annotations

from peewee import IntegrityError

from pvekvm import service_changes
from pvekvm.db import values
from pvekvm.models import DnsRecordRow, database
from steps.context import StepContext
from steps.machine import Done, Refused, StepResult

_HOLDER = ("SELECT (SELECT id FROM services WHERE hostname = %s AND id <> %s "
           "AND status <> 'terminated' LIMIT 1)")


def hostname_problem(hostname: str, service_id: int) -> str | None:
    """Why ``service_id`` may not take ``hostname`` (None: it may). Names no other service."""
    (holder,) = values(_HOLDER, hostname, service_id) or (None,)
    if holder is not None:
        return f"hostname {hostname!r} is another live service's"
    published = DnsRecordRow.select().where(
        (DnsRecordRow.name == hostname) & (DnsRecordRow.service_id != service_id)
        & DnsRecordRow.held_by.is_null()).exists()
    if published:
        return f"hostname {hostname!r} is published in DNS for another service"
    return None


def rename(ctx: StepContext) -> StepResult:
    """The service takes the new name (services.live_hostname's unique key settles a race with
    another service's create or rename: the loser is refused)."""
    new, old = str(ctx.params["hostname"]), ctx.service.hostname
    if old == new:
        return Done(f"already {new}", skipped=True)
    problem = hostname_problem(new, ctx.service.id)
    if problem:
        raise Refused(problem)
    try:
        with database.atomic():
            service_changes.rename(ctx.service, new)
    except IntegrityError:
        raise Refused(f"hostname {new!r} is another live service's") from None
    return Done(f"{old} -> {new}")
