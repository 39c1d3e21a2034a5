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

import json
import logging
import random
from collections.abc import Callable, Mapping
from contextvars import Token
from dataclasses import dataclass
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry._logs import Logger, LoggerProvider, LogRecord, get_logger
from opentelemetry.trace import SpanKind, Status, StatusCode

from payi_otel import attributes as A
from payi_otel import context as business_context
from payi_otel import finished, messages
from payi_otel import protocol as P
from payi_otel.call_metrics import CallMetrics, MetricKey
from payi_otel.processor import SCOPE_NAME, ensure_processor
from payi_otel.units import Usage, to_units

logger = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"



# Stream outcomes (payi.stream.outcome).
COMPLETED = "completed"
CLOSED_EARLY = "closed_early"
ERROR = "error"
ABANDONED = "abandoned"

_NO_USAGE = "provider reported no usage"

_CALL_OPERATIONS = A.PROVIDER_CALL_OPERATIONS
_PROVIDER_CATEGORIES = A.PROVIDER_CATEGORIES




@dataclass(slots=True)
class CallRecord:
    """What an instrumentor knows about one provider call. The core turns it into span attributes."""

    provider: str  # gen_ai.provider.name, e.g. "openai", "azure.ai.openai"
    operation: str  # gen_ai.operation.name, e.g. "chat", "embeddings"
    category: str  # Pay-i category, e.g. "system.openai"
    request_model: str | None = None
    response_model: str | None = None
    resource: str | None = None  # Pay-i resource when it differs from the model (Azure deployment mapping)
    resource_scope: str | None = None  # provider-derived price scope; the business context's own wins
    server_address: str | None = None
    server_port: int | None = None
    provider_uri: str | None = None
    instrumented_module: str | None = None  # e.g. "openai/3.54.0"
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    usage: Usage | None = None
    usage_incomplete_reason: str | None = None  # set => payi.usage.complete = false
    status_code: int | None = None
    response_id: str | None = None
    finish_reasons: list[str] | None = None
    tool_calls: list[dict[str, str]] | None = None  # [{"name": ..., "arguments": "..."}]
    stream_outcome: str | None = None
    # Content, only filled when capture is on: messages and system instructions in the conventions' schema
    # (payi_otel.messages).
    input_messages: Any = None
    output_messages: Any = None
    system_instructions: Any = None
    business_layer: Mapping[str, Any] | None = None  # innermost context layer (per-call headers)
    proxied: bool = False  # sent through a Pay-i proxy, which stores the call (no ingest event)
    reservation_id: str | None = None  # held against the call's block limits (settled by its ingest)


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


def fq_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _usage_attributes(attrs: dict[str, Any], usage: Usage) -> None:
    """Token counts (semantic conventions), and Pay-i units where the counts do not already give them."""
    if usage.input_tokens is not None:
        attrs[A.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
    if usage.output_tokens is not None:
        attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
    if usage.cache_read_tokens:
        attrs[A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens + usage.cache_write_1h_tokens
    if cache_write:
        attrs[A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = cache_write
    if usage.reasoning_tokens:
        attrs[A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
    if usage.needs_units():
        prefix = A.PAYI_UNITS_PREFIX
        for unit, directions in to_units(usage).items():
            for direction, value in directions.items():
                if value or unit == "text":  # zero directions of other units say nothing
                    attrs[f"{prefix}{unit}.{direction}"] = value


ErrorInfo = Callable[[BaseException], "tuple[int | None, str | None]"]


def no_error_info(exc: BaseException) -> tuple[int | None, str | None]:
    """The default reader of a provider error: it knows no HTTP status and no request id."""
    return None, None


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
        ensure_processor(tracer_provider)  # business context on other instrumentations' GenAI spans
        meter = metrics.get_meter(SCOPE_NAME, version, meter_provider, schema_url=SCHEMA_URL)
        self.metrics = CallMetrics(meter)  # recorded off the caller's thread, exact at every collection
        mode = messages.content_mode_from_env() if capture_content is None else messages.parse_content_mode(
            capture_content, "capture_content"
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
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attrs, start_time=t0)
        call = Call(self, record, span, t0)
        call.name = name
        call.attributes = attrs  # the SDK copied them; the finished call reuses this dict
        return call


class Call:
    """One provider call in flight. Ends exactly once through :meth:`end` or :meth:`fail`."""

    __slots__ = ("_context", "_ended", "_t0", "_ttft_ns", "attributes", "core", "data", "name", "record", "span")

    def __init__(self, core: SpanCore, record: CallRecord, span: trace.Span, start_ns: int | None = None) -> None:
        self.core = core
        self.record = record
        self.span = span
        self.data: Any = None  # free slot for the instrumentor's per-call state
        self.name = getattr(span, "name", "")
        self.attributes: dict[str, Any] = {}  # the request-side span attributes
        self._t0 = time_ns() if start_ns is None else start_ns  # the span's start time
        self._ttft_ns: int | None = None
        self._ended = False
        self._context: otel_context.Context | None = None

    @property
    def capture_content(self) -> bool:
        return self.core.capture_content

    @property
    def ended(self) -> bool:
        return self._ended

    # -- current-span handling around the provider call (same frame only) ---------------------
    @property
    def context(self) -> otel_context.Context:
        """The caller's context at first use, with this call's span current (built once)."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = trace.set_span_in_context(self.span)
        return ctx

    def activate(self) -> Token[otel_context.Context]:
        return otel_context.attach(self.context)

    @staticmethod
    def deactivate(token: Token[otel_context.Context]) -> None:
        otel_context.detach(token)

    def first_token(self) -> None:
        """The first chunk that counts as output arrived (the provider module decides which one)."""
        if self._ttft_ns is None:
            self._ttft_ns = max(time_ns() - self._t0, 0)

    # -- endings --------------------------------------------------------------------------------
    def end(self) -> None:
        """The call succeeded (or a stream ended): write the response side and end the span."""
        if self._ended:
            return
        self._ended = True
        try:
            self._finish(None)
        except Exception:  # instrumentation must never break the caller
            logger.debug("failed to finish GenAI span", exc_info=True)
            self.span.end()

    def fail(self, exc: BaseException) -> None:
        """The call raised ``exc`` (which the caller re-raises unchanged)."""
        if self._ended:
            return
        self._ended = True
        try:
            rec = self.record
            status, request_id = self.core.error_info(exc)
            if rec.status_code is None and status is not None:
                rec.status_code = status
            if rec.response_id is None and request_id is not None:
                rec.response_id = request_id
            self._finish(exc)
        except Exception:
            logger.debug("failed to finish GenAI span", exc_info=True)
            self.span.end()

    def _finish(self, exc: BaseException | None) -> None:
        end_ns = time_ns()
        rec = self.record
        span = self.span
        usage = rec.usage
        error_type = fq_name(exc) if exc is not None else None
        recording = span.is_recording()
        sinks = finished.sinks()
        message = None
        event_logger = self.core.event_logger
        if recording or sinks or event_logger is not None:
            attrs = self._response_attributes(rec, usage, exc is not None)
            if exc is not None:
                attrs[A.ERROR_TYPE] = error_type
                message = f"{error_type}: {exc}"[:1024]
                if rec.status_code is None:
                    attrs[A.PAYI_FAILURE_DESCRIPTION] = message
            if recording:
                span.set_attributes(attrs)
                if exc is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, message))
        if event_logger is not None:
            self._emit_details(event_logger, attrs)
        if sinks:  # before the span ends: a span exporter must find the call journaled
            self._hand_over(sinks, attrs, end_ns, message, recording)
        span.end(end_time=end_ns)  # the span's duration is the call's end-to-end latency
        self._record_metrics(rec, usage, max(end_ns - self._t0, 0) / 1e9, error_type)

    def _hand_over(
        self, sinks: tuple[finished.Sink, ...], attrs: dict[str, Any], end_ns: int, message: str | None, sampled: bool
    ) -> None:
        """Give the finished call to the cost-record sinks (on this thread, before the caller continues)."""
        span = self.span
        ctx = span.get_span_context()
        parent = getattr(span, "parent", None)
        resource = getattr(span, "resource", None)
        if resource is None:  # not sampled: the resource of the provider behind our tracer
            tracer = self.core.tracer
            resource = getattr(getattr(tracer, "_real_tracer", None) or tracer, "resource", None)
        all_attrs = self.attributes
        all_attrs.update(attrs)
        done = finished.FinishedCall(
            self.name,
            self._t0,
            end_ns,
            all_attrs,
            message is not None,
            message,
            ctx.trace_id or random.getrandbits(128),  # no SDK: still a stable id for this call's record
            ctx.span_id or random.getrandbits(64),
            sampled,
            parent.span_id if parent is not None else 0,
            resource,
        )
        for sink in sinks:
            try:
                sink(done)
            except Exception:
                logger.exception("payi-otel: could not record the finished call %s", self.name)

    def _emit_details(self, event_logger: Logger, attrs: dict[str, Any]) -> None:
        """The ``gen_ai.client.inference.operation.details`` event: the call's attributes and its content."""
        rec = self.record
        details = {**self.attributes, **attrs}
        for key, value in (
            (A.GEN_AI_INPUT_MESSAGES, rec.input_messages),
            (A.GEN_AI_OUTPUT_MESSAGES, rec.output_messages),
            (A.GEN_AI_SYSTEM_INSTRUCTIONS, rec.system_instructions),
        ):
            if value is not None:
                details[key] = value
            else:
                details.pop(key, None)
        event_logger.emit(
            LogRecord(
                event_name=messages.INFERENCE_DETAILS_EVENT,
                attributes=details,
                context=trace.set_span_in_context(self.span),
            )
        )

    def _response_attributes(self, rec: CallRecord, usage: Usage | None, failed: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if rec.response_model:
            attrs[A.GEN_AI_RESPONSE_MODEL] = rec.response_model
        if rec.resource and rec.resource != (rec.request_model or rec.response_model):
            attrs[A.PAYI_RESOURCE] = rec.resource
        if rec.response_id:
            attrs[A.GEN_AI_RESPONSE_ID] = rec.response_id
        status = rec.status_code
        if status is not None:
            if status >= 400:  # read back by the exporter as the provider status
                attrs[A.HTTP_RESPONSE_STATUS_CODE] = status
            elif status != 200 or failed:
                attrs[A.PAYI_HTTP_STATUS_CODE] = status
        if rec.finish_reasons:
            attrs[A.GEN_AI_RESPONSE_FINISH_REASONS] = rec.finish_reasons
        if rec.tool_calls:
            attrs[A.PAYI_FUNCTION_CALLS] = _json(rec.tool_calls)
        if self._ttft_ns is not None:
            attrs[A.PAYI_TIME_TO_FIRST_TOKEN_MS] = self._ttft_ns // 1_000_000
        if rec.stream_outcome is not None:
            attrs[A.PAYI_STREAM_OUTCOME] = rec.stream_outcome
        reason = rec.usage_incomplete_reason
        if usage is not None and usage.reported:
            _usage_attributes(attrs, usage)
        elif reason is None:
            reason = _NO_USAGE
        if reason is not None:
            attrs[A.PAYI_USAGE_COMPLETE] = False
            attrs[A.PAYI_USAGE_INCOMPLETE_REASON] = reason
        if self.core.content_on_span:
            if rec.input_messages is not None:
                attrs[A.GEN_AI_INPUT_MESSAGES] = _json(rec.input_messages)
            if rec.output_messages is not None:
                attrs[A.GEN_AI_OUTPUT_MESSAGES] = _json(rec.output_messages)
            if rec.system_instructions is not None:
                attrs[A.GEN_AI_SYSTEM_INSTRUCTIONS] = _json(rec.system_instructions)
        return attrs

    def _record_metrics(self, rec: CallRecord, usage: Usage | None, seconds: float, error_type: str | None) -> None:
        key: MetricKey = (rec.operation, rec.provider, rec.request_model, rec.response_model, rec.server_address,
                          rec.server_port, error_type)  # fmt: skip
        if usage is None:
            self.core.metrics.record(key, seconds, None, None)
        else:
            self.core.metrics.record(key, seconds, usage.input_tokens, usage.output_tokens)


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
