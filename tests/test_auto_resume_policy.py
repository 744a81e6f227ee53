"""When a paused operation resumes by itself, and which faults name a dependency to probe."""

from __future__ import annotations

from datetime import datetime, timedelta

from pvekvm.config import EngineSettings
from pvekvm.mail import MailError
from pvekvm.proxmox import ProxmoxError, task_failure
from steps.machine import StepFailed
from workers.pauses import dependency_of, dependency_of_reason, next_auto_resume

T0 = datetime(2026, 12, 6, 12, 0)


def test_the_default_backoff_is_5_10_20_40_minutes_then_hourly_for_24_hours():
    engine = EngineSettings()
    now, waits, resumes = T0, [], 0
    while (at := next_auto_resume(engine, T0, resumes, now)) is not None:
        waits.append((at - now) / timedelta(minutes=1))
        now, resumes = at + timedelta(seconds=30), resumes + 1  # it ran, paused again
    assert waits[:6] == [5, 10, 20, 40, 60, 60]
    assert set(waits[4:]) == {60}  # capped: hourly from then on
    assert now - T0 <= timedelta(hours=24, minutes=1)  # the last one within auto_resume_for_h
    assert next_auto_resume(engine, T0, resumes, now) is None  # then it waits for an operator
    assert len(waits) == 26


def test_a_wait_is_never_under_a_second_and_the_limit_is_the_settings():
    engine = EngineSettings(auto_resume_after_s=(0.0, 2.0), auto_resume_for_h=10 / 3600)
    assert next_auto_resume(engine, T0, 0, T0) == T0 + timedelta(seconds=1)
    assert next_auto_resume(engine, T0, 7, T0) == T0 + timedelta(seconds=2)
    assert next_auto_resume(engine, T0, 1, T0 + timedelta(seconds=8)) == \
        T0 + timedelta(seconds=10)
    assert next_auto_resume(engine, T0, 1, T0 + timedelta(seconds=8.5)) is None


def test_only_a_dependency_that_did_not_answer_is_named():
    down = ProxmoxError("connection problem: refused", transient=True, not_sent=True)
    assert dependency_of(down) == "proxmox"
    assert dependency_of(ProxmoxError("HTTP 503", transient=True, status=503)) == "proxmox"
    assert dependency_of(task_failure("command failed")) is None  # Proxmox answered
    assert dependency_of(ProxmoxError("no such VM", transient=False, status=500)) is None
    assert dependency_of(ProxmoxError("bad param", transient=False, refusal=True)) is None
    try:
        try:
            raise MailError("relay refused the connection", transient=True)
        except MailError as exc:
            raise StepFailed(f"mail: {exc}") from exc
    except StepFailed as failed:
        assert dependency_of(failed) == "mail"
    assert dependency_of(MailError("550 no such user", transient=False)) is None
    assert dependency_of(ValueError("a bug")) is None
    assert dependency_of_reason("mail: timed out (gave up after 8 attempts)") == "mail"
    assert dependency_of_reason("mail template: missing") is None


def test_the_shipped_alert_rules_name_metrics_pvekvm_exports():
    import re

    import yaml
    from prometheus_client import REGISTRY

    from pvekvm import metrics  # noqa: F401 - registers the metrics
    from pvekvm.config import ROOT

    rules = yaml.safe_load((ROOT / "config" / "prometheus-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    exported = {m.name + ("_total" if m.type == "counter" else "") for m in REGISTRY.collect()}
    named = {n for e in exprs for n in re.findall(r"pvekvm_\w+", e)}
    assert "pvekvm_operations_paused" in named and named <= exported
