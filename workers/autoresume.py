"""Auto-resume: a paused operation resumes by itself, on a capped backoff and at once when the
dependency whose fault paused it answers again (the scheduler's ``auto_resume`` job).

Invariants:
- only a *fault* pauses (:func:`workers.operations.pause`); a refusal fails and a cancel ends an
  operation, so neither is ever resumed here (the job selects ``status = 'paused'`` only);
- a pause records when it paused (``paused_at``), since when it has been paused at all
  (``paused_since``; a pause after an operator's resume, or after a step was done since the
  last pause, starts afresh), how often it resumed by itself since then (``auto_resumes``),
  the next auto-resume (``auto_resume_at``; NULL: it waits for an operator) and the
  dependency that did not answer (``pause_dependency``: proxmox, database, mail, dns; NULL
  for any other fault, e.g. a failed Proxmox task, which only the backoff retries);
- after the k-th auto-resume the next comes ``auto_resume_after_s[k]`` later (the last wait
  repeats); none is planned past ``paused_since + auto_resume_for_h``: billing then hears
  ``operation.paused`` with ``auto_resume: false``;
- an operation is resumed at most once per ``auto_resume_check_s`` (the job's interval): one
  whose dependency answers again must have been paused that long, so a flapping dependency
  cannot loop it faster; every resume here is counted;
- a Proxmox fault is a fault of the service's cluster: each cluster's API is probed on its own
  and only the work paused because of that cluster resumes when it answers (the dependency
  is "proxmox" for the default cluster, "proxmox:<cluster>" for another);
- several schedulers may run the job at once: each row is taken ``FOR UPDATE SKIP LOCKED`` and
  re-checked, and :func:`workers.operations.resume` is a compare-and-swap on the row's version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from pvekvm import messaging, metrics, preflight
from pvekvm.config import Settings
from pvekvm.lifecycle import OpStatus
from pvekvm.models import Operation, database
from pvekvm.proxmox import Proxmox
from workers import operations
from workers.operations import LostRace

log = logging.getLogger("pvekvm.autoresume")

Probe = Callable[[Settings, str], bool]


# --- the probes -------------------------------------------------------------------------------

def probe(settings: Settings, dependency: str) -> bool:
    """Does ``dependency`` answer now? Proxmox (``proxmox``: the default cluster,
    ``proxmox:C``: cluster C): ``GET /version``; mail: the relay's EHLO (and STARTTLS/login
    when configured); DNS: every provider; the database: it answered this job."""
    if dependency == "proxmox" or dependency.startswith("proxmox:"):
        conn = settings.proxmox_of(dependency.partition(":")[2] or None)
        if conn is None:
            return False
        try:
            Proxmox(conn, timeout=5).get("version")
        except Exception:  # noqa: BLE001 - any failure means: not answering
            return False
        return True
    if dependency == "mail":
        return not preflight.check_smtp(settings).failed
    if dependency == "dns":
        return not any(v.failed for v in preflight.check_dns(settings))
    return dependency == "database"


# --- the job ----------------------------------------------------------------------------------

#: what a paused operation waits for: its dependency, a Proxmox one named by its cluster
#: unless that is the default (the parameter)
_KEY = ("IF(o.pause_dependency = 'proxmox' AND s.cluster <> %s, CONCAT('proxmox:', s.cluster), "
        "o.pause_dependency)")
_WAITING = (f"SELECT {_KEY}, COUNT(*) FROM operations o JOIN services s ON s.id = o.service_id "
            f"WHERE o.status = '{OpStatus.PAUSED}' AND o.auto_resume_at IS NOT NULL GROUP BY 1")
_DUE = ("SELECT o.id FROM operations o JOIN services s ON s.id = o.service_id "
        f"WHERE o.status = '{OpStatus.PAUSED}' AND o.auto_resume_at IS NOT NULL "
        f"AND (o.auto_resume_at <= %s OR ({_KEY} IN ({{}}) AND o.paused_at <= %s)) "
        "ORDER BY o.auto_resume_at, o.id LIMIT 500")
_KEY_OF = f"SELECT {_KEY} FROM operations o JOIN services s ON s.id = o.service_id WHERE o.id = %s"
_TAKE = (f"SELECT * FROM operations WHERE id = %s AND status = '{OpStatus.PAUSED}' "
         "AND auto_resume_at IS NOT NULL FOR UPDATE SKIP LOCKED")


def resume_due(settings: Settings, publisher: messaging.Publisher,
               now: datetime | None = None, probe: Probe = probe) -> int:
    """Resume every paused operation that is due (its backoff has passed, or its dependency
    answers again and it has been paused for ``auto_resume_check_s``); returns how many."""
    now = now or datetime.now()
    default = settings.default_cluster
    waiting = {dep: n for dep, n in database.execute_sql(_WAITING, (default,)).fetchall()}
    answering = [d for d in waiting if d is not None and probe(settings, d)]
    settled = now - timedelta(seconds=settings.engine.auto_resume_check_s)
    marks = ", ".join(["%s"] * len(answering)) or "NULL"
    due = [i for (i,) in database.execute_sql(
        _DUE.format(marks), (now, default, *answering, settled)).fetchall()]
    resumed = 0
    for op_id in due:
        with database.atomic():
            op = Operation.fetch_one(_TAKE, op_id)
            if op is None or not _still_due(op, now, answering, settled, default):
                continue  # another scheduler took it, or an operator acted meanwhile
            try:
                out = operations.resume(op, auto=True)
            except LostRace:
                continue
        for line in out.log:
            log.info("%s", line)
        operations.deliver(out, publisher)
        resumed += 1
    update_paused_gauge()
    return resumed


def _still_due(op: Operation, now: datetime, answering: list[str], settled: datetime,
               default_cluster: str) -> bool:
    if op.auto_resume_at is not None and op.auto_resume_at <= now:
        return True
    if op.paused_at is None or op.paused_at > settled:
        return False
    row = database.execute_sql(_KEY_OF, (default_cluster, op.id)).fetchone()
    return row is not None and row[0] in answering


def update_paused_gauge() -> None:
    """``pvekvm_operations_paused{resume, dependency, cluster}`` from the database."""
    metrics.PAUSED.clear()
    for auto, dep, cluster, n in database.execute_sql(
            "SELECT o.auto_resume_at IS NOT NULL, o.pause_dependency, s.cluster, COUNT(*) "
            "FROM operations o JOIN services s ON s.id = o.service_id "
            "WHERE o.status = %s GROUP BY 1, 2, 3", (OpStatus.PAUSED.value,)).fetchall():
        metrics.PAUSED.labels("auto" if auto else "operator", dep or "other", cluster).set(n)
