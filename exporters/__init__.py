"""Exporter side of payi-otel: finished GenAI spans -> Pay-i ingest events -> the Pay-i API.

* :class:`PayiSpanExporter`: the OpenTelemetry SDK span exporter (entry point ``payi``).
* :func:`event_from_view` / :func:`event_from_span`: the pure span -> event mapping.
* :func:`spans_from_otlp_request`: span views from an OTLP trace export request (protobuf or JSON);
  :func:`events_from_otlp_request`: the events of such a request.

The OTLP decoders (protobuf, msgspec) are imported on first use: an application that only exports its own
spans never loads them.
"""

from typing import TYPE_CHECKING, Any

from .config import ConfigError, ExporterConfig
from .mapping import event_from_span, event_from_view, events_from_otlp_request, render_bulk_item, render_single
from .span_exporter import PayiSpanExporter
from .views import OtlpDecodeError, SpanView

if TYPE_CHECKING:
    from .otlp import spans_from_otlp_request


def __getattr__(name: str) -> Any:
    if name == "spans_from_otlp_request":
        from .otlp import spans_from_otlp_request

        return spans_from_otlp_request
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "ExporterConfig",
    "OtlpDecodeError",
    "PayiSpanExporter",
    "SpanView",
    "event_from_span",
    "event_from_view",
    "events_from_otlp_request",
    "render_bulk_item",
    "render_single",
    "spans_from_otlp_request",
]
