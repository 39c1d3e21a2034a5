"""One small, read-only view of a finished span, whatever form it arrived in.

The mapping (:mod:`payi_otel.exporters.mapping`) reads only :class:`SpanView`, so the SDK's
``ReadableSpan``, an OTLP protobuf ``Span`` and the OTLP/JSON dict form of a span all convert the
same way. :func:`spans_from_otlp_request` unpacks a whole OTLP export request (the body a
collector or an OTLP exporter POSTs to ``/v1/traces``) into views.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus
from opentelemetry.trace import StatusCode

try:  # several times faster than json for large OTLP/JSON bodies; installed with the service extra
    from orjson import loads as _json_loads
except ImportError:  # pragma: no cover - depends on the installation
    _json_loads = json.loads

__all__ = [
    "OtlpDecodeError",
    "SpanView",
    "view_from_otlp_json",
    "view_from_otlp_proto",
    "view_from_readable_span",
    "spans_from_otlp_request",
]


@dataclass(slots=True, frozen=True)
class SpanView:
    """What the mapping needs from a finished span."""

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
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        attributes=attributes,
        is_error=status.status_code is StatusCode.ERROR,
        status_message=status.description,
        trace_id=ctx.trace_id if ctx is not None else 0,
        span_id=ctx.span_id if ctx is not None else 0,
    )


# --- OTLP protobuf --------------------------------------------------------------------------


_PROTO_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value"})


def _proto_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind in _PROTO_SCALARS:
        return getattr(value, kind)
    if kind == "array_value":
        return tuple(_proto_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return json.dumps({kv.key: _proto_value(kv.value) for kv in value.kvlist_value.values})
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


def view_from_otlp_proto(span: ProtoSpan) -> SpanView:
    """View of an OTLP protobuf ``Span``."""
    attributes = {}
    scalars = _PROTO_SCALARS
    for kv in span.attributes:  # inlined scalar case: this loop is the hot path of the collector
        value = kv.value
        kind = value.WhichOneof("value")
        attributes[kv.key] = getattr(value, kind) if kind in scalars else _proto_value(value)
    return SpanView(
        name=span.name,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano or span.start_time_unix_nano,
        attributes=attributes,
        is_error=span.status.code == ProtoStatus.STATUS_CODE_ERROR,
        status_message=span.status.message or None,
        trace_id=int.from_bytes(span.trace_id, "big"),
        span_id=int.from_bytes(span.span_id, "big"),
    )


# --- OTLP/JSON ------------------------------------------------------------------------------

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
        return json.dumps({kv["key"]: _json_value(kv.get("value", {})) for kv in kvs})
    if "bytesValue" in value:  # base64 in OTLP/JSON; kept as given
        return value["bytesValue"]
    return None


def _hex_id(value: Any, field: str) -> int:
    if not value:
        return 0
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise OtlpDecodeError(f"span.{field}={value!r}: must be a hex string") from None


def _error_status(code: Any) -> bool:
    return code == 2 or code == "STATUS_CODE_ERROR"


def view_from_otlp_json(span: Mapping[str, Any]) -> SpanView:
    """View of one span in the OTLP/JSON encoding (camelCase keys, AnyValue objects, hex ids)."""
    try:
        start = int(span.get("startTimeUnixNano") or 0)
        end = int(span.get("endTimeUnixNano") or 0) or start
    except (TypeError, ValueError):
        raise OtlpDecodeError("span.startTimeUnixNano/endTimeUnixNano: must be integer nanoseconds") from None
    attributes = {kv["key"]: _json_value(kv.get("value") or {}) for kv in span.get("attributes") or ()}
    status = span.get("status") or {}
    return SpanView(
        name=span.get("name", ""),
        start_ns=start,
        end_ns=end,
        attributes=attributes,
        is_error=_error_status(status.get("code")),
        status_message=status.get("message") or None,
        trace_id=_hex_id(span.get("traceId"), "traceId"),
        span_id=_hex_id(span.get("spanId"), "spanId"),
    )


# --- whole OTLP export requests -------------------------------------------------------------


def _json_spans(request: Mapping[str, Any]) -> Iterator[SpanView]:
    for resource_spans in request.get("resourceSpans") or ():
        scopes = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ()
        for scope_spans in scopes:
            for span in scope_spans.get("spans") or ():
                yield view_from_otlp_json(span)


def spans_from_otlp_request(body: bytes | str | Mapping[str, Any], content_type: str | None = None) -> list[SpanView]:
    """Views of every span in an OTLP trace export request.

    ``body`` is the raw request body (protobuf when ``content_type`` is ``application/x-protobuf``,
    JSON when it is ``application/json``) or the already parsed OTLP/JSON dict. Raises
    :class:`OtlpDecodeError` when the body does not decode.
    """
    if isinstance(body, Mapping):
        return list(_json_spans(body))
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("application/json", ""):
        try:
            parsed = _json_loads(body)
        except (ValueError, UnicodeDecodeError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise OtlpDecodeError(f"request body: not valid OTLP/JSON ({exc})") from None
        if not isinstance(parsed, Mapping):
            raise OtlpDecodeError("request body: OTLP/JSON must be an object with 'resourceSpans'")
        try:
            return list(_json_spans(parsed))
        except (AttributeError, KeyError, TypeError) as exc:
            raise OtlpDecodeError(f"request body: malformed OTLP/JSON ({exc!r})") from None
    if media in ("application/x-protobuf", "application/protobuf"):
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body if isinstance(body, bytes) else body.encode())
        except Exception as exc:  # protobuf's DecodeError and friends
            raise OtlpDecodeError(f"request body: not a valid OTLP protobuf ExportTraceServiceRequest ({exc})") from None
        return [
            view_from_otlp_proto(span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
    raise OtlpDecodeError(
        f"Content-Type {content_type!r}: must be application/json or application/x-protobuf"
    )
