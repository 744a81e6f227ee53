"""A refused message, recorded where operators look: one ``dead_letters`` row and, for
billing's events, one ``event.refused`` to billing, written in the caller's transaction (a
create that refuses an event held for it deletes the held row and records the refusal in one
commit: a crash in between cannot lose either); the dead queue's copy and the event are sent
after the commit (:func:`send`). No secret is kept in clear and the body kept is bounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pvekvm import messaging, metrics
from pvekvm.models import DeadLetter
from pvekvm.redact import redact_body, safe_reason
from workers import outbox
from workers.outbox import Pending

INTAKE = "intake"
MAX_KEPT_BYTES = 256 * 1024  # of a refused body, in dead_letters and the dead queue


@dataclass(frozen=True)
class Refusal:
    """A refusal recorded in a commit, still to be sent: ``body`` is the redacted body kept."""

    source: str
    body: bytes
    reason: str
    told: list[Pending] = field(default_factory=list)


def record(source: str, body: bytes, reason: str) -> Refusal:
    """Write the refusal (the caller holds the transaction). A body past ``MAX_KEPT_BYTES`` is
    kept cut to that (then redacted: a value cut short is redacted to its end)."""
    if len(body) > MAX_KEPT_BYTES:
        reason = f"{reason} (body cut to its first {MAX_KEPT_BYTES} of {len(body)} bytes)"
        body = body[:MAX_KEPT_BYTES]
    reason = safe_reason(reason)
    kept = redact_body(body)
    DeadLetter.create(source=source, reason=reason, body=kept, created_at=datetime.now())
    told = [outbox.refused(kept, reason)] if source == INTAKE else []
    return Refusal(source, kept, reason, told)


def send(refusal: Refusal, sink: messaging.Sink) -> None:
    """After the commit: the dead queue's copy and billing's ``event.refused``."""
    sink.publish_dead(refusal.body, refusal.reason, refusal.source)
    metrics.DEAD_LETTERED.labels(refusal.source).inc()
    outbox.publish(refusal.told, sink)
