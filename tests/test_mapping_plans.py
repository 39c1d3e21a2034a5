"""The fast forms of the OTLP conversion give exactly what their plain forms give, over generated input.

* The mapping reads each span through a plan worked out once per key set (``key_plans``); it must give
  the event the plain reading of every rule gives (``mapping_reference``), for any attributes: this
  project's, util-genai's, OpenLLMetry's current and older spellings, OpenInference's, anything else.
* OTLP/JSON attribute pieces holding a plain string or int are read in one regular-expression match;
  they must decode to what the general split gives, and a piece either refuses must be refused by both.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mapping_reference import reference_event_from_view
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from payi_otel import attributes as A
from payi_otel.exporters import SpanView, event_from_view
from payi_otel.exporters.otlp_json import _JsonKeyValues
from payi_otel.exporters.otlp_proto import _KeyValues, view_from_otlp_proto
from payi_otel.exporters.views import MAPPED_NAMES

# Every name the mapping reads, its older spellings, prefixed names (valid and not) and names it never reads.
_NAMES = sorted(
    {
        *(value for name, value in vars(A).items() if name.isupper() and isinstance(value, str)),
        *(old for olds in A.LEGACY.values() for old in olds),
        "payi.units.text.input",
        "payi.units.text.output",
        "payi.units.vision.input",
        "payi.units.text_cache_read.input",
        "payi.units.bad",
        "payi.units.text.sideways",
        "payi.request_properties.ticket",
        "payi.request_properties.system.usage_incomplete",
        "payi.use_case_properties.tier",
        "http.request.method",
        "app.feature_flag.0",
    }
)
_WORDS = st.sampled_from(
    [
        "chat",
        "Chat",
        "embeddings",
        "invoke_agent",
        "llm",
        "LLM",
        "EMBEDDING",
        "openai",
        "Anthropic",
        "azure",
        "aws",
        "gcp.gemini",
        "system.openai",
        "system.anthropic",
        "gpt-4o-mini",
        "GPT-4o",
        "my.openai.azure.com",
        "api.openai.com",
        "true",
        "false",
        "True",
        "12",
        "-3",
        "x" * 40,
        "",
        "a,b, ,c",
        "builtins.TimeoutError",
        '[{"role":"assistant","parts":[{"type":"tool_call","name":"f","arguments":{"a":1}}]}]',
        '[{"parts":[{"type":"tool_call","id":"srvtoolu_1","name":"web_search"}]}]',
        '[{"name":"g","arguments":"{}"}]',
        "not json",
    ]
)
_VALUES = st.one_of(
    _WORDS,
    st.sampled_from([0, 1, -1, 200, 404, 2**63 - 1, 2**63]),  # edges of counts, statuses and versions
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=0, max_value=5000),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=100),
    st.tuples(_WORDS),
    st.lists(_WORDS, max_size=3).map(tuple),
    st.none(),
    st.text(max_size=8),
)


_MESSAGES = st.sampled_from(
    [
        '[{"role":"assistant","parts":[{"type":"tool_call","name":"f","arguments":{"a":1}}]}]',
        '[{"parts":[{"type":"tool_call","id":"srvtoolu_1","name":"web_search"}]}]',
        '[{"parts":[{"type":"tool_call","id":"c1","name":"lookup","arguments":"{}"},{"type":"text"}]}]',
        '[{"parts":[{"type":"text","content":"hi"}]}]',
        '[{"name":"g","arguments":"{}"}]',
        "not json",
        "",
    ]
)
_COUNTS = st.one_of(
    st.integers(min_value=-5, max_value=5000),
    st.sampled_from([0, 2**63 - 1, 2**63, "120", "x", True, 1.5, None, ("1",)]),
)
# Keys whose values matter most, with the values that reach their rules; other keys draw from _VALUES.
_VALUES_BY_KEY: dict[str, Any] = {
    A.GEN_AI_OUTPUT_MESSAGES: _MESSAGES,
    A.GEN_AI_INPUT_MESSAGES: _MESSAGES,
    A.PAYI_FUNCTION_CALLS: _MESSAGES,
    A.PAYI_USE_CASE_VERSION: st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, "7", "v1", True]),
    A.PAYI_USAGE_COMPLETE: st.sampled_from([True, False, "true", "False", "no", 1]),
    A.SERVER_ADDRESS: st.sampled_from(["my.openai.azure.com", "x.services.ai.azure.com", "api.openai.com", 5]),
    A.ERROR_TYPE: st.sampled_from(["builtins.TimeoutError", "", "500", None]),
}
_VALUES_BY_KEY.update(
    {name: _COUNTS for name in _NAMES if any(w in name for w in ("token", "units.", "status_code", "latency", "first"))}
)

# The keys most rules read, drawn more often than the rest of _NAMES.
_FOCUS = sorted(
    {
        *_VALUES_BY_KEY,
        A.PAYI_CATEGORY,
        A.PAYI_RESOURCE,
        A.PAYI_PRICE_AS_CATEGORY,
        A.PAYI_PRICE_AS_RESOURCE,
        A.PAYI_PROXIED,
        A.PAYI_USE_CASE_NAME,
        A.PAYI_USER_ID,
        A.PAYI_LIMIT_IDS,
        A.PAYI_PROVIDER_RESPONSE_ID,
        A.PAYI_USAGE_INCOMPLETE_REASON,
        A.PAYI_FAILURE_DESCRIPTION,
        A.GEN_AI_RESPONSE_ID,
        A.GEN_AI_REQUEST_MODEL,
        A.GEN_AI_RESPONSE_MODEL,
        A.LLM_REQUEST_TYPE,
        A.OPENINFERENCE_SPAN_KIND,
        "payi.request_properties.ticket",
        "payi.use_case_properties.tier",
    }
)


@st.composite
def _views(draw: st.DrawFn) -> SpanView:
    keys = draw(st.lists(st.sampled_from(_FOCUS), unique=True, min_size=2, max_size=16))
    keys += draw(st.lists(st.sampled_from(_NAMES), unique=True, max_size=8))
    attributes: dict[str, Any] = {key: draw(_VALUES_BY_KEY.get(key, _VALUES)) for key in keys}
    if draw(st.integers(0, 3)):  # most spans are provider calls: give them the attributes that make one
        attributes.setdefault(A.GEN_AI_OPERATION_NAME, "chat")
        provider = draw(st.sampled_from(["gen_ai.provider.name", "gen_ai.system", "llm.provider"]))
        attributes.setdefault(provider, "openai")
    start = draw(st.integers(min_value=0, max_value=2**62))
    return SpanView(
        "span",
        start,
        start + draw(st.integers(min_value=-(10**9), max_value=10**12)),
        attributes,
        draw(st.booleans()),
        draw(st.one_of(st.none(), st.text(max_size=8))),
        draw(st.integers(min_value=0, max_value=2**128 - 1)),
        draw(st.integers(min_value=0, max_value=2**64 - 1)),
        draw(st.integers(min_value=0, max_value=2**64 - 1)),
        draw(st.sampled_from([{}, {"service.name": "billing", "ticket": "from-resource"}])),
    )


def _outcome(convert: Any, view: SpanView, include_content: bool) -> tuple[str, Any]:
    try:
        return "event", convert(view, include_content=include_content)
    except Exception as exc:  # both forms must fail alike, too
        return "error", type(exc)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_views(), st.booleans())
def test_planned_mapping_gives_the_plain_mappings_event(view: SpanView, include_content: bool) -> None:
    expected = _outcome(reference_event_from_view, view, include_content)
    assert _outcome(event_from_view, view, include_content) == expected
    assert _outcome(event_from_view, view, include_content) == expected  # the plan of these keys, now kept


def test_plan_reads_the_spelling_present_whatever_the_key_order() -> None:
    legacy = {
        "llm.request.type": "chat",
        "gen_ai.system": "Anthropic",
        "llm.usage.prompt_tokens": 120,
        "gen_ai.usage.completion_tokens": 30,
        "gen_ai.request.model": "claude-3-5-haiku",
    }
    for attributes in (legacy, dict(reversed(legacy.items()))):
        view = SpanView("span", 1, 2, attributes, False, None, 1, 2)
        event = event_from_view(view)
        assert event == reference_event_from_view(view)
        assert event is not None and event["units"] == {"text": {"input": 120, "output": 30}}
        assert event["category"] == A.PROVIDER_CATEGORIES["anthropic"]


# --- OTLP/JSON attribute pieces ---------------------------------------------------------------------

_KEYS = st.one_of(
    st.sampled_from(["gen_ai.response.id", "gen_ai.usage.input_tokens", "payi.user_id", "http.route", ""]),
    st.text(max_size=12),
)


def _json_value(value: Any, ascii_only: bool) -> bytes:
    if isinstance(value, bool):
        body: Any = {"boolValue": value}
    elif isinstance(value, int):
        body = {"intValue": str(value)}
    elif isinstance(value, float):
        body = {"doubleValue": value}
    else:
        body = {"stringValue": value}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=ascii_only).encode()


@st.composite
def _pieces(draw: st.DrawFn) -> bytes:
    ascii_only = draw(st.booleans())
    key = json.dumps(draw(_KEYS), ensure_ascii=ascii_only)[1:-1].encode()
    value = draw(st.one_of(st.text(max_size=16), st.integers(), st.booleans(), st.floats(allow_nan=False)))
    piece = key + b'","value":' + _json_value(value, ascii_only)
    damage = draw(st.sampled_from(["none", "none", "cut", "extra", "bad-utf8", "number-int", "leading-zero"]))
    if damage == "cut":
        piece = piece[: draw(st.integers(min_value=0, max_value=len(piece)))]
    elif damage == "extra":
        piece += draw(st.sampled_from([b"}", b" ", b'"', b',"x":1']))
    elif damage == "bad-utf8":
        piece = piece.replace(b'stringValue":"', b'stringValue":"\xff', 1)
    elif damage == "number-int":
        piece = piece.replace(b'intValue":"', b'intValue":', 1).replace(b'"}', b"}", 1)
    elif damage == "leading-zero":
        piece = piece.replace(b'intValue":"', b'intValue":"00', 1)
    return piece


def _decoded(read: Any, piece: bytes) -> tuple[str, Any]:
    try:
        return "pair", read(piece)
    except ValueError:  # not a piece of the compact form: the whole list is then decoded by msgspec
        return "refused", None


@settings(max_examples=500, deadline=None)
@given(_pieces())
def test_one_match_reads_a_json_piece_as_the_general_split_does(piece: bytes) -> None:
    assert _decoded(_JsonKeyValues().__getitem__, piece) == _decoded(_JsonKeyValues()._split, piece)


# --- OTLP protobuf attributes ---------------------------------------------------------------------

_PROTO_KEYS = st.sampled_from(
    ["gen_ai.usage.input_tokens", "payi.user_id", "llm.token_count.prompt", "server.port", "http.route", ""]
)


@st.composite
def _proto_attributes(draw: st.DrawFn) -> bytes:
    key = draw(st.one_of(_PROTO_KEYS, st.text(max_size=140)))
    kind = draw(st.sampled_from(["int", "small-int", "string", "bool", "double", "array", "bytes", "empty"]))
    value = AnyValue()
    if kind == "int":
        value.int_value = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
    elif kind == "small-int":
        value.int_value = draw(st.integers(min_value=0, max_value=20_000))
    elif kind == "string":
        value.string_value = draw(st.text(max_size=140))
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "double":
        value.double_value = draw(st.floats(allow_nan=False))
    elif kind == "array":
        value.array_value.values.add().string_value = draw(st.text(max_size=5))
    elif kind == "bytes":
        value.bytes_value = draw(st.binary(max_size=5))
    if kind == "small-int" and draw(st.booleans()) and len(key.encode()) < 128:
        # the same count in a varint one byte longer than needed (valid protobuf, unusual)
        count = value.int_value
        varint = bytearray()
        while True:
            varint.append((count & 0x7F) | 0x80)
            count >>= 7
            if not count:
                break
        varint.append(0)
        encoded_key, encoded_value = key.encode(), b"\x18" + bytes(varint)
        return b"\x0a" + bytes([len(encoded_key)]) + encoded_key + b"\x12" + bytes([len(encoded_value)]) + encoded_value
    return KeyValue(key=key, value=value).SerializeToString()


@settings(max_examples=500, deadline=None)
@given(_proto_attributes())
# a name the mapping reads outside its namespaces (Hypothesis also draws string constants from the code under test)
@example(KeyValue(key="server.port", value=AnyValue(int_value=0)).SerializeToString())
def test_a_new_protobuf_attribute_decodes_as_the_full_message_does(raw: bytes) -> None:
    kv = KeyValue.FromString(raw)
    read = kv.key.startswith(("gen_ai.", "payi.", "llm.")) or kv.key in MAPPED_NAMES
    expected = (kv.key, view_from_otlp_proto(Span(attributes=[kv])).attributes[kv.key]) if read else None
    assert _KeyValues()[raw] == expected


def _proto_attribute(key: str, value: AnyValue) -> bytes:
    return KeyValue(key=key, value=value).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["gen_ai.response.id", "payi.request_properties.ticket", "gen_ai.usage.input_tokens"]),
    st.lists(st.one_of(st.text(max_size=20), st.integers(min_value=0, max_value=2**14 + 5)), min_size=2, max_size=6),
)
def test_new_values_of_a_layout_seen_before_decode_as_the_full_message_does(key: str, values: list[Any]) -> None:
    """A new string or two-byte count whose head (tags, lengths, key, a string's length or a count's low
    byte) a previous attribute had is read from that head: the same pair the full message gives."""
    twins = [value + 128 for value in values if isinstance(value, int)]  # a count with the same low byte
    for value in [*values, *twins]:
        any_value = AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
        raw = _proto_attribute(key, any_value)
        assert _KeyValues()[raw] == (key, value)


def test_a_layout_seen_before_still_refuses_what_the_full_decoding_refuses() -> None:
    key = "gen_ai.response.id"
    first = _proto_attribute(key, AnyValue(string_value="chatcmpl-0001"))
    assert _KeyValues()[first] == (key, "chatcmpl-0001")
    bad_utf8 = first[:-1] + b"\xff"  # same head and size, not UTF-8: refused as the first reading refuses it
    with pytest.raises(UnicodeDecodeError):
        _KeyValues()[bad_utf8]
    count = _proto_attribute("gen_ai.usage.input_tokens", AnyValue(int_value=300))  # a two-byte varint
    assert _KeyValues()[count] == ("gen_ai.usage.input_tokens", 300)
    unended = count[:-1] + b"\x82"  # same head and size, the varint not ended: refused by the full decoding
    with pytest.raises(DecodeError):
        _KeyValues()[unended]
