"""Every recorded Anthropic interaction replayed through the real anthropic SDK (only the HTTP transport
replaced), sync and async: one span and one Pay-i event per billed call, with the recorded usage as
units and every tool_use block as a tool call; errors recorded with their status and re-raised."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import anthropic
import pytest
from _anthropic_helpers import (
    anthropic_cassettes,
    call_kwargs,
    client_for,
    expected_tool_calls,
    expected_units,
    is_anthropic,
    recorded_image_tokens,
    recorded_usage,
)
from _openai_helpers import Telemetry, payi_event, usage_complete

from payi_otel import attributes as A
from payi_otel.instrumentation.anthropic import AnthropicInstrumentor
from payi_otel.testing.replay import Cassette, Interaction


@dataclass(frozen=True)
class Case:
    name: str
    interaction: Interaction

    @property
    def endpoint(self) -> str:
        return self.interaction.path.removeprefix("/v1/")

    @property
    def streamed(self) -> bool:
        return (self.interaction.header("content-type") or "").startswith("text/event-stream")


def _cases() -> list[Case]:
    cases = []
    for path in anthropic_cassettes():
        anthropic_interactions = [i for i in Cassette.load(path).interactions if is_anthropic(i)]
        for n, interaction in enumerate(anthropic_interactions):
            cases.append(Case(f"{path.stem}#{n}", interaction))
    return cases


CASES = _cases()


@pytest.fixture
def telemetry():
    tel = Telemetry()
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider,
                            skip_dep_check=True)  # fmt: skip
    yield tel
    instrumentor.uninstrument()


def surface(client, case: Case):
    names = {"messages": "messages.create", "messages/count_tokens": "messages.count_tokens",
             "complete": "completions.create"}[case.endpoint]  # fmt: skip
    obj = client
    for name in names.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            pytest.skip(f"anthropic {anthropic.__version__} has no client.{names}")
    return obj


async def _consume_async(result):
    if hasattr(result, "__anext__"):
        return [e async for e in result]
    return result


def run(case: Case, is_async: bool):
    client = client_for(case.interaction, Cassette([case.interaction]), is_async=is_async)
    method = surface(client, case)
    kwargs = call_kwargs(method, case.interaction.request_body)
    if is_async:

        async def go():
            return await _consume_async(await method(**kwargs))

        return asyncio.run(go())
    result = method(**kwargs)
    return list(result) if hasattr(result, "__next__") else result


def test_every_anthropic_cassette_is_covered():
    assert len({c.name.split("#")[0] for c in CASES}) == 28
    assert len(CASES) >= 31


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_replay(case: Case, is_async: bool, telemetry):
    status = case.interaction.status
    if status >= 400:
        with pytest.raises(anthropic.APIStatusError) as raised:
            run(case, is_async)
        assert raised.value.status_code == status
        if case.endpoint == "messages/count_tokens":
            assert telemetry.spans() == []
            return
        span = telemetry.one_span()
        event = payi_event(span)
        assert event["http_status_code"] == status
        assert span.attributes[A.ERROR_TYPE] == f"anthropic.{type(raised.value).__name__}"
        if case.interaction.header("request-id"):
            assert event["provider_response_id"] == case.interaction.header("request-id")
        return
    run(case, is_async)
    if case.endpoint == "messages/count_tokens":
        assert telemetry.spans() == []  # not a billed call
        return
    span = telemetry.one_span()
    event = payi_event(span)
    assert event["category"] == "system.anthropic"
    assert event["resource"] == case.interaction.request_body["model"]
    if case.endpoint == "complete":
        assert not usage_complete(event)
        return
    usage = recorded_usage(case.interaction)
    body = case.interaction.request_body
    assert event["units"] == expected_units(usage, body["model"], recorded_image_tokens(body))
    assert usage_complete(event)
    assert event["provider_response_function_calls"] if expected_tool_calls(case.interaction) else True
    calls = json.loads(span.attributes.get(A.PAYI_FUNCTION_CALLS, "null"))
    assert calls == expected_tool_calls(case.interaction)
    if case.streamed:
        assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
        assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in span.attributes
