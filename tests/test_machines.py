"""The state machines as data: checked when they are built, and the map of every pool."""

from __future__ import annotations

import pytest

from pvekvm.messaging import POOLS, delay_tier
from steps.machine import Done, Machine, RetryPolicy, T, backoff
from steps.machines import MACHINES


def _ok(ctx):
    return Done()


def test_every_pool_has_work_and_every_transition_a_declared_pool():
    used = {t.pool for m in MACHINES.values() for t in m.transitions}
    assert used == set(POOLS)


def test_a_typo_in_a_pool_fails_when_the_machine_is_built():
    with pytest.raises(ValueError, match="unknown pool 'clnoe'"):
        Machine("x", "X", (T("a", pool="clnoe", run=_ok, then="b", label="A"),))


def test_states_must_chain_and_be_unique():
    with pytest.raises(ValueError, match="does not lead to"):
        Machine("x", "X", (T("a", pool="ip", run=_ok, then="b", label="A"),
                           T("c", pool="ip", run=_ok, then="d", label="C")))
    with pytest.raises(ValueError, match="appears twice"):
        Machine("x", "X", (T("a", pool="ip", run=_ok, then="a", label="A"),
                           T("a", pool="ip", run=_ok, then="b", label="A")))


def test_backoff_says_the_tier_a_delay_really_waits_in():
    policy = RetryPolicy(first_s=1.0, max_s=60.0, max_attempts=8, wait_s=0.5, wait_max_s=4.0)
    plan = [backoff(policy, n) for n in range(1, 8)]
    assert [b.want_s for b in plan] == [1, 2, 4, 8, 16, 32, 60]
    assert [b.seconds for b in plan] == [delay_tier(b.want_s) / 1000 for b in plan]
    assert [b.seconds for b in plan] == [1, 2, 5, 15, 60, 60, 60]
    assert backoff(policy, 9, waiting=True).want_s == 4.0


def test_a_transition_policy_keeps_the_defaults_it_does_not_set():
    default = RetryPolicy(first_s=2.0, max_s=60.0, max_attempts=8, wait_s=0.5, wait_max_s=4.0)
    verify = MACHINES["deploy"].at("starting")
    assert verify is not None
    resolved = verify.retry.over(default)
    assert resolved.first_s == 5.0 and resolved.max_attempts == 8
