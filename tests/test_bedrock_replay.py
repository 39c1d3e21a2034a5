"""Every recorded Bedrock runtime interaction, replayed through real boto3 (only the HTTP layer answered).

For each one: exactly one span and one Pay-i event, units equal to what the recording reports (billed
headers for invoke_model, ``usage`` for Converse, the final stream event otherwise; guardrail units
from the trace), the caller sees exactly the recorded response, and errors keep their status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote

import botocore.exceptions
import pytest
from _bedrock_helpers import (  # noqa: F401 - fixtures
    STREAM_KEYS,
    bedrock,
    boto_call,
    cassette_files,
    expected_tool_calls,
    expected_units,
    is_bedrock,
    replayed_client,
    span_units,
    stream_events,
    telemetry,
)
from _openai_helpers import payi_event, usage_complete

from payi_otel import attributes as A
from payi_otel.instrumentation.bedrock import resolve
from payi_otel.testing.replay import Cassette, Interaction


@dataclass(frozen=True)
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
        for i, interaction in enumerate(Cassette.load(path).interactions):
            if is_bedrock(interaction):
                cases.append(Case(path.name, i, interaction))
    return cases


CASES = _cases()


def test_guardrail_recordings_are_among_the_cases():
    calls = [(c.file, boto_call(c.interaction)[0], c.interaction) for c in CASES if c.interaction.status == 200]
    guarded = {name for name, method, interaction in calls if method != "count_tokens"
               and any(k.startswith("guardrail_") for k in expected_units(method, interaction))}  # fmt: skip
    assert len(guarded) >= 10  # converse, converse_stream, invoke, invoke stream; Titan, Nova, Anthropic


def test_every_recorded_bedrock_file_is_replayed():
    assert len(cassette_files()) >= 85
    assert {c.file for c in CASES} == {p.name for p in cassette_files()}


def _run(case: Case):
    method, kwargs = boto_call(case.interaction)
    client, _ = replayed_client(case.interaction, name=case.file)
    try:
        response = getattr(client, method)(**kwargs)
    except botocore.exceptions.ClientError as exc:
        return method, None, None, exc
    key = STREAM_KEYS.get(method)
    events = list(response[key]) if key else None
    return method, response, events, None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_replayed_interaction(case: Case, bedrock):
    interaction = case.interaction
    method, response, events, error = _run(case)
    spans = bedrock.spans()
    if method == "count_tokens":  # not an inference call: nothing is recorded
        assert spans == []
        return
    assert len(spans) == 1, [s.name for s in spans]
    span = spans[0]
    attrs = span.attributes
    event = payi_event(span)
    model_id = unquote(interaction.path).split("/model/", 1)[1].rpartition("/")[0]
    resource, scope = resolve(model_id)
    assert attrs[A.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    assert attrs[A.GEN_AI_REQUEST_MODEL] == model_id
    assert event["category"] == "system.aws.bedrock"
    assert event["resource"] == resource
    assert event.get("resource_scope") == scope
    assert event["http_status_code"] == interaction.status
    request_id = interaction.header("x-amzn-requestid")
    if request_id:
        assert event["provider_response_id"] == request_id

    if interaction.status >= 400:
        assert error is not None and error.response["ResponseMetadata"]["HTTPStatusCode"] == interaction.status
        assert attrs[A.ERROR_TYPE] == f"{type(error).__module__}.{type(error).__qualname__}"
        assert span.status.status_code.name == "ERROR"
        assert not usage_complete(event)
        return

    assert error is None
    assert span_units(event) == expected_units(method, interaction)
    assert usage_complete(event)
    if method == "invoke_model":  # the caller reads exactly the recorded body
        assert response["body"].read() == interaction.body
    if events is not None:
        assert len(events) == len(stream_events(interaction))
        assert attrs[A.PAYI_STREAM_OUTCOME] == "completed"
        assert A.PAYI_TIME_TO_FIRST_TOKEN_MS in attrs
    tools = expected_tool_calls(method, interaction)
    if tools:
        assert json.loads(attrs[A.PAYI_FUNCTION_CALLS]) == tools
    else:
        assert A.PAYI_FUNCTION_CALLS not in attrs
    if method == "converse":
        assert list(attrs[A.GEN_AI_RESPONSE_FINISH_REASONS]) == [interaction.json()["stopReason"]]


def test_tool_call_recordings_are_among_the_cases():
    """Tool calls are read from every operation, for each model family that recorded some."""
    found = set()
    for case in CASES:
        method = boto_call(case.interaction)[0]
        if case.interaction.status != 200 or method == "count_tokens":
            continue
        if expected_tool_calls(method, case.interaction):
            found.add((method, resolve(unquote(case.interaction.path).split("/model/", 1)[1].rpartition("/")[0])[0]))
    families = {(method, (resource or "").split(".")[0]) for method, resource in found}
    assert {
        ("invoke_model_with_response_stream", "anthropic"),
        ("invoke_model_with_response_stream", "amazon"),
        ("converse_stream", "amazon"),
        ("converse", "amazon"),
        ("invoke_model", "anthropic"),
    } <= families
