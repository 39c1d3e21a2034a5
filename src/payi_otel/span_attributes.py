"""Writing a call's attributes on its span at the cost of a dictionary update.

The OpenTelemetry SDK's ``Span.set_attributes`` checks and cleans every value (several Python calls per
attribute: about 10,000 machine instructions for each one on CPython 3.11), which is most of what the
response side of a call costs on the caller's thread. The values the span core writes are already what
that cleaning produces (``str``, ``bool``, ``int``, ``float``, tuples of ``str``; lists of ``str``, which the SDK
stores as tuples), so :func:`set_attributes` stores them directly in the SDK span's attribute mapping, under the
same two locks and with the same rules (a key written again moves to the end; nothing on an ended span).

It does so only when the outcome is identical to the SDK's own: an SDK span whose class does not override
``set_attributes``, whose attribute store is the SDK's ``BoundedAttributes`` with no value-length limit and
room for every new attribute (so nothing is truncated or dropped), and only values of exactly those types.
Anything else (another SDK, a span subclass, a configured ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``, a
full span, an ended span, another value type) goes through ``span.set_attributes``.

The request-side attributes are written the same way when the span starts (:class:`SpanStarter`): the span is
started without attributes, then they are stored. That is only done when nothing that runs while the span
starts could read them: the tracer's sampler is one of the SDK's own samplers (their decision never depends
on attributes; they hand the attributes through unchanged) and every span processor is the SDK's simple or
batch processor or our own (none of them reads attributes when a span starts, or keeps a reference to the
span there). With any other sampler or span processor the attributes go to ``tracer.start_span`` as usual, so a
custom sampler or processor sees them. The new span is then reachable from no other code (it is in no context
yet), so these attributes are stored without taking the span's locks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import ProxyTracer, Span, SpanKind, Tracer

from payi_otel import span_start

__all__ = ["DIRECT_SPAN", "SpanStarter", "quiet_on_start", "set_attributes", "store_attributes"]

logger = logging.getLogger(__name__)

_PLAIN = frozenset({str, bool, int, float})
_STR_ONLY = frozenset({str})

try:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import Span as _SDKSpan
    from opentelemetry.sdk.trace import Tracer as _SDKTracer
    from opentelemetry.sdk.trace import export as _sdk_export
    from opentelemetry.sdk.trace import sampling as _sampling
except ImportError:  # pragma: no cover - the SDK is a dependency; without it every span takes the API path
    _SDKSpan = None  # type: ignore[assignment,misc]
    _SDKTracer = None  # type: ignore[assignment,misc]
    BoundedAttributes = None  # type: ignore[assignment,misc]

# Span classes seen so far -> whether their set_attributes is the SDK's own (decided once per class).
_direct_types: dict[type, bool] = {}


def _is_direct(cls: type) -> bool:
    direct = _direct_types.get(cls)
    if direct is None:
        direct = (
            _SDKSpan is not None
            and issubclass(cls, _SDKSpan)
            and getattr(cls, "set_attributes", None) is _SDKSpan.set_attributes
        )
        if len(_direct_types) < 64:  # a process has one or two span classes
            _direct_types[cls] = direct
    return direct


def _cleaned(attributes: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The attributes as the SDK would store them (``attributes`` itself when every value is already stored as
    it is: a plain value or a non-empty tuple of ``str``), or None when a value needs the SDK's cleaning."""
    for value in attributes.values():
        cls = type(value)
        if cls not in _PLAIN and not (cls is tuple and value and _STR_ONLY.issuperset(map(type, value))):
            break
    else:
        return attributes  # the common case: no copy
    items = {}
    for key, value in attributes.items():
        cls = type(value)
        if cls in _PLAIN:
            items[key] = value
        elif (cls is list or cls is tuple) and value and _STR_ONLY.issuperset(map(type, value)):
            items[key] = tuple(value)
        else:
            return None
    return items


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """``span.set_attributes(attributes)``, with the same outcome, for the attributes the span core writes."""
    if _is_direct(type(span)):
        try:
            if store_attributes(span, attributes):
                return
        except AttributeError:  # an SDK release with other internals: the public method from now on
            logger.debug("span attributes: the SDK's internals differ; using set_attributes", exc_info=True)
            _direct_types[type(span)] = False
    span.set_attributes(attributes)


def store_attributes(span: Any, attributes: Mapping[str, Any]) -> bool:
    """Store ``attributes`` in the mapping of an SDK span whose class is direct (:data:`DIRECT_SPAN` or
    :func:`_is_direct`); False (nothing written) when the SDK's own ``set_attributes`` must decide."""
    store = span._attributes
    if type(store) is not BoundedAttributes or store.max_value_len is not None:
        return False
    items = _cleaned(attributes)
    if items is None:
        return False
    with span._lock:
        if span._end_time is not None:
            return False  # the SDK warns and ignores the attributes
        values = store._dict
        maxlen = store.maxlen
        if maxlen is not None and len(values) + len(items) > maxlen:
            return False  # the SDK drops the oldest attributes to make room
        with store._lock:
            if not values.keys().isdisjoint(items):  # a key written again moves to the end
                for key in items:
                    values.pop(key, None)
            values.update(items)
    return True


# --- span start ----------------------------------------------------------------------------------------
# Span processors that never read a span's attributes in ``on_start``, nor keep the span there (ours is added by
# payi_otel.processor).
_QUIET_PROCESSORS: set[type] = set()
if _SDKTracer is not None:
    _QUIET_PROCESSORS.update({_sdk_export.SimpleSpanProcessor, _sdk_export.BatchSpanProcessor})


def quiet_on_start(cls: type) -> None:
    """Declare that span processor class ``cls`` never reads attributes when a span starts, nor keeps a reference
    to the span there."""
    _QUIET_PROCESSORS.add(cls)


def _sampler_ignores_attributes(sampler: Any, depth: int = 0) -> bool:
    """True for the SDK's own samplers (exact classes, delegates included): their decision never depends on
    the span's attributes, and a sampled span gets exactly the attributes it was started with."""
    if depth > 8 or _SDKTracer is None:
        return False
    cls = type(sampler)
    own_module = cls.__module__ == _sampling.__name__
    if cls in (_sampling.StaticSampler, _sampling.TraceIdRatioBased) or (
        own_module and cls.__name__ in ("_AlwaysOn", "_AlwaysOff")
    ):
        return True
    if issubclass(cls, _sampling.ParentBased) and own_module:
        delegates = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
                     "_local_parent_not_sampled")  # fmt: skip
        return all(_sampler_ignores_attributes(getattr(sampler, d, None), depth + 1) for d in delegates)
    return False


_NEVER = object()  # SpanStarter._sampler of a tracer that has no SDK tracer behind it, for good


class SpanStarter:
    """Starts spans on one tracer, storing their start attributes directly when that changes nothing (module
    doc). What the tracer's pipeline allows is decided again whenever its sampler or processors change."""

    __slots__ = ("_decided", "_direct", "_multi", "_processors", "_sampler", "_sdk", "tracer")

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._sdk: Any = None  # the SDK tracer behind ``tracer``, once known
        # The sampler and processors the last decision was made for, and the decision.
        self._sampler: Any = None
        self._multi: Any = None
        self._processors: Any = None
        self._direct = False
        self._decided: Any = None  # the sampler's fixed decisions when span_start.start_span may start spans

    def start(self, name: str, context: Context, kind: SpanKind, attributes: dict[str, Any], start_ns: int) -> Span:
        """``tracer.start_span(name, context, kind, attributes, start_time=start_ns)``, with the same outcome."""
        sdk = self._sdk
        if sdk is None:
            if self._sampler is _NEVER:  # a tracer with no SDK behind it, for good
                return self.tracer.start_span(name, context, kind=kind, attributes=attributes, start_time=start_ns)
            sdk = self._decide()
        elif sdk.sampler is not self._sampler or self._multi._span_processors is not self._processors:
            sdk = self._decide()
        if sdk is None or not self._direct:
            return self.tracer.start_span(name, context, kind=kind, attributes=attributes, start_time=start_ns)
        decided = self._decided
        span: Any = None if decided is None else span_start.start_span(sdk, decided, name, context, kind, start_ns)
        if span is None:
            span = sdk.start_span(name, context, kind, None, start_time=start_ns)
        if type(span) is DIRECT_SPAN:
            store = span._attributes
            if (
                type(store) is BoundedAttributes
                and store.max_value_len is None
                and not store._dict
                and (store.maxlen is None or len(attributes) <= store.maxlen)
            ):
                items = _cleaned(attributes)
                if items is not None:
                    # No lock: nothing else can reach the span yet (it is in no context, and the processors that
                    # saw it start keep no reference to it).
                    store._dict.update(items)
                    return span  # type: ignore[no-any-return]
        if span.is_recording():
            span.set_attributes(attributes)
        return span  # type: ignore[no-any-return]

    def _decide(self) -> Any:
        """The SDK tracer behind ``tracer`` (None without one), with the decision for its current pipeline."""
        tracer: Any = self.tracer
        tracer = getattr(tracer, "_real_tracer", None) or tracer  # the API's proxy tracer, once it has an SDK one
        multi = getattr(tracer, "span_processor", None)
        processors = getattr(multi, "_span_processors", None)
        if DIRECT_SPAN is None or type(tracer) is not _SDKTracer or not isinstance(processors, tuple):
            self._sdk = None
            if type(self.tracer) is not ProxyTracer:  # only the API's proxy tracer gets an SDK tracer later
                self._sampler = _NEVER
            return None
        sampler = tracer.sampler
        self._direct = _sampler_ignores_attributes(sampler) and all(type(p) in _QUIET_PROCESSORS for p in processors)
        self._decided = span_start.decisions(tracer) if self._direct else None
        self._sdk, self._sampler, self._multi, self._processors = tracer, sampler, multi, processors
        return tracer


def _direct_span_class() -> type | None:
    """The span class the SDK's tracer creates, when its attributes can be stored directly."""
    try:
        from opentelemetry.sdk.trace import _Span
    except ImportError:  # pragma: no cover
        return None
    return _Span if _is_direct(_Span) else None


DIRECT_SPAN: Any = _direct_span_class()  # Any: a type test against it must not narrow a span to object
