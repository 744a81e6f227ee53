"""Worker tasks: UPIDs, status/log, and a scheduler thread that finishes them asynchronously."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Realistic duration in seconds per task type at ``--task-time-scale 1``.
TASK_DURATIONS: dict[str, float] = {
    "qmclone": 20, "qmigrate": 30, "qmcreate": 3, "qmrestore": 60, "vzdump": 60,
    "qmstart": 8, "qmstop": 10, "qmshutdown": 10, "qmreboot": 10, "qmreset": 2,
    "qmsuspend": 2, "qmresume": 2, "qmsnapshot": 5, "qmdelsnapshot": 5, "qmrollback": 10,
    "qmdestroy": 5, "resize": 2, "qmconfig": 3, "imgdel": 1, "qmtemplate": 5, "qmmove": 20,
}


class TaskError(Exception):
    """Raised by a task's work function: the message becomes the task's exitstatus."""


def encode_upid(node: str, pid: int, pstart: int, starttime: int, wtype: str, wid: str,
                user: str) -> str:
    """PVE::UPID::encode format."""
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{wtype}:{wid}:{user}:"


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    due: float
    work: Callable[[Task], None] | None = None
    rollback: Callable[[], None] | None = None
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    log: list[str] = field(default_factory=list)
    dispatched: float = field(default_factory=time.monotonic)
    begins: float = 0.0  # when its work starts (later than dispatched while it waits on a lock)

    def status_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.type, "id": self.id, "status": self.status,
        }
        user, _, token = self.user.partition("!")
        d["user"] = user
        if token:
            d["tokenid"] = token
        if self.status == "stopped":
            d["exitstatus"] = self.exitstatus
        return d

    def list_dict(self) -> dict[str, Any]:
        d = self.status_dict()
        d.pop("exitstatus", None)
        if self.status == "stopped":
            d["status"] = self.exitstatus
            d["endtime"] = self.endtime
        return d


class TaskManager:
    """Owns tasks; runs each task's ``work`` under the model lock when it is due."""

    def __init__(self, lock: threading.RLock, scale: float = 1.0,
                 roll_error: Callable[[], bool] | None = None):
        self.lock = lock
        self.scale = scale
        self.roll_error = roll_error or (lambda: False)
        self.tasks: dict[str, Task] = {}
        self._heap: list[tuple[float, int, Task, Callable[[Task], None] | None]] = []
        self._held: dict[str, float] = {}  # node-wide lock -> when its last holder lets go
        self._seq = itertools.count()
        self._pid = itertools.count(os.getpid() * 7 % 900000 + 10000)
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pvesim-tasks", daemon=True)
        self._thread.start()

    def start(self, node: str, wtype: str, wid: str | int, user: str,
              work: Callable[[Task], None] | None = None,
              rollback: Callable[[], None] | None = None,
              log: list[str] | None = None, duration: float | None = None) -> Task:
        """Create a running task; ``work`` runs (under the model lock) when it is due."""
        now = time.time()
        base = TASK_DURATIONS.get(wtype, 2.0) if duration is None else duration
        due = time.monotonic() + base * self.scale + 0.005
        pid = next(self._pid)
        upid = encode_upid(node, pid, int(time.monotonic() * 100) & 0xFFFFFFFF, int(now),
                           wtype, str(wid), user)
        task = Task(upid=upid, node=node, pid=pid, pstart=int(time.monotonic() * 100),
                    starttime=int(now), type=wtype, id=str(wid), user=user, due=due,
                    work=work, rollback=rollback, log=list(log or []))
        task.begins = task.dispatched
        if self.roll_error():
            task.work = self._injected_failure
        self.tasks[upid] = task
        self._push(due, task)
        return task

    def start_locked(self, lockfile: str, wait_s: float | None, node: str, wtype: str,
                     wid: str | int, user: str, begin: Callable[[Task], float | None],
                     work: Callable[[Task], None], rollback: Callable[[], None],
                     log: list[str]) -> Task:
        """A worker that first takes a node-wide ``flock`` (vzdump's ``/var/run/vzdump.lock``,
        PVE/VZDump.pm ``getlock``): it waits behind the holders before it, up to ``wait_s``
        real seconds (None: forever; 0: not at all), and only then ``begin`` runs (under the
        model lock) and its own duration starts. A wait that would pass ``wait_s`` ends the
        worker when the alarm fires with ``can't acquire lock ... - got timeout`` (0: at once,
        ``(wait = 0)``); getlock then exits the worker without a status line, which PVE reads
        as ``unexpected status``. ``begin`` may return a shorter duration (seconds at scale 1:
        a job that ends at its first guest's error)."""
        now = time.monotonic()
        key = f"{node}:{lockfile}"
        free_at = self._held.get(key, 0.0)
        wait = max(0.0, free_at - now)
        if wait <= 0.0:
            task = self.start(node, wtype, wid, user, work, rollback, log=log)
            task.begins = now
            with self.lock:
                self._shorten(task, begin(task))
            self._held[key] = task.due
            return task
        log = [*log, "INFO: trying to get global lock - waiting..."]
        if wait_s is not None and wait > wait_s * self.scale:
            why = "(wait = 0)" if wait_s == 0 else "- got timeout"
            msg = f"can't acquire lock '{lockfile}' {why}"

            def give_up(task: Task) -> None:
                task.log.append(f"ERROR: {msg}")
                raise TaskError("unexpected status")

            return self.start(node, wtype, wid, user, give_up, log=log, duration=wait_s)
        task = self.start(node, wtype, wid, user, work, rollback, log=log)
        task.begins = free_at
        task.due = free_at + (task.due - now)
        self._held[key] = task.due

        def got_lock(t: Task) -> None:
            t.log.append("INFO: got global lock")
            self._shorten(t, begin(t))

        self._push(free_at, task, got_lock)
        self._push(task.due, task)
        return task

    def _shorten(self, task: Task, duration: float | None) -> None:
        if duration is not None and task.begins + duration * self.scale < task.due:
            task.due = task.begins + duration * self.scale
            self._push(task.due, task)

    def _push(self, when: float, task: Task,
              action: Callable[[Task], None] | None = None) -> None:
        with self._cv:
            heapq.heappush(self._heap, (when, next(self._seq), task, action))
            self._cv.notify()

    @staticmethod
    def _injected_failure(task: Task) -> None:
        raise TaskError("pvesim: injected task failure")

    def _finish(self, task: Task) -> None:
        with self.lock:
            try:
                if task.work is not None:
                    task.work(task)
                task.exitstatus = "OK"
                task.log.append("TASK OK")
            except Exception as e:  # noqa: BLE001 - any failure ends the task with an error
                msg = str(e).strip() or type(e).__name__
                if task.rollback is not None:
                    try:
                        task.rollback()
                    except Exception as e2:  # noqa: BLE001 - logged in the task, as PVE does
                        task.log.append(f"rollback failed: {e2}")
                task.exitstatus = msg.splitlines()[0]
                task.log.append(f"TASK ERROR: {msg}")
            task.endtime = int(time.time())
            task.status = "stopped"

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stop:
                    return
                when, _, task, action = heapq.heappop(self._heap)
            if action is not None:
                with self.lock:
                    action(task)
            elif when >= task.due and task.status == "running":  # not an entry moved since
                self._finish(task)

    def finish_all(self) -> None:
        """Run every pending task now (used on shutdown so saved state is consistent)."""
        with self._cv:
            pending = sorted(self._heap)
            self._heap.clear()
        for when, _, task, action in pending:
            if action is not None:
                with self.lock:
                    action(task)
            elif when >= task.due and task.status == "running":
                self._finish(task)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=2)
