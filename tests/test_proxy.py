"""The service's proxy: the real openai and anthropic SDKs through the real service to a real local upstream
answering recorded provider responses (tests/cassettes)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import genai_prices
import httpx
import openai
import pytest
from proxy_upstream import RecordedUpstream
from service_support import running_service, stored_requests

from payi_otel.service.proxy.upstreams import Upstreams
from payi_otel.service.server import ServiceThread
from payi_otel.testing.replay import Cassette, Interaction

CASSETTES = Path(__file__).parent / "cassettes"
TRACELOOP = CASSETTES / "traceloop__openllmetry"
CONTRIB = CASSETTES / "open-telemetry__opentelemetry-python-contrib"


def recorded(path: Path, index: int = 0) -> Interaction:
    return Cassette.load(path).interactions[index]


@contextmanager
def proxied(tmp_path: Path) -> Iterator[tuple[ServiceThread, RecordedUpstream]]:
    with RecordedUpstream() as upstream:
        env = ("PAYI_OTEL_UPSTREAM_OPENAI", "PAYI_OTEL_UPSTREAM_ANTHROPIC", "PAYI_OTEL_UPSTREAM_AZURE_OPENAI")
        upstreams = Upstreams({name: upstream.base_url for name in env})
        with running_service(tmp_path / "service", upstreams=upstreams) as svc:
            yield svc, upstream


def openai_client(svc: ServiceThread, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-provider-key",
        base_url=f"{svc.base_url}/api/v1/proxy/openai/v1",
        default_headers={"xProxy-api-key": svc.api_key, **headers},
        max_retries=0,
    )


def anthropic_client(svc: ServiceThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-provider-key",
        base_url=f"{svc.base_url}/api/v1/proxy/anthropic",
        default_headers={"xProxy-api-key": svc.api_key},
        max_retries=0,
    )


def create_limit(svc: ServiceThread, name: str, max_: float, kind: str) -> str:
    answer = httpx.post(
        f"{svc.base_url}/api/v1/limits",
        headers={"xProxy-api-key": svc.api_key},
        json={"limit_name": name, "max": max_, "limit_type": kind},
    )
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["limit"]["limit_id"])


def get_limit(svc: ServiceThread, limit_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{svc.base_url}/api/v1/limits/{limit_id}", headers={"xProxy-api-key": svc.api_key})
    return dict(answer.json()["limit"])


def sse_data(raw: bytes) -> list[Any]:
    """The JSON data of every event of an SSE body (OpenAI's ``[DONE]`` left out)."""
    events = []
    for line in raw.decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            events.append(json.loads(line[5:]))
    return events


def expected_cost(model: str, provider: str, input_tokens: int, output_tokens: int) -> float:
    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(genai_prices.calc_price(usage, model, provider_id=provider).total_price)


# --- bodies, streams, stored usage ---------------------------------------------------------------
def test_chat_completion_comes_back_as_recorded_plus_xproxy_result_and_is_stored_once(tmp_path: Path) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        client = openai_client(svc, **{"xProxy-User-ID": "alice", "xProxy-UseCase-Name": "jokes"})
        raw = client.chat.completions.with_raw_response.create(**interaction.request_body)
        completion = raw.parse()
        body = json.loads(raw.http_response.content)
    result = body.pop("xproxy_result")
    recorded_body = interaction.json()
    assert body == recorded_body
    assert completion.choices[0].message.content == recorded_body["choices"][0]["message"]["content"]
    usage = recorded_body["usage"]
    [row] = stored_requests(tmp_path / "service")
    assert row["units"] == {"text": {"input": usage["prompt_tokens"], "output": usage["completion_tokens"]}}
    assert (row["category"], row["resource"], row["user_id"], row["use_case_name"]) == (
        "system.openai",
        recorded_body["model"],
        "alice",
        "jokes",
    )
    assert result["request_id"] == row["request_id"]
    assert result["cost"]["total"]["base"] == pytest.approx(
        expected_cost(recorded_body["model"], "openai", usage["prompt_tokens"], usage["completion_tokens"])
    )
    [seen] = upstream.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-provider-key"
    assert not [h for h in seen.headers if h.startswith("xproxy-")]
    assert json.loads(seen.body) == interaction.request_body


def test_a_cookie_an_upstream_sets_for_one_caller_never_reaches_the_upstream_with_another_call(tmp_path: Path) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    with_cookie = replace(interaction, headers=(*interaction.headers, ("Set-Cookie", "session=caller-a; Path=/")))
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(with_cookie)
        upstream.answer(interaction)
        first = openai_client(svc).chat.completions.with_raw_response.create(**interaction.request_body)
        openai_client(svc).chat.completions.create(**interaction.request_body)  # another caller (its own client)
    assert "session=caller-a" in first.headers.get("set-cookie", "")  # the caller gets it, as the provider sent it
    assert [seen.headers.get("cookie") for seen in upstream.requests] == [None, None]


def test_chat_stream_comes_back_event_for_event_with_xproxy_result_in_the_last(tmp_path: Path) -> None:
    interaction = recorded(CONTRIB / "openai/test_chat_completion_streaming.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        upstream.hold_after_first_event = threading.Event()
        client = openai_client(svc)
        with client.chat.completions.with_streaming_response.create(**interaction.request_body) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            # the first event reached the caller while the upstream still held back the rest
            assert not upstream.hold_after_first_event.is_set()
            upstream.hold_after_first_event.set()
            raw = "\n".join([first, *lines]).encode()
    events = sse_data(raw)
    recorded_events = interaction.sse_events()
    result = events[-1].pop("xproxy_result")
    assert events == recorded_events
    usage = recorded_events[-1]["usage"]
    [row] = stored_requests(tmp_path / "service")
    assert row["units"] == {"text": {"input": usage["prompt_tokens"], "output": usage["completion_tokens"]}}
    assert result["request_id"] == row["request_id"]
    assert row["ttft_ms"] is not None


def test_chat_stream_through_the_sdk_iterates_unchanged(tmp_path: Path) -> None:
    interaction = recorded(CONTRIB / "openai/test_chat_completion_streaming.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        chunks = list(openai_client(svc).chat.completions.create(**interaction.request_body))
    recorded_events = interaction.sse_events()
    assert [c.id for c in chunks] == [e["id"] for e in recorded_events]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(e["choices"][0]["delta"].get("content") or "" for e in recorded_events if e["choices"])
    assert (chunks[-1].model_extra or {})["xproxy_result"]["cost"]["total"]["base"] > 0


@pytest.mark.parametrize(
    ("cassette", "stream"),
    [("openai/test_responses.yaml", False), ("openai/test_responses_streaming.yaml", True)],
)
def test_responses_api_usage_is_stored_exactly(tmp_path: Path, cassette: str, stream: bool) -> None:
    interaction = recorded(TRACELOOP / cassette)
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        client = openai_client(svc)
        if stream:
            with client.responses.with_streaming_response.create(**interaction.request_body) as response:
                events = sse_data(response.read())
            final = interaction.sse_events()[-1]["response"]
            assert events[-1].pop("xproxy_result")["cost"] is not None
            assert events == interaction.sse_events()
        else:
            raw = client.responses.with_raw_response.create(**interaction.request_body)
            body = json.loads(raw.http_response.content)
            body.pop("xproxy_result")
            assert body == interaction.json()
            final = interaction.json()
    usage = final["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    reasoning = usage["output_tokens_details"]["reasoning_tokens"]
    [row] = stored_requests(tmp_path / "service")
    assert row["units"]["text"] == {
        "input": usage["input_tokens"] - cached,
        "output": usage["output_tokens"] - reasoning,
    }


def test_embeddings_and_images_are_stored_with_their_units(tmp_path: Path) -> None:
    embedding = recorded(TRACELOOP / "openai/test_embeddings.yaml")
    image = recorded(TRACELOOP / "openai/test_image_gen_metrics.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(embedding)
        upstream.answer(image)
        client = openai_client(svc)
        vectors = client.embeddings.create(**embedding.request_body)
        images = client.images.generate(**image.request_body)
    assert len(vectors.data) == len(embedding.json()["data"])
    assert images.data is not None and len(images.data) == len(image.json()["data"])
    first, second = stored_requests(tmp_path / "service")
    assert first["units"] == {"text": {"input": embedding.json()["usage"]["prompt_tokens"], "output": 0}}
    assert second["units"] == {"image": {"input": 0, "output": len(image.json()["data"])}}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_through_the_proxy(tmp_path: Path, stream: bool) -> None:
    name = "test_anthropic_message_streaming_legacy.yaml" if stream else "test_anthropic_message_create_legacy.yaml"
    interaction = recorded(TRACELOOP / "anthropic" / name)
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        client = anthropic_client(svc)
        if stream:
            request = {k: v for k, v in interaction.request_body.items() if k != "stream"}
            with client.messages.stream(**request) as messages:
                text = "".join(messages.text_stream)
                final = messages.get_final_message()
            recorded_events = interaction.sse_events()
            expected_text = "".join(
                e["delta"].get("text", "") for e in recorded_events if e["type"] == "content_block_delta"
            )
            assert text == expected_text
            usage = {**recorded_events[0]["message"]["usage"], **recorded_events[-2]["usage"]}
            assert final.usage.output_tokens == usage["output_tokens"]
        else:
            raw = client.messages.with_raw_response.create(**interaction.request_body)
            body = json.loads(raw.http_response.content)
            assert body.pop("xproxy_result")["cost"] is not None
            assert body == interaction.json()
            usage = interaction.json()["usage"]
    [seen] = upstream.requests
    # the provider key as the SDK sends it (x-api-key, or a bearer token from anthropic 2.x on)
    assert "sk-ant-provider-key" in (seen.headers.get("x-api-key") or seen.headers["authorization"])
    assert "anthropic-version" in seen.headers
    [row] = stored_requests(tmp_path / "service")
    assert row["category"] == "system.anthropic"
    assert row["units"]["text"] == {"input": usage["input_tokens"], "output": usage["output_tokens"]}


# --- limits --------------------------------------------------------------------------------------
def test_block_limit_refuses_before_the_provider_and_allow_limit_keeps_passing(tmp_path: Path) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    with proxied(tmp_path) as (svc, upstream):
        block = create_limit(svc, "block-budget", 1.0, "block")
        allow = create_limit(svc, "allow-budget", 1e-9, "allow")
        upstream.repeat = interaction
        client = openai_client(svc, **{"xProxy-Limit-IDs": f"{block},{allow}"})
        client.chat.completions.create(**interaction.request_body)
        spent = get_limit(svc, block)["totals"]["cost"]["total"]["base"]
        assert spent > 0
        # lower max to the spend: the limit is at its max, the next call is refused before the provider
        assert (
            httpx.put(
                f"{svc.base_url}/api/v1/limits/{block}", headers={"xProxy-api-key": svc.api_key}, json={"max": spent}
            ).status_code
            == 200
        )
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**interaction.request_body)
        assert len(upstream.requests) == 1
        body = refused.value.response.json()
        assert body["xproxy_error"]["code"] == "limit_reached"
        assert body["xproxy_result"]["blocked_limit_ids"] == [block]
        assert body["xproxy_result"]["limits"][block]["state"] == "blocked"
        # the allow limit, far past its max, never refuses
        allow_only = openai_client(svc, **{"xProxy-Limit-IDs": allow})
        raw = allow_only.chat.completions.with_raw_response.create(**interaction.request_body)
        assert json.loads(raw.http_response.content)["xproxy_result"]["limits"][allow]["state"] == "overrun"
        assert get_limit(svc, block)["totals"]["requests"]["blocked"] == 1
        assert get_limit(svc, block)["totals"]["cost"]["total"]["base"] == spent
    assert len(stored_requests(tmp_path / "service")) == 2


def test_a_call_whose_worst_case_does_not_fit_is_refused_and_a_bounded_one_fits(tmp_path: Path) -> None:
    interaction = recorded(TRACELOOP / "anthropic/test_anthropic_message_create_legacy.yaml")
    request = interaction.request_body
    with proxied(tmp_path) as (svc, upstream):
        upstream.repeat = interaction
        price = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=0, output_tokens=request["max_tokens"]),
            request["model"],
            provider_id="anthropic",
        ).total_price
        # room for the output bound of max_tokens=1024 but not for a request that allows 16 times more
        limit = create_limit(svc, "tight", float(price) * 3, "block")
        client = anthropic_client(svc).with_options(default_headers={"xProxy-Limit-IDs": limit})
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(**{**request, "max_tokens": request["max_tokens"] * 16})
        assert refused.value.body["xproxy_error"]["code"] == "limit_reached"  # type: ignore[index]
        assert upstream.requests == []
        client.messages.create(**request)
        assert len(upstream.requests) == 1


def test_reservations_are_released_when_the_provider_fails(tmp_path: Path) -> None:
    interaction = recorded(CONTRIB / "openai/test_chat_completion_404.yaml")
    with proxied(tmp_path) as (svc, upstream):
        limit = create_limit(svc, "budget", 1.0, "block")
        upstream.answer(interaction)
        client = openai_client(svc, **{"xProxy-Limit-IDs": limit})
        request = {**interaction.request_body, "model": "gpt-4o-mini"}  # a priced model: a real reservation
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(**request)
        store = svc.app.state.store
        assert store.reserved_amount(store.authenticate(svc.api_key).id, limit) == 0.0


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [None, 503])
def test_provider_errors_keep_their_status_and_body(tmp_path: Path, status: int | None) -> None:
    # the recorded 404 body; also served as a 503 to show a server error passes the same way
    interaction = recorded(CONTRIB / "openai/test_chat_completion_404.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction, status=status)
        with pytest.raises(openai.APIStatusError) as failed:
            openai_client(svc).chat.completions.create(**interaction.request_body)
    assert failed.value.status_code == (status or interaction.status)
    body = failed.value.response.json()
    assert body.pop("xproxy_error")["code"] == "provider_error"
    assert body.pop("xproxy_result")["request_id"]
    assert body == interaction.json()
    [row] = stored_requests(tmp_path / "service")
    assert row["http_status_code"] == (status or interaction.status) and row["failed"] == 1


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("xProxy-UseCase-Version", "one", "invalid_use_case_version"),
        ("xProxy-Request-Properties", "not base64 json!", "invalid_field_value"),
        ("xProxy-Limit-IDs", "no-such-limit", "invalid_limit_ids"),
        ("xProxy-User-ID", "has space", "invalid_user_id"),
    ],
)
def test_malformed_xproxy_headers_get_a_clear_400_and_never_reach_the_provider(
    tmp_path: Path, header: str, value: str, code: str
) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.repeat = interaction
        client = openai_client(svc, **{header: value, "xProxy-UseCase-Name": "x"})
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**interaction.request_body)
        assert upstream.requests == []
    error = refused.value.response.json()["xproxy_error"]
    assert error["code"] == code
    assert header in error["message"]


def test_properties_arrive_base64_encoded_as_pay_i_sends_them(tmp_path: Path) -> None:
    interaction = recorded(TRACELOOP / "openai/test_chat.yaml")
    encoded = base64.b64encode(json.dumps({"team": "search"}).encode()).decode()
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        openai_client(svc, **{"xProxy-Request-Properties": encoded}).chat.completions.create(**interaction.request_body)
    [row] = stored_requests(tmp_path / "service")
    assert row["properties"]["team"] == "search"


def test_azure_endpoints_come_from_the_allow_list_only(tmp_path: Path) -> None:
    interaction = recorded(TRACELOOP / "azure/test_chat.yaml")
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)

        def azure(endpoint: str) -> openai.AzureOpenAI:
            return openai.AzureOpenAI(
                api_key="azure-key",
                api_version="2024-02-01",
                base_url=f"{svc.base_url}/api/v1/proxy/azure.openai/openai/deployments/openllmetry-testing",
                default_headers={"xProxy-api-key": svc.api_key, "xProxy-Provider-BaseUri": endpoint},
                max_retries=0,
            )

        for elsewhere in ("http://169.254.169.254", "http://127.0.0.1:1"):
            with pytest.raises(openai.BadRequestError) as refused:
                azure(elsewhere).chat.completions.create(**interaction.request_body)
            assert refused.value.response.json()["xproxy_error"]["code"] == "invalid_provider_host"
        assert upstream.requests == []
        completion = azure(upstream.base_url).chat.completions.create(**interaction.request_body)
    assert completion.id == interaction.json()["id"]
    [seen] = upstream.requests
    assert seen.path == "/openai/deployments/openllmetry-testing/chat/completions"
    assert seen.query == "api-version=2024-02-01"
    assert seen.headers["api-key"] == "azure-key"
    [row] = stored_requests(tmp_path / "service")
    assert row["category"] == "system.azureopenai"


def test_unknown_proxy_paths_and_bad_bodies_are_refused(tmp_path: Path) -> None:
    with proxied(tmp_path) as (svc, upstream):
        headers = {"xProxy-api-key": svc.api_key}
        base = f"{svc.base_url}/api/v1/proxy"
        assert httpx.post(f"{base}/openai/v1/files", headers=headers, json={}).status_code == 404
        assert httpx.post(f"{base}/openai/v1/chat/completions", headers=headers, content=b"{").status_code == 400
        assert httpx.post(f"{base}/openai/v1/chat/completions", json={"model": "x"}).status_code == 401
        assert upstream.requests == []


def test_an_abandoned_stream_releases_its_reservation_and_is_stored_once(tmp_path: Path) -> None:
    interaction = recorded(CONTRIB / "openai/test_chat_completion_streaming.yaml")
    with proxied(tmp_path) as (svc, upstream):
        limit = create_limit(svc, "budget", 10.0, "block")
        upstream.answer(interaction)
        upstream.hold_after_first_event = threading.Event()
        client = openai_client(svc, **{"xProxy-Limit-IDs": limit})
        store = svc.app.state.store
        app_id = store.authenticate(svc.api_key).id
        with client.chat.completions.with_streaming_response.create(**interaction.request_body) as response:
            # keep the line iterator referenced: a dropped generator chain is closed at once by CPython, and
            # closing it closes the HTTP connection, which is the caller leaving (what this test does later)
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            time.sleep(0.5)  # a slow reader: the proxy must keep the stream and its reservation meanwhile
            held = store.reserved_amount(app_id, limit)
            deadline = time.monotonic() + 5  # committed before forwarding; a new read may see it a moment later
            while not held and time.monotonic() < deadline:
                time.sleep(0.02)
                held = store.reserved_amount(app_id, limit)
            assert held and held > 0  # held while the stream runs
        # the caller closed the stream mid-way; the upstream is still holding its other events. The release and
        # the stored row commit together, but the test may read between the commit and its visibility to a new
        # reader, and a loaded machine may take seconds to get there: wait for both, within a generous bound.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = stored_requests(tmp_path / "service")
            if store.reserved_amount(app_id, limit) == 0.0 and rows:
                break
            time.sleep(0.05)
        assert store.reserved_amount(app_id, limit) == 0.0
        upstream.hold_after_first_event.set()
        rows = stored_requests(tmp_path / "service")
    [row] = rows
    assert row["http_status_code"] == 499 and row["failed"] == 1


def test_upstream_settings_and_the_azure_allow_list() -> None:
    from payi_otel.service.errors import PayiApiError
    from payi_otel.service.proxy.upstreams import ServiceConfigError

    upstreams = Upstreams({"PAYI_OTEL_UPSTREAM_AZURE_OPENAI": "https://*.openai.azure.com, http://127.0.0.1:8080"})
    assert upstreams.base_url("azure.openai", "https://res1.openai.azure.com/") == "https://res1.openai.azure.com"
    assert upstreams.base_url("azure.openai", "http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for refused in (
        "https://a.b.openai.azure.com",  # the wildcard is one DNS label
        "https://openai.azure.com.evil.example",
        "http://res1.openai.azure.com",  # scheme must match
        "http://127.0.0.1:8081",  # port must match
        "https://user@res1.openai.azure.com",
        "file:///etc/passwd",
    ):
        with pytest.raises(PayiApiError) as error:
            upstreams.base_url("azure.openai", refused)
        assert error.value.status == 400 and "xProxy-Provider-BaseUri" in error.value.message
    with pytest.raises(PayiApiError, match="required"):
        upstreams.base_url("azure.openai", None)
    with pytest.raises(ServiceConfigError, match="PAYI_OTEL_UPSTREAM_OPENAI"):
        Upstreams({"PAYI_OTEL_UPSTREAM_OPENAI": "ftp://example.com"})
    with pytest.raises(ServiceConfigError, match="PAYI_OTEL_UPSTREAM_ANTHROPIC"):
        Upstreams({"PAYI_OTEL_UPSTREAM_ANTHROPIC": "https://*.anthropic.com"})  # one fixed upstream: no wildcard
