"""Refusals leave a record: every 422, and every 4xx answer to a POST/PUT/PATCH/DELETE, is one
``audit_log`` row (event ``api_refused``) with who asked, the route, the status and the reason.

Invariants: a row is bounded (reason and path cut short; the request body is never read here,
so no secret and no megabyte of it lands in the table); a flood is bounded too — per process,
each caller (principal name, or ``anonymous`` / ``invalid-token``) gets at most
:data:`ROWS_PER_WINDOW` rows per :data:`WINDOW_S`, then one ``api_refusals_suppressed`` row saying
so, then nothing until the window ends (so the table grows by at most 31 rows a minute per caller
and process, whatever the rate of bad requests)."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime

from fastapi import Request

from pvekvm.limits import MAX_SERVICE_ID
from pvekvm.models import AuditLog

RECORDED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ROWS_PER_WINDOW = 30
WINDOW_S = 60.0
MAX_REASON = 300
MAX_PATH = 200

log = logging.getLogger(__name__)
_lock = threading.Lock()
_windows: dict[str, tuple[float, int]] = {}  # caller -> (window start, rows written in it)


def is_recorded(method: str, status: int) -> bool:
    return status == 422 or (method in RECORDED_METHODS and 400 <= status < 500)


def caller(request: Request) -> str:
    """The principal the route resolved, else whether a token was presented (never the token)."""
    name = getattr(request.state, "principal", None)
    if name:
        return str(name)
    return "invalid-token" if request.headers.get("authorization") else "anonymous"


def _admit(who: str, now: float) -> str | None:
    """The event to write for ``who`` now (``api_refused``, the one suppression notice), or None."""
    with _lock:
        if len(_windows) > 10_000:  # many callers (e.g. many bad tokens): forget old windows
            for key in [k for k, (start, _) in _windows.items() if now - start >= WINDOW_S]:
                del _windows[key]
        start, count = _windows.get(who, (now, 0))
        if now - start >= WINDOW_S:
            start, count = now, 0
        _windows[who] = (start, count + 1)
    if count < ROWS_PER_WINDOW:
        return "api_refused"
    return "api_refusals_suppressed" if count == ROWS_PER_WINDOW else None


def _service_id(request: Request) -> int | None:
    text = str(request.path_params.get("service_id", ""))
    return int(text) if text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_SERVICE_ID \
        else None


def record(request: Request, status: int, reason: str) -> None:
    """Write the refusal's row if it is one we record and the caller is within its bound.
    A database error is logged, never raised: the refusal is answered either way."""
    if not is_recorded(request.method, status):
        return
    who = caller(request)
    event = _admit(who, time.monotonic())
    if event is None:
        return
    route = request.scope.get("route")
    detail = {"by": who, "status": status, "route": f"{request.method} "
              f"{getattr(route, 'path', None) or request.url.path[:MAX_PATH]}",
              "path": request.url.path[:MAX_PATH], "reason": reason[:MAX_REASON]}
    if event == "api_refusals_suppressed":
        detail["reason"] = (f"more than {ROWS_PER_WINDOW} refusals in {WINDOW_S:.0f} s: further "
                            "refusals of this caller are not recorded until the window ends")
    try:
        AuditLog.create(service_id=_service_id(request), event=event,
                        detail=json.dumps(detail, sort_keys=True, ensure_ascii=True),
                        created_at=datetime.now(UTC).replace(tzinfo=None))
    except Exception:  # the database is down: the answer still goes out
        log.warning("refusal not recorded (database error): %s", detail["route"], exc_info=True)
