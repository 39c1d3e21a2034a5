"""The remaining OpenAI surfaces: Responses stream helper, raw streams, images, audio, legacy completions."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from _openai_helpers import (  # noqa: F401 - fixtures
    CASSETTES,
    client_for,
    http,
    instrumented,
    payi_event,
    surface,
    telemetry,
    usage_complete,
)  # fmt: skip

from payi_otel import attributes as A
from payi_otel.testing.replay import Cassette

RESPONSES_STREAM = Cassette.load(
    CASSETTES / "traceloop__openllmetry/openai/test_responses_streaming.yaml"
).interactions[0]
CHAT_STREAM = Cassette.load(
    CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai/test_chat_completion_streaming.yaml"
).interactions[0]
_FINISH_REASONS = "traceloop__openllmetry/openai/TestCompletionsFinishReasons"
LEGACY_STREAM = Cassette.load(
    CASSETTES / f"{_FINISH_REASONS}.test_completions_streaming_sets_top_level_finish_reasons.yaml"
).interactions[0]
MESSAGES = [{"role": "user", "content": "Say this is a test"}]


def replay(interaction, *, is_async=False):
    return client_for(interaction, Cassette([interaction]), is_async=is_async)


def final_usage(interaction):
    return next(e["response"]["usage"] for e in interaction.sse_events() if e.get("type") == "response.completed")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_responses_stream_helper(is_async, instrumented):
    body = RESPONSES_STREAM.request_body
    client = replay(RESPONSES_STREAM, is_async=is_async)
    stream_helper = surface(client, "responses.stream")

    async def go_async():
        async with stream_helper(model=body["model"], input=body["input"]) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_response()

    def go_sync():
        with stream_helper(model=body["model"], input=body["input"]) as stream:
            for _ in stream:
                pass
            return stream.get_final_response()

    response = asyncio.run(go_async()) if is_async else go_sync()
    usage = final_usage(RESPONSES_STREAM)
    assert response.usage.input_tokens == usage["input_tokens"]
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == usage["input_tokens"]
    assert attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["output_tokens"]
    assert attrs[A.PAYI_STREAM_OUTCOME] == "completed"
    assert payi_event(instrumented.one_span())["provider_response_id"] == response.id


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_with_raw_response_stream(is_async, instrumented):
    client = replay(CHAT_STREAM, is_async=is_async)

    async def go_async():
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4", messages=MESSAGES, stream=True, stream_options={"include_usage": True})  # fmt: skip
        assert type(raw).__name__ == "LegacyAPIResponse"
        return [c async for c in raw.parse()]

    def go_sync():
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4", messages=MESSAGES, stream=True, stream_options={"include_usage": True})  # fmt: skip
        assert type(raw).__name__ == "LegacyAPIResponse"
        return list(raw.parse())

    chunks = asyncio.run(go_async()) if is_async else go_sync()
    assert len(chunks) == len(CHAT_STREAM.sse_events())
    attrs = instrumented.one_span().attributes
    usage = next(e["usage"] for e in CHAT_STREAM.sse_events() if e.get("usage"))
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == usage["prompt_tokens"]
    assert attrs[A.PAYI_STREAM_OUTCOME] == "completed"


def test_legacy_completion_stream_injects_usage_and_hides_it(instrumented):
    client = replay(LEGACY_STREAM)
    body = LEGACY_STREAM.request_body
    chunks = list(client.completions.create(model=body["model"], prompt=body["prompt"], stream=True))
    assert json.loads(client.payi_transport.requests[-1].content)["stream_options"] == {"include_usage": True}
    assert len(chunks) == len(LEGACY_STREAM.sse_events())  # the recording has no usage chunk to hide
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_OPERATION_NAME] == "text_completion"
    assert attrs[A.PAYI_USAGE_COMPLETE] is False
    reasons = [c["finish_reason"] for e in LEGACY_STREAM.sse_events() for c in e["choices"] if c.get("finish_reason")]
    assert list(attrs[A.GEN_AI_RESPONSE_FINISH_REASONS]) == reasons


# Surfaces without recordings: a fixed, documented response body from a local mock transport.
def mock_client(status: int, body: bytes, content_type: str = "application/json"):
    def handler(request):
        return http.Response(status, headers={"content-type": content_type}, content=body)

    return openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=0,
                         http_client=http.Client(transport=http.MockTransport(handler)))  # fmt: skip


def test_image_generation_token_billed(instrumented):
    usage = {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210,
             "input_tokens_details": {"text_tokens": 40, "image_tokens": 10}}  # fmt: skip
    body = {"created": 1, "data": [{"b64_json": "aGk="}], "usage": usage}
    mock_client(200, json.dumps(body).encode()).images.generate(model="gpt-image-1", prompt="a cat")
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_OPERATION_NAME] == "image_generation"
    assert attrs["payi.units.text.input"] == 40
    assert attrs["payi.units.vision.input"] == 10
    assert attrs["payi.units.vision.output"] == 4160
    assert attrs["payi.units.text.output"] == 0


def test_image_generation_per_image(instrumented):
    body = {"created": 1, "data": [{"url": "https://example.invalid/1.png"}, {"url": "https://example.invalid/2.png"}]}
    mock_client(200, json.dumps(body).encode()).images.generate(model="dall-e-3", prompt="a cat", n=2)
    attrs = instrumented.one_span().attributes
    assert attrs["payi.units.image.output"] == 2
    assert usage_complete(payi_event(instrumented.one_span()))


def test_transcription_audio_tokens(instrumented):
    body = {"text": "hello", "usage": {"type": "tokens", "input_tokens": 120, "output_tokens": 5, "total_tokens": 125,
                                       "input_token_details": {"audio_tokens": 110, "text_tokens": 10}}}  # fmt: skip
    result = mock_client(200, json.dumps(body).encode()).audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", b"RIFF....", "audio/wav"))  # fmt: skip
    assert result.text == "hello"
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_OPERATION_NAME] == "audio_transcription"
    assert attrs["payi.units.audio.input"] == 110
    assert attrs["payi.units.text.input"] == 10
    assert attrs["payi.units.text.output"] == 5


def test_speech_has_no_usage_and_bytes_untouched(instrumented):
    audio = b"ID3\x04fake-mp3-bytes"
    speech = surface(mock_client(200, audio, "audio/mpeg"), "audio.speech.create")
    result = speech(model="tts-1", voice="alloy", input="hi")
    assert result.content == audio
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_OPERATION_NAME] == "audio_speech"
    assert attrs[A.PAYI_USAGE_COMPLETE] is False
    assert payi_event(instrumented.one_span())["http_status_code"] == 200


def test_embeddings_units(instrumented):
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}  # fmt: skip
    result = mock_client(200, json.dumps(body).encode()).embeddings.create(model="text-embedding-3-small", input="hi")
    assert result.data[0].embedding == [0.1, 0.2]
    attrs = instrumented.one_span().attributes
    assert payi_event(instrumented.one_span())["units"] == {"text": {"input": 8, "output": 0}}
    assert attrs[A.GEN_AI_OPERATION_NAME] == "embeddings"
