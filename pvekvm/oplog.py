"""Operator output in the seed manual's v3.0 format, prefixed with the service id so lines
from many VMs interleave readably (formatting only; workers/admin.py rebuilds a history)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pvekvm.models import Operation

if TYPE_CHECKING:
    from pvekvm.lifecycle import Machine

MARK = {"success": "[+]", "skip": "[+]", "warn": "[~]", "retry": "[!]", "wait": "[.]",
        "error": "[-]"}


#: steps whose success message is the point: the placement's node and why
SAYS_WHY = frozenset({"Choose node"})


def format_step(number: int, label: str, result: str, from_state: str, to_state: str,
                message: str, seconds: float) -> str:
    """``[+]  3. Resize system disk   success (set_cpu_ram -> set_system_disk_size)   [0.12s]``"""
    if result == "skip":
        label = f"{label} (skip — {message or 'no change'})"
    outcome = f"success — {message}" if result == "warn" or (
        result == "success" and label in SAYS_WHY and message) else \
        "success" if result in ("success", "skip") else message
    return (f"{MARK.get(result, '[?]')} {number:>2}. {label:<40} {outcome} "
            f"({from_state} -> {to_state})  [{seconds:.2f}s]")


def step_line(service_id: int, number: int, label: str, result: str, from_state: str,
              to_state: str, message: str, seconds: float) -> str:
    return f"sid:{service_id} " + format_step(number, label, result, from_state, to_state,
                                              message, seconds)


def title(machine: Machine | None, op: Operation) -> str:
    """The block title; an operation with an ``action`` (power) names it: ``Power (stop)``."""
    name = machine.title if machine else op.kind
    try:
        action = json.loads(op.params or "{}").get("action")
    except (ValueError, AttributeError):
        action = None
    return f"{name} ({action})" if isinstance(action, str) and action else name


def complete_line(machine: Machine, op: Operation, status: str) -> str:
    return f"--- {title(machine, op)} complete: service={op.service_id} status={status} ---"


def paused_line(machine: Machine, op: Operation) -> str:
    return f"--- {title(machine, op)} paused: waiting at ({op.state}) ---"


def refused_line(machine: Machine, op: Operation, reason: str) -> str:
    return f"--- {title(machine, op)} refused: service={op.service_id} — {reason} ---"
