"""``python -m producers watch``: a billing-side example consumer of ``{ns}.events``. It binds
a durable queue of its own (``--queue``, default ``{ns}.billing``) to every event type (or the
``--types`` patterns), prints each event as one JSON line, skips an ``event_id`` it has already
printed (events are delivered at least once) and acks after printing."""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from producers.cli import broker_args
from producers.events import InvalidEvent
from pvekvm import jsonsafe, messaging
from pvekvm.config import ConfigError
from pvekvm.preflight import broker_verdict
from pvekvm.redact import safe_reason

SEEN_MAX = 100_000  # event ids remembered for de-duplication


def _event_of(body: bytes) -> dict[str, Any] | None:
    """The event ``body`` holds; None (and a line on stderr saying why) for anything else —
    bounded decode, so no body stops the watch."""
    try:
        event = jsonsafe.loads(body, max_bytes=jsonsafe.WIRE_MAX_BYTES)
    except ValueError as exc:
        print(f"skipped a message that is not an event: {safe_reason(str(exc))}",
              file=sys.stderr)
        return None
    if not isinstance(event, dict):
        print("skipped a message that is not an event: not a JSON object", file=sys.stderr)
        return None
    return event


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m producers watch", description=__doc__)
    ap.add_argument("--amqp-url", help="default: $AMQP_URL, else [amqp] url of the settings")
    ap.add_argument("--namespace", help="default: $PVEKVM_NAMESPACE, else [amqp] namespace of "
                    "the settings, else pvekvm")
    ap.add_argument("--config", help="settings file (default: $PVEKVM_CONFIG or "
                    "config/pvekvm.toml)")
    ap.add_argument("--queue", help="queue to bind (default: NAMESPACE.billing)")
    ap.add_argument("--types", nargs="*", default=["#"],
                    help="routing patterns, e.g. 'service.*' 'operation.failed'")
    ap.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
    args = ap.parse_args(argv)
    try:  # the same settings, read the same way, as every pvekvm program
        args.amqp_url, where, args.namespace = broker_args(args, needed=True)
    except (ConfigError, InvalidEvent) as exc:
        print(f"configuration error: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 2
    verdict, _ = broker_verdict(args.amqp_url, where)
    if verdict.failed:
        print(f"cannot watch: {verdict.detail}", file=sys.stderr)
        return 1
    topo = messaging.Topology(args.namespace)
    conn = messaging.connect(args.amqp_url)
    ch = conn.channel()
    ch.exchange_declare(topo.events_exchange, "topic", durable=True)
    queue = args.queue or f"{args.namespace}.billing"
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    for pattern in args.types:
        ch.queue_bind(queue, topo.events_exchange, routing_key=pattern)
    seen: OrderedDict[str, None] = OrderedDict()
    printed = 0
    try:
        for method, _props, body in ch.consume(queue, inactivity_timeout=1.0):
            if method is None:
                continue
            event = _event_of(body)
            if event is None:  # not an event of ours: said on stderr, acked, not printed
                ch.basic_ack(method.delivery_tag)
                continue
            event_id = str(event.get("event_id"))[:64]  # hashable whatever was sent
            if event_id not in seen:
                seen[event_id] = None
                if len(seen) > SEEN_MAX:
                    seen.popitem(last=False)
                print(json.dumps(event, sort_keys=True), flush=True)
                printed += 1
            ch.basic_ack(method.delivery_tag)
            if args.count and printed >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if conn.is_open:
            conn.close()
    return 0
