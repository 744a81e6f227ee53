"""What a Proxmox VE error means for the operation, decided in one place.

PVE answers most failures (any ``die`` in API code) as HTTP 500 with the message as the status
line's reason phrase, parameter checks as 400 ``Parameter verification failed.`` with an
``errors`` object, and a failed worker task as its ``exitstatus`` text. So an answer is sorted by
status and message pattern, first matching rule wins:

- ``TRANSIENT``: trying again later can succeed (a lock, a timeout, the network): retried.
- ``REFUSAL``: what was asked can never succeed as asked (a reserved or invalid name, a snapshot
  or volume that is not there, a disk asked to shrink): the operation fails at once with the
  reason, the service is freed.
- ``FAULT``: a permanent answer about our own setup (the API token's rights, a storage or node
  the catalog names, a method PVE lacks): the operation pauses for an operator, who fixes it and
  resumes (the order is not thrown away).

Messages are quoted from PVE's source (qemu-server API2/Qemu.pm, pve-guest-common
AbstractConfig.pm, pve-common JSONSchema.pm/Tools.pm, pve-storage); README "PVE error classes"
has the table and the test of each rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    TRANSIENT = "transient"
    REFUSAL = "refusal"
    FAULT = "fault"


@dataclass(frozen=True)
class Rule:
    kind: Kind
    statuses: frozenset[int] | None  # None: any status (a task's exitstatus counts as 500)
    pattern: re.Pattern[str]
    example: str                     # PVE's own text, as the table and the tests use it


def _rule(kind: Kind, statuses: tuple[int, ...] | None, pattern: str, example: str) -> Rule:
    return Rule(kind, frozenset(statuses) if statuses else None,
                re.compile(pattern, re.IGNORECASE), example)


T, R, F = Kind.TRANSIENT, Kind.REFUSAL, Kind.FAULT

#: Ordered: the first rule whose statuses and pattern match decides.
RULES: tuple[Rule, ...] = (
    # transient first: a lock or timeout message must never be read as permanent
    _rule(T, (500,), r"\bis locked \(", "VM is locked (backup)"),
    _rule(T, (500,), r"can't lock file .* got timeout",
          "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"),
    _rule(T, (500,), r"file changed by other user\? Try again",
          "detected modified configuration - file changed by other user? Try again."),
    # refusals: the request itself
    _rule(R, (400,), r"", "Parameter verification failed."),
    _rule(R, (500,), r"\(reserved name\)",
          "unable to use snapshot name 'current' (reserved name)"),
    _rule(R, (500,), r"snapshot name '.*' already used", "snapshot name 'daily' already used"),
    _rule(R, (500,), r"snapshot '.*' does not exist", "snapshot 'daily' does not exist"),
    _rule(R, (500,), r"can't take a snapshot if it's a template",
          "you can't take a snapshot if it's a template"),
    _rule(R, (500,), r"snapshot feature is not available", "snapshot feature is not available"),
    _rule(R, (500,), r"can't find file '|volume '.*' does not exist",
          "can't find file 'local:backup/vzdump-qemu-100-2026_01_01-00_00_00.vma.zst'"),
    _rule(R, (500,), r"cannot remove protected (snapshot|volume)",
          "cannot remove protected snapshot"),
    _rule(R, (500,), r"shrinking disks is not supported|can't shrink",
          "shrinking disks is not supported"),
    # faults: our own token, catalog or PVE version
    _rule(F, (401, 403), r"", "Permission check failed (/vms/100, VM.Snapshot)"),
    _rule(F, (501,), r"", "Method 'POST /nodes/pve1/qemu/100/foo' not implemented"),
    _rule(F, (500,), r"not supported|does not exist|already exists|invalid|not allowed|"
          r"unable to parse|no such", "storage 'fast' does not exist"),
)


def classify(status: int | None, message: str) -> Kind:
    """The kind of one PVE answer: ``status`` None for a failed task's exitstatus."""
    code = 500 if status is None else status
    for rule in RULES:
        if (rule.statuses is None or code in rule.statuses) and rule.pattern.search(message):
            return rule.kind
    return T if code >= 500 else F  # 5xx (502/503/595/596 proxy and network answers) retry


def errors_text(errors: object, limit: int = 300) -> str:
    """PVE's per-parameter ``errors`` object as ``name: message; ...``, bounded (it may quote
    the value sent; the reason that carries it goes to billing and the logs)."""
    if isinstance(errors, dict):
        text = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items()))
    else:
        text = str(errors).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."
