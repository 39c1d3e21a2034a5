"""The OTLP receiver of the local service (``POST /v1/traces``), fed by the SDK's real OTLP exporters.

Spans come from this project's instrumentation of the real openai SDK (HTTP transport replaced by
recorded responses); expected units are computed from the recorded usage blocks.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_apps import RESOURCE, otlp_app
from service_support import running_service, stored_requests
from test_end_to_end import CHAT, MESSAGES, STREAM, openai_client, recorded, recorded_usage, response_id, text_units

from payi_otel import attributes as A
from payi_otel import cli, track_context
from payi_otel import protocol as P
from payi_otel.instrumentation.openai import OpenAIInstrumentor

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def instrumented(provider: TracerProvider) -> OpenAIInstrumentor:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
    return instrumentor


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_of_this_project_exported_by_the_sdk_otlp_exporters_become_priced_requests(
    tmp_path: Path, capsys: Any, protocol: str
) -> None:
    chat, stream = recorded(CHAT), recorded(STREAM)
    with running_service(tmp_path / "data", otlp_grpc_port=0) as service:
        endpoint = f"127.0.0.1:{service.otlp_grpc_port}" if protocol == "grpc" else service.base_url
        with otlp_app(endpoint, service.api_key, protocol) as app:
            instrumentor = instrumented(app.provider)
            try:
                with track_context(use_case_name="triage", user_id="alice", request_properties={"ticket": "T-9"}):
                    openai_client(chat).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                    model = stream.request_body["model"]
                    list(openai_client(stream).chat.completions.create(model=model, messages=MESSAGES, stream=True))
            finally:
                instrumentor.uninstrument()
        rows = {row["provider_response_id"]: row for row in stored_requests(service.data_dir)}
        assert sorted(rows) == sorted([response_id(chat), response_id(stream)])
        for interaction in (chat, stream):
            row = rows[response_id(interaction)]
            assert row["units"] == text_units(recorded_usage(interaction))
            assert (row["category"], row["use_case_name"], row["user_id"]) == ("system.openai", "triage", "alice")
            assert row["properties"] == {"ticket": "T-9", **RESOURCE}
            assert row["cost_total"] > 0
        assert rows[response_id(stream)]["ttft_ms"] is not None
        capsys.readouterr()
        args = [
            "report",
            "--data-dir",
            str(service.data_dir),
            "--format",
            "json",
            "--by",
            "service,environment,namespace",
        ]
        assert cli.main(args) == 0
        report = json.loads(capsys.readouterr().out)
        assert [row["group"] for row in report["rows"]] == [
            {"service": "support-bot", "environment": "staging", "namespace": "support"}
        ]
        assert report["rows"][0]["requests"] == 2


# --- the request shape the collector's otlphttp exporter sends ---------------------------------------


def _spans(resource: dict[str, str], count: int, genai_every: int) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    for i in range(count):
        if i % genai_every == 0:
            attributes: dict[str, Any] = {
                A.GEN_AI_OPERATION_NAME: "chat",
                A.GEN_AI_PROVIDER_NAME: "openai",
                A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
                A.GEN_AI_RESPONSE_ID: f"chatcmpl-{resource['service.name']}-{i}",
                A.GEN_AI_USAGE_INPUT_TOKENS: 100 + i,
                A.GEN_AI_USAGE_OUTPUT_TOKENS: 10 + i,
            }
        else:
            attributes = {"http.request.method": "GET", "url.path": f"/items/{i}", "http.response.status_code": 200}
        tracer.start_span(f"span {i}", attributes=attributes).end()
    return list(memory.get_finished_spans())


def test_a_collector_batch_of_several_services_stores_each_genai_call_with_its_service(tmp_path: Path) -> None:
    # otlphttp batches spans of many resources into one protobuf request, gzip-compressed, with the
    # headers configured under `headers:` and its own User-Agent.
    spans = _spans({"service.name": "web", "deployment.environment.name": "prod"}, 40, 10) + _spans(
        {"service.name": "worker", "deployment.environment": "prod-eu"}, 20, 5
    )
    body = gzip.compress(encode_spans(spans).SerializeToString())
    with running_service(tmp_path / "data") as service:
        headers = {
            **PROTOBUF,
            "Content-Encoding": "gzip",
            "xProxy-api-key": service.api_key,
            "User-Agent": "OpenTelemetry Collector Contrib/0.120.0 (linux/amd64)",
        }
        response = httpx.post(f"{service.base_url}/v1/traces", content=body, headers=headers)
        assert response.status_code == 200, response.content
        assert response.headers["content-type"] == "application/x-protobuf"
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        answer = ExportTraceServiceResponse.FromString(response.content)
        assert not answer.HasField("partial_success")
        rows = stored_requests(service.data_dir)
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_service.setdefault(row["properties"]["service.name"], []).append(row)
    assert {k: len(v) for k, v in by_service.items()} == {"web": 4, "worker": 4}
    assert {row["properties"]["deployment.environment.name"] for row in by_service["worker"]} == {"prod-eu"}
    first_web = next(r for r in by_service["web"] if r["provider_response_id"] == "chatcmpl-web-0")
    assert first_web["units"] == {"text": {"input": 100, "output": 10}}


def test_json_encoding_gets_json_answers_and_partial_success_names_the_rejected_spans(tmp_path: Path) -> None:
    from otlp_support import otlp_json

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    base = {
        A.GEN_AI_OPERATION_NAME: "chat",
        A.GEN_AI_PROVIDER_NAME: "openai",
        A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        A.GEN_AI_USAGE_INPUT_TOKENS: 5,
        A.GEN_AI_USAGE_OUTPUT_TOKENS: 1,
    }
    tracer.start_span("good", attributes={**base, A.GEN_AI_RESPONSE_ID: "good-1"}).end()
    tracer.start_span("bad", attributes={**base, A.GEN_AI_RESPONSE_ID: "bad-1", A.PAYI_USER_ID: "has spaces"}).end()
    body = json.dumps(otlp_json(memory.get_finished_spans())).encode()
    with running_service(tmp_path / "data") as service:
        response = httpx.post(
            f"{service.base_url}/v1/traces",
            content=body,
            headers={"Content-Type": "application/json", "xProxy-api-key": service.api_key},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "1"
        assert "invalid_user_id" in partial["errorMessage"]
        assert [row["provider_response_id"] for row in stored_requests(service.data_dir)] == ["good-1"]


# --- bad input ------------------------------------------------------------------------------------


def _good_body() -> bytes:
    return encode_spans(_spans({"service.name": "probe"}, 1, 1)).SerializeToString()


def test_bad_requests_get_a_4xx_and_leave_the_service_working(tmp_path: Path) -> None:
    good = _good_body()
    with running_service(tmp_path / "data") as service:
        key = {"xProxy-api-key": service.api_key}
        cases = [
            ("garbage protobuf", {**PROTOBUF, **key}, b"\xff\xff\xff\xff garbage", 400),
            ("truncated protobuf", {**PROTOBUF, **key}, good[: len(good) // 2], 400),
            ("truncated gzip", {**PROTOBUF, **key, "Content-Encoding": "gzip"}, gzip.compress(good)[:-12], 400),
            ("not gzip", {**PROTOBUF, **key, "Content-Encoding": "gzip"}, good, 400),
            ("wrong content type", {"Content-Type": "text/plain", **key}, good, 415),
            ("unknown encoding", {**PROTOBUF, **key, "Content-Encoding": "br"}, good, 415),
            ("bad JSON", {"Content-Type": "application/json", **key}, b"{not json", 400),
            ("missing key", PROTOBUF, good, 401),
            ("wrong key", {**PROTOBUF, "xProxy-api-key": "sk-wrong"}, good, 401),
            ("oversize body", {**PROTOBUF, **key}, b"\x00" * (P.DEFAULT_MAX_BODY_BYTES + 1), 413),
            (
                "oversize once gunzipped",
                {**PROTOBUF, **key, "Content-Encoding": "gzip"},
                gzip.compress(b"\x00" * (P.DEFAULT_MAX_BODY_BYTES + 1)),
                413,
            ),
        ]
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            for name, headers, body, status in cases:
                response = client.post("/v1/traces", content=body, headers=headers)
                assert response.status_code == status, (name, response.status_code, response.content[:200])
                if response.headers.get("content-type") == "application/x-protobuf":
                    from google.rpc.status_pb2 import Status

                    assert Status.FromString(response.content).message, name
                else:
                    assert response.json()["message"], name
                ok = client.post("/v1/traces", content=good, headers={**PROTOBUF, **key})
                assert ok.status_code == 200, (name, ok.content)
        assert len(stored_requests(service.data_dir)) == 1  # the same call each time: stored once


# --- one request per call across instrumentations ---------------------------------------------------


def _foreign_parent(tracer: trace.Tracer, usage: dict[str, Any], rid: str) -> Any:
    """The span another instrumentation opens around the same call (no business context)."""
    return tracer.start_as_current_span(
        "chat gpt-4o-mini",
        kind=trace.SpanKind.CLIENT,
        attributes={
            A.GEN_AI_OPERATION_NAME: "chat",
            "gen_ai.system": "openai",
            A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            A.GEN_AI_RESPONSE_ID: rid,
            "gen_ai.usage.prompt_tokens": usage["prompt_tokens"],
            "gen_ai.usage.completion_tokens": usage["completion_tokens"],
        },
    )


@pytest.mark.parametrize("split", ["one request", "ours first", "theirs first"])
def test_two_instrumentations_of_one_call_make_one_request_with_the_business_context(
    tmp_path: Path, split: str
) -> None:
    chat = recorded(CHAT)
    usage = recorded_usage(chat)
    memory = InMemorySpanExporter()
    local = TracerProvider(resource=Resource.create(RESOURCE))
    local.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = instrumented(local)
    try:
        with (
            track_context(use_case_name="triage", user_id="alice"),
            _foreign_parent(local.get_tracer("other.instrumentation"), usage, response_id(chat)),
        ):
            openai_client(chat).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    ours, theirs = memory.get_finished_spans()  # the inner span (ours) ends first
    assert ours.parent.span_id == theirs.context.span_id
    batches = {"one request": [[ours, theirs]], "ours first": [[ours], [theirs]], "theirs first": [[theirs], [ours]]}
    with running_service(tmp_path / "data") as service:
        request_ids = []
        for batch in batches[split]:
            response = httpx.post(
                f"{service.base_url}/v1/traces",
                content=encode_spans(batch).SerializeToString(),
                headers={**PROTOBUF, "xProxy-api-key": service.api_key},
            )
            assert response.status_code == 200
            request_ids.append([row["request_id"] for row in stored_requests(service.data_dir)])
        rows = stored_requests(service.data_dir)
    assert len(rows) == 1
    row = rows[0]
    assert (row["use_case_name"], row["user_id"]) == ("triage", "alice")
    assert row["units"] == text_units(usage)
    assert row["properties"] == RESOURCE
    assert len({tuple(ids) for ids in request_ids}) == 1  # replaced in place: the request id never changes


def test_nested_spans_of_different_models_are_different_calls(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    base = {
        A.GEN_AI_OPERATION_NAME: "chat",
        A.GEN_AI_PROVIDER_NAME: "openai",
        A.GEN_AI_USAGE_INPUT_TOKENS: 3,
        A.GEN_AI_USAGE_OUTPUT_TOKENS: 1,
    }
    with tracer.start_as_current_span("router", attributes={**base, A.GEN_AI_REQUEST_MODEL: "gpt-4o"}):
        tracer.start_span("inner", attributes={**base, A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}).end()
    with running_service(tmp_path / "data") as service:
        response = httpx.post(
            f"{service.base_url}/v1/traces",
            content=encode_spans(memory.get_finished_spans()).SerializeToString(),
            headers={**PROTOBUF, "xProxy-api-key": service.api_key},
        )
        assert response.status_code == 200
        assert sorted(row["resource"] for row in stored_requests(service.data_dir)) == ["gpt-4o", "gpt-4o-mini"]


def test_grpc_receiver_refuses_a_wrong_key_and_bad_bytes_with_their_status_codes(tmp_path: Path) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    good = _good_body()
    with running_service(tmp_path / "data", otlp_grpc_port=0) as service:
        with grpc.insecure_channel(f"127.0.0.1:{service.otlp_grpc_port}") as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=lambda body: body,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
            for key, body, code in [
                (None, good, grpc.StatusCode.UNAUTHENTICATED),
                ("sk-wrong", good, grpc.StatusCode.UNAUTHENTICATED),
                (service.api_key, b"\xff\xff garbage", grpc.StatusCode.INVALID_ARGUMENT),
            ]:
                metadata = [("xproxy-api-key", key)] if key else []
                with pytest.raises(grpc.RpcError) as refused:
                    export(body, metadata=metadata, timeout=10)
                assert refused.value.code() == code
            answer = export(good, metadata=[("xproxy-api-key", service.api_key)], timeout=10)
            assert not answer.HasField("partial_success")
        assert len(stored_requests(service.data_dir)) == 1


def test_openapi_describes_the_receiver_with_binary_bodies(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as service:
        spec = httpx.get(f"{service.base_url}/openapi.json").json()
    operation = spec["paths"]["/v1/traces"]["post"]
    content = operation["requestBody"]["content"]
    assert content["application/x-protobuf"]["schema"] == {"type": "string", "format": "binary"}
    assert "application/json" in content
    assert {"200", "400", "401", "413", "415"} <= set(operation["responses"])
    assert operation["security"] == [{"ApiKey": []}]
