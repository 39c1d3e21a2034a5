"""Every recorded Google GenAI / Vertex AI interaction, replayed through the real google-genai SDK.

Each cassette is replayed in its recorded order with one SDK call per recorded Google request (sync, then
async through ``client.aio``); only the HTTP transport is replaced. Expectations (units, ids, models,
finish reasons, function calls, statuses) are computed here from the recorded bodies, independently
of the instrumentation's extractors. Calls that are not billed (token counting, caches, file search
stores, uploads) must produce no span of ours.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from _google_helpers import (  # noqa: F401 - fixtures
    CASSETTES,
    action,
    client_for,
    embed_kwargs,
    expected_units,
    generate_kwargs,
    google_files,
    google_instrumented,
    is_vertex,
    model_of,
    response_events,
    restored,
    sends_predict,
)
from _openai_helpers import payi_event, telemetry, usage_complete  # noqa: F401 - fixtures
from google import genai
from google.genai import errors
from google.genai.version import __version__ as genai_version

from payi_otel import attributes as A
from payi_otel.testing.replay import Cassette, Interaction

FILES = google_files()
BILLED = {"generateContent", "streamGenerateContent", "batchEmbedContents", "embedContent", "predict"}


def _google(interaction: Interaction) -> bool:
    return "googleapis.com" in interaction.uri and "/openai/" not in interaction.path


def _load(path: Path) -> Cassette:
    loaded = Cassette.load(path)
    return Cassette([restored(i) for i in loaded.interactions], name=loaded.name)


def test_every_google_recording_is_replayed():
    assert len(FILES) >= 35  # the Google files of the shared recordings (one more lives under openai/)
    kinds = {action(i) for path in FILES for i in Cassette.load(path).interactions if _google(i)}
    assert kinds >= BILLED


async def _run(call: Any, is_async: bool) -> Any:
    result = call()
    return await result if is_async else result


async def _collect_stream(stream: Any, is_async: bool) -> list[Any]:
    if is_async:
        return [chunk async for chunk in await stream]
    return list(stream)


async def _replay_one(interaction: Interaction, cassette: Cassette, is_async: bool, pending: list) -> Any:
    """Make the SDK call that sends ``interaction``; return what the caller got (or the APIError)."""
    client = client_for(interaction, cassette)
    models = client.aio.models if is_async else client.models
    kind = action(interaction)
    body = interaction.request_body if isinstance(interaction.request_body, dict) else {}
    try:
        if kind == "generateContent":
            return await _run(lambda: models.generate_content(**generate_kwargs(interaction)), is_async)
        if kind == "streamGenerateContent":
            return await _collect_stream(models.generate_content_stream(**generate_kwargs(interaction)), is_async)
        if kind in ("batchEmbedContents", "embedContent", "predict"):
            return await _run(lambda: models.embed_content(**embed_kwargs(interaction)), is_async)
        if kind == "countTokens":
            kw = {"model": model_of(interaction), "contents": body.get("contents") or "hello"}
            return await _run(lambda: models.count_tokens(**kw), is_async)
        if kind == "uploadToFileSearchStore":
            if "upload_id=" in interaction.uri:
                return None  # the second half of the upload below
            data = next(i for i in pending if "upload_id=" in i.uri).request_body
            stores = client.aio.file_search_stores if is_async else client.file_search_stores
            name = interaction.path.split("/upload/")[1].split("/", 1)[1].split(":")[0]
            kw = {"file_search_store_name": name, "file": io.BytesIO(str(data).encode()),
                  "config": {"mime_type": body.get("mimeType", "text/plain")}}  # fmt: skip
            return await _run(lambda: stores.upload_to_file_search_store(**kw), is_async)
        if interaction.path.endswith("/fileSearchStores"):
            stores = client.aio.file_search_stores if is_async else client.file_search_stores
            return await _run(lambda: stores.create(config={"display_name": body.get("displayName")}), is_async)
        if "/fileSearchStores/" in interaction.path and interaction.method == "DELETE":
            stores = client.aio.file_search_stores if is_async else client.file_search_stores
            name = interaction.path.split("/v1beta/")[1]
            return await _run(lambda: stores.delete(name=name, config={"force": True}), is_async)
        caches = client.aio.caches if is_async else client.caches
        if interaction.path.endswith("/cachedContents"):
            config = {"contents": body.get("contents"), "system_instruction": body.get("systemInstruction"),
                      "ttl": body.get("ttl")}  # fmt: skip
            return await _run(lambda: caches.create(model=body["model"], config=config), is_async)
        if "/cachedContents/" in interaction.path and interaction.method == "DELETE":
            return await _run(lambda: caches.delete(name=interaction.path.split("/v1beta/")[1]), is_async)
    except errors.APIError as exc:
        return exc
    raise AssertionError(f"no SDK call known for {interaction.method} {interaction.path}")


def _expect(interaction: Interaction, result: Any) -> dict[str, Any] | None:
    """What the span / event of ``interaction`` must say, from the recording alone (None = no span)."""
    kind = action(interaction)
    if kind not in BILLED:
        return None
    expected: dict[str, Any] = {
        "provider": "gcp.vertex_ai" if is_vertex(interaction) else "gcp.gemini",
        "operation": "generate_content" if "Generate" in kind or kind.startswith("generate") else "embeddings",
        "status": interaction.status,
        "model": model_of(interaction),
    }
    if interaction.status >= 400:
        error = json.loads(interaction.body)["error"]
        expected["error_code"] = error["code"]
        return expected
    events = response_events(interaction)
    expected["chunks"] = len(events)
    last_usage = next((e["usageMetadata"] for e in reversed(events) if "usageMetadata" in e), None)
    if last_usage is not None and not any(k.endswith("Count") and k != "totalTokenCount" for k in last_usage):
        last_usage = None  # e.g. only a traffic type
    model_version = next((e["modelVersion"] for e in events if e.get("modelVersion")), None)
    expected["response_model"] = model_version
    expected["resource"] = "google." + (model_version or model_of(interaction))
    expected["response_id"] = next((e["responseId"] for e in events if e.get("responseId")), None)
    # Older google-genai releases drop some fields of the Gemini API's answer: nothing can read them then.
    first = result[0] if isinstance(result, list) and result else result
    if getattr(first, "response_id", None) is None:  # None, or no such field in this release
        expected["response_id"] = None
    if getattr(first, "model_version", None) is None:
        expected["response_model"] = None
        expected["resource"] = "google." + model_of(interaction)
    if kind in ("generateContent", "streamGenerateContent"):
        reasons: dict[int, str] = {}
        calls = []
        for e in events:
            for pos, cand in enumerate(e.get("candidates") or ()):
                if cand.get("finishReason"):
                    reasons[cand.get("index", pos)] = cand["finishReason"]
                for part in (cand.get("content") or {}).get("parts") or ():
                    if "functionCall" in part:
                        calls.append({"name": part["functionCall"]["name"], "args": part["functionCall"].get("args")})
        expected["finish_reasons"] = [reasons[k] for k in sorted(reasons)] or None
        expected["function_calls"] = calls or None
        expected["units"] = expected_units(last_usage, expected["resource"][7:]) if last_usage else None
    else:
        expected["resource"] = "google." + model_of(interaction)
        expected["response_id"] = None
        if last_usage:
            expected["units"] = expected_units(last_usage, model_of(interaction))
        else:
            tokens = [p["embeddings"]["statistics"]["token_count"] for p in events[0].get("predictions") or ()]
            expected["units"] = {"text": {"input": sum(tokens), "output": 0}} if tokens else None
    return expected


def _check(span: Any, want: dict[str, Any], result: Any) -> None:
    attrs = span.attributes
    event = payi_event(span)
    assert attrs[A.GEN_AI_PROVIDER_NAME] == want["provider"]
    assert attrs[A.GEN_AI_OPERATION_NAME] == want["operation"]
    assert attrs[A.GEN_AI_REQUEST_MODEL] == want["model"]
    assert event["category"] == "system.google.vertex"
    assert event["http_status_code"] == want["status"]
    if "error_code" in want:
        assert isinstance(result, errors.APIError) and result.code == want["error_code"]
        assert attrs[A.ERROR_TYPE] == f"google.genai.errors.{type(result).__name__}"
        return
    assert event["resource"] == want["resource"]
    assert attrs.get(A.GEN_AI_RESPONSE_MODEL) == want["response_model"]
    assert attrs.get(A.GEN_AI_RESPONSE_ID) == want["response_id"]
    if want["response_id"] is not None:
        assert event["provider_response_id"] == want["response_id"]
    if want["units"] is None:
        assert not usage_complete(event), event
    else:
        assert usage_complete(event), event
        assert event["units"] == want["units"]
    if "finish_reasons" in want:
        assert list(attrs.get(A.GEN_AI_RESPONSE_FINISH_REASONS) or []) == (want["finish_reasons"] or [])
        calls = json.loads(attrs[A.PAYI_FUNCTION_CALLS]) if A.PAYI_FUNCTION_CALLS in attrs else None
        if want["function_calls"] is None:
            assert calls is None
        else:
            assert [c["name"] for c in calls] == [c["name"] for c in want["function_calls"]]
            assert [json.loads(c["arguments"] or "null") for c in calls] == [c["args"] for c in want["function_calls"]]
    if isinstance(result, list):  # a stream: the caller saw every recorded chunk
        assert len(result) == want["chunks"]
        assert attrs[A.PAYI_STREAM_OUTCOME] == "completed"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.parent.name[:8]}/{p.name}" for p in FILES])
def test_replay(path: Path, is_async: bool, google_instrumented):
    cassette = _load(path)
    interactions = [i for i in cassette.interactions if _google(i)]
    for interaction in interactions:
        kind, model = action(interaction), model_of(interaction)
        if kind in ("predict", "embedContent") and (kind == "predict") != sends_predict(model):
            pytest.skip(f"google-genai {genai_version} does not send the recorded {kind} for {model}")
        if "fileSearchStores" in interaction.path and not hasattr(genai.Client, "file_search_stores"):
            pytest.skip(f"google-genai {genai_version} has no file_search_stores")
    wanted = []
    for interaction in interactions:
        result = asyncio.run(_replay_one(interaction, cassette, is_async, interactions))
        want = _expect(interaction, result)
        if want is not None:
            wanted.append((want, result))
        elif interaction.status >= 400:
            assert isinstance(result, errors.APIError) and result.code == interaction.status
    spans = google_instrumented.spans()
    assert len(spans) == len(wanted), [s.name for s in spans]
    for span, (want, result) in zip(spans, wanted, strict=True):
        _check(span, want, result)
