"""State machines as data, and what a step may answer.

A machine is an ordered list of transitions: when an operation is at ``state``, the worker
pool ``pool`` runs ``run`` and, on success, moves the operation to ``then``; ``retry`` says how
a fault in that step is retried (unset fields come from the settings' default policy). The last
transition's ``then`` is the machine's final state. Building a machine checks that the states
chain, that no state appears twice and that every pool exists: a typo fails at import, not as an
unroutable message at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from pvekvm.messaging import POOLS, delay_tier

if TYPE_CHECKING:
    from steps.context import StepContext


@dataclass(frozen=True)
class Done:
    """The step's work is in place; advance. ``skipped`` = nothing needed doing."""

    message: str = ""
    skipped: bool = False
    warning: bool = False  # advanced, but something is owed (DNS deferred): shown to operators


@dataclass(frozen=True)
class Wait:
    """A Proxmox task was started: poll ``upid`` on ``node``, then run the step again."""

    upid: str
    node: str


@dataclass(frozen=True)
class Retry:
    """Not possible yet (a lock, a busy storage, a transient error): run the step again later,
    after the delay its transition's retry policy gives. ``counts=False``: waiting our turn (a
    clone slot), not a failed attempt. ``tell``: the start of a wait billing should hear of
    (recorded in the history and sent as ``operation.waiting`` with the reason)."""

    reason: str
    counts: bool = True
    tell: bool = False


class StepFailed(Exception):
    """A fault retrying cannot fix (Proxmox refused, a VM that is not ours at our VMID): the
    operation pauses at the last good state with this message until an operator resumes or
    cancels it."""


class Refused(Exception):
    """The request itself is wrong or not allowed now (over a limit, an unknown snapshot or ISO,
    a suspended service asked to start): the operation fails at once with this reason, changes
    nothing more and frees the service."""


StepResult = Done | Wait | Retry
Step = Callable[["StepContext"], StepResult]


@dataclass(frozen=True)
class RetryPolicy:
    """How a step's faults are retried. A counted retry waits ``first_s``, doubling up to
    ``max_s``; after ``max_attempts`` the operation pauses. Waiting for a turn (``counts=False``)
    backs off from ``wait_s`` to ``wait_max_s`` and never gives up. ``None`` = take the
    default's value (see :meth:`over`)."""

    first_s: float | None = None
    max_s: float | None = None
    max_attempts: int | None = None
    wait_s: float | None = None
    wait_max_s: float | None = None

    def over(self, default: RetryPolicy) -> RetryPolicy:
        """This policy with its unset fields taken from ``default``."""
        return replace(default, **{f.name: getattr(self, f.name) for f in fields(self)
                                   if getattr(self, f.name) is not None})


@dataclass(frozen=True)
class Backoff:
    """The delay asked for and the delay tier (ms) the message really waits in."""

    want_s: float
    tier_ms: int

    @property
    def seconds(self) -> float:
        return self.tier_ms / 1000


def backoff(policy: RetryPolicy, n: int, *, waiting: bool = False) -> Backoff:
    """The delay before the ``n``-th retry (1-based) under a resolved ``policy``: the one
    place where retry delays are computed, and the tier each lands on."""
    base, cap = (policy.wait_s, policy.wait_max_s) if waiting else (policy.first_s, policy.max_s)
    assert base is not None and cap is not None, "resolve the policy with .over() first"
    want = min(base * 2 ** max(n - 1, 0), cap)
    return Backoff(want, delay_tier(want))


#: Why a step has nothing to do, decided from the database alone (the package, the service),
#: never from Proxmox; None = it may have work.
SkipIf = Callable[["StepContext"], "str | None"]


@dataclass(frozen=True)
class Transition:
    state: str
    pool: str
    run: Step
    then: str
    label: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    skip_if: SkipIf | None = None  # the engine passes the step by in the previous step's commit


def T(state: str, *, pool: str, run: Step, then: str, label: str,
      retry: RetryPolicy | None = None, skip_if: SkipIf | None = None) -> Transition:
    """One transition, written with keywords so a reader can grep for each state.
    ``skip_if``: when it gives a reason, the step is recorded as skipped with that reason and
    passed by without a message of its own (the step itself must skip in the same case, so a
    message that does reach it — after a resume — changes nothing)."""
    return Transition(state, pool, run, then, label, retry or RetryPolicy(), skip_if)


@dataclass(frozen=True)
class Machine:
    kind: str
    title: str                          # "Deploy", "ChangePackage", ... (operator output)
    transitions: tuple[Transition, ...]
    busy_status: str | None = None      # service status while it runs (None: unchanged)
    done_status: str | None = None      # service status when it completes (None: unchanged)
    failed_status: str | None = None    # status when refused/cancelled (None: the one before)
    runs_while_suspended: bool = False  # may run on a suspended service (never starts its VM)
    suspended_after: bool | None = None  # the service's suspended flag once it completes
    admission: bool = False             # at most [engine] window of this kind run at once
    completed_event: str | None = None  # the event billing gets when it completes (besides
                                        # operation.completed): workers/outbox.py
    way_out: tuple[str, ...] = ()       # events the client may send when it failed, offered in
                                        # operation.failed's ``choices`` (workers/operations.py)
    first_state: str = field(init=False)
    final_state: str = field(init=False)

    def __post_init__(self) -> None:
        states = [t.state for t in self.transitions]
        if len(set(states)) != len(states):
            raise ValueError(f"{self.kind}: a state appears twice")
        for a, b in zip(self.transitions, self.transitions[1:], strict=False):
            if a.then != b.state:
                raise ValueError(f"{self.kind}: {a.then} does not lead to {b.state}")
        for t in self.transitions:
            if t.pool not in POOLS:
                raise ValueError(f"{self.kind}: state {t.state} names unknown pool {t.pool!r}"
                                 f" (pools: {', '.join(POOLS)})")
        object.__setattr__(self, "first_state", self.transitions[0].state)
        object.__setattr__(self, "final_state", self.transitions[-1].then)

    def at(self, state: str) -> Transition | None:
        """The transition to run from ``state`` (None at the final state)."""
        return next((t for t in self.transitions if t.state == state), None)

    def number(self, state: str) -> int:
        """1-based position of the transition leaving ``state``."""
        return next(i for i, t in enumerate(self.transitions, 1) if t.state == state)

    @property
    def pools(self) -> frozenset[str]:
        return frozenset(t.pool for t in self.transitions)
