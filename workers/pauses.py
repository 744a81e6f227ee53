"""What paused an operation, and when it resumes by itself: the pure policy that
:func:`workers.operations.pause` records and the scheduler's auto-resume job
(:mod:`workers.autoresume`) follows. Imports no worker module (operations imports it)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pvekvm import mail
from pvekvm.config import EngineSettings
from pvekvm.dns.model import DnsError
from pvekvm.proxmox import ProxmoxError

DEPENDENCIES = ("proxmox", "database", "mail", "dns")


def dependency_of(exc: BaseException | None) -> str | None:
    """The dependency whose not answering raised ``exc`` (or what caused it), else None. A
    failed Proxmox task or a refused call is Proxmox answering: not an outage."""
    for _ in range(8):  # a bounded walk of the cause chain
        if exc is None:
            return None
        if isinstance(exc, ProxmoxError):
            task = str(exc).startswith("task failed")
            return "proxmox" if exc.transient and not task else None
        if isinstance(exc, mail.MailError):
            return "mail" if exc.transient else None
        if isinstance(exc, DnsError):
            return "dns" if exc.transient else None
        exc = exc.__cause__ or exc.__context__
    return None


def dependency_of_reason(reason: str) -> str | None:
    """A pause without an exception in hand: a step's transient mail fault, retried until the
    attempts ran out, says so in its reason (steps/notify.py: ``mail: ...``)."""
    return "mail" if reason.startswith("mail: ") and "(gave up after" in reason else None


def next_auto_resume(engine: EngineSettings, since: datetime, resumes: int,
                     now: datetime) -> datetime | None:
    """When an operation paused since ``since`` and resumed ``resumes`` times by itself resumes
    next; None when that would be past ``auto_resume_for_h`` (it waits for an operator)."""
    waits = engine.auto_resume_after_s
    wait = max(1.0, waits[min(resumes, len(waits) - 1)])
    at = now + timedelta(seconds=wait)
    return at if at <= since + timedelta(hours=engine.auto_resume_for_h) else None
