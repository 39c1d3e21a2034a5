"""The span core: one GenAI span (and its metrics) per provider call.

Instrumentors never touch spans. Each fills a :class:`CallRecord` describing one provider call and
hands it to :class:`SpanCore`:

* :meth:`SpanCore.start` opens the CLIENT span *before* the request is sent (so the HTTP client's own
  spans nest under it) with the request-side attributes and the business context;
* the returned :class:`Call` is made current only around the provider call itself
  (:meth:`Call.activate` / :meth:`Call.deactivate`, same frame, never across a ``yield``), and around
  each read of its stream (:mod:`payi_otel.stream`);
* :meth:`Call.end` or :meth:`Call.fail` writes the response side (usage, Pay-i units, ids, finish
  reasons, tool calls, errors), records the metrics and ends the span, exactly once, and hands the
  finished call (the span's attributes, times and ids, whether or not the trace was sampled) to the
  registered cost-record sinks (:mod:`payi_otel.finished`) before control returns to the caller.

Every attribute name comes from :mod:`payi_otel.attributes`; units come from :func:`payi_otel.units.to_units`.

Each SDK attribute costs about a microsecond on the caller's thread, so a ``payi.*`` attribute is
written only when it says more than the span already does; the exporter derives the omitted ones
(``payi.exporters.mapping``), so the ingest event is the same either way:

* ``payi.category``: omitted when it is the category of ``gen_ai.provider.name``;
* ``payi.resource``: omitted unless it differs from the request model (Azure deployment mapping);
* ``payi.units.*``: omitted when the ``gen_ai.usage.*`` token counts give the same units
  (:meth:`payi_otel.units.Usage.needs_units`);
* ``payi.usage.complete``: written only as ``false`` (with the reason); absent with usage = complete;
* ``payi.http_status_code``: omitted for a plain 200 success; ``http.response.status_code`` carries
  statuses >= 400; written for other statuses and for a 2xx call that failed afterwards (streams);
* ``payi.provider_response_id``: never, ``gen_ai.response.id`` carries it;
* ``payi.end_to_end_latency_ms``: never; the span's own start and end times are the call's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry._logs import LoggerProvider, get_logger
from opentelemetry.trace import SpanKind

from payi_otel import attributes as A
from payi_otel import context as business_context
from payi_otel import fastcontext, messages
from payi_otel import protocol as P
from payi_otel.call import Call
from payi_otel.call_metrics import CallMetrics
from payi_otel.processor import SCOPE_NAME, ensure_processor
from payi_otel.record import (
    ABANDONED,
    CLOSED_EARLY,
    COMPLETED,
    ERROR,
    CallRecord,
    ErrorInfo,
    fq_name,
    no_error_info,
)
from payi_otel.span_attributes import SpanStarter

logger = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

_CALL_OPERATIONS = A.PROVIDER_CALL_OPERATIONS
_PROVIDER_CATEGORIES = A.PROVIDER_CATEGORIES


# --- business context ----------------------------------------------------------------------------
def business_attributes(layer: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
    """The payi.* attributes of the current business context, with ``layer`` merged innermost.

    A per-call layer that breaks a rule (e.g. a use-case id header with no use case in effect) is
    ignored with a warning: the call is still recorded with the context around it."""
    ctx = business_context.current_business_context()
    if layer:
        try:
            ctx = business_context.merge(ctx, **layer)
        except (TypeError, ValueError) as exc:
            logger.warning("ignoring per-call xProxy-* headers: %s", exc)
    return ctx.span_attributes if ctx is not None else None


_PROXY_HEADER_PREFIX = P.HEADER_PREFIX.lower()


def split_proxy_headers(headers: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, dict[str, Any]]:
    """Split Pay-i style ``xProxy-*`` per-call headers off ``headers``.

    Returns ``(context layer or None, headers to send to the provider)``. The ``xProxy-*`` headers are
    never forwarded to the provider, even when the business-context module cannot read them.
    """
    if not any(isinstance(k, str) and k.lower().startswith(_PROXY_HEADER_PREFIX) for k in headers):
        return None, dict(headers)
    layer: Mapping[str, Any] | None = None
    try:
        layer, _ = business_context.layer_from_headers(headers)
    except Exception:  # a malformed header must not break the call; it is dropped
        logger.warning("ignoring malformed xProxy-* header", exc_info=True)
    remaining = {k: v for k, v in headers.items() if not str(k).lower().startswith(_PROXY_HEADER_PREFIX)}
    return (layer or None), remaining


class SpanCore:
    """Owns the tracer, the meter instruments and the content-capture switch for one instrumentor."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | str | messages.ContentMode | None = None,
        logger_provider: LoggerProvider | None = None,
        version: str = "0.1.0",
        error_info: ErrorInfo = no_error_info,
    ) -> None:
        """``error_info`` is the provider's reader of an exception's HTTP status and provider request id."""
        self.tracer = trace.get_tracer(SCOPE_NAME, version, tracer_provider, schema_url=SCHEMA_URL)
        self.starter = SpanStarter(self.tracer)
        ensure_processor(tracer_provider)  # business context on other instrumentations' GenAI spans
        meter = metrics.get_meter(SCOPE_NAME, version, meter_provider, schema_url=SCHEMA_URL)
        self.metrics = CallMetrics(meter)  # recorded off the caller's thread, exact at every collection
        mode = (
            messages.content_mode_from_env()
            if capture_content is None
            else messages.parse_content_mode(capture_content, "capture_content")
        )
        self.content_mode = mode
        self.capture_content = mode.captures  # instrumentors collect content only then
        self.content_on_span = mode.on_span
        self.event_logger = (
            get_logger(SCOPE_NAME, version, logger_provider, schema_url=SCHEMA_URL) if mode.in_event else None
        )
        self.error_info = error_info

    def start(self, record: CallRecord) -> Call:
        """Open the span for ``record`` (request side known). Never raises into the caller."""
        model = record.request_model
        attrs: dict[str, Any] = {A.GEN_AI_OPERATION_NAME: record.operation, A.GEN_AI_PROVIDER_NAME: record.provider}
        if record.operation not in _CALL_OPERATIONS or _PROVIDER_CATEGORIES.get(record.provider) != record.category:
            attrs[A.PAYI_CATEGORY] = record.category
        if model:
            attrs[A.GEN_AI_REQUEST_MODEL] = model
        if record.server_address:
            attrs[A.SERVER_ADDRESS] = record.server_address
            if record.server_port:
                attrs[A.SERVER_PORT] = record.server_port
        if record.provider_uri:
            attrs[A.PAYI_PROVIDER_URI] = record.provider_uri
        if record.instrumented_module:
            attrs[A.PAYI_INSTRUMENTED_MODULE] = record.instrumented_module
        if record.proxied:
            attrs[A.PAYI_PROXIED] = True
        if record.reservation_id:
            attrs[A.PAYI_RESERVATION_ID] = record.reservation_id
        if record.stream:
            attrs[A.GEN_AI_REQUEST_STREAM] = True
        if record.max_tokens is not None:
            attrs[A.GEN_AI_REQUEST_MAX_TOKENS] = record.max_tokens
        if record.temperature is not None:
            attrs[A.GEN_AI_REQUEST_TEMPERATURE] = record.temperature
        if record.top_p is not None:
            attrs[A.GEN_AI_REQUEST_TOP_P] = record.top_p
        try:
            if record.business_layer is None:  # business_attributes(), inline for the common case
                ctx = business_context.current_business_context()
                business = ctx.span_attributes if ctx is not None else None
            else:
                business = business_attributes(record.business_layer)
        except Exception:  # a broken context must never break the call
            logger.debug("business context unavailable", exc_info=True)
            business = None
        if business:
            attrs.update(business)
        if record.resource_scope and A.PAYI_RESOURCE_SCOPE not in attrs:
            attrs[A.PAYI_RESOURCE_SCOPE] = record.resource_scope
        name = f"{record.operation} {model}" if model else record.operation
        t0 = time_ns()
        # The current context passed explicitly: the SDK reads it for the parent, the sampler and every span
        # processor, each time through the API otherwise.
        span = self.starter.start(name, fastcontext.get_current(), SpanKind.CLIENT, attrs, t0)
        return Call(self, record, span, t0, name, attrs)  # the SDK copied attrs; the finished call reuses them


__all__ = [
    "ABANDONED",
    "CLOSED_EARLY",
    "COMPLETED",
    "ERROR",
    "Call",
    "CallRecord",
    "SpanCore",
    "business_attributes",
    "fq_name",
    "no_error_info",
    "split_proxy_headers",
]
