"""Test helper: the OTLP/JSON encoding of finished SDK spans, as an OTLP exporter sends it."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans


def otlp_json(spans: Any) -> dict[str, Any]:
    """The OTLP/JSON form of ``spans``: hex trace and span ids (as the OTLP JSON spec requires),
    int64 values as decimal strings."""
    message = json_format.MessageToDict(encode_spans(spans))
    for rs in message["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return message
