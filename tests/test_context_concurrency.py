"""Business context across asyncio tasks, threads, executors, generators and async generators."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from payi_otel import get_context, propagation, track, track_context
from payi_otel.context import clear_global_defaults, current_business_context


@pytest.fixture(autouse=True)
def _clean():
    clear_global_defaults()
    yield
    clear_global_defaults()


def user() -> str | None:
    ctx = current_business_context()
    return ctx.user_id if ctx else None


# --- asyncio --------------------------------------------------------------------------------
async def test_100_gathered_tasks_each_see_their_own_values():
    start = asyncio.Event()

    async def worker(i: int):
        async with track_context(use_case_name=f"uc{i}", user_id=f"user{i}", limit_ids=[f"l{i}"]):
            await start.wait()  # all 100 tasks are inside their contexts at the same time
            seen = []
            for _ in range(3):
                await asyncio.sleep(0)
                seen.append(get_context())
            return seen

    tasks = [asyncio.create_task(worker(i)) for i in range(100)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)
    ids = set()
    for i, seen in enumerate(results):
        for ctx in seen:
            assert ctx["use_case_name"] == f"uc{i}" and ctx["user_id"] == f"user{i}" and ctx["limit_ids"] == [f"l{i}"]
        assert len({ctx["use_case_id"] for ctx in seen}) == 1
        ids.add(seen[0]["use_case_id"])
    assert len(ids) == 100
    assert get_context() == {}


async def test_tracked_coroutines_gathered_are_isolated():
    @track(use_case_name="job")
    async def job(i: int):
        with track_context(user_id=f"u{i}"):
            await asyncio.sleep(0.001 * (i % 3))
            return current_business_context()

    results = await asyncio.gather(*(job(i) for i in range(20)))
    assert [r.user_id for r in results] == [f"u{i}" for i in range(20)]
    assert len({r.use_case_id for r in results}) == 20


async def test_task_created_inside_context_inherits_it():
    async def read():
        return user()

    async with track_context(user_id="parent"):
        task = asyncio.create_task(read())
    assert await task == "parent"


# --- threads --------------------------------------------------------------------------------
def test_thread_pool_submit_carries_the_context():
    with ThreadPoolExecutor(max_workers=4) as pool:
        with track_context(user_id="jane"):
            futures = [pool.submit(user) for _ in range(8)]
        outside = pool.submit(user)
        assert [f.result() for f in futures] == ["jane"] * 8
        assert outside.result() is None


async def test_run_in_executor_carries_the_context():
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as pool:
        async with track_context(user_id="exec"):
            assert await loop.run_in_executor(pool, user) == "exec"
        assert await loop.run_in_executor(pool, user) is None


def test_plain_thread_carries_the_context_of_the_starting_thread():
    seen: dict[str, object] = {}
    with track_context(user_id="starter"):
        t = threading.Thread(target=lambda: seen.setdefault("in", user()))
        t.start()
        t.join()
    outside = threading.Thread(target=lambda: seen.setdefault("out", user()))
    outside.start()
    outside.join()
    assert seen == {"in": "starter", "out": None}


def test_thread_changes_do_not_leak_back():
    def body():
        with track_context(user_id="child"):
            pass
        inner_tc = track_context(user_id="leaky")
        inner_tc.__enter__()  # never exited inside the thread

    with track_context(user_id="main"):
        t = threading.Thread(target=body)
        t.start()
        t.join()
        assert user() == "main"


def test_thread_started_before_any_context_sees_none():
    ready, go = threading.Event(), threading.Event()
    seen = []

    def body():
        ready.set()
        go.wait()
        seen.append(get_context())

    t = threading.Thread(target=body)
    t.start()
    ready.wait()
    with track_context(user_id="later"):
        go.set()
        t.join()
    assert seen == [{}]


def test_uninstall_stops_propagation_and_install_is_idempotent():
    propagation.install()
    propagation.install()
    propagation.uninstall()
    propagation.uninstall()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # entering a context re-enables propagation lazily; read propagation state first
            assert not propagation.INSTALLED
            with track_context(user_id="lazy"):
                assert propagation.INSTALLED
                assert pool.submit(user).result() == "lazy"
    finally:
        propagation.install()


def test_without_propagation_threads_see_nothing():
    propagation.uninstall()
    try:
        token_ctx = track_context(user_id="x")
        with token_ctx:
            propagation.uninstall()  # entering reinstalled it; remove again for this check
            with ThreadPoolExecutor(max_workers=1) as pool:
                assert pool.submit(user).result() is None
    finally:
        propagation.install()


# --- generators -----------------------------------------------------------------------------
def test_generator_context_active_during_resumptions_only():
    @track(use_case_name="gen", user_id="g")
    def numbers(n):
        for i in range(n):
            yield i, user(), current_business_context().use_case_id
        return "done"

    gen = numbers(3)
    assert user() is None
    results = []
    for item in gen:
        results.append(item)
        assert user() is None  # absent between resumptions
    assert [r[:2] for r in results] == [(0, "g"), (1, "g"), (2, "g")]
    assert len({r[2] for r in results}) == 1  # one instance per call
    assert numbers(1).__next__()[2] != results[0][2]


def test_generator_return_value_send_throw_close():
    log = []

    @track(user_id="g")
    def echo():
        try:
            received = yield "first"
            while True:
                try:
                    received = yield f"got {received} as {user()}"
                except ValueError as exc:
                    log.append(("caught", str(exc), user()))
                    received = "after-throw"
        finally:
            log.append(("finally", user()))

    gen = echo()
    assert next(gen) == "first"
    assert gen.send("a") == "got a as g"
    assert gen.throw(ValueError("v")) == "got after-throw as g"
    assert log == [("caught", "v", "g")]
    gen.close()
    assert log[-1] == ("finally", "g")
    assert user() is None
    with pytest.raises(StopIteration):
        next(gen)

    @track(user_id="g")
    def returns():
        yield 1
        return "result"

    gen = returns()
    next(gen)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "result"


def test_generator_uncaught_throw_propagates_unchanged():
    @track(user_id="g")
    def gen():
        yield 1
        yield 2

    g = gen()
    next(g)
    err = KeyError("k")
    with pytest.raises(KeyError) as info:
        g.throw(err)
    assert info.value is err
    assert user() is None


def test_generator_exception_from_body_restores_context():
    @track(user_id="g")
    def broken():
        yield 1
        raise RuntimeError("body")

    with track_context(user_id="outer"):
        g = broken()
        assert next(g) == 1
        with pytest.raises(RuntimeError, match="body"):
            next(g)
        assert user() == "outer"


async def test_async_generator_context_and_protocol():
    log = []

    @track(use_case_name="agen", user_id="a")
    async def stream():
        try:
            received = yield user()
            while True:
                try:
                    await asyncio.sleep(0)
                    received = yield f"{received}:{user()}"
                except ValueError:
                    log.append(("caught", user()))
                    received = "thrown"
        finally:
            log.append(("finally", user()))

    agen = stream()
    assert await agen.__anext__() == "a"
    assert user() is None
    assert await agen.asend("x") == "x:a"
    assert user() is None
    assert await agen.athrow(ValueError("v")) == "thrown:a"
    await agen.aclose()
    assert log == [("caught", "a"), ("finally", "a")]
    with pytest.raises(StopAsyncIteration):
        await agen.__anext__()


async def test_async_generator_iteration_and_isolation():
    @track(use_case_name="agen")
    async def items(tag):
        for _i in range(3):
            await asyncio.sleep(0)
            yield tag, user(), current_business_context().use_case_id

    async def consume(tag):
        async with track_context(user_id=tag):
            return [x async for x in items(tag)]

    a, b = await asyncio.gather(consume("a"), consume("b"))
    assert [x[:2] for x in a] == [("a", "a")] * 3 and [x[:2] for x in b] == [("b", "b")] * 3
    assert len({x[2] for x in a}) == 1 and a[0][2] != b[0][2]


def test_introspection_matches_the_undecorated_function():
    import inspect

    @track(user_id="x")
    def g():
        yield 1

    @track(user_id="x")
    async def ag():
        yield 1

    @track(user_id="x")
    async def co():
        return 1

    assert inspect.isgeneratorfunction(g)
    assert inspect.isasyncgenfunction(ag)
    assert inspect.iscoroutinefunction(co)


def test_thread_subclasses_with_their_own_run_and_timers_carry_the_context():
    seen = {}

    class Worker(threading.Thread):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def run(self):
            seen[self.label] = user()

    with track_context(user_id="sub"):
        inside = Worker("inside")
        inside.start()
        timer = threading.Timer(0.001, lambda: seen.setdefault("timer", user()))
        timer.start()
    inside.join()
    timer.join()
    outside = Worker("outside")
    outside.start()
    outside.join()
    assert seen == {"inside": "sub", "timer": "sub", "outside": None}
