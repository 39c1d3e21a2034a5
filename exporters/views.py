"""One small, read-only view of a finished span, whatever form it arrived in.

The mapping (:mod:`payi_otel.exporters.mapping`) reads only :class:`SpanView`, so the SDK's
``ReadableSpan``, an OTLP protobuf ``Span`` (:mod:`.otlp_proto`) and the OTLP/JSON form of a span
(:mod:`.otlp_json`) all convert the same way; :func:`payi_otel.exporters.otlp.spans_from_otlp_request`
unpacks a whole OTLP export request.

Spans that arrive over OTLP keep only the attributes the mapping can read (see
:func:`is_mapped_attribute`), and spans that carry no GenAI attribute at all are skipped before any
of their attributes is decoded (see :data:`GENAI_MARKERS`): a real trace has many more of those.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from types import MappingProxyType
from typing import Any, TypeVar

from opentelemetry.trace import StatusCode

from payi_otel import attributes as A

__all__ = [
    "GENAI_MARKERS",
    "MAPPED_NAMES",
    "NO_RESOURCE",
    "MappedKeys",
    "OtlpDecodeError",
    "SpanView",
    "gc_paused",
    "is_mapped_attribute",
    "remember",
    "resource_properties",
    "view_from_readable_span",
]

NO_RESOURCE: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class SpanView:
    """What the mapping needs from a finished span. Read-only by convention (not frozen: a frozen
    dataclass costs more to build than the rest of a view)."""

    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]  # values: str, bool, int, float or tuples of those
    is_error: bool  # span status is ERROR
    status_message: str | None
    trace_id: int
    span_id: int
    parent_span_id: int = 0  # 0: a root span (or unknown)
    # Request properties from the span's resource (service.name, ...; see attributes.RESOURCE_PROPERTIES).
    resource: Mapping[str, str] = field(default_factory=lambda: NO_RESOURCE)


class OtlpDecodeError(ValueError):
    """The OTLP request body cannot be decoded; the message says which part and why."""


# The mapping reads attributes named in payi_otel.attributes (and their older spellings) and whole
# namespaces by prefix (payi.units.*, payi.request_properties.*, ...).
_MAPPED_NAMESPACES = ("payi.", "gen_ai.", "llm.")
# A span none of whose encoded bytes contain one of these cannot be a GenAI provider call, so OTLP
# decoders skip it whole: one substring search per marker instead of decoding its attributes. A
# marker inside some value only costs that span a full decode.
GENAI_MARKERS = tuple(prefix.encode() for prefix in _MAPPED_NAMESPACES)
MAPPED_NAMES = frozenset(
    chain(
        (value for name, value in vars(A).items() if name.isupper() and isinstance(value, str)),
        chain.from_iterable(A.LEGACY.values()),
    )
)


def is_mapped_attribute(key: str) -> bool:
    """Whether the mapping can read attribute ``key``; OTLP decoders drop the others."""
    return key.startswith(_MAPPED_NAMESPACES) or key in MAPPED_NAMES


T = TypeVar("T")
CACHE_SIZE = 65_536  # entries of each wire cache; with CACHE_MAX_BYTES, at most ~12 MiB each
CACHE_MAX_BYTES = 160  # message content and other long attributes are decoded every time


def remember(cache: dict[bytes, T], raw: bytes, decoded: T) -> T:
    """Keep ``decoded`` as what the encoding ``raw`` decodes to in an OTLP decoder's cache.

    Encoded attributes repeat across spans (operation, provider, model, user, token counts), so
    decoders remember them by their bytes. Long encodings are not kept, and a full cache (ids and
    other one-off values filled it) starts over.
    """
    if len(raw) <= CACHE_MAX_BYTES:
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[raw] = decoded
    return decoded


class MappedKeys(dict[bytes, "str | None"]):
    """An OTLP decoder's cache: encoded attribute key (UTF-8, no escapes) -> the key, or ``None`` for a
    key the mapping never reads."""

    def __missing__(self, raw: bytes) -> str | None:
        key = raw.decode()
        return remember(self, raw, key if is_mapped_attribute(key) else None)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a request decodes and maps.

    Decoding a large OTLP request allocates hundreds of thousands of small acyclic objects; each
    batch of allocations would otherwise start a collection that walks the whole process heap,
    which cost several times the decoding itself. Nothing made here forms a cycle, so nothing is
    left uncollected; a collector the application disabled stays disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- SDK ReadableSpan -----------------------------------------------------------------------


def resource_properties(attributes: Mapping[str, Any]) -> Mapping[str, str]:
    """The request properties a resource's attributes give (``service.name``, ...).

    The SDK's placeholder ``service.name`` (``unknown_service``, ``unknown_service:python``) names no
    service and is left out.
    """
    found = {}
    for key, prop in A.RESOURCE_PROPERTIES.items():
        value = attributes.get(key)
        if value is not None and value != "" and prop not in found:
            found[prop] = str(value)
    if found.get(A.SERVICE_NAME, "").startswith("unknown_service"):
        del found[A.SERVICE_NAME]
    return found or NO_RESOURCE


def view_from_readable_span(span: Any) -> SpanView:
    """View of an SDK ``ReadableSpan`` (no copy of its attributes)."""
    # ``span.attributes`` is a read-only proxy over BoundedAttributes, which copies its keys under
    # a lock on every iteration; a finished span's attributes never change, so read its plain dict.
    attributes = getattr(getattr(span, "_attributes", None), "_dict", None)
    if not isinstance(attributes, dict):
        attributes = span.attributes or {}
    status = span.status
    ctx = span.context
    return SpanView(
        span.name,
        span.start_time or 0,
        span.end_time or span.start_time or 0,
        attributes,
        status.status_code is StatusCode.ERROR,
        status.description,
        ctx.trace_id if ctx is not None else 0,
        ctx.span_id if ctx is not None else 0,
        span.parent.span_id if span.parent is not None else 0,
        readable_resource(span.resource),
    )


_resource_seen: tuple[Any, Mapping[str, str]] = (None, NO_RESOURCE)  # an SDK's spans share one Resource


def readable_resource(resource: Any) -> Mapping[str, str]:
    global _resource_seen
    seen, props = _resource_seen
    if seen is not resource:
        props = NO_RESOURCE if resource is None else resource_properties(resource.attributes)
        _resource_seen = (resource, props)  # one assignment: threads never see a torn pair
    return props


def kvlist_json(pairs: dict[str, Any]) -> str:
    """A key-value list attribute value (OTLP ``kvlistValue``), which spans cannot hold: as JSON."""
    return json.dumps(pairs)
