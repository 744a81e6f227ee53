"""Webhooks delivered for real: a loopback receiver verifies each POST with the reference
``standardwebhooks`` verifier; order per service, retries, parking, rotation and kill -9 of the
deliverer (``python -m workers.webhooks`` as a process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pvekvm.config import ROOT
from pvekvm.models import database
from pvekvm.webhooks.config import EndpointSetting
from pvekvm.webhooks.signing import new_secret
from workers import webhooks
from workers.testing.harness import wait_until
from workers.testing.webhook_receiver import Receiver
from workers.testing.webhooks import FAST, emit, ids, make_settings, with_delivery


def test_each_event_is_posted_signed_in_order_per_service_with_both_secrets_of_a_rotation(
        db, tmp_path, database_url, amqp_url):
    new, old = new_secret(), new_secret()
    with Receiver(old) as knows_old, Receiver(new) as knows_new:
        settings = make_settings(tmp_path, database_url, amqp_url, endpoints=(
            EndpointSetting("all", knows_old.url, (new, old)),
            EndpointSetting("service-only", knows_new.url, (new,), ("service.*",))))
        sent = {sid: emit(sid, 4) + emit(sid, 1, "service.ready") for sid in (11, 12, 13)}
        with webhooks.Deliverer(settings, threads=3):
            wait_until(lambda: len(knows_old.acked_ids()) == 15
                       and len(knows_new.acked_ids()) == 3, 20, "every event delivered")
        assert all(r.verified for r in knows_old.received + knows_new.received)
        assert knows_old.per_service() == {sid: ids(p) for sid, p in sent.items()}
        assert knows_new.per_service() == {sid: ids(p[-1:]) for sid, p in sent.items()}
        assert knows_old.overlaps == [] == knows_new.overlaps
        bodies = {p.event_id: p.body for ps in sent.values() for p in ps}
        for r in knows_old.received:  # the exchange's bytes, the event id as webhook-id
            assert r.headers["webhook-id"] == r.event["event_id"]
            assert r.body == bodies[r.event["event_id"]]
            assert len(r.headers["webhook-signature"].split(" ")) == 2
        assert len(knows_new.received[0].headers["webhook-signature"].split(" ")) == 1
        rows = {r["name"]: r for r in webhooks.status()}
        assert rows["all"]["backlog"] == 0 and rows["all"]["delivered"] == 15


def test_a_failing_service_is_retried_then_parked_and_never_overtaken(
        db, tmp_path, database_url, amqp_url):
    secret = new_secret()
    broken = threading.Event()
    broken.set()
    answer = lambda event: 500 if broken.is_set() and event["service_id"] == 22 else 200  # noqa: E731
    with Receiver(secret, answer) as receiver:
        settings = with_delivery(make_settings(tmp_path, database_url, amqp_url, endpoints=(
            EndpointSetting("p", receiver.url, (secret,)),)), retry_for_s=0.8)
        ok, failing = emit(21, 3), emit(22, 3)
        with webhooks.Deliverer(settings, threads=2):
            wait_until(lambda: any(r["parked_streams"] for r in webhooks.status()), 15,
                       "service 22 parked")
            assert receiver.per_service()[21] == ids(ok)  # the other service went on
            tried = [r.event["event_id"] for r in receiver.received
                     if r.event["service_id"] == 22]
            assert len(tried) >= 3 and set(tried) == {failing[0].event_id}  # retried, alone
            (row,) = webhooks.status()
            (parked,) = row["failing"]
            assert parked["service_id"] == 22 and "HTTP 500" in parked["parked"]
            assert row["backlog"] == 3
            config = tmp_path / "cli.toml"
            config.write_text(f'[database]\nurl = "{database_url}"\n[amqp]\nurl = "{amqp_url}"\n'
                              f'[secrets]\nkey_file = "{settings.secret_key_file}"\n')
            shown = _cli(config, "webhooks")
            assert "p (id " in shown and "backlog 3" in shown, shown
            assert "sid:22 PARKED: parked after" in shown and "HTTP 500" in shown, shown
            broken.clear()
            assert "1 parked service stream due again" in _cli(config, "webhooks", "retry", "p",
                                                               "--service", "22")
            parked = REGISTRY.get_sample_value("pvekvm_webhook_attempts_total",
                                               {"endpoint": "p", "result": "parked"})
            assert parked is not None and parked >= 1
            wait_until(lambda: receiver.per_service().get(22) == ids(failing), 10,
                       "service 22 delivered after the operator's retry")
        assert webhooks.status()[0]["backlog"] == 0


def test_a_hanging_receiver_does_not_take_every_thread_from_the_other_endpoints(
        db, tmp_path, database_url, amqp_url):
    secret = new_secret()
    with Receiver(secret, delay_s=3.0) as hanging, Receiver(secret) as healthy:
        settings = with_delivery(make_settings(tmp_path, database_url, amqp_url, endpoints=(
            EndpointSetting("hanging", hanging.url, (secret,), ("service.*",)),
            EndpointSetting("healthy", healthy.url, (secret,), ("operation.*",)))),
            endpoint_concurrency=2)
        sent = {sid: emit(sid, 1) + emit(sid, 1, "service.ready") for sid in range(41, 49)}
        with webhooks.Deliverer(settings, threads=4):
            wait_until(lambda: len(healthy.acked_ids()) == 8, 20, "the healthy endpoint served")
            assert hanging.acked() == []  # its attempts are still timing out meanwhile
        assert healthy.per_service() == {sid: ids(p[:1]) for sid, p in sent.items()}
        assert 1 <= hanging.max_in_flight <= 2


def _cli(config: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "pvekvm", "--config", str(config), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _deliverer(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workers.webhooks", "--config", str(config),
                             "--threads", "3"], cwd=ROOT, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("services, per_service, kills", [
    (4, 25, 1), pytest.param(8, 60, 4, marks=pytest.mark.slow)])
def test_kill_9_of_the_deliverer_loses_nothing_and_keeps_each_services_order(
        db, tmp_path, database_url, amqp_url, services, per_service, kills):
    secret = new_secret()
    total = services * per_service
    with Receiver(secret, delay_s=0.01) as receiver:
        settings = make_settings(tmp_path, database_url, amqp_url)
        config = tmp_path / "pvekvm.toml"
        config.write_text(
            f'[database]\nurl = "{database_url}"\n[amqp]\nurl = "{amqp_url}"\n'
            f'[secrets]\nkey_file = "{settings.secret_key_file}"\n'
            f'[[webhooks]]\nname = "k"\nurl = "{receiver.url}"\nsecret = "{secret}"\n'
            "[webhook_delivery]\ntimeout_s = 1.0\nlease_s = 3.0\nretry_first_s = 0.1\n"
            "retry_max_s = 0.4\npoll_s = 0.05\n")
        log = tmp_path / "deliverer.log"
        running = [_deliverer(config, log)]
        try:
            wait_until(lambda: database.execute_sql(
                "SELECT COUNT(*) FROM webhook_endpoints").fetchone()[0] == 1, 20,
                "the deliverer registered the settings endpoint")
            sent = {sid: emit(sid, per_service) for sid in range(31, 31 + services)}
            for k in range(kills):
                def under_way(k: int = k) -> bool:
                    return len(receiver.acked_ids()) >= (k + 1) * total // (kills + 2)
                wait_until(under_way, 30, "deliveries under way")
                victim = running.pop(0)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(5)
                running.append(_deliverer(config, log))  # another takes over
            assert len(receiver.acked_ids()) < total, "killed too late to mean anything"
            running.append(_deliverer(config, log))  # and scaled out
            wait_until(lambda: len(receiver.acked_ids()) == total, 30 + 5 * kills,
                       f"all {total} events delivered (log: {log})")
        finally:
            for p in running:
                p.send_signal(signal.SIGTERM)
            for p in running:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        assert all(r.verified for r in receiver.received)
        assert receiver.per_service() == {sid: ids(p) for sid, p in sent.items()}
        assert receiver.overlaps == []
        assert webhooks.status()[0]["backlog"] == 0


def test_delivered_rows_are_forgotten_after_the_keep_time_and_the_backlog_never(db):
    for seq, status, age_days in ((1, "delivered", 10), (2, "delivered", 1), (3, "dropped", 8),
                                  (4, "queued", 30), (5, "parked", 30)):
        database.execute_sql(
            "INSERT INTO webhook_deliveries (endpoint_id, seq, status, created_at, delivered_at) "
            "VALUES (1, %s, %s, NOW() - INTERVAL %s DAY, IF(%s IN ('delivered', 'dropped'), "
            "NOW() - INTERVAL %s DAY, NULL))", (seq, status, age_days, status, age_days))
    assert webhooks.prune_once(FAST) == 2
    left = database.execute_sql("SELECT seq FROM webhook_deliveries ORDER BY seq").fetchall()
    assert [s for (s,) in left] == [2, 4, 5]
