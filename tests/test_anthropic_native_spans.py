"""The anthropic 2.x SDK traces its own calls (scope ``com.anthropic.sdk.python``). With our Anthropic
instrumentation on, its span nests under ours and the Pay-i exporter still sends one event per call, ours,
with the business context; with ours off (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=payi_anthropic``), the
SDK's span alone gives one attributed event per call with the recorded units and tool calls."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from _anthropic_helpers import client_for, expected_tool_calls, expected_units, load, recorded_usage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payi_otel import track_context
from payi_otel.exporters import PayiSpanExporter
from payi_otel.instrumentation.anthropic import AnthropicInstrumentor
from payi_otel.processor import ensure_processor
from payi_otel.testing.replay import Cassette

pytestmark = pytest.mark.skipif(
    "open_telemetry" not in anthropic.Anthropic.__init__.__code__.co_varnames,
    reason=f"anthropic {anthropic.__version__} does not trace its own calls",
)

NATIVE_SCOPE = "com.anthropic.sdk.python"


def _with_usage(interaction, usage):
    body = {**interaction.json(), "usage": usage}
    return dataclasses.replace(interaction, body=json.dumps(body).encode(), headers=(("content-type",
                               "application/json"),))  # fmt: skip


TOOLS = load("test_anthropic_tools_legacy")[1]
RECORDINGS = [
    TOOLS,  # tool calls
    _with_usage(
        TOOLS,
        {
            "input_tokens": 12,
            "output_tokens": 7,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 900,
            "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 500},
        },
    ),
    load("test_anthropic_tools_streaming_legacy")[1],  # streamed tool calls
    load("test_anthropic_cache_count_tokens")[0].interactions[1],  # cache reads, cache_creation split
    load("test_google_model_receive_web_search_history_from_another_provider")[1],  # a web search
]


class Pipeline:
    def __init__(self, tmp_path: Path, content: bool) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        ensure_processor(self.provider)  # what instrument() / the exporter do for the global provider
        self.events_file = tmp_path / "events.jsonl"
        self.payi = PayiSpanExporter(offline_file=str(self.events_file), spool_dir=str(tmp_path / "spool"))
        self.provider.add_span_processor(SimpleSpanProcessor(self.payi))
        self.content = content

    def call(self, interaction) -> None:
        options: dict[str, Any] = {"tracer_provider": self.provider}
        if self.content:
            options["traces"] = {"content_mode": "content"}
        client = client_for(interaction, Cassette([interaction]), open_telemetry=options)
        body = interaction.request_body
        with track_context(use_case_name="support", user_id="ursula"):
            if body.get("stream"):
                with client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
                    stream.until_done()
            else:
                client.messages.create(**body)

    def events(self) -> list[dict[str, Any]]:
        self.payi.force_flush()
        self.payi.shutdown()
        return [json.loads(line) for line in self.events_file.read_text().splitlines()]

    def spans(self, scope: str) -> list[Any]:
        return [s for s in self.memory.get_finished_spans() if s.instrumentation_scope.name == scope]


@pytest.mark.parametrize("ours", [True, False], ids=["ours-on", "ours-off"])
def test_one_attributed_event_per_call_with_the_recorded_units(ours, tmp_path):
    pipeline = Pipeline(tmp_path, content=True)
    instrumentor = AnthropicInstrumentor()
    if ours:
        instrumentor.instrument(tracer_provider=pipeline.provider, skip_dep_check=True)
    try:
        for interaction in RECORDINGS:
            pipeline.call(interaction)
    finally:
        if ours:
            instrumentor.uninstrument()
    native = pipeline.spans(NATIVE_SCOPE)
    assert len(native) == len(RECORDINGS)
    if ours:
        mine = pipeline.spans("payi_otel")
        assert [s.parent.span_id for s in native] == [s.context.span_id for s in mine]  # nested under ours
    events = pipeline.events()
    assert len(events) == len(RECORDINGS)
    for event, interaction in zip(events, RECORDINGS, strict=True):
        assert (event["use_case_name"], event["user_id"]) == ("support", "ursula")
        assert event["category"] == "system.anthropic"
        assert event["units"] == expected_units(recorded_usage(interaction))
        assert event.get("provider_response_function_calls") == expected_tool_calls(interaction) or (
            event.get("provider_response_function_calls") is None and expected_tool_calls(interaction) is None
        )
