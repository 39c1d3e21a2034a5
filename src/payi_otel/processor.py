"""The span processor that relates other instrumentations' GenAI spans to ours.

:class:`BusinessContextSpanProcessor` is added once to the SDK ``TracerProvider`` (by ``instrument()``,
by the Pay-i exporter and by our instrumentors when they load, so the zero-code path has it too). For
every span that another instrumentation starts (openai-v2 / opentelemetry-util-genai, OpenLLMetry,
OpenInference, a provider SDK's own spans) and that looks like a GenAI span when it starts
(``gen_ai.*`` or ``llm.*`` attributes, or an OpenInference span kind):

* it stamps the business context in effect (the ``payi.*`` attributes of ``@track`` /
  ``track_context`` / ``instrument()`` defaults) on the span; nothing else on it changes;
* it remembers (in bounded process memory) the foreign spans that trace the same provider call as one
  of ours: the foreign GenAI spans our span starts under (its parent, and that span's GenAI parents
  when several instrumentations are stacked), and the foreign GenAI spans started under our span (or
  under such a span). Our call already produced the call's cost record, so the Pay-i exporter drops
  exactly those spans (:func:`covered`), and one call stays one event.

Our own spans are recognised by their instrumentation scope (``payi_otel``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

from payi_otel import context as business_context
from payi_otel.span_attributes import quiet_on_start

__all__ = ["BusinessContextSpanProcessor", "covered", "ensure_processor", "forget_processor"]

SCOPE_NAME = "payi_otel"  # the instrumentation scope of our spans (payi_otel.core.SCOPE_NAME)
_GENAI_PREFIXES = ("gen_ai.", "llm.")
_OPENINFERENCE_KIND = "openinference.span.kind"
_MEMORY = 65_536  # covered foreign spans remembered until exported

_covered: OrderedDict[int, None] = OrderedDict()
_genai_parents: OrderedDict[int, int] = OrderedDict()  # foreign GenAI span -> its foreign GenAI parent
_covered_lock = threading.Lock()


def _remember(span_id: int) -> None:
    with _covered_lock:
        while True:
            _covered[span_id] = None
            if len(_covered) > _MEMORY:
                _covered.popitem(last=False)
            parent = _genai_parents.pop(span_id, None)
            if parent is None:
                return
            span_id = parent


def _link(span_id: int, parent_id: int) -> bool:
    """Note that foreign GenAI span ``span_id`` started under foreign GenAI span ``parent_id``; True when
    the parent already traces a call of ours (so does the child)."""
    with _covered_lock:
        if parent_id in _covered:
            return True
        _genai_parents[span_id] = parent_id
        if len(_genai_parents) > _MEMORY:
            _genai_parents.popitem(last=False)
        return False


def covered(span_id: int) -> bool:
    """True (once) when the foreign span ``span_id`` traced a call one of our spans traced too."""
    with _covered_lock:
        return _covered.pop(span_id, 0) is None


def _is_ours(span: Any) -> bool:
    try:  # the SDK span's own fields: no property call (this runs for every span)
        return span._instrumentation_scope._name == SCOPE_NAME  # type: ignore[no-any-return]
    except AttributeError:
        scope = getattr(span, "instrumentation_scope", None)
        return scope is not None and scope.name == SCOPE_NAME


def _looks_genai(span: Any) -> bool:
    attributes = span.attributes or {}
    return any(key.startswith(_GENAI_PREFIXES) or key == _OPENINFERENCE_KIND for key in attributes)


class BusinessContextSpanProcessor(SpanProcessor):
    """Business context on foreign GenAI spans; which of them duplicate a call of ours."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            if _is_ours(span):
                if span._parent is None:  # a root span of ours: no span of another instrumentation above it
                    return
                parent = trace.get_current_span(parent_context)
                if parent.is_recording() and not _is_ours(parent) and _looks_genai(parent):
                    _remember(parent.get_span_context().span_id)  # ours starts under theirs
                return
            parent = trace.get_current_span(parent_context)
            if not _looks_genai(span):
                return
            if parent.is_recording():
                span_id = span.get_span_context().span_id
                if _is_ours(parent):
                    _remember(span_id)  # theirs starts under ours
                elif _looks_genai(parent) and _link(span_id, parent.get_span_context().span_id):
                    _remember(span_id)
            ctx = business_context.current_business_context()
            if ctx is not None and ctx.span_attributes:
                span.set_attributes(ctx.span_attributes)
        except Exception:  # never break the other instrumentation's span
            pass

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


quiet_on_start(BusinessContextSpanProcessor)  # it reads only the scope and the parent of our spans
_added_lock = threading.Lock()


def ensure_processor(provider: Any = None) -> None:
    """Add the processor to ``provider`` (default: the global one) once, when it is an SDK provider."""
    if provider is None:
        provider = trace.get_tracer_provider()
    if not isinstance(provider, SDKTracerProvider):
        return
    with _added_lock:
        if getattr(provider, "_payi_otel_context_processor", None) is not None:
            return
        processor = BusinessContextSpanProcessor()
        provider._payi_otel_context_processor = processor  # type: ignore[attr-defined]
    provider.add_span_processor(processor)


def forget_processor(provider: Any) -> BusinessContextSpanProcessor | None:
    """The processor :func:`ensure_processor` added to ``provider`` (for removal), now forgotten."""
    with _added_lock:
        processor: BusinessContextSpanProcessor | None = getattr(provider, "_payi_otel_context_processor", None)
        if processor is not None:
            provider._payi_otel_context_processor = None
    return processor
