"""The core's stream and manager proxies around real SDK objects (anthropic's ``messages.stream()``
manager and its ``MessageStream``), with a generic handler: no provider instrumentation involved."""

from __future__ import annotations

import asyncio
import gc
import json

import anthropic
import pytest
from _anthropic_helpers import client_for, load
from _openai_helpers import Telemetry

from payi_otel import attributes as A
from payi_otel.core import CallRecord, SpanCore
from payi_otel.stream import AsyncStreamManagerProxy, AsyncStreamProxy, StreamManagerProxy, StreamProxy
from payi_otel.testing.replay import Cassette

CASSETTE, RECORDED = load("test_anthropic_message_stream_manager_legacy")
REQUEST = {k: v for k, v in RECORDED.request_body.items() if k != "stream"}


class Counting:
    def __init__(self, call):
        self.call = call
        self.types = []
        self.ends = []

    def on_chunk(self, event):
        self.types.append(event.type)
        if event.type == "content_block_delta":
            self.call.first_token()
        return True

    def on_end(self, call, outcome, error):
        self.ends.append(outcome)
        call.record.stream_outcome = outcome
        call.fail(error) if error is not None else call.end()


def proxied(tel, manager, is_async=False):
    core = SpanCore(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider)
    handlers = []

    def start():
        return core.start(CallRecord(provider="anthropic", operation="chat", category="system.anthropic",
                                     request_model=REQUEST["model"], stream=True))  # fmt: skip

    def open_stream(call, entered):
        handlers.append(Counting(call))
        return (AsyncStreamProxy if is_async else StreamProxy)(entered, call, handlers[-1])

    cls = AsyncStreamManagerProxy if is_async else StreamManagerProxy
    return cls(manager, start, open_stream), handlers


def fresh_client(is_async=False):
    return client_for(RECORDED, Cassette([RECORDED]), is_async=is_async)


def test_real_manager_sync():
    tel = Telemetry()
    baseline = []
    with fresh_client().messages.stream(**REQUEST) as stream:
        baseline = [e.to_json() for e in stream]
    manager, handlers = proxied(tel, fresh_client().messages.stream(**REQUEST))
    with manager as stream:
        assert isinstance(stream, anthropic.lib.streaming.MessageStream)
        seen = [e.to_json() for e in stream]
        assert stream.get_final_message().usage.output_tokens > 0  # SDK helpers still work on the proxy
    assert seen == baseline
    assert handlers[0].types == [json.loads(e)["type"] for e in seen]  # the handler saw what the caller saw
    assert handlers[0].ends == ["completed"]
    span = tel.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in span.attributes


def test_real_manager_early_exit_and_gc():
    tel = Telemetry()
    manager, handlers = proxied(tel, fresh_client().messages.stream(**REQUEST))
    with manager as stream:
        next(iter(stream))
    manager, handlers2 = proxied(tel, fresh_client().messages.stream(**REQUEST))
    stream = manager.__enter__()
    next(stream)
    del stream, manager
    gc.collect()
    assert handlers[0].ends == ["closed_early"] and handlers2[0].ends == ["abandoned"]
    assert len(tel.spans()) == 2


def test_real_manager_async():
    tel = Telemetry()

    async def main():
        manager, handlers = proxied(tel, fresh_client(True).messages.stream(**REQUEST), is_async=True)
        async with manager as stream:
            assert isinstance(stream, anthropic.lib.streaming.AsyncMessageStream)
            seen = [e.type async for e in stream]
        return seen, handlers

    seen, handlers = asyncio.run(main())
    assert handlers[0].types == seen and "message_delta" in seen
    assert handlers[0].ends == ["completed"] and len(tel.spans()) == 1


def test_real_manager_request_error_is_reraised():
    tel = Telemetry()
    manager, handlers = proxied(tel, client_for(RECORDED, Cassette([])).messages.stream(**REQUEST))
    with pytest.raises(anthropic.APIConnectionError), manager:
        pass
    assert handlers == [] and tel.one_span().attributes[A.ERROR_TYPE] == "anthropic.APIConnectionError"
