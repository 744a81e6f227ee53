"""The clone-slot row lock (steps/provision.py) under concurrent workers, on real MariaDB."""

from __future__ import annotations

import threading

from peewee import OperationalError

from pvekvm.models import TaskSlot, database
from steps.slots import lock_slot
from tests.locks import held_elsewhere


def test_workers_taking_one_clone_slot_at_once_queue_and_never_deadlock(clean_db):
    """Four workers take the same (new) slot 25 times each, at once: they wait for one another
    on its row, and none is killed as a deadlock victim (each victim sent a clone message
    back to its queue, where returns count against the delivery limit)."""
    errors: list[object] = []
    start = threading.Barrier(4)

    def worker() -> None:
        with database.connection_context():
            start.wait(10)
            for _ in range(25):
                try:
                    with database.atomic():
                        lock_slot("pve1/local-lvm")
                        database.execute_sql("SELECT SLEEP(0.001)")
                except OperationalError as exc:
                    errors.append(exc.args[0])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert [s.slot for s in TaskSlot.select()] == ["pve1/local-lvm"]


def test_a_clone_slot_held_by_one_worker_makes_the_next_wait(clean_db):
    """The lock is exclusive: while one transaction holds the slot, another's lock waits (here
    until a one-second lock wait timeout), so two workers never count free slots at once."""
    with held_elsewhere(lambda: lock_slot("pve2/local-lvm")), \
            database.connection_context():
        database.execute_sql("SET SESSION innodb_lock_wait_timeout = 1")
        try:
            with database.atomic():
                lock_slot("pve2/local-lvm")
            raise AssertionError("took a slot another transaction holds")
        except OperationalError as exc:
            assert exc.args[0] == 1205  # lock wait timeout
