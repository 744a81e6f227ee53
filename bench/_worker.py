"""A ``python -m workers``-like process for bench/bench_deploy.py that also measures each message.

    python bench/_worker.py --config CFG --concurrency C --samples OUT.json [--profile OUT.prof]

Runs ``workers.consumer.WorkerProcess`` over every pool with its observer hooks (around each
delivery, and the engine's figures per step message) plus timing wrappers around two public
functions (``pvekvm.mail.send``, pymysql's ``Cursor.execute``). Per handled message it records,
in seconds:

- ``total``   the whole delivery callback: DB connect, handle, publish (confirmed), mark, ack;
- ``handle``  ``Engine.handle_nudge``, summed over the steps the delivery ran (a delivery
  runs the next steps of its operation in a row when this process serves their pools; 0
  for intake messages); ``steps`` how many;
- ``pve``     time inside Proxmox HTTP calls (the observer's second figure);
- ``inline``  always 0 (kept for the column layout): the pauses between task-status looks are
  counted as Proxmox time by ``Proxmox.wait_for_task``;
- ``smtp``    time inside ``pvekvm.mail.send``;
- ``db``      time inside pymysql ``Cursor.execute`` (round trip to MariaDB, BEGIN/COMMIT
  included; not peewee's SQL building) and ``nq`` the number of such statements.

It also counts every statement by its text (placeholders, not values) and every Proxmox call
by method and path (numbers as N, task ids as UPID): ``statements`` in the
samples file, printed by ``bench_deploy.py --statements``.

On SIGTERM it finishes the messages in hand, stops, and writes the samples as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pymysql.cursors

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pvekvm import mail
from pvekvm.config import load_settings
from pvekvm.db import bind
from pvekvm.proxmox import Proxmox
from workers.consumer import WorkerProcess, WorkerThread, all_pools

_local = threading.local()
_samples: list[tuple] = []
FIELDS = ["pool", "total", "handle", "pve", "inline", "smtp", "db", "nq", "steps"]
_samples_lock = threading.Lock()
_profiles: list[cProfile.Profile] = []
_census: dict[str, int] = {}  # statement text (placeholders, not values) -> times executed


def _acc(name: str, seconds: float) -> None:
    setattr(_local, name, getattr(_local, name, 0.0) + seconds)


class _Measure:
    """The worker's observer: per-thread figures of the message in hand."""

    def __init__(self, profile: bool) -> None:
        self.profile = profile

    def message_started(self, pool: str) -> None:
        _local.handle = _local.pve = _local.inline = _local.smtp = _local.db = 0.0
        _local.nq = _local.steps = 0
        _local.pve0 = Proxmox.time_spent()
        prof = getattr(_local, "prof", None)
        if self.profile and prof is None:  # one profiler per thread, of its CPU time
            prof = _local.prof = cProfile.Profile(time.thread_time)
            _profiles.append(prof)
        if prof is not None:
            prof.enable()

    def step_handled(self, pool: str, handle_s: float, pve_s: float) -> None:
        # a delivery may run several steps of its operation in a row (workers.consumer chains)
        _local.handle += handle_s
        _local.pve += pve_s
        _local.steps += 1

    def message_done(self, pool: str, seconds: float) -> None:
        prof = getattr(_local, "prof", None)
        if prof is not None:
            prof.disable()
        pve = _local.pve if _local.handle else Proxmox.time_spent() - _local.pve0
        with _samples_lock:
            _samples.append((pool, seconds, _local.handle, pve, _local.inline, _local.smtp,
                             _local.db, _local.nq, _local.steps))


def _profile_whole_threads() -> None:
    """Profile each worker thread's whole run (pika's I/O loop and heartbeats too, not only
    the delivery callbacks), counting the thread's CPU time (``time.thread_time``)."""
    orig_run = WorkerThread.run

    def run(self) -> None:
        prof = cProfile.Profile(time.thread_time)
        with _samples_lock:
            _profiles.append(prof)
        prof.enable()
        try:
            orig_run(self)
        finally:
            prof.disable()

    WorkerThread.run = run  # type: ignore[method-assign]  # profiling wraps the thread body


def _instrument() -> None:
    orig_send = mail.send

    def send(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return orig_send(*args, **kwargs)
        finally:
            _acc("smtp", time.perf_counter() - t0)

    mail.send = send

    orig_execute = pymysql.cursors.Cursor.execute

    def execute(self, query, args=None):
        t0 = time.perf_counter()
        try:
            return orig_execute(self, query, args)
        finally:
            _acc("db", time.perf_counter() - t0)
            _local.nq = getattr(_local, "nq", 0) + 1
            shape = str(query)[:160]
            _census[shape] = _census.get(shape, 0) + 1

    pymysql.cursors.Cursor.execute = execute

    orig_call = Proxmox._call_once

    def call_once(self, method, path, params):
        shape = "PVE " + method.upper() + " " + re.sub(r"/\d+(?=/|$)", "/N",
                                                       re.sub(r"UPID[^/]*", "UPID", path))
        _census[shape] = _census.get(shape, 0) + 1
        return orig_call(self, method, path, params)

    Proxmox._call_once = call_once  # type: ignore[method-assign]  # counts call shapes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--samples", required=True, type=Path)
    ap.add_argument("--profile", type=Path, help="write cProfile stats of message handling")
    ap.add_argument("--profile-threads", action="store_true",
                    help="with --profile: the worker threads' whole run, not only callbacks")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    _instrument()
    settings = load_settings(args.config)
    bind(settings.database_url)
    if args.profile and args.profile_threads:
        _profile_whole_threads()
    proc = WorkerProcess(settings, all_pools(), max(1, args.concurrency),
                         observer=_Measure(bool(args.profile) and not args.profile_threads))
    signal.signal(signal.SIGTERM, lambda *_: proc.stop.set())
    signal.signal(signal.SIGINT, lambda *_: proc.stop.set())
    cpu0 = time.process_time()
    proc.start()
    proc.stop.wait()
    proc.shutdown(timeout=20)
    cpu_s = time.process_time() - cpu0  # every thread of this process, serving only
    with _samples_lock:
        rows = list(_samples)
    tmp = args.samples.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fields": FIELDS, "rows": rows, "cpu_s": cpu_s,
                               "statements": dict(_census)}))
    tmp.replace(args.samples)
    if args.profile and _profiles:
        import pstats

        stats = pstats.Stats(_profiles[0])
        for p in _profiles[1:]:
            with contextlib.suppress(TypeError):  # a thread that handled nothing
                stats.add(p)
        stats.dump_stats(str(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
