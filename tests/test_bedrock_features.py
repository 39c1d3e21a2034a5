"""Bedrock behaviour beyond the straight replay: body fallbacks per model family, the replayable
invoke_model body, image bytes, stream lifecycles, errors, clients created before instrument(),
business context, resources and their prices, long-context pricing."""

from __future__ import annotations

import contextlib
import gc
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
import botocore.exceptions
import botocore.session
import pytest
from _anthropic_helpers import catalog_threshold
from _bedrock_helpers import (  # noqa: F401 - fixtures
    CASSETTES,
    bedrock,
    boto_call,
    expected_units,
    new_client,
    replayed_client,
    span_units,
    stream_events,
    telemetry,
)
from _openai_helpers import payi_event, usage_complete
from botocore.eventstream import EventStream

from payi_otel import attributes as A
from payi_otel import track_context
from payi_otel.instrumentation.bedrock import BedrockInstrumentor, resolve
from payi_otel.service.pricing import Pricer
from payi_otel.testing.botocore_replay import BotocoreReplay, exception_frame, split_frames
from payi_otel.testing.replay import Cassette, Interaction

OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib" / "bedrock"
TRACELOOP = CASSETTES / "traceloop__openllmetry" / "bedrock"
PYDANTIC = CASSETTES / "pydantic__pydantic-ai" / "bedrock"


def first(path: Path) -> Interaction:
    return Cassette.load(path).interactions[0]


def run(interaction: Interaction):
    method, kwargs = boto_call(interaction)
    client, _ = replayed_client(interaction)
    return getattr(client, method)(**kwargs)


def without_token_headers(interaction: Interaction) -> Interaction:
    headers = tuple((k, v) for k, v in interaction.headers if not k.lower().startswith("x-amzn-bedrock-"))
    return replace(interaction, headers=headers)


# --- invoke_model without the billed-count headers: each family's body ------------------------------
def _n(value) -> int:
    return int(value or 0)


# file -> the units its body reports, read with that family's own field names
BODY_FAMILIES = {
    OTEL / "test_invoke_model_no_content[amazon.titan].yaml": lambda b: {
        "text.input": _n(b["inputTextTokenCount"]), "text.output": sum(_n(r["tokenCount"]) for r in b["results"])},
    OTEL / "test_invoke_model_no_content[meta.llama].yaml": lambda b: {
        "text.input": b["prompt_token_count"], "text.output": b["generation_token_count"]},
    OTEL / "test_invoke_model_no_content[amazon.nova].yaml": lambda b: {
        "text.input": b["usage"]["inputTokens"], "text.output": b["usage"]["outputTokens"]},
    OTEL / "test_invoke_model_no_content[anthropic.claude].yaml": lambda b: {
        "text.input": b["usage"]["input_tokens"], "text.output": b["usage"]["output_tokens"]},
    TRACELOOP / "test_ai21_j2_completion_string_content.yaml": lambda b: {
        "text.input": len(b["prompt"]["tokens"]),
        "text.output": sum(len(c["data"]["tokens"]) for c in b["completions"])},
    TRACELOOP / "test_imported_model_completion.yaml": lambda b: {
        "text.input": b["usage"]["prompt_tokens"], "text.output": b["usage"]["completion_tokens"]},
    PYDANTIC / "TestBedrock.test_titan_v2_with_dimensions.yaml": lambda b: {"text.input": b["inputTextTokenCount"]},
}  # fmt: skip


@pytest.mark.parametrize("path", list(BODY_FAMILIES), ids=lambda p: p.name)
def test_invoke_body_usage_when_headers_are_absent(path, bedrock):
    interaction = without_token_headers(first(path))
    run(interaction)["body"].read()
    event = payi_event(bedrock.one_span())
    expected = {k: v for k, v in BODY_FAMILIES[path](interaction.json()).items() if v}
    assert span_units(event) == expected
    assert usage_complete(event)


def test_anthropic_body_cache_counts_without_headers(bedrock):
    for interaction in Cassette.load(TRACELOOP / "test_prompt_cache.yaml").interactions:
        run(without_token_headers(interaction))
        u = interaction.json()["usage"]
        expected = {"text.input": u["input_tokens"], "text.output": u["output_tokens"],
                    "text_cache_write.input": u["cache_creation_input_tokens"],
                    "text_cache_read.input": u["cache_read_input_tokens"]}  # fmt: skip
        assert span_units(payi_event(bedrock.spans()[-1])) == {k: v for k, v in expected.items() if v}


@pytest.mark.parametrize("name", ["test_invoke_model_no_content[cohere.command].yaml",
                                  "test_invoke_model_no_content[mistral.mistral].yaml"])  # fmt: skip
def test_families_without_body_usage_use_headers_or_say_so(name, bedrock):
    interaction = first(OTEL / name)
    h = {k.lower(): int(v) for k, v in interaction.headers if k.lower().endswith("token-count")}
    run(interaction)
    assert span_units(payi_event(bedrock.spans()[-1])) == {
        "text.input": h["x-amzn-bedrock-input-token-count"],
        "text.output": h["x-amzn-bedrock-output-token-count"],
    }
    run(without_token_headers(interaction))  # no headers and nothing in the body: flagged, never a guess
    event = payi_event(bedrock.spans()[-1])
    assert not usage_complete(event) and span_units(event) == {}


# --- the body the caller reads ----------------------------------------------------------------------
def test_invoke_body_is_replayable_in_chunks_lines_and_whole(bedrock):
    interaction = first(OTEL / "test_invoke_model_no_content[anthropic.claude].yaml")
    chunks = []
    body = run(interaction)["body"]
    while chunk := body.read(7):
        chunks.append(chunk)
    assert b"".join(chunks) == interaction.body and max(map(len, chunks)) == 7
    assert list(run(interaction)["body"].iter_lines()) == interaction.body.splitlines()
    with run(interaction)["body"] as whole:
        assert whole.read() == interaction.body
    assert len(bedrock.spans()) == 3


def test_body_read_error_reaches_the_caller_from_its_own_read(bedrock):
    interaction = first(OTEL / "test_invoke_model_no_content[meta.llama].yaml")
    client = new_client()
    replay = BotocoreReplay(Cassette([interaction]))

    class Broken(Exception):
        pass

    def respond(request, **_):
        response = replay.respond(request, replay.next_for("POST", interaction.path))
        raw = response.raw
        raw.read = lambda amt=None, **kw: (_ for _ in ()).throw(Broken("connection reset"))
        return response

    client.meta.events.register("before-send", respond)
    response = client.invoke_model(**boto_call(interaction)[1])  # the call itself returns as without us
    with pytest.raises(Broken):
        response["body"].read()
    span = bedrock.one_span()
    assert span.status.status_code.name == "ERROR" and span.attributes[A.ERROR_TYPE].endswith("Broken")


def test_image_bytes_in_requests_with_content_capture(telemetry):
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, capture_content=True, skip_dep_check=True)
    try:
        interaction = next(i for i in Cassette.load(PYDANTIC / "test_image_url_input.yaml").interactions
                           if "/model/" in i.path)  # fmt: skip
        image = boto_call(interaction)[1]["messages"][0]["content"][1]["image"]["source"]["bytes"]
        assert isinstance(image, bytes) and len(image) > 1000
        response = run(interaction)
        assert response["output"]["message"]["content"][0]["text"].startswith("The image shows a potato")
        span = telemetry.one_span()
        captured = span.attributes[A.GEN_AI_INPUT_MESSAGES]
        assert f"<{len(image)} bytes>" in captured and len(captured) < 2000
        assert span_units(payi_event(span)) == expected_units("converse", interaction)
    finally:
        instrumentor.uninstrument()


# --- streams: every lifecycle ends the span once, with the usage seen -------------------------------
STREAMS = {
    "converse_stream": TRACELOOP / "test_meta_converse_stream.yaml",
    "invoke_model_with_response_stream": (
        OTEL / "test_invoke_model_with_response_stream_no_content[anthropic.claude].yaml"
    ),
}
KEYS = {"converse_stream": "stream", "invoke_model_with_response_stream": "body"}


def _open_stream(method: str):
    interaction = first(STREAMS[method])
    method_name, kwargs = boto_call(interaction)
    client, replay = replayed_client(interaction)
    return interaction, getattr(client, method_name)(**kwargs)[KEYS[method]], replay


@pytest.mark.parametrize("method", list(STREAMS))
def test_stream_full(method, bedrock):
    interaction, stream, _ = _open_stream(method)
    events = list(stream)
    assert len(events) == len(stream_events(interaction))
    span = bedrock.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "completed"
    assert span_units(payi_event(span)) == expected_units(method, interaction)


@pytest.mark.parametrize("how", ["break_close", "close_first", "gc"])
@pytest.mark.parametrize("method", list(STREAMS))
def test_stream_ended_early(method, how, bedrock):
    interaction, stream, replay = _open_stream(method)
    if how == "break_close":
        for _ in stream:
            break
        stream.close()
        assert replay.raws[-1].closed
    elif how == "close_first":
        stream.close()
    else:
        iterator = iter(stream)
        next(iterator)
        del stream, iterator
        gc.collect()
    span = bedrock.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == ("abandoned" if how == "gc" else "closed_early")
    event = payi_event(span)
    assert not usage_complete(event)  # the final usage event never arrived
    if method == "invoke_model_with_response_stream" and how != "close_first":
        # Anthropic's message_start said how many input tokens were billed: kept, flagged partial.
        start = stream_events(interaction)[0]["payload"]["message"]["usage"]
        assert span_units(event).get("text.input") == start["input_tokens"]


@pytest.mark.parametrize("method", list(STREAMS))
def test_stream_events_identical_to_uninstrumented(method, telemetry):
    _, stream, _ = _open_stream(method)
    plain = list(stream)
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, skip_dep_check=True)
    try:
        _, stream, _ = _open_stream(method)
        assert list(stream) == plain
        assert isinstance(stream, EventStream)
    finally:
        instrumentor.uninstrument()


def test_stream_error_mid_stream_is_a_429_and_reraised(bedrock):
    interaction = first(STREAMS["converse_stream"])
    frames = split_frames(interaction.body)
    broken = replace(interaction, body=b"".join(frames[:3]) + exception_frame("throttlingException", "slow down"))
    client, _ = replayed_client(broken)
    stream = client.converse_stream(**boto_call(broken)[1])["stream"]
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        for event in stream:
            seen.append(event)
    assert len(seen) == 3
    span = bedrock.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "error"
    assert span.attributes[A.ERROR_TYPE] == "botocore.exceptions.EventStreamError"
    assert payi_event(span)["http_status_code"] == 429
    assert caught.value.response["Error"]["Code"] == "throttlingException"


def test_invoke_stream_served_frame_by_frame(bedrock):
    interaction, stream, replay = _open_stream("invoke_model_with_response_stream")
    iterator = iter(stream)
    next(iterator)
    assert replay.raws[-1].frames_served == 1  # nothing read ahead of the caller
    list(iterator)
    assert replay.raws[-1].frames_served == len(split_frames(interaction.body))


# --- errors -----------------------------------------------------------------------------------------
def _error_interaction(status: int, code: str, message: str) -> Interaction:
    base = first(OTEL / "test_converse_with_invalid_model.yaml")
    headers = (("Content-Type", "application/json"), ("x-amzn-RequestId", "req-429-test"),
               ("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"))  # fmt: skip
    return replace(base, status=status, headers=headers, body=json.dumps({"message": message}).encode())


def test_throttling_is_a_429_with_the_request_id(bedrock):
    interaction = _error_interaction(429, "ThrottlingException", "Too many requests, please wait")
    client, _ = replayed_client(interaction)
    with pytest.raises(client.exceptions.ThrottlingException) as caught:
        client.converse(**boto_call(interaction)[1])
    assert caught.value.response["Error"]["Message"] == "Too many requests, please wait"
    event = payi_event(bedrock.one_span())
    assert event["http_status_code"] == 429 and event["provider_response_id"] == "req-429-test"


def test_client_error_is_reraised_unchanged(bedrock, telemetry):
    interaction = first(OTEL / "test_converse_with_invalid_model.yaml")
    errors = []
    for instrumented in (True, False):
        if not instrumented:
            BedrockInstrumentor().uninstrument()
        client, _ = replayed_client(interaction)
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            client.converse(**boto_call(interaction)[1])
        errors.append((type(caught.value), caught.value.response))
    assert errors[0][0] is errors[1][0]
    strip = lambda r: {k: v for k, v in r.items() if k != "ResponseMetadata"}  # noqa: E731
    assert strip(errors[0][1]) == strip(errors[1][1])


# --- clients, context, resources ----------------------------------------------------------------------
def test_clients_created_before_and_after_instrument(telemetry):
    interaction = first(TRACELOOP / "test_meta_converse.yaml")
    before, _ = replayed_client(interaction, interaction)
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, skip_dep_check=True)
    try:
        after, _ = replayed_client(interaction)
        plain = BotocoreReplay(Cassette([interaction])).attach(
            botocore.session.get_session().create_client(
                service_name="bedrock-runtime", region_name="eu-west-1",
                aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
            )
        )  # fmt: skip
        kwargs = boto_call(interaction)[1]
        before.converse(**kwargs)
        after.converse(**kwargs)
        plain.converse(**kwargs)
        assert len(telemetry.spans()) == 3  # each client once, not twice
        assert telemetry.spans()[2].attributes[A.SERVER_ADDRESS] == "bedrock-runtime.eu-west-1.amazonaws.com"
    finally:
        instrumentor.uninstrument()
    before.converse(**kwargs)
    assert len(telemetry.spans()) == 3


def test_business_context_is_read_in_the_callers_context(bedrock):
    interaction = first(TRACELOOP / "test_meta_converse_stream.yaml")
    client, _ = replayed_client(interaction)
    with track_context(use_case_name="bedrock-chat", user_id="jane"):
        stream = client.converse_stream(**boto_call(interaction)[1])["stream"]
    list(stream)  # consumed outside the block: the call still belongs to jane
    attrs = bedrock.one_span().attributes
    assert attrs[A.PAYI_USER_ID] == "jane" and attrs[A.PAYI_USE_CASE_NAME] == "bedrock-chat"


def test_other_operations_and_services_are_not_traced(bedrock):
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, body: bytes) -> None:
            self.body = body

        def stream(self, **_):
            yield self.body

    count_tokens = b'{"inputTokens": 23}'
    buckets = b"<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>"
    runtime = new_client()
    answer = lambda body: lambda request, **_: AWSResponse(request.url, 200, {}, Raw(body))  # noqa: E731
    runtime.meta.events.register("before-send", answer(count_tokens))
    assert runtime.count_tokens(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                input={"converse": {"messages": []}})["inputTokens"] == 23  # fmt: skip
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
    s3.meta.events.register("before-send", answer(buckets))
    assert s3.list_buckets()["Buckets"] == []
    assert bedrock.spans() == []


@pytest.mark.parametrize(("model_id", "resource", "scope"), [
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0", None),
    ("us.anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0", "datazone.us"),
    ("eu.amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0", "datazone.eu"),
    ("apac.amazon.nova-micro-v1:0", "amazon.nova-micro-v1:0", "datazone.apac"),
    ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0", "datazone.us-gov"),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0", "global"),
    ("arn:aws:bedrock:us-east-1:012345678901:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
     "anthropic.claude-3-7-sonnet-20250219-v1:0", "datazone.us"),
    ("arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-70b-instruct-v1:0",
     "meta.llama3-70b-instruct-v1:0", None),
    ("arn:aws:bedrock:us-east-1:012345678901:application-inference-profile/abc123",
     "arn:aws:bedrock:us-east-1:012345678901:application-inference-profile/abc123", None),
    ("arn:aws:sagemaker:us-east-1:7673980023:endpoint/x", "arn:aws:sagemaker:us-east-1:7673980023:endpoint/x", None),
])  # fmt: skip
def test_model_ids_resolve_to_the_priced_model(model_id, resource, scope):
    assert resolve(model_id) == (resource, scope)


def test_resolved_recorded_models_are_priced_by_the_local_service():
    """Every model of the recordings that genai-prices knows is priced under the resolved resource; a
    global profile gets the global price, which differs from the in-region one."""
    from _bedrock_helpers import cassette_files, is_bedrock

    pricer = Pricer()
    when = datetime(2025, 11, 1, tzinfo=UTC)
    units = {"text": {"input": 1000, "output": 1000}}
    priced, unpriced = set(), set()
    for path in cassette_files():
        for interaction in Cassette.load(path).interactions:
            if is_bedrock(interaction) and interaction.status == 200:
                model = boto_call(interaction)[1]["modelId"]
                resource, scope = resolve(model)
                (priced if pricer.price("system.aws.bedrock", resource, units, when, scope).priced else unpriced).add(
                    resource
                )
    assert {"anthropic.claude-3-7-sonnet-20250219-v1:0", "amazon.nova-lite-v1:0", "meta.llama3-70b-instruct-v1:0",
            "openai.gpt-oss-120b-1:0", "mistral.pixtral-large-2502-v1:0",
            "amazon.titan-text-express-v1"} <= priced  # fmt: skip
    # Unpriced: models genai-prices has no AWS price for (retired or per-request priced ones).
    assert unpriced <= {"anthropic.claude-v2", "anthropic.claude-v2:1", "cohere.command-r-v1:0",
                        "cohere.command-light-text-v14", "cohere.command-text-v14", "cohere.embed-english-v3",
                        "cohere.embed-multilingual-v3", "cohere.embed-v4:0", "amazon.nova-2-multimodal-embeddings-v1:0",
                        "amazon.nova-2-lite-v1:0", "ai21.j2-mid-v1", "meta.llama2-13b-chat-v1",
                        "arn:aws:sagemaker:us-east-1:767398002385:endpoint/endpoint-quick-start-idr7y",
                        "anthropic.claude-sonnet-4-20250514-v1:0"}, unpriced  # fmt: skip
    model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    regional = pricer.price("system.aws.bedrock", model, units, when, "datazone.us")
    global_ = pricer.price("system.aws.bedrock", model, units, when, "global")
    assert regional.priced and global_.priced and global_.total_cost != regional.total_cost


def test_instrument_covers_bedrock(telemetry):
    from payi_otel import configure, instrument

    assert "payi_bedrock" in configure.available_instrumentors()
    interaction = first(TRACELOOP / "test_meta_converse.yaml")
    handle = instrument(tracer_provider=telemetry.tracer_provider, exporter=False, use_case_name="",
                        instruments={"payi_bedrock"})  # fmt: skip
    try:
        assert set(handle.instrumentors) == {"payi_bedrock"}
        run(interaction)
        assert span_units(payi_event(telemetry.one_span())) == expected_units("converse", interaction)
    finally:
        handle.uninstrument()
    run(interaction)
    assert len(telemetry.spans()) == 1


TOOL_STREAMS = sorted(CASSETTES.glob("*/bedrock/*with_response_stream_no_content_tool_call*.yaml"))


def _tool_name(payload: dict) -> str | None:
    """The tool a recorded chunk starts (Anthropic ``content_block_start`` or Nova ``contentBlockStart``)."""
    block = payload.get("content_block") or {}
    if payload.get("type") == "content_block_start" and block.get("type") == "tool_use":
        return block["name"]
    return ((payload.get("contentBlockStart") or {}).get("start") or {}).get("toolUse", {}).get("name")


def _tool_input(payload: dict) -> str | None:
    """The tool-input piece a recorded chunk carries, if any."""
    if (payload.get("delta") or {}).get("partial_json"):
        return payload["delta"]["partial_json"]
    return ((payload.get("contentBlockDelta") or {}).get("delta") or {}).get("toolUse", {}).get("input")


@pytest.mark.parametrize("path", TOOL_STREAMS, ids=[p.stem for p in TOOL_STREAMS])
def test_invoke_stream_left_inside_a_tool_call_keeps_what_arrived(path, bedrock):
    """Leaving an invoke stream part way through a tool call's arguments: the call is recorded with that
    tool and the arguments that arrived (as they arrived when not JSON yet), the span ends once, incomplete."""
    interaction = first(path)
    _, kwargs = boto_call(interaction)
    client, _ = replayed_client(interaction)
    stream = client.invoke_model_with_response_stream(**kwargs)["body"]
    payloads = [e["payload"] for e in stream_events(interaction)]
    start = next(i for i, p in enumerate(payloads) if _tool_name(p))
    piece = next(i for i in range(start + 1, len(payloads)) if _tool_input(payloads[i]))
    for index, _ in enumerate(stream):
        if index == piece:
            break
    stream.close()
    span = bedrock.one_span()
    assert span.attributes[A.PAYI_STREAM_OUTCOME] == "closed_early"
    arrived = _tool_input(payloads[piece])
    with contextlib.suppress(ValueError):
        arrived = json.dumps(json.loads(arrived), separators=(",", ":"))
    assert json.loads(span.attributes[A.PAYI_FUNCTION_CALLS]) == [{"name": _tool_name(payloads[start]),
                                                                    "arguments": arrived}]  # fmt: skip
    assert not usage_complete(payi_event(span))


@pytest.mark.parametrize(("value", "expected"), [
    (37, 37), (0, 0), (28.0, 28), ("12", 12), (" 7 ", 7), (True, None), (False, None), (None, None),
    ("n/a", None), ([1], None),
])  # fmt: skip
def test_token_counts_accept_ints_floats_and_numeric_strings_only(value, expected):
    from payi_otel.instrumentation.bedrock._usage import count, tokens

    assert count(value) == expected
    usage = tokens(value, 5)
    assert usage is not None and usage.input_tokens == (expected or 0) and usage.output_tokens == 5
    assert tokens(value, None) is None if expected is None else tokens(value, None).input_tokens == expected


def test_token_counts_add_cache_reads_and_writes_to_the_input():
    from payi_otel.instrumentation.bedrock._usage import tokens

    plain = tokens(10, 4)
    assert (plain.input_tokens, plain.output_tokens, plain.cache_read_tokens, plain.cache_write_tokens) == (10, 4, 0, 0)
    cached = tokens("10", 4, 3, 5.0, 2)  # a header string, a float: read as counts too
    assert (cached.input_tokens, cached.cache_read_tokens, cached.cache_write_tokens,
            cached.cache_write_1h_tokens) == (18, 3, 3, 2)  # fmt: skip


def test_the_cached_request_side_fills_the_call_records_leading_fields_in_order():
    """A Bedrock call builds its CallRecord positionally from the request side it shares with calls of the same
    client, model and operation (OpenAI and Anthropic calls pass the same leading fields positionally too): the
    record's fields must start with exactly those names."""
    from payi_otel.core import CallRecord
    from payi_otel.record import REQUEST_FIELDS

    assert tuple(CallRecord.__dataclass_fields__)[: len(REQUEST_FIELDS)] == REQUEST_FIELDS


# --- long context: a prompt above the model's threshold is priced at long-context rates -----------------
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"  # priced per prompt size by the catalog


def _as_sonnet(interaction: Interaction, operation: str, body: bytes, headers: tuple[tuple[str, str], ...]):
    path = f"/model/{SONNET.replace(':', '%3A')}/{operation}"
    return replace(interaction, path=path, uri=interaction.uri.split("/model/")[0] + path, body=body, headers=headers)


@pytest.mark.parametrize("over", [False, True], ids=["at the threshold", "above it"])
def test_converse_prompt_above_the_threshold_is_large_context(over, bedrock):
    threshold = catalog_threshold("claude-sonnet-4-5")
    assert threshold == 200_000
    recorded = first(TRACELOOP / "test_meta_converse.yaml")
    body = recorded.json()
    # The prompt the threshold is compared with: input + cache reads + cache writes.
    cache_read, cache_write = 150_000, 10_000
    body["usage"] = {"inputTokens": threshold - cache_read - cache_write + over, "outputTokens": 30,
                     "cacheReadInputTokens": cache_read, "cacheWriteInputTokens": cache_write}  # fmt: skip
    interaction = _as_sonnet(recorded, "converse", json.dumps(body).encode(), recorded.headers)
    response = run(interaction)
    assert response["usage"] == body["usage"]  # the caller's response is untouched
    suffix = "_large_context" if over else ""
    event = payi_event(bedrock.one_span())
    assert event["resource"] == "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert span_units(event) == {
        f"text{suffix}.input": threshold - cache_read - cache_write + over,
        f"text{suffix}.output": 30,
        f"text_cache_read{suffix}.input": cache_read,
        f"text_cache_write{suffix}.input": cache_write,
    }


def test_invoke_billed_counts_above_the_threshold_are_large_context(bedrock):
    recorded = first(OTEL / "test_invoke_model_no_content[anthropic.claude].yaml")
    headers = tuple(
        (k, "250000" if k == "X-Amzn-Bedrock-Input-Token-Count" else v) for k, v in recorded.headers
    )  # the billed counts in the headers decide, whatever the body says
    interaction = _as_sonnet(recorded, "invoke", recorded.body, headers)
    response = run(interaction)
    assert json.loads(response["body"].read()) == recorded.json()
    event = payi_event(bedrock.one_span())
    assert span_units(event) == {"text_large_context.input": 250_000, "text_large_context.output": 10}
