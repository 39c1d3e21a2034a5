"""Stream lifecycle matrix through the real openai SDK: every way a stream can end gives exactly one span,
and the caller sees the same chunks as without instrumentation."""

from __future__ import annotations

import asyncio
import gc
import json

import openai
import pytest
from _openai_helpers import CASSETTES, Telemetry, client_for, payi_event, usage_complete

from payi_otel import attributes as A
from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.testing.replay import Cassette

CASSETTE = CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai/test_chat_completion_streaming.yaml"
RECORDED = Cassette.load(CASSETTE).interactions[0]
REQUEST = {k: v for k, v in RECORDED.request_body.items() if k != "stream"}
USAGE = next(e["usage"] for e in RECORDED.sse_events() if e.get("usage"))


def new_client(is_async: bool):
    return client_for(RECORDED, Cassette([RECORDED]), is_async=is_async)


def dump(chunks) -> list[str]:
    return [c.model_dump_json() for c in chunks]


# Each scenario consumes a stream the way a caller would and returns the chunks it saw.
def sync_full(client):
    return list(client.chat.completions.create(stream=True, **REQUEST))


def sync_break(client):
    seen = []
    stream = client.chat.completions.create(stream=True, **REQUEST)
    for chunk in stream:
        seen.append(chunk)
        if len(seen) == 2:
            break
    del stream, chunk
    gc.collect()
    return seen


def sync_close(client):
    stream = client.chat.completions.create(stream=True, **REQUEST)
    seen = [next(stream), next(stream)]
    stream.close()
    return seen


def sync_with_raises(client):
    seen = []
    with pytest.raises(KeyError, match="boom"), client.chat.completions.create(stream=True, **REQUEST) as stream:
        assert isinstance(stream, openai.Stream)
        seen.append(next(stream))
        raise KeyError("boom")
    return seen


def sync_gc(client):
    stream = client.chat.completions.create(stream=True, **REQUEST)
    del stream
    gc.collect()
    return []


def sync_raw_streaming(client):
    with client.chat.completions.with_streaming_response.create(stream=True, **REQUEST) as response:
        assert response.http_response.status_code == 200
        return list(response.parse())


async def async_full(client):
    return [c async for c in await client.chat.completions.create(stream=True, **REQUEST)]


async def async_break(client):
    seen = []
    stream = await client.chat.completions.create(stream=True, **REQUEST)
    async for chunk in stream:
        seen.append(chunk)
        if len(seen) == 2:
            break
    del stream, chunk
    gc.collect()
    return seen


async def async_close(client):
    stream = await client.chat.completions.create(stream=True, **REQUEST)
    seen = [await stream.__anext__(), await stream.__anext__()]
    await stream.close()
    return seen


async def async_with_raises(client):
    seen = []
    with pytest.raises(KeyError, match="boom"):
        async with await client.chat.completions.create(stream=True, **REQUEST) as stream:
            assert isinstance(stream, openai.AsyncStream)
            seen.append(await stream.__anext__())
            raise KeyError("boom")
    return seen


async def async_gc(client):
    stream = await client.chat.completions.create(stream=True, **REQUEST)
    del stream
    gc.collect()
    return []


async def async_raw_streaming(client):
    async with client.chat.completions.with_streaming_response.create(stream=True, **REQUEST) as response:
        assert response.http_response.status_code == 200
        return [c async for c in await response.parse()]


SCENARIOS = {
    # name: (sync, async, outcome, usage complete)
    "full": (sync_full, async_full, "completed", True),
    "break": (sync_break, async_break, "abandoned", False),
    "close": (sync_close, async_close, "closed_early", False),
    "with_raises": (sync_with_raises, async_with_raises, "error", False),
    "gc": (sync_gc, async_gc, "abandoned", False),
    "raw_streaming_response": (sync_raw_streaming, async_raw_streaming, "completed", True),
}


def run(scenario, is_async: bool):
    fn = scenario[1] if is_async else scenario[0]
    client = new_client(is_async)
    return asyncio.run(fn(client)) if is_async else fn(client)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stream_lifecycle(name: str, is_async: bool):
    scenario = SCENARIOS[name]
    baseline = dump(run(scenario, is_async))  # uninstrumented
    telemetry = Telemetry()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    try:
        seen = dump(run(scenario, is_async))
        gc.collect()
    finally:
        instrumentor.uninstrument()
    assert seen == baseline
    span = telemetry.one_span()
    attrs = span.attributes
    _, _, outcome, complete = scenario
    event = payi_event(span)
    assert attrs[A.PAYI_STREAM_OUTCOME] == outcome
    assert usage_complete(event) is complete
    assert event["http_status_code"] == 200
    if complete:
        assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == USAGE["prompt_tokens"]
        assert event["units"]["text"]["output"] == USAGE["completion_tokens"]
    else:
        assert A.PAYI_USAGE_INCOMPLETE_REASON in attrs
    if outcome == "error":
        assert attrs[A.ERROR_TYPE] == "KeyError"
        assert span.status.status_code.name == "ERROR"
    else:
        assert A.ERROR_TYPE not in attrs
    # The first token is the first chunk with content; the role-only first chunk is not one.
    saw_content = any(choice["delta"].get("content") for c in seen for choice in json.loads(c)["choices"])
    assert (A.PAYI_TIME_TO_FIRST_TOKEN_MS in attrs) is saw_content


def test_stream_error_mid_iteration_is_recorded_and_reraised(instrumented):
    body = RECORDED.body.decode().split("\n\n")
    broken = body[0] + '\n\ndata: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    from payi_otel.testing.replay import Interaction

    interaction = Interaction(RECORDED.method, RECORDED.uri, RECORDED.path, RECORDED.request_body, 200,
                              RECORDED.headers, broken.encode())  # fmt: skip
    client = client_for(interaction, Cassette([interaction]))
    stream = client.chat.completions.create(stream=True, **REQUEST)
    first = next(stream)
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.APIError, match="overloaded"):
        next(stream)
    span = instrumented.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "error"
    assert span.attributes[A.ERROR_TYPE] == "openai.APIError"
    assert span.attributes[A.PAYI_USAGE_COMPLETE] is False


from _openai_helpers import instrumented, surface, telemetry  # noqa: E402,F401 - fixtures

HELPERS = ["chat.completions.stream", "beta.chat.completions.stream"]  # the helper moved out of beta in 1.92


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_stream_helper_closed_early_ends_span(is_async: bool, helper: str, instrumented):
    stream_helper = surface(new_client(is_async), helper)

    async def consume_async():
        async with stream_helper(**REQUEST) as stream:
            async for event in stream:
                if event.type == "content.delta":
                    return event

    def consume_sync():
        with stream_helper(**REQUEST) as stream:
            for event in stream:
                if event.type == "content.delta":
                    return event

    event = asyncio.run(consume_async()) if is_async else consume_sync()
    assert event.type == "content.delta"
    span = instrumented.one_span()  # ended on leaving the helper's `with`, not left to GC
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "closed_early"


@pytest.mark.parametrize("helper", HELPERS)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_stream_helper_full_reports_usage(is_async: bool, helper: str, instrumented):
    stream_helper = surface(new_client(is_async), helper)

    async def final_async():
        async with stream_helper(**REQUEST) as stream:
            return await stream.get_final_completion()

    def final_sync():
        with stream_helper(**REQUEST) as stream:
            return stream.get_final_completion()

    completion = asyncio.run(final_async()) if is_async else final_sync()
    assert completion.choices[0].message.content
    span = instrumented.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert span.attributes[A.GEN_AI_USAGE_OUTPUT_TOKENS] == USAGE["completion_tokens"]
    assert json.loads(json.dumps(list(span.attributes[A.GEN_AI_RESPONSE_FINISH_REASONS]))) == ["stop"]
