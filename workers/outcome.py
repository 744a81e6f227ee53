"""What handling one message asks the consumer to do after the database commit."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.outbox import Pending


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
    publish: list[Nudge] = field(default_factory=list)  # confirmed, then marked published
    dead_reason: str | None = None                    # park the incoming message with this reason
    log: list[str] = field(default_factory=list)      # operator lines, printed after commit
    parked: list[tuple[bytes, str]] = field(default_factory=list)  # other refused messages
    events: list[Pending] = field(default_factory=list)  # outbox rows written in the commit

    def merge(self, other: Outcome) -> Outcome:
        """This outcome followed by ``other`` (one commit, one delivery)."""
        self.publish += other.publish
        self.log += other.log
        self.parked += other.parked
        self.events += other.events
        self.dead_reason = self.dead_reason or other.dead_reason
        return self
