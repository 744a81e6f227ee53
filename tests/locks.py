"""Row locks held by another transaction, for tests of what waits on them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from pvekvm.models import database


@contextlib.contextmanager
def held_elsewhere(take: Callable[[], object]) -> Iterator[threading.Event]:
    """``take()`` runs in a transaction on another thread and connection, which keeps the
    locks it took until the block ends (then it commits) or 20 s pass; the event yielded is set
    once they are let go, so a block can assert it did not just wait them out."""
    held, release, let_go = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with database.connection_context(), database.atomic():
            take()
            held.set()
            release.wait(20)
            let_go.set()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10), "the other transaction did not take its locks"
        yield let_go
    finally:
        release.set()
        thread.join(30)
