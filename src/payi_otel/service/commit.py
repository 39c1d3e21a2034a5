"""Group commit on a writer thread: API writes share one SQLite transaction, committed before any answer.

Every write (pricing included) runs on one writer thread, never on the event loop, so a large
bulk body never stalls other requests (``/healthz`` included). The thread takes all writes queued
so far, runs each inside one shared transaction (as its own savepoint, so a failing write is undone
alone), commits once, and only then answers each caller. Writes that arrive while a transaction
is being written queue up and share the next commit. Nothing is acknowledged before it is committed.

Writes of the same kind that arrived together can also be handed over as one batch
(:meth:`GroupCommitter.run_batched`): single-ingest events are then checked, priced, counted in
their limits and inserted together, as the items of a bulk body are.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any, TypeVar

from payi_otel.service.store import Store

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741  # an item of a batch
# A batch handler: the items of one batch -> per item, its result or the exception that refuses it.
BatchHandler = Callable[[list[Any]], Sequence[Any]]
_Outcome = tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, bool, Any]


class _Job:
    __slots__ = ("future", "handler", "item", "loop")

    def __init__(
        self, handler: BatchHandler | None, item: Any, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.handler = handler  # None: ``item`` is a callable run alone
        self.item = item
        self.future = future
        self.loop = loop


def _settle(outcomes: list[_Outcome]) -> None:
    for future, _, ok, value in outcomes:
        if future.done():  # the caller went away (client disconnected)
            continue
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
        result: T = await self._submit(None, work)
        return result

    async def run_batched(self, handler: Callable[[list[I]], Sequence[T | Exception]], item: I) -> T:
        """Hand ``item`` to ``handler`` together with the other items queued for it; return its
        result (or raise its exception) after commit. ``handler`` must be the same object (or an
        equal bound method) for the items to share a batch."""
        result: T = await self._submit(handler, item)
        return result

    async def _submit(self, handler: Hashable | None, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the service is shutting down")
            self._jobs.append(_Job(handler, item, future, loop))  # type: ignore[arg-type]
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
        outcomes: list[_Outcome] = []
        batches: dict[BatchHandler, list[_Job]] = {}
        try:
            self._store.begin()
            for job in jobs:
                if job.handler is not None:
                    batches.setdefault(job.handler, []).append(job)
                    continue
                try:
                    outcomes.append((job.future, job.loop, True, self._store.unit_of_work(job.item)))
                except Exception as exc:  # its savepoint was rolled back; the others are unaffected
                    outcomes.append((job.future, job.loop, False, exc))
            for handler, batch in batches.items():
                items = [job.item for job in batch]
                try:  # run again as a whole if it met another instance's concurrent write (PostgreSQL)
                    results = self._store.unit_of_work(partial(handler, items))
                except Exception as exc:  # the batch's savepoint was rolled back: each of its callers is told
                    results = [exc] * len(batch)
                for job, result in zip(batch, results, strict=True):
                    outcomes.append((job.future, job.loop, not isinstance(result, Exception), result))
            self._store.commit()
        except Exception as exc:  # e.g. disk full: nobody is told "stored"
            self._store.rollback()
            outcomes = [(job.future, job.loop, False, exc) for job in jobs]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[1], []).append(outcome)
        for loop, settled in by_loop.items():  # one wake-up per event loop, not one per caller
            with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)
