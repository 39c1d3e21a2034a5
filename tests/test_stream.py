"""The stream proxy base on plain iterators: exactly-once finalization, hooks, protocols."""

from __future__ import annotations

import asyncio
import gc

import pytest
from opentelemetry import trace

from _openai_helpers import Telemetry
from payi_otel import attributes as A
from payi_otel.core import CallRecord, SpanCore
from payi_otel.stream import AsyncStreamProxy, StreamProxy
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
    """Counts tokens per chunk, hides chunks equal to "hidden", records how it ended."""

    def __init__(self):
        self.ends = []
        self.tokens = 0

    def on_chunk(self, chunk):
        if chunk == "boom":
            raise RuntimeError("handler bug")
        self.tokens += 1
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
    handler = Handler()
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
    with pytest.raises(KeyError):
        with proxy:
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
