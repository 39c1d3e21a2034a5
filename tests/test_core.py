"""The span core on its own: what a CallRecord becomes on the span and in the metrics."""

from __future__ import annotations

import json

import pytest
from _openai_helpers import Telemetry, payi_event, usage_complete
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from payi_otel import attributes as A
from payi_otel import track_context
from payi_otel.core import CallRecord, SpanCore, fq_name, split_proxy_headers
from payi_otel.instrumentation._stainless import error_info as stainless_error_info
from payi_otel.messages import ContentMode, content_mode_from_env
from payi_otel.units import Usage, to_units


@pytest.fixture
def tel():
    return Telemetry()


def core_for(tel: Telemetry, **kw) -> SpanCore:
    return SpanCore(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, **kw)


def record(**kw) -> CallRecord:
    base = dict(provider="openai", operation="chat", category="system.openai", request_model="gpt-4o",
                server_address="api.openai.com", provider_uri="https://api.openai.com/v1/")  # fmt: skip
    base.update(kw)
    return CallRecord(**base)


def test_success_span_carries_semconv_and_payi_view(tel):
    usage = Usage(input_tokens=100, output_tokens=50, cache_read_tokens=30, reasoning_tokens=20)
    call = core_for(tel).start(record(max_tokens=64, temperature=0.2))
    call.record.response_model = "gpt-4o-2024-08-06"
    call.record.usage = usage
    call.record.status_code = 200
    call.record.response_id = "chatcmpl-1"
    call.record.finish_reasons = ["tool_calls"]
    call.record.tool_calls = [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    call.end()
    call.end()  # exactly once
    span = tel.one_span()
    a = span.attributes
    assert span.name == "chat gpt-4o" and span.kind is SpanKind.CLIENT
    assert a[A.GEN_AI_USAGE_INPUT_TOKENS] == 100 and a[A.GEN_AI_USAGE_OUTPUT_TOKENS] == 50
    assert a[A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 30 and a[A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 20
    assert json.loads(a[A.PAYI_FUNCTION_CALLS]) == [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    assert a[A.GEN_AI_REQUEST_MAX_TOKENS] == 64 and a[A.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    # What the semantic-convention attributes and the span's timing already say is not repeated as payi.*.
    redundant = (A.PAYI_CATEGORY, A.PAYI_RESOURCE, A.PAYI_USAGE_COMPLETE, A.PAYI_PROVIDER_RESPONSE_ID,
                 A.PAYI_HTTP_STATUS_CODE, A.PAYI_LATENCY_MS)  # fmt: skip
    assert [k for k in a if k in redundant or k.startswith(A.PAYI_UNITS_PREFIX)] == []
    event = payi_event(span)
    assert event["units"] == to_units(usage)
    assert event["units"]["text"] == {"input": 70, "output": 30}
    assert event["resource"] == "gpt-4o" and event["category"] == "system.openai"
    assert usage_complete(event) and A.PAYI_USAGE_INCOMPLETE_REASON not in a
    assert event["provider_response_id"] == "chatcmpl-1" and event["http_status_code"] == 200
    assert event["end_to_end_latency_ms"] == (span.end_time - span.start_time) // 1_000_000


@pytest.mark.parametrize(
    "usage",
    [
        Usage(input_tokens=100, output_tokens=50, input_audio_tokens=40, output_audio_tokens=10),
        Usage(input_tokens=100, output_tokens=50, cache_write_tokens=10, cache_write_1h_tokens=20),
        Usage(input_tokens=60, output_tokens=4160, input_image_tokens=10, output_image_tokens=4160),
        Usage(images=2),
        Usage(input_tokens=100, output_tokens=50, large_context=True),
    ],
    ids=["audio", "cache-1h", "vision", "per-image", "large-context"],
)
def test_units_the_token_counts_cannot_express_are_written(tel, usage):
    call = core_for(tel).start(record())
    call.record.usage = usage
    call.end()
    span = tel.one_span()
    written = {k for k in span.attributes if k.startswith(A.PAYI_UNITS_PREFIX)}
    assert written, "units beyond the gen_ai.usage.* counts must be on the span"
    assert payi_event(span)["units"] == to_units(usage)


def test_azure_mapped_resource_and_foreign_category_are_written(tel):
    call = core_for(tel).start(record(provider="azure.ai.openai", category="system.openai", resource="gpt-4o-mini",
                                      request_model="my-deployment"))  # fmt: skip
    call.end()
    a = tel.one_span().attributes
    assert a[A.PAYI_RESOURCE] == "gpt-4o-mini" and a[A.PAYI_CATEGORY] == "system.openai"
    event = payi_event(tel.one_span())
    assert (event["resource"], event["category"]) == ("gpt-4o-mini", "system.openai")


def test_missing_usage_is_flagged_not_priced(tel):
    call = core_for(tel).start(record())
    call.end()
    a = tel.one_span().attributes
    assert a[A.PAYI_USAGE_COMPLETE] is False
    assert a[A.PAYI_USAGE_INCOMPLETE_REASON]
    assert not [k for k in a if k.startswith(A.PAYI_UNITS_PREFIX)]
    event = payi_event(tel.one_span())
    assert not usage_complete(event) and event["units"] == {}


class Throttled(Exception):
    status_code = 429
    request_id = "req_123"


def test_error_with_http_status(tel):
    call = core_for(tel, error_info=stainless_error_info).start(record())
    call.fail(Throttled("slow down"))
    span = tel.one_span()
    a = span.attributes
    assert span.status.status_code.name == "ERROR"
    assert a[A.ERROR_TYPE] == f"{__name__}.Throttled"
    assert a[A.HTTP_RESPONSE_STATUS_CODE] == 429 and a[A.GEN_AI_RESPONSE_ID] == "req_123"
    event = payi_event(span)
    assert event["http_status_code"] == 429 and event["provider_response_id"] == "req_123"
    assert A.PAYI_FAILURE_DESCRIPTION not in a
    assert any(e.name == "exception" for e in span.events)


class BotoShaped(Exception):
    """An error that carries its status and request id elsewhere (as botocore's ClientError does)."""

    def __init__(self) -> None:
        super().__init__("ThrottlingException")
        self.response = {"ResponseMetadata": {"HTTPStatusCode": 503, "RequestId": "aws-req-9"}}


def test_error_reader_is_the_providers(tel):
    def boto_error_info(exc):
        meta = getattr(exc, "response", {}).get("ResponseMetadata", {})
        return meta.get("HTTPStatusCode"), meta.get("RequestId")

    core_for(tel, error_info=boto_error_info).start(record()).fail(BotoShaped())
    core_for(tel).start(record()).fail(Throttled("the default reader knows no SDK's shape"))
    boto, default = (payi_event(s) for s in tel.spans())
    assert boto["http_status_code"] == 503 and boto["provider_response_id"] == "aws-req-9"
    assert default["http_status_code"] == 299 and default["provider_response_id"] != "req_123"


def test_error_without_status_gets_failure_description(tel):
    call = core_for(tel).start(record())
    call.fail(TimeoutError("read timed out"))
    a = tel.one_span().attributes
    assert a[A.ERROR_TYPE] == "TimeoutError"
    assert a[A.PAYI_FAILURE_DESCRIPTION] == "TimeoutError: read timed out"
    assert A.PAYI_HTTP_STATUS_CODE not in a and A.HTTP_RESPONSE_STATUS_CODE not in a
    assert payi_event(tel.one_span())["http_status_code"] == 299


def test_success_status_then_failure_keeps_the_status(tel):
    """A stream answered 200 that then broke: the event keeps the provider's 200, flagged failed by error.type."""
    call = core_for(tel).start(record(stream=True))
    call.record.status_code = 200
    call.fail(ConnectionError("reset"))
    span = tel.one_span()
    assert span.attributes[A.PAYI_HTTP_STATUS_CODE] == 200
    assert payi_event(span)["http_status_code"] == 200


def test_business_context_and_innermost_layer(tel):
    with track_context(use_case_name="triage", user_id="u-outer", limit_ids=["l1"]):
        call = core_for(tel).start(record(business_layer={"user_id": "u-inner"}))
    call.end()
    a = tel.one_span().attributes
    assert a[A.PAYI_USE_CASE_NAME] == "triage"
    assert a[A.PAYI_USER_ID] == "u-inner"
    assert list(a[A.PAYI_LIMIT_IDS]) == ["l1"]


def test_span_is_current_only_while_activated(tel):
    call = core_for(tel).start(record())
    assert trace.get_current_span() is not call.span
    token = call.activate()
    assert trace.get_current_span() is call.span
    call.deactivate(token)
    assert trace.get_current_span() is not call.span
    call.end()


def test_metrics_attributes_and_values(tel):
    call = core_for(tel).start(record(server_port=8443))
    call.record.usage = Usage(input_tokens=7, output_tokens=3)
    call.record.response_model = "gpt-4o-2024-08-06"
    with track_context(user_id="secret-user"):
        call.end()
    (duration,) = tel.metric_points("gen_ai.client.operation.duration")
    assert dict(duration.attributes) == {
        A.GEN_AI_OPERATION_NAME: "chat", A.GEN_AI_PROVIDER_NAME: "openai", A.GEN_AI_REQUEST_MODEL: "gpt-4o",
        A.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06", A.SERVER_ADDRESS: "api.openai.com", A.SERVER_PORT: 8443,
    }  # fmt: skip
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in tel.metric_points("gen_ai.client.token.usage")}
    assert tokens == {"input": 7, "output": 3}


def test_error_metric_carries_error_type(tel):
    core_for(tel).start(record()).fail(ValueError("x"))
    (duration,) = tel.metric_points("gen_ai.client.operation.duration")
    assert duration.attributes[A.ERROR_TYPE] == "ValueError"


def test_content_only_when_enabled(tel):
    for capture in (False, True):
        call = core_for(tel, capture_content=capture).start(record(input_messages=[{"role": "user", "content": "hi"}]))
        call.record.output_messages = [{"role": "assistant", "content": "yo"}]
        call.end()
    off, on = tel.spans()
    assert A.GEN_AI_INPUT_MESSAGES not in off.attributes
    assert json.loads(on.attributes[A.GEN_AI_INPUT_MESSAGES]) == [{"role": "user", "content": "hi"}]
    assert json.loads(on.attributes[A.GEN_AI_OUTPUT_MESSAGES]) == [{"role": "assistant", "content": "yo"}]


@pytest.mark.parametrize("value, mode", [
    ("true", ContentMode.SPAN_ONLY), ("True", ContentMode.SPAN_ONLY), ("span_only", ContentMode.SPAN_ONLY),
    ("SPAN_AND_EVENT", ContentMode.SPAN_AND_EVENT), ("event_only", ContentMode.EVENT_ONLY),
    ("false", ContentMode.NO_CONTENT), ("", ContentMode.NO_CONTENT), ("No_Content", ContentMode.NO_CONTENT),
    ("yes", ContentMode.NO_CONTENT),  # not a mode: logged, no content
])  # fmt: skip
def test_capture_env(value, mode, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    assert content_mode_from_env() is mode


def test_split_proxy_headers():
    layer, rest = split_proxy_headers({"xProxy-User-ID": "u", "XPROXY-Request-Tags": "a,b", "Accept": "x"})
    assert rest == {"Accept": "x"}
    assert layer == {"user_id": "u", "request_tags": ["a", "b"]}
    assert split_proxy_headers({"Accept": "x"}) == (None, {"Accept": "x"})


def test_unsampled_span_still_records_metrics(tel):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    core = SpanCore(tracer_provider=TracerProvider(sampler=ALWAYS_OFF), meter_provider=tel.meter_provider)
    call = core.start(record())
    call.record.usage = Usage(input_tokens=1, output_tokens=1)
    call.end()
    assert len(tel.metric_points("gen_ai.client.operation.duration")) == 1


def test_fq_name():
    assert fq_name(KeyError()) == "KeyError"
    assert fq_name(Throttled()) == f"{__name__}.Throttled"


def test_metrics_are_exact_at_every_collection(tel):
    """Measurements are recorded off the caller's thread; a collection (force_flush, shutdown, a periodic
    export) records whatever is still pending first."""
    core = core_for(tel)
    for round_ in (1, 2):
        for _ in range(200):
            call = core.start(record())
            call.record.usage = Usage(input_tokens=2, output_tokens=1)
            call.end()
        (duration,) = tel.metric_points("gen_ai.client.operation.duration")
        assert duration.count == 200 * round_
        tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in tel.metric_points("gen_ai.client.token.usage")}
        assert tokens == {"input": 400 * round_, "output": 200 * round_}
