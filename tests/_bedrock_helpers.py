"""Shared pieces for the Bedrock tests: real boto3 clients answered from recordings, expectations read
from the recorded bodies and headers (never from our own code)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from _openai_helpers import Telemetry
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer

from payi_otel.instrumentation.bedrock import BedrockInstrumentor
from payi_otel.testing.botocore_replay import BotocoreReplay
from payi_otel.testing.replay import Cassette, Interaction

CASSETTES = Path(__file__).parent / "cassettes"

METHODS = {
    "converse": "converse",
    "converse-stream": "converse_stream",
    "invoke": "invoke_model",
    "invoke-with-response-stream": "invoke_model_with_response_stream",
    "count-tokens": "count_tokens",
}
STREAM_KEYS = {"converse_stream": "stream", "invoke_model_with_response_stream": "body"}

# Bedrock guardrail usage keys and the Pay-i units they are priced as.
GUARDRAIL_UNITS = {
    "topicPolicyUnits": "guardrail_topic",
    "contentPolicyUnits": "guardrail_content",
    "wordPolicyUnits": "guardrail_word_free",
    "automatedReasoningPolicyUnits": "guardrail_automated_reasoning",
    "sensitiveInformationPolicyUnits": "guardrail_sensitive_information",
    "sensitiveInformationPolicyFreeUnits": "guardrail_sensitive_information_free",
    "contextualGroundingPolicyUnits": "guardrail_contextual_grounding",
    "contentPolicyImageUnits": "guardrail_content_image",
}


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def bedrock(telemetry):
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, skip_dep_check=True
    )
    yield telemetry
    instrumentor.uninstrument()


def cassette_files() -> list[Path]:
    return sorted(CASSETTES.glob("*/bedrock/*.yaml"))


def is_bedrock(interaction: Interaction) -> bool:
    return "/model/" in interaction.path and unquote(interaction.path).rsplit("/", 1)[-1] in METHODS


def new_client(**config: Any) -> Any:
    """A real boto3 bedrock-runtime client (fake credentials; requests are answered by a replay)."""
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False, **config),
    )


def replayed_client(*interactions: Interaction, name: str = "") -> tuple[Any, BotocoreReplay]:
    replay = BotocoreReplay(Cassette(list(interactions), name=name))
    return replay.attach(new_client()), replay


def _blobs(value: Any) -> Any:
    """Converse JSON as boto3 parameters: base64 ``source.bytes`` (images, documents) become bytes."""
    if isinstance(value, dict):
        out = {k: _blobs(v) for k, v in value.items()}
        source = out.get("source")
        if isinstance(source, dict) and isinstance(source.get("bytes"), str):
            out["source"] = {**source, "bytes": base64.b64decode(source["bytes"])}
        return out
    if isinstance(value, list):
        return [_blobs(v) for v in value]
    return value


def boto_call(interaction: Interaction) -> tuple[str, dict[str, Any]]:
    """The boto3 method and keyword arguments that send ``interaction``'s recorded request."""
    path = unquote(interaction.path)
    model_id, _, op = path.split("/model/", 1)[1].rpartition("/")
    method = METHODS[op]
    body = interaction.request_body
    if method in ("converse", "converse_stream", "count_tokens"):
        return method, {"modelId": model_id, **_blobs(body if isinstance(body, dict) else {})}
    raw = json.dumps(body).encode() if body is not None else b"{}"
    return method, {"modelId": model_id, "body": raw, "contentType": "application/json", "accept": "application/json"}


def stream_events(interaction: Interaction) -> list[dict[str, Any]]:
    """The recorded event stream as (event type, JSON payload; chunk bytes decoded) pairs."""
    buffer = EventStreamBuffer()
    buffer.add_data(interaction.body)
    events = []
    for message in buffer:
        payload = json.loads(message.payload)
        if isinstance(payload.get("bytes"), str):
            payload = json.loads(base64.b64decode(payload["bytes"]))
        events.append({"type": message.headers.get(":event-type"), "payload": payload})
    return events


# --- expectations from the recordings -------------------------------------------------------------
def _units(inp: Any, out: Any, cache_read: Any = 0, cache_write: Any = 0) -> dict[str, int]:
    units = {"text.input": int(inp or 0), "text.output": int(out or 0)}
    if cache_read:
        units["text_cache_read.input"] = int(cache_read)
    if cache_write:
        units["text_cache_write.input"] = int(cache_write)
    return {k: v for k, v in units.items() if v}


def _guardrail_units(assessments: list[Any]) -> dict[str, int]:
    units: dict[str, int] = {}
    for assessment in assessments:
        for key, value in ((assessment.get("invocationMetrics") or {}).get("usage") or {}).items():
            if key in GUARDRAIL_UNITS and value:
                name = f"{GUARDRAIL_UNITS[key]}.input"
                units[name] = units.get(name, 0) + int(value)
    return units


def converse_guardrails(trace: dict[str, Any] | None) -> dict[str, int]:
    guardrail = (trace or {}).get("guardrail") or {}
    found = list((guardrail.get("inputAssessment") or {}).values())
    for per_guardrail in (guardrail.get("outputAssessments") or {}).values():
        found.extend(per_guardrail)
    return _guardrail_units(found)


def invoke_guardrails(body: dict[str, Any]) -> dict[str, int]:
    guardrail = (body.get("amazon-bedrock-trace") or {}).get("guardrail") or {}
    found = list((guardrail.get("input") or {}).values())
    for output in guardrail.get("outputs") or ():
        found.extend(output.values())
    return _guardrail_units(found)


def expected_units(method: str, interaction: Interaction) -> dict[str, int]:
    """Pay-i units (``unit.direction`` -> n, non-zero) the recording says this call used."""
    if method == "converse":
        body = interaction.json()
        u = body["usage"]
        units = _units(
            u["inputTokens"], u["outputTokens"], u.get("cacheReadInputTokens"), u.get("cacheWriteInputTokens")
        )
        return {**units, **converse_guardrails(body.get("trace"))}
    if method == "converse_stream":
        metadata = next(e["payload"] for e in reversed(stream_events(interaction)) if e["type"] == "metadata")
        u = metadata["usage"]
        units = _units(
            u["inputTokens"], u["outputTokens"], u.get("cacheReadInputTokens"), u.get("cacheWriteInputTokens")
        )
        return {**units, **converse_guardrails(metadata.get("trace"))}
    if method == "invoke_model":
        h = {k.lower(): v for k, v in interaction.headers}
        units = _units(
            h["x-amzn-bedrock-input-token-count"],
            h.get("x-amzn-bedrock-output-token-count"),
            h.get("x-amzn-bedrock-cache-read-input-token-count"),
            h.get("x-amzn-bedrock-cache-write-input-token-count"),
        )
        return {**units, **invoke_guardrails(interaction.json())}
    chunks = [e["payload"] for e in stream_events(interaction)]
    guardrails: dict[str, int] = {}
    for chunk in chunks:
        if "amazon-bedrock-trace" in chunk:
            guardrails = invoke_guardrails(chunk)
    metrics = [c["amazon-bedrock-invocationMetrics"] for c in chunks if "amazon-bedrock-invocationMetrics" in c]
    if metrics:
        m = metrics[-1]
        units = _units(
            m["inputTokenCount"],
            m["outputTokenCount"],
            m.get("cacheReadInputTokenCount"),
            m.get("cacheWriteInputTokenCount"),
        )
    else:  # Titan without metrics: the counts in its chunks
        units = _units(
            next(c["inputTextTokenCount"] for c in chunks if "inputTextTokenCount" in c),
            next(c["totalOutputTextTokenCount"] for c in chunks if "totalOutputTextTokenCount" in c),
        )
    return {**units, **guardrails}


def _arguments(raw: str) -> str:
    """Streamed tool input as the non-streamed responses write it: compact JSON ("{}" when none)."""
    if not raw:
        return "{}"
    try:
        return json.dumps(json.loads(raw), separators=(",", ":"))
    except ValueError:
        return raw


def _content_tools(content: Any) -> list[dict[str, str]]:
    tools = []
    for block in content or ():
        use = block.get("toolUse") if block.get("type") != "tool_use" else block
        if use is not None:
            tools.append({"name": use["name"], "arguments": json.dumps(use["input"], separators=(",", ":"))})
    return tools


def _streamed_tools(payloads: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Tool uses of Converse-shaped (``contentBlockStart``/``Delta``) or Anthropic (``content_block_*``)
    stream events, per content block, in block order."""
    blocks: dict[int, list[str]] = {}
    for p in payloads:
        start = p.get("contentBlockStart")
        if start and "toolUse" in start.get("start", {}):
            blocks[start["contentBlockIndex"]] = [start["start"]["toolUse"]["name"], ""]
        delta = p.get("contentBlockDelta")
        if delta and "toolUse" in delta.get("delta", {}):
            blocks[delta["contentBlockIndex"]][1] += delta["delta"]["toolUse"].get("input", "")
        if p.get("type") == "content_block_start" and p["content_block"]["type"] == "tool_use":
            given = p["content_block"].get("input")
            blocks[p["index"]] = [p["content_block"]["name"], json.dumps(given) if given else ""]
        if p.get("type") == "content_block_delta" and p["delta"]["type"] == "input_json_delta":
            blocks[p["index"]][1] += p["delta"]["partial_json"]
    return [{"name": name, "arguments": _arguments(raw)} for _, (name, raw) in sorted(blocks.items())]


def expected_tool_calls(method: str, interaction: Interaction) -> list[dict[str, str]]:
    """The tool calls the recorded response holds, whatever the operation and model family."""
    if method == "converse":
        return _content_tools(interaction.json()["output"]["message"]["content"])
    if method == "invoke_model":
        body = interaction.json()
        if not isinstance(body, dict):
            return []
        content = body.get("content")
        if content is None:
            content = ((body.get("output") or {}).get("message") or {}).get("content")
        return _content_tools(content if isinstance(content, list) else [])
    events = stream_events(interaction)
    if method == "converse_stream":  # the event type is a header: {type: payload} as boto3 yields it
        return _streamed_tools([{e["type"]: e["payload"]} for e in events])
    return _streamed_tools([e["payload"] for e in events])


def span_units(event: dict[str, Any]) -> dict[str, int]:
    return {f"{unit}.{d}": v for unit, dirs in event["units"].items() for d, v in dirs.items() if v}
