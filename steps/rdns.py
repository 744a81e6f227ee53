"""Client reverse DNS: the PTR of one of the service's own addresses names the client's host
(``rdns_set``) or the service's host name again (``rdns_reset``). The name is kept on the address
row (``ip_addresses.ptr``) so every later DNS publish (package change, retry job) keeps it, and
releasing the address forgets it; the records go out through the same path as deploy's
(:func:`pvekvm.dnssync.publish`), so terminate's withdraw removes them. Before the name is kept,
the product's ``rdns_policy`` is checked once more, DNS included (:mod:`pvekvm.rdns_policy`):
an order billing published over AMQP was checked by intake only as far as the database goes.
With no reverse zone for the address (no DNS configured at all, say) the name is still kept and
the step is ``skipped`` with that reason: billing hears ``result: skipped``, never a PTR that
does not exist."""

from __future__ import annotations

from pvekvm import dnssync, rdns_policy
from pvekvm.addresses import held_row
from pvekvm.models import IpAddress, Product
from steps.context import StepContext
from steps.dns import set_dns_records
from steps.machine import Done, Refused, StepResult


def _held(ctx: StepContext) -> IpAddress:
    address = ctx.params["address"]
    row = held_row(ctx.service.id, address)
    if row is None:  # released between intake and now (a package change, an operator)
        raise Refused(f"address {address} is not held by service {ctx.service.id}")
    return row


def set_client_ptr(ctx: StepContext) -> StepResult:
    row = _held(ctx)
    product = Product.get_by_id(ctx.service.product_id)  # fresh: the policy may just have changed
    why = rdns_policy.problem(ctx.service, ctx.params["address"], ctx.params["hostname"],
                              product.rdns_policy, ctx.settings.rdns)
    if why:
        raise Refused(why)
    IpAddress.update(ptr=ctx.params["hostname"]).where(IpAddress.id == row.id).execute()
    return _published(ctx)


def reset_client_ptr(ctx: StepContext) -> StepResult:
    row = _held(ctx)
    IpAddress.update(ptr=None).where(IpAddress.id == row.id).execute()
    return _published(ctx)


def _published(ctx: StepContext) -> StepResult:
    """The service's records published; skipped, with the reason, when the address has no PTR
    to publish."""
    result = set_dns_records(ctx)
    why = dnssync.no_ptr_reason(ctx.service.id, ctx.params["address"])
    return Done(why, skipped=True) if why and isinstance(result, Done) else result
