"""Whole OTLP trace export requests (the body a collector or an OTLP exporter sends to ``/v1/traces``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .otlp_json import decode_json, decode_json_dict
from .otlp_proto import decode_proto
from .views import OtlpDecodeError, SpanView, gc_paused

__all__ = ["JSON", "PROTOBUF", "media_type", "spans_from_otlp_request"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})


def media_type(content_type: str | None) -> str:
    """The OTLP encoding a ``Content-Type`` names (:data:`PROTOBUF` or :data:`JSON`; none means JSON).

    Raises :class:`OtlpDecodeError` for any other type.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("", JSON):
        return JSON
    if media in _PROTOBUF_TYPES:
        return PROTOBUF
    raise OtlpDecodeError(f"Content-Type {content_type!r}: must be {JSON} or {PROTOBUF}")


def spans_from_otlp_request(body: bytes | str | Mapping[str, Any], content_type: str | None = None) -> list[SpanView]:
    """Views of the GenAI spans in an OTLP trace export request.

    ``body`` is the raw request body (protobuf when ``content_type`` is ``application/x-protobuf``,
    JSON when it is ``application/json``) or the already parsed OTLP/JSON dict. Spans without any
    ``gen_ai.*``, ``llm.*`` or ``payi.*`` attribute are skipped before their attributes are decoded,
    and views keep only the attributes the mapping reads. Raises :class:`OtlpDecodeError` when the
    body does not decode.
    """
    with gc_paused():
        if isinstance(body, Mapping):
            return decode_json_dict(body)
        if media_type(content_type) == PROTOBUF:
            return decode_proto(body if isinstance(body, bytes) else body.encode())
        return decode_json(body)
