"""Async Bedrock through aiobotocore (real aiobotocore, only the HTTP layer answered): the same
recordings, the same units, the same lifecycles as the sync client."""

from __future__ import annotations

import pytest
from _bedrock_helpers import (  # noqa: F401 - fixtures
    CASSETTES,
    STREAM_KEYS,
    bedrock,
    boto_call,
    expected_units,
    span_units,
    stream_events,
    telemetry,
)
from _openai_helpers import payi_event, usage_complete

from payi_otel import attributes as A
from payi_otel import track_context
from payi_otel.testing.botocore_replay import BotocoreReplay
from payi_otel.testing.replay import Cassette, Interaction

aiobotocore_session = pytest.importorskip("aiobotocore.session", reason="aiobotocore is not installed")

OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib" / "bedrock"
TRACELOOP = CASSETTES / "traceloop__openllmetry" / "bedrock"
PYDANTIC = CASSETTES / "pydantic__pydantic-ai" / "bedrock"

RECORDINGS = {
    "converse": PYDANTIC / "test_bedrock_cache_write_and_read.yaml",
    "converse_stream": TRACELOOP / "test_guardrail_converse_stream.yaml",
    "invoke_model": TRACELOOP / "test_prompt_cache.yaml",
    "invoke_model_with_response_stream": TRACELOOP / "test_nova_invoke_stream.yaml",
}


def client_for(*interactions: Interaction):
    client = aiobotocore_session.get_session().create_client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret"
    )
    return client, BotocoreReplay(Cassette(list(interactions)))


@pytest.mark.parametrize("method", list(RECORDINGS))
async def test_async_operations_record_the_recorded_units(method, bedrock):
    interactions = Cassette.load(RECORDINGS[method]).interactions
    context, replay = client_for(*interactions)
    async with context as client:
        replay.attach(client)
        for interaction in interactions:
            with track_context(user_id="async-user"):
                response = await getattr(client, method)(**boto_call(interaction)[1])
            if method == "invoke_model":
                assert await response["body"].read() == interaction.body
            elif method in STREAM_KEYS:
                events = [e async for e in response[STREAM_KEYS[method]]]
                assert len(events) == len(stream_events(interaction))
    spans = bedrock.spans()
    assert len(spans) == len(interactions)
    for span, interaction in zip(spans, interactions, strict=True):
        event = payi_event(span)
        assert span_units(event) == expected_units(method, interaction)
        assert usage_complete(event) and span.attributes[A.PAYI_USER_ID] == "async-user"
        assert event["provider_response_id"] == interaction.header("x-amzn-requestid") or not interaction.header(
            "x-amzn-requestid"
        )


async def test_async_invoke_body_reads_in_chunks_and_lines(bedrock):
    interaction = Cassette.load(OTEL / "test_invoke_model_no_content[anthropic.claude].yaml").interactions[0]
    context, replay = client_for(interaction, interaction)
    async with context as client:
        replay.attach(client)
        body = (await client.invoke_model(**boto_call(interaction)[1]))["body"]
        chunks = []
        while chunk := await body.read(9):
            chunks.append(chunk)
        assert b"".join(chunks) == interaction.body
        body = (await client.invoke_model(**boto_call(interaction)[1]))["body"]
        assert [line async for line in body.iter_lines()] == interaction.body.splitlines()
    assert len(bedrock.spans()) == 2


async def test_async_stream_closed_early(bedrock):
    interaction = Cassette.load(TRACELOOP / "test_meta_converse_stream.yaml").interactions[0]
    context, replay = client_for(interaction)
    async with context as client:
        replay.attach(client)
        stream = (await client.converse_stream(**boto_call(interaction)[1]))["stream"]
        async for _ in stream:
            break
        await stream.aclose() if hasattr(stream, "aclose") else stream.close()
    span = bedrock.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "closed_early"
    assert not usage_complete(payi_event(span))


async def test_async_client_error_keeps_status(bedrock):
    interaction = Cassette.load(OTEL / "test_converse_with_invalid_model.yaml").interactions[0]
    context, replay = client_for(interaction)
    async with context as client:
        replay.attach(client)
        with pytest.raises(client.exceptions.ValidationException):
            await client.converse(**boto_call(interaction)[1])
    event = payi_event(bedrock.one_span())
    assert event["http_status_code"] == 400
    assert event["provider_response_id"] == interaction.header("x-amzn-requestid")
