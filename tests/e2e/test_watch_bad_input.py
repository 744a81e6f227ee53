"""``python -m producers watch`` (billing's example consumer) under bodies that are not events
on the events exchange: each is skipped with a line on stderr saying why, acked, and the watch
goes on printing real events — no traceback, no RecursionError, no loop."""

from __future__ import annotations

import json
import subprocess
import sys

import pika

from pvekvm import messaging
from pvekvm.config import ROOT
from workers.testing.harness import queue_exists, wait_until

HOSTILE = [b"[" * 30000 + b"]" * 30000, b"[1, 2]", b"\xff\xfe\x00", b"not json",
           b" " * 70000, b'{"a":' * 5000 + b"1" + b"}" * 5000]


def test_the_watch_skips_what_is_not_an_event_and_goes_on(settings):
    topo = messaging.Topology(settings.namespace)
    queue = f"{settings.namespace}.watch-bad"
    watch = subprocess.Popen(
        [sys.executable, "-m", "producers", "watch", "--amqp-url", settings.amqp_url,
         "--namespace", settings.namespace, "--queue", queue, "--count", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn = messaging.connect(settings.amqp_url)
    try:
        wait_until(lambda: queue_exists(conn, queue), 30, "the watch queue", db=False)
        ch = conn.channel()
        events = [{"event_id": "e-1", "type": "operation.accepted"},
                  {"event_id": ["not", "a", "string"], "type": "operation.accepted"}]
        for body in [*HOSTILE, *(json.dumps(e).encode() for e in events)]:
            ch.basic_publish(topo.events_exchange, "operation.accepted", body,
                             pika.BasicProperties(delivery_mode=2))
        out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
        conn.channel().queue_delete(queue)
        conn.close()
    assert watch.returncode == 0, err
    assert [json.loads(line) for line in out.decode().splitlines()] == events
    skipped = [line for line in err.decode().splitlines() if line.startswith("skipped")]
    assert len(skipped) == len(HOSTILE), err
    assert "nested 30000 levels deep (max 32)" in skipped[0] and "Traceback" not in err.decode()

