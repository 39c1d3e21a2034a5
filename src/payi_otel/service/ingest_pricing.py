"""What one checked ingest event adds to its stored row: its price, and the provider data it keeps.

Used by :mod:`.ingest` once an event has passed every check: pricing never rejects an event (an event
that cannot be priced is stored unpriced, with the reason).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from payi_otel import protocol as P
from payi_otel.service.attribution import Attribution
from payi_otel.service.models import IngestRequest
from payi_otel.service.pricing import Pricer, PriceResult, price_custom
from payi_otel.service.store import Store

__all__ = ["price_event", "provider_data"]

_PROVIDER_FIELDS = (
    "provider_uri",
    "provider_request_json",
    "provider_request_reasoning_json",
    "provider_request_headers",
    "provider_response_json",
    "provider_response_headers",
    "provider_response_function_calls",
    "time_to_first_completion_token_ms",
)
_LOGGED_FIELDS = ("provider_request_json", "provider_response_json", "provider_request_reasoning_json")
_MODEL_LIST_FIELDS = ("provider_request_headers", "provider_response_headers", "provider_response_function_calls")


def price_event(
    store: Store,
    pricer: Pricer,
    event: IngestRequest,
    attr: Attribution,
    units: dict[str, dict[str, int]],
    event_ms: int,
    when: datetime,
    unreported: bool,
) -> PriceResult:
    """The price of ``units`` at the event's time: a custom price version of the application's, else the
    catalog's. ``unreported``: a call whose usage the provider did not report in full (none, or a stream left
    before its final usage report), whose cost is unknown (not $0, nor the price of the partial units)."""
    sent = event.properties or {}
    if unreported:
        reason = sent.get(P.USAGE_INCOMPLETE_REASON) or "usage not reported"
        what = (
            "usage not reported in full"
            if any(u["input"] or u["output"] for u in units.values())
            else "usage not reported"
        )
        return PriceResult(priced=False, unpriced_reason=f"{what} ({reason})")
    # xProxy-PriceAs-*: price the call as another category/resource; it stays stored as sent.
    price_category = attr.price_as_category or event.category
    price_resource = attr.price_as_resource or event.resource
    custom = store.custom_price_version(price_category, price_resource, event_ms, attr.resource_scope)
    if custom is not None:
        price = price_custom(custom.resource_id, custom.units, units, custom.resource)
    else:
        price = pricer.price(price_category, price_resource, units, when, attr.resource_scope)
    if price.resource_version is not None:
        store.remember_resource_version(price.resource_version, price_category, price_resource)
    return price


def provider_data(event: IngestRequest, logging_disabled: bool) -> dict[str, Any]:
    """The provider fields the event carries (most carry none); without prompts and responses when its use
    case or its attribution keeps none."""
    data: dict[str, Any] = {}
    if event.model_fields_set.isdisjoint(_PROVIDER_FIELDS):
        return data
    for f in _PROVIDER_FIELDS:
        value = getattr(event, f)
        if value is not None:
            data[f] = value
    if data:
        if logging_disabled:
            for f in _LOGGED_FIELDS:
                data.pop(f, None)
        for f in _MODEL_LIST_FIELDS:
            if f in data:
                data[f] = [h.model_dump() for h in data[f]]
    return data
