"""Group commit on a writer thread: API writes share one SQLite transaction, committed before any answer.

Every write (pricing included) runs on one writer thread, never on the event loop, so a large
bulk body never stalls other requests (``/healthz`` included). The thread takes all writes queued
so far, runs each inside one shared transaction (as its own savepoint, so a failing write is undone
alone), commits once, and only then answers each caller. Writes that arrive while a transaction
is being written queue up and share the next commit. Nothing is acknowledged before it is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from payi_otel.service.store import Store

T = TypeVar("T")
_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller went away (client disconnected)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class GroupCommitter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="payi-otel-writer", daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work()`` (synchronous store calls) in the shared transaction; return after commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the service is shutting down")
            self._jobs.append((work, future, loop))
            self._cond.notify()
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                jobs, self._jobs = self._jobs, []
            if not jobs:
                return  # closed and drained
            self._write(jobs)

    def _write(self, jobs: list[_Job]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, bool, Any]] = []
        try:
            self._store.begin()
            for work, future, loop in jobs:
                try:
                    outcomes.append((future, loop, True, self._store.unit_of_work(work)))
                except Exception as exc:  # its savepoint was rolled back; the others are unaffected
                    outcomes.append((future, loop, False, exc))
            self._store.commit()
        except Exception as exc:  # e.g. disk full: nobody is told "stored"
            self._store.rollback()
            outcomes = [(future, loop, False, exc) for _, future, loop in jobs]
        for future, loop, ok, value in outcomes:
            with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, ok, value)
