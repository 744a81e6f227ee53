"""Helpers shared by the scale scenarios: billing's durable event queue, ordering, and reading
the broker's queues back."""

from __future__ import annotations

import json

from pika.exceptions import AMQPError

from pvekvm import messaging
from pvekvm.config import Settings
from workers.testing.harness import wait_until


class DurableBilling:
    """The queue billing would bind on a cluster: durable, quorum (it survives a node), every
    event type. Read back with basic_get, reconnecting to whichever node answers."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.amqp_url
        self.topo = messaging.Topology(settings.namespace)
        self.queue = f"{settings.namespace}.billing"
        self.received: list[dict] = []
        conn = messaging.connect(self.url)
        try:
            ch = conn.channel()
            ch.exchange_declare(self.topo.events_exchange, "topic", durable=True)
            ch.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
            ch.queue_bind(self.queue, self.topo.events_exchange, routing_key="#")
        finally:
            conn.close()

    def drain(self) -> list[dict]:
        try:
            conn = messaging.connect(self.url)
        except AMQPError:
            return self.received
        try:
            ch = conn.channel()
            while True:
                method, props, body = ch.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return self.received
                event = json.loads(body)
                assert props.message_id == event["event_id"]
                self.received.append(event)
        except AMQPError:
            return self.received
        finally:
            if conn.is_open:
                conn.close()

    def heard_all(self, recorded: int, timeout: float = 60) -> list[dict]:
        """Wait until at least ``recorded`` distinct events were heard."""
        wait_until(lambda: len({e["event_id"] for e in self.drain()}) >= recorded, timeout,
                   f"{recorded} events on billing's queue", interval=0.5, db=False)
        return self.received

    def delete(self) -> None:
        conn = messaging.connect(self.url)
        try:
            conn.channel().queue_delete(self.queue)
        finally:
            conn.close()


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages in each queue of the namespace (a passive declare answers the depth)."""
    topo = messaging.Topology(settings.namespace)
    conn = messaging.connect(settings.amqp_url)
    try:
        ch = conn.channel()
        return {q: ch.queue_declare(q, passive=True).method.message_count
                for q in topo.all_queues()}
    finally:
        conn.close()


def work_queues_empty(settings: Settings) -> bool:
    """Orders, steps and waits all empty (the dead queue keeps what was refused)."""
    dead = messaging.Topology(settings.namespace).dead_queue
    return not any(n for q, n in queue_depths(settings).items() if q != dead)


def assert_dead_queue_recorded(settings: Settings) -> int:
    """Every message in the dead queue is a refusal recorded with its reason (none parked there
    by the delivery limit unexplained). Returns the depth."""
    from pvekvm.models import DeadLetter

    depth = queue_depths(settings)[messaging.Topology(settings.namespace).dead_queue]
    assert depth == DeadLetter.select().count(), \
        f"{depth} dead messages, {DeadLetter.select().count()} recorded refusals"
    return depth
