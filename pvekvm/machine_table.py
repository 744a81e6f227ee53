"""``python -m pvekvm machines [KIND]``: each machine as a table, so "where does X run, what
comes next, how is it retried" is one command. Every transition's retry policy is shown resolved
(its own overrides, marked ``*``, over the settings' ``[engine]`` policy); the layers of retrying
around it are described in :mod:`pvekvm.lifecycle`."""

from __future__ import annotations

from collections.abc import Iterable

from pvekvm.lifecycle import ANY_STATUS, Machine, RetryPolicy, Transition

LEGEND = ("retry: a fault waits FIRST→doubling to MAX, ×ATTEMPTS tries, then the operation "
          "pauses; waiting for a turn (a clone slot) backs off WAIT→WAIT_MAX and never gives "
          "up; * = the transition's own value, the rest is the settings' [engine] policy.\n"
          "Retrying, innermost first: Proxmox client, step policy (the retry column), lock-busy "
          "re-nudge, database-outage hold, broker delivery limit: pvekvm/lifecycle.py "
          "(README \"How a step is retried\").")


def _mark(t: Transition, name: str, shown: str) -> str:
    return shown + ("*" if getattr(t.retry, name) is not None else "")


def _seconds(s: float | None) -> str:
    return f"{s:g}s"


def retry_text(t: Transition, default: RetryPolicy) -> str:
    """``2s→60s ×8, turn 0.5s→4s``: a fault waits first_s doubling to max_s, max_attempts
    times, then pauses; waiting for a turn backs off wait_s to wait_max_s, never giving up."""
    p = t.retry.over(default)
    first, cap = _mark(t, "first_s", _seconds(p.first_s)), _mark(t, "max_s", _seconds(p.max_s))
    wait, wait_cap = (_mark(t, "wait_s", _seconds(p.wait_s)),
                      _mark(t, "wait_max_s", _seconds(p.wait_max_s)))
    return f"{first}→{cap} ×{_mark(t, 'max_attempts', str(p.max_attempts))}, turn {wait}→{wait_cap}"


def _step_name(t: Transition) -> str:
    return f"{t.run.__module__}.{getattr(t.run, '__name__', repr(t.run))}"


def _statuses(statuses: Iterable[str]) -> str:
    names, others = sorted(statuses), sorted(ANY_STATUS - set(statuses))
    if not others:
        return "any status"
    return f"any status but {', '.join(others)}" if len(others) < len(names) else ", ".join(names)


def header(m: Machine) -> list[str]:
    """What the machine declares besides its transitions."""
    started = f"billing event {m.event!r}" if m.event else "the engine itself (no billing event)"
    changes = []
    if m.busy_status:
        changes.append(f"{m.busy_status} while it runs")
    if m.done_status:
        changes.append(f"{m.done_status} when done")
    if m.busy_status:
        changes.append(f"{m.failed_status or 'the status before'} when refused or cancelled")
    if m.suspended_after is not None:
        changes.append(f"suspended flag {'set' if m.suspended_after else 'cleared'} when done")
    if m.sets_when_done:
        changes.append(f"{', '.join(m.sets_when_done)} from the order when done")
    lines = [f"--- {m.title} ({m.kind}) ---",
             f"started by:   {started}",
             f"starts from:  {_statuses(m.starts_from)}",
             f"service:      {'; '.join(changes) or 'status unchanged'}"]
    if m.admission:
        lines.append("admission:    at most [engine] deploy_window of its kind run at once")
    if m.completed_event:
        lines.append(f"completes:    also sends {m.completed_event}")
    if m.way_out:
        lines.append(f"when failed:  offers {', '.join(m.way_out)}")
    return lines


def table(m: Machine, default: RetryPolicy) -> str:
    """The machine's header and one row per transition: number, state, label, step function,
    pool, next state, resolved retry policy (and when the step is passed by)."""
    rows = [("#", "state", "label", "step", "pool", "next", "retry")]
    for i, t in enumerate(m.transitions, 1):
        retry = retry_text(t, default)
        if t.skip_if is not None:
            retry += f"; passed by when {t.skip_if.__name__}"
        rows.append((str(i), t.state, t.label, _step_name(t), t.pool, t.then, retry))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    body = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  "
            + r[-1] for r in rows]
    return "\n".join([*header(m), *body])


def tables(machines: Iterable[Machine], default: RetryPolicy) -> str:
    return "\n\n".join([*(table(m, default) for m in machines), LEGEND])
