"""The group committer on a real SQLite store: a write run inline (on the caller's thread, when the
writer is idle) is committed before it returns, goes through the writer thread when the writer has
work, and a failing one raises to its caller and leaves the store as it was. A committer that gathers (the
PostgreSQL default) waits for the callers of its previous batch, never for a lone caller or another kind of write."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from payi_otel.service.commit import GroupCommitter
from payi_otel.service.store import Store, StoreError


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def app(store):
    app, _ = store.create_application("default", "default")
    return app


@pytest.fixture
def committer(store):
    committer = GroupCommitter(store)
    yield committer
    committer.close()


def _create_definition(store: Store, app_id: int, name: str):
    def work():
        return store.create_definition(app_id, name, f"{name} description", None, None, 1), threading.get_ident()

    return work


def _committed_names(store: Store, app_id: int) -> list[str]:
    """What another thread reads: committed data only."""
    seen: list[list[str]] = []
    reader = threading.Thread(
        target=lambda: seen.append(
            [d.name for d in store.list_definitions(app_id, name=None, ascending=True, after=None, count=10)]
        )
    )
    reader.start()
    reader.join(10)
    return seen[0]


def test_an_idle_writer_lets_an_inline_write_run_and_commit_on_the_callers_thread(store, app, committer):
    async def scenario():
        created, thread = await committer.run(_create_definition(store, app.id, "inline"), inline=True)
        assert thread == threading.get_ident()
        assert _committed_names(store, app.id) == ["inline"]  # committed before run() returned
        assert created.name == "inline"
        _, thread = await committer.run(_create_definition(store, app.id, "queued"))
        assert thread != threading.get_ident()  # without inline=True: on the writer thread

    asyncio.run(scenario())
    assert _committed_names(store, app.id) == ["inline", "queued"]


def test_an_inline_write_waits_its_turn_on_the_writer_when_the_writer_is_busy(store, app, committer):
    busy, release = threading.Event(), threading.Event()

    def hold():  # the writer thread is inside a transaction until released
        busy.set()
        release.wait(10)

    async def scenario():
        holding = asyncio.ensure_future(committer.run(hold))
        await asyncio.to_thread(busy.wait, 10)
        later = asyncio.ensure_future(committer.run(_create_definition(store, app.id, "after"), inline=True))
        await asyncio.sleep(0.05)
        assert not later.done()  # not run beside the open transaction
        release.set()
        await holding
        _, thread = await later
        assert thread != threading.get_ident()

    try:
        asyncio.run(scenario())
    finally:
        release.set()  # before the committer's teardown waits for its writer thread
    assert _committed_names(store, app.id) == ["after"]


def test_a_failing_inline_write_raises_to_its_caller_and_leaves_the_store_as_it_was(store, app, committer):
    async def scenario():
        await committer.run(_create_definition(store, app.id, "first"), inline=True)
        with pytest.raises(StoreError) as raised:  # the name is taken
            await committer.run(_create_definition(store, app.id, "first"), inline=True)
        assert "first" in str(raised.value)
        assert not store.in_write()  # no transaction left open on this thread
        await committer.run(_create_definition(store, app.id, "second"), inline=True)

    asyncio.run(scenario())
    assert _committed_names(store, app.id) == ["first", "second"]


def test_an_inline_write_never_waits_on_the_event_loop_for_another_process_holding_the_write_lock(
    store, app, committer
):
    other = sqlite3.connect(store.path, isolation_level=None)  # as the CLI's own connection would
    other.execute("BEGIN IMMEDIATE")

    async def scenario():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        later = asyncio.ensure_future(committer.run(_create_definition(store, app.id, "after"), inline=True))
        await asyncio.sleep(0.3)
        assert not later.done()  # the write lock is still held elsewhere
        assert ticks >= 10  # and the event loop went on meanwhile
        other.execute("COMMIT")
        _, thread = await later
        assert thread != threading.get_ident()  # it waited on the writer thread
        ticking.cancel()

    try:
        asyncio.run(scenario())
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert _committed_names(store, app.id) == ["after"]
    assert not store.in_write()


def _batched_committer(store, gather_seconds: float):
    """A committer gathering batched writes for up to ``gather_seconds``, and the sizes of the batches it ran."""
    sizes: list[int] = []

    def handler(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    return GroupCommitter(store, gather_seconds=gather_seconds), handler, sizes


async def _first_batch_of(committer, handler, size: int) -> None:
    """A first group commit of ``size`` batched writes (queued while the writer is held)."""
    busy, release = threading.Event(), threading.Event()

    def hold():
        busy.set()
        release.wait(10)

    holding = asyncio.ensure_future(committer.run(hold))
    await asyncio.to_thread(busy.wait, 10)
    batch = [asyncio.ensure_future(committer.run_batched(handler, i)) for i in range(size)]
    await asyncio.sleep(0)  # queued behind the held transaction
    release.set()
    await holding
    assert await asyncio.gather(*batch) == list(range(size))


def test_the_writer_waits_for_the_callers_of_its_previous_batch_to_share_the_next_commit(store):
    committer, handler, sizes = _batched_committer(store, gather_seconds=10.0)

    async def scenario():
        await _first_batch_of(committer, handler, 3)
        first = asyncio.ensure_future(committer.run_batched(handler, 10))
        await asyncio.sleep(0.1)
        assert not first.done()  # the writer waits for the two others the previous batch had
        rest = [asyncio.ensure_future(committer.run_batched(handler, i)) for i in (11, 12)]
        assert await asyncio.wait_for(asyncio.gather(first, *rest), 5) == [10, 11, 12]  # not the whole 10 s

    try:
        asyncio.run(scenario())
    finally:
        committer.close()
    assert sizes == [3, 3]


def test_a_lone_caller_and_a_write_of_another_kind_are_never_held_back_to_gather(store, app):
    committer, handler, sizes = _batched_committer(store, gather_seconds=10.0)

    async def scenario():
        await asyncio.wait_for(committer.run_batched(handler, 1), 5)  # the previous commit carried one job
        await asyncio.wait_for(committer.run_batched(handler, 2), 5)
        await _first_batch_of(committer, handler, 3)
        waiting = asyncio.ensure_future(committer.run_batched(handler, 10))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        # another kind of write wakes the writer at once, and the waiting write shares its commit
        created, _ = await asyncio.wait_for(committer.run(_create_definition(store, app.id, "other")), 5)
        assert created.name == "other"
        assert await asyncio.wait_for(waiting, 5) == 10

    try:
        asyncio.run(scenario())
    finally:
        committer.close()
    assert sizes == [1, 1, 3, 1]
