"""Provider calls from GenAI span views: two spans of one call (two instrumentations) joined into one event.

Spans of one call: in the same trace, one the **direct parent** of the other, with the same Pay-i
category and the same model (request model, else response model, compared without case). The call's
event is the one of the span ranked highest: a span that carries business context (``payi.*`` use
case, user, account, tags, limits or properties) ranks above one that does not, and between those
this project's own span (it carries Pay-i units or its instrumented module) ranks above another
instrumentation's. Attribution and properties the kept event lacks are taken from the other span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from payi_otel import attributes as A

from .mapping import ATTRIBUTION_FIELDS, event_from_view
from .views import SpanView

__all__ = ["Call", "calls_from_views", "merge_into"]

_CONTEXT_FIELDS = (*ATTRIBUTION_FIELDS, "use_case_properties")
_MERGED_MAPPINGS = ("properties", "use_case_properties")


@dataclass(slots=True)
class Call:
    """One provider call: the event stored for it and the spans (one or more) that traced it."""

    event: dict[str, Any]
    rank: int
    key: str
    trace_id: str
    spans: list[tuple[str, str]]  # (span id, parent span id) in hex; parent "" for a root


def _rank(event: dict[str, Any], view: SpanView) -> int:
    has_context = any(event.get(f) for f in _CONTEXT_FIELDS) or any(
        k.startswith(A.PAYI_REQUEST_PROPERTIES_PREFIX) for k in view.attributes
    )
    ours = event.get("instrumented_module") is not None or any(
        k.startswith(A.PAYI_UNITS_PREFIX) for k in view.attributes
    )
    return 2 * has_context + ours


def _call_key(event: dict[str, Any], view: SpanView) -> str:
    attrs = view.attributes
    model = attrs.get(A.GEN_AI_REQUEST_MODEL) or attrs.get(A.GEN_AI_RESPONSE_MODEL) or event["resource"]
    return f"{event.get('properties', {}).get('system.original_category', event['category'])}/{str(model).lower()}"


def merge_into(kept: dict[str, Any], other: dict[str, Any]) -> None:
    """Give ``kept`` the attribution and properties only ``other`` has."""
    for name in ATTRIBUTION_FIELDS:
        if kept.get(name) in (None, "", []) and other.get(name) not in (None, "", []):
            kept[name] = other[name]
    for name in _MERGED_MAPPINGS:
        extra = other.get(name)
        if extra:
            kept[name] = {**extra, **kept.get(name, {})}


def _join(first: Call, second: Call) -> Call:
    kept, dropped = (first, second) if first.rank >= second.rank else (second, first)
    merge_into(kept.event, dropped.event)
    kept.spans.extend(dropped.spans)
    return kept


def calls_from_views(views: Iterable[SpanView], include_content: bool = True) -> list[Call]:
    """The provider calls of some spans: nested spans of one call (see the module doc) joined."""
    calls: dict[tuple[int, int], Call] = {}  # (trace id, span id) -> its call
    pending: list[tuple[SpanView, Call]] = []
    for view in views:
        event = event_from_view(view, include_content=include_content)
        if event is None:
            continue
        call = Call(
            event,
            _rank(event, view),
            _call_key(event, view),
            f"{view.trace_id:032x}",
            [(f"{view.span_id:016x}", f"{view.parent_span_id:016x}" if view.parent_span_id else "")],
        )
        calls[(view.trace_id, view.span_id)] = call
        pending.append((view, call))
    for view, _ in pending:  # children point at their parents
        parent = calls.get((view.trace_id, view.parent_span_id)) if view.parent_span_id else None
        own = calls[(view.trace_id, view.span_id)]
        if parent is not None and parent is not own and parent.key == own.key:
            joined = _join(parent, own)
            for span_id, _ in joined.spans:
                calls[(view.trace_id, int(span_id, 16))] = joined
    unique: dict[int, Call] = {id(call): call for call in calls.values()}
    return list(unique.values())
