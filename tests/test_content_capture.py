"""Message content follows the GenAI conventions: the capture modes of
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, the parts schema on spans, the details event.

The real openai SDK answers from recorded traffic; expected content is read from the recorded bodies."""

from __future__ import annotations

import json
import logging

import pytest
from _openai_helpers import CASSETTES, Telemetry, client_for
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

try:
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogExporter
except ImportError:  # SDK releases before the rename
    from opentelemetry.sdk._logs.export import InMemoryLogExporter

from payi_otel import attributes as A
from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.messages import ContentMode, parse_content_mode
from payi_otel.testing.replay import Cassette

OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai"
TOOLS = Cassette.load(OTEL / "test_chat_completion_tool_calls_no_content.yaml").interactions
STREAM_TOOLS = Cassette.load(OTEL / "test_chat_completion_multiple_tools_streaming_no_content.yaml").interactions[0]
EVENT = "gen_ai.client.inference.operation.details"


class Logs:
    def __init__(self) -> None:
        self.exporter = InMemoryLogExporter()
        self.provider = LoggerProvider()
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(self.exporter))

    def events(self) -> list[object]:
        return [r.log_record for r in self.exporter.get_finished_logs() if r.log_record.event_name == EVENT]


def run(interaction, env_value: str | None, monkeypatch, **call):
    if env_value is None:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", env_value)
    telemetry, logs = Telemetry(), Logs()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
        logger_provider=logs.provider, skip_dep_check=True,
    )  # fmt: skip
    try:
        client = client_for(interaction, Cassette([interaction]))
        result = client.chat.completions.create(**(call or interaction.request_body))
        if call.get("stream"):
            list(result)
    finally:
        instrumentor.uninstrument()
    return telemetry.one_span(), logs.events()


def expected_input(body: dict) -> list[dict]:
    """The conventions' form of a recorded chat request's messages."""
    out = []
    for m in body["messages"]:
        if m["role"] == "tool":
            out.append(
                {
                    "role": "tool",
                    "parts": [{"type": "tool_call_response", "id": m["tool_call_id"], "response": m["content"]}],
                }
            )
            continue
        parts = [{"type": "text", "content": m["content"]}] if m.get("content") else []
        parts += [
            {
                "type": "tool_call",
                "id": tc["id"],
                "name": tc["function"]["name"],
                "arguments": json.loads(tc["function"]["arguments"]),
            }
            for tc in m.get("tool_calls", ())
        ]
        out.append({"role": m["role"], "parts": parts})
    return out  # fmt: skip


def expected_output(response: dict) -> list[dict]:
    out = []
    for choice in response["choices"]:
        m = choice["message"]
        parts = [{"type": "text", "content": m["content"]}] if m.get("content") else []
        parts += [
            {
                "type": "tool_call",
                "id": tc["id"],
                "name": tc["function"]["name"],
                "arguments": json.loads(tc["function"]["arguments"]),
            }
            for tc in m.get("tool_calls") or ()
        ]
        out.append({"role": "assistant", "parts": parts, "finish_reason": choice["finish_reason"]})
    return out  # fmt: skip


@pytest.mark.parametrize(
    "value, on_span, in_event",
    [(None, False, False), ("NO_CONTENT", False, False), ("span_only", True, False), ("Event_Only", False, True),
     ("SPAN_AND_EVENT", True, True), ("true", True, False), ("FALSE", False, False)],
)  # fmt: skip
@pytest.mark.parametrize("turn", [0, 1], ids=["tool-calls", "tool-results"])
def test_each_mode_puts_content_where_it_says(value, on_span, in_event, turn, monkeypatch):
    interaction = TOOLS[turn]
    span, events = run(interaction, value, monkeypatch)
    want_in, want_out = expected_input(interaction.request_body), expected_output(interaction.json())
    attrs = span.attributes
    if on_span:
        assert json.loads(attrs[A.GEN_AI_INPUT_MESSAGES]) == want_in
        assert json.loads(attrs[A.GEN_AI_OUTPUT_MESSAGES]) == want_out
    else:
        assert A.GEN_AI_INPUT_MESSAGES not in attrs and A.GEN_AI_OUTPUT_MESSAGES not in attrs
    if in_event:
        (event,) = events
        assert event.attributes[A.GEN_AI_OPERATION_NAME] == "chat"
        assert event.attributes[A.GEN_AI_RESPONSE_ID] == interaction.json()["id"]
        assert json.loads(json.dumps(event.attributes[A.GEN_AI_INPUT_MESSAGES])) == want_in
        assert json.loads(json.dumps(event.attributes[A.GEN_AI_OUTPUT_MESSAGES])) == want_out
        assert event.span_id == span.context.span_id and event.trace_id == span.context.trace_id
    else:
        assert events == []


def test_streamed_tool_calls_are_assembled_into_parts(monkeypatch):
    body = {**STREAM_TOOLS.request_body}
    span, _ = run(STREAM_TOOLS, "SPAN_ONLY", monkeypatch, **body)
    chunks = STREAM_TOOLS.sse_events()
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.get("choices", ()):
            for tc in (choice.get("delta") or {}).get("tool_calls") or ():
                slot = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                slot["name"] += (tc.get("function") or {}).get("name") or ""
                slot["arguments"] += (tc.get("function") or {}).get("arguments") or ""
    reason = next(c["finish_reason"] for chunk in chunks for c in chunk.get("choices", ()) if c.get("finish_reason"))
    (output,) = json.loads(span.attributes[A.GEN_AI_OUTPUT_MESSAGES])
    assert output["finish_reason"] == reason
    assert [p for p in output["parts"] if p["type"] == "tool_call"] == [
        {"type": "tool_call", "id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
        for _, c in sorted(calls.items())
    ]


def test_unknown_value_is_logged_naming_the_variable_and_the_rule(monkeypatch, caplog):
    with caplog.at_level(logging.ERROR):
        span, events = run(TOOLS[0], "spans-please", monkeypatch)
    assert A.GEN_AI_INPUT_MESSAGES not in span.attributes and events == []
    (record,) = [r for r in caplog.records if "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in r.getMessage()]
    assert "'spans-please'" in record.getMessage() and "SPAN_AND_EVENT" in record.getMessage()


def test_keyword_accepts_modes_and_booleans():
    assert parse_content_mode(True) is ContentMode.SPAN_ONLY
    assert parse_content_mode("event_only") is ContentMode.EVENT_ONLY
    with pytest.raises(ValueError, match="capture_content: 'sometimes' is not a content capture mode"):
        parse_content_mode("sometimes", "capture_content")
