"""Proxy mode of the plugin end to end: instrumented real SDK clients, @track / track_context, through the real
service's proxy to a real local upstream answering recorded responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from _openai_helpers import Telemetry
from service_support import stored_requests
from test_proxy import CONTRIB, TRACELOOP, proxied, recorded

from payi_otel import proxy_mode, track, track_context
from payi_otel.exporters.mapping import event_from_span
from payi_otel.instrumentation.anthropic import AnthropicInstrumentor
from payi_otel.instrumentation.openai import OpenAIInstrumentor


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    instrumentors = [OpenAIInstrumentor(), AnthropicInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=telemetry.tracer_provider, skip_dep_check=True)
    yield telemetry
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    proxy_mode.reset()


def our_spans(telemetry: Telemetry) -> list[Any]:
    return [s for s in telemetry.exporter.get_finished_spans() if s.instrumentation_scope.name == "payi_otel"]


def test_track_context_travels_as_xproxy_headers_and_the_proxy_stores_the_one_record(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        proxy_mode.configure(True, svc.base_url, svc.api_key)
        client = openai.OpenAI(api_key="sk-provider-key", max_retries=0)  # the public API's URL, rerouted

        @track(use_case_name="support", user_id="jane", request_properties={"tier": "gold"})
        def ask() -> Any:
            with track_context(use_case_step="draft", account_name="acme"):
                return client.chat.completions.create(
                    **interaction.request_body, extra_headers={"xProxy-Request-Tags": "beta"}
                )

        completion = ask()
    assert completion.choices[0].message.content == interaction.json()["choices"][0]["message"]["content"]
    assert completion.model_extra is not None and completion.model_extra["xproxy_result"]["user_id"] == "jane"
    [seen] = upstream.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-provider-key"
    assert not [h for h in seen.headers if h.startswith(("xproxy-", "x-payi-otel"))]
    [row] = stored_requests(tmp_path / "service")
    assert (row["use_case_name"], row["use_case_step"], row["user_id"], row["account_name"]) == (
        "support",
        "draft",
        "jane",
        "acme",
    )
    assert row["properties"]["tier"] == "gold"
    assert json.loads(row["request_tags"]) == ["beta"]
    [span] = our_spans(telemetry)
    assert span.attributes["payi.proxied"] is True
    assert span.attributes["payi.user_id"] == "jane"
    assert event_from_span(span) is None  # no ingest event: the proxy stored the call


def test_track_context_switches_proxy_mode_for_a_block(tmp_path: Path, telemetry: Telemetry) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.repeat = interaction
        proxy_mode.configure(False, svc.base_url, svc.api_key)
        client = openai.OpenAI(api_key="k", base_url=f"{upstream.base_url}/v1", max_retries=0)
        with track_context(proxy=True, user_id="in-proxy"):
            client.chat.completions.create(**interaction.request_body)
            with track_context(proxy=False):
                client.chat.completions.create(**interaction.request_body)
        client.chat.completions.create(**interaction.request_body)
    assert len(upstream.requests) == 3
    [row] = stored_requests(tmp_path / "service")
    assert row["user_id"] == "in-proxy"
    spans = our_spans(telemetry)
    assert [s.attributes.get("payi.proxied", False) for s in spans] == [True, False, False]
    assert [event_from_span(s) is None for s in spans] == [True, False, False]


def test_anthropic_stream_and_async_openai_in_proxy_mode(tmp_path: Path, telemetry: Telemetry) -> None:
    stream = recorded(TRACELOOP / "anthropic/test_anthropic_message_streaming_legacy.yaml")
    chat = recorded(CONTRIB / "openai/test_chat_completion_streaming.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(stream)
        upstream.answer(chat)
        proxy_mode.configure(True, svc.base_url, svc.api_key)
        request = {k: v for k, v in stream.request_body.items() if k != "stream"}
        with track_context(use_case_name="stories", use_case_properties={"lang": "en"}):
            with anthropic.Anthropic(api_key="sk-ant", max_retries=0).messages.stream(**request) as events:
                text = "".join(events.text_stream)

            async def chat_stream() -> list[Any]:
                client = openai.AsyncOpenAI(api_key="sk", max_retries=0)
                return [c async for c in await client.chat.completions.create(**chat.request_body)]

            chunks = asyncio.run(chat_stream())
    assert text == "".join(
        e["delta"].get("text", "") for e in stream.sse_events() if e["type"] == "content_block_delta"
    )
    assert len(chunks) == len(chat.sse_events())
    first, second = stored_requests(tmp_path / "service")
    assert (first["category"], second["category"]) == ("system.anthropic", "system.openai")
    assert first["use_case_name"] == second["use_case_name"] == "stories"
    assert [s.attributes["payi.proxied"] for s in our_spans(telemetry)] == [True, True]
