"""Shared pieces for the Google GenAI tests: recorded Google interactions served to the real google-genai SDK.

Only the SDK's HTTP transport is replaced: ``HttpOptions(client_args={"transport": ...})`` from google-genai
1.11 on. Older releases build their own ``requests`` session (sync, and async through a thread before 1.5)
or ``httpx.AsyncClient`` per request, with no way to pass a transport: there the transport of those
sessions and clients is replaced (:func:`_answer_legacy_clients`: requests' adapter and the httpx
transport of clients the SDK makes), for Google hosts only. Two fixes make old recordings readable by
today's SDK, as the live API answers today:

* ``streamGenerateContent`` bodies recorded as one JSON array (no ``alt=sse``) are served as SSE events;
* enums recorded as integers (protobuf JSON of older Vertex clients) are restored to their names.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials

from payi_otel.testing.replay import Cassette, Interaction

CASSETTES = Path(__file__).parent / "cassettes"

GOOGLE_HOST = re.compile(r"(^|\.)googleapis\.com$")
VERTEX_PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/")
ACTION = re.compile(r":(?P<action>[A-Za-z]+)$")

# protobuf enum numbers (google.cloud.aiplatform.v1 Content / PredictionService) -> JSON names.
_ENUMS: dict[str, dict[int, str]] = {
    "modality": {0: "MODALITY_UNSPECIFIED", 1: "TEXT", 2: "IMAGE", 3: "VIDEO", 4: "AUDIO", 5: "DOCUMENT"},
    "trafficType": {0: "TRAFFIC_TYPE_UNSPECIFIED", 1: "ON_DEMAND", 2: "PROVISIONED_THROUGHPUT"},
    "finishReason": {
        0: "FINISH_REASON_UNSPECIFIED", 1: "STOP", 2: "MAX_TOKENS", 3: "SAFETY", 4: "RECITATION", 5: "OTHER",
        6: "BLOCKLIST", 7: "PROHIBITED_CONTENT", 8: "SPII", 9: "MALFORMED_FUNCTION_CALL",
    },
}  # fmt: skip


def _restore_enums(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            names = _ENUMS.get(key)
            if names is not None and isinstance(item, int) and not isinstance(item, bool):
                out[key] = names[item]
            else:
                out[key] = _restore_enums(item)
        return out
    if isinstance(value, list):
        return [_restore_enums(v) for v in value]
    return value


def response_events(interaction: Interaction) -> list[dict[str, Any]]:
    """The recorded response(s) as JSON, enums restored: one per SSE event, or the one JSON body."""
    if not interaction.body:
        return [{}]
    try:
        parsed = interaction.json()
    except ValueError:  # an SSE body
        events = interaction.sse_events()
    else:
        events = parsed if isinstance(parsed, list) else [parsed]
    return [_restore_enums(e) for e in events]


def restored(interaction: Interaction) -> Interaction:
    """``interaction`` as the SDK of today expects it (JSON-array streams as SSE, enum names)."""
    if interaction.status >= 400 or not interaction.body.strip():
        return interaction
    events = response_events(interaction)
    if action(interaction) == "streamGenerateContent":
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
        headers = tuple((k, v) for k, v in interaction.headers if k.lower() not in ("content-type", "content-encoding"))
        headers += (("Content-Type", "text/event-stream"),)
        return dataclasses.replace(interaction, body=body, headers=headers)
    if events[0] != interaction.json():
        headers = tuple((k, v) for k, v in interaction.headers if k.lower() != "content-encoding")
        return dataclasses.replace(interaction, body=json.dumps(events[0]).encode(), headers=headers)
    return interaction


def sends_predict(model: str) -> bool:
    """True when the installed google-genai embeds with Vertex ``predict`` for ``model`` (newer releases
    send ``embedContent`` for the Gemini embedding models)."""
    from google.genai import _transformers

    check = getattr(_transformers, "t_is_vertex_embed_content_model", None)
    return check is None or not check(model)


def action(interaction: Interaction) -> str | None:
    m = ACTION.search(interaction.path)
    return m.group("action") if m else None


def model_of(interaction: Interaction) -> str:
    name = interaction.path.rsplit("/models/", 1)[-1]
    return name.split(":", 1)[0]


def is_vertex(interaction: Interaction) -> bool:
    return "aiplatform" in (urlsplit(interaction.uri).hostname or "")


def google_files() -> list[Path]:
    return sorted(p for p in CASSETTES.rglob("*.yaml") if "googleapis.com" in p.read_text(encoding="utf-8"))


def google_interactions() -> list[tuple[str, int, Interaction]]:
    """Every recorded interaction with a Google API host (the OpenAI-compatible endpoint excluded)."""
    cases = []
    for path in google_files():
        for i, interaction in enumerate(Cassette.load(path).interactions):
            host = urlsplit(interaction.uri).hostname or ""
            if GOOGLE_HOST.search(host) and "/openai/" not in interaction.path:
                cases.append((f"{path.parent.parent.name}/{path.name}", i, interaction))
    return cases


# google-genai before 1.11 has no HttpOptions.client_args.
TAKES_TRANSPORT = "client_args" in types.HttpOptions.model_fields


class _Legacy:
    cassette: Cassette | None = None  # what the SDK's own sessions and clients are answered from
    installed = False


def _requests_response(request: Any, interaction: Interaction) -> Any:
    import gzip
    import io

    import requests

    response = requests.Response()
    response.status_code = interaction.status
    response.headers = requests.structures.CaseInsensitiveDict(
        {k: v for k, v in interaction.headers if k.lower() not in ("content-encoding", "content-length")}
    )
    body = interaction.body
    if (interaction.header("content-encoding") or "").lower() == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)  # what urllib3 would have decoded
    response.raw = io.BytesIO(body)
    response.url, response.request, response.reason, response.encoding = request.url, request, "", "utf-8"
    return response


def _answer_legacy_clients(cassette: Cassette) -> None:
    """Answer the requests sessions and httpx clients that google-genai < 1.11 creates per request from
    ``cassette`` (Google hosts only; everything else goes to the real transports)."""
    import httpx
    import requests

    _Legacy.cassette = cassette
    if _Legacy.installed:
        return
    _Legacy.installed = True

    class ReplayAdapter(requests.adapters.BaseAdapter):  # type: ignore[misc]
        def send(self, request: Any, stream: bool = False, **_: Any) -> Any:
            assert _Legacy.cassette is not None
            return _requests_response(request, _Legacy.cassette.next_for(request.method, urlsplit(request.url).path))

        def close(self) -> None:
            pass

    adapter = ReplayAdapter()
    real_get_adapter = requests.Session.get_adapter

    def get_adapter(self: Any, url: str) -> Any:
        return adapter if GOOGLE_HOST.search(urlsplit(url).hostname or "") else real_get_adapter(self, url)

    requests.Session.get_adapter = get_adapter
    real_async = httpx.AsyncHTTPTransport.handle_async_request

    async def handle_async_request(self: Any, request: Any) -> Any:
        if _Legacy.cassette is None or not GOOGLE_HOST.search(request.url.host):
            return await real_async(self, request)
        return await _Legacy.cassette.transport("httpx").handle_async_request(request)

    httpx.AsyncHTTPTransport.handle_async_request = handle_async_request


def client_for(interaction: Interaction, cassette: Cassette) -> genai.Client:
    """A real google-genai client for the API and version ``interaction`` was recorded against."""
    parts = urlsplit(interaction.uri)
    base_url = f"{parts.scheme}://{parts.netloc}/"
    vertex = VERTEX_PATH.match(interaction.path)
    version = vertex.group("version") if vertex else interaction.path.strip("/").split("/")[0]
    if parts.path.startswith("/upload/"):
        version = parts.path.split("/")[2]
    if TAKES_TRANSPORT:
        transport = cassette.transport("httpx")
        options = types.HttpOptions(
            base_url=base_url, api_version=version, client_args={"transport": transport},
            async_client_args={"transport": transport},
        )  # fmt: skip
    else:
        _answer_legacy_clients(cassette)
        options = types.HttpOptions(base_url=base_url, api_version=version)
    if is_vertex(interaction):
        assert vertex, interaction.path
        return genai.Client(
            vertexai=True, project=vertex.group("project"), location=vertex.group("location"),
            credentials=Credentials(token="test"), http_options=options,
        )  # fmt: skip
    return genai.Client(api_key="test", http_options=options)


def generate_kwargs(interaction: Interaction) -> dict[str, Any]:
    """``model``, ``contents`` and the generation ``config`` of the recorded request."""
    body = interaction.request_body if isinstance(interaction.request_body, dict) else {}
    config: dict[str, Any] = dict(body.get("generationConfig") or {})
    renames = (("systemInstruction", "system_instruction"), ("safetySettings", "safety_settings"),
               ("cachedContent", "cached_content"), ("toolConfig", "tool_config"), ("tools", "tools"))  # fmt: skip
    for key, name in renames:
        if key in body:
            config[name] = body[key]
    contents: Any = body.get("contents") or "hello"
    try:
        for content in contents if isinstance(contents, list) else ():
            types.Content.model_validate(content)
    except Exception:  # a part this SDK version does not know (e.g. thought signatures): send the text only
        contents = " ".join(p.get("text", "") for c in contents for p in c.get("parts", ())) or "hello"
    kwargs: dict[str, Any] = {"model": model_of(interaction), "contents": contents}
    try:
        types.GenerateContentConfig.model_validate(config)
    except Exception:  # a field this SDK version does not accept: send the sampling parameters only
        config = {k: v for k, v in config.items() if k in ("temperature", "maxOutputTokens", "topP")}
    if config:
        kwargs["config"] = config
    return kwargs


def embed_kwargs(interaction: Interaction) -> dict[str, Any]:
    body = interaction.request_body if isinstance(interaction.request_body, dict) else {}
    texts: list[str] = []
    for request in body.get("requests") or ([{"content": body["content"]}] if "content" in body else []):
        texts.extend(p.get("text", "") for p in request["content"]["parts"])
    for instance in body.get("instances") or ():
        texts.append(instance.get("content", ""))
    return {"model": model_of(interaction), "contents": texts or ["hello"]}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def sdk_visible(usage: dict[str, Any]) -> dict[str, Any]:
    """The fields of a recorded ``usageMetadata`` the installed SDK parses: older releases drop the fields they
    do not know (thoughts, cache and tool-use details, ...), so nothing can read them there."""
    known = set(types.GenerateContentResponseUsageMetadata.model_fields)
    return {k: v for k, v in usage.items() if _snake(k) in known}


def expected_units(usage: dict[str, Any], model: str) -> dict[str, dict[str, int]]:
    """Pay-i units of a recorded ``usageMetadata``, by the rule of Pay-i's Vertex instrumentation (per-modality
    input minus that modality's cache, cache per modality, candidates per modality, thoughts as reasoning),
    plus what it drops: DOCUMENT tokens and ``toolUsePromptTokenCount`` (as input of its modalities)."""
    usage = sdk_visible(usage)
    names = {"TEXT": "text", "IMAGE": "vision", "AUDIO": "audio", "VIDEO": "video", "DOCUMENT": "document"}

    def per(details: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in details or ():
            unit = names[d["modality"]]
            out[unit] = out.get(unit, 0) + d.get("tokenCount", 0)
        return out

    prompt = per(usage.get("promptTokensDetails"))
    if not prompt and usage.get("promptTokenCount"):
        prompt = {"text": usage["promptTokenCount"]}
    tool = per(usage.get("toolUsePromptTokensDetails"))
    if not tool and usage.get("toolUsePromptTokenCount"):
        tool = {"text": usage["toolUsePromptTokenCount"]}
    cache = per(usage.get("cacheTokensDetails"))
    if not cache and usage.get("cachedContentTokenCount"):
        cache = {"text": usage["cachedContentTokenCount"]}
    out_units = per(usage.get("candidatesTokensDetails"))
    if not out_units and usage.get("candidatesTokenCount"):
        out_units = {"text": usage["candidatesTokenCount"]}
    units: dict[str, dict[str, int]] = {}

    def add(unit: str, direction: str, value: int) -> None:
        if value:
            units.setdefault(unit, {"input": 0, "output": 0})[direction] += value

    for unit in set(prompt) | set(tool):
        add(unit, "input", prompt.get(unit, 0) + tool.get(unit, 0) - cache.get(unit, 0))
    for unit, value in cache.items():
        add(f"{unit}_cache_read", "input", value)
    for unit, value in out_units.items():
        add(unit, "output", value)
    add("reasoning", "output", usage.get("thoughtsTokenCount", 0))
    units.setdefault("text", {"input": 0, "output": 0})
    large = (model.startswith("gemini-2.5-pro") or model.startswith("gemini-3-pro")) and usage.get(
        "promptTokenCount", 0
    ) > 200_000
    if large:
        units = {f"{k}_large_context": v for k, v in units.items()}
    return units


@pytest.fixture
def google_instrumented(telemetry):
    from payi_otel.instrumentation.google_genai import GoogleGenAIInstrumentor

    instrumentor = GoogleGenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, skip_dep_check=True
    )
    yield telemetry
    instrumentor.uninstrument()
