"""One provider call in flight (:class:`Call`): made current around the provider call and each stream
read, ended exactly once, and handed to the cost-record sinks (:mod:`payi_otel.finished`) before control
returns to the caller. The span is started by :class:`payi_otel.core.SpanCore`, which documents which
attributes are written and which the exporter derives."""

from __future__ import annotations

import json
import logging
import random
from contextvars import Token
from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import Logger, LogRecord
from opentelemetry.trace import Status, StatusCode

from payi_otel import attributes as A
from payi_otel import fastcontext, fastjson, finished, messages
from payi_otel.call_metrics import MetricKey
from payi_otel.record import CallRecord, fq_name
from payi_otel.span_attributes import DIRECT_SPAN, store_attributes
from payi_otel.units import Usage, to_units

if TYPE_CHECKING:
    from payi_otel.core import SpanCore

__all__ = ["Call"]

logger = logging.getLogger("payi_otel.core")

_NO_USAGE = "provider reported no usage"


# One encoder for every call (``json.dumps`` with options builds a new one each time); same output.
_json = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":")).encode


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


class Call:
    """One provider call in flight. Ends exactly once through :meth:`end` or :meth:`fail`."""

    __slots__ = ("_context", "_ended", "_t0", "_ttft_ns", "attributes", "core", "data", "name", "record", "span")

    def __init__(
        self,
        core: SpanCore,
        record: CallRecord,
        span: trace.Span,
        start_ns: int | None = None,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.core = core
        self.record = record
        self.span = span
        self.data: Any = None  # free slot for the instrumentor's per-call state
        self.name = getattr(span, "name", "") if name is None else name
        self.attributes: dict[str, Any] = {} if attributes is None else attributes  # request-side attributes
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
            ctx = self._context = fastcontext.with_span(self.span, fastcontext.get_current())
        return ctx

    def activate(self) -> Token[otel_context.Context]:
        """Make the call's span current; :meth:`deactivate` with the token restores the caller's context."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = fastcontext.with_span(self.span, fastcontext.get_current())
        return fastcontext.enter(ctx)

    deactivate = staticmethod(fastcontext.leave)

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
            if rec.status_code is None and status is not None and status >= 400:  # (an error event carries 200)
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
        span: Any = self.span
        usage = rec.usage
        error_type = fq_name(exc) if exc is not None else None
        direct = type(span) is DIRECT_SPAN  # the SDK's span: its fields are read, not its properties
        recording = span._end_time is None if direct else span.is_recording()
        sinks = finished.current_sinks  # read without a call or a lock
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
                if not (direct and store_attributes(span, attrs)):
                    span.set_attributes(attrs)
                if exc is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, message))
        if event_logger is not None:
            self._emit_details(event_logger, attrs)
        if sinks:  # before the span ends: a span exporter must find the call journaled
            # The finished call, given to the cost-record sinks on this thread, before the caller continues.
            if direct:
                ctx, parent, resource = span._context, span._parent, span._resource
            else:
                ctx, parent = span.get_span_context(), getattr(span, "parent", None)
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
                recording,
                parent.span_id if parent is not None else 0,
                resource,
            )
            for sink in sinks:
                try:
                    sink(done)
                except Exception:
                    logger.exception("payi-otel: could not record the finished call %s", self.name)
        span.end(end_time=end_ns)  # the span's duration is the call's end-to-end latency
        call_metrics = self.core.metrics
        if call_metrics.live:
            key: MetricKey = (rec.operation, rec.provider, rec.request_model, rec.response_model,
                              rec.server_address, rec.server_port, error_type)  # fmt: skip
            call_metrics.queue(
                (
                    key,
                    max(end_ns - self._t0, 0) / 1e9,
                    usage.input_tokens if usage is not None else None,
                    usage.output_tokens if usage is not None else None,
                )
            )

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
        if rec.finish_reasons:  # a tuple: what the SDK stores, so the span takes it without a copy
            attrs[A.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(rec.finish_reasons)
        if rec.tool_calls:
            attrs[A.PAYI_FUNCTION_CALLS] = fastjson.compact(rec.tool_calls)  # dicts of str: _json's text
        if self._ttft_ns is not None:
            attrs[A.PAYI_TIME_TO_FIRST_TOKEN_MS] = self._ttft_ns // 1_000_000
        if rec.stream_outcome is not None:
            attrs[A.PAYI_STREAM_OUTCOME] = rec.stream_outcome
        reason = rec.usage_incomplete_reason
        if usage is not None and (usage.input_tokens is not None or usage.reported):
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
