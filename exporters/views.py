"""One small, read-only view of a finished span, whatever form it arrived in.

The mapping (:mod:`payi_otel.exporters.mapping`) reads only :class:`SpanView`, so the SDK's
``ReadableSpan``, an OTLP protobuf ``Span`` and the OTLP/JSON form of a span all convert the
same way. :func:`spans_from_otlp_request` unpacks a whole OTLP export request (the body a
collector or an OTLP exporter POSTs to ``/v1/traces``) into views.

Spans that arrive over OTLP keep only the attributes the mapping can read (see
:func:`is_mapped_attribute`); the others are skipped before their values are decoded, which
is most of the decoding cost for spans from other instrumentations.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus
from opentelemetry.trace import StatusCode

from payi_otel import attributes as A

try:  # typed OTLP/JSON decoding straight into compact objects; installed with the service extra
    import msgspec
except ImportError:  # pragma: no cover - depends on the installation
    msgspec = None

__all__ = [
    "OtlpDecodeError",
    "SpanView",
    "gc_paused",
    "is_mapped_attribute",
    "view_from_otlp_json",
    "view_from_otlp_proto",
    "view_from_readable_span",
    "spans_from_otlp_request",
]


@dataclass(slots=True)
class SpanView:
    """What the mapping needs from a finished span. Read-only by convention (not frozen: a frozen
    dataclass costs more to build than the rest of a view)."""

    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]  # values: str, bool, int, float or tuples of those
    is_error: bool  # span status is ERROR
    status_message: str | None
    trace_id: int
    span_id: int


class OtlpDecodeError(ValueError):
    """The OTLP request body cannot be decoded; the message says which part and why."""


# The mapping reads attributes named in payi_otel.attributes (and their older spellings) and whole
# namespaces by prefix (payi.units.*, payi.request_properties.*, ...).
_MAPPED_NAMESPACES = ("payi.", "gen_ai.", "llm.")
_MAPPED_NAMES = frozenset(
    chain(
        (value for name, value in vars(A).items() if name.isupper() and isinstance(value, str)),
        chain.from_iterable(A.LEGACY.values()),
    )
)


def is_mapped_attribute(key: str) -> bool:
    """Whether the mapping can read attribute ``key``; OTLP decoders drop the others."""
    return key.startswith(_MAPPED_NAMESPACES) or key in _MAPPED_NAMES


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a request decodes and maps.

    Decoding a large OTLP request allocates hundreds of thousands of small acyclic objects; each
    batch of allocations would otherwise start a collection that walks the whole process heap,
    which cost several times the decoding itself. Nothing made here forms a cycle, so nothing is
    left uncollected; a collector the application disabled stays disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- SDK ReadableSpan -----------------------------------------------------------------------


def view_from_readable_span(span: Any) -> SpanView:
    """View of an SDK ``ReadableSpan`` (no copy of its attributes)."""
    # ``span.attributes`` is a read-only proxy over BoundedAttributes, which copies its keys under
    # a lock on every iteration; a finished span's attributes never change, so read its plain dict.
    attributes = getattr(getattr(span, "_attributes", None), "_dict", None)
    if not isinstance(attributes, dict):
        attributes = span.attributes or {}
    status = span.status
    ctx = span.context
    return SpanView(
        span.name,
        span.start_time or 0,
        span.end_time or span.start_time or 0,
        attributes,
        status.status_code is StatusCode.ERROR,
        status.description,
        ctx.trace_id if ctx is not None else 0,
        ctx.span_id if ctx is not None else 0,
    )


def _kvlist_json(pairs: dict[str, Any]) -> str:
    """A key-value list attribute value (OTLP ``kvlistValue``), which spans cannot hold: as JSON."""
    return json.dumps(pairs)


# --- OTLP protobuf --------------------------------------------------------------------------


_PROTO_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value"})


def _proto_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind in _PROTO_SCALARS:
        return getattr(value, kind)
    if kind == "array_value":
        return tuple(_proto_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return _kvlist_json({kv.key: _proto_value(kv.value) for kv in value.kvlist_value.values})
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


def _proto_span_view(span: Any, attributes: dict[str, Any]) -> SpanView:
    """The view of a protobuf span (the full OTLP message or the lean copy: same field names)."""
    status = span.status
    start = span.start_time_unix_nano
    return SpanView(
        span.name,
        start,
        span.end_time_unix_nano or start,
        attributes,
        status.code == ProtoStatus.STATUS_CODE_ERROR,
        status.message or None,
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(span.span_id, "big"),
    )


def view_from_otlp_proto(span: ProtoSpan) -> SpanView:
    """View of an OTLP protobuf ``Span``."""
    attributes = {}
    namespaces, names, scalars = _MAPPED_NAMESPACES, _MAPPED_NAMES, _PROTO_SCALARS
    for kv in span.attributes:  # inlined is_mapped_attribute and scalar case
        key = kv.key
        if key.startswith(namespaces) or key in names:
            value = kv.value
            kind = value.WhichOneof("value")
            attributes[key] = getattr(value, kind) if kind in scalars else _proto_value(value)
    return _proto_span_view(span, attributes)


# Whole requests decode through a lean, wire-compatible copy of the OTLP trace schema: only the
# fields a view needs (the rest are skipped by the parser in C), and each attribute's AnyValue
# left as its encoded bytes. Encoded values repeat across spans (models, providers, token counts,
# status codes), so each distinct encoding is decoded once by the real AnyValue and remembered.


def _lean_trace_schema() -> type:
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="payi_otel/lean_trace.proto", package="payi_otel.lean", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str | None]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            label = f.LABEL_REPEATED if type_name and type_name.endswith("[]") else f.LABEL_OPTIONAL
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = ".payi_otel.lean." + type_name.removesuffix("[]")

    message("KeyValue", ("key", 1, f.TYPE_STRING, None), ("value", 2, f.TYPE_BYTES, None))  # value: encoded AnyValue
    message("Status", ("message", 2, f.TYPE_STRING, None), ("code", 3, f.TYPE_INT32, None))
    message(
        "Span",
        ("trace_id", 1, f.TYPE_BYTES, None),
        ("span_id", 2, f.TYPE_BYTES, None),
        ("name", 5, f.TYPE_STRING, None),
        ("start_time_unix_nano", 7, f.TYPE_FIXED64, None),
        ("end_time_unix_nano", 8, f.TYPE_FIXED64, None),
        ("attributes", 9, f.TYPE_MESSAGE, "KeyValue[]"),
        ("status", 15, f.TYPE_MESSAGE, "Status"),
    )
    message("ScopeSpans", ("spans", 2, f.TYPE_MESSAGE, "Span[]"))
    message("ResourceSpans", ("scope_spans", 2, f.TYPE_MESSAGE, "ScopeSpans[]"))
    message("ExportTraceServiceRequest", ("resource_spans", 1, f.TYPE_MESSAGE, "ResourceSpans[]"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("payi_otel.lean.ExportTraceServiceRequest"))


_LeanRequest = _lean_trace_schema()
_VALUE_CACHE_SIZE = 65_536  # entries; with _VALUE_CACHE_MAX_BYTES, at most ~10 MiB
_VALUE_CACHE_MAX_BYTES = 128  # message content and other long values are decoded every time
_decoded_values: dict[bytes, Any] = {}


def _encoded_value(raw: bytes) -> Any:
    value = _proto_value(AnyValue.FromString(raw)) if raw else None
    if len(raw) <= _VALUE_CACHE_MAX_BYTES:
        if len(_decoded_values) >= _VALUE_CACHE_SIZE:  # ids and other one-off values: start over
            _decoded_values.clear()
        _decoded_values[raw] = value
    return value


def _lean_view(span: Any) -> SpanView:
    attributes = {}
    namespaces, names = _MAPPED_NAMESPACES, _MAPPED_NAMES
    known = _decoded_values.get
    missing = _NOT_DECODED
    for kv in span.attributes:  # inlined is_mapped_attribute: the collector's hot path
        key = kv.key
        if key.startswith(namespaces) or key in names:
            raw = kv.value
            value = known(raw, missing)
            attributes[key] = _encoded_value(raw) if value is missing else value
    return _proto_span_view(span, attributes)


_NOT_DECODED = object()


def _decode_proto(body: bytes | str) -> list[SpanView]:
    request = _LeanRequest()
    try:
        request.ParseFromString(body if isinstance(body, bytes) else body.encode())
        return [
            _lean_view(span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
    except Exception as exc:  # protobuf's DecodeError and friends, also from an attribute's value
        raise OtlpDecodeError(f"request body: not a valid OTLP protobuf ExportTraceServiceRequest ({exc})") from None


# --- OTLP/JSON ------------------------------------------------------------------------------


def _hex_id(value: Any, field: str) -> int:
    if not value:
        return 0
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise OtlpDecodeError(f"span.{field}={value!r}: must be a hex string") from None


def _error_status(code: Any) -> bool:
    return code == 2 or code == "STATUS_CODE_ERROR"


# The parsed-dict form (a body someone already parsed, or no msgspec installed).

_JSON_SCALARS = ("stringValue", "boolValue", "doubleValue")


def _json_value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:  # int64 is a string in OTLP/JSON
        return int(value["intValue"])
    for key in _JSON_SCALARS:
        if key in value:
            return value[key]
    if "arrayValue" in value:
        return tuple(_json_value(v) for v in value["arrayValue"].get("values", ()))
    if "kvlistValue" in value:
        kvs = value["kvlistValue"].get("values", ())
        return _kvlist_json({kv["key"]: _json_value(kv.get("value", {})) for kv in kvs})
    if "bytesValue" in value:  # base64 in OTLP/JSON; kept as given
        return value["bytesValue"]
    return None


def view_from_otlp_json(span: Mapping[str, Any]) -> SpanView:
    """View of one span in the OTLP/JSON encoding (camelCase keys, AnyValue objects, hex ids)."""
    try:
        start = int(span.get("startTimeUnixNano") or 0)
        end = int(span.get("endTimeUnixNano") or 0) or start
    except (TypeError, ValueError):
        raise OtlpDecodeError("span.startTimeUnixNano/endTimeUnixNano: must be integer nanoseconds") from None
    attributes = {
        kv["key"]: _json_value(kv.get("value") or {})
        for kv in span.get("attributes") or ()
        if is_mapped_attribute(kv["key"])
    }
    status = span.get("status") or {}
    return SpanView(
        span.get("name", ""),
        start,
        end,
        attributes,
        _error_status(status.get("code")),
        status.get("message") or None,
        _hex_id(span.get("traceId"), "traceId"),
        _hex_id(span.get("spanId"), "spanId"),
    )


def _json_spans(request: Mapping[str, Any]) -> Iterator[SpanView]:
    for resource_spans in request.get("resourceSpans") or ():
        scopes = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ()
        for scope_spans in scopes:
            for span in scope_spans.get("spans") or ():
                yield view_from_otlp_json(span)


# The raw-body form: msgspec decodes the OTLP/JSON schema straight into untracked structs (no
# dict per AnyValue, nothing for the cyclic garbage collector to walk, which is what made
# parsing large bodies into dicts slow), skipping fields the mapping never reads.

if msgspec is not None:

    class _JsonAnyValue(msgspec.Struct, gc=False):
        stringValue: str | None = None
        boolValue: bool | None = None
        intValue: int | None = None  # a decimal string in OTLP/JSON; a number is accepted too
        doubleValue: float | None = None
        arrayValue: _JsonArrayValue | None = None
        kvlistValue: _JsonKvList | None = None
        bytesValue: str | None = None

    class _JsonKeyValue(msgspec.Struct, gc=False):
        key: str
        value: _JsonAnyValue | None = None

    class _JsonArrayValue(msgspec.Struct, gc=False):
        values: list[_JsonAnyValue] = []

    class _JsonKvList(msgspec.Struct, gc=False):
        values: list[_JsonKeyValue] = []

    class _JsonStatus(msgspec.Struct, gc=False):
        code: int | str | None = None
        message: str | None = None

    class _JsonSpan(msgspec.Struct, gc=False):
        name: str = ""
        traceId: str = ""
        spanId: str = ""
        startTimeUnixNano: int = 0
        endTimeUnixNano: int = 0
        attributes: list[_JsonKeyValue] = []
        status: _JsonStatus | None = None

    class _JsonScopeSpans(msgspec.Struct, gc=False):
        spans: list[_JsonSpan] = []

    class _JsonResourceSpans(msgspec.Struct, gc=False):
        scopeSpans: list[_JsonScopeSpans] = []
        instrumentationLibrarySpans: list[_JsonScopeSpans] = []  # before OTLP 0.17

    class _JsonRequest(msgspec.Struct, gc=False):
        resourceSpans: list[_JsonResourceSpans] = []

    # strict=False: int64 values arrive as decimal strings and must decode to ints.
    _JSON_DECODER = msgspec.json.Decoder(_JsonRequest, strict=False)


def _struct_value(value: Any) -> Any:
    """Python value of a decoded OTLP/JSON AnyValue struct (same rules as :func:`_json_value`)."""
    if value is None:
        return None
    if value.stringValue is not None:
        return value.stringValue
    if value.intValue is not None:
        return value.intValue
    if value.boolValue is not None:
        return value.boolValue
    if value.doubleValue is not None:
        return value.doubleValue
    if value.arrayValue is not None:
        return tuple(_struct_value(v) for v in value.arrayValue.values)
    if value.kvlistValue is not None:
        return _kvlist_json({kv.key: _struct_value(kv.value) for kv in value.kvlistValue.values})
    return value.bytesValue


def _view_from_struct(span: Any) -> SpanView:
    attributes = {}
    namespaces, names = _MAPPED_NAMESPACES, _MAPPED_NAMES
    for kv in span.attributes:  # inlined is_mapped_attribute and string case: the collector's hot path
        key = kv.key
        if key.startswith(namespaces) or key in names:
            value = kv.value
            string = value.stringValue if value is not None else None
            attributes[key] = string if string is not None else _struct_value(value)
    status = span.status
    start = span.startTimeUnixNano
    return SpanView(
        span.name,
        start,
        span.endTimeUnixNano or start,
        attributes,
        status is not None and _error_status(status.code),
        (status.message or None) if status is not None else None,
        _hex_id(span.traceId, "traceId"),
        _hex_id(span.spanId, "spanId"),
    )


def _struct_spans(request: Any) -> list[SpanView]:
    return [
        _view_from_struct(span)
        for resource_spans in request.resourceSpans
        for scope_spans in resource_spans.scopeSpans or resource_spans.instrumentationLibrarySpans
        for span in scope_spans.spans
    ]


def _decode_json(body: bytes | str) -> list[SpanView]:
    if msgspec is not None:
        try:
            return _struct_spans(_JSON_DECODER.decode(body))
        except msgspec.ValidationError as exc:  # names the offending field, e.g. `$.resourceSpans[0]...`
            raise OtlpDecodeError(
                f"request body: not an OTLP/JSON trace export request (an object with 'resourceSpans'): {exc}"
            ) from None
        except msgspec.DecodeError as exc:
            raise OtlpDecodeError(f"request body: not valid OTLP/JSON ({exc})") from None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"request body: not valid OTLP/JSON ({exc})") from None
    return _decode_json_dict(parsed)


def _decode_json_dict(parsed: Any) -> list[SpanView]:
    if not isinstance(parsed, Mapping):
        raise OtlpDecodeError("request body: OTLP/JSON must be an object with 'resourceSpans'")
    try:
        return list(_json_spans(parsed))
    except (AttributeError, KeyError, TypeError) as exc:
        raise OtlpDecodeError(f"request body: malformed OTLP/JSON ({exc!r})") from None


# --- whole OTLP export requests -------------------------------------------------------------


def spans_from_otlp_request(body: bytes | str | Mapping[str, Any], content_type: str | None = None) -> list[SpanView]:
    """Views of every span in an OTLP trace export request.

    ``body`` is the raw request body (protobuf when ``content_type`` is ``application/x-protobuf``,
    JSON when it is ``application/json``) or the already parsed OTLP/JSON dict. Views keep only
    the attributes the mapping reads. Raises :class:`OtlpDecodeError` when the body does not decode.
    """
    with gc_paused():
        return _decode_request(body, content_type)


def _decode_request(body: bytes | str | Mapping[str, Any], content_type: str | None) -> list[SpanView]:
    if isinstance(body, Mapping):
        return _decode_json_dict(body)
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("application/json", ""):
        return _decode_json(body)
    if media in ("application/x-protobuf", "application/protobuf"):
        return _decode_proto(body)
    raise OtlpDecodeError(
        f"Content-Type {content_type!r}: must be application/json or application/x-protobuf"
    )
