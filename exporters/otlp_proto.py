"""Span views from OTLP protobuf: a whole ``ExportTraceServiceRequest`` body, or one ``Span`` message.

Whole requests decode through a lean, wire-compatible copy of the OTLP trace schema, in three steps
that each do as little as the next one needs:

1. The request is parsed (in C) down to each span's *encoded bytes*; nothing inside a span is
   decoded yet.
2. A span whose bytes contain none of :data:`~.views.GENAI_MARKERS` (``gen_ai.``, ``llm.``,
   ``payi.``) is skipped: a few substring searches in C, however many attributes it has.
3. The remaining spans are parsed with their attributes left as encoded ``KeyValue`` bytes. Encoded
   attributes repeat across spans (operation, provider, model, user, token counts), so each distinct
   encoding is decoded once into its ``(key, value)`` pair, or into "not read by the mapping", and
   remembered: building a span's attribute dict is then one lookup per attribute, in C. An encoding
   not seen before (a new token count, an id) is split at the wire into its key and value bytes. The
   key is remembered on its own; the value is decoded only for a key the mapping reads: ints and short
   strings straight from the wire (they differ from span to span, so they are not remembered alone),
   anything else through a cache of its own. A string or a two-byte count whose *head* (the bytes
   before the string, or before a count's last byte) was seen before is read without splitting it
   again: the head gives its key and layout. The span's status is remembered the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from payi_otel import attributes as A

from .views import (
    CACHE_MAX_BYTES,
    CACHE_SIZE,
    GENAI_MARKERS,
    NO_RESOURCE,
    MappedKeys,
    OtlpDecodeError,
    SpanView,
    is_mapped_attribute,
    kvlist_json,
    remember,
    resource_properties,
)

__all__ = ["decode_proto", "view_from_otlp_proto"]

_PROTO_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value"})
_ERROR = ProtoStatus.STATUS_CODE_ERROR


def _proto_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind in _PROTO_SCALARS:
        return getattr(value, kind)
    if kind == "array_value":
        return tuple(_proto_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return kvlist_json({kv.key: _proto_value(kv.value) for kv in value.kvlist_value.values})
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


def _view(span: Any, attributes: dict[str, Any], resource: Mapping[str, str]) -> SpanView:
    """The view of a protobuf span (the full OTLP message or the lean copy: same field names)."""
    status = span.status
    start = span.start_time_unix_nano
    return SpanView(
        span.name,
        start,
        span.end_time_unix_nano or start,
        attributes,
        status.code == _ERROR,
        status.message or None,
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(span.span_id, "big"),
        int.from_bytes(span.parent_span_id, "big"),
        resource,
    )


def view_from_otlp_proto(span: ProtoSpan, resource: Mapping[str, str] = NO_RESOURCE) -> SpanView:
    """View of an OTLP protobuf ``Span`` message (attributes the mapping never reads are left out)."""
    attributes = {kv.key: _proto_value(kv.value) for kv in span.attributes if is_mapped_attribute(kv.key)}
    return _view(span, attributes, resource)


def _lean_schema() -> dict[str, Any]:
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="payi_otel/lean_trace.proto", package="payi_otel.lean", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, str | None], oneof: str | None = None) -> None:
        proto = file.message_type.add(name=name)
        if oneof is not None:
            proto.oneof_decl.add(name=oneof)
        for field_name, number, kind, type_name in fields:
            repeated = field_name.endswith("[]")
            field = proto.field.add(
                name=field_name.removesuffix("[]"),
                number=number,
                type=kind,
                label=f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = ".payi_otel.lean." + type_name
            if oneof is not None:
                field.oneof_index = 0

    bytes_, string = f.TYPE_BYTES, f.TYPE_STRING
    # An attribute decodes in one parse: its scalar value is read here, an array or a key-value list
    # (rare, never cached) from its encoded bytes with the full AnyValue message.
    message(
        "AnyValue",
        ("string_value", 1, string, None),
        ("bool_value", 2, f.TYPE_BOOL, None),
        ("int_value", 3, f.TYPE_INT64, None),
        ("double_value", 4, f.TYPE_DOUBLE, None),
        ("array_value", 5, bytes_, None),
        ("kvlist_value", 6, bytes_, None),
        ("bytes_value", 7, bytes_, None),
        oneof="value",
    )
    message("KeyValue", ("key", 1, string, None), ("value", 2, f.TYPE_MESSAGE, "AnyValue"))
    message(
        "Span",
        ("trace_id", 1, bytes_, None),
        ("span_id", 2, bytes_, None),
        ("parent_span_id", 4, bytes_, None),
        ("name", 5, string, None),
        ("start_time_unix_nano", 7, f.TYPE_FIXED64, None),
        ("end_time_unix_nano", 8, f.TYPE_FIXED64, None),
        ("attributes[]", 9, bytes_, None),  # encoded KeyValues
        ("status", 15, bytes_, None),  # an encoded Status: nearly always one of a few
    )
    message("Resource", ("attributes[]", 1, f.TYPE_MESSAGE, "KeyValue"))
    message("ScopeSpans", ("spans[]", 2, bytes_, None))  # encoded Spans, decoded only when GenAI
    message(
        "ResourceSpans", ("resource", 1, f.TYPE_MESSAGE, "Resource"), ("scope_spans[]", 2, f.TYPE_MESSAGE, "ScopeSpans")
    )
    message("ExportTraceServiceRequest", ("resource_spans[]", 1, f.TYPE_MESSAGE, "ResourceSpans"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    names = ("AnyValue", "KeyValue", "Span", "ExportTraceServiceRequest")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName("payi_otel.lean." + n)) for n in names}


_LEAN = _lean_schema()
_LeanKeyValue, _LeanSpan, _LeanRequest = _LEAN["KeyValue"], _LEAN["Span"], _LEAN["ExportTraceServiceRequest"]
_LeanAnyValue = _LEAN["AnyValue"]


def _varint(raw: bytes, start: int) -> int | None:
    """The int64 of the varint that fills ``raw`` from ``start`` to its end, or ``None`` if it does not."""
    size = len(raw) - start
    if size == 1:
        value = raw[start]
        return value if value < 0x80 else None
    if not 1 < size <= 10 or raw[-1] >= 0x80:
        return None
    value = 0
    for shift in range(0, 7 * (size - 1), 7):
        byte = raw[start]
        if byte < 0x80:
            return None
        value |= (byte & 0x7F) << shift
        start += 1
    value |= raw[-1] << (7 * (size - 1))
    if value >= 1 << 64:  # more than 64 bits
        return None
    return value - (1 << 64) if value >= 1 << 63 else value


class _Values(dict[bytes, Any]):
    """Encoded ``AnyValue`` (other than a short string or an int) -> its value."""

    def __missing__(self, raw: bytes) -> Any:
        return remember(self, raw, _lean_value(_LeanAnyValue.FromString(raw)))


_keys = MappedKeys()
_values = _Values()


class _KeyValues(dict[bytes, "tuple[str, Any] | None"]):
    """Encoded ``KeyValue`` -> ``(key, value)``, or ``None`` for a key the mapping never reads.

    An attribute seen before is one lookup. A new one (its value differs: a token count, an id) is
    split at the wire level into its key and value bytes; the key is looked up in its own cache, and
    the value is decoded only when the key is read: a short string or an int straight from the wire
    (the values that differ from span to span), anything else through its own cache.
    """

    def __missing__(self, raw: bytes) -> tuple[str, Any] | None:
        # The encoding every OTLP exporter writes: the key (field 1) then the value (field 2), each
        # shorter than 128 bytes (one-byte lengths); the lengths must add up to the whole attribute.
        # A miss is nearly always a new id or count, so this path is kept short: each step here costs
        # about as much as the dictionary lookup of a hit.
        size = len(raw)
        # A new short string or two-byte count of a read key whose head (its first six bytes and the
        # key's: tags, lengths, key, and a string's length or a count's low byte) was seen before, in
        # an attribute of this size: the head gives the key and the layout, the rest is the value.
        head = _heads.get(raw[: raw[1] + 6]) if size > 6 else None
        value: Any = None
        if head is not None and head[1] == size:
            low = head[2]
            if low is None:
                value = raw[raw[1] + 6 :].decode()  # invalid UTF-8 raises, as below
            elif raw[-1] < 0x80:
                value = low | (raw[-1] << 7)
        pair = (head[0], value) if head is not None and value is not None else _split(raw, size)
        if size <= CACHE_MAX_BYTES:  # remember(self, raw, pair) without the call
            if len(self) >= CACHE_SIZE:
                self.clear()
            self[raw] = pair
        return pair


_key_values = _KeyValues()
# Head of an attribute of a key the mapping reads holding a short string or a two-byte count ->
# (key, the attribute's size, None for a string or the count's low seven bits): what _KeyValues
# needs to read the next value of that key and layout without splitting it again.
_heads: dict[bytes, tuple[str, int, int | None]] = {}


def _split(raw: bytes, size: int) -> tuple[str, Any] | None:
    """``(key, value)`` of an encoded ``KeyValue`` no cache holds, or ``None`` for a key the mapping never
    reads; a string's or a two-byte count's head is remembered for the next value of its layout."""
    end = raw[1] + 2 if size > 2 and raw[0] == 0x0A else size
    if end + 2 <= size and end < 0x82 and raw[end] == 0x12 and raw[end + 1] == size - end - 2:
        key = _keys[raw[2:end]]
        if key is None:
            pair = None
        else:
            start = end + 2  # the encoded AnyValue
            tag = raw[start] if start < size else 0
            value: Any = None
            if tag == 0x0A:  # a string shorter than 128 bytes
                if start + 1 < size and raw[start + 1] == size - start - 2:
                    value = raw[start + 2 :].decode()
                    remember(_heads, raw[: start + 2], (key, size, None))
            elif tag == 0x18:  # most counts fit in one or two varint bytes: read them here
                rest = size - start
                low = raw[start + 1] if rest > 1 else 0x80
                if rest == 2:
                    value = low if low < 0x80 else None
                elif rest == 3 and low >= 0x80 and raw[-1] < 0x80:
                    value = (low & 0x7F) | (raw[-1] << 7)
                    remember(_heads, raw[: start + 2], (key, size, low & 0x7F))
                else:
                    value = _varint(raw, start + 1)
            if value is None:
                value = _values[raw[start:]]
            pair = (key, value)
    else:  # anything else the protobuf way
        kv = _LeanKeyValue.FromString(raw)
        pair = (kv.key, _lean_value(kv.value)) if is_mapped_attribute(kv.key) else None
    return pair


def _lean_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind in _PROTO_SCALARS:
        return getattr(value, kind)
    if kind is None:
        return None
    return _proto_value(AnyValue.FromString(value.SerializeToString()))  # an array, key-value list or bytes


class _Statuses(dict[bytes, tuple[bool, "str | None"]]):
    """Encoded span ``Status`` -> ``(is error, message)``."""

    def __missing__(self, raw: bytes) -> tuple[bool, str | None]:
        status = ProtoStatus.FromString(raw)
        return remember(self, raw, (status.code == _ERROR, status.message or None))


_statuses = _Statuses()


def _lean_span_view(raw: bytes, resource: Mapping[str, str]) -> SpanView:
    span = _LeanSpan.FromString(raw)
    is_error, message = _statuses[span.status]
    start = span.start_time_unix_nano
    parent = span.parent_span_id  # empty for a root span
    return SpanView(
        span.name,
        start,
        span.end_time_unix_nano or start,
        dict(filter(None, map(_key_values.__getitem__, span.attributes[:]))),  # a list: no IndexError ends it
        is_error,
        message,
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(span.span_id, "big"),
        int.from_bytes(parent, "big") if parent else 0,
        resource,
    )


def decode_proto(body: bytes) -> list[SpanView]:
    """Views of the GenAI spans of an encoded ``ExportTraceServiceRequest`` (other spans skipped)."""
    request = _LeanRequest()
    try:
        request.ParseFromString(body)
        views: list[SpanView] = []
        append = views.append
        gen_ai, llm, payi = GENAI_MARKERS  # found with find(): `in` on bytes first tries its operand as an int
        for resource_spans in request.resource_spans:
            resource: Mapping[str, str] | None = None
            for scope_spans in resource_spans.scope_spans:
                for raw in scope_spans.spans:
                    find = raw.find  # the receiver's hot loop: C substring searches
                    if find(gen_ai) >= 0 or find(llm) >= 0 or find(payi) >= 0:
                        if resource is None:
                            resource = _resource(resource_spans.resource)
                        append(_lean_span_view(raw, resource))
        return views
    except Exception as exc:  # protobuf's DecodeError and friends, also from an attribute's value
        raise OtlpDecodeError(f"request body: not a valid OTLP protobuf ExportTraceServiceRequest ({exc})") from None


def _resource(resource: Any) -> Mapping[str, str]:
    kept = A.RESOURCE_PROPERTIES
    return resource_properties({kv.key: _lean_value(kv.value) for kv in resource.attributes if kv.key in kept})
