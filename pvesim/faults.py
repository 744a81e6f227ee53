"""Fault injection settings (set from ``--faults FILE.json`` or ``PUT /_sim/faults``)."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Faults:
    """Per-run fault knobs. All rates are fractions in [0, 1].

    error_rate: API calls answering ``error_status`` before anything is changed.
    error_path: only calls whose ``METHOD /path`` this regex finds get error_rate ("" = all).
    error_errors: the ``errors`` object of the injected answer (PVE sends one with 400s).
    latency_ms: delay added to every API call.
    task_error_rate: tasks that end with an error exitstatus (their change is not applied).
    lock_timeout_rate: modifying VM calls failing with PVE's config lock timeout message.
    status_400_after_dispatch: for this many ms after a task starts, its status answers
        400 ``{"upid": "no such task"}`` (as a freshly proxied task can on real PVE).
    down_nodes: node names whose proxied calls answer 595 "No route to host".
    apply_to_ticket: also apply error_rate/latency to ``/access/ticket``.
    seed: optional RNG seed for reproducible runs.
    """

    error_rate: float = 0.0
    error_status: int = 500
    error_message: str = "pvesim: injected fault"
    error_path: str = ""
    error_errors: dict[str, str] | None = None
    latency_ms: float = 0.0
    task_error_rate: float = 0.0
    lock_timeout_rate: float = 0.0
    status_400_after_dispatch: float = 0.0
    down_nodes: list[str] = field(default_factory=list)
    apply_to_ticket: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Faults:
        data = data or {}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        if isinstance(data.get("status_400_after_dispatch"), bool):
            data = {**data, "status_400_after_dispatch": 500.0 if data[
                "status_400_after_dispatch"] else 0.0}
        try:  # a bad pattern is refused when set, not on every call
            re.compile(str(data.get("error_path") or ""))
        except re.error as e:
            raise ValueError(f"error_path: {e}") from None
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        with self._lock:
            return self._rng.random() < rate
