"""The lifecycle, in one place: what an operation and a service may be, what a machine is, and
how a step's faults are retried.

- :class:`OpStatus` is an operation's status, :class:`ServiceStatus` a service's; nothing else
  spells them (the database stores the values).
- A :class:`Machine` is an operation kind as data: the billing event that starts it
  (``event``), the service statuses it may start from (``starts_from``, read by intake when it
  accepts an order and by workers/operations.py when the order's turn comes: :func:`refusal`),
  the service changes it makes (``busy_status`` while it runs, ``done_status``,
  ``suspended_after`` and the columns ``sets_when_done`` when it completes, ``failed_status``
  when refused or cancelled; what its steps record goes through pvekvm/service_changes.py), and its
  transitions: at ``state`` the ``pool`` workers run a step, then the operation is at ``then``.
  Building a machine checks that the states chain, that no state appears twice and that every
  pool exists: a typo fails at import, not as an unroutable message at run time.
- :func:`chain` writes transitions as explicit (state, :class:`Action`) pairs, so no reader
  counts positions to know which step a state runs. ``python -m pvekvm machines [KIND]`` prints
  every machine's table with the retry policy each transition resolves to.

Retrying, all five layers, innermost first (what a fault meets on its way out):

1. **Proxmox client** (pvekvm/proxmox.py ``Proxmox._call``): a call that failed transiently and
   cannot have been carried out (a GET, or a request that never reached PVE) is repeated inline,
   3 tries in all within about half a second; another endpoint of the cluster is tried when one
   does not answer (pvekvm/endpoints.py, ``[proxmox] endpoint_retry_s``).
2. **Step policy** (:class:`RetryPolicy`, per transition over ``[engine] retry_first_s``,
   ``retry_max_s``, ``max_attempts``, ``wait_first_s``, ``wait_max_s``): a step answering
   :class:`Retry`, or a transient Proxmox error, runs again after :func:`backoff` (doubling, on
   the broker's delay tiers); after ``max_attempts`` the operation pauses. Waiting for a turn
   (``Retry(counts=False)``, a clone slot) never gives up. A paused operation may then resume by
   itself on its own backoff (workers/autoresume.py, ``[engine] auto_resume_*``).
3. **Lock busy** (workers/engine.py ``BUSY_DELAY_S``): the operation row is locked ``NOWAIT``;
   a lock wait, deadlock or Galera conflict commits nothing and the same nudge is published
   again 0.25 s later (not returned to the queue, where it would count against its limit).
4. **Database outage** (workers/consumer.py ``DB_OUTAGE_PATIENCE_S``): while MariaDB does not
   answer, the worker keeps the message in hand, unacknowledged and uncounted, and tries again
   with a backoff up to 5 s, for up to 300 s; then it gives the message back.
5. **Broker delivery limit** (pvekvm/messaging.py ``DELIVERY_LIMIT``): a message given back
   (an unexpected failure) is redelivered by RabbitMQ; on its 10th delivery the worker parks it
   in the dead-letter queue with its reason instead of handling it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from pvekvm.messaging import POOLS, delay_tier

if TYPE_CHECKING:
    from pvekvm.config import EngineSettings
    from steps.context import StepContext


class OpStatus(StrEnum):
    QUEUED = "queued"        # accepted, waiting for the service's running operation
    RUNNING = "running"
    PAUSED = "paused"        # a fault: waits at its last good state for resume or cancel
    DONE = "done"
    FAILED = "failed"        # refused: the request was wrong or not allowed
    CANCELLED = "cancelled"  # abandoned by an operator


UNFINISHED = (OpStatus.QUEUED, OpStatus.RUNNING, OpStatus.PAUSED)
FINISHED = (OpStatus.DONE, OpStatus.FAILED, OpStatus.CANCELLED)


class ServiceStatus(StrEnum):
    """A service's status: ``pending`` until its deploy runs, then the busy status of the
    operation running on it (``deploying``, ``changing``, ...) or the one it left. The
    ``suspended`` column is kept apart: a suspended service whose package changes is
    ``changing`` and still suspended."""

    PENDING = "pending"
    DEPLOYING = "deploying"
    READY = "ready"
    FAILED = "failed"              # its deploy was refused or cancelled
    CHANGING = "changing"
    REINSTALLING = "reinstalling"
    RESTORING = "restoring"
    RESETTING = "resetting"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    UNSUSPENDING = "unsuspending"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


GONE = frozenset({ServiceStatus.TERMINATING, ServiceStatus.TERMINATED})
SUSPENDED_STATUSES = frozenset({ServiceStatus.SUSPENDING, ServiceStatus.SUSPENDED})
ANY_STATUS = frozenset(ServiceStatus)
LIVE = ANY_STATUS - GONE - SUSPENDED_STATUSES  # what most machines start from
LIVE_OR_SUSPENDED = ANY_STATUS - GONE


def standing(status: str, suspended: bool) -> str:
    """The status a start is judged by: a service with its ``suspended`` flag set counts as
    ``suspended`` whatever operation runs on it (unless it is gone)."""
    if status not in GONE and (suspended or status in SUSPENDED_STATUSES):
        return ServiceStatus.SUSPENDED
    return status


# --- what a step may answer -------------------------------------------------------------------

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


# --- retrying -----------------------------------------------------------------------------------

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

    @staticmethod
    def from_settings(engine: EngineSettings) -> RetryPolicy:
        """The settings' policy, under every transition's own overrides."""
        return RetryPolicy(first_s=engine.retry_first_s, max_s=engine.retry_max_s,
                           max_attempts=engine.max_attempts, wait_s=engine.wait_first_s,
                           wait_max_s=engine.wait_max_s)


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


# --- machines -----------------------------------------------------------------------------------

#: Why a step has nothing to do, decided from the database alone (the package, the service),
#: never from Proxmox; None = it may have work.
SkipIf = Callable[["StepContext"], "str | None"]


@dataclass(frozen=True)
class Action:
    """A step as a machine runs it: the function, the worker pool, the manual's label, how its
    faults are retried (unset fields: the settings') and ``skip_if`` (see :func:`T`)."""

    pool: str
    run: Step
    label: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    skip_if: SkipIf | None = None


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


def chain(*pairs: tuple[str, Action], then: str) -> tuple[Transition, ...]:
    """Transitions from explicit ``(state, action)`` pairs, one line each: at ``state`` the
    ``action`` runs, then the operation is at the next pair's state (after the last pair, at
    ``then``)."""
    nexts = [state for state, _ in pairs[1:]] + [then]
    return tuple(Transition(state, a.pool, a.run, nxt, a.label, a.retry, a.skip_if)
                 for (state, a), nxt in zip(pairs, nexts, strict=True))


@dataclass(frozen=True)
class Machine:
    kind: str
    title: str                          # "Deploy", "ChangePackage", ... (operator output)
    transitions: tuple[Transition, ...]
    event: str | None = None            # the billing event that starts it (None: started by
                                        # the engine itself: the scheduler, a drain)
    starts_from: frozenset[ServiceStatus] = LIVE  # the statuses it may start from (standing())
    busy_status: ServiceStatus | None = None    # service status while it runs (None: unchanged)
    done_status: ServiceStatus | None = None    # when it completes (None: unchanged)
    failed_status: ServiceStatus | None = None  # when refused/cancelled (None: the one before)
    suspended_after: bool | None = None  # the service's suspended flag once it completes
    sets_when_done: tuple[str, ...] = ()  # service columns it takes from its params["service"]
                                          # when it completes (intake or the scheduler fills
                                          # them in); any other column there is ignored
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
        unknown = set(self.starts_from) - ANY_STATUS
        if unknown:
            raise ValueError(f"{self.kind}: starts from unknown statuses {sorted(unknown)}")
        object.__setattr__(self, "first_state", self.transitions[0].state)
        object.__setattr__(self, "final_state", self.transitions[-1].then)

    @property
    def runs_while_suspended(self) -> bool:
        """It may run on a suspended service (it never starts its VM)."""
        return ServiceStatus.SUSPENDED in self.starts_from

    def at(self, state: str) -> Transition | None:
        """The transition to run from ``state`` (None at the final state)."""
        return next((t for t in self.transitions if t.state == state), None)

    def number(self, state: str) -> int:
        """1-based position of the transition leaving ``state``."""
        return next(i for i, t in enumerate(self.transitions, 1) if t.state == state)

    @property
    def pools(self) -> frozenset[str]:
        return frozenset(t.pool for t in self.transitions)


def refusal(machine: Machine, service_id: int, status: str, suspended: bool) -> str | None:
    """Why ``machine`` may not start on a service with ``status`` and ``suspended`` flag (None:
    it may): the one reading of ``starts_from``."""
    now = standing(status, suspended)
    if now in machine.starts_from:
        return None
    if now == ServiceStatus.SUSPENDED:
        return (f"service {service_id} is suspended: only unsuspend, terminate and package "
                f"changes are accepted")
    return f"service {service_id} is {status}"


def machine_of_event(machines: Iterable[Machine]) -> dict[str, str]:
    """Billing event type → the kind of the machine it starts."""
    return {m.event: m.kind for m in machines if m.event is not None}


def sql_list(statuses: Iterable[str]) -> str:
    """``('a', 'b')``: statuses for an SQL ``IN`` written once into a statement (the values
    are this module's constants, never input)."""
    return "(" + ", ".join(f"'{s}'" for s in sorted(statuses)) + ")"
