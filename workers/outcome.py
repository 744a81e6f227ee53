"""What handling one message asks the consumer to do after the database commit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pvekvm.limits import MAX_OPERATION_ID
from pvekvm.models import Operation
from workers.outbox import Pending
from workers.refusals import Refusal


@dataclass(frozen=True)
class Nudge:
    """A step message: ids only, never a secret."""

    pool: str
    operation_id: int
    nudge_id: str
    state: str
    delay_s: float = 0.0
    # the nudge in hand sent again (its row was locked): it was published before it reached us,
    # so nothing marks it published — that UPDATE would wait on the very lock that made it busy
    resend: bool = False

    def payload(self) -> dict[str, object]:
        return {"v": 1, "op": self.operation_id, "nudge": self.nudge_id, "state": self.state}


def _refuse(what: str) -> Any:
    raise ValueError(f"{what} is not allowed")


def _short_int(text: str) -> int:
    if len(text) > 20:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


def read_step_message(body: bytes) -> tuple[int, str, str]:
    """(operation id, nudge id, state) of a step message — the inverse of
    :meth:`Nudge.payload`; ValueError saying what is wrong with anything else."""
    try:
        msg = json.loads(body, parse_int=_short_int, parse_constant=_refuse)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(msg, dict):
        raise ValueError(f"expected a JSON object, got {type(msg).__name__}")
    op, nudge, state = msg.get("op"), msg.get("nudge"), msg.get("state", "")
    if type(op) is not int or not 0 < op <= MAX_OPERATION_ID:
        raise ValueError(f"'op' must be an operation id, got {repr(op)[:40]}")
    if type(nudge) is not str or not 0 < len(nudge) <= 36:
        raise ValueError(f"'nudge' must be a nudge id, got {repr(nudge)[:40]}")
    if type(state) is not str or len(state) > 48:
        raise ValueError(f"'state' must be a state name, got {repr(state)[:40]}")
    return op, nudge, state


@dataclass
class Outcome:
    publish: list[Nudge] = field(default_factory=list)  # confirmed, then marked published
    dead_reason: str | None = None                    # park the incoming message with this reason
    log: list[str] = field(default_factory=list)      # operator lines, printed after commit
    parked: list[tuple[bytes, str]] = field(default_factory=list)  # other refused messages
    refusals: list[Refusal] = field(default_factory=list)  # refused, recorded in the commit
    events: list[Pending] = field(default_factory=list)  # outbox rows written in the commit
    in_hand: int | None = None  # the operation whose step message was handled
    row: Operation | None = None  # its row as this commit left it (for the next step in a chain)

    def merge(self, other: Outcome) -> Outcome:
        """This outcome followed by ``other`` (one commit, one delivery)."""
        self.publish += other.publish
        self.log += other.log
        self.parked += other.parked
        self.refusals += other.refusals
        self.events += other.events
        self.dead_reason = self.dead_reason or other.dead_reason
        return self
