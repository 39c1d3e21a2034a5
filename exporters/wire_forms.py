"""The two wire forms of an ingest event (see :mod:`.mapping`): single and bulk ingest.

:func:`render_single` and :func:`render_bulk_item` turn one event dict into what ``POST /api/v1/ingest``
(attribution as ``xProxy-*`` headers, ``?id=``) and ``POST /api/v1/ingest/bulk`` (attribution in the
body, ``scope`` instead of ``resource_scope``) expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payi_otel import protocol as P

__all__ = ["ATTRIBUTION_FIELDS", "render_bulk_item", "render_single"]

# Event keys that are attribution: headers in the single form, body fields in the bulk form.
ATTRIBUTION_FIELDS = P.ATTRIBUTION_FIELDS
# reservation_id: beyond Pay-i, the local service's settlement of a block-limit reservation
_HEADER_NAMES = {
    **P.ATTRIBUTION_HEADERS,
    "instrumented_module": P.INSTRUMENTED_MODULE,
    "reservation_id": "xProxy-Reservation-ID",
}
_NOT_IN_BODY = frozenset(ATTRIBUTION_FIELDS) | {"instrumented_module", "reservation_id"}


def _header_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def render_single(event: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """``(query params, headers, body)`` for ``POST /api/v1/ingest``.

    Attribution travels as ``xProxy-*`` headers, the event id as ``?id=``; the body holds only
    ``IngestRequest`` fields.
    """
    headers = {_HEADER_NAMES[k]: _header_value(v) for k, v in event.items() if k in _HEADER_NAMES}
    body = {k: v for k, v in event.items() if k not in _NOT_IN_BODY}
    return {"id": event["provider_response_id"]}, headers, body


def render_bulk_item(event: Mapping[str, Any]) -> dict[str, Any]:
    """One ``BulkIngestRequest`` item for ``POST /api/v1/ingest/bulk`` (attribution in the body)."""
    item = {k: v for k, v in event.items() if k != "instrumented_module" and k != "resource_scope"}
    scope = event.get("resource_scope")
    if scope is not None:
        item["scope"] = scope
    return item
