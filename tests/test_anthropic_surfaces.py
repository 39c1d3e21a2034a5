"""Anthropic surfaces beyond messages.create: parse, beta.messages, raw responses, Bedrock and Vertex
clients, business context, and what the caller sees (same objects, same exceptions)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import anthropic
import pytest
from _anthropic_helpers import HTTP_LIBRARY, client_for, expected_tool_calls, expected_units, http, load
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


def test_cache_writes_and_reads(tel):
    c = client_for(CACHED, CACHE_CASSETTE)
    write, read = (c.messages.create(**i.request_body) for i in CACHE_CASSETTE.interactions)
    events = [payi_event(s) for s in tel.spans()]
    assert [e["units"] for e in events] == [expected_units(i.json()["usage"]) for i in CACHE_CASSETTE.interactions]
    assert events[0]["units"]["text_cache_write"]["input"] == write.usage.cache_creation_input_tokens
    assert events[1]["units"]["text_cache_read"]["input"] == read.usage.cache_read_input_tokens


def test_one_hour_cache_writes_and_large_context(tel):
    body = TOOLS.json()
    body["usage"] = {"input_tokens": 190_000, "output_tokens": 7, "cache_read_input_tokens": 6_000,
                     "cache_creation_input_tokens": 9_000,
                     "cache_creation": {"ephemeral_5m_input_tokens": 4_000, "ephemeral_1h_input_tokens": 5_000}}
    interaction = dataclasses.replace(TOOLS, body=json.dumps(body).encode(), headers=(("content-type",
                                      "application/json"),))  # fmt: skip
    client_for(interaction, Cassette([interaction])).messages.create(**request(TOOLS))
    event = payi_event(tel.one_span())
    assert event["units"] == {
        "text_large_context": {"input": 190_000, "output": 7},
        "text_cache_read_large_context": {"input": 6_000, "output": 0},
        "text_cache_write_large_context": {"input": 4_000, "output": 0},
        "text_cache_write_1h_large_context": {"input": 5_000, "output": 0},
    }


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
