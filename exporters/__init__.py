"""Exporter side of payi-otel: finished GenAI spans -> Pay-i ingest events -> the Pay-i API.

* :class:`PayiSpanExporter`: the OpenTelemetry SDK span exporter (entry point ``payi``).
* :func:`event_from_view` / :func:`event_from_span`: the pure span -> event mapping.
* :func:`spans_from_otlp_request`: span views from an OTLP trace export request (protobuf or JSON);
  :func:`events_from_otlp_request`: the events of such a request.
"""

from .config import ConfigError, ExporterConfig
from .mapping import event_from_span, event_from_view, events_from_otlp_request, render_bulk_item, render_single
from .otlp import spans_from_otlp_request
from .span_exporter import PayiSpanExporter
from .views import OtlpDecodeError, SpanView

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
