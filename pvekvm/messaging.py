"""RabbitMQ topology and confirmed publishing (pika).

Topology, all durable, declared by :func:`declare_topology` (idempotent):

- ``{ns}.orders``  topic exchange → quorum queue ``{ns}.orders`` (billing events → intake), with a
  single active consumer: events are taken one at a time in the order billing published them
- ``{ns}.steps``   direct exchange, routing key = pool → quorum queue ``{ns}.step.<pool>``
- ``{ns}.delay.<ms>ms`` fanout exchange → queue ``{ns}.wait.<ms>ms`` (classic on one broker,
  quorum on a cluster) whose message TTL dead-letters back to ``{ns}.steps`` with the original
  routing key: tiered delays for retries and Proxmox task polling, with no worker sleeping.
- ``{ns}.events``  topic exchange (routing key = event type): events for billing, which binds
  its own queues (workers/outbox.py).
- ``{ns}.dead``    fanout exchange → quorum queue ``{ns}.dead``: messages the engine refused
  (published with an ``x-reason`` header) or that exceeded the delivery limit.

Dead-letter strategy: quorum queues carry ``x-delivery-limit`` (a poison message that crashes
workers is parked after that many deliveries rather than looping, or being silently dropped as
RabbitMQ 4.x does after 20) and dead-letter ``at-least-once`` (needs ``x-overflow=reject-publish``)
so a dead letter is never lost in transit between queues.

Message properties, so an operator reading a queue in the RabbitMQ console knows what each
message is: ``app_id`` (the publishing program: ``pvekvm-producer``, ``pvekvm-worker``,
``pvekvm-scheduler``, ...), ``type`` (``order.<event type>``, ``step.<state>`` or
``dead-letter``), ``correlation_id`` (a step's operation id; an order's idempotency key, which
the operation row keeps; a dead letter's operation id when its body names one), ``timestamp``
(publish time, epoch seconds) and the headers ``x-published-ms`` / ``x-delay-ms`` from which a
consumer measures how long a message waited beyond its intended delay.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (
    AMQPChannelError,
    AMQPConnectionError,
    AMQPError,
    NackError,
    UnroutableError,
)
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from pvekvm import jsonsafe

log = logging.getLogger(__name__)

POOLS: tuple[str, ...] = (
    "ip", "dns", "clone", "migrate", "config", "disks", "network", "firewall", "cloudinit",
    "power", "snapshot", "backup", "iso", "mail",
)
DELAY_TIERS_MS: tuple[int, ...] = (250, 500, 1000, 2000, 5000, 15000, 60000)
DELIVERY_LIMIT = 10
_REPUBLISH = (AMQPConnectionError, AMQPChannelError, NackError)
PERSISTENT = 2


@dataclass(frozen=True)
class Topology:
    """Names of every exchange and queue for one namespace (tests use their own)."""

    namespace: str = "pvekvm"

    @property
    def orders_exchange(self) -> str:
        return f"{self.namespace}.orders"

    @property
    def orders_queue(self) -> str:
        return f"{self.namespace}.orders"

    @property
    def steps_exchange(self) -> str:
        return f"{self.namespace}.steps"

    def step_queue(self, pool: str) -> str:
        return f"{self.namespace}.step.{pool}"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.namespace}.dead"

    def delay_exchange(self, ms: int) -> str:
        return f"{self.namespace}.delay.{ms}ms"

    def wait_queue(self, ms: int) -> str:
        return f"{self.namespace}.wait.{ms}ms"

    def all_queues(self) -> list[str]:
        return [self.orders_queue, self.dead_queue, *map(self.step_queue, POOLS),
                *map(self.wait_queue, DELAY_TIERS_MS)]


def delay_tier(seconds: float) -> int:
    """The smallest delay tier (ms) that waits at least ``seconds``; the largest tier caps it."""
    want = int(seconds * 1000)
    return next((ms for ms in DELAY_TIERS_MS if ms >= want), DELAY_TIERS_MS[-1])


def declare_topology(channel: BlockingChannel, topo: Topology, replicated: bool = False) -> None:
    """Declare every exchange, queue and binding. Safe to call from every process at start.

    ``replicated`` (a cluster: several broker URLs) makes the wait queues quorum queues too, so
    delayed nudges (task polls, retries) survive the node that held them; on one broker they
    stay classic queues, as deployments created them."""
    work_args = {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": topo.dead_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    channel.exchange_declare(topo.dead_exchange, "fanout", durable=True)
    channel.queue_declare(topo.dead_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(topo.dead_queue, topo.dead_exchange)

    channel.exchange_declare(topo.orders_exchange, "topic", durable=True)
    # one consumer at a time takes billing's events, in the order they were published
    channel.queue_declare(topo.orders_queue, durable=True,
                          arguments={**work_args, "x-single-active-consumer": True})
    channel.queue_bind(topo.orders_queue, topo.orders_exchange, routing_key="#")

    channel.exchange_declare(topo.events_exchange, "topic", durable=True)

    channel.exchange_declare(topo.steps_exchange, "direct", durable=True)
    for pool in POOLS:
        channel.queue_declare(topo.step_queue(pool), durable=True, arguments=work_args)
        channel.queue_bind(topo.step_queue(pool), topo.steps_exchange, routing_key=pool)

    for ms in DELAY_TIERS_MS:
        channel.exchange_declare(topo.delay_exchange(ms), "fanout", durable=True)
        wait_args: dict[str, Any] = {"x-message-ttl": ms,
                                     "x-dead-letter-exchange": topo.steps_exchange}
        if replicated:
            # at-most-once dead-lettering: with at-least-once, RabbitMQ 3.10 stopped moving
            # expired messages on after the queue's leader node stopped (a lost move is
            # re-sent by the scheduler's reconciler)
            wait_args["x-queue-type"] = "quorum"
        channel.queue_declare(topo.wait_queue(ms), durable=True, arguments=wait_args)
        channel.queue_bind(topo.wait_queue(ms), topo.delay_exchange(ms))


def broker_urls(url: str) -> list[str]:
    """The broker URLs in a setting: one URL, or several separated by commas (the nodes of a
    cluster, tried in order)."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no broker URL given")
    return urls


def connect(url: str, heartbeat: int = 60) -> pika.BlockingConnection:
    """A blocking connection to the first broker that answers among ``url``'s comma-separated
    URLs (a cluster's nodes). A ``heartbeat=`` in a URL wins over ``heartbeat``: a short one
    lets the broker notice a worker cut off the network (and hand its unacked messages to
    others) sooner."""
    urls = broker_urls(url)
    several = len(urls) > 1
    params = []
    for u in urls:
        p = pika.URLParameters(u)
        if "heartbeat=" not in u:
            p.heartbeat = heartbeat
        p.blocked_connection_timeout = 30
        # one attempt per node when there are several: a stopped node refuses at once and the
        # next is tried; the list as a whole is what callers retry
        p.connection_attempts = 1 if several else 3
        p.retry_delay = 1
        params.append(p)
    return pika.BlockingConnection(params if several else params[0])


class StepMessage(Protocol):
    """What :meth:`Publisher.publish_nudge` needs of a step message (``workers.outcome.Nudge``:
    the core does not import the workers)."""

    @property
    def pool(self) -> str: ...
    @property
    def nudge_id(self) -> str: ...
    @property
    def delay_s(self) -> float: ...
    def payload(self) -> dict[str, object]: ...


class Sink(Protocol):
    """Where handling a message publishes what it owes after its commit: a :class:`Publisher`
    on the broker, or a stub broker in tests (``workers/testing.py``)."""

    def publish_nudge(self, nudge: StepMessage) -> None: ...
    def publish_event(self, event_type: str, body: bytes, event_id: str) -> None: ...
    def publish_dead(self, body: bytes, reason: str, source: str) -> None: ...


class Publisher:
    """Confirmed, persistent, mandatory publishing on one connection (not thread-safe: one per
    thread). Reconnects and re-publishes when the broker drops or a confirm is missing."""

    def __init__(self, url: str, topo: Topology, channel: BlockingChannel | None = None,
                 app_id: str = "pvekvm") -> None:
        self.url = url
        self.topo = topo
        self.app_id = app_id
        self._own = channel is None
        self._connection: pika.BlockingConnection | None = None
        self._channel = channel
        if channel is not None:
            channel.confirm_delivery()

    @property
    def channel(self) -> BlockingChannel:
        if self._channel is None or self._channel.is_closed:
            if not self._own:
                raise AMQPChannelError("borrowed channel is closed")
            self._connection = connect(self.url)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def close(self) -> None:
        if self._own and self._connection is not None and self._connection.is_open:
            with contextlib.suppress(AMQPError):  # the broker is gone: nothing left to close
                self._connection.close()
        self._connection = self._channel = None

    def _publish(self, exchange: str, routing_key: str, body: bytes,
                 props: pika.BasicProperties, mandatory: bool = True) -> None:
        """Confirmed publish; a lost connection/channel or a nack is tried 4 more times. The
        first try runs outside tenacity (its wrapper costs CPU on every publish)."""
        try:
            return self._publish_once(exchange, routing_key, body, props, mandatory)
        except _REPUBLISH:
            pass
        time.sleep(0.2)
        return self._publish_again(exchange, routing_key, body, props, mandatory)

    @retry(retry=retry_if_exception_type((AMQPConnectionError, AMQPChannelError, NackError)),
           stop=stop_after_attempt(4), wait=wait_exponential(multiplier=0.4, max=3), reraise=True)
    def _publish_again(self, exchange: str, routing_key: str, body: bytes,
                       props: pika.BasicProperties, mandatory: bool = True) -> None:
        return self._publish_once(exchange, routing_key, body, props, mandatory)

    def _publish_once(self, exchange: str, routing_key: str, body: bytes,
                      props: pika.BasicProperties, mandatory: bool = True) -> None:
        try:
            self.channel.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)
        except (AMQPConnectionError, AMQPChannelError):
            if self._own:
                self._channel = None
            raise

    def _props(self, content_type: str, kind: str, correlation_id: str | None,
               message_id: str | None = None, delay_ms: int = 0,
               headers: Mapping[str, Any] | None = None) -> pika.BasicProperties:
        now = time.time()
        return pika.BasicProperties(
            content_type=content_type, delivery_mode=PERSISTENT, app_id=self.app_id,
            type=kind, correlation_id=correlation_id, timestamp=int(now),
            message_id=message_id or str(uuid.uuid4()),
            headers={**(headers or {}), "x-published-ms": int(now * 1000),
                     "x-delay-ms": delay_ms})

    def publish_order(self, body: bytes, routing_key: str, message_id: str | None = None) -> None:
        """An order event; ``message_id`` (the idempotency key) is also its correlation id."""
        props = self._props("application/json", routing_key, message_id, message_id)
        self._publish(self.topo.orders_exchange, routing_key, body, props)

    def publish_step(self, pool: str, payload: Mapping[str, Any], message_id: str,
                     delay_s: float = 0.0) -> None:
        """Nudge pool ``pool``; with ``delay_s`` > 0 through the matching wait tier."""
        tier = delay_tier(delay_s) if delay_s > 0 else 0
        props = self._props("application/json", f"step.{payload.get('state', '')}",
                            str(payload.get("op", "")) or None, message_id, delay_ms=tier)
        body = json.dumps(payload, separators=(",", ":")).encode()
        exchange = self.topo.delay_exchange(tier) if tier else self.topo.steps_exchange
        self._publish(exchange, pool, body, props)

    def publish_nudge(self, nudge: StepMessage) -> None:
        """A step message (``workers.outcome.Nudge``): its payload to its pool, its nudge id as
        the message id, after its delay."""
        self.publish_step(nudge.pool, nudge.payload(), nudge.nudge_id, nudge.delay_s)

    def publish_event(self, event_type: str, body: bytes, event_id: str) -> None:
        """An event for billing on ``{ns}.events`` (routing key = type). Not mandatory: an
        exchange nobody has bound a queue to yet is not an error."""
        props = self._props("application/json", event_type, _operation_of(body, "operation_id"),
                            event_id)
        self._publish(self.topo.events_exchange, event_type, body, props, mandatory=False)

    def publish_dead(self, body: bytes, reason: str, source: str,
                     headers: Mapping[str, Any] | None = None) -> None:
        """Park a refused message with its reason where operators look."""
        props = self._props(
            "application/octet-stream", "dead-letter", _operation_of(body),
            headers={**(headers or {}), "x-reason": reason[:1000], "x-source": source})
        self._publish(self.topo.dead_exchange, source, body, props)


def _operation_of(body: bytes, key: str = "op") -> str | None:
    """The operation id a step message (or an event) names, if it does; None for anything
    else, whatever the bytes (bounded decode: no RecursionError, no 1 MB parse)."""
    try:
        op = jsonsafe.loads(body, max_bytes=jsonsafe.WIRE_MAX_BYTES).get(key)
    except (ValueError, AttributeError):
        return None
    return str(op) if isinstance(op, int) else None


def message_lag_s(props: pika.BasicProperties) -> float | None:
    """Seconds a delivered message waited beyond its intended delay (None: not stamped)."""
    headers = props.headers or {}
    published = headers.get("x-published-ms")
    if not isinstance(published, int):
        return None
    delay = headers.get("x-delay-ms")
    delay = delay if isinstance(delay, int) else 0
    return max(0.0, (time.time() * 1000 - published - delay) / 1000)


def declare(url: str, topo: Topology) -> None:
    """Open a short connection and declare the topology."""
    conn = connect(url)
    try:
        declare_topology(conn.channel(), topo, replicated=len(broker_urls(url)) > 1)
    finally:
        conn.close()


def declare_if_allowed(url: str, topo: Topology) -> bool:
    """Declare the topology, unless the user may not (billing's least-privilege user, see
    pvekvm.grants): then the engine, which declares it at start, is relied on. True when
    declared."""
    try:
        declare(url, topo)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 403:  # ACCESS_REFUSED
            raise
        return False


def purge(url: str, topo: Topology) -> None:
    """Empty every queue of the namespace (tests and demos)."""
    conn = connect(url)
    try:
        ch = conn.channel()
        for q in topo.all_queues():
            ch.queue_purge(q)
    finally:
        conn.close()


def delete_topology(url: str, topo: Topology) -> None:
    """Delete every queue and exchange of the namespace (test teardown)."""
    conn = connect(url)
    try:
        ch = conn.channel()
        for q in topo.all_queues():
            ch.queue_delete(q)
        for ex in (topo.orders_exchange, topo.steps_exchange, topo.dead_exchange,
                   topo.events_exchange,
                   *map(topo.delay_exchange, DELAY_TIERS_MS)):
            ch.exchange_delete(ex)
    finally:
        conn.close()


__all__ = ["POOLS", "Publisher", "Topology", "UnroutableError", "broker_urls", "connect",
           "declare", "declare_if_allowed", "declare_topology", "delay_tier", "delete_topology",
           "message_lag_s", "purge"]
