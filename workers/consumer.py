"""Generic worker plumbing: consume pools' queues, hand each message to intake or the engine,
publish what they ask (confirmed), then ack. One thread = one connection, one channel, one
database connection; ``concurrency`` threads per process; prefetch 2 per thread.

Ordering that makes a SIGKILL at any line harmless: the database commit happens inside the
handler, the confirmed publish after it, the ack last. A message is never acked before the
state it caused is committed and the nudge it owes is confirmed by the broker — or run: the
next step of the same operation, due now in a pool this thread serves, runs here after the
commit (a chain), and the message is acked after the chain's last step; a SIGKILL mid-chain
leaves a committed, unpublished nudge, which the redelivered message or the reconciler sends."""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import pika
from peewee import InterfaceError, OperationalError
from pika.exceptions import AMQPError

from pvekvm import dberrors, messaging, metrics
from pvekvm.config import EngineSettings, Settings
from pvekvm.models import DeadLetter, database
from pvekvm.redact import redact_body, safe_reason
from workers import operations, outbox
from workers.engine import Engine
from workers.intake import handle_order
from workers.outcome import Nudge, Outcome

log = logging.getLogger("pvekvm.worker")
oplog = logging.getLogger("pvekvm.steps")
INTAKE = "intake"
DB_OUTAGE_PATIENCE_S = 300.0  # how long a worker holds a message while the database is down
PREFETCH_PER_THREAD = 2
MAX_KEPT_BYTES = 256 * 1024  # of a refused body, in dead_letters and the dead queue
SPENT_REASON = (f"given back {messaging.DELIVERY_LIMIT} times without a decision (handling "
                "failed each time, or killed its worker: see the worker log); parked on its "
                "last delivery, unhandled")
WITHHELD = b"[body withheld]"
# Steps of one operation a thread runs in a row after the message in hand (the message is
# acked after the last): a continuation skips the broker; a crash mid-chain leaves the next
# nudge committed and unpublished, which the redelivered message or the reconciler sends.
CHAIN_STEPS = 32


class Observer(Protocol):
    """Hooks for measuring a worker (the deploy benchmark): around each delivery, and the
    engine's own figures for a step message."""

    def message_started(self, pool: str) -> None: ...

    def message_done(self, pool: str, seconds: float) -> None: ...

    def step_handled(self, pool: str, handle_s: float, pve_s: float) -> None: ...


def all_pools() -> list[str]:
    return [INTAKE, *messaging.POOLS]


class WorkerThread(threading.Thread):
    def __init__(self, settings: Settings, pools: list[str], stop: threading.Event,
                 index: int = 0, observer: Observer | None = None) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.settings = settings
        self.pools = pools
        self.stop_event = stop
        self.topo = messaging.Topology(settings.namespace)
        self.engine = Engine(settings, worker=f"{socket.gethostname()}/{self.name}",
                             observer=_observers(metrics.observe_handling,
                                                 observer.step_handled if observer else None))
        self.observer = observer
        self.handled = 0

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                self._serve()
                backoff = 0.5
            except AMQPError as exc:
                log.warning("%s: broker connection lost (%s); reconnecting", self.name, exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10)
        database.close()

    def _serve(self) -> None:
        conn = messaging.connect(self.settings.amqp_url)
        try:
            ch = conn.channel()
            publisher = messaging.Publisher(self.settings.amqp_url, self.topo, channel=ch,
                                            app_id="pvekvm-worker")
            for pool in self.pools:
                # billing's events one at a time: a message given back cannot be overtaken
                ch.basic_qos(prefetch_count=1 if pool == INTAKE else PREFETCH_PER_THREAD)
                queue = self.topo.orders_queue if pool == INTAKE else self.topo.step_queue(pool)
                ch.basic_consume(queue, self._callback(pool, publisher))
            while not self.stop_event.is_set():
                conn.process_data_events(time_limit=0.5)
        finally:
            if conn.is_open:
                conn.close()

    def _callback(self, pool: str, publisher: messaging.Publisher) -> Callable[..., None]:
        engine = self.settings.engine

        def on_message(ch, method, props: pika.BasicProperties, body: bytes) -> None:
            if self.observer is None:
                return deliver(ch, method, props, body)
            self.observer.message_started(pool)
            t0 = time.perf_counter()
            try:
                return deliver(ch, method, props, body)
            finally:
                self.observer.message_done(pool, time.perf_counter() - t0)

        def deliver(ch, method, props: pika.BasicProperties, body: bytes) -> None:
            if self.stop_event.is_set():  # finishing up: leave it for another worker
                ch.basic_nack(method.delivery_tag, requeue=True)
                return
            lag = messaging.message_lag_s(props)
            if lag is not None:
                metrics.LAG_SECONDS.labels(pool).observe(lag)
            spent = delivery_count(props) >= messaging.DELIVERY_LIMIT
            backoff = 0.5
            deadline = time.monotonic() + DB_OUTAGE_PATIENCE_S
            while True:
                try:
                    database.connect(reuse_if_open=True)
                    if spent:  # the broker's last delivery: park it here, redacted, unhandled
                        outcome = Outcome(dead_reason=SPENT_REASON)
                    elif pool == INTAKE:
                        outcome = _decide_order(body, engine, self.settings.cluster_names)
                    else:
                        outcome = self.engine.handle(pool, body)
                    self._follow_up(outcome, publisher, body, pool)
                    break
                except AMQPError:
                    raise
                except (OperationalError, InterfaceError) as exc:
                    if not dberrors.unreachable(exc) or time.monotonic() > deadline:
                        return self._give_back(ch, method, pool, publisher, spent)
                    # keep the message (no delivery counted against its limit) and wait for
                    # the database; the broker connection stays serviced meanwhile
                    log.warning("%s: database unreachable (%s); waiting %.1fs", self.name,
                                exc, backoff)
                    database.close()
                    ch.connection.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                except Exception:
                    return self._give_back(ch, method, pool, publisher, spent)
            ch.basic_ack(method.delivery_tag)
            self.handled += 1
            metrics.MESSAGES.labels(pool, _result(outcome)).inc()

        return on_message

    def _give_back(self, ch, method, pool: str, publisher: messaging.Publisher,
                   spent: bool) -> None:
        """An unexpected failure: the message goes back, counted against its delivery limit
        (``basic.reject``: RabbitMQ 4.3 counts a reject, not a nack); its last delivery is
        parked by ``deliver``. When even parking it failed on that last delivery, the broker
        must not dead-letter the original: a placeholder takes its place in the dead queue."""
        if spent:
            log.exception("%s: parking a spent message from %s failed; its body is withheld",
                          self.name, pool)
            publisher.publish_dead(WITHHELD, SPENT_REASON + "; parking it failed, its body "
                                   "is withheld (see the worker log)", pool)
            ch.basic_ack(method.delivery_tag)
            metrics.DEAD_LETTERED.labels(pool).inc()
            return
        log.exception("%s: handling a message from %s failed; it goes back", self.name, pool)
        metrics.MESSAGES.labels(pool, "requeued").inc()
        ch.basic_reject(method.delivery_tag, requeue=True)
        ch.connection.sleep(0.2)  # a hot loop on a broken message helps no one

    def _follow_up(self, outcome: Outcome, publisher: messaging.Publisher, body: bytes,
                   pool: str) -> None:
        """Print, park and publish what ``outcome`` owes; the next step of the same operation,
        when this thread serves its pool and it is due now, runs here at once (up to
        ``CHAIN_STEPS`` in a row) instead of a round trip through the broker."""
        refused = [(body, outcome.dead_reason)] if outcome.dead_reason else []
        for step in range(CHAIN_STEPS + 1):
            for line in outcome.log:
                oplog.info("%s", line)
            for message, reason in refused + outcome.parked:
                park(publisher, pool, message, reason)
            refused = []
            nxt = self._continuation(outcome, last=step == CHAIN_STEPS)
            operations.deliver(outcome, publisher)
            if nxt is None:
                return
            try:
                outcome = self.engine.handle_nudge(nxt, outcome.row)
            except Exception:
                # its state is committed and its nudge unpublished: send it the usual way
                log.exception("%s: step of operation %s failed in a chain; it goes through "
                              "the broker", self.name, nxt.operation_id)
                operations.deliver(Outcome(publish=[nxt]), publisher)
                return
            metrics.MESSAGES.labels(nxt.pool, "chained").inc()

    def _continuation(self, outcome: Outcome, last: bool) -> Nudge | None:
        """The nudge of ``outcome`` this thread runs itself (taken out of its publish list):
        one due now, in a pool of this thread, continuing an operation already in hand."""
        if last or self.stop_event.is_set():
            return None
        for i, nudge in enumerate(outcome.publish):
            if nudge.delay_s == 0 and nudge.pool in self.pools and \
                    nudge.operation_id == outcome.in_hand:
                return outcome.publish.pop(i)
        return None


def delivery_count(props: pika.BasicProperties) -> int:
    """How many times the broker has had this message back (quorum queues: returns, rejects
    and closed channels — a worker killed mid-message — all count; RabbitMQ 3.10 sets the
    header from the first delivery on)."""
    count = (props.headers or {}).get("x-delivery-count")  # pika's own int subclass, 'long'
    return int(count) if isinstance(count, int) and not isinstance(count, bool) else 0


def _decide_order(body: bytes, engine: EngineSettings,
                  clusters: tuple[str, ...] = ()) -> Outcome:
    """``handle_order``, with any failure that is not the database's a refusal: a body that
    trips a bug is parked once, redacted, with one ``event.refused``, rather than sent back
    to block intake (one active consumer) until its delivery limit. The reason and the log
    name the exception's type and where it was raised, never its text: that could quote the
    body, and a secret in it."""
    try:
        return handle_order(body, engine, clusters)
    except (OperationalError, InterfaceError, AMQPError):
        raise
    except Exception as exc:
        log.error("intake failed on an event (%s); it is refused. Traceback, without the "
                  "exception's text:\n%s", type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        return Outcome(dead_reason=f"intake failed on this event ({type(exc).__name__}): "
                                   "refused; the worker log has the traceback")


def park(publisher: messaging.Publisher, source: str, body: bytes, reason: str) -> None:
    """A refused message goes where operators look: ``dead_letters`` and the dead queue, with
    its reason; no secret is kept in clear, in the table or the queue. A body past
    ``MAX_KEPT_BYTES`` is kept cut to that (then redacted: a value cut short is redacted to
    its end), so parking is bounded whatever was sent."""
    if len(body) > MAX_KEPT_BYTES:
        reason = f"{reason} (body cut to its first {MAX_KEPT_BYTES} of {len(body)} bytes)"
        body = body[:MAX_KEPT_BYTES]
    reason = safe_reason(reason)
    log.error("refused message from %s: %s", source, reason)
    parked = redact_body(body)
    with database.atomic():
        DeadLetter.create(source=source, reason=reason, body=parked, created_at=datetime.now())
        told = [outbox.refused(parked, reason)] if source == INTAKE else []
    publisher.publish_dead(parked, reason, source)
    metrics.DEAD_LETTERED.labels(source).inc()
    outbox.publish(told, publisher)


def _result(outcome: Outcome) -> str:
    if outcome.dead_reason:
        return "refused"
    return "ok" if outcome.log or outcome.publish else "noop"


def _observers(*fns: Callable[[str, float, float], None] | None
               ) -> Callable[[str, float, float], None]:
    chosen = [f for f in fns if f is not None]

    def observe(pool: str, seconds: float, proxmox_seconds: float) -> None:
        for f in chosen:
            f(pool, seconds, proxmox_seconds)

    return observe


class WorkerProcess:
    """``concurrency`` worker threads over the step ``pools``, and one thread of its own for
    billing's events when ``pools`` names intake: intake has one active consumer (events in
    order), so an order must not wait in that consumer's thread behind step messages (under a
    burst, the last order's intake is then late by the whole burst's steps). SIGTERM finishes
    the messages in hand. ``/metrics`` listens on ``metrics_port`` (default:
    ``settings.metrics.port``; None = off)."""

    def __init__(self, settings: Settings, pools: list[str], concurrency: int,
                 observer: Observer | None = None, metrics_port: int | None = None) -> None:
        self.stop = threading.Event()
        port = metrics_port if metrics_port is not None else settings.metrics.port
        self.metrics = metrics.MetricsServer(port, settings.metrics.addr)
        messaging.declare(settings.amqp_url, messaging.Topology(settings.namespace))
        steps = [p for p in pools if p != INTAKE]
        self.threads = [WorkerThread(settings, steps, self.stop, i, observer)
                        for i in range(concurrency if steps else 0)]
        if INTAKE in pools:
            self.threads.append(WorkerThread(settings, [INTAKE], self.stop, len(self.threads),
                                             observer))

    def start(self) -> None:
        self.metrics.start()
        for t in self.threads:
            t.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.metrics.stop()
