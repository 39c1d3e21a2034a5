"""Group commit on a writer thread: API writes share one SQLite transaction, committed before any answer.

Every write (pricing included) runs on one writer thread, never on the event loop, so a large
bulk body never stalls other requests (``/healthz`` included). The thread takes all writes queued
so far, runs each inside one shared transaction (as its own savepoint, so a failing write is undone
alone), commits once, and only then answers each caller. Writes that arrive while a transaction
is being written queue up and share the next commit. Nothing is acknowledged before it is committed.

Writes of the same kind that arrived together can also be handed over as one batch
(:meth:`GroupCommitter.run_batched`): single-ingest events are then checked, priced, counted in
their limits and inserted together, as the items of a bulk body are. On PostgreSQL, where each commit
costs round trips whatever it carries, the writer waits a little (at most ``GATHER_SECONDS``) for the
callers of its previous batch to come back before committing a smaller one (see ``_take_jobs``).

A small write on a latency-sensitive path (a proxied call's record) may be run on the calling thread
instead (:meth:`GroupCommitter.run` with ``inline=True``) when nothing else is queued or being
written and the store is local (SQLite): it is then committed alone, without waking the writer
thread and being woken in turn, and the same guarantee holds (the caller goes on after commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any, TypeVar

from payi_otel.service.store import Store, StoreBusy, UnitUndone

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741  # an item of a batch
# A batch handler: the items of one batch -> per item, its result or the exception that refuses it.
BatchHandler = Callable[[list[Any]], Sequence[Any]]
_Outcome = tuple["_Job", bool, Any]  # the job, whether it succeeded, its result or exception
# PostgreSQL: how long the writer waits, at most, for the callers of the previous group commit to come back (see
# GroupCommitter._take_jobs).
GATHER_SECONDS = 0.001


class _Job:
    __slots__ = ("future", "handler", "item", "loop")

    def __init__(
        self,
        handler: BatchHandler | None,
        item: Any,
        future: asyncio.Future[Any] | None = None,  # None: run inline, its caller waits on no future
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.handler = handler  # None: ``item`` is a callable run alone
        self.item = item
        self.future = future
        self.loop = loop


def _settle(outcomes: list[_Outcome]) -> None:
    for job, ok, value in outcomes:
        future = job.future
        if future is None or future.done():  # the caller went away (client disconnected)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupCommitter:
    def __init__(self, store: Store, *, gather_seconds: float | None = None) -> None:
        """``gather_seconds``: the longest the writer waits to gather callers (see :meth:`_take_jobs`); default
        ``GATHER_SECONDS`` on PostgreSQL, 0 on SQLite (whose commit is cheap: no wait)."""
        self._store = store
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._closed = False
        # held while a transaction is written, by the writer thread or by a caller running inline
        self._writing = threading.Lock()
        self._inline_allowed = store.database_url is None  # PostgreSQL: round trips stay off the caller
        # PostgreSQL: each commit costs round trips and statements whatever it carries: gather (see _take_jobs)
        if gather_seconds is None:
            gather_seconds = 0.0 if store.database_url is None else GATHER_SECONDS
        self._gather_seconds = gather_seconds
        self._wake_at = 1  # jobs queued that wake the writer (more while it gathers)
        self._thread = threading.Thread(target=self._write_loop, name="payi-otel-writer", daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[], T], *, inline: bool = False) -> T:
        """Run ``work()`` (synchronous store calls) in the shared transaction; return after commit.

        ``inline``: when no other write is queued or being written (and the store is SQLite), run it
        right here, in a transaction of its own, committed before this returns (keep such work small:
        the caller's thread is busy meanwhile)."""
        if inline and self._inline_allowed:
            job = self._claim_inline(work)
            outcome = None if job is None else self._run_inline(job)
            if outcome is not None:
                _, ok, value = outcome
                if not ok:
                    raise value
                ran: T = value
                return ran
        result: T = await self._submit(None, work)
        return result

    def _claim_inline(self, work: Callable[[], Any]) -> _Job | None:
        """A job to run on the calling thread, holding ``_writing``; None when the writer has work."""
        with self._cond:
            if self._jobs or self._closed or not self._writing.acquire(blocking=False):
                return None
        return _Job(None, work)

    def _run_inline(self, job: _Job) -> _Outcome | None:
        """Run ``job`` on this thread, holding ``_writing``; None when another process (the CLI) holds the
        database's write lock: the event loop never waits for it (nor fsyncs: a due WAL restart waits too),
        the writer thread does."""
        try:
            self._store.begin(wait=False)
        except StoreBusy:
            return None
        else:
            [outcome] = self._transact([job], begun=True)
            return outcome
        finally:
            self._writing.release()

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
            if handler is None or len(self._jobs) >= self._wake_at:  # only batched writes are gathered
                self._cond.notify()
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take_jobs(self, gather_to: int) -> list[_Job]:
        """The jobs queued, once there is one. On PostgreSQL, while fewer than ``gather_to`` (the size of the
        previous group commit, when it held only small writes handed over in batches) are queued, all of them
        such writes, it first waits up to ``GATHER_SECONDS`` for more: the callers just answered are usually
        sending their next write, which then shares this commit instead of paying for one of its own (each
        commit costs the same round trips and statements whatever it carries). A lone caller (the previous
        commit carried one job) never waits, nor does any other write (a bulk body, an admin change)."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if self._gather_seconds and self._gathering(gather_to):
                deadline = time.monotonic() + self._gather_seconds
                self._wake_at = gather_to
                try:
                    while self._gathering(gather_to):  # a submit at gather_to (or of another write) wakes it
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                finally:
                    self._wake_at = 1
            jobs, self._jobs = self._jobs, []
            return jobs

    def _gathering(self, gather_to: int) -> bool:
        return len(self._jobs) < gather_to and not self._closed and all(job.handler is not None for job in self._jobs)

    def _write_loop(self) -> None:
        gather_to = 1
        while True:
            jobs = self._take_jobs(gather_to)
            gather_to = len(jobs) if all(job.handler is not None for job in jobs) else 1
            if not jobs:
                return  # closed and drained
            with self._writing:
                outcomes = self._transact(jobs)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            for outcome in outcomes:
                loop = outcome[0].loop
                assert loop is not None
                by_loop.setdefault(loop, []).append(outcome)
            for loop, settled in by_loop.items():  # one wake-up per event loop, not one per caller
                with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle, settled)

    def _run_batch(self, handler: BatchHandler, batch: list[_Job], *, last: bool) -> Sequence[Any]:
        """Per job of ``batch``, its result or the exception that refuses it (``last``: see Store.unit_of_work)."""
        try:  # run again as a whole if it met another instance's concurrent write (PostgreSQL)
            return self._store.unit_of_work(partial(handler, [job.item for job in batch]), last=last)
        except Exception as exc:  # the batch's savepoint was rolled back: each of its callers is told
            return [exc] * len(batch)

    def _transact(self, jobs: list[_Job], begun: bool = False) -> list[_Outcome]:
        """Run ``jobs`` in one transaction and commit it; each job's outcome (all failed if the commit did).
        ``begun``: run inline, in the transaction the caller opened (committed without a WAL restart)."""
        outcomes: list[_Outcome] = []
        batches: dict[BatchHandler, list[_Job]] = {}
        try:
            if not begun:
                self._store.begin()
            for job in jobs:
                if job.handler is not None:
                    batches.setdefault(job.handler, []).append(job)
                    continue
                try:
                    outcomes.append((job, True, self._store.unit_of_work(job.item)))
                except Exception as exc:  # its savepoint was rolled back; the others are unaffected
                    outcomes.append((job, False, exc))
            handlers = list(batches)
            ran = [
                self._run_batch(handler, batches[handler], last=i == len(handlers) - 1)
                for i, handler in enumerate(handlers)
            ]
            try:
                self._store.commit(checkpoint=not begun)
            except UnitUndone:  # the last batch's inserts met another instance's write: run it again on its own
                ran[-1] = self._run_batch(handlers[-1], batches[handlers[-1]], last=False)
                self._store.commit()
            for handler, results in zip(handlers, ran, strict=True):
                for job, result in zip(batches[handler], results, strict=True):
                    outcomes.append((job, not isinstance(result, Exception), result))
        except Exception as exc:  # e.g. disk full: nobody is told "stored"
            self._store.rollback()
            outcomes = [(job, False, exc) for job in jobs]
        return outcomes
