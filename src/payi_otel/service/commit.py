"""Group commit: concurrent API writes share one SQLite transaction, committed before any answer.

Each write runs at once on the event loop inside the shared transaction (as its own savepoint, so a
failing write is undone alone). The commit is scheduled for the end of the current loop iteration,
so every request that arrived in that iteration shares one WAL commit, and each response waits for
it. Nothing is acknowledged before it is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from payi_otel.service.store import Store

T = TypeVar("T")


class GroupCommitter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiters: list[asyncio.Future[None]] = []
        self._open = False

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work()`` (synchronous store calls) in the shared transaction; return after commit."""
        loop = asyncio.get_running_loop()
        if not self._open:
            self._store.begin()
            self._open = True
            loop.call_soon(self._flush)
        result = work()  # raises -> its savepoint was rolled back; the others are unaffected
        waiter = loop.create_future()
        self._waiters.append(waiter)
        await waiter
        return result

    def _flush(self) -> None:
        waiters, self._waiters = self._waiters, []
        self._open = False
        try:
            self._store.commit()
        except Exception as exc:  # e.g. disk full: nobody is told "stored"
            self._store.rollback()
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        for w in waiters:
            if not w.done():
                w.set_result(None)
