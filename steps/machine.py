"""State machines as data, and what a step may answer.

A machine is an ordered list of transitions ``(state, pool, step, next_state, label)``: when an
operation is at ``state``, the worker pool ``pool`` runs ``step`` and, on success, moves the
operation to ``next_state``. The last transition's ``next_state`` is the machine's final state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    """Not possible yet (a lock, a busy storage, a transient error): try again after a delay."""

    reason: str
    delay_s: float = 2.0
    counts: bool = True   # False: waiting our turn (a clone slot), not a failed attempt


class StepFailed(Exception):
    """A permanent problem (bad package value, refused by Proxmox): the operation pauses at the
    last good state with this message until an operator resumes it."""


StepResult = Done | Wait | Retry
Step = Callable[["StepContext"], StepResult]


@dataclass(frozen=True)
class Transition:
    state: str
    pool: str
    step: Step
    next_state: str
    label: str


@dataclass(frozen=True)
class Machine:
    kind: str
    title: str                          # "Deploy", "ChangePackage", ... (operator output)
    transitions: tuple[Transition, ...]
    busy_status: str | None = None      # service status while it runs (None: unchanged)
    done_status: str | None = None      # service status when it completes (None: unchanged)
    first_state: str = field(init=False)
    final_state: str = field(init=False)

    def __post_init__(self) -> None:
        states = [t.state for t in self.transitions]
        if len(set(states)) != len(states):
            raise ValueError(f"{self.kind}: a state appears twice")
        for a, b in zip(self.transitions, self.transitions[1:], strict=False):
            if a.next_state != b.state:
                raise ValueError(f"{self.kind}: {a.next_state} does not lead to {b.state}")
        object.__setattr__(self, "first_state", self.transitions[0].state)
        object.__setattr__(self, "final_state", self.transitions[-1].next_state)

    def at(self, state: str) -> Transition | None:
        """The transition to run from ``state`` (None at the final state)."""
        return next((t for t in self.transitions if t.state == state), None)

    def number(self, state: str) -> int:
        """1-based position of the transition leaving ``state``."""
        return next(i for i, t in enumerate(self.transitions, 1) if t.state == state)

    def before(self, state: str) -> str | None:
        """The state just before ``state``."""
        return next((t.state for t in self.transitions if t.next_state == state), None)
