"""Starting an SDK span without the generic work of ``Tracer.start_span``, when the outcome is the same.

The OpenTelemetry SDK's ``Tracer.start_span`` asks the sampler for a decision through several Python calls
(``ParentBased`` -> its delegate -> ``_get_parent_trace_state``, each reading the parent span from the context
again, and a ``SamplingResult`` with a mapping proxy of the attributes), builds the trace flags twice and checks
its arguments: about a third of what starting a span costs. When the tracer's sampler is one of the SDK's static
samplers (``ALWAYS_ON``, ``ALWAYS_OFF``) or a ``ParentBased`` whose delegates are all static (the SDK's default,
``parentbased_always_on``), the decision depends only on the parent span's context, so :func:`start_span` makes
it directly, and then does exactly what ``Tracer.start_span`` does with it: the same id generator calls in the same
order, the same trace flags and trace state, the SDK's own span metrics, the SDK's span class built with the tracer's
resource, processors, limits and scope, started with the same context (so every span processor's ``on_start`` runs
as usual). The span a processor or exporter sees is the one ``Tracer.start_span`` would have made.

This is done only for the SDK releases whose ``Tracer.start_span`` it has been checked against
(:data:`CHECKED_SDK`), and only for the exact SDK tracer and sampler classes above. Any other tracer, sampler
(ratio-based, custom, a subclass), an SDK release not checked, a disabled tracer, or a parent span context that
is not a ``SpanContext`` go through ``Tracer.start_span``.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["CHECKED_SDK", "decisions", "start_span"]

# SDK release lines whose Tracer.start_span this module reproduces (checked line by line).
CHECKED_SDK = ("1.45.",)

# The parameters of the SDK span's __init__, in the order start_span passes them.
_SPAN_PARAMETERS = (
    "self", "name", "context", "parent", "sampler", "trace_config", "resource", "attributes", "events", "links", "kind",
    "span_processor", "instrumentation_info", "record_exception", "set_status_on_exception", "limits",
    "instrumentation_scope", "record_end_metrics",
)  # fmt: skip

try:
    from opentelemetry.sdk import version as _sdk_version
    from opentelemetry.sdk.trace import Tracer as _SDKTracer
    from opentelemetry.sdk.trace import _Span
    from opentelemetry.sdk.trace import sampling as _sampling
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry.trace.propagation import _SPAN_KEY
    from opentelemetry.trace.span import Span as _APISpan

    _FLAGS = {
        (sampled, random_id): TraceFlags(
            (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
        )
        for sampled in (False, True)
        for random_id in (False, True)
    }
    _AVAILABLE = (
        _sdk_version.__version__.startswith(CHECKED_SDK)
        and isinstance(_SPAN_KEY, str)
        and tuple(inspect.signature(_Span.__init__).parameters) == _SPAN_PARAMETERS
    )
except (ImportError, AttributeError):  # pragma: no cover - another SDK or API release: Tracer.start_span always
    _AVAILABLE = False

# (root, remote parent sampled, remote parent not sampled, local parent sampled, local parent not sampled)
Decisions = tuple[Any, Any, Any, Any, Any]


def _static(sampler: Any) -> Any:
    if type(sampler) is _sampling.StaticSampler:
        return sampler._decision
    return None


def decisions(tracer: Any) -> Decisions | None:
    """The fixed sampling decisions of ``tracer`` by kind of parent, or None when :func:`start_span` must not be
    used for it (module doc)."""
    if not _AVAILABLE or type(tracer) is not _SDKTracer:
        return None
    sampler = getattr(tracer, "sampler", None)
    own = _static(sampler)
    if own is not None:
        return own, own, own, own, own
    if type(sampler) is not _sampling.ParentBased:
        return None
    found = tuple(
        _static(getattr(sampler, name, None))
        for name in ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
                     "_local_parent_not_sampled")
    )  # fmt: skip
    return None if None in found else found


def start_span(tracer: Any, decided: Decisions, name: str, context: Any, kind: Any, start_ns: int) -> Any:
    """``tracer.start_span(name, context, kind, start_time=start_ns)`` for a tracer whose :func:`decisions` are
    ``decided``, with the same outcome; None when the tracer's own ``start_span`` must decide."""
    if not tracer._tracer_config.is_enabled:
        return None
    parent = context.get(_SPAN_KEY)
    parent_context = parent.get_span_context() if parent is not None and isinstance(parent, _APISpan) else None
    ids = tracer.id_generator
    if parent_context is not None and not isinstance(parent_context, SpanContext):
        return None  # the SDK raises its TypeError
    if parent_context is None or not parent_context.is_valid:
        parent_context = None
        trace_id = ids.generate_trace_id()
        decision = decided[0]
        trace_state = None
        random_id = ids.is_trace_id_random()
    else:
        trace_id = parent_context.trace_id
        flags = parent_context.trace_flags
        if parent_context.is_remote:
            decision = decided[1] if flags.sampled else decided[2]
        else:
            decision = decided[3] if flags.sampled else decided[4]
        trace_state = parent_context.trace_state
        random_id = flags.random_trace_id
    span_context = SpanContext(
        trace_id,
        ids.generate_span_id(),
        is_remote=False,
        trace_flags=_FLAGS[decision.is_sampled(), bool(random_id)],
        trace_state=trace_state,
    )
    record_end_metrics = tracer._tracer_metrics.start_span(parent_context, decision)
    if not decision.is_recording():
        return NonRecordingSpan(context=span_context)
    span = _Span(  # positional (binding 16 keywords costs more than the rest of the call): _SPAN_PARAMETERS
        name, span_context, parent_context, tracer.sampler, None, tracer.resource, None, None, (), kind,
        tracer.span_processor, tracer.instrumentation_info, True, True, tracer._span_limits,
        tracer._instrumentation_scope, record_end_metrics=record_end_metrics,
    )  # fmt: skip
    span.start(start_time=start_ns, parent_context=context)
    return span
