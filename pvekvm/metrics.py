"""Prometheus metrics (prometheus_client): what every worker and the scheduler expose on
``http://<host>:<port>/metrics``.

Counters and histograms are per process (Prometheus sums them over the ``instance`` label); the
gauges read from the database (operations by kind and status, dead letters, clone slots, the age
of the oldest idle running operation) are registered by the scheduler only
(:func:`register_database_gauges`), so a site with twenty worker processes does not report each
database figure twenty times. Label values are bounded sets (pools, step labels, results,
Proxmox endpoint kinds with ids replaced by ``{}``), never service ids or host names.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pvekvm.lifecycle import OpStatus as S
from pvekvm.lifecycle import ServiceStatus

log = logging.getLogger("pvekvm.metrics")

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_CALL_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

MESSAGES = Counter(
    "pvekvm_messages", "Messages taken from a queue, by pool and what became of them "
    "(ok: handled and acked; noop: stale or duplicate nudge, acked; refused: dead-lettered "
    "with a reason; requeued: handling failed, given back to the broker)",
    ["pool", "result"])
STEPS = Counter(
    "pvekvm_steps", "Step runs recorded in step_runs, by pool, step label and result "
    "(success, skip, warn, retry, error)", ["pool", "step", "result"])
STEP_SECONDS = Histogram(
    "pvekvm_step_duration_seconds", "Time from a step's start to its recorded result "
    "(includes the Proxmox task it waited for)", ["pool", "step"], buckets=_STEP_BUCKETS)
HANDLE_SECONDS = Histogram(
    "pvekvm_message_handling_seconds", "Time one worker spent on one step message",
    ["pool"], buckets=_CALL_BUCKETS)
LAG_SECONDS = Histogram(
    "pvekvm_message_lag_seconds", "Time a message waited in the broker beyond its intended "
    "delay (publish to delivery)", ["pool"], buckets=_LAG_BUCKETS)
EVENT_LAG_SECONDS = Histogram(
    "pvekvm_event_lag_seconds", "Time from the commit of a state change to the confirmed "
    "publish of its event for billing", ["type"], buckets=_LAG_BUCKETS)
PROXMOX_SECONDS = Histogram(
    "pvekvm_proxmox_call_seconds", "Proxmox API call latency by method and endpoint kind",
    ["method", "endpoint"], buckets=_CALL_BUCKETS)
PROXMOX_ERRORS = Counter(
    "pvekvm_proxmox_errors", "Failed Proxmox API calls by method, endpoint kind and whether "
    "retrying may help", ["method", "endpoint", "kind"])
DEAD_LETTERED = Counter(
    "pvekvm_dead_lettered", "Messages this process parked in the dead queue, by source",
    ["source"])
JOB_RUNS = Counter(
    "pvekvm_scheduler_job_runs", "Scheduler job runs by job and result (ok, error)",
    ["job", "result"])
JOB_ITEMS = Counter(
    "pvekvm_scheduler_job_items", "Items a scheduler job processed", ["job"])
PAUSED = Gauge(
    "pvekvm_operations_paused", "Paused operations (set by the scheduler's auto_resume job), by "
    "what resumes them (auto: they resume by themselves; operator: auto-resume gave up) and the "
    "dependency whose fault paused them (proxmox, database, mail, dns, other) and the cluster "
    "of their service", ["resume", "dependency", "cluster"])
UP = Gauge("pvekvm_process_start_time_seconds", "When this pvekvm process started (epoch)")
UP.set_to_current_time()

# ids, node names, UPIDs, storages and snapshot names become "{}" in an endpoint kind
_VARIABLE_AFTER = {"nodes", "qemu", "lxc", "tasks", "storage", "snapshot", "pools", "content",
                   "ipset", "aliases", "groups", "rules", "users", "access"}


def endpoint_kind(path: str) -> str:
    """``nodes/pve1/qemu/1042/status/start`` → ``nodes/{}/qemu/{}/status/start``."""
    parts = [p for p in path.strip("/").split("/") if p]
    out: list[str] = []
    for i, part in enumerate(parts):
        variable = i > 0 and parts[i - 1] in _VARIABLE_AFTER or part.isdigit()
        out.append("{}" if variable else part)
    return "/".join(out)[:120]


def observe_step(pool: str, step: str, result: str, seconds: float) -> None:
    """One step_runs row was recorded (called by the engine)."""
    STEPS.labels(pool, step, result).inc()
    STEP_SECONDS.labels(pool, step).observe(max(seconds, 0.0))


def observe_proxmox(method: str, path: str, seconds: float, error: Exception | None) -> None:
    """One Proxmox API call ended (``error``: the ProxmoxError it raised, if any)."""
    kind = endpoint_kind(path)
    PROXMOX_SECONDS.labels(method.upper(), kind).observe(seconds)
    if error is not None:
        transient = bool(getattr(error, "transient", False))
        PROXMOX_ERRORS.labels(method.upper(), kind,
                              "transient" if transient else "permanent").inc()


def observe_handling(pool: str, seconds: float, _proxmox_seconds: float = 0.0) -> None:
    """The engine's ``observer`` callback: time one message took in the engine."""
    HANDLE_SECONDS.labels(pool).observe(seconds)


# --------------------------------------------------------------------------- database gauges

_registered: dict[str, Collector] = {}
DATABASE_GAUGES = ("pvekvm_operations", "pvekvm_services", "pvekvm_dead_letters",
                   "pvekvm_clone_slots_in_use",
                   "pvekvm_oldest_running_idle_seconds")


class DatabaseCollector(Collector):
    """Reads the operations' and dead letters' picture from the database at scrape time, on the
    HTTP server's thread with a connection of its own (peewee connections are per thread),
    closed after each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from pvekvm.models import DeadLetter, Operation, database

        ops = GaugeMetricFamily("pvekvm_operations", "Operations by kind, status "
                                "(running = in flight, queued, paused, failed) and the "
                                "cluster of their service", labels=["kind", "status", "cluster"])
        services = GaugeMetricFamily("pvekvm_services", "Services by cluster and status "
                                     "(terminated ones not counted)",
                                     labels=["cluster", "status"])
        dead = GaugeMetricFamily("pvekvm_dead_letters", "Rows in the dead_letters table")
        clones = GaugeMetricFamily("pvekvm_clone_slots_in_use",
                                   "Clones with a running Proxmox task, by cluster and "
                                   "template node", labels=["cluster", "node"])
        idle = GaugeMetricFamily("pvekvm_oldest_running_idle_seconds",
                                 "Seconds since the least recently moved running operation "
                                 "changed (a lost nudge shows here before the reconciler acts)")
        try:
            database.connect(reuse_if_open=True)
            rows = database.execute_sql(
                "SELECT o.kind, o.status, s.cluster, COUNT(*) FROM operations o "
                "JOIN services s ON s.id = o.service_id "
                f"WHERE o.status IN ('{S.RUNNING}', '{S.QUEUED}', '{S.PAUSED}', '{S.FAILED}') "
                "GROUP BY o.kind, o.status, s.cluster").fetchall()
            for kind, status, cluster, n in rows:
                ops.add_metric([kind, status, cluster], n)
            for cluster, status, n in database.execute_sql(
                    "SELECT cluster, status, COUNT(*) FROM services "
                    f"WHERE status <> '{ServiceStatus.TERMINATED}' "
                    "GROUP BY cluster, status").fetchall():
                services.add_metric([cluster, status], n)
            dead.add_metric([], DeadLetter.select().count())
            for cluster, node, n in database.execute_sql(  # a clone: a slot while its task runs
                    "SELECT s.cluster, t.node, COUNT(*) FROM operations o "
                    "JOIN services s ON s.id = o.service_id "
                    "JOIN templates t ON t.id = s.template_id "
                    f"WHERE o.status = '{S.RUNNING}' AND o.upid LIKE %s "
                    "GROUP BY s.cluster, t.node", ("%:qmclone:%",)).fetchall():
                clones.add_metric([cluster, node], n)
            oldest = (Operation.select(Operation.updated_at)
                      .where(Operation.status == S.RUNNING)
                      .order_by(Operation.updated_at).limit(1).scalar())
            idle.add_metric([], (datetime.now() - oldest).total_seconds() if oldest else 0.0)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the DB is down
            log.warning("metrics: database gauges unavailable: %s", exc)
            return
        finally:
            database.close()
        yield from (ops, services, dead, clones, idle)  # the names of DATABASE_GAUGES


def register_database_gauges() -> None:
    """Add the database gauges to this process's registry (once)."""
    if "db" not in _registered:
        _registered["db"] = DatabaseCollector()
        REGISTRY.register(_registered["db"])


class MetricsServer:
    """The ``/metrics`` HTTP endpoint on ``addr:port`` in a daemon thread. ``port`` None = off,
    0 = any free port (tests; read ``.port`` after :meth:`start`). A port already taken is
    logged as an error and the process runs on without metrics: provisioning matters more."""

    def __init__(self, port: int | None, addr: str = "0.0.0.0") -> None:
        self.port, self.addr = port, addr
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        if self.port is None:
            return self
        try:
            self._server, self._thread = start_http_server(self.port, self.addr)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%s (%s); running without /metrics",
                      self.addr, self.port, exc)
            return self
        self.port = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", self.addr, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["MetricsServer", "endpoint_kind", "observe_handling", "observe_proxmox",
           "observe_step", "register_database_gauges"]
