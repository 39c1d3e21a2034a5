"""Span views from OTLP/JSON: a raw request body, an already parsed request dict, or one span dict.

Raw bodies decode with msgspec (installed with the ``service`` extra) straight into untracked
structs, each span's ``attributes`` left as raw JSON: a span whose raw attributes contain none of
the GenAI markers (``"gen_ai.``, ``"llm.``, ``"payi.``) is skipped without decoding them. A GenAI
span's attributes are split into their encoded ``KeyValue`` objects, and each distinct encoding is
decoded once and remembered, as the protobuf decoder does (:mod:`.otlp_proto`). Without msgspec the
standard library parser is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

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
)
from .views import resource_properties as _resource_properties

try:  # typed OTLP/JSON decoding straight into compact objects; installed with the service extra
    import msgspec
except ImportError:  # pragma: no cover - depends on the installation
    msgspec = None  # type: ignore[assignment]

__all__ = ["decode_json", "decode_json_dict", "view_from_otlp_json"]

_QUOTED_MARKERS = tuple(b'"' + marker for marker in GENAI_MARKERS)  # an attribute key starts with one
_NAMESPACES = tuple(marker.decode() for marker in GENAI_MARKERS)


def _hex_id(value: Any, field: str) -> int:
    if not value:
        return 0
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise OtlpDecodeError(f"span.{field}={value!r}: must be a hex string") from None


def _error_status(code: Any) -> bool:
    return bool(code == 2 or code == "STATUS_CODE_ERROR")


# --- the parsed-dict form (a body someone already parsed, or no msgspec installed) -----------

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
        return kvlist_json({kv["key"]: _json_value(kv.get("value", {})) for kv in kvs})
    if "bytesValue" in value:  # base64 in OTLP/JSON; kept as given
        return value["bytesValue"]
    return None


def view_from_otlp_json(span: Mapping[str, Any], resource: Mapping[str, str] = NO_RESOURCE) -> SpanView:
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
        _hex_id(span.get("parentSpanId"), "parentSpanId"),
        resource,
    )


def _dict_resource(resource_spans: Mapping[str, Any]) -> Mapping[str, str]:
    attributes = (resource_spans.get("resource") or {}).get("attributes") or ()
    return _resource_properties({kv["key"]: _json_value(kv.get("value") or {}) for kv in attributes})


def _has_genai_key(span: Mapping[str, Any], namespaces: tuple[str, ...] = _NAMESPACES) -> bool:
    return any(str(kv.get("key", "")).startswith(namespaces) for kv in span.get("attributes") or ())


def _json_spans(request: Mapping[str, Any]) -> Iterator[SpanView]:
    for resource_spans in request.get("resourceSpans") or ():
        resource = _dict_resource(resource_spans)
        scopes = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ()
        for scope_spans in scopes:
            for span in scope_spans.get("spans") or ():
                if _has_genai_key(span):
                    yield view_from_otlp_json(span, resource)


def decode_json_dict(parsed: Any) -> list[SpanView]:
    """Views of the GenAI spans (those with a ``gen_ai.*``, ``llm.*`` or ``payi.*`` attribute) of a
    parsed OTLP/JSON request."""
    if not isinstance(parsed, Mapping):
        raise OtlpDecodeError("request body: OTLP/JSON must be an object with 'resourceSpans'")
    try:
        return list(_json_spans(parsed))
    except (AttributeError, KeyError, TypeError) as exc:
        raise OtlpDecodeError(f"request body: malformed OTLP/JSON ({exc!r})") from None


# --- the raw-body form: msgspec structs (no dict per AnyValue, nothing for the cyclic GC) ------

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
        values: list[_JsonAnyValue] = msgspec.field(default_factory=list)

    class _JsonKvList(msgspec.Struct, gc=False):
        values: list[_JsonKeyValue] = msgspec.field(default_factory=list)

    class _JsonStatus(msgspec.Struct, gc=False):
        code: int | str | None = None
        message: str | None = None

    class _JsonSpan(msgspec.Struct, gc=False):
        name: str = ""
        traceId: str = ""
        spanId: str = ""
        parentSpanId: str = ""
        startTimeUnixNano: int = 0
        endTimeUnixNano: int = 0
        attributes: msgspec.Raw = msgspec.Raw(b"[]")  # decoded only for GenAI spans
        status: _JsonStatus | None = None

    class _JsonScopeSpans(msgspec.Struct, gc=False):
        spans: list[_JsonSpan] = msgspec.field(default_factory=list)

    class _JsonResource(msgspec.Struct, gc=False):
        attributes: list[_JsonKeyValue] = msgspec.field(default_factory=list)

    class _JsonResourceSpans(msgspec.Struct, gc=False):
        resource: _JsonResource | None = None
        scopeSpans: list[_JsonScopeSpans] = msgspec.field(default_factory=list)
        instrumentationLibrarySpans: list[_JsonScopeSpans] = msgspec.field(default_factory=list)  # before OTLP 0.17

    class _JsonRequest(msgspec.Struct, gc=False):
        resourceSpans: list[_JsonResourceSpans] = msgspec.field(default_factory=list)

    # strict=False: int64 values arrive as decimal strings and must decode to ints.
    _JSON_DECODER = msgspec.json.Decoder(_JsonRequest, strict=False)
    _ATTRIBUTES_DECODER = msgspec.json.Decoder(list[_JsonKeyValue], strict=False)
    _VALUE_DECODER = msgspec.json.Decoder(_JsonAnyValue | None, strict=False)


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
        return kvlist_json({kv.key: _struct_value(kv.value) for kv in value.kvlistValue.values})
    return value.bytesValue


# --- a GenAI span's attributes: each encoded attribute decoded once, then remembered -------------
#
# Encoded attributes repeat across spans (operation, provider, model, user, token counts). An
# attribute list in the compact form OTLP exporters write, ``[{"key":"K","value":V},...]``, is split
# in C at each ``},{"key":"`` (a sequence no JSON string can hold: its quote would be escaped) into
# ``K","value":V`` pieces, and each distinct piece is decoded once into its ``(key, value)`` pair,
# or into "not read by the mapping", and remembered: building a span's attribute dict is then one
# lookup per attribute, in C. A new piece is split into its key and value, each remembered on its
# own; ints and plain strings are read directly, other values with msgspec, and every value must be
# exactly one JSON value, so the pieces rebuild the list exactly. A list in any other form (spaces,
# other key order, escapes in a key, extra fields) decodes in full with msgspec, which also names
# the field of a bad value.

_LIST_START = b'[{"key":"'
_BETWEEN = b'},{"key":"'
_LIST_END = b"}]"
_VALUE_START = b'","value":'
_STRING_START = b'{"stringValue":"'
_INT_START = b'{"intValue":"'
_VALUE_END = b'"}'


_NOT_PLAIN = object()


def _plain_value(raw: bytes) -> Any:
    """The value of an encoded ``AnyValue`` that is a string without escapes or an int64 (the values that
    differ from span to span: ids, counts), read directly; :data:`_NOT_PLAIN` for any other."""
    inner = raw[16:-2] if raw.startswith(_STRING_START) else raw[13:-2] if raw.startswith(_INT_START) else None
    if inner is not None and raw.endswith(_VALUE_END) and b'"' not in inner and b"\\" not in inner:
        if raw[2] == 0x73:  # "s": a string without escapes (invalid UTF-8 raises)
            return inner.decode()
        if inner.isdigit() or (inner[:1] == b"-" and inner[1:].isdigit()):  # int64 as a decimal string
            return int(inner)
    return _NOT_PLAIN


def _decode_value(raw: bytes) -> Any:
    """The value of an encoded OTLP/JSON ``AnyValue``; raises ``ValueError`` unless ``raw`` is exactly one."""
    value = _plain_value(raw)
    return _struct_value(_VALUE_DECODER.decode(raw)) if value is _NOT_PLAIN else value


class _JsonValues(dict[bytes, Any]):
    """Encoded OTLP/JSON ``AnyValue`` other than a plain string or int -> its value."""

    def __missing__(self, raw: bytes) -> Any:
        return remember(self, raw, _decode_value(raw))


_keys = MappedKeys()
_values = _JsonValues()


class _JsonKeyValues(dict[bytes, "tuple[str, Any] | None"]):
    """Piece ``K","value":V`` of a compact attribute list -> ``(key, value)``, or ``None`` for a key the
    mapping never reads. Raises ``ValueError`` for a piece of any other form."""

    def __missing__(self, piece: bytes) -> tuple[str, Any] | None:
        # most new pieces: a new id or count, read in one match (the backslash searched for apart: a
        # class of one excluded byte is matched much faster than one of two)
        match = _plain_piece(piece) if piece.find(b"\\") < 0 else None
        if match is None:
            return self._split(piece)
        raw_key, string, number = match.groups()
        key = _keys[raw_key]
        value = string.decode() if string is not None else int(number)  # invalid UTF-8 raises
        pair = None if key is None else (key, value)
        if len(piece) <= CACHE_MAX_BYTES:  # remember(self, piece, pair) without the call
            if len(self) >= CACHE_SIZE:
                self.clear()
            self[piece] = pair
        return pair

    def _split(self, piece: bytes) -> tuple[str, Any] | None:
        end = piece.find(b'"')
        if end < 0 or not piece.startswith(_VALUE_START, end) or piece.find(b"\\", 0, end) >= 0:
            raise ValueError("not a compact OTLP/JSON attribute")
        key = _keys[piece[:end]]
        raw = piece[end + 10 :]
        pair: tuple[str, Any] | None = None
        if key is None:
            _decode_value(raw)  # one value, not a piece of a larger structure
        else:
            value = _plain_value(raw)  # a new id or count: read directly, not remembered on its own
            pair = (key, _values[raw] if value is _NOT_PLAIN else value)
        return remember(self, piece, pair)


# A piece without a backslash whose value is a string or an int64 (as a decimal string): what
# :meth:`_JsonKeyValues._split` reads directly, in one match.
_plain_piece = re.compile(rb'([^"]+)","value":\{"(?:stringValue":"([^"]*)|intValue":"(-?[0-9]+))"\}').fullmatch

_key_values = _JsonKeyValues()


def _attributes(raw: bytes) -> dict[str, Any]:
    """The attributes the mapping reads from a span's encoded attribute list."""
    if raw.startswith(_LIST_START) and raw.endswith(_LIST_END):
        try:
            return dict(filter(None, map(_key_values.__getitem__, raw[9:-2].split(_BETWEEN))))
        except ValueError:
            pass  # not the compact form throughout: decoded in full (which names a bad field)
    return {kv.key: _struct_value(kv.value) for kv in _ATTRIBUTES_DECODER.decode(raw) if is_mapped_attribute(kv.key)}


def _view_from_struct(span: Any, raw_attributes: bytes, resource: Mapping[str, str]) -> SpanView:
    status = span.status
    start = span.startTimeUnixNano
    trace_id, span_id, parent_id = span.traceId, span.spanId, span.parentSpanId
    try:  # the ids without a call each (strings: msgspec typed them)
        trace_id = int(trace_id, 16) if trace_id else 0
        span_id = int(span_id, 16) if span_id else 0
        parent_id = int(parent_id, 16) if parent_id else 0
    except ValueError:  # _hex_id names the field
        trace_id = _hex_id(span.traceId, "traceId")
        span_id = _hex_id(span.spanId, "spanId")
        parent_id = _hex_id(span.parentSpanId, "parentSpanId")
    return SpanView(
        span.name,
        start,
        span.endTimeUnixNano or start,
        _attributes(raw_attributes),
        status is not None and _error_status(status.code),
        (status.message or None) if status is not None else None,
        trace_id,
        span_id,
        parent_id,
        resource,
    )


def _struct_resource(resource: Any) -> Mapping[str, str]:
    if resource is None:
        return NO_RESOURCE
    return _resource_properties({kv.key: _struct_value(kv.value) for kv in resource.attributes})


def _struct_spans(request: Any) -> list[SpanView]:
    views = []
    first, second, third = _QUOTED_MARKERS  # found with find(): `in` on bytes first tries its operand as an int
    for resource_spans in request.resourceSpans:
        resource: Mapping[str, str] | None = None
        for scope_spans in resource_spans.scopeSpans or resource_spans.instrumentationLibrarySpans:
            for span in scope_spans.spans:
                raw = bytes(span.attributes)  # msgspec.Raw has no substring search
                find = raw.find  # the receiver's hot loop
                if find(first) >= 0 or find(second) >= 0 or find(third) >= 0:
                    if resource is None:
                        resource = _struct_resource(resource_spans.resource)
                    views.append(_view_from_struct(span, raw, resource))
    return views


def decode_json(body: bytes | str) -> list[SpanView]:
    """Views of the GenAI spans of a raw OTLP/JSON request body (every span without msgspec)."""
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
    return decode_json_dict(parsed)
