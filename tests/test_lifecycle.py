"""The lifecycle's one home (pvekvm/lifecycle.py): each machine declares the event that starts it
and the statuses it may start from, its transitions are explicit (state, action) pairs, and
``python -m pvekvm machines`` prints the map with every resolved retry policy."""

from __future__ import annotations

import pytest

from pvekvm.apps.cli.main import main
from pvekvm.config import EngineSettings
from pvekvm.lifecycle import (
    GONE,
    Action,
    RetryPolicy,
    ServiceStatus,
    chain,
    machine_of_event,
    refusal,
)
from pvekvm.wire.orders import EVENT_TYPES
from steps import firewall, hardware
from steps.machines import MACHINES
from workers.intake import KIND_OF

S = ServiceStatus


def _ok(ctx):
    raise AssertionError("not run")


def test_every_billing_event_but_the_schedule_starts_the_machine_that_declares_it():
    assert set(KIND_OF) == set(EVENT_TYPES) - {"backup_schedule"}
    assert machine_of_event(MACHINES.values()) == KIND_OF
    assert KIND_OF["create"] == "deploy" and KIND_OF["backup_restore"] == "restore"
    assert {m.kind for m in MACHINES.values() if m.event is None} == {"throttle", "unthrottle"}


@pytest.mark.parametrize(("kind", "status", "suspended", "why"), [
    ("deploy", S.PENDING, False, None),
    ("power", S.READY, False, None),
    ("power", S.DEPLOYING, False, None),   # queued behind the deploy: judged when its turn comes
    ("power", S.READY, True, "suspended: only unsuspend, terminate and package changes"),
    ("power", S.SUSPENDING, False, "suspended: only"),
    ("change_package", S.SUSPENDED, True, None),
    ("unsuspend", S.SUSPENDED, True, None),
    ("terminate", S.CHANGING, True, None),
    ("terminate", S.TERMINATED, False, "service 7 is terminated"),
    ("unsuspend", S.TERMINATING, True, "service 7 is terminating"),  # gone beats suspended
    ("snapshot_create", S.TERMINATED, False, "service 7 is terminated"),
])
def test_a_machine_starts_only_from_the_statuses_it_declares(kind, status, suspended, why):
    reason = refusal(MACHINES[kind], 7, status, suspended)
    assert (reason is None) == (why is None)
    if why is not None:
        assert reason is not None and why in reason


def test_no_machine_but_deploy_starts_on_a_service_that_is_gone_and_deploy_only_on_a_new_one():
    assert MACHINES["deploy"].starts_from == {S.PENDING}
    assert all(not (m.starts_from & GONE) for m in MACHINES.values())
    may_run_suspended = {k for k, m in MACHINES.items() if m.runs_while_suspended}
    assert may_run_suspended == {"change_package", "terminate", "suspend", "unsuspend",
                                 "migrate", "language_change"}


def test_each_state_names_its_step_explicitly_where_the_manual_names_it_for_the_step_done():
    deploy, change = MACHINES["deploy"], MACHINES["change_package"]
    at_network = deploy.at("set_network")  # the manual: set_network -> set_firewall
    assert at_network is not None and at_network.run is firewall.set_firewall
    assert (at_network.label, at_network.pool, at_network.then) == \
        ("Configure firewall", "firewall", "set_firewall")
    at_cp_network = change.at("cp_network")  # change package names the step about to run
    assert at_cp_network is not None and at_cp_network.run is hardware.set_network


def test_chain_pairs_each_state_with_its_action_and_leads_to_the_next_pair():
    a = Action("ip", _ok, "A", RetryPolicy(first_s=9.0))
    b = Action("dns", _ok, "B")
    ts = chain(("one", a), ("two", b), then="end")
    assert [(t.state, t.label, t.pool, t.then) for t in ts] == \
        [("one", "A", "ip", "two"), ("two", "B", "dns", "end")]
    assert ts[0].retry.first_s == 9.0


def test_the_machines_command_prints_state_step_pool_next_and_the_resolved_retry(capsys):
    assert main(["machines", "deploy"]) == 0
    out = capsys.readouterr().out
    engine = EngineSettings()
    rows = {line.split()[1]: line for line in out.splitlines() if line[:1].isdigit()}
    firewall_row = rows["set_network"].split()
    assert firewall_row[2:4] == ["Configure", "firewall"]
    assert "steps.firewall.set_firewall" in firewall_row and "set_firewall" in firewall_row
    assert f"{engine.retry_first_s:g}s→{engine.retry_max_s:g}s ×{engine.max_attempts}" \
        in rows["set_network"]
    assert "5s*→" in rows["starting"]  # the verify step's own first delay, marked
    assert "0.5s*→1s*" in rows["welcome_sent"]  # waiting for a clone slot
    assert "starts from:  pending" in out and "billing event 'create'" in out
    assert "pvekvm/lifecycle.py" in out  # where the five layers of retrying are described
    assert len(rows) == len(MACHINES["deploy"].transitions)


def test_the_machines_command_refuses_an_unknown_kind(capsys):
    assert main(["machines", "deplyo"]) == 2
    assert "unknown kind 'deplyo'" in capsys.readouterr().err


def test_the_columns_a_machine_sets_when_done_are_declared_service_columns():
    from pvekvm.models import Service

    declared = {k: m.sets_when_done for k, m in MACHINES.items() if m.sets_when_done}
    assert declared == {"reinstall": ("template_id", "ssh_keys"),
                        "reset_password": ("ssh_keys",), "language_change": ("language",),
                        "throttle": ("throttled_period",), "unthrottle": ("throttled_period",)}
    assert {c for cols in declared.values() for c in cols} <= set(Service._meta.fields)
