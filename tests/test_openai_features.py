"""OpenAI instrumentation behaviour a user notices: usage injection, per-call headers, Azure resources,
raw responses, errors, metrics, content capture, uninstrument and auto-instrumentation."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import openai
import pytest
from _openai_helpers import (  # noqa: F401 - fixtures
    CASSETTES,
    HTTP_LIBRARY,
    Telemetry,
    client_for,
    http,
    instrumented,
    payi_event,
    surface,
    telemetry,
    usage_complete,
)  # fmt: skip
from openai.resources.chat.completions import Completions
from pydantic import BaseModel

from payi_otel import attributes as A
from payi_otel import call_metrics, track_context
from payi_otel.call_metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from payi_otel.instrumentation.openai import OpenAIInstrumentor, parse_azure_deployments
from payi_otel.testing.replay import Cassette

OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai"
TRACELOOP = CASSETTES / "traceloop__openllmetry"
STREAM = Cassette.load(OTEL / "test_chat_completion_streaming.yaml").interactions[0]
STREAM_EVENTS = STREAM.sse_events()
CHAT = Cassette.load(OTEL / "test_chat_completion_extra_params.yaml").interactions[0]
NOT_FOUND = Cassette.load(OTEL / "test_chat_completion_404.yaml").interactions[0]
AZURE = Cassette.load(TRACELOOP / "azure/test_chat.yaml").interactions[0]
MESSAGES = [{"role": "user", "content": "Say this is a test"}]


def replay(interaction, *, is_async=False):
    return client_for(interaction, Cassette([interaction]), is_async=is_async)


def sent_json(client) -> dict:
    return json.loads(client.payi_transport.requests[-1].content)


def with_instrumentation(**kwargs):
    telemetry = Telemetry()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, **kwargs
    )
    return telemetry, instrumentor


# --- stream_options.include_usage ------------------------------------------------------------------
def test_include_usage_requested_on_a_copy_and_usage_chunk_hidden(instrumented):
    client = replay(STREAM)
    kwargs = {"model": "gpt-4", "messages": MESSAGES}
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert kwargs == {"model": "gpt-4", "messages": MESSAGES}  # caller's dict untouched
    assert sent_json(client)["stream_options"] == {"include_usage": True}
    usage_chunks = [e for e in STREAM_EVENTS if e.get("usage") and not e["choices"]]
    assert len(usage_chunks) == 1
    assert len(chunks) == len(STREAM_EVENTS) - 1 and all(c.choices for c in chunks)
    span = instrumented.one_span()
    assert span.attributes[A.GEN_AI_USAGE_INPUT_TOKENS] == usage_chunks[0]["usage"]["prompt_tokens"]
    assert usage_complete(payi_event(span))


@pytest.mark.parametrize(
    "options, sent, visible",
    [
        ({"include_usage": False}, {"include_usage": False}, len(STREAM_EVENTS)),
        ({"include_usage": True}, {"include_usage": True}, len(STREAM_EVENTS)),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}, len(STREAM_EVENTS) - 1),
    ],
)
def test_explicit_stream_options_are_respected(options, sent, visible, instrumented):
    client = replay(STREAM)
    chunks = list(client.chat.completions.create(stream=True, stream_options=options, model="gpt-4", messages=MESSAGES))
    assert sent_json(client)["stream_options"] == sent
    assert len(chunks) == visible


@pytest.mark.parametrize("how", ["kwarg", "env"])
def test_include_usage_injection_can_be_turned_off(how, monkeypatch):
    if how == "env":
        monkeypatch.setenv("PAYI_OPENAI_INJECT_STREAM_USAGE", "false")
        _telemetry, instrumentor = with_instrumentation()
    else:
        _telemetry, instrumentor = with_instrumentation(inject_stream_usage=False)
    try:
        client = replay(STREAM)
        chunks = list(client.chat.completions.create(stream=True, model="gpt-4", messages=MESSAGES))
    finally:
        instrumentor.uninstrument()
    assert "stream_options" not in sent_json(client)
    assert len(chunks) == len(STREAM_EVENTS)


@pytest.mark.parametrize("api_version, injected", [("2024-02-01", False), ("2024-10-21", True)])
def test_include_usage_only_for_azure_versions_that_accept_it(api_version, injected, instrumented):
    recorded = Cassette.load(TRACELOOP / "azure/test_chat_streaming.yaml").interactions[0]
    transport = Cassette([recorded]).transport(HTTP_LIBRARY)
    client = openai.AzureOpenAI(
        api_key="k",
        api_version=api_version,
        azure_endpoint="https://traceloop-stg.openai.azure.com",
        azure_deployment="openllmetry-testing",
        http_client=http.Client(transport=transport),
    )
    client.payi_transport = transport
    list(client.chat.completions.create(model="openllmetry-testing", messages=MESSAGES, stream=True))
    assert ("stream_options" in sent_json(client)) is injected
    assert instrumented.one_span().attributes[A.PAYI_STREAM_OUTCOME] == "completed"


@pytest.mark.parametrize(
    "var, value, rule",
    [
        ("PAYI_OPENAI_INJECT_STREAM_USAGE", "maybe", "true or false"),
        ("PAYI_AZURE_DEPLOYMENTS", "dep", "deployment=model"),
    ],
)
def test_bad_environment_setting_is_logged_naming_the_variable_and_instrumentation_stays_on(
    monkeypatch, caplog, var, value, rule
):
    # Under opentelemetry-instrument an exception here would switch the instrumentation off.
    monkeypatch.setenv(var, value)
    import openai

    before = openai.resources.chat.completions.Completions.create
    with caplog.at_level(logging.ERROR):
        OpenAIInstrumentor().instrument()
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and var in errors[0] and rule in errors[0]
        assert openai.resources.chat.completions.Completions.create is not before  # wrapped
    finally:
        OpenAIInstrumentor().uninstrument()


def test_bad_keyword_setting_raises_naming_it():
    with pytest.raises(ValueError, match=r"inject_stream_usage.*true or false"):
        OpenAIInstrumentor().instrument(inject_stream_usage="maybe")
    OpenAIInstrumentor().uninstrument()


def test_stream_without_usage_is_marked_incomplete(instrumented):
    recorded = Cassette.load(OTEL / "test_chat_completion_streaming_not_complete.yaml").interactions[0]
    client = replay(recorded)
    list(client.chat.completions.create(stream=True, model="gpt-4", messages=MESSAGES))
    attrs = instrumented.one_span().attributes
    assert attrs[A.PAYI_USAGE_COMPLETE] is False
    assert "include_usage" in attrs[A.PAYI_USAGE_INCOMPLETE_REASON]
    assert not any(k.startswith(A.PAYI_UNITS_PREFIX) for k in attrs)


# --- per-call xProxy-* headers and business context ------------------------------------------------
def test_xproxy_headers_are_stripped_and_become_innermost_context(instrumented):
    client = replay(CHAT)
    with track_context(use_case_name="support", user_id="outer-user", request_tags=["a"]):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"xProxy-User-ID": "inner-user", "xProxy-Request-Tags": "b", "X-Custom": "kept",
                           "xProxy-Unknown": "dropped"},
        )  # fmt: skip
    headers = client.payi_transport.requests[-1].headers
    assert not [h for h in headers if h.lower().startswith("xproxy-")]
    assert headers["x-custom"] == "kept"
    attrs = instrumented.one_span().attributes
    assert attrs[A.PAYI_USER_ID] == "inner-user"
    assert attrs[A.PAYI_USE_CASE_NAME] == "support"
    assert set(attrs[A.PAYI_REQUEST_TAGS]) == {"a", "b"}


def test_malformed_xproxy_header_never_breaks_the_call(instrumented):
    client = replay(CHAT)
    result = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"xProxy-UseCase-Version": "not-a-number"}
    )
    assert result.id == CHAT.json()["id"]
    assert "xproxy-usecase-version" not in client.payi_transport.requests[-1].headers
    assert usage_complete(payi_event(instrumented.one_span()))


def test_per_call_header_breaking_a_rule_keeps_the_surrounding_context(instrumented, caplog):
    # A use-case id with no use case in effect breaks a merge rule: the header is ignored with a
    # warning, and the call keeps the context it was made in.
    client = replay(CHAT)
    with track_context(user_id="outer-user"), caplog.at_level(logging.WARNING):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"xProxy-UseCase-ID": "orphan-id"}
        )
    attrs = instrumented.one_span().attributes
    assert attrs[A.PAYI_USER_ID] == "outer-user"
    assert A.PAYI_USE_CASE_ID not in attrs
    assert any("xProxy" in r.getMessage() and "use_case_id" in r.getMessage() for r in caplog.records)


# --- Azure -------------------------------------------------------------------------------------------
def test_azure_resource_from_deployment_mapping():
    telemetry, instrumentor = with_instrumentation(azure_deployments={"openllmetry-testing": "gpt-4o"})
    try:
        replay(AZURE).chat.completions.create(model="openllmetry-testing", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    attrs = telemetry.one_span().attributes
    assert attrs[A.PAYI_RESOURCE] == "gpt-4o"
    assert payi_event(telemetry.one_span())["category"] == "system.azureopenai"
    assert attrs[A.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert attrs[A.SERVER_ADDRESS] == "traceloop-stg.openai.azure.com"


def test_azure_resource_mapping_from_env(monkeypatch):
    monkeypatch.setenv("PAYI_AZURE_DEPLOYMENTS", "other=gpt-4.1, openllmetry-testing=gpt-4o-2024-08-06")
    telemetry, instrumentor = with_instrumentation()
    try:
        replay(AZURE).chat.completions.create(model="openllmetry-testing", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    assert telemetry.one_span().attributes[A.PAYI_RESOURCE] == "gpt-4o-2024-08-06"


def test_azure_resource_falls_back_to_response_model(instrumented):
    replay(AZURE).chat.completions.create(model="openllmetry-testing", messages=MESSAGES)
    attrs = instrumented.one_span().attributes
    assert attrs[A.PAYI_RESOURCE] == AZURE.json()["model"]


@pytest.mark.parametrize("bad", ["dep", "dep=", "=model", "a=b,,c"])
def test_bad_azure_mapping_names_the_variable(bad):
    with pytest.raises(ValueError, match=r"PAYI_AZURE_DEPLOYMENTS.*deployment=model"):
        parse_azure_deployments(bad)


# --- raw responses ---------------------------------------------------------------------------------
def test_with_raw_response_returns_the_raw_object_and_records_usage(instrumented):
    client = replay(CHAT)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert type(raw).__name__ == "LegacyAPIResponse"
    assert raw.headers.get("content-type", "").startswith("application/json")
    completion = raw.parse()
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    body = CHAT.json()
    assert completion.id == body["id"]
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == body["usage"]["prompt_tokens"]
    assert payi_event(instrumented.one_span())["http_status_code"] == 200


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_with_streaming_response_parsed_records_usage(is_async, instrumented):
    client = replay(CHAT, is_async=is_async)

    async def go_async():
        async with client.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES) as r:
            return await r.parse()

    def go_sync():
        with client.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES) as r:
            return r.parse()

    completion = asyncio.run(go_async()) if is_async else go_sync()
    assert completion.id == CHAT.json()["id"]
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] == CHAT.json()["usage"]["completion_tokens"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_with_streaming_response_read_without_parse_records_usage(is_async, instrumented):
    """The body read with ``read()``, not ``parse()``: the usage in it is recorded, and the caller's response
    object is left as it was (nothing parsed on it)."""
    client = replay(CHAT, is_async=is_async)

    async def go_async():
        async with client.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES) as r:
            return r, await r.read()

    def go_sync():
        with client.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES) as r:
            return r, r.read()

    response, text = asyncio.run(go_async()) if is_async else go_sync()
    assert json.loads(text)["id"] == CHAT.json()["id"]
    assert not response._parsed_by_type
    attrs = instrumented.one_span().attributes
    assert attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] == CHAT.json()["usage"]["completion_tokens"]
    event = payi_event(instrumented.one_span())
    assert event["http_status_code"] == 200 and usage_complete(event)


# --- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_provider_error_reaches_caller_unchanged(is_async, instrumented):
    def call(client):
        create = client.chat.completions.create(model="this-model-does-not-exist", messages=MESSAGES)
        return asyncio.run(create) if is_async else create

    instrumentor = OpenAIInstrumentor()
    instrumentor.uninstrument()
    with pytest.raises(openai.NotFoundError) as plain:
        call(replay(NOT_FOUND, is_async=is_async))
    instrumentor.instrument(tracer_provider=instrumented.tracer_provider, meter_provider=instrumented.meter_provider)
    with pytest.raises(openai.NotFoundError) as traced:
        call(replay(NOT_FOUND, is_async=is_async))
    assert type(traced.value) is type(plain.value)
    assert traced.value.status_code == plain.value.status_code == 404
    assert str(traced.value) == str(plain.value)
    assert traced.value.body == plain.value.body
    span = instrumented.one_span()
    assert span.attributes[A.HTTP_RESPONSE_STATUS_CODE] == 404 and payi_event(span)["http_status_code"] == 404
    assert span.attributes[A.ERROR_TYPE] == "openai.NotFoundError"
    assert A.PAYI_FAILURE_DESCRIPTION not in span.attributes


def test_connection_error_gets_failure_description(instrumented):
    def refuse(request):
        raise http.ConnectError("connection refused", request=request)

    client = openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=0,
                           http_client=http.Client(transport=http.MockTransport(refuse)))  # fmt: skip
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = instrumented.one_span().attributes
    assert attrs[A.ERROR_TYPE] == "openai.APIConnectionError"
    assert A.PAYI_HTTP_STATUS_CODE not in attrs
    assert attrs[A.PAYI_FAILURE_DESCRIPTION].startswith("openai.APIConnectionError")


# --- metrics -----------------------------------------------------------------------------------------
def test_metrics_use_semconv_buckets_and_no_business_keys(instrumented):
    client = replay(CHAT)
    with track_context(user_id="u-1", request_tags=["t"]):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (duration,) = instrumented.metric_points("gen_ai.client.operation.duration")
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    allowed = {A.GEN_AI_OPERATION_NAME, A.GEN_AI_PROVIDER_NAME, A.GEN_AI_REQUEST_MODEL, A.GEN_AI_RESPONSE_MODEL,
               A.SERVER_ADDRESS, A.SERVER_PORT, A.ERROR_TYPE}  # fmt: skip
    assert set(duration.attributes) <= allowed
    assert duration.attributes[A.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in instrumented.metric_points("gen_ai.client.token.usage")}
    assert tuple(tokens["input"].explicit_bounds) == TOKEN_BUCKETS
    assert tokens["input"].sum == CHAT.json()["usage"]["prompt_tokens"]
    assert tokens["output"].sum == CHAT.json()["usage"]["completion_tokens"]
    assert set(tokens["input"].attributes) <= allowed | {"gen_ai.token.type"}
    assert instrumented.one_span().attributes[A.PAYI_USER_ID] == "u-1"


def test_a_forked_worker_records_its_own_metrics_and_not_the_parents(instrumented, tmp_path):
    """A pre-fork server's worker: the measurements queued in the parent at the fork are the parent's to record
    (the worker drops its copy, or each call would count in both processes), and the worker's own calls are
    recorded by a drain thread of its own, without waiting for a collection."""
    replay(CHAT).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # queued in the parent at the fork
    report = tmp_path / "worker.json"

    def queued() -> int:
        return sum(len(m._pending) for m in call_metrics._instances)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            inherited = queued()
            for _ in range(3):
                replay(CHAT).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            deadline = time.monotonic() + 5.0
            while queued() and time.monotonic() < deadline:
                time.sleep(0.02)
            left = queued()  # read before any collection, which would record them itself
            threads = [t.name for t in threading.enumerate()]
            report.write_text(json.dumps({"inherited": inherited, "left": left, "threads": threads}))
        except BaseException as exc:
            report.write_text(json.dumps({"error": repr(exc)}))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    worker = json.loads(report.read_text())
    assert "error" not in worker, worker
    assert worker["inherited"] == 0
    assert worker["left"] == 0, "the worker's measurements were not recorded within 5 s"
    assert "payi-otel-metrics" in worker["threads"]
    (duration,) = instrumented.metric_points("gen_ai.client.operation.duration")
    assert duration.count == 1  # the parent's own call, once


def test_a_caller_that_starves_the_metrics_thread_keeps_the_queue_bounded_and_the_metrics_exact():
    """A caller that never lets the background thread run (here: the interpreter lock held throughout, as a busy
    caller whose SDK drops it only for an instant can do) must not grow the queue of measurements without bound:
    beyond MAX_PENDING it records the oldest itself, and every measurement is still recorded once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    recorder = call_metrics.CallMetrics(MeterProvider(metric_readers=[reader]).get_meter("starved"))
    key = ("chat", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "api.openai.com", 443, None)
    calls = 3 * call_metrics.MAX_PENDING
    longest = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)  # no forced switch: the drain thread cannot take the lock during the loop
    try:
        for i in range(calls):
            recorder.queue((key, 0.25, 10 + i % 7, 3))
            longest = max(longest, len(recorder._pending))
    finally:
        sys.setswitchinterval(interval)
    assert longest <= call_metrics.MAX_PENDING + 1
    points = {
        (metric.name, point.attributes.get("gen_ai.token.type")): point
        for rm in reader.get_metrics_data().resource_metrics  # collecting drains what is pending
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in getattr(metric.data, "data_points", ())
    }
    assert points["gen_ai.client.operation.duration", None].count == calls
    assert points["gen_ai.client.token.usage", "input"].sum == sum(10 + i % 7 for i in range(calls))
    assert points["gen_ai.client.token.usage", "output"].count == calls


def test_a_collections_drain_waits_for_measurements_another_drainer_holds():
    """A drainer pops a chunk of measurements under the lock and records them; a collection's drain that finds the
    queue empty meanwhile must wait for that chunk, or the histograms it reads would be short of them."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    recorder = call_metrics.CallMetrics(MeterProvider(metric_readers=[reader]).get_meter("held"))
    recorder.queue((("chat", "openai", "gpt-4o-mini", None, None, None, None), 0.5, 12, 5))
    collection = threading.Thread(target=recorder.drain)
    with recorder._lock:  # another drainer, mid-chunk: the queue is empty, its measurement not yet recorded
        held = recorder._pending.popleft()
        collection.start()
        collection.join(0.3)
        returned_early = not collection.is_alive()
        recorder._pending.appendleft(held)
        recorder._record_oldest()
    collection.join(5.0)
    assert not returned_early, "the collection's drain returned while another drainer held a measurement"
    (point,) = [
        p
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "gen_ai.client.operation.duration"
        for p in metric.data.data_points
    ]
    assert point.count == 1


# --- content capture ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value, captured", [("true", True), ("SPAN_ONLY", True), ("span_and_event", True),
                                             ("", False), ("NO_CONTENT", False), ("EVENT_ONLY", False)])  # fmt: skip
def test_content_capture_follows_env(value, captured, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    telemetry, instrumentor = with_instrumentation()
    try:
        replay(CHAT).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    attrs = telemetry.one_span().attributes
    if captured:
        assert json.loads(attrs[A.GEN_AI_INPUT_MESSAGES]) == [
            {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in MESSAGES
        ]
        output = json.loads(attrs[A.GEN_AI_OUTPUT_MESSAGES])
        choice = CHAT.json()["choices"][0]
        assert output == [{"role": "assistant", "parts": [{"type": "text", "content": choice["message"]["content"]}],
                           "finish_reason": choice["finish_reason"]}]  # fmt: skip
    else:
        assert A.GEN_AI_INPUT_MESSAGES not in attrs and A.GEN_AI_OUTPUT_MESSAGES not in attrs


def test_content_capture_never_consumes_an_iterator():
    telemetry, instrumentor = with_instrumentation(capture_content=True)
    try:
        client = replay(CHAT)
        client.chat.completions.create(model="gpt-4o-mini", messages=iter(MESSAGES))
    finally:
        instrumentor.uninstrument()
    assert sent_json(client)["messages"] == MESSAGES
    assert A.GEN_AI_INPUT_MESSAGES not in telemetry.one_span().attributes


# --- parse(), uninstrument, entry point --------------------------------------------------------------
class Joke(BaseModel):
    setup: str
    punchline: str


@pytest.mark.parametrize("path", ["chat.completions.parse", "beta.chat.completions.parse"])
def test_parse_is_traced_once(path):
    # Some SDK versions implement one parse() by calling another wrapped method: still one span.
    recorded = Cassette.load(TRACELOOP / "openai/test_parsed_completion.yaml").interactions[0]
    telemetry, instrumentor = with_instrumentation()
    try:
        client = replay(recorded)
        parse = surface(client, path)
        body = recorded.request_body
        parsed = parse(model=body["model"], messages=body["messages"],
                       extra_body={k: v for k, v in body.items() if k not in ("model", "messages")})  # fmt: skip
    finally:
        instrumentor.uninstrument()
    assert parsed.id == recorded.json()["id"]
    attrs = telemetry.one_span().attributes
    assert attrs[A.GEN_AI_USAGE_INPUT_TOKENS] == recorded.json()["usage"]["prompt_tokens"]


def test_uninstrument_unwraps_and_cached_raw_wrappers_go_inert(telemetry):
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    client = replay(CHAT)
    cached = client.chat.completions.with_raw_response.create  # the SDK caches this per client
    instrumentor.uninstrument()
    assert "FunctionWrapper" not in type(inspect.getattr_static(Completions, "create")).__name__
    cached(model="gpt-4o-mini", messages=MESSAGES).parse()
    assert telemetry.spans() == []


def test_entry_point_is_registered():
    (ep,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "payi_openai"]
    assert ep.load() is OpenAIInstrumentor


@pytest.mark.parametrize("disabled", [False, True])
def test_zero_code_auto_instrumentation(disabled, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from opentelemetry import trace
        from _openai_helpers import client_for
        from payi_otel.testing.replay import Cassette
        interaction = Cassette.load({str(OTEL / "test_chat_completion_extra_params.yaml")!r}).interactions[0]
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        exporter = InMemorySpanExporter()
        trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
        client_for(interaction, Cassette([interaction])).chat.completions.create(
            model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
        print("SPANS", [s.name for s in exporter.get_finished_spans()])
    """)
    )
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "payi_openai" if disabled else ""
    bindir = Path(sys.executable).parent
    out = subprocess.run([str(bindir / "opentelemetry-instrument"), sys.executable, str(script)],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    expected = "SPANS []" if disabled else "SPANS ['chat gpt-4o-mini']"
    assert expected in out.stdout, out.stdout + out.stderr
