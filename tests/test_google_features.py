"""Google GenAI behaviour beyond the replay of each recording: one span per billed request (automatic
function calling, chats), the span current while a lazy stream sends its request, every stream lifecycle
ending the span once, errors re-raised unchanged, per-modality and long-context units, no Pillow needed."""

from __future__ import annotations

import asyncio
import base64
import gc
import importlib.util
from typing import Any

import httpx
import pytest
from _google_helpers import (  # noqa: F401 - fixtures
    CASSETTES,
    TAKES_TRANSPORT,
    client_for,
    expected_units,
    generate_kwargs,
    google_instrumented,
    response_events,
    restored,
)
from _openai_helpers import payi_event, telemetry, usage_complete  # noqa: F401 - fixtures
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials
from opentelemetry import trace

from payi_otel import attributes as A
from payi_otel.testing.replay import Cassette
from payi_otel.units import to_units

PYDANTIC = CASSETTES / "pydantic__pydantic-ai" / "google"
CONTRIB = CASSETTES / "open-telemetry__opentelemetry-python-contrib" / "google"
STREAM = PYDANTIC / "test_google_model_file_search_tool_stream.yaml"  # a Gemini API stream of several chunks
AFC = PYDANTIC / "test_multiple_agent_tool_calls.yaml"  # function call, then the answer


# Tests that hand the SDK a transport of their own (a spy, a broken or a mock one).
needs_client_args = pytest.mark.skipif(not TAKES_TRANSPORT, reason="needs HttpOptions.client_args (google-genai 1.11+)")


def _cassette(path: Any, action: str | None = None) -> Cassette:
    loaded = Cassette.load(path)
    interactions = [restored(i) for i in loaded.interactions if "googleapis.com" in i.uri]
    if action:
        interactions = [i for i in interactions if i.path.endswith(":" + action)]
    return Cassette(interactions, name=loaded.name)


def _stream_setup() -> tuple[genai.Client, dict[str, Any], list[dict[str, Any]]]:
    cassette = _cassette(STREAM, "streamGenerateContent")
    interaction = cassette.interactions[0]
    return client_for(interaction, cassette), generate_kwargs(interaction), response_events(interaction)


# --- one span per billed request -------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_automatic_function_calling_records_every_request(is_async, google_instrumented):
    cassette = _cassette(AFC)
    first, second = cassette.interactions
    calls = []

    def get_capital(country: str) -> str:
        """Get the capital of a country."""
        calls.append(country)
        return "Paris"

    get_capital.__annotations__ = {"country": str, "return": str}  # resolved types, for older SDKs

    client = client_for(first, cassette)
    config = types.GenerateContentConfig(tools=[get_capital])
    models = client.aio.models if is_async else client.models
    result = models.generate_content(model="gemini-2.0-flash-exp", contents="What is the capital of France?",
                                     config=config)  # fmt: skip
    if is_async:
        result = asyncio.run(result)
    assert calls == ["France"]
    assert result.text == second.json()["candidates"][0]["content"]["parts"][0]["text"]
    spans = google_instrumented.spans()
    assert len(spans) == 2  # both requests are billed
    for span, interaction in zip(spans, (first, second), strict=True):
        usage = interaction.json()["usageMetadata"]
        assert payi_event(span)["units"] == expected_units(usage, "gemini-2.0-flash-exp")
    assert "get_capital" in spans[0].attributes[A.PAYI_FUNCTION_CALLS]


def test_chat_turns_are_recorded(google_instrumented):
    cassette = _cassette(PYDANTIC / "test_google_model_cached_content.yaml", "generateContent")
    client = client_for(cassette.interactions[0], cassette)
    chat = client.chats.create(model="gemini-2.5-flash")
    chat.send_message("first")
    chat.send_message("second")
    spans = google_instrumented.spans()
    assert len(spans) == 2
    for span, interaction in zip(spans, cassette.interactions, strict=True):
        assert payi_event(span)["units"] == expected_units(interaction.json()["usageMetadata"], "gemini-2.5-flash")
        assert (
            payi_event(span)["units"]["text_cache_read"]["input"]
            == interaction.json()["usageMetadata"]["cachedContentTokenCount"]
        )


# --- the span is current while the request is sent ----------------------------------------------
class _SpyTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Wraps the replay transport; remembers the span current when each request is sent."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.current: list[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.current.append(trace.get_current_span())
        return self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.current.append(trace.get_current_span())
        return await self.inner.handle_async_request(request)


@needs_client_args
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_span_is_current_while_the_stream_sends_its_request(is_async, google_instrumented):
    cassette = _cassette(STREAM, "streamGenerateContent")
    spy = _SpyTransport(cassette.transport("httpx"))
    options = types.HttpOptions(base_url="https://generativelanguage.googleapis.com/", api_version="v1beta",
                                client_args={"transport": spy}, async_client_args={"transport": spy})  # fmt: skip
    client = genai.Client(api_key="test", http_options=options)
    kwargs = generate_kwargs(cassette.interactions[0])

    async def consume() -> int:
        return len([c async for c in await client.aio.models.generate_content_stream(**kwargs)])

    stream = None if is_async else client.models.generate_content_stream(**kwargs)
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing is left attached in the caller
    count = asyncio.run(consume()) if is_async else len(list(stream))
    assert count == len(response_events(cassette.interactions[0]))
    (span,) = google_instrumented.spans()
    assert [s.get_span_context().span_id for s in spy.current] == [span.context.span_id]
    assert trace.get_current_span() is trace.INVALID_SPAN


# --- stream lifecycle: every ending ends the span exactly once ----------------------------------
def _stream_span(telemetry: Any) -> Any:
    spans = telemetry.spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_stream_completed(google_instrumented):
    client, kwargs, events = _stream_setup()
    chunks = list(client.models.generate_content_stream(**kwargs))
    assert len(chunks) == len(events)
    span = _stream_span(google_instrumented)
    event = payi_event(span)
    if getattr(chunks[0], "response_id", None) is not None:  # older google-genai releases drop it
        assert event["provider_response_id"] == events[0]["responseId"]
    last_usage = [e["usageMetadata"] for e in events if "usageMetadata" in e][-1]
    assert event["units"] == expected_units(last_usage, "gemini-2.5-pro")
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert event["time_to_first_token_ms"] is not None


@pytest.mark.parametrize("ending", ["break_close", "break_drop"])
def test_stream_left_early(ending, google_instrumented):
    client, kwargs, _ = _stream_setup()
    stream = client.models.generate_content_stream(**kwargs)
    first = next(stream)
    assert first.candidates
    if ending == "break_close":
        stream.close()
    del stream
    gc.collect()
    span = _stream_span(google_instrumented)
    assert span.attributes[A.PAYI_STREAM_OUTCOME] in ("closed_early", "abandoned")
    assert not usage_complete(payi_event(span))  # only part of the usage was reported


def test_async_stream_closed_early(google_instrumented):
    client, kwargs, _ = _stream_setup()

    async def run() -> None:
        stream = await client.aio.models.generate_content_stream(**kwargs)
        async for _chunk in stream:
            break
        await stream.aclose()

    asyncio.run(run())
    gc.collect()
    span = _stream_span(google_instrumented)
    assert span.attributes[A.PAYI_STREAM_OUTCOME] in ("closed_early", "abandoned")


def test_stream_error_from_the_caller_loop_is_unchanged(google_instrumented):
    client, kwargs, _ = _stream_setup()
    stream = client.models.generate_content_stream(**kwargs)
    with pytest.raises(KeyError, match="mine"):
        for _chunk in stream:
            raise KeyError("mine")
    stream.close()
    assert _stream_span(google_instrumented).attributes[A.PAYI_STREAM_OUTCOME] in ("closed_early", "abandoned")


class _BrokenBody(httpx.SyncByteStream):
    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Any:
        yield self.first
        raise httpx.ReadError("connection reset")


class _BreakingTransport(httpx.BaseTransport):
    """Sends the first recorded SSE event, then the connection breaks."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        first = self.body.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_BrokenBody(first))


@needs_client_args
def test_stream_broken_mid_way_fails_the_span_and_reraises(google_instrumented, monkeypatch):
    monkeypatch.setenv("GOOGLE_GENAI_HTTP_CLIENT", "httpx")  # the transport below is an httpx one
    cassette = _cassette(STREAM, "streamGenerateContent")
    transport = _BreakingTransport(cassette.interactions[0].body)
    options = types.HttpOptions(base_url="https://generativelanguage.googleapis.com/", api_version="v1beta",
                                client_args={"transport": transport})  # fmt: skip
    client = genai.Client(api_key="test", http_options=options)
    seen = []
    with pytest.raises(httpx.ReadError):
        for chunk in client.models.generate_content_stream(**generate_kwargs(cassette.interactions[0])):
            seen.append(chunk)
    assert len(seen) == 1
    span = _stream_span(google_instrumented)
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "error"
    assert span.attributes[A.ERROR_TYPE] == "httpx.ReadError"
    assert not usage_complete(payi_event(span))


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", ["test_generate_content_missing_model.yaml",
                                  "test_generate_content_invalid_role.yaml"])  # fmt: skip
def test_api_error_recorded_with_its_code_and_reraised(name, is_async, google_instrumented):
    cassette = _cassette(CONTRIB / name)
    interaction = cassette.interactions[0]
    recorded = interaction.json()["error"]
    client = client_for(interaction, cassette)
    models = client.aio.models if is_async else client.models
    with pytest.raises(errors.APIError) as info:
        result = models.generate_content(**generate_kwargs(interaction))
        if is_async:
            asyncio.run(result)
    assert type(info.value) is errors.ClientError
    assert info.value.code == recorded["code"] and info.value.message == recorded["message"]
    span = _stream_span(google_instrumented)
    event = payi_event(span)
    assert event["http_status_code"] == recorded["code"]
    assert span.attributes[A.ERROR_TYPE] == "google.genai.errors.ClientError"


# --- units -----------------------------------------------------------------------------------------
def test_video_audio_cache_units_add_up_to_the_recorded_totals(google_instrumented):
    if "cache_tokens_details" not in types.GenerateContentResponseUsageMetadata.model_fields:
        pytest.skip(f"google-genai {genai.__version__} drops the per-modality details of usage_metadata")
    cassette = _cassette(PYDANTIC / "test_google_model_mobile_youtube_video_url_input.yaml")
    interaction = cassette.interactions[0]
    usage = interaction.json()["usageMetadata"]
    client = client_for(interaction, cassette)  # held: a collected client closes its HTTP client
    client.models.generate_content(**generate_kwargs(interaction))
    units = payi_event(_stream_span(google_instrumented))["units"]
    assert units == expected_units(usage, "gemini-2.5-flash")
    assert {"video", "video_cache_read", "audio_cache_read"} <= set(units)
    total_in = usage["promptTokenCount"] + usage.get("toolUsePromptTokenCount", 0)
    assert sum(u["input"] for u in units.values()) == total_in
    assert sum(u["output"] for u in units.values()) == usage["candidatesTokenCount"] + usage.get(
        "thoughtsTokenCount", 0
    )


def test_large_context_above_the_model_threshold():
    from payi_otel.instrumentation.google_genai._usage import usage_from_metadata

    metadata = {"prompt_token_count": 250_000, "candidates_token_count": 10, "thoughts_token_count": 5,
                "prompt_tokens_details": [{"modality": "TEXT", "token_count": 249_000},
                                          {"modality": "DOCUMENT", "token_count": 1_000}]}  # fmt: skip
    units = to_units(usage_from_metadata(metadata, "gemini-2.5-pro"))
    assert units == {"text_large_context": {"input": 249_000, "output": 10},
                     "document_large_context": {"input": 1_000, "output": 0},
                     "reasoning_large_context": {"input": 0, "output": 5}}  # fmt: skip
    small = to_units(usage_from_metadata({**metadata, "prompt_token_count": 200_000}, "gemini-2.5-pro"))
    assert "text" in small and "text_large_context" not in small
    flash = to_units(usage_from_metadata(metadata, "gemini-2.5-flash"))  # no long-context price
    assert "text" in flash


def test_requests_with_inline_images_work_without_pillow(google_instrumented):
    assert importlib.util.find_spec("PIL") is None, "this test needs an environment without Pillow"
    cassette = _cassette(PYDANTIC / "test_google_url_input[ImageUrl].yaml")
    interaction = cassette.interactions[0]
    contents = [types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, mime_type="image/png"), "describe"]
    client = client_for(interaction, cassette)
    result = client.models.generate_content(model="gemini-2.0-flash", contents=contents)
    assert result.usage_metadata.prompt_token_count == interaction.json()["usageMetadata"]["promptTokenCount"]
    units = payi_event(_stream_span(google_instrumented))["units"]
    if "prompt_tokens_details" in types.GenerateContentResponseUsageMetadata.model_fields:
        assert units["vision"]["input"] == 2580  # the recorded IMAGE prompt tokens


def test_uninstrument_stops_recording(telemetry):
    from payi_otel.instrumentation.google_genai import GoogleGenAIInstrumentor

    instrumentor = GoogleGenAIInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, skip_dep_check=True)
    instrumentor.uninstrument()
    client, kwargs, _ = _stream_setup()
    assert list(client.models.generate_content_stream(**kwargs))
    assert telemetry.spans() == []


@needs_client_args
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_generate_images_counts_the_images_returned(is_async, google_instrumented):
    # No recording of Imagen exists in the shared traffic: a minimal answer of the documented predict shape.
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    body = {"predictions": [{"bytesBase64Encoded": png, "mimeType": "image/png"}] * 2}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("imagen-3.0-generate-002:predict")
        return httpx.Response(200, json=body)

    transport = httpx.MockTransport(answer)
    options = types.HttpOptions(client_args={"transport": transport}, async_client_args={"transport": transport})
    client = genai.Client(vertexai=True, project="p", location="us-central1", credentials=Credentials(token="test"),
                          http_options=options)  # fmt: skip
    models = client.aio.models if is_async else client.models
    result = models.generate_images(model="imagen-3.0-generate-002", prompt="a cat")
    if is_async:
        result = asyncio.run(result)
    assert len(result.generated_images) == 2
    span = _stream_span(google_instrumented)
    assert span.attributes[A.GEN_AI_OPERATION_NAME] == "image_generation"
    assert span.attributes[A.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    event = payi_event(span)
    assert event["units"] == {"image": {"input": 0, "output": 2}}
    assert event["resource"] == "google.imagen-3.0-generate-002"


def test_instrument_covers_google_genai(telemetry):
    from payi_otel.configure import available_instrumentors, instrument

    assert "payi_google_genai" in available_instrumentors()  # entry point declared in pyproject.toml
    handle = instrument(tracer_provider=telemetry.tracer_provider, exporter=False, instruments={"payi_google_genai"})
    try:
        assert handle.instrumentors["payi_google_genai"].is_instrumented_by_opentelemetry
        client, kwargs, events = _stream_setup()
        assert len(list(client.models.generate_content_stream(**kwargs))) == len(events)
    finally:
        handle.uninstrument()
    assert _stream_span(telemetry).attributes[A.GEN_AI_PROVIDER_NAME] == "gcp.gemini"
