"""What handling one message asks the consumer to do after the database commit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Nudge:
    """A step message: ids only, never a secret."""

    pool: str
    operation_id: int
    nudge_id: str
    state: str
    delay_s: float = 0.0

    def payload(self) -> dict[str, object]:
        return {"v": 1, "op": self.operation_id, "nudge": self.nudge_id, "state": self.state}


@dataclass
class Outcome:
    publish: list[Nudge] = field(default_factory=list)
    mark_published: tuple[int, str] | None = None     # (operation id, nudge id) once confirmed
    dead_reason: str | None = None                    # park the incoming message with this reason
    log: list[str] = field(default_factory=list)      # operator lines, printed after commit
