"""The stream proxy base on plain iterators: exactly-once finalization, hooks, protocols."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys

import pytest
from _openai_helpers import Telemetry
from opentelemetry import trace

from payi_otel import attributes as A
from payi_otel.core import CallRecord, SpanCore
from payi_otel.stream import AsyncStreamManagerProxy, AsyncStreamProxy, StreamManagerProxy, StreamProxy
from payi_otel.units import Usage


class Source:
    """A provider-like stream: iterator + close + context manager."""

    def __init__(self, items, fail_at=None):
        self.items = list(items)
        self.fail_at = fail_at
        self.i = 0
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.i == self.fail_at:
            raise ConnectionResetError("peer reset")
        if self.i >= len(self.items) or self.closed:
            raise StopIteration
        self.i += 1
        return self.items[self.i - 1]

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncSource(Source):
    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return self.__next__()
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self):  # like openai.AsyncStream.close
        self.closed = True

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class Handler:
    """Counts tokens per chunk, hides chunks equal to "hidden", records how it ended. Chunks starting
    with "meta" are not output: the first other chunk is the first token."""

    def __init__(self, call=None):
        self.call = call
        self.ends = []
        self.tokens = 0

    def on_chunk(self, chunk):
        if chunk == "boom":
            raise RuntimeError("handler bug")
        self.tokens += 1
        if self.call is not None and not str(chunk).startswith("meta"):
            self.call.first_token()
        return chunk != "hidden"

    def on_end(self, call, outcome, error):
        self.ends.append(outcome)
        call.record.stream_outcome = outcome
        call.record.usage = Usage(input_tokens=1, output_tokens=self.tokens)
        if error is not None:
            call.fail(error)
        else:
            call.end()


@pytest.fixture
def tel():
    return Telemetry()


def make(tel, source, cls=StreamProxy):
    core = SpanCore(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider)
    call = core.start(CallRecord(provider="p", operation="chat", category="c", request_model="m", stream=True))
    handler = Handler(call)
    return cls(source, call, handler), handler


def test_exhaustion_hides_chunks_and_ends_once(tel):
    proxy, handler = make(tel, Source(["a", "hidden", "b"]))
    assert isinstance(proxy, Source)
    assert list(proxy) == ["a", "b"]
    proxy.close()
    assert handler.ends == ["completed"]
    span = tel.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert span.attributes[A.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in span.attributes


def test_error_is_reraised_unchanged(tel):
    proxy, handler = make(tel, Source(["a", "b"], fail_at=1))
    assert next(proxy) == "a"
    with pytest.raises(ConnectionResetError, match="peer reset"):
        next(proxy)
    assert handler.ends == ["error"]
    assert tel.one_span().attributes[A.ERROR_TYPE] == "ConnectionResetError"


def test_handler_errors_never_reach_caller(tel):
    proxy, handler = make(tel, Source(["boom", "a"]))
    assert list(proxy) == ["boom", "a"]
    assert handler.ends == ["completed"]


def test_close_and_with(tel):
    source = Source(["a", "b", "c"])
    proxy, handler = make(tel, source)
    with proxy as entered:
        assert entered is proxy
        assert next(entered) == "a"
    assert source.closed and handler.ends == ["closed_early"]


def test_with_body_raising(tel):
    proxy, handler = make(tel, Source(["a"]))
    with pytest.raises(KeyError), proxy:
        raise KeyError("caller bug")
    assert handler.ends == ["error"]
    assert tel.one_span().attributes[A.ERROR_TYPE] == "KeyError"


def test_garbage_collected(tel):
    proxy, handler = make(tel, Source(["a", "b"]))
    next(proxy)
    del proxy
    gc.collect()
    assert handler.ends == ["abandoned"]
    assert len(tel.spans()) == 1


def test_an_iterator_of_the_stream_keeps_it_alive(tel):
    proxy, handler = make(tel, Source(["a", "b", "c"]))
    it = iter(proxy)
    del proxy
    gc.collect()
    assert next(it) == "a" and handler.ends == []  # not abandoned while an iterator of it is held
    del it
    gc.collect()
    assert handler.ends == ["abandoned"]


def test_leaving_a_loop_leaves_the_stream_where_it_was(tel):
    proxy, handler = make(tel, Source(["a", "b", "c", "d"]))
    for chunk in proxy:
        assert chunk == "a"
        break
    assert handler.ends == []
    assert next(proxy) == "b"  # as the SDK's own iterators: reading goes on from the next chunk
    assert list(proxy) == ["c", "d"]
    assert handler.ends == ["completed"]
    with pytest.raises(StopIteration):
        next(proxy)
    assert handler.ends == ["completed"]


def test_reads_see_the_callers_contextvars(tel):
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    def source():
        for item in ("a", "b"):
            seen.append((var.get(), trace.get_current_span()))
            yield item

    call = start_call(tel)
    token = var.set("caller")
    try:
        assert list(StreamProxy(source(), call, Handler(call))) == ["a", "b"]
    finally:
        var.reset(token)
    assert seen == [("caller", call.span)] * 2


def test_no_context_attached_while_caller_holds_stream(tel):
    proxy, _ = make(tel, Source(["a", "b"]))
    outer = trace.get_current_span()
    for _ in proxy:
        assert trace.get_current_span() is outer


def test_async_paths(tel):
    async def main():
        results = {}
        proxy, h = make(tel, AsyncSource(["a", "hidden", "b"]), AsyncStreamProxy)
        results["full"] = ([c async for c in proxy], h.ends)
        proxy, h = make(tel, AsyncSource(["a", "b"]), AsyncStreamProxy)
        await proxy.__anext__()
        await proxy.aclose()
        results["aclose"] = h.ends
        proxy, h = make(tel, AsyncSource(["a", "b"]), AsyncStreamProxy)
        async with proxy as entered:
            assert entered is proxy
        results["with"] = h.ends
        proxy, h = make(tel, AsyncSource(["a"], fail_at=0), AsyncStreamProxy)
        with pytest.raises(ConnectionResetError):
            await proxy.__anext__()
        results["error"] = h.ends
        return results

    r = asyncio.run(main())
    assert r["full"] == (["a", "b"], ["completed"])
    assert r["aclose"] == ["closed_early"]
    assert r["with"] == ["closed_early"]
    assert r["error"] == ["error"]
    assert len(tel.spans()) == 4


class Collecting(Handler):
    """Looks at chunks until the first that is not "meta...", then hands the proxy ``list.append`` (a C
    method returning None) for the rest: every later chunk is still passed, and collected, once."""

    def __init__(self, call):
        super().__init__(call)
        self.seen = []
        self.use = None

    def bind(self, use):
        self.use = use

    def on_chunk(self, chunk):
        self.seen.append(chunk)
        if not str(chunk).startswith("meta"):
            self.call.first_token()
            self.use(self.seen.append)
        return True

    def on_end(self, call, outcome, error):
        self.tokens = len(self.seen)
        super().on_end(call, outcome, error)


@pytest.mark.parametrize("cls", [StreamProxy, AsyncStreamProxy])
def test_handler_can_hand_the_proxy_a_cheaper_reader(tel, cls):
    items = ["meta", "a", "b", "hidden", "c"]
    core = SpanCore(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider)
    call = core.start(CallRecord(provider="p", operation="chat", category="c", request_model="m", stream=True))
    handler = Collecting(call)
    if cls is StreamProxy:
        got = list(cls(Source(items), call, handler))
    else:

        async def read():
            return [c async for c in cls(AsyncSource(items), call, handler)]

        got = asyncio.run(read())
    assert got == items  # after the swap nothing is hidden: None passes the chunk on
    assert handler.seen == items and handler.ends == ["completed"]
    span = tel.one_span()
    assert span.attributes[A.GEN_AI_USAGE_OUTPUT_TOKENS] == len(items)
    assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in span.attributes


# --- what the core does for every provider that follows -------------------------------------------
def start_call(tel):
    core = SpanCore(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider)
    return core.start(CallRecord(provider="p", operation="chat", category="c", request_model="m", stream=True))


def test_first_token_is_the_handlers_choice(tel):
    call = start_call(tel)
    handler = Handler(call)
    proxy = StreamProxy(Source(["meta-start", "meta-ping", "a"]), call, handler)
    assert next(proxy) == "meta-start" and next(proxy) == "meta-ping"
    assert call._ttft_ns is None  # metadata chunks are not the first token
    assert list(proxy) == ["a"]
    assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in tel.one_span().attributes

    tel2 = Telemetry()
    proxy, _ = make(tel2, Source(["meta-only"]))
    assert list(proxy) == ["meta-only"]
    assert A.PAYI_TIME_TO_FIRST_TOKEN_MS not in tel2.one_span().attributes


class Lazy:
    """A generator-backed stream like google-genai's: work (e.g. a request) happens inside each read."""

    def __init__(self, items, tracer):
        self.items = items
        self.tracer = tracer

    def __iter__(self):
        for item in self.items:
            with self.tracer.start_as_current_span(f"fetch {item}"):
                pass
            yield item


def test_span_is_current_during_each_read_only(tel):
    call = start_call(tel)
    handler = Handler(call)
    tracer = tel.tracer_provider.get_tracer("lazy")
    proxy = StreamProxy(Lazy(["a", "b"], tracer), call, handler)  # not an iterator: asked for one lazily
    outer = trace.get_current_span()
    for _ in proxy:
        assert trace.get_current_span() is outer  # the caller's context while it holds the stream
    ours = tel.one_span()
    fetches = [s for s in tel.exporter.get_finished_spans() if s.name.startswith("fetch")]
    assert [s.parent.span_id for s in fetches] == [ours.context.span_id] * 2


class AsyncLazy(Lazy):
    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for item in self.items:
            with self.tracer.start_as_current_span(f"fetch {item}"):
                await asyncio.sleep(0)
            yield item


def test_async_span_is_current_during_each_read(tel):
    call = start_call(tel)
    tracer = tel.tracer_provider.get_tracer("lazy")

    async def main():
        seen = []
        async for chunk in AsyncStreamProxy(AsyncLazy(["a", "b"], tracer), call, Handler(call)):
            seen.append((chunk, trace.get_current_span()))
        return seen

    seen = asyncio.run(main())
    assert [c for c, _ in seen] == ["a", "b"]
    assert all(span is not call.span for _, span in seen)
    ours = tel.one_span()
    fetches = [s for s in tel.exporter.get_finished_spans() if s.name.startswith("fetch")]
    assert [s.parent.span_id for s in fetches] == [ours.context.span_id] * 2


def test_not_iterable_fails_at_first_read_like_the_object_itself(tel):
    call = start_call(tel)
    proxy = StreamProxy(object(), call, Handler(call))
    with pytest.raises(TypeError, match="not iterable"):
        next(proxy)
    assert tel.one_span().attributes[A.ERROR_TYPE] == "TypeError"


def test_half_built_proxy_is_collected_quietly(tel, monkeypatch):
    class Broken(StreamProxy):
        def __init__(self, wrapped):
            raise RuntimeError("before the tracker existed")

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(RuntimeError):
        Broken(Source([]))
    gc.collect()
    assert unraisable == []  # __del__ raised nothing


class Manager:
    """A stream manager like anthropic's ``messages.stream()``: entering sends the request and returns a
    different object, which iterates a raw stream of its own."""

    def __init__(self, items, fail_enter=False):
        self.items = items
        self.fail_enter = fail_enter
        self.entered = None
        self.exited = None
        self.current_at_enter = None

    def __enter__(self):
        self.current_at_enter = trace.get_current_span()
        if self.fail_enter:
            raise PermissionError("401")
        self.entered = Helper(self.items)
        return self.entered

    def __exit__(self, *exc):
        self.exited = exc
        self.entered.close()


class Helper(Source):
    def final(self):
        return list(self)


class AsyncManager(Manager):
    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, *exc):
        self.__exit__(*exc)


def manager_proxy(tel, manager, cls=StreamManagerProxy):
    handlers = []

    def start():
        return start_call(tel)

    def open_stream(call, entered):
        handlers.append(Handler(call))
        proxy_cls = AsyncStreamProxy if isinstance(entered, AsyncSource) else StreamProxy
        return proxy_cls(entered, call, handlers[-1])

    return cls(manager, start, open_stream), handlers


def test_manager_enter_returns_a_stream_proxy_of_what_it_entered(tel):
    manager = Manager(["a", "b", "c"])
    proxy, handlers = manager_proxy(tel, manager)
    assert isinstance(proxy, Manager)
    with proxy as stream:
        assert isinstance(stream, Helper) and stream.__wrapped__ is manager.entered
        assert manager.current_at_enter.get_span_context().is_valid  # the request is sent inside the span
        assert stream.final() == ["a", "b", "c"]  # helper methods pass through
        assert list(stream) == []
    assert handlers[0].ends == ["completed"] and manager.exited == (None, None, None)
    assert tel.one_span().attributes[A.PAYI_STREAM_OUTCOME] == "completed"


def test_manager_early_exit_and_body_error(tel):
    proxy, handlers = manager_proxy(tel, Manager(["a", "b"]))
    with proxy as stream:
        next(stream)
    assert handlers[0].ends == ["closed_early"]

    proxy, handlers = manager_proxy(tel, Manager(["a", "b"]))
    with pytest.raises(KeyError), proxy as stream:
        next(stream)
        raise KeyError("caller")
    assert handlers[0].ends == ["error"]
    assert [s.attributes.get(A.ERROR_TYPE) for s in tel.spans()] == [None, "KeyError"]


def test_manager_enter_failure_is_recorded_and_reraised(tel):
    manager = Manager([], fail_enter=True)
    proxy, handlers = manager_proxy(tel, manager)
    with pytest.raises(PermissionError, match="401"), proxy:
        pass
    assert handlers == [] and tel.one_span().attributes[A.ERROR_TYPE] == "PermissionError"


def test_manager_abandoned_stream_ends_on_gc(tel):
    proxy, handlers = manager_proxy(tel, Manager(["a", "b"]))
    stream = proxy.__enter__()
    next(stream)
    del stream, proxy
    gc.collect()
    assert handlers[0].ends == ["abandoned"] and len(tel.spans()) == 1


def test_async_manager(tel):
    class AsyncHelper(AsyncSource):
        pass

    class AManager(AsyncManager):
        def __enter__(self):
            self.entered = AsyncHelper(self.items)
            return self.entered

        def __exit__(self, *exc):
            self.exited = exc

    async def main():
        proxy, handlers = manager_proxy(tel, AManager(["a", "b"]), AsyncStreamManagerProxy)
        async with proxy as stream:
            seen = [c async for c in stream]
        proxy2, handlers2 = manager_proxy(tel, AManager(["a", "b"]), AsyncStreamManagerProxy)
        async with proxy2 as stream:
            await stream.__anext__()
        return seen, handlers[0].ends, handlers2[0].ends

    seen, full, early = asyncio.run(main())
    assert seen == ["a", "b"] and full == ["completed"] and early == ["closed_early"]
    assert len(tel.spans()) == 2
