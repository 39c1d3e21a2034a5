"""Anthropic surfaces beyond messages.create: parse, beta.messages, raw responses, Bedrock and Vertex
clients, business context, and what the caller sees (same objects, same exceptions)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import struct
import zlib

import anthropic
import pytest
from _anthropic_helpers import (
    HTTP_LIBRARY,
    catalog_threshold,
    client_for,
    expected_tool_calls,
    expected_units,
    http,
    image_tokens,
    load,
)
from _openai_helpers import Telemetry, payi_event

from payi_otel import attributes as A
from payi_otel import track_context
from payi_otel.instrumentation.anthropic import AnthropicInstrumentor
from payi_otel.testing.replay import Cassette

TOOLS_CASSETTE, TOOLS = load("test_anthropic_tools_legacy")
STREAM_CASSETTE, STREAMED = load("test_anthropic_tools_streaming_legacy")
CACHE_CASSETTE, CACHED = load("test_anthropic_prompt_caching_legacy")


@pytest.fixture
def tel():
    telemetry = Telemetry()
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                            skip_dep_check=True)  # fmt: skip
    yield telemetry
    instrumentor.uninstrument()


def request(interaction):
    return {k: v for k, v in interaction.request_body.items() if k != "stream"}


def surface(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            pytest.skip(f"anthropic {anthropic.__version__} has no {path}")
    return obj


def assert_tools_event(tel):
    span = tel.one_span()
    event = payi_event(span)
    assert event["units"] == expected_units(TOOLS.json()["usage"])
    assert json.loads(span.attributes[A.PAYI_FUNCTION_CALLS]) == expected_tool_calls(TOOLS)
    return event


@pytest.mark.parametrize("path", ["messages.create", "beta.messages.create", "messages.parse", "beta.messages.parse"])
def test_non_streamed_surfaces(tel, path):
    c = client_for(TOOLS, Cassette([TOOLS]))
    result = surface(c, path)(**request(TOOLS))
    assert result.id == TOOLS.json()["id"]
    event = assert_tools_event(tel)
    assert event["provider_response_id"] == TOOLS.json()["id"]


def test_beta_stream_manager(tel):
    c = client_for(STREAMED, Cassette([STREAMED]))
    with surface(c, "beta.messages.stream")(**request(STREAMED)) as stream:
        message = stream.get_final_message()
    span = tel.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert [b.type for b in message.content].count("tool_use") == len(expected_tool_calls(STREAMED))


def test_with_raw_response(tel):
    c = client_for(TOOLS, Cassette([TOOLS]))
    raw = c.messages.with_raw_response.create(**request(TOOLS))
    assert raw.parse().id == TOOLS.json()["id"]
    assert_tools_event(tel)


def test_with_streaming_response(tel):
    c = client_for(STREAMED, Cassette([STREAMED]))
    with c.messages.with_streaming_response.create(stream=True, **request(STREAMED)) as response:
        events = list(response.parse())
    assert events[-1].type == "message_stop"
    span = tel.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert json.loads(span.attributes[A.PAYI_FUNCTION_CALLS]) == expected_tool_calls(STREAMED)


def test_with_streaming_response_closed_unread(tel):
    c = client_for(STREAMED, Cassette([STREAMED]))
    with c.messages.with_streaming_response.create(stream=True, **request(STREAMED)):
        pass
    event = payi_event(tel.one_span())
    assert event["properties"]["system.usage_incomplete"] == "true"


@pytest.mark.parametrize("read", ["json", "read", "text"])
def test_with_streaming_response_read_without_parse(tel, read):
    """The whole body read some other way than ``parse()``: the usage in it is recorded all the same, and the
    response the caller holds is not touched (its own ``parse()`` afterwards is the SDK's)."""
    c = client_for(TOOLS, Cassette([TOOLS]))
    with c.messages.with_streaming_response.create(**request(TOOLS)) as response:
        body = getattr(response, read)()
        if read == "json":
            assert body["id"] == TOOLS.json()["id"]
        else:
            assert json.loads(body)["id"] == TOOLS.json()["id"]
    assert not response._parsed_by_type  # nothing parsed on the caller's object
    event = assert_tools_event(tel)
    assert "system.usage_incomplete" not in event.get("properties", {})


def test_with_streaming_response_closed_unread_body(tel):
    c = client_for(TOOLS, Cassette([TOOLS]))
    with c.messages.with_streaming_response.create(**request(TOOLS)):
        pass
    event = payi_event(tel.one_span())
    assert event["properties"]["system.usage_incomplete.reason"] == "raw response closed before its body was read"


def test_cache_writes_and_reads(tel):
    c = client_for(CACHED, CACHE_CASSETTE)
    write, read = (c.messages.create(**i.request_body) for i in CACHE_CASSETTE.interactions)
    events = [payi_event(s) for s in tel.spans()]
    assert [e["units"] for e in events] == [expected_units(i.json()["usage"]) for i in CACHE_CASSETTE.interactions]
    assert events[0]["units"]["text_cache_write"]["input"] == write.usage.cache_creation_input_tokens
    assert events[1]["units"]["text_cache_read"]["input"] == read.usage.cache_read_input_tokens


def _answered_with(usage: dict, model: str):
    """A real client whose recorded tools response now reports ``usage`` for ``model``."""
    body = {**TOOLS.json(), "usage": usage, "model": model}
    interaction = dataclasses.replace(TOOLS, body=json.dumps(body).encode(), headers=(("content-type",
                                      "application/json"),))  # fmt: skip
    return client_for(interaction, Cassette([interaction]))


# (model, prompt tokens): above the catalog's long-context threshold for Sonnet 4.5 (200k) and Haiku 5.5
# (100k); the same sizes for models the catalog prices flat, and a prompt at the threshold itself.
@pytest.mark.parametrize(
    ("model", "prompt"),
    [("claude-sonnet-4-5-20250929", 205_000), ("claude-haiku-5-5", 150_000), ("claude-3-5-sonnet-20240620", 205_000),
     ("claude-sonnet-4-20250514", 205_000), ("claude-sonnet-4-5-20250929", 150_000),
     ("claude-sonnet-4-5-20250929", 200_000)],
)  # fmt: skip
def test_one_hour_cache_writes_and_long_context_per_model(tel, model, prompt):
    usage = {"input_tokens": prompt - 15_000, "output_tokens": 7, "cache_read_input_tokens": 6_000,
             "cache_creation_input_tokens": 9_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 4_000, "ephemeral_1h_input_tokens": 5_000}}  # fmt: skip
    _answered_with(usage, model).messages.create(**{**request(TOOLS), "model": model})
    units = payi_event(tel.one_span())["units"]
    assert units == expected_units(usage, model)
    suffix = "_large_context" if catalog_threshold(model) is not None and prompt > catalog_threshold(model) else ""
    assert units[f"text_cache_write_1h{suffix}"] == {"input": 5_000, "output": 0}
    assert units[f"text{suffix}"]["input"] == prompt - 15_000


def _png(width: int, height: int) -> bytes:
    """A valid one-colour PNG of the given size (stdlib only)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def _image(media_type: str, data: bytes) -> dict:
    source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}
    return {"type": "image", "source": source}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_images_in_the_request_are_priced_as_vision(tel, is_async):
    """Two images of known sizes (one scaled down by the API, one inside a tool result): their tokens move
    from text.input to vision.input; text + vision is still the reported input."""
    usage = {"input_tokens": 4_000, "output_tokens": 12}
    messages = [
        {"role": "user", "content": [_image("image/png", _png(2000, 1000)), {"type": "text", "text": "Describe"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "look", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [_image("image/gif", _gif(640, 480))]}]},
    ]  # fmt: skip
    body = {**request(TOOLS), "messages": messages}
    interaction = dataclasses.replace(TOOLS, body=json.dumps({**TOOLS.json(), "usage": usage}).encode(),
                                      headers=(("content-type", "application/json"),))  # fmt: skip
    client = client_for(interaction, Cassette([interaction]), is_async=is_async)
    if is_async:
        asyncio.run(client.messages.create(**body))
    else:
        client.messages.create(**body)
    vision = image_tokens(2000, 1000) + image_tokens(640, 480)
    assert 0 < vision < 4_000
    units = payi_event(tel.one_span())["units"]
    assert units == expected_units(usage, body["model"], vision)
    assert units["vision"]["input"] + units["text"]["input"] == 4_000


def test_images_that_cannot_be_measured_leave_the_input_as_text(tel):
    usage = {"input_tokens": 2_000, "output_tokens": 5}
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    messages = [{"role": "user", "content": [_image("image/png", _png(100, 100)), url_image]}]
    _answered_with(usage, TOOLS.request_body["model"]).messages.create(**{**request(TOOLS), "messages": messages})
    assert payi_event(tel.one_span())["units"] == {"text": {"input": 2_000, "output": 5}}


def test_business_context_and_proxy_headers(tel):
    c = client_for(TOOLS, Cassette([TOOLS]))
    with track_context(use_case_name="triage", user_id="jane"):
        c.messages.create(extra_headers={"xProxy-Request-Tags": "urgent"}, **request(TOOLS))
    attrs = tel.one_span().attributes
    assert attrs[A.PAYI_USE_CASE_NAME] == "triage" and attrs[A.PAYI_USER_ID] == "jane"
    assert list(attrs[A.PAYI_REQUEST_TAGS]) == ["urgent"]


def test_provider_error_reraised_unchanged(tel):
    _, error = load("test_anthropic_explicit_effort_xhigh_unsupported_model_errors")
    c = client_for(error, Cassette([error]))
    with pytest.raises(anthropic.BadRequestError) as raised:
        c.messages.create(**call_kwargs_of(c, error))
    assert raised.value.status_code == 400
    span = tel.one_span()
    assert span.attributes[A.HTTP_RESPONSE_STATUS_CODE] == 400
    assert span.status.status_code.name == "ERROR"


def call_kwargs_of(c, interaction):
    from _anthropic_helpers import call_kwargs

    return call_kwargs(c.messages.create, interaction.request_body)


def _platform_interaction(path: str):
    return dataclasses.replace(TOOLS, path=path, uri=f"https://example.test{path}")


def test_bedrock_client(tel):
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    interaction = _platform_interaction(f"/model/{model}/invoke")
    client = anthropic.AnthropicBedrock(
        aws_access_key="AKIA", aws_secret_key="secret", aws_region="us-east-1", base_url="https://example.test",
        http_client=http.Client(transport=Cassette([interaction]).transport(HTTP_LIBRARY)), max_retries=0,
    )  # fmt: skip
    client.messages.create(**{**request(TOOLS), "model": model})
    event = payi_event(tel.one_span())
    assert event["category"] == "system.aws.bedrock" and event["resource"] == model
    assert event["units"] == expected_units(TOOLS.json()["usage"])


def test_vertex_client(tel):
    model = "claude-3-5-sonnet@20240620"
    path = f"/v1/projects/proj/locations/us-east5/publishers/anthropic/models/{model}:rawPredict"
    interaction = _platform_interaction(path)
    client = anthropic.AnthropicVertex(
        region="us-east5", project_id="proj", access_token="token", base_url="https://example.test/v1",
        http_client=http.Client(transport=Cassette([interaction]).transport(HTTP_LIBRARY)), max_retries=0,
    )  # fmt: skip
    client.messages.create(**{**request(TOOLS), "model": model})
    event = payi_event(tel.one_span())
    assert event["category"] == "system.google.vertex" and event["resource"] == f"anthropic.{model}"


def test_count_tokens_is_not_a_billed_call(tel):
    cassette, interaction = load("test_anthropic_cache_count_tokens")
    c = client_for(interaction, cassette)
    surface(c, "messages.count_tokens")(**{k: v for k, v in interaction.request_body.items() if k != "max_tokens"})
    assert tel.spans() == []


def test_async_client_sees_the_sdk_objects(tel):
    async def main():
        c = client_for(TOOLS, Cassette([TOOLS]), is_async=True)
        return await c.messages.create(**request(TOOLS))

    message = asyncio.run(main())
    assert isinstance(message, anthropic.types.Message)
    assert_tools_event(tel)


def test_instrument_covers_anthropic():
    from payi_otel.configure import available_instrumentors, instrument

    assert "payi_anthropic" in available_instrumentors()  # entry point declared in pyproject.toml
    telemetry = Telemetry()
    handle = instrument(tracer_provider=telemetry.tracer_provider, exporter=False, instruments={"payi_anthropic"})
    try:
        assert handle.instrumentors["payi_anthropic"].is_instrumented_by_opentelemetry
        client_for(TOOLS, Cassette([TOOLS])).messages.create(**request(TOOLS))
    finally:
        handle.uninstrument()
    assert_tools_event(telemetry)
