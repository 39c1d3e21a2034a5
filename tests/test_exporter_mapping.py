"""Span -> Pay-i ingest event mapping, for SDK spans and spans that arrive over OTLP."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from otlp_support import otlp_json

from payi_otel import attributes as A
from payi_otel.exporters import (
    OtlpDecodeError,
    SpanView,
    event_from_span,
    event_from_view,
    events_from_otlp_request,
    render_bulk_item,
    render_single,
    spans_from_otlp_request,
)

BASE = {
    A.GEN_AI_OPERATION_NAME: "chat",
    A.GEN_AI_PROVIDER_NAME: "openai",
    A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
    A.PAYI_CATEGORY: "system.openai",
    A.PAYI_RESOURCE: "gpt-4o-mini",
    A.PAYI_HTTP_STATUS_CODE: 200,
    A.PAYI_PROVIDER_RESPONSE_ID: "chatcmpl-1",
    "payi.units.text.input": 70,
    "payi.units.text.output": 30,
}


@pytest.fixture()
def make_span():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def make(
        attributes, status=None, start_ns=1_700_000_000_123_456_789, duration_ns=250_000_000, name="chat gpt-4o-mini"
    ):
        span = tracer.start_span(name, attributes=attributes, start_time=start_ns)
        if status is not None:
            span.set_status(status)
        span.end(end_time=start_ns + duration_ns)
        return exporter.get_finished_spans()[-1]

    yield make
    provider.shutdown()


# --- the three span forms --------------------------------------------------------------------


def test_readable_span_otlp_protobuf_and_otlp_json_give_identical_events(make_span):
    attrs = {
        **BASE,
        "payi.units.text_cache_read.input": 5,
        A.PAYI_REQUEST_TAGS: ("a", "b"),
        A.PAYI_LIMIT_IDS: ("lim-1",),
        A.PAYI_USE_CASE_VERSION: 3,
        A.PAYI_USAGE_COMPLETE: True,
        A.PAYI_LATENCY_MS: 240,
        A.PAYI_TIME_TO_FIRST_TOKEN_MS: 12,
        A.PAYI_FUNCTION_CALLS: json.dumps([{"name": "f", "arguments": "{}"}]),
        "payi.request_properties.team": "blue",
        "payi.use_case_properties.tier": "gold",
        A.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
    }
    failed_attrs = {k: v for k, v in BASE.items() if k not in (A.PAYI_HTTP_STATUS_CODE, A.PAYI_PROVIDER_RESPONSE_ID)}
    failed_attrs[A.ERROR_TYPE] = "httpx.ConnectTimeout"
    spans = [
        make_span(attrs),
        make_span(failed_attrs, status=Status(StatusCode.ERROR, "timed out")),
        make_span({"http.request.method": "GET"}),  # not GenAI
    ]
    from_sdk = [event_from_span(s) for s in spans]
    from_proto = [
        event_from_view(v)
        for v in spans_from_otlp_request(encode_spans(spans).SerializeToString(), "application/x-protobuf")
    ]
    body = json.dumps(otlp_json(spans)).encode()
    from_json = [event_from_view(v) for v in spans_from_otlp_request(body, "application/json; charset=utf-8")]
    from_dict = [event_from_view(v) for v in spans_from_otlp_request(otlp_json(spans))]
    assert from_sdk[0] is not None and from_sdk[1] is not None and from_sdk[2] is None
    # OTLP decoders skip the span without GenAI attributes before decoding it
    assert from_proto == from_sdk[:2]
    assert from_json == from_sdk[:2]
    assert from_dict == from_sdk[:2]
    # the generated id of the failed call is the same whatever form the span came in
    assert from_proto[1]["provider_response_id"].startswith("payi_")


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"{not json", "application/json", "not valid OTLP/JSON"),
        (b"[]", "application/json", "an object with 'resourceSpans'"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            "application/json",
            "spans\\[0\\].startTimeUnixNano",
        ),
        (b"\xff\xff\xff", "application/x-protobuf", "not a valid OTLP protobuf"),
        (b"x", "text/plain", "Content-Type 'text/plain'"),
        (
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "traceId": "zz",
                                            "attributes": [
                                                {"key": A.GEN_AI_OPERATION_NAME, "value": {"stringValue": "chat"}}
                                            ],
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ).encode(),
            "application/json",
            "span.traceId",
        ),
    ],
)
def test_bad_otlp_bodies_raise_a_clear_error(body, content_type, message):
    with pytest.raises(OtlpDecodeError, match=message):
        spans_from_otlp_request(body, content_type)


# --- fields ----------------------------------------------------------------------------------


def test_core_fields(make_span):
    event = event_from_span(make_span({**BASE, A.PAYI_PROVIDER_URI: "https://api.openai.com/v1/"}))
    assert event["category"] == "system.openai"
    assert event["resource"] == "gpt-4o-mini"
    assert event["units"] == {"text": {"input": 70, "output": 30}}
    assert event["http_status_code"] == 200
    assert event["provider_response_id"] == "chatcmpl-1"
    assert event["provider_uri"] == "https://api.openai.com/v1/"
    ts = datetime.fromisoformat(event["event_timestamp"])
    assert ts.utcoffset().total_seconds() == 0
    assert ts.timestamp() == pytest.approx(1_700_000_000.123456, abs=1e-6)  # span start, not end
    assert event["end_to_end_latency_ms"] == 250  # span duration when the span has no latency attribute
    assert "time_to_first_token_ms" not in event
    assert "properties" not in event


def test_latency_and_ttft_attributes_win_over_duration(make_span):
    event = event_from_span(make_span({**BASE, A.PAYI_LATENCY_MS: 1234, A.PAYI_TIME_TO_FIRST_TOKEN_MS: 77}))
    assert event["end_to_end_latency_ms"] == 1234
    assert event["time_to_first_token_ms"] == 77


@pytest.mark.parametrize(
    "unit",
    [
        "text",
        "text_cache_read",
        "text_cache_write",
        "text_cache_write_1h",
        "reasoning",
        "audio",
        "vision",
        "image",
        "web_search_request",
        "text_large_context",
    ],
)
def test_every_unit_type_is_carried(make_span, unit):
    attrs = {k: v for k, v in BASE.items() if not k.startswith("payi.units.")}
    attrs[f"payi.units.{unit}.input"] = 11
    attrs[f"payi.units.{unit}.output"] = 4
    assert event_from_span(make_span(attrs))["units"] == {unit: {"input": 11, "output": 4}}


def test_units_with_one_direction_get_zero_for_the_other(make_span):
    attrs = {**BASE, "payi.units.reasoning.output": 20, "payi.units.text_cache_read.input": 30}
    units = event_from_span(make_span(attrs))["units"]
    assert units == {
        "text": {"input": 70, "output": 30},
        "reasoning": {"input": 0, "output": 20},
        "text_cache_read": {"input": 30, "output": 0},
    }


def test_foreign_span_units_come_from_semconv_token_counts(make_span):
    # an OTel GenAI span from another instrumentation: no payi.* at all
    attrs = {
        A.GEN_AI_OPERATION_NAME: "chat",
        A.GEN_AI_PROVIDER_NAME: "openai",
        A.GEN_AI_REQUEST_MODEL: "gpt-4o",
        A.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        A.GEN_AI_RESPONSE_ID: "chatcmpl-9",
        A.GEN_AI_USAGE_INPUT_TOKENS: 100,  # inclusive of the 30 cached
        A.GEN_AI_USAGE_OUTPUT_TOKENS: 50,  # inclusive of the 20 reasoning
        A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 30,
        A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 20,
        A.HTTP_RESPONSE_STATUS_CODE: 200,
    }
    event = event_from_span(make_span(attrs))
    assert event["category"] == "system.openai"
    assert event["resource"] == "gpt-4o"
    assert event["provider_response_id"] == "chatcmpl-9"
    assert event["units"] == {
        "text": {"input": 70, "output": 30},
        "text_cache_read": {"input": 30, "output": 0},
        "reasoning": {"input": 0, "output": 20},
    }
    assert "properties" not in event


def test_older_semconv_spellings_are_read(make_span):
    attrs = {
        A.GEN_AI_OPERATION_NAME: "chat",
        "gen_ai.system": "anthropic",
        A.GEN_AI_REQUEST_MODEL: "claude-sonnet-4",
        "gen_ai.usage.prompt_tokens": 120,
        "gen_ai.usage.completion_tokens": 9,
        "gen_ai.usage.cache_read_input_tokens": 20,
        "gen_ai.usage.cache_creation_input_tokens": 40,
    }
    event = event_from_span(make_span(attrs))
    assert event["category"] == "system.anthropic"
    assert event["units"] == {
        "text": {"input": 60, "output": 9},
        "text_cache_read": {"input": 20, "output": 0},
        "text_cache_write": {"input": 40, "output": 0},
    }


def test_category_from_provider_name_when_span_has_no_payi_category(make_span):
    attrs = {
        A.GEN_AI_OPERATION_NAME: "embeddings",
        A.GEN_AI_PROVIDER_NAME: "azure.ai.openai",
        A.GEN_AI_REQUEST_MODEL: "emb",
        A.GEN_AI_USAGE_INPUT_TOKENS: 8,
    }
    event = event_from_span(make_span(attrs))
    assert event["category"] == "system.azureopenai"
    assert event["units"] == {"text": {"input": 8, "output": 0}}


@pytest.mark.parametrize(
    "attrs",
    [
        {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"},
        {A.GEN_AI_OPERATION_NAME: "invoke_agent", A.GEN_AI_PROVIDER_NAME: "openai"},  # not a provider call
        {A.GEN_AI_OPERATION_NAME: "execute_tool"},
        {A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "some-unknown-vendor"},
        {A.GEN_AI_OPERATION_NAME: "chat"},
    ],
)
def test_spans_that_are_not_genai_provider_calls_are_ignored(make_span, attrs):
    assert event_from_span(make_span(attrs)) is None


def test_missing_model_gives_the_unknown_model_resource(make_span):
    attrs = {A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "openai", A.GEN_AI_USAGE_INPUT_TOKENS: 1}
    assert event_from_span(make_span(attrs))["resource"] == "system.unknown_model"


# --- failures --------------------------------------------------------------------------------


def test_failure_with_provider_status_keeps_that_status(make_span):
    attrs = {**BASE, A.PAYI_HTTP_STATUS_CODE: 429, A.ERROR_TYPE: "openai.RateLimitError"}
    for key in [k for k in attrs if k.startswith("payi.units.")]:
        del attrs[key]
    event = event_from_span(make_span(attrs, status=Status(StatusCode.ERROR, "rate limited")))
    assert event["http_status_code"] == 429
    assert event["provider_response_id"] == "chatcmpl-1"
    assert "system.failure" not in event.get("properties", {})


def test_failure_without_status_is_299_with_failure_properties(make_span):
    attrs = {
        k: v
        for k, v in BASE.items()
        if k not in (A.PAYI_HTTP_STATUS_CODE, A.PAYI_PROVIDER_RESPONSE_ID) and not k.startswith("payi.units.")
    }
    attrs[A.ERROR_TYPE] = "openai.APITimeoutError"
    attrs[A.PAYI_FAILURE_DESCRIPTION] = "request=POST https://api.openai.com/v1/chat/completions"
    attrs[A.PAYI_USAGE_COMPLETE] = False
    attrs[A.PAYI_USAGE_INCOMPLETE_REASON] = "call failed"
    span = make_span(attrs, status=Status(StatusCode.ERROR, "Request timed out."))
    event = event_from_span(span)
    assert event["http_status_code"] == 299
    assert event["properties"]["system.failure"] == "APITimeoutError"
    assert (
        event["properties"]["system.failure.description"] == "request=POST https://api.openai.com/v1/chat/completions"
    )
    assert event["properties"]["system.usage_incomplete"] == "true"
    assert event["units"] == {}
    # no provider id: a generated one, stable for the same span
    assert event["provider_response_id"].startswith("payi_")
    assert event_from_span(span)["provider_response_id"] == event["provider_response_id"]
    assert event_from_span(make_span(attrs))["provider_response_id"] != event["provider_response_id"]


def test_failure_description_falls_back_to_status_message(make_span):
    attrs = {A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "openai", A.GEN_AI_REQUEST_MODEL: "m"}
    event = event_from_span(make_span(attrs, status=Status(StatusCode.ERROR, "boom")))
    assert event["http_status_code"] == 299
    assert event["properties"]["system.failure"] == "error"
    assert event["properties"]["system.failure.description"] == "boom"


def test_incomplete_usage_is_visible(make_span):
    attrs = {**BASE, A.PAYI_USAGE_COMPLETE: False, A.PAYI_USAGE_INCOMPLETE_REASON: "stream ended early"}
    props = event_from_span(make_span(attrs))["properties"]
    assert props["system.usage_incomplete"] == "true"
    assert props["system.usage_incomplete.reason"] == "stream ended early"


def test_foreign_span_without_any_usage_is_marked_incomplete(make_span):
    attrs = {A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "openai", A.GEN_AI_REQUEST_MODEL: "m"}
    event = event_from_span(make_span(attrs))
    assert event["units"] == {}
    assert event["properties"]["system.usage_incomplete.reason"] == "no usage reported"


# --- attribution -----------------------------------------------------------------------------

ATTRIBUTION = {
    A.PAYI_USE_CASE_NAME: "support-bot",
    A.PAYI_USE_CASE_ID: "uc-1",
    A.PAYI_USE_CASE_VERSION: 2,
    A.PAYI_USE_CASE_STEP: "classify",
    A.PAYI_USER_ID: "alice",
    A.PAYI_ACCOUNT_NAME: "acme",
    A.PAYI_REQUEST_TAGS: ("t1", "t2"),
    A.PAYI_LIMIT_IDS: ("l1", " ", "l2"),
    A.PAYI_RESOURCE_SCOPE: "datazone",
    A.PAYI_INSTRUMENTED_MODULE: "openai/3.54.0",
    "payi.request_properties.team": "blue",
    "payi.request_properties.ticket": "42",
    "payi.use_case_properties.tier": "gold",
}


def test_every_attribution_field(make_span):
    event = event_from_span(make_span({**BASE, **ATTRIBUTION}))
    assert event["use_case_name"] == "support-bot"
    assert event["use_case_id"] == "uc-1"
    assert event["use_case_version"] == 2
    assert event["use_case_step"] == "classify"
    assert event["user_id"] == "alice"
    assert event["account_name"] == "acme"
    assert event["request_tags"] == ["t1", "t2"]
    assert event["limit_ids"] == ["l1", "l2"]
    assert event["resource_scope"] == "datazone"
    assert event["properties"] == {"team": "blue", "ticket": "42"}
    assert event["use_case_properties"] == {"tier": "gold"}


def test_single_form_moves_attribution_to_headers(make_span):
    event = event_from_span(make_span({**BASE, **ATTRIBUTION}))
    params, headers, body = render_single(event)
    assert params == {"id": "chatcmpl-1"}
    assert headers == {
        "xProxy-UseCase-Name": "support-bot",
        "xProxy-UseCase-ID": "uc-1",
        "xProxy-UseCase-Version": "2",
        "xProxy-UseCase-Step": "classify",
        "xProxy-User-ID": "alice",
        "xProxy-Account-Name": "acme",
        "xProxy-Request-Tags": "t1,t2",
        "xProxy-Limit-IDs": "l1,l2",
        "xProxy-Resource-Scope": "datazone",
        "xProxy-Instrumented-Module": "openai/3.54.0",
    }
    for key in ("use_case_name", "user_id", "limit_ids", "resource_scope", "instrumented_module", "request_tags"):
        assert key not in body
    assert body["properties"] == {"team": "blue", "ticket": "42"}
    assert body["use_case_properties"] == {"tier": "gold"}
    assert body["units"] == {"text": {"input": 70, "output": 30}}


def test_bulk_form_keeps_attribution_in_the_body_with_bulk_names(make_span):
    item = render_bulk_item(event_from_span(make_span({**BASE, **ATTRIBUTION})))
    assert item["scope"] == "datazone"
    assert "resource_scope" not in item and "instrumented_module" not in item
    assert item["limit_ids"] == ["l1", "l2"]
    assert item["request_tags"] == ["t1", "t2"]
    assert item["use_case_version"] == 2
    assert item["user_id"] == "alice"
    assert item["provider_response_id"] == "chatcmpl-1"


def test_price_as_replaces_category_and_resource_and_keeps_the_originals(make_span):
    attrs = {
        **BASE,
        A.PAYI_CATEGORY: "system.azureopenai",
        A.PAYI_RESOURCE: "my-deploy",
        A.PAYI_PRICE_AS_CATEGORY: "system.openai",
        A.PAYI_PRICE_AS_RESOURCE: "gpt-4o",
    }
    event = event_from_span(make_span(attrs))
    assert event["category"] == "system.openai"
    assert event["resource"] == "gpt-4o"
    assert event["properties"]["system.original_category"] == "system.azureopenai"
    assert event["properties"]["system.original_resource"] == "my-deploy"


def test_function_calls_from_json(make_span):
    calls = [{"name": "get_weather", "arguments": '{"city": "x"}'}, {"name": "noop"}, {"bad": 1}]
    event = event_from_span(make_span({**BASE, A.PAYI_FUNCTION_CALLS: json.dumps(calls)}))
    assert event["provider_response_function_calls"] == [
        {"name": "get_weather", "arguments": '{"city": "x"}'},
        {"name": "noop", "arguments": None},
    ]
    assert "provider_response_function_calls" not in event_from_span(
        make_span({**BASE, A.PAYI_FUNCTION_CALLS: "{broken"})
    )


# --- message content -------------------------------------------------------------------------


def test_content_only_when_present_and_allowed(make_span):
    inp = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hello"}]}])
    out = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}])
    with_content = make_span({**BASE, A.GEN_AI_INPUT_MESSAGES: inp, A.GEN_AI_OUTPUT_MESSAGES: out})
    event = event_from_span(with_content)
    assert event["provider_request_json"] == inp
    assert event["provider_response_json"] == out
    dropped = event_from_span(with_content, include_content=False)
    assert "provider_request_json" not in dropped and "provider_response_json" not in dropped
    absent = event_from_span(make_span(BASE))
    assert "provider_request_json" not in absent and "provider_response_json" not in absent


# --- OTLP decoding keeps what the mapping reads, and only that --------------------------------

UNRELATED = {
    "http.request.method": "POST",
    "http.response.body.size": 512,
    "url.full": "https://api.openai.com/v1/chat/completions",
    "server.address": "api.openai.com",
    "server.port": 443,
    "thread.id": 7,
    "code.function.name": "answer",
    "app.ratio": 0.25,
    "app.flags": (True, False),
    "app.payi.units.text.input": 999,  # payi.* only as a namespace, not inside another key
    "gen_ai_like.usage.input_tokens": 999,
    "llmish.usage.prompt_tokens": 999,
    "error.message": "not an error type",
}


@pytest.mark.parametrize(
    "genai",
    [
        {**BASE, **ATTRIBUTION, A.PAYI_USAGE_COMPLETE: True, "payi.units.text_cache_read.input": 5},
        {  # a foreign span: token counts under older spellings, failure from error.type
            A.GEN_AI_OPERATION_NAME: "chat",
            "gen_ai.system": "openai",
            A.GEN_AI_REQUEST_MODEL: "gpt-4o",
            "llm.usage.prompt_tokens": 120,
            "llm.usage.completion_tokens": 30,
            A.ERROR_TYPE: "openai.APITimeoutError",
        },
        {  # provider status from the HTTP semantic conventions
            A.GEN_AI_OPERATION_NAME: "embeddings",
            A.GEN_AI_PROVIDER_NAME: "openai",
            A.GEN_AI_REQUEST_MODEL: "text-embedding-3-small",
            A.GEN_AI_USAGE_INPUT_TOKENS: 8,
            A.HTTP_RESPONSE_STATUS_CODE: 201,
        },
    ],
)
def test_unrelated_attributes_change_no_event_in_any_form(make_span, genai):
    plain = make_span(genai, start_ns=1_700_000_000_000_000_000)
    crowded = make_span({**UNRELATED, **genai}, start_ns=1_700_000_000_000_000_000)
    expected = event_from_span(plain)
    assert expected is not None
    proto_body = encode_spans([crowded]).SerializeToString()
    forms = {
        "sdk": [event_from_span(crowded)],
        "protobuf": events_from_otlp_request(proto_body, "application/x-protobuf"),
        "json": events_from_otlp_request(json.dumps(otlp_json([crowded])).encode(), "application/json"),
        "dict": events_from_otlp_request(otlp_json([crowded])),
    }
    for form, events in forms.items():
        assert len(events) == 1, form
        event = dict(events[0])
        # the two spans differ in ids and so in a generated event id, nothing else
        if not genai.get(A.PAYI_PROVIDER_RESPONSE_ID):
            assert event.pop("provider_response_id").startswith("payi_")
            event["provider_response_id"] = expected["provider_response_id"]
        assert event == expected, form


def test_otlp_views_keep_only_attributes_the_mapping_reads(make_span):
    span = make_span(
        {**UNRELATED, **BASE, A.ERROR_TYPE: "x.Y", A.HTTP_RESPONSE_STATUS_CODE: 500, "llm.usage.prompt_tokens": 3}
    )
    proto_body = encode_spans([span]).SerializeToString()
    for view in (
        spans_from_otlp_request(proto_body, "application/x-protobuf")[0],
        spans_from_otlp_request(json.dumps(otlp_json([span])).encode(), "application/json")[0],
        spans_from_otlp_request(otlp_json([span]))[0],
    ):
        # names of the attribute contract stay (server.* among them), other namespaces go
        kept = set(BASE) | {
            A.ERROR_TYPE,
            A.HTTP_RESPONSE_STATUS_CODE,
            "llm.usage.prompt_tokens",
            A.SERVER_ADDRESS,
            A.SERVER_PORT,
        }
        assert set(view.attributes) == kept


def test_otlp_json_values_of_every_kind_decode_as_the_parsed_form_does():
    attributes = [
        {"key": "payi.request_properties.s", "value": {"stringValue": "x"}},
        {"key": "payi.request_properties.i_str", "value": {"intValue": "9007199254740993"}},
        {"key": "payi.request_properties.i_num", "value": {"intValue": 12}},
        {"key": "payi.request_properties.b", "value": {"boolValue": False}},
        {"key": "payi.request_properties.d", "value": {"doubleValue": 0.5}},
        {
            "key": "payi.request_properties.a",
            "value": {"arrayValue": {"values": [{"stringValue": "p"}, {"intValue": "2"}]}},
        },
        {
            "key": "payi.request_properties.kv",
            "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}},
        },
        {"key": "payi.request_properties.bytes", "value": {"bytesValue": "AAE="}},
        {"key": "payi.request_properties.empty", "value": {}},
        {"key": A.GEN_AI_OPERATION_NAME, "value": {"stringValue": "chat"}},
        {"key": A.GEN_AI_PROVIDER_NAME, "value": {"stringValue": "openai"}},
    ]
    span = {
        "name": "chat",
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": 1700000000500000000,
        "attributes": attributes,
        "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
    }
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    from_body = spans_from_otlp_request(json.dumps(request).encode(), "application/json")
    from_dict = spans_from_otlp_request(request)
    assert from_body == from_dict
    view = from_body[0]
    assert view.attributes["payi.request_properties.i_str"] == 9007199254740993
    assert view.attributes["payi.request_properties.a"] == ("p", 2)
    assert view.attributes["payi.request_properties.kv"] == '{"k": true}'
    assert view.attributes["payi.request_properties.empty"] is None
    assert (view.start_ns, view.end_ns, view.is_error, view.status_message) == (
        1_700_000_000_000_000_000,
        1_700_000_000_500_000_000,
        True,
        "boom",
    )
    assert view.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert event_from_view(view)["properties"]["b"] == "False"


# Encoded attributes in the compact form OTLP/JSON exporters write, with values of every kind.
_COMPACT_JSON_ATTRIBUTES = (
    b'{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}',
    b'{"key":"gen_ai.provider.name","value":{"stringValue":"openai"}}',
    b'{"key":"payi.request_properties.compact","value":{"stringValue":"x"}}',
    b'{"key":"payi.request_properties.escaped_value","value":{"stringValue":"q\\"uote\\u00e9\\\\"}}',
    '{"key":"payi.request_properties.utf8","value":{"stringValue":"h\u00e9llo \u2603"}}'.encode(),
    b'{"key":"payi.request_properties.negative","value":{"intValue":"-7"}}',
    b'{"key":"payi.request_properties.int64","value":{"intValue":"-9223372036854775808"}}',
    b'{"key":"payi.request_properties.number","value":{"intValue":8}}',
    b'{"key":"payi.request_properties.double","value":{"doubleValue":1.5}}',
    b'{"key":"payi.request_properties.two_kinds","value":{"stringValue":"s","intValue":"3"}}',
    b'{"key":"payi.request_properties.array","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"2"}]}}}',
    b'{"key":"payi.request_properties.null","value":null}',
    b'{"key":"payi.request_properties.empty_string","value":{"stringValue":""}}',
    b'{"key":"gen_ai.usage.input_tokens","value":{"intValue":"12"}}',
    b'{"key":"http.route","value":{"stringValue":"/tickets/{id}"}}',
    b'{"key":"app.flag","value":{"boolValue":true}}',
)
# Other spellings: each makes its whole list decode the general way.
_OTHER_JSON_ATTRIBUTES = (
    b'{ "key" : "payi.request_properties.spaced", "value" : { "stringValue" : "y" } }',
    b'{"value":{"intValue":"5"},"key":"payi.request_properties.value_first"}',
    b'{"key":"payi.request_properties.\\u0065scaped_key","value":{"stringValue":"z"}}',
    b'{"key":"payi.request_properties.more_fields","value":{"stringValue":"v"},"other":[{"a":"1"},{"key":"b"}]}',
    b'{"key":"payi.request_properties.no_value"}',
    # key-value lists nest attributes: those inside are the value, never attributes of the span
    b'{"key":"app.context","value":{"kvlistValue":{"values":[{"key":"a","value":{"stringValue":"1"}},'
    b'{"key":"gen_ai.request.model","value":{"stringValue":"nested"}},{"key":"b","value":{"intValue":"2"}}]}}}',
)


def _json_request(*attribute_lists: tuple[bytes, ...]) -> bytes:
    spans = b",".join(
        b'{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b716920333%d","attributes":[%s]}'
        % (n, b",".join(attributes))
        for n, attributes in enumerate(attribute_lists)
    )
    return b'{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}' % spans


@pytest.mark.parametrize(
    "attributes",
    [
        _COMPACT_JSON_ATTRIBUTES,
        _COMPACT_JSON_ATTRIBUTES + _OTHER_JSON_ATTRIBUTES,
        *((*_COMPACT_JSON_ATTRIBUTES[:3], other, *_COMPACT_JSON_ATTRIBUTES[3:]) for other in _OTHER_JSON_ATTRIBUTES),
    ],
)
def test_otlp_json_attributes_decode_as_the_parsed_form_does_however_they_are_spelled(attributes):
    body = _json_request(attributes, attributes)  # the second span decodes from what the first one left known
    from_body = spans_from_otlp_request(body, "application/json")
    from_dict = spans_from_otlp_request(json.loads(body))  # the standard library's reading: the reference
    assert len(from_body) == 2
    assert [v.attributes for v in from_body] == [v.attributes for v in from_dict]
    decoded = from_body[1].attributes
    assert decoded["payi.request_properties.escaped_value"] == 'q"uote\u00e9\\'
    assert decoded["payi.request_properties.int64"] == -(2**63)
    assert decoded["payi.request_properties.array"] == ("a", 2)
    assert "http.route" not in decoded and "app.flag" not in decoded and "app.context" not in decoded
    assert A.GEN_AI_REQUEST_MODEL not in decoded


@pytest.mark.parametrize(
    "attribute, message",
    [
        (b'{"key":"gen_ai.usage.input_tokens","value":{"intValue":"many"}}', "intValue"),
        (b'{"key":"gen_ai.usage.input_tokens","value":{"stringValue":5}}', "stringValue"),
        (b'{"key":"gen_ai.usage.input_tokens","value":[1]}', "value"),
        (b'{"key":7,"value":{"stringValue":"x"}}', "key"),
        (b'{"key":"http.route","value":{"stringValue":"\xff"}}', "UTF-8|utf-8|invalid"),
        (b'{"key":"http.route","value":[1]}', "value"),
    ],
)
def test_a_bad_otlp_json_attribute_value_is_a_clear_error(attribute, message):
    body = _json_request((b'{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}', attribute))
    with pytest.raises(OtlpDecodeError, match=message):
        spans_from_otlp_request(body, "application/json")


def test_otlp_protobuf_values_of_every_kind_decode_as_the_span_message_does():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from payi_otel.exporters.otlp_proto import view_from_otlp_proto

    values = {
        "s": AnyValue(string_value="x" * 300),  # a length needing two varint bytes
        "empty_s": AnyValue(string_value=""),
        "i": AnyValue(int_value=-5),
        "big": AnyValue(int_value=2**62),
        "b": AnyValue(bool_value=True),
        "d": AnyValue(double_value=0.25),
        "bytes": AnyValue(bytes_value=b"\x00\x01"),
        "a": AnyValue(array_value={"values": [AnyValue(string_value="p"), AnyValue(int_value=2)]}),
        "kv": AnyValue(kvlist_value={"values": [KeyValue(key="k", value=AnyValue(bool_value=False))]}),
        "unset": AnyValue(),
    }
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for n in range(2):  # the second span decodes its values from what the first one left known
        span = spans.add(
            name="chat",
            trace_id=bytes(range(16)),
            span_id=bytes(range(8)),
            start_time_unix_nano=10 + n,
            end_time_unix_nano=20,
        )
        span.status.code = 2
        span.status.message = "boom"
        span.attributes.add(key=A.GEN_AI_OPERATION_NAME, value=AnyValue(string_value="chat"))
        span.attributes.add(key="http.request.method", value=AnyValue(string_value="POST"))
        for key, value in values.items():
            span.attributes.add(key="payi.request_properties." + key, value=value)
    views = spans_from_otlp_request(request.SerializeToString(), "application/x-protobuf")
    assert views == [view_from_otlp_proto(span) for span in request.resource_spans[0].scope_spans[0].spans]
    attributes = views[1].attributes
    assert attributes["payi.request_properties.big"] == 2**62
    assert attributes["payi.request_properties.a"] == ("p", 2)
    assert attributes["payi.request_properties.kv"] == '{"k": false}'
    assert attributes["payi.request_properties.bytes"] == "0001"
    assert attributes["payi.request_properties.unset"] is None
    assert "http.request.method" not in attributes
    assert (views[1].is_error, views[1].status_message, views[1].start_ns, views[1].span_id) == (
        True,
        "boom",
        11,
        0x0001020304050607,
    )


def test_otlp_protobuf_attributes_split_at_the_wire_decode_as_the_span_message_does():
    """New attribute values are read from the wire directly (one-byte lengths, varint ints): every
    int64, short and long strings, and keys too long for that path decode as protobuf decodes them."""
    import random

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from payi_otel.exporters.otlp_proto import view_from_otlp_proto

    rng = random.Random(14)
    ints = [0, 1, 127, 128, 2**63 - 1, -1, -(2**63), -128, *(rng.randint(-(2**63), 2**63 - 1) for _ in range(200))]
    strings = [
        "",
        "é",
        "x" * 125,
        "x" * 126,
        "x" * 127,
        "€" * 60,
        *(f"chatcmpl-{rng.getrandbits(64):x}" for _ in range(50)),
    ]
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for n, value in enumerate([*(AnyValue(int_value=i) for i in ints), *(AnyValue(string_value=s) for s in strings)]):
        span = spans.add(name="chat", trace_id=bytes(16), span_id=n.to_bytes(8, "big"), start_time_unix_nano=n)
        span.attributes.add(key=A.GEN_AI_OPERATION_NAME, value=AnyValue(string_value="chat"))
        span.attributes.add(key=A.GEN_AI_USAGE_INPUT_TOKENS, value=value)
        span.attributes.add(key="payi.request_properties." + "k" * 120, value=value)  # a key of 144 bytes
    views = spans_from_otlp_request(request.SerializeToString(), "application/x-protobuf")
    assert views == [view_from_otlp_proto(span) for span in request.resource_spans[0].scope_spans[0].spans]
    assert [v.attributes[A.GEN_AI_USAGE_INPUT_TOKENS] for v in views[: len(ints)]] == ints


@pytest.mark.parametrize(
    "value", [b"\x18", b"\x18\x80", b"\x18" + b"\xff" * 10 + b"\x01", b"\x0a\x05ab", b"\x0a\x02\xff\xfe"]
)
def test_otlp_protobuf_attribute_with_a_broken_value_is_a_decode_error(value):
    def field(tag: int, payload: bytes) -> bytes:  # a length-delimited field (short)
        return bytes([tag, len(payload)]) + payload

    attribute = field(0x0A, A.GEN_AI_USAGE_INPUT_TOKENS.encode()) + field(0x12, value)
    # request.resource_spans[0].scope_spans[0].spans[0].attributes[0]
    body = field(0x0A, field(0x12, field(0x12, field(0x4A, attribute))))
    with pytest.raises(OtlpDecodeError, match="not a valid OTLP protobuf"):
        spans_from_otlp_request(body, "application/x-protobuf")


# --- other instrumentations' spellings ------------------------------------------------------------


def _event(attrs: dict, **view: object) -> dict | None:
    return event_from_view(SpanView("span", 1_700_000_000_000_000_000, 1_700_000_000_250_000_000, attrs, False, None,
                                    1, 2, **view))  # fmt: skip


def test_older_openllmetry_spans_without_operation_name_map_case_insensitively():
    event = _event({"gen_ai.system": "Anthropic", "gen_ai.request.model": "claude-3-5-sonnet-20241022",
                    "gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 30,
                    "gen_ai.usage.cache_read_input_tokens": 100, "llm.request.type": "chat"})  # fmt: skip
    assert event is not None
    assert (event["category"], event["resource"]) == ("system.anthropic", "claude-3-5-sonnet-20241022")
    assert event["units"] == {"text": {"input": 20, "output": 30}, "text_cache_read": {"input": 100, "output": 0}}
    # no llm.request.type either: reported usage still makes it a call
    assert _event({"gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o", "llm.usage.prompt_tokens": 5,
                   "llm.usage.completion_tokens": 1})["category"] == "system.openai"  # fmt: skip
    # an OpenLLMetry workflow span with a provider but no call type and no usage is not a call
    assert _event({"gen_ai.system": "openai", "traceloop.span.kind": "workflow"}) is None
    assert _event({"gen_ai.system": "openai", "llm.request.type": "rerank", "gen_ai.usage.prompt_tokens": 3}) is None


def test_openinference_llm_spans_map_from_llm_token_counts():
    event = _event({"openinference.span.kind": "LLM", "llm.provider": "azure", "llm.model_name": "gpt-4o-mini",
                    "llm.token_count.prompt": 50, "llm.token_count.completion": 40,
                    "llm.token_count.prompt_details.cache_read": 10, "llm.token_count.prompt_details.audio": 5,
                    "llm.token_count.completion_details.reasoning": 25})  # fmt: skip
    assert event is not None
    assert (event["category"], event["resource"]) == ("system.azureopenai", "gpt-4o-mini")
    assert event["units"] == {
        "text": {"input": 35, "output": 15},
        "text_cache_read": {"input": 10, "output": 0},
        "reasoning": {"input": 0, "output": 25},
        "audio": {"input": 5, "output": 0},
    }
    assert _event({"openinference.span.kind": "CHAIN", "llm.provider": "openai", "llm.token_count.prompt": 5}) is None


def test_util_genai_per_modality_counts_are_priced_as_their_modality():
    event = _event({A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "openai",
                    A.GEN_AI_REQUEST_MODEL: "gpt-4o-audio-preview", A.GEN_AI_USAGE_INPUT_TOKENS: 300,
                    A.GEN_AI_USAGE_OUTPUT_TOKENS: 200, "gen_ai.usage.audio.input_tokens": 120,
                    "gen_ai.usage.image.input_tokens": 80, "gen_ai.usage.audio.output_tokens": 150})  # fmt: skip
    assert event["units"] == {
        "text": {"input": 100, "output": 50},
        "audio": {"input": 120, "output": 150},
        "vision": {"input": 80, "output": 0},
    }


@pytest.mark.parametrize(
    "host, category",
    [
        ("my-resource.openai.azure.com", "system.azureopenai"),
        ("my-resource.cognitiveservices.azure.com", "system.azureopenai"),
        ("MY-PROJECT.services.ai.azure.com", "system.azureopenai"),
        ("api.openai.com", "system.openai"),
        ("openai.azure.com.example.org", "system.openai"),
    ],
)
def test_openai_v2_spans_of_azure_hosts_are_azure_openai(host, category):
    event = _event({A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "openai", A.SERVER_ADDRESS: host,
                    A.GEN_AI_REQUEST_MODEL: "my-deployment", A.GEN_AI_USAGE_INPUT_TOKENS: 1,
                    A.GEN_AI_USAGE_OUTPUT_TOKENS: 1})  # fmt: skip
    assert event["category"] == category


def test_time_to_first_chunk_and_resource_properties_reach_the_event():
    from payi_otel.exporters.views import resource_properties

    resource = resource_properties({"service.name": "bot", "deployment.environment": "prod", "host.name": "h"})
    attrs = {
        A.GEN_AI_OPERATION_NAME: "chat",
        A.GEN_AI_PROVIDER_NAME: "openai",
        A.GEN_AI_REQUEST_MODEL: "gpt-4o",
        A.GEN_AI_USAGE_INPUT_TOKENS: 1,
        A.GEN_AI_USAGE_OUTPUT_TOKENS: 1,
        "gen_ai.response.time_to_first_chunk": 0.4375,
        "payi.request_properties.service.name": "override",
    }
    event = _event(attrs, resource=resource)  # fmt: skip
    assert event["time_to_first_token_ms"] == 438
    assert event["properties"] == {"service.name": "override", "deployment.environment.name": "prod"}
    assert resource_properties({"service.name": "unknown_service:python"}) == {}


def test_totals_and_cache_reads_give_the_units_of_the_general_usage_rule():
    """Spans with only input/output totals and cache reads take a short path: same units as
    ``to_units`` of the same usage, for every combination of spellings, missing, zero, negative and
    non-integer values."""
    import itertools

    from payi_otel.units import Usage, to_units

    spellings = [
        (A.GEN_AI_USAGE_INPUT_TOKENS, "llm.usage.prompt_tokens"),
        (A.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens"),
        (A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, "gen_ai.usage.cache_read_input_tokens"),
    ]
    values = [None, 0, 7, -3, "12", "x", 2.0]
    checked = 0
    for combo in itertools.product(values, repeat=3):
        for spelled in itertools.product((0, 1), repeat=3):
            attrs = {
                names[which]: v for names, which, v in zip(spellings, spelled, combo, strict=True) if v is not None
            }
            attrs[A.GEN_AI_OPERATION_NAME] = "chat"
            attrs[A.GEN_AI_PROVIDER_NAME] = "openai"

            def count(value):
                return None if value is None or value == "x" else int(value)

            usage = Usage(
                input_tokens=count(combo[0]), output_tokens=count(combo[1]), cache_read_tokens=count(combo[2]) or 0
            )
            expected = to_units(usage)
            event = _event(attrs)
            assert event["units"] == expected, attrs
            checked += 1
    assert checked == 7**3 * 8


def test_a_single_number_as_limit_ids_is_read_as_one_id_not_an_error():
    # another source may write one id as an int; the mapping is best effort and never fails a span for it
    event = _event({**BASE, A.PAYI_LIMIT_IDS: 7, A.PAYI_REQUEST_TAGS: "a, b"})
    assert event is not None
    assert (event["limit_ids"], event["request_tags"]) == (["7"], ["a", "b"])
