"""Message content of Google GenAI calls, in each capture mode (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT).

The real google-genai SDK answers from recorded traffic; expected content is read from the recorded
request and response bodies (the SDK's own JSON), never from the instrumentation."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from _google_helpers import CASSETTES, client_for, generate_kwargs, response_events, restored
from _openai_helpers import Telemetry
from google.genai import types
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from payi_otel import attributes as A
from payi_otel.instrumentation.google_genai import GoogleGenAIInstrumentor
from payi_otel.testing.replay import Cassette

PYDANTIC = CASSETTES / "pydantic__pydantic-ai" / "google"
AFC = PYDANTIC / "test_multiple_agent_tool_calls.yaml"  # a function call, then the answer to its result
STREAM = PYDANTIC / "test_google_model_file_search_tool_stream.yaml"  # system instruction, several chunks
EVENT = "gen_ai.client.inference.operation.details"


def _cassette(path: Any, action: str | None = None) -> Cassette:
    loaded = Cassette.load(path)
    interactions = [restored(i) for i in loaded.interactions if "googleapis.com" in i.uri]
    return Cassette([i for i in interactions if not action or i.path.endswith(":" + action)], name=loaded.name)


def _part(p: dict[str, Any]) -> dict[str, Any]:
    if "text" in p:
        return {"type": "reasoning" if p.get("thought") else "text", "content": p["text"]}
    if "functionCall" in p:
        call = p["functionCall"]
        return {"type": "tool_call", "id": call.get("id"), "name": call["name"], "arguments": call.get("args")}
    if "functionResponse" in p:
        response = p["functionResponse"]
        return {"type": "tool_call_response", "id": response.get("id"), "response": response["response"]}
    kind = next(k for k in p if k not in ("thought", "thoughtSignature"))
    return {"type": re.sub(r"(?<!^)([A-Z])", r"_\1", kind).lower()}  # executableCode -> executable_code


def expected_input(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": {"model": "assistant"}.get(c["role"], c["role"]), "parts": [_part(p) for p in c["parts"]]}
            for c in body["contents"]]  # fmt: skip


def expected_output(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One message per candidate; a stream's text pieces joined, as one answer."""
    parts: dict[int, list[dict[str, Any]]] = {}
    reasons: dict[int, str] = {}
    for event in events:
        for position, candidate in enumerate(event.get("candidates") or ()):
            index = candidate.get("index", position)
            found = parts.setdefault(index, [])
            for p in (candidate.get("content") or {}).get("parts") or ():
                part = _part(p)
                if found and part["type"] in ("text", "reasoning") and found[-1]["type"] == part["type"]:
                    found[-1]["content"] += part["content"]
                else:
                    found.append(part)
            if candidate.get("finishReason"):
                reasons[index] = candidate["finishReason"]
    return [{"role": "assistant", "parts": parts[i], "finish_reason": reasons.get(i, "")} for i in sorted(parts)]


def _run(mode: str | None, monkeypatch, call) -> tuple[list[Any], list[Any]]:
    if mode is None:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
    telemetry, exporter = Telemetry(), InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    instrumentor = GoogleGenAIInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                            logger_provider=logger_provider, skip_dep_check=True)  # fmt: skip
    try:
        call()
    finally:
        instrumentor.uninstrument()
    events = [r.log_record for r in exporter.get_finished_logs() if r.log_record.event_name == EVENT]
    return telemetry.spans(), events


@pytest.mark.parametrize(
    ("mode", "on_span", "in_event"),
    [(None, False, False), ("SPAN_ONLY", True, False), ("event_only", False, True), ("SPAN_AND_EVENT", True, True),
     ("true", True, False)],
)  # fmt: skip
def test_function_calling_turns_in_each_mode(mode, on_span, in_event, monkeypatch):
    """Automatic function calling: the function call the model asked for and the function's result are the
    second request's input, as the SDK sent it."""
    cassette = _cassette(AFC)

    def get_capital(country: str) -> str:
        """Get the capital of a country."""
        return "Paris"

    get_capital.__annotations__ = {"country": str, "return": str}

    def call() -> None:
        config = types.GenerateContentConfig(tools=[get_capital])
        client = client_for(cassette.interactions[0], cassette)  # kept: the SDK closes its HTTP client on GC
        client.models.generate_content(model="gemini-2.0-flash-exp", contents="What is the capital of France?",
                                       config=config)  # fmt: skip

    spans, events = _run(mode, monkeypatch, call)
    assert len(spans) == 2

    def sdk_neutral(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The SDK wraps a function's return value under a key that changed across releases
        (``return_value``, then ``result``): compare the values."""
        for m in messages:
            for p in m["parts"]:
                if p["type"] == "tool_call_response":
                    p["response"] = sorted(p["response"].values())
        return messages

    for index, (span, interaction) in enumerate(zip(spans, cassette.interactions, strict=True)):
        want_in, want_out = expected_input(interaction.request_body), expected_output([interaction.json()])
        want_in = sdk_neutral(want_in)
        if on_span:
            assert sdk_neutral(json.loads(span.attributes[A.GEN_AI_INPUT_MESSAGES])) == want_in
            assert json.loads(span.attributes[A.GEN_AI_OUTPUT_MESSAGES]) == want_out
        else:
            assert A.GEN_AI_INPUT_MESSAGES not in span.attributes
            assert A.GEN_AI_OUTPUT_MESSAGES not in span.attributes
        if in_event:
            event = events[index]
            assert sdk_neutral(json.loads(json.dumps(event.attributes[A.GEN_AI_INPUT_MESSAGES]))) == want_in
            assert json.loads(json.dumps(event.attributes[A.GEN_AI_OUTPUT_MESSAGES])) == want_out
            assert event.span_id == span.context.span_id
    if not in_event:
        assert events == []


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_stream_output_and_system_instruction(is_async, monkeypatch):
    cassette = _cassette(STREAM, "streamGenerateContent")
    interaction = cassette.interactions[0]
    kwargs = generate_kwargs(interaction)
    kwargs["config"] = {"system_instruction": interaction.request_body["systemInstruction"]}

    def call() -> None:
        client = client_for(interaction, cassette)
        if is_async:

            async def read() -> None:
                async for _ in await client.aio.models.generate_content_stream(**kwargs):
                    pass

            asyncio.run(read())
        else:
            for _ in client.models.generate_content_stream(**kwargs):
                pass

    (span,), _ = _run("SPAN_ONLY", monkeypatch, call)
    attrs = span.attributes
    assert json.loads(attrs[A.GEN_AI_INPUT_MESSAGES]) == expected_input(interaction.request_body)
    assert json.loads(attrs[A.GEN_AI_OUTPUT_MESSAGES]) == expected_output(response_events(interaction))
    recorded_system = interaction.request_body["systemInstruction"]["parts"]
    assert json.loads(attrs[A.GEN_AI_SYSTEM_INSTRUCTIONS]) == [_part(p) for p in recorded_system]
