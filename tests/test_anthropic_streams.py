"""Stream lifecycle matrix through the real anthropic SDK, for ``messages.create(stream=True)`` and for
``messages.stream()`` managers: every way a stream can be read or left gives exactly one span with the
right outcome, and the caller sees exactly what it sees without instrumentation."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json

import anthropic
import pytest
from _anthropic_helpers import VERSION, client_for, expected_tool_calls, expected_units, load, recorded_usage
from _openai_helpers import Telemetry, payi_event, usage_complete

from payi_otel import attributes as A
from payi_otel.instrumentation.anthropic import AnthropicInstrumentor
from payi_otel.testing.replay import Cassette, _decoded

CASSETTE, RECORDED = load("test_anthropic_tools_streaming_legacy")
REQUEST = {k: v for k, v in RECORDED.request_body.items() if k != "stream"}
# Before anthropic 2, Stream's metaclass answers isinstance() only for the exact type (and MessageStream), so
# no proxy passes it: a known difference of instrumented streams on those releases (README).
STREAM_ISINSTANCE_IS_EXACT = VERSION < (2, 0)


def client(is_async: bool):
    return client_for(RECORDED, Cassette([RECORDED]), is_async=is_async)


def dump(items) -> list[str]:
    return [i if isinstance(i, str) else i.to_json() for i in items]


# --- sync scenarios: (consume(client) -> what the caller saw, outcome, usage complete) ---------------
def create_full(c):
    return list(c.messages.create(stream=True, **REQUEST))


def create_break(c):
    seen = []
    stream = c.messages.create(stream=True, **REQUEST)
    for event in stream:
        seen.append(event)
        if len(seen) == 3:
            break
    del stream, event
    gc.collect()
    return seen


def create_close(c):
    stream = c.messages.create(stream=True, **REQUEST)
    seen = [next(stream), next(stream)]
    stream.close()
    return seen


def create_with_raises(c):
    seen = []
    with pytest.raises(KeyError, match="boom"), c.messages.create(stream=True, **REQUEST) as stream:
        assert isinstance(stream, anthropic.Stream) or STREAM_ISINSTANCE_IS_EXACT
        seen.append(next(stream))
        raise KeyError("boom")
    return seen


def create_gc(c):
    stream = c.messages.create(stream=True, **REQUEST)
    del stream
    gc.collect()
    return []


def manager_iterate(c):
    with c.messages.stream(**REQUEST) as stream:
        return list(stream)


def manager_text_stream(c):
    with c.messages.stream(**REQUEST) as stream:
        return list(stream.text_stream)


def manager_final_message(c):
    with c.messages.stream(**REQUEST) as stream:
        return [stream.get_final_message()]


def manager_until_done(c):
    with c.messages.stream(**REQUEST) as stream:
        stream.until_done()
        return [stream.current_message_snapshot]


def manager_break(c):
    with c.messages.stream(**REQUEST) as stream:
        return [next(iter(stream))]


def manager_with_raises(c):
    with pytest.raises(KeyError), c.messages.stream(**REQUEST):
        raise KeyError("boom")
    return []


def manager_gc(c):
    stream = c.messages.stream(**REQUEST).__enter__()
    seen = [next(iter(stream))]
    del stream
    gc.collect()
    return seen


SCENARIOS = {
    "create_full": (create_full, "completed", True),
    "create_break": (create_break, "abandoned", False),
    "create_close": (create_close, "closed_early", False),
    "create_with_raises": (create_with_raises, "error", False),
    "create_gc": (create_gc, "abandoned", False),
    "manager_iterate": (manager_iterate, "completed", True),
    "manager_text_stream": (manager_text_stream, "completed", True),
    "manager_final_message": (manager_final_message, "completed", True),
    "manager_until_done": (manager_until_done, "completed", True),
    "manager_break": (manager_break, "closed_early", False),
    "manager_with_raises": (manager_with_raises, "error", False),
    "manager_gc": (manager_gc, "abandoned", False),
}


# --- async scenarios: the same, through AsyncAnthropic ------------------------------------------------
async def a_create_full(c):
    return [e async for e in await c.messages.create(stream=True, **REQUEST)]


async def a_create_break(c):
    seen = []
    stream = await c.messages.create(stream=True, **REQUEST)
    async for event in stream:
        seen.append(event)
        if len(seen) == 3:
            break
    del stream, event
    gc.collect()
    return seen


async def a_create_close(c):
    stream = await c.messages.create(stream=True, **REQUEST)
    seen = [await stream.__anext__(), await stream.__anext__()]
    await stream.close()
    return seen


async def a_create_with_raises(c):
    seen = []
    with pytest.raises(KeyError, match="boom"):
        async with await c.messages.create(stream=True, **REQUEST) as stream:
            assert isinstance(stream, anthropic.AsyncStream) or STREAM_ISINSTANCE_IS_EXACT
            seen.append(await stream.__anext__())
            raise KeyError("boom")
    return seen


async def a_create_gc(c):
    stream = await c.messages.create(stream=True, **REQUEST)
    del stream
    gc.collect()
    return []


async def a_manager_iterate(c):
    async with c.messages.stream(**REQUEST) as stream:
        return [e async for e in stream]


async def a_manager_text_stream(c):
    async with c.messages.stream(**REQUEST) as stream:
        return [t async for t in stream.text_stream]


async def a_manager_final_message(c):
    async with c.messages.stream(**REQUEST) as stream:
        return [await stream.get_final_message()]


async def a_manager_until_done(c):
    async with c.messages.stream(**REQUEST) as stream:
        await stream.until_done()
        return [stream.current_message_snapshot]


async def a_manager_break(c):
    async with c.messages.stream(**REQUEST) as stream:
        async for event in stream:
            return [event]
    return []


async def a_manager_with_raises(c):
    with pytest.raises(KeyError):
        async with c.messages.stream(**REQUEST):
            raise KeyError("boom")
    return []


async def a_manager_gc(c):
    stream = await c.messages.stream(**REQUEST).__aenter__()
    seen = [await stream.__anext__()]
    del stream
    gc.collect()
    return seen


ASYNC = {name: globals()[f"a_{name}"] for name in SCENARIOS}


def run(name: str, is_async: bool) -> list[str]:
    if is_async:
        return dump(asyncio.run(ASYNC[name](client(True))))
    return dump(SCENARIOS[name][0](client(False)))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stream_lifecycle(name: str, is_async: bool):
    baseline = run(name, is_async)  # what the caller sees without instrumentation
    telemetry = Telemetry()
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                            skip_dep_check=True)  # fmt: skip
    try:
        seen = run(name, is_async)
        gc.collect()
    finally:
        instrumentor.uninstrument()
    assert seen == baseline
    _, outcome, complete = SCENARIOS[name]
    span = telemetry.one_span()
    attrs = span.attributes
    event = payi_event(span)
    assert attrs[A.PAYI_STREAM_OUTCOME] == outcome
    assert usage_complete(event) is complete
    assert event["http_status_code"] == 200
    if complete:
        assert event["units"] == expected_units(recorded_usage(RECORDED))
        assert json.loads(attrs[A.PAYI_FUNCTION_CALLS]) == expected_tool_calls(RECORDED)
        assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in attrs
    else:
        assert A.PAYI_USAGE_INCOMPLETE_REASON in attrs
    if outcome == "error":
        assert attrs[A.ERROR_TYPE] == "KeyError"
    else:
        assert A.ERROR_TYPE not in attrs


# --- a stream that fails while it is read ----------------------------------------------------------------
def _failing_client(ending: bytes, is_async: bool):
    """The recorded stream cut after its first content delta, then ``ending`` (an error event, or nothing: the
    connection ends without ``message_stop``)."""
    blocks = _decoded(RECORDED).split(b"\n\n")
    first_delta = next(i for i, b in enumerate(blocks) if b"content_block_delta" in b)
    body = b"\n\n".join(blocks[: first_delta + 1]) + b"\n\n" + ending
    headers = tuple((k, v) for k, v in RECORDED.headers if k.lower() != "content-encoding")
    cut = dataclasses.replace(RECORDED, body=body, headers=headers)
    return client_for(cut, Cassette([cut]), is_async=is_async)


OVERLOADED = (
    b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("how", ["create", "manager"])
def test_a_stream_failing_after_its_response_began_is_a_failed_call(how: str, is_async: bool):
    """An ``error`` event mid-stream (HTTP status 200): the caller gets the SDK's exception unchanged, and the call
    is recorded as a failure (status 299, ``system.failure``), its partial usage marked incomplete."""

    async def read_async(c):
        if how == "create":
            async for _ in await c.messages.create(stream=True, **REQUEST):
                pass
        else:
            async with c.messages.stream(**REQUEST) as stream:
                await stream.get_final_message()

    def read(c):
        if is_async:
            asyncio.run(read_async(c))
        elif how == "create":
            for _ in c.messages.create(stream=True, **REQUEST):
                pass
        else:
            with c.messages.stream(**REQUEST) as stream:
                stream.get_final_message()

    with pytest.raises(anthropic.APIStatusError) as bare:
        read(_failing_client(OVERLOADED, is_async))
    telemetry = Telemetry()
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                            skip_dep_check=True)  # fmt: skip
    try:
        with pytest.raises(anthropic.APIStatusError) as seen:
            read(_failing_client(OVERLOADED, is_async))
    finally:
        instrumentor.uninstrument()
    assert type(seen.value) is type(bare.value) and str(seen.value) == str(bare.value)
    event = payi_event(telemetry.one_span())
    assert event["http_status_code"] == 299
    assert event["properties"]["system.failure"] == type(seen.value).__name__
    assert "Overloaded" in event["properties"]["system.failure.description"]
    assert usage_complete(event) is False
