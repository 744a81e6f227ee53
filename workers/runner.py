"""One runner under every consumer: what happens to a delivered message, whichever broker
delivered it. The pika consumer (:mod:`workers.consumer`) and the stub broker of the tests
(:mod:`workers.testing`) both hand each delivery to :meth:`Runner.handle` and do only what it
answers (ack, or give back), as dramatiq's Worker runs unchanged on its StubBroker.

Ordering that makes a crash at any line harmless: the database commit happens inside the
handler, the confirmed publish after it, the ack (by the caller) last. The next step of the same
operation, due now in a pool this runner serves, runs here after the commit (a chain, up to
``CHAIN_STEPS``); a crash mid-chain leaves a committed, unpublished nudge, which the redelivered
message or the reconciler sends. While the database is unreachable the message is held (not
given back, so no delivery counts against its limit) for up to ``DB_OUTAGE_PATIENCE_S``."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from peewee import InterfaceError, OperationalError

from pvekvm import dberrors, messaging, metrics
from pvekvm.config import EngineSettings
from pvekvm.models import database
from pvekvm.redact import safe_reason
from workers import operations, refusals
from workers.engine import Engine
from workers.intake import handle_order
from workers.outcome import Nudge, Outcome
from workers.refusals import INTAKE as INTAKE  # re-exported: the consumer's and tests'
from workers.refusals import MAX_KEPT_BYTES as MAX_KEPT_BYTES

log = logging.getLogger("pvekvm.worker")
oplog = logging.getLogger("pvekvm.steps")
DB_OUTAGE_PATIENCE_S = 300.0  # how long a message is held while the database is down
SPENT_REASON = (f"given back {messaging.DELIVERY_LIMIT} times without a decision (handling "
                "failed each time, or killed its worker: see the worker log); parked on its "
                "last delivery, unhandled")
WITHHELD = b"[body withheld]"
# Steps of one operation run in a row after the message in hand (the message is acked after
# the last): a continuation skips the broker.
CHAIN_STEPS = 32


@dataclass(frozen=True)
class Message:
    """One delivery: the queue it came from (``INTAKE`` or a step pool), its body, and how many
    times the broker has had it back. A stub broker may hand a step message over as the
    :class:`Nudge` that was published (``nudge``): it is run as it is, never re-read."""

    pool: str
    body: bytes = b""
    nudge: Nudge | None = None
    deliveries: int = 0

    def raw(self) -> bytes:
        """The body as the broker would carry it (for parking a refused message)."""
        if self.nudge is not None and not self.body:
            return json.dumps(self.nudge.payload(), separators=(",", ":")).encode()
        return self.body


@dataclass
class Handled:
    """What the broker must do with the message: ``ack`` it, or give it back (counted against
    its delivery limit); ``outcomes``: the message's own, then each chained step's."""

    ack: bool
    outcomes: list[Outcome] = field(default_factory=list)
    result: str = "requeued"  # ok | noop | refused | requeued | withheld (the metric's label)


class Runner:
    """Handles deliveries from the queues of ``pools`` (the ones it may chain into), publishing
    to ``sink``. ``wait(seconds)`` holds a message while the database is down (the pika
    consumer keeps its connection serviced meanwhile); ``stopping()`` ends chains early;
    ``broker_errors`` are the broker's own failures, which go up to the consumer (reconnect)."""

    def __init__(self, engine: Engine, sink: messaging.Sink, pools: Collection[str] = (),
                 *, wait: Callable[[float], None] = time.sleep,
                 stopping: Callable[[], bool] = lambda: False,
                 broker_errors: tuple[type[Exception], ...] = (), name: str = "runner") -> None:
        self.engine = engine
        self.sink = sink
        self.pools = pools
        self.wait = wait
        self.stopping = stopping
        self.broker_errors = broker_errors
        self.name = name

    def handle(self, message: Message) -> Handled:
        spent = message.deliveries >= messaging.DELIVERY_LIMIT
        backoff = 0.5
        deadline = time.monotonic() + DB_OUTAGE_PATIENCE_S
        while True:
            try:
                database.connect(reuse_if_open=True)
                outcome = self.decide(message, spent)
                outcomes = self.follow_up(outcome, message)
                break
            except self.broker_errors:
                raise
            except (OperationalError, InterfaceError) as exc:
                if not dberrors.unreachable(exc) or time.monotonic() > deadline:
                    return self._give_back(message, spent)
                log.warning("%s: database unreachable (%s); waiting %.1fs", self.name, exc,
                            backoff)
                database.close()
                self.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # noqa: BLE001 - any bug: the message goes back (logged), counted
                return self._give_back(message, spent)
        result = _result(outcomes[0])
        metrics.MESSAGES.labels(message.pool, result).inc()
        return Handled(True, outcomes, result)

    def decide(self, message: Message, spent: bool = False) -> Outcome:
        """The handler's commit for ``message``, nothing published yet (a crash right after
        this is what a stub broker's ``publish=False`` plays)."""
        if spent:  # the broker's last delivery: park it, redacted, unhandled
            return Outcome(dead_reason=SPENT_REASON)
        if message.pool == INTAKE:
            return decide_order(message.body, self.engine.settings.engine, self.broker_errors,
                                self.engine.settings.cluster_names)
        if message.nudge is not None:
            return self.engine.handle_nudge(message.nudge)
        return self.engine.handle(message.pool, message.body)

    def follow_up(self, outcome: Outcome, message: Message) -> list[Outcome]:
        """Print, park and publish what ``outcome`` owes; the next step of the same operation,
        when this runner serves its pool and it is due now, runs here at once (up to
        ``CHAIN_STEPS`` in a row) instead of a round trip through the broker."""
        done = [outcome]
        refused = [(message.raw(), outcome.dead_reason)] if outcome.dead_reason else []
        for step in range(CHAIN_STEPS + 1):
            for line in outcome.log:
                oplog.info("%s", line)
            for body, reason in refused + outcome.parked:
                park(self.sink, message.pool, body, reason)
            for refusal in outcome.refusals:  # recorded in the commit itself
                log.error("refused message from %s: %s", refusal.source, refusal.reason)
                refusals.send(refusal, self.sink)
            refused = []
            nxt = self._continuation(outcome, last=step == CHAIN_STEPS)
            operations.deliver(outcome, self.sink)
            if nxt is None:
                return done
            try:
                outcome = self.engine.handle_nudge(nxt, outcome.row)
            except Exception:  # its state is committed, its nudge unpublished
                log.exception("%s: step of operation %s failed in a chain; it goes through "
                              "the broker", self.name, nxt.operation_id)
                operations.deliver(Outcome(publish=[nxt]), self.sink)
                return done
            done.append(outcome)
            metrics.MESSAGES.labels(nxt.pool, "chained").inc()
        return done

    def _continuation(self, outcome: Outcome, last: bool) -> Nudge | None:
        """The nudge of ``outcome`` this runner runs itself (taken out of its publish list):
        one due now, in a pool it serves, continuing an operation already in hand."""
        if last or self.stopping():
            return None
        for i, nudge in enumerate(outcome.publish):
            if nudge.delay_s == 0 and nudge.pool in self.pools and \
                    nudge.operation_id == outcome.in_hand:
                return outcome.publish.pop(i)
        return None

    def _give_back(self, message: Message, spent: bool) -> Handled:
        """An unexpected failure: the message goes back, counted against its delivery limit;
        its last delivery is parked by :meth:`handle`. When even parking it failed on that
        last delivery, the broker must not dead-letter the original: a placeholder takes its
        place in the dead queue, and the original is acked."""
        if spent:
            log.exception("%s: parking a spent message from %s failed; its body is withheld",
                          self.name, message.pool)
            self.sink.publish_dead(WITHHELD, SPENT_REASON + "; parking it failed, its body "
                                   "is withheld (see the worker log)", message.pool)
            metrics.DEAD_LETTERED.labels(message.pool).inc()
            return Handled(True, result="withheld")
        log.exception("%s: handling a message from %s failed; it goes back", self.name,
                      message.pool)
        metrics.MESSAGES.labels(message.pool, "requeued").inc()
        return Handled(False)


def decide_order(body: bytes, engine: EngineSettings,
                 broker_errors: tuple[type[Exception], ...] = (),
                 clusters: tuple[str, ...] = ()) -> Outcome:
    """``handle_order``, with any failure that is not the database's (or the broker's) a
    refusal: a body that trips a bug is parked once, redacted, with one ``event.refused``,
    rather than sent back to block intake (one active consumer) until its delivery limit. The
    reason and the log name the exception's type and where it was raised, never its text: that
    could quote the body, and a secret in it."""
    passed_up: tuple[type[Exception], ...] = (OperationalError, InterfaceError, *broker_errors)
    try:
        return handle_order(body, engine, clusters)
    except passed_up:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug on one event refuses that event only
        log.error("intake failed on an event (%s); it is refused. Traceback, without the "
                  "exception's text:\n%s", type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        return Outcome(dead_reason=f"intake failed on this event ({type(exc).__name__}): "
                                   "refused; the worker log has the traceback")


def park(sink: messaging.Sink, source: str, body: bytes, reason: str) -> None:
    """A refused message goes where operators look (:mod:`workers.refusals`), in a commit of
    its own, then to the dead queue."""
    log.error("refused message from %s: %s", source, safe_reason(reason))
    with database.atomic():
        refusal = refusals.record(source, body, reason)
    refusals.send(refusal, sink)


def _result(outcome: Outcome) -> str:
    if outcome.dead_reason:
        return "refused"
    return "ok" if outcome.log or outcome.publish else "noop"
