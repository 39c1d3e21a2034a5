"""Block limits without a proxy for Bedrock and Google GenAI: the real boto3 / aiobotocore / google-genai SDKs
(only their HTTP answered from recordings) against the real service, in reserve mode. A call a block limit
cannot take raises LimitBlockedError before the provider is called, sync and async; a call that fits holds
its worst case until its ingest settles it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _bedrock_helpers import CASSETTES, bedrock, boto_call, replayed_client, telemetry  # noqa: F401 - fixtures
from _google_helpers import client_for, generate_kwargs, google_instrumented  # noqa: F401 - fixture
from service_support import running_service
from test_proxy import create_limit

from payi_otel import LimitBlockedError, enforcement, track_context
from payi_otel import attributes as A
from payi_otel.service.server import ServiceThread
from payi_otel.testing.replay import Cassette, Interaction

OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib" / "bedrock"
BEDROCK = {
    "converse": OTEL / "test_converse_no_content.yaml",  # amazon.titan-text-lite-v1, inferenceConfig.maxTokens
    "invoke_model": OTEL / "test_invoke_model_no_content[amazon.nova].yaml",  # body inferenceConfig.max_new_tokens
}
GEMINI = CASSETTES / "pydantic__pydantic-ai" / "google" / "test_google_model_safety_settings.yaml"


@contextmanager
def reserving(tmp_path: Path) -> Iterator[tuple[ServiceThread, str, str]]:
    """The service (block limits on ingest), enforcement in reserve mode failing closed, and two block
    limits: one no call fits in, one every call fits in."""
    with running_service(tmp_path / "service", ingest_block_limits=True) as svc:
        enforcement.configure("reserve", "closed", svc.base_url, svc.api_key)
        try:
            yield svc, create_limit(svc, "tight", 1e-9, "block"), create_limit(svc, "roomy", 1000.0, "block")
        finally:
            enforcement.reset()


def reserved(svc: ServiceThread, limit: str) -> float:
    store = svc.app.state.store
    return float(store.reserved_amount(store.authenticate(svc.api_key).id, limit))


def without_output_bound(method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The same request with no output bound (the worst case then assumes the model's longest output)."""
    if method == "converse":
        config = {k: v for k, v in kwargs["inferenceConfig"].items() if k != "maxTokens"}
        return {**kwargs, "inferenceConfig": config}
    body = json.loads(kwargs["body"])
    body["inferenceConfig"] = {k: v for k, v in body["inferenceConfig"].items() if k != "max_new_tokens"}
    return {**kwargs, "body": json.dumps(body).encode()}


@pytest.mark.parametrize("method", list(BEDROCK))
def test_bedrock_call_is_refused_before_the_provider_and_a_fitting_one_holds_its_worst_case(
    tmp_path: Path, request: pytest.FixtureRequest, method: str
) -> None:
    spans = request.getfixturevalue("bedrock")  # Bedrock instrumented, its spans kept
    interaction = Cassette.load(BEDROCK[method]).interactions[0]
    name, kwargs = boto_call(interaction)
    assert name == method
    with reserving(tmp_path) as (svc, tight, roomy):
        client, replay = replayed_client(interaction)
        with track_context(limit_ids=[tight]), pytest.raises(LimitBlockedError) as refused:
            getattr(client, method)(**kwargs)
        assert replay.requests == []  # the provider was never called
        with track_context(limit_ids=[tight]), pytest.raises(LimitBlockedError) as unbounded:
            getattr(client, method)(**without_output_bound(method, kwargs))
        with track_context(limit_ids=[roomy]):
            getattr(client, method)(**kwargs)
        assert len(replay.requests) == 1
        held = reserved(svc, roomy)  # until the call's ingest event settles it
    assert refused.value.limit_id == tight and refused.value.max == pytest.approx(1e-9)
    assert refused.value.amount is not None and refused.value.amount == pytest.approx(held, rel=1e-3)
    # the request's output bound was read: without it the worst case is larger
    assert unbounded.value.amount is not None and unbounded.value.amount > refused.value.amount
    (span,) = spans.spans()  # the refused calls made none
    assert span.attributes[A.PAYI_RESERVATION_ID]


async def test_async_bedrock_call_is_refused_before_the_provider(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("bedrock")
    aiobotocore_session = pytest.importorskip("aiobotocore.session", reason="aiobotocore is not installed")
    from payi_otel.testing.botocore_replay import BotocoreReplay

    interaction = Cassette.load(BEDROCK["converse"]).interactions[0]
    kwargs = boto_call(interaction)[1]
    with reserving(tmp_path) as (svc, tight, roomy):
        replay = BotocoreReplay(Cassette([interaction]))
        context = aiobotocore_session.get_session().create_client(
            "bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret"
        )
        async with context as client:
            replay.attach(client)
            with track_context(limit_ids=[tight]), pytest.raises(LimitBlockedError) as refused:
                await client.converse(**kwargs)
            assert replay.requests == []
            with track_context(limit_ids=[roomy]):
                await client.converse(**kwargs)
            assert len(replay.requests) == 1
            assert reserved(svc, roomy) > 0
    assert refused.value.limit_id == tight


class _CountingCassette(Cassette):
    """The recording, counting the requests it answers (what reached the provider)."""

    served = 0

    def next_for(self, method: str, path: str) -> Interaction:
        self.served += 1
        return super().next_for(method, path)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_google_call_is_refused_before_the_provider(
    tmp_path: Path, request: pytest.FixtureRequest, is_async: bool
) -> None:
    spans = request.getfixturevalue("google_instrumented")
    interaction = Cassette.load(GEMINI).interactions[0]
    cassette = _CountingCassette([interaction])
    kwargs = generate_kwargs(interaction)
    models = client_for(interaction, cassette)
    with reserving(tmp_path) as (svc, tight, roomy):

        async def generate() -> Any:
            if is_async:
                return await models.aio.models.generate_content(**kwargs)
            return models.models.generate_content(**kwargs)

        with track_context(limit_ids=[tight]), pytest.raises(LimitBlockedError) as refused:
            await generate()
        assert cassette.served == 0  # the provider was never called
        with track_context(limit_ids=[roomy]):
            response = await generate()
        assert cassette.served == 1
        assert response.usage_metadata.prompt_token_count == interaction.json()["usageMetadata"]["promptTokenCount"]
        assert reserved(svc, roomy) > 0
    assert refused.value.limit_id == tight and refused.value.amount is not None and refused.value.amount > 0
    (span,) = spans.spans()
    assert span.attributes[A.PAYI_RESERVATION_ID]
