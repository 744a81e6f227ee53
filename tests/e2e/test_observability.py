"""What operators see: /metrics scraped over HTTP, message properties in the RabbitMQ queues,
the scheduler's summary lines, and mail in the client's language."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from producers.api import OrderClient
from pvekvm import messaging, metrics
from pvekvm.config import ROOT, MetricsSettings
from pvekvm.models import DeadLetter, Operation, StepRun
from steps.machines import MACHINES
from workers import scheduler
from workers.testing.harness import (
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
    write_config,
)

SID = 6161
Samples = dict[tuple[str, frozenset], float]


def scrape(port: int) -> Samples:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def test_a_deploy_moves_the_worker_metrics_and_mails_the_client_in_german(settings, sink):
    observed = replace(settings, metrics=MetricsSettings(port=0, addr="127.0.0.1"))
    with InProcessWorkers(observed, concurrency=4) as workers, \
            OrderClient(settings.amqp_url, settings.namespace) as billing:
        port = workers.proc.metrics.port
        assert port is not None, "the metrics server did not start"
        before = scrape(port)
        billing.create(service_id=SID, client_id=3, product="vps-small",
                       email="kunde@example.com", language="de")
        try:
            wait_until(all_ready([SID]), 60, "deploy")
        except AssertionError:
            raise AssertionError(describe_ops([SID])) from None
        after = wait_until(lambda: s if (s := scrape(port)) and moved(
            before, s, "pvekvm_messages_total", pool="mail") >= 1 else None, 10, "mail counted")

    runs = list(StepRun.select())
    by_result: dict[str, int] = defaultdict(int)
    for r in runs:
        by_result[r.result] += 1
    for result, n in by_result.items():  # every step_runs row was counted, by its result
        assert moved(before, after, "pvekvm_steps_total", result=result) == n, result
    assert moved(before, after, "pvekvm_step_duration_seconds_count") == len(runs)
    clone_label = next(t.label for t in MACHINES["deploy"].transitions if t.pool == "clone")
    assert moved(before, after, "pvekvm_steps_total", pool="clone", step=clone_label,
                 result="success") == 1
    assert moved(before, after, "pvekvm_proxmox_call_seconds_count", method="POST",
                 endpoint="nodes/{}/qemu/{}/clone") == 1
    assert moved(before, after, "pvekvm_proxmox_call_seconds_count",
                 endpoint="nodes/{}/tasks/{}/status") >= 1
    assert moved(before, after, "pvekvm_messages_total", pool="intake", result="ok") == 1
    assert moved(before, after, "pvekvm_message_handling_seconds_count", pool="clone") >= 1
    assert moved(before, after, "pvekvm_message_lag_seconds_count", pool="intake") == 1

    welcome = sink.wait_for(lambda m: "wird eingerichtet" in m.subject, 5)
    ready = sink.wait_for(lambda m: "ist bereit" in m.subject, 5)
    for got in (welcome, ready):
        assert got.rcpt_tos == ["kunde@example.com"]
        assert got.message["Content-Language"] == "de"
        assert "Guten Tag" in got.body and "Service-ID: " in got.body.replace("  ", " ")
    assert "Benutzername:" in ready.body and "Passwort:" in ready.body


def _get(ch, queue: str, timeout: float = 10.0):
    """One message from ``queue``, unacked (a consumer: the orders queue has a single active
    consumer, which basic.get cannot be)."""
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
        if method is None:
            raise AssertionError(f"no message in {queue} within {timeout}s")
        ch.cancel()
        return method, props, body
    raise AssertionError(f"no message in {queue}")


def test_queued_messages_say_what_they_are_and_the_scheduler_reports_the_database(
        settings, caplog):
    topo = messaging.Topology(settings.namespace)
    conn = messaging.connect(settings.amqp_url)
    ch = conn.channel()
    try:
        with OrderClient(settings.amqp_url, settings.namespace) as billing:
            event = billing.create(service_id=SID + 1, client_id=3, product="vps-small",
                                   email="c@example.com")
            billing.publish_raw(json.dumps({**event.to_dict(), "service_id": SID + 2,
                                            "idempotency_key": "bad-lang",
                                            "language": "de;rm -rf"}).encode(), "order.create")
        method, props, _ = _get(ch, topo.orders_queue)
        assert (props.app_id, props.type, props.correlation_id) == (
            "pvekvm-producer", "order.create", event.idempotency_key)
        assert abs(props.timestamp - time.time()) < 60
        ch.basic_nack(method.delivery_tag, requeue=True)  # leave it for intake

        with InProcessWorkers(settings, concurrency=2, pools=["intake"]):
            op = wait_until(lambda: Operation.get_or_none(service_id=SID + 1), 10, "intake")
            dead = wait_until(lambda: DeadLetter.get_or_none(), 10, "refused order")
        assert "field 'language'" in dead.reason
        at = MACHINES["deploy"].at(op.state)
        assert at is not None, f"deploy has no state {op.state}"
        pool = at.pool
        _, props, body = _get(ch, topo.step_queue(pool))
        assert json.loads(body)["op"] == op.id
        assert (props.app_id, props.type, props.correlation_id) == (
            "pvekvm-worker", f"step.{op.state}", str(op.id))
        assert abs(props.timestamp - time.time()) < 60
        _, props, _ = _get(ch, topo.dead_queue)
        assert (props.app_id, props.type) == ("pvekvm-worker", "dead-letter")
        assert "field 'language'" in props.headers["x-reason"]
    finally:
        conn.close()

    metrics.register_database_gauges()
    server = metrics.MetricsServer(0, "127.0.0.1").start()
    try:
        assert server.port is not None
        seen = scrape(server.port)
    finally:
        server.stop()
    assert seen[("pvekvm_operations", frozenset({("kind", "deploy"), ("status", "running"),
                                                 ("cluster", "default")}))] == 1
    assert seen[("pvekvm_dead_letters", frozenset())] == 1
    assert seen[("pvekvm_oldest_running_idle_seconds", frozenset())] >= 0

    # the nudge is lost: the reconciler job re-sends it and prints the manual's summary
    messaging.purge(settings.amqp_url, topo)
    Operation.update(updated_at=datetime.now() - timedelta(minutes=5)).execute()
    sched = scheduler.build(settings, BackgroundScheduler)
    with caplog.at_level(logging.INFO, logger="pvekvm.scheduler"):
        sched.get_job("reconcile").func()
        sched.get_job("dns_retry").func()
    lines = [r.getMessage() for r in caplog.records if r.name == "pvekvm.scheduler"]
    summary = re.compile(r"\[(\w+)\] Done \((\d+\.\d)s\) — processed: (\d+), errors: (\d+)$")
    done = {m.group(1): (int(m.group(3)), int(m.group(4)))
            for m in map(summary.match, lines) if m}
    assert done == {"reconcile": (1, 0), "dns_retry": (0, 0)}, lines


@pytest.mark.parametrize("path,kind", [
    ("nodes/pve1/qemu/1042/status/start", "nodes/{}/qemu/{}/status/start"),
    ("/cluster/resources", "cluster/resources"),
    ("nodes/pve2/tasks/UPID:pve2:0001:task:1042:root@pam:/status",
     "nodes/{}/tasks/{}/status"),
    ("nodes/pve1/qemu/1042/snapshot/before_upgrade/rollback",
     "nodes/{}/qemu/{}/snapshot/{}/rollback"),
])
def test_proxmox_endpoint_kinds_carry_no_ids(path, kind):
    assert metrics.endpoint_kind(path) == kind


def test_the_example_dashboard_queries_only_metrics_pvekvm_exposes():
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    queried = {re.sub(r"_(bucket|count|sum|total)$", "", name)
               for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"pvekvm_\w+", target["expr"])}
    exposed = {family.name for family in REGISTRY.collect()} | set(metrics.DATABASE_GAUGES)
    assert queried and queried <= exposed, queried - exposed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_scheduler_process_serves_metrics_and_json_logs_from_its_settings(settings, tmp_path):
    port = _free_port()
    config = write_config(settings, tmp_path / "pvekvm.toml")
    config.write_text(config.read_text() + f'[observability]\nscheduler_port = {port}\n'
                      'addr = "127.0.0.1"\nlog_format = "json"\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "AMQP_URL", "PVEKVM_NAMESPACE")}
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workers.scheduler", "--config",
                                 str(config)], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        def scraped() -> Samples | None:
            try:
                return scrape(port)
            except OSError:
                return None
        seen = wait_until(scraped, 30, "the scheduler's /metrics", db=False)
        assert seen[("pvekvm_dead_letters", frozenset())] == 0
        wait_until(lambda: "[reconcile] Done (" in log_path.read_text(), 30,
                   "a reconcile summary", db=False)
    finally:
        proc.terminate()
        proc.wait(30)
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    assert any(re.fullmatch(r"\[reconcile\] Done \(\d+\.\ds\) — processed: 0, errors: 0",
                            r["message"]) for r in records)
