"""Row locks held by another transaction, for tests of what waits on them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from pvekvm.models import database


@contextlib.contextmanager
def held_elsewhere(take: Callable[[], object]) -> Iterator[None]:
    """``take()`` runs in a transaction on another thread and connection, which keeps the
    locks it took until the block ends (then it commits)."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with database.connection_context(), database.atomic():
            take()
            held.set()
            release.wait(20)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10), "the other transaction did not take its locks"
        yield
    finally:
        release.set()
        thread.join(30)
