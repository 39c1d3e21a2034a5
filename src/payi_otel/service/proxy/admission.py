"""Admission of a call against its block limits: the call's worst-case cost, its reservation, the refusal.

Shared by the proxy and by ``POST /api/v1/reservations`` (enforcement in the plugin without a proxy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from payi_otel.service.pricing import price_custom
from payi_otel.service.proxy.base import DEFAULT_OUTPUT_BOUND
from payi_otel.service.routes.common import Service
from payi_otel.service.store import Admission, Application, new_id

RESERVATION_TTL_MS = 15 * 60 * 1000  # a call whose end is never reported gives its reservation back after this
LIMIT_REACHED = "Insufficient limit for the requested operation"


@dataclass(frozen=True, slots=True)
class WorstCase:
    """What bounds a call's cost before it is made."""

    category: str
    resource: str | None
    input_bound: int
    output_bound: int | None  # None: not bounded by the request
    price_as_category: str | None = None
    price_as_resource: str | None = None
    resource_scope: str | None = None


def worst_case_cost(svc: Service, call: WorstCase) -> float:
    """USD of the input bound plus the output bound at the model's prices (0 when the model has none)."""
    category = call.price_as_category or call.category
    resource = call.price_as_resource or call.resource
    if resource is None:
        return 0.0
    output = call.output_bound
    if output is None:
        window = svc.ingestor.pricer.context_window(category, resource)
        output = max(window - call.input_bound, 0) if window else DEFAULT_OUTPUT_BOUND
    units = {"text": {"input": call.input_bound, "output": output}}
    when = datetime.now(UTC)
    custom = svc.store.custom_price_version(category, resource, int(when.timestamp() * 1000), call.resource_scope)
    if custom is not None:
        price = price_custom(custom.resource_id, custom.units, units, custom.resource)
    else:
        price = svc.ingestor.pricer.price(category, resource, units, when, call.resource_scope)
    return price.total_cost if price.priced else 0.0


def reserve(svc: Service, app: Application, limit_ids: list[str], call: WorstCase) -> Admission:
    """Reserve the call's worst case against its block limits (on the writer thread, in its transaction)."""
    now = svc.now_ms()
    return svc.store.reserve(
        app.id, new_id(), limit_ids, worst_case_cost(svc, call), now_ms=now, expires_ms=now + RESERVATION_TTL_MS
    )


def limit_states(svc: Service, app: Application, limit_ids: list[str], admission: Admission) -> dict[str, Any]:
    """Each named limit's state for the answer, with its spend and max (refused calls: blocked states)."""
    refused = set(admission.blocked)
    states: dict[str, Any] = {}
    for lid in limit_ids:
        record = svc.store.limit(app.id, lid)
        if record is None:
            continue
        if lid in refused:
            state = "blocked"
        elif admission.blocked and lid in admission.block_limits:
            state = "blocked_external"
        else:
            state = record.state
        states[lid] = {"state": state, "max": record.max, "spend": record.cost_total}
    return states


def refusal(
    svc: Service, app: Application, limit_ids: list[str], admission: Admission, **context: Any
) -> dict[str, Any]:
    """The HTTP 400 body of a refused call (Pay-i's ``limit_reached``)."""
    return {
        "statusCode": 400,
        "message": "Bad Request",
        "xproxy_error": {
            "code": "limit_reached",
            "message": f"{LIMIT_REACHED}: block limits {', '.join(admission.blocked)} cannot take the call's "
            f"worst-case cost of ${admission.amount:.6g} (spend and calls in flight are at or near max)",
        },
        "xproxy_result": {
            "request_id": new_id(),
            "blocked_limit_ids": admission.blocked,
            "limits": limit_states(svc, app, limit_ids, admission),
            **context,
        },
    }
