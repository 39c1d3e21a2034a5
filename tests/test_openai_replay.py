"""Every recorded OpenAI / Azure OpenAI interaction, replayed through the real openai SDK.

Expectations (usage, units, ids, finish reasons, tool calls, status) are computed here from the
recorded response bodies, independently of the instrumentation's own extractors.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from _openai_helpers import (  # noqa: F401 - fixtures
    SUPPORTED_PATH,
    call_kwargs,
    cassette_files,
    client_for,
    endpoint,
    instrumented,
    method_for,
    payi_event,
    telemetry,
    usage_complete,
)

from payi_otel import attributes as A
from payi_otel.testing.replay import Cassette, Interaction


@dataclass
class Case:
    file: str
    index: int
    interaction: Interaction

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}"


def _cases() -> list[Case]:
    cases = []
    for path in cassette_files():
        cassette = Cassette.load(path)
        for i, interaction in enumerate(cassette.interactions):
            if SUPPORTED_PATH.match(interaction.path):
                cases.append(Case(str(path.relative_to(path.parents[2])), i, interaction))
    return cases


CASES = _cases()


def test_enough_recordings_are_replayed():
    assert len(CASES) >= 60
    kinds = {endpoint(c.interaction) for c in CASES}
    assert {"chat/completions", "responses", "embeddings", "completions"} <= kinds
    assert any(SUPPORTED_PATH.match(c.interaction.path).group("dep") for c in CASES)  # Azure deployments
    assert any(c.interaction.status >= 400 for c in CASES)


# --- expectations from recorded bodies ----------------------------------------------------------
def _n(d: Any, *path: str) -> int:
    for key in path:
        d = (d or {}).get(key)
    return d or 0


def expected_units(kind: str, usage: dict | None, body: dict | None = None) -> dict[str, int]:
    """Pay-i units implied by a recorded usage object (non-zero values only)."""
    if kind == "images/generations" and not usage:
        return {"image.output": len((body or {}).get("data") or [])}
    if usage is None:
        return {}
    if kind in ("responses",):
        inp, out = usage["input_tokens"], usage["output_tokens"]
        cached = _n(usage, "input_tokens_details", "cached_tokens")
        cache_write = _n(usage, "input_tokens_details", "cache_write_tokens")
        reasoning = _n(usage, "output_tokens_details", "reasoning_tokens")
        audio_in = audio_out = 0
    elif kind == "embeddings":
        inp, out, cached, cache_write, reasoning, audio_in, audio_out = usage["prompt_tokens"], 0, 0, 0, 0, 0, 0
    else:
        inp, out = usage["prompt_tokens"], usage.get("completion_tokens") or 0
        cached = _n(usage, "prompt_tokens_details", "cached_tokens")
        cache_write = _n(usage, "prompt_tokens_details", "cache_write_tokens")
        audio_in = _n(usage, "prompt_tokens_details", "audio_tokens")
        reasoning = _n(usage, "completion_tokens_details", "reasoning_tokens")
        audio_out = _n(usage, "completion_tokens_details", "audio_tokens")
    units = {
        "text.input": inp - cached - cache_write - audio_in,
        "text.output": out - reasoning - audio_out,
        "text_cache_read.input": cached,
        "text_cache_write.input": cache_write,
        "reasoning.output": reasoning,
        "audio.input": audio_in,
        "audio.output": audio_out,
    }
    return {k: v for k, v in units.items() if v}


@dataclass
class Expect:
    usage: dict | None
    input_tokens: int | None
    output_tokens: int | None
    response_id: str | None
    response_model: str | None
    finish_reasons: list[str] | None
    tool_calls: list[dict] | None
    visible_chunks: int | None = None


def _tools_from_chat_json(body: dict) -> list[dict]:
    tools = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        for tc in message.get("tool_calls") or []:
            tools.append({"name": tc["function"]["name"], "arguments": tc["function"]["arguments"]})
        if message.get("function_call"):
            fc = message["function_call"]
            tools.append({"name": fc["name"], "arguments": fc["arguments"]})
    return tools


def _tools_from_responses_json(body: dict) -> list[dict]:
    return [
        {"name": item["name"], "arguments": item["arguments"]}
        for item in body.get("output") or []
        if item.get("type") == "function_call"
    ]


def _responses_finish(body: dict) -> list[str]:
    if body.get("status") == "incomplete":
        return [((body.get("incomplete_details") or {}).get("reason")) or "incomplete"]
    return [body["status"]] if body.get("status") else []


def expectations(kind: str, interaction: Interaction) -> Expect:
    request = interaction.request_body if isinstance(interaction.request_body, dict) else {}
    if request.get("stream"):
        events = interaction.sse_events()
        if kind == "responses":
            final = next(
                e["response"]
                for e in reversed(events)
                if e.get("type") in ("response.completed", "response.incomplete", "response.failed")
            )
            usage = final.get("usage")
            return Expect(
                usage, usage and usage["input_tokens"], usage and usage["output_tokens"], final["id"],
                final["model"], _responses_finish(final), _tools_from_responses_json(final), len(events),
            )  # fmt: skip
        usage = next((e["usage"] for e in reversed(events) if e.get("usage")), None)
        reasons: dict[int, str] = {}
        tools: dict[tuple[int, int], list[str]] = {}
        for e in events:
            for choice in e.get("choices") or []:
                if choice.get("finish_reason"):
                    reasons[choice["index"]] = choice["finish_reason"]
                for tc in (choice.get("delta") or {}).get("tool_calls") or []:
                    slot = tools.setdefault((choice["index"], tc["index"]), ["", ""])
                    slot[0] += (tc.get("function") or {}).get("name") or ""
                    slot[1] += (tc.get("function") or {}).get("arguments") or ""
        first = next(e for e in events if e.get("id"))
        asked = "stream_options" in request
        hidden = sum(1 for e in events if e.get("usage") and not e.get("choices")) if not asked else 0
        return Expect(
            usage, usage and usage["prompt_tokens"], usage and usage.get("completion_tokens", 0), first["id"],
            first.get("model") or None, [reasons[i] for i in sorted(reasons)],
            [{"name": n, "arguments": a} for _, (n, a) in sorted(tools.items())], len(events) - hidden,
        )  # fmt: skip
    body = interaction.json()
    usage = body.get("usage")
    if kind == "responses":
        return Expect(
            usage, usage["input_tokens"], usage["output_tokens"], body["id"], body["model"],
            _responses_finish(body), _tools_from_responses_json(body),
        )  # fmt: skip
    if kind == "embeddings":
        return Expect(usage, usage["prompt_tokens"], 0, None, body.get("model"), None, None)
    if kind == "images/generations":
        return Expect(usage, usage and usage.get("input_tokens"), usage and usage.get("output_tokens"),
                      None, None, None, None)  # fmt: skip
    return Expect(
        usage, usage and usage["prompt_tokens"], usage and usage.get("completion_tokens", 0), body.get("id"),
        body.get("model"), [c["finish_reason"] for c in body.get("choices") or [] if c.get("finish_reason")],
        _tools_from_chat_json(body),
    )  # fmt: skip


def span_units(span) -> dict[str, int]:
    """The event's non-zero units, flattened as ``unit.direction``."""
    return {f"{unit}.{d}": v for unit, dirs in payi_event(span)["units"].items() for d, v in dirs.items() if v}


# --- the replay ---------------------------------------------------------------------------------
def _run(case: Case, is_async: bool) -> tuple[Any, list[Any] | None, BaseException | None]:
    cassette = Cassette([case.interaction], name=case.file)
    client = client_for(case.interaction, cassette, is_async=is_async)
    method = method_for(client, case.interaction)
    kwargs = call_kwargs(method, case.interaction.request_body)

    async def run_async():
        result = await method(**kwargs)
        if kwargs.get("stream"):
            return result, [c async for c in result]
        return result, None

    try:
        if is_async:
            result, chunks = asyncio.run(run_async())
        else:
            result = method(**kwargs)
            chunks = list(result) if kwargs.get("stream") else None
    except openai.APIStatusError as exc:
        return None, None, exc
    return result, chunks, None


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_replayed_interaction(case: Case, is_async: bool, instrumented):
    interaction = case.interaction
    kind = endpoint(interaction)
    _result, chunks, error = _run(case, is_async)
    span = instrumented.one_span()
    attrs = span.attributes
    azure = bool(
        SUPPORTED_PATH.match(interaction.path).group("dep") or SUPPORTED_PATH.match(interaction.path).group("azv1")
    )
    assert attrs[A.GEN_AI_PROVIDER_NAME] == ("azure.ai.openai" if azure else "openai")
    event = payi_event(span)
    assert event["category"] == ("system.azureopenai" if azure else "system.openai")
    assert event["http_status_code"] == interaction.status

    if interaction.status >= 400:
        assert error is not None and error.status_code == interaction.status
        assert attrs[A.ERROR_TYPE] == f"{type(error).__module__}.{type(error).__qualname__}"
        assert span.status.status_code.name == "ERROR"
        assert attrs[A.PAYI_USAGE_COMPLETE] is False and not usage_complete(event)
        return

    assert error is None
    expect = expectations(kind, interaction)
    assert span.status.status_code.name == "UNSET"
    assert span_units(span) == expected_units(kind, expect.usage, None if chunks is not None else interaction.json())
    assert attrs.get(A.GEN_AI_USAGE_INPUT_TOKENS) == expect.input_tokens
    if expect.output_tokens is not None:
        assert attrs.get(A.GEN_AI_USAGE_OUTPUT_TOKENS) == expect.output_tokens
    reported = expect.usage is not None or kind == "images/generations"
    assert usage_complete(event) is reported
    if expect.response_id:
        assert event["provider_response_id"] == expect.response_id
    if expect.response_model:
        assert attrs[A.GEN_AI_RESPONSE_MODEL] == expect.response_model
    if expect.finish_reasons:
        assert list(attrs[A.GEN_AI_RESPONSE_FINISH_REASONS]) == expect.finish_reasons
    if expect.tool_calls:
        assert json.loads(attrs[A.PAYI_FUNCTION_CALLS]) == expect.tool_calls
    else:
        assert A.PAYI_FUNCTION_CALLS not in attrs
    if chunks is not None:
        assert attrs[A.PAYI_STREAM_OUTCOME] == "completed"
        assert len(chunks) == expect.visible_chunks
        assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in attrs
    request_model = (interaction.request_body or {}).get("model")
    if request_model and not azure:
        assert span.name == f"{attrs[A.GEN_AI_OPERATION_NAME]} {request_model}"
        assert event["resource"] == request_model
