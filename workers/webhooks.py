"""``python -m workers.webhooks --threads 4``: the webhook deliverer (run as many as you like,
on as many hosts; each also numbers events for the pull feed).

The database is the truth; a deliverer holds nothing that a kill -9 could lose:

- **Sequencer** (one at a time, the ``feed_sequencer`` row ``FOR UPDATE SKIP LOCKED``): gives
  each committed outbox row the next feed position (``outbox.seq``), so positions follow commit
  order and a cursor never skips a row that committed late. In the same transaction it fans
  the new positions out: one ``webhook_deliveries`` row (``queued``) per endpoint whose types
  and scope match, and the ``webhook_streams`` row of (endpoint, service) gets the first of
  them as its ``head_seq`` when it had none.
- **Streams**: one per (endpoint, service). Only its head is sent; the next event of the
  service becomes the head only after the receiver answered 2xx for the head (in order per
  service). A deliverer thread claims a due stream with a lease (``lease_owner``,
  ``lease_until`` on the database clock, taken ``FOR UPDATE SKIP LOCKED``), POSTs the head,
  then moves the head on by compare-and-swap on (head, lease owner): two deliverers never send
  one service's events at once, and a killed one's lease runs out after ``lease_s`` and the
  head is sent again (at least once: receivers de-duplicate by ``webhook-id``).
- **Failures** (no answer, timeout, non-2xx): retried after ``retry_first_s`` doubling to
  ``retry_max_s``; once the head has failed for ``retry_for_s`` the stream is *parked* with the
  last reason and waits for ``python -m pvekvm webhooks retry``; other services go on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from peewee import OperationalError
from prometheus_client import Counter, Histogram

from pvekvm import dberrors, logs, metrics, preflight
from pvekvm.config import Settings
from pvekvm.db import bind
from pvekvm.models import database
from pvekvm.webhooks import signing, store, target
from pvekvm.webhooks.config import DeliverySettings, matches

log = logging.getLogger("pvekvm.webhooks")
ATTEMPTS = Counter("pvekvm_webhook_attempts_total", "Webhook POSTs by endpoint and what came "
                   "of them (delivered, retry, parked, dropped, lost: the lease ran out); "
                   "endpoint: its name (settings) or token/name (API)",
                   ["endpoint", "result"])
ATTEMPT_SECONDS = Histogram("pvekvm_webhook_attempt_seconds", "One webhook POST, lookup to "
                            "the answer's headers", ["endpoint"])
DELAY_SECONDS = Histogram("pvekvm_webhook_delivery_delay_seconds", "From an event's commit to "
                          "its receiver's 2xx", ["endpoint"],
                          buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400))
SEQUENCE_BATCH = 1000
FAN_OUT_BATCH = 2000


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _retrying(fn: Any, *args: Any) -> Any:
    """Run a short transaction, again after a deadlock, a certification conflict or a lock held
    elsewhere (nothing of it committed: pvekvm/dberrors.py)."""
    for attempt in range(5):
        try:
            with database.atomic():
                return fn(*args)
        except OperationalError as exc:
            if dberrors.retry_now(exc) and attempt < 4:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
    return None


# --------------------------------------------------------------------------- sequencer

def sequence_once(settings: Settings) -> int:
    """Number the committed outbox rows that have no position yet and fan them out; 0 when
    another deliverer holds the sequencer. Returns how many rows were numbered."""
    if not database.execute_sql("SELECT COUNT(*) FROM feed_sequencer").fetchone()[0]:
        database.execute_sql("INSERT IGNORE INTO feed_sequencer (id) VALUES (1)")
    return int(_retrying(_sequence, settings) or 0)


def _sequence(settings: Settings) -> int:
    if not database.execute_sql("SELECT id FROM feed_sequencer WHERE id = 1 "
                                "FOR UPDATE SKIP LOCKED").fetchone():
        return 0
    newest = store.head()
    ids = [r[0] for r in database.execute_sql(
        "SELECT id FROM outbox WHERE seq IS NULL ORDER BY id LIMIT %s",
        (SEQUENCE_BATCH,)).fetchall()]
    if ids:
        cases = " ".join(["WHEN %s THEN %s"] * len(ids))
        args: list[int] = [v for i, row_id in enumerate(ids) for v in (row_id, newest + 1 + i)]
        database.execute_sql(f"UPDATE outbox SET seq = CASE id {cases} END WHERE id IN ("
                             + ",".join(["%s"] * len(ids)) + ")", (*args, *ids))
        newest += len(ids)
        database.execute_sql("UPDATE feed_sequencer SET updated_at = NOW(3) WHERE id = 1")
    for endpoint in store.live():
        if endpoint.fanned_seq < newest:
            _fan_out(settings, endpoint, newest)
    return len(ids)


def _fan_out(settings: Settings, endpoint: store.Endpoint, newest: int) -> None:
    rows = database.execute_sql(
        "SELECT seq, service_id, type FROM outbox WHERE seq > %s AND seq <= %s ORDER BY seq "
        "LIMIT %s", (endpoint.fanned_seq, newest, FAN_OUT_BATCH)).fetchall()
    upto = int(rows[-1][0]) if len(rows) == FAN_OUT_BATCH else newest
    in_scope = store.service_filter(endpoint.scope, settings.api)
    wanted = [(int(seq), int(sid or 0)) for seq, sid, etype in rows
              if matches(endpoint.event_types, etype) and in_scope(sid)]
    if wanted:
        database.execute_sql(
            "INSERT IGNORE INTO webhook_deliveries (endpoint_id, seq, service_id) VALUES "
            + ",".join(["(%s, %s, %s)"] * len(wanted)),
            tuple(v for seq, sid in wanted for v in (endpoint.id, seq, sid)))
        first: dict[int, int] = {}
        for seq, sid in wanted:
            first.setdefault(sid, seq)
        for sid in sorted(first):  # one lock order for every sequencer
            # assignments run left to right: next_attempt_at reads head_seq before it is set
            database.execute_sql(
                "INSERT INTO webhook_streams (endpoint_id, service_id, head_seq, "
                "next_attempt_at) VALUES (%s, %s, %s, NOW(3)) ON DUPLICATE KEY UPDATE "
                "next_attempt_at = IF(head_seq IS NULL, NOW(3), next_attempt_at), "
                "head_seq = IFNULL(head_seq, VALUES(head_seq))", (endpoint.id, sid, first[sid]))
    database.execute_sql("UPDATE webhook_endpoints SET fanned_seq = %s WHERE id = %s",
                         (upto, endpoint.id))


def prune_once(delivery: DeliverySettings) -> int:
    """Forget delivered rows older than ``keep_delivered_days`` (a batch at a time)."""
    cur = database.execute_sql(
        "DELETE FROM webhook_deliveries WHERE delivered_at < NOW(3) - INTERVAL %s SECOND "
        "AND status IN ('delivered', 'dropped') LIMIT 1000",
        (int(delivery.keep_delivered_days * 86400),))
    return cur.rowcount


# --------------------------------------------------------------------------- streams

@dataclass(frozen=True)
class Claim:
    endpoint_id: int
    service_id: int
    seq: int
    attempts: int
    failing_for_s: float | None  # since the head's first failure (None: it has not failed)


def claim(owner: str, lease_s: float, busy: Iterable[int] = ()) -> Claim | None:
    """Lease one due stream (the longest due first) of an endpoint not in ``busy``, or None."""
    skip = sorted(set(busy))
    not_busy = ("AND endpoint_id NOT IN (" + ",".join(["%s"] * len(skip)) + ") "
                if skip else "")

    def take() -> Claim | None:
        row = database.execute_sql(
            "SELECT endpoint_id, service_id, head_seq, attempts, "
            "TIMESTAMPDIFF(MICROSECOND, first_failed_at, NOW(3)) FROM webhook_streams "
            "WHERE next_attempt_at <= NOW(3) AND head_seq IS NOT NULL "
            f"AND (lease_until IS NULL OR lease_until < NOW(3)) {not_busy}"
            "ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED", tuple(skip)).fetchone()
        if row is None:
            return None
        database.execute_sql(
            "UPDATE webhook_streams SET lease_owner = %s, "
            "lease_until = NOW(3) + INTERVAL %s MICROSECOND "
            "WHERE endpoint_id = %s AND service_id = %s", (owner, _us(lease_s), row[0], row[1]))
        return Claim(int(row[0]), int(row[1]), int(row[2]), int(row[3]),
                     None if row[4] is None else row[4] / 1e6)
    return _retrying(take)


def _lock_head(c: Claim, owner: str) -> bool:
    """Lock the stream; True while its head is still ``c.seq`` under ``owner``'s lease."""
    row = database.execute_sql(
        "SELECT head_seq, lease_owner FROM webhook_streams WHERE endpoint_id = %s AND "
        "service_id = %s FOR UPDATE", (c.endpoint_id, c.service_id)).fetchone()
    return row is not None and row[0] == c.seq and row[1] == owner


def advance(c: Claim, owner: str, status: str, http_status: int | None, error: str | None,
            lease_s: float) -> Claim | None:
    """The head is done (``delivered``, or ``dropped`` with a reason): the service's next
    queued event becomes the head, still leased to ``owner`` (returned, to send at once), or
    the stream is caught up (None). Nothing happens when the lease was lost meanwhile."""
    def move() -> Claim | None:
        if not _lock_head(c, owner):
            return None
        database.execute_sql(
            "UPDATE webhook_deliveries SET status = %s, attempts = attempts + 1, "
            "last_status = %s, last_error = %s, delivered_at = NOW(3) "
            "WHERE endpoint_id = %s AND seq = %s",
            (status, http_status, error, c.endpoint_id, c.seq))
        nxt = database.execute_sql(
            "SELECT MIN(seq) FROM webhook_deliveries WHERE endpoint_id = %s AND service_id = %s "
            "AND status = 'queued' AND seq > %s", (c.endpoint_id, c.service_id,
                                                    c.seq)).fetchone()[0]
        database.execute_sql(
            "UPDATE webhook_streams SET head_seq = %s, attempts = 0, first_failed_at = NULL, "
            "next_attempt_at = IF(%s IS NULL, NULL, NOW(3)), "
            "lease_owner = IF(%s IS NULL, NULL, lease_owner), "
            "lease_until = IF(%s IS NULL, NULL, NOW(3) + INTERVAL %s MICROSECOND) "
            "WHERE endpoint_id = %s AND service_id = %s",
            (nxt, nxt, nxt, nxt, _us(lease_s), c.endpoint_id, c.service_id))
        return None if nxt is None else Claim(c.endpoint_id, c.service_id, int(nxt), 0, None)
    return _retrying(move)


def backoff_s(delivery: DeliverySettings, attempts: int) -> float:
    """The wait after the ``attempts``-th failure: doubling from retry_first_s, capped, with
    up to 10 % jitter so receivers coming back are not hit by every stream at once."""
    base = min(delivery.retry_max_s, delivery.retry_first_s * 2 ** max(0, attempts - 1))
    return base * (1 + random.random() / 10)


def fail(c: Claim, owner: str, http_status: int | None, error: str,
         delivery: DeliverySettings) -> str:
    """Record a failed attempt: retry later, or park the stream once the head has failed for
    ``retry_for_s``. Returns ``retry`` / ``parked`` / ``lost`` (the lease was lost)."""
    def record() -> str:
        if not _lock_head(c, owner):
            return "lost"
        attempts = c.attempts + 1
        database.execute_sql(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = %s, "
            "last_error = %s WHERE endpoint_id = %s AND seq = %s",
            (http_status, error[:1000], c.endpoint_id, c.seq))
        failing = c.failing_for_s or 0.0
        if c.failing_for_s is not None and failing >= delivery.retry_for_s:
            reason = (f"parked after {attempts} attempts over {failing:.0f} s: {error}")[:1000]
            database.execute_sql(
                "UPDATE webhook_deliveries SET status = 'parked' "
                "WHERE endpoint_id = %s AND seq = %s", (c.endpoint_id, c.seq))
            database.execute_sql(
                "UPDATE webhook_streams SET attempts = %s, next_attempt_at = NULL, "
                "parked_reason = %s, lease_owner = NULL, lease_until = NULL "
                "WHERE endpoint_id = %s AND service_id = %s",
                (attempts, reason, c.endpoint_id, c.service_id))
            return "parked"
        wait = backoff_s(delivery, attempts)
        if c.failing_for_s is not None:  # never wait past the end of the retry time
            wait = min(wait, max(0.0, delivery.retry_for_s - failing))
        database.execute_sql(
            "UPDATE webhook_streams SET attempts = %s, "
            "first_failed_at = IFNULL(first_failed_at, NOW(3)), "
            "next_attempt_at = NOW(3) + INTERVAL %s MICROSECOND, "
            "lease_owner = NULL, lease_until = NULL WHERE endpoint_id = %s AND service_id = %s",
            (attempts, _us(wait), c.endpoint_id, c.service_id))
        return "retry"
    return str(_retrying(record))


def retry_parked(endpoint_id: int, service_id: int | None = None) -> int:
    """An operator's retry: parked streams of the endpoint (or of one service) are due now,
    their head queued again with a fresh retry time. Returns how many."""
    one = "" if service_id is None else " AND s.service_id = %s"
    args = (endpoint_id,) if service_id is None else (endpoint_id, service_id)
    with database.atomic():
        database.execute_sql(
            "UPDATE webhook_deliveries d JOIN webhook_streams s ON s.endpoint_id = d.endpoint_id "
            "AND s.head_seq = d.seq SET d.status = 'queued' WHERE s.endpoint_id = %s "
            f"AND s.parked_reason IS NOT NULL{one}", args)
        cur = database.execute_sql(
            "UPDATE webhook_streams s SET s.parked_reason = NULL, s.attempts = 0, "
            "s.first_failed_at = NULL, s.next_attempt_at = NOW(3) WHERE s.endpoint_id = %s "
            f"AND s.parked_reason IS NOT NULL{one}", args)
        return cur.rowcount


# --------------------------------------------------------------------------- sending

class Deliverer:
    """``threads`` delivery threads and one sequencer thread in this process."""

    def __init__(self, settings: Settings, threads: int = 4, name: str | None = None) -> None:
        self.settings = settings
        self.delivery = settings.webhooks.delivery
        self.owner = (name or f"{socket.gethostname()}:{os.getpid()}:"
                      f"{uuid.uuid4().hex[:6]}")[:64]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._sequencer, daemon=True,
                                         name="webhooks-sequencer")]
        self.threads += [threading.Thread(target=self._deliver_loop, daemon=True,
                                          name=f"webhooks-{i}") for i in range(threads)]
        self._endpoints: dict[int, tuple[float, store.Endpoint | None, list[str]]] = {}
        self._lock = threading.Lock()
        self._claiming = threading.Lock()
        self._in_flight: dict[int, int] = defaultdict(int)  # endpoint -> attempts in flight
        self.sent: dict[str, int] = defaultdict(int)  # outcome -> count (for the log line)

    def start(self) -> Deliverer:
        for line in store.sync_settings(self.settings.secret_key_file,
                                        self.settings.webhooks.endpoints):
            log.info("%s", line)
        for t in self.threads:
            t.start()
        return self

    def shutdown(self, timeout: float = 15.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if not database.is_closed():
            database.close()

    def __enter__(self) -> Deliverer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _sequencer(self) -> None:
        pruned_at = 0.0
        while not self.stop.is_set():
            try:
                numbered = sequence_once(self.settings)
                if time.monotonic() - pruned_at > 60:
                    prune_once(self.delivery)
                    pruned_at = time.monotonic()
            except Exception:  # the database restarts: try again next round
                log.exception("webhooks: sequencer round failed")
                numbered = 0
            if numbered < SEQUENCE_BATCH:
                self.stop.wait(self.delivery.poll_s)
        database.close()

    def _endpoint(self, endpoint_id: int) -> tuple[store.Endpoint | None, list[str]]:
        """The endpoint and its secrets, re-read at most every 2 s (a deletion or a secret
        rotation takes effect within that)."""
        with self._lock:
            cached = self._endpoints.get(endpoint_id)
        if cached is not None and time.monotonic() - cached[0] < 2.0:
            return cached[1], cached[2]
        ep = store.get(endpoint_id)
        secrets = store.secrets_of(self.settings.secret_key_file, endpoint_id) if ep else []
        with self._lock:
            self._endpoints[endpoint_id] = (time.monotonic(), ep, secrets)
        return ep, secrets

    def _claim(self) -> Claim | None:
        """A due stream of an endpoint that has fewer than ``endpoint_concurrency`` attempts
        in flight in this process (one slow or hanging receiver cannot take every thread
        from the other endpoints); counted until :meth:`_release`."""
        limit = self.delivery.endpoint_concurrency
        with self._claiming:
            busy = [e for e, n in self._in_flight.items() if limit and n >= limit]
            c = claim(self.owner, self.delivery.lease_s, busy)
            if c is not None:
                self._in_flight[c.endpoint_id] += 1
        return c

    def _release(self, endpoint_id: int) -> None:
        with self._claiming:
            self._in_flight[endpoint_id] -= 1

    def _deliver_loop(self) -> None:
        while not self.stop.is_set():
            try:
                c = self._claim()
            except Exception:  # the database restarts: try again next round
                log.exception("webhooks: claim failed")
                c = None
            if c is None:
                self.stop.wait(self.delivery.poll_s)
                continue
            endpoint_id = c.endpoint_id
            try:
                while c is not None and not self.stop.is_set():
                    c = self.send(c)  # the service's next event, still leased, or None
            except Exception:  # the database restarts: the lease runs out
                log.exception("webhooks: delivery round failed")
                self.stop.wait(self.delivery.poll_s)
            finally:
                self._release(endpoint_id)
        database.close()

    def send(self, c: Claim) -> Claim | None:
        """POST the head of a leased stream; the next head to send (still leased) or None."""
        started = time.monotonic()
        ep, secrets = self._endpoint(c.endpoint_id)
        if ep is None:  # deleted: its streams are not due any more
            database.execute_sql("UPDATE webhook_streams SET next_attempt_at = NULL, "
                                 "lease_owner = NULL, lease_until = NULL WHERE endpoint_id = %s "
                                 "AND service_id = %s", (c.endpoint_id, c.service_id))
            return None
        row = database.execute_sql(
            "SELECT event_id, body, service_id, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) "
            "FROM outbox WHERE seq = %s", (c.seq,)).fetchone()
        if row is None or not store.service_filter(ep.scope, self.settings.api)(row[2]):
            why = "event gone" if row is None else "outside the endpoint's scope now"
            self.sent["dropped"] += 1
            ATTEMPTS.labels(ep.name if ep.origin == "settings" else f"{ep.owner}/{ep.name}",
                            "dropped").inc()
            return advance(c, self.owner, "dropped", None, why, self.delivery.lease_s)
        event_id, body = row[0], row[1].encode()
        label = ep.name if ep.origin == "settings" else f"{ep.owner}/{ep.name}"
        allowed = None
        if ep.origin == "api":
            networks = self.delivery.allowed_networks()
            allowed = lambda ip: target.address_allowed(ip, networks)  # noqa: E731
        if time.monotonic() - started > self.delivery.lease_s - self.delivery.timeout_s - 1:
            return None  # too slow to get here: the lease may be over; its next holder sends
        sent_at = time.monotonic()
        attempt = target.post(ep.url, body, signing.headers(event_id, body, secrets),
                              self.delivery.timeout_s, allowed)
        took = time.monotonic() - sent_at
        ATTEMPT_SECONDS.labels(label).observe(took)
        if attempt.ok:
            self.sent["delivered"] += 1
            ATTEMPTS.labels(label, "delivered").inc()
            if row[3] is not None:
                DELAY_SECONDS.labels(label).observe(max(0.0, row[3] / 1e6 + took))
            return advance(c, self.owner, "delivered", attempt.status, None,
                           self.delivery.lease_s)
        outcome = fail(c, self.owner, attempt.status, attempt.error or "failed", self.delivery)
        self.sent[outcome] += 1
        ATTEMPTS.labels(label, outcome).inc()
        log.info("webhook %s sid:%s event %s: %s (%s)", ep.name, c.service_id, event_id,
                 attempt.error, outcome)
        return None


# --------------------------------------------------------------------------- status

def status() -> list[dict[str, Any]]:
    """Each live endpoint with its backlog and failures (``python -m pvekvm webhooks``)."""
    out = []
    for ep in store.live():
        counts = dict(database.execute_sql(
            "SELECT status, COUNT(*) FROM webhook_deliveries WHERE endpoint_id = %s "
            "GROUP BY status", (ep.id,)).fetchall())
        oldest = database.execute_sql(
            "SELECT TIMESTAMPDIFF(SECOND, MIN(created_at), NOW(3)) FROM webhook_deliveries "
            "WHERE endpoint_id = %s AND status IN ('queued', 'parked')", (ep.id,)).fetchone()[0]
        failing = [{"service_id": int(sid), "attempts": int(att), "parked": reason,
                    "last_error": err, "last_status": st}
                   for sid, att, reason, err, st in database.execute_sql(
                       "SELECT s.service_id, s.attempts, s.parked_reason, d.last_error, "
                       "d.last_status FROM webhook_streams s JOIN webhook_deliveries d ON "
                       "d.endpoint_id = s.endpoint_id AND d.seq = s.head_seq "
                       "WHERE s.endpoint_id = %s AND (s.attempts > 0 OR s.parked_reason IS "
                       "NOT NULL) ORDER BY s.service_id LIMIT 50", (ep.id,)).fetchall()]
        out.append({"id": ep.id, "name": ep.name, "origin": ep.origin, "scope": ep.scope,
                    "url": ep.url, "event_types": list(ep.event_types),
                    "backlog": int(counts.get("queued", 0)) + int(counts.get("parked", 0)),
                    "delivered": int(counts.get("delivered", 0)),
                    "dropped": int(counts.get("dropped", 0)),
                    "parked_streams": sum(1 for f in failing if f["parked"]),
                    "oldest_backlog_s": None if oldest is None else int(oldest),
                    "failing": failing})
    return out


def feed_status() -> str:
    """Whether a sequencer runs: events still without a feed position, and its last round."""
    waiting, oldest, last = database.execute_sql(
        "SELECT COUNT(*), TIMESTAMPDIFF(SECOND, MIN(created_at), NOW(3)), "
        "(SELECT MAX(updated_at) FROM feed_sequencer) FROM outbox WHERE seq IS NULL").fetchone()
    line = f"feed: {waiting} events waiting for a position"
    if waiting:
        line += f" (oldest {oldest} s)"
    line += f"; last numbered at {last:%Y-%m-%d %H:%M:%S}" if last else "; never numbered"
    if waiting and (oldest or 0) > 30:
        line += " — is a deliverer running? (python -m workers.webhooks numbers the feed)"
    return line


def format_status(rows: list[dict[str, Any]]) -> str:
    lines = [feed_status()]
    if not rows:
        lines.append("no webhook endpoints ([[webhooks]] in the settings, or POST /v1/webhooks)")
    for r in rows:
        age = "" if r["oldest_backlog_s"] is None else f", oldest {r['oldest_backlog_s']} s"
        lines.append(f"{r['name']} (id {r['id']}, {r['origin']}, scope {r['scope'] or 'all'}) "
                     f"{r['url']} [{', '.join(r['event_types'])}]: backlog {r['backlog']}{age}, "
                     f"delivered {r['delivered']}, parked services {r['parked_streams']}")
        for f in r["failing"]:
            state = f"PARKED: {f['parked']}" if f["parked"] else (
                f"retrying, {f['attempts']} failed attempts, last: {f['last_error']}")
            lines.append(f"  sid:{f['service_id']} {state}")
    return "\n".join(lines)


def command(action: str, name: str | None, service_id: int | None, as_json: bool) -> int:
    """``python -m pvekvm webhooks [status|retry NAME [--service SID]]``."""
    if action == "retry":
        match = [ep for ep in store.live() if name in (ep.name, str(ep.id))]
        if len(match) != 1:
            print(f"webhooks retry: {'no' if not match else 'more than one'} endpoint named "
                  f"{name!r} (python -m pvekvm webhooks lists them; give the id)",
                  file=sys.stderr)
            return 1
        n = retry_parked(match[0].id, service_id)
        print(f"{match[0].name}: {n} parked service stream{'s' if n != 1 else ''} due again")
        return 0
    rows = status()
    print(json.dumps(rows, indent=2, default=str) if as_json else format_status(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.webhooks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=4, help="deliveries in flight at once")
    ap.add_argument("--config", help="TOML settings file (default: $PVEKVM_CONFIG)")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--metrics-port", type=int,
                    help="port of /metrics (default: settings' observability.port; 0 = any)")
    args = ap.parse_args(argv)
    settings = preflight.settings_or_exit(args.config, "python -m workers.webhooks")
    logs.setup(args.log_level, settings.metrics.log_format)
    preflight.require(settings, ["database", "secret-key"], "python -m workers.webhooks")
    bind(settings.database_url, read_timeout_s=settings.database_read_timeout_s)
    port = args.metrics_port if args.metrics_port is not None else settings.metrics.port
    server = metrics.MetricsServer(port, settings.metrics.addr).start()
    proc = Deliverer(settings, max(1, args.threads)).start()
    signal.signal(signal.SIGTERM, lambda *_: proc.stop.set())
    signal.signal(signal.SIGINT, lambda *_: proc.stop.set())
    log.info("webhooks: delivering with %d threads as %s (%d endpoints in the settings)",
             len(proc.threads) - 1, proc.owner, len(settings.webhooks.endpoints))
    proc.stop.wait()
    proc.shutdown()
    server.stop()
    log.info("webhooks: stopped (%s)", json.dumps(dict(proc.sent), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
