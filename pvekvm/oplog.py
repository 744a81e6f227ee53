"""Operator output in the seed manual's v3.0 format, prefixed with the service id so lines
from many VMs interleave readably; and one service's history rebuilt from step_runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pvekvm.models import Operation, Service, StepRun

if TYPE_CHECKING:
    from steps.machine import Machine

MARK = {"success": "[+]", "skip": "[+]", "warn": "[~]", "retry": "[!]", "error": "[-]"}


def format_step(number: int, label: str, result: str, from_state: str, to_state: str,
                message: str, seconds: float) -> str:
    """``[+]  3. Resize system disk   success (set_cpu_ram -> set_system_disk_size)   [0.12s]``"""
    if result == "skip":
        label = f"{label} (skip — {message or 'no change'})"
    outcome = "success" if result in ("success", "skip") else \
        f"success — {message}" if result == "warn" else message
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


def header(machine: Machine, op: Operation, vmid: int | None, status: str) -> str:
    return f"--- {title(machine, op)}: service={op.service_id} vm={vmid or '-'} status={status} ---"


def complete_line(machine: Machine, op: Operation, status: str) -> str:
    return f"--- {title(machine, op)} complete: service={op.service_id} status={status} ---"


def paused_line(machine: Machine, op: Operation) -> str:
    return f"--- {title(machine, op)} paused: waiting at ({op.state}) ---"


def history(service_id: int) -> str:
    """Every operation of a service as the manual's ``--- Deploy: … ---`` blocks."""
    from steps.machines import MACHINES

    svc = Service.get_or_none(Service.id == service_id)
    if svc is None:
        return f"no service {service_id}"
    blocks: list[str] = []
    for op in Operation.select().where(Operation.service_id == service_id).order_by(Operation.id):
        machine = MACHINES.get(op.kind)
        runs = list(StepRun.select().where(StepRun.operation_id == op.id).order_by(StepRun.id))
        first = runs[0].from_state if runs else op.state
        name = title(machine, op)
        vmid = next((r.vmid for r in reversed(runs) if r.vmid), svc.vmid)
        lines = [f"--- {name}: service={service_id} vm={vmid or '-'} status={first} ---"]
        for r in runs:
            number = machine.number(r.from_state) if machine and machine.at(r.from_state) else 0
            lines.append(format_step(number, r.label, r.result, r.from_state, r.to_state,
                                     r.message or "", r.duration_ms / 1000))
        if op.status == "done":
            lines.append(f"--- {name} complete: service={service_id} status="
                         f"{(machine.done_status if machine else None) or 'done'} ---")
        elif op.status == "paused":
            lines.append(f"--- {name} paused: waiting at ({op.state}) — {op.error} ---")
        else:
            lines.append(f"--- {name} {op.status}: at ({op.state}) ---")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) if blocks else f"service {service_id}: no operations"
