"""The pika consumer: pools' queues consumed, each delivery handed to :class:`Runner` (intake or
the engine, publishing confirmed, chaining), then acked or given back as it answers. One thread =
one connection, one channel, one database connection; ``concurrency`` threads per process;
prefetch 2 per thread. What happens to a message is the runner's (workers/runner.py); only the
broker's side is here: consuming, acking, rejecting, reconnecting."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pika.spec import Basic

from pvekvm import messaging, metrics
from pvekvm.config import Settings
from pvekvm.models import database
from workers.engine import Engine
from workers.runner import INTAKE, Message, Runner

log = logging.getLogger("pvekvm.worker")
PREFETCH_PER_THREAD = 2


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
            runner = Runner(self.engine, publisher, self.pools, wait=conn.sleep,
                            stopping=self.stop_event.is_set, broker_errors=(AMQPError,),
                            name=self.name)
            for pool in self.pools:
                # billing's events one at a time: a message given back cannot be overtaken
                ch.basic_qos(prefetch_count=1 if pool == INTAKE else PREFETCH_PER_THREAD)
                queue = self.topo.orders_queue if pool == INTAKE else self.topo.step_queue(pool)
                ch.basic_consume(queue, self._callback(pool, runner))
            while not self.stop_event.is_set():
                conn.process_data_events(time_limit=0.5)
        finally:
            if conn.is_open:
                conn.close()

    def _callback(self, pool: str, runner: Runner) -> Callable[..., None]:
        def on_message(ch: BlockingChannel, method: Basic.Deliver,
                       props: pika.BasicProperties, body: bytes) -> None:
            if self.observer is None:
                return deliver(ch, method, props, body)
            self.observer.message_started(pool)
            t0 = time.perf_counter()
            try:
                return deliver(ch, method, props, body)
            finally:
                self.observer.message_done(pool, time.perf_counter() - t0)

        def deliver(ch: BlockingChannel, method: Basic.Deliver, props: pika.BasicProperties,
                    body: bytes) -> None:
            tag = method.delivery_tag
            assert tag is not None
            if self.stop_event.is_set():  # finishing up: leave it for another worker
                ch.basic_nack(tag, requeue=True)
                return
            lag = messaging.message_lag_s(props)
            if lag is not None:
                metrics.LAG_SECONDS.labels(pool).observe(lag)
            handled = runner.handle(Message(pool, body, deliveries=delivery_count(props)))
            if handled.ack:
                ch.basic_ack(tag)
                self.handled += 1
                return
            # back to the queue, counted against its delivery limit (``basic.reject``:
            # RabbitMQ 4.3 counts a reject, not a nack)
            ch.basic_reject(tag, requeue=True)
            ch.connection.sleep(0.2)  # a hot loop on a broken message helps no one

        return on_message


def delivery_count(props: pika.BasicProperties) -> int:
    """How many times the broker has had this message back (quorum queues: returns, rejects
    and closed channels — a worker killed mid-message — all count; RabbitMQ 3.10 sets the
    header from the first delivery on)."""
    count = (props.headers or {}).get("x-delivery-count")  # pika's own int subclass, 'long'
    return int(count) if isinstance(count, int) and not isinstance(count, bool) else 0


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
