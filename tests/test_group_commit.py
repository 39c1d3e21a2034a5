"""The group committer on a real SQLite store: a write run inline (on the caller's thread, when the
writer is idle) is committed before it returns, goes through the writer thread when the writer has
work, and a failing one raises to its caller and leaves the store as it was."""

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
