"""Block-limit enforcement before a direct provider call, shared by every provider module.

A provider module builds its :class:`~payi_otel.core.CallRecord` (category, resource, request model),
then calls :func:`check_limits` with what bounds the call before it is made, read only when a check is
due (enforcement on): an upper bound of its input tokens (the size of the request in bytes) and its
output bound (``max_tokens`` and the like; ``None`` when the request sets none). When enforcement is on and
the call names block limits, the call's worst case is reserved (or checked against the cached
spend); a refusal raises :class:`~payi_otel.enforcement.LimitError` before the provider is called.
For an async call the reservation's round trip is awaited (see :func:`deferring`), never run on the
event loop's thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from payi_otel import enforcement
from payi_otel.context import call_context
from payi_otel.core import CallRecord

T = TypeVar("T")


def request_size(request: Any) -> int:
    """An upper bound of a request's input tokens: its JSON size in bytes (binary parts by their repr)."""
    return len(json.dumps(request, default=str).encode())


# What bounds a call: (an upper bound of its input tokens, its output bound or None).
Bounds = Callable[[], tuple[int, int | None]]


def check_limits(rec: CallRecord, bounds: Bounds) -> None:
    """Before a call that goes straight to the provider: reserve (or check) its block limits when
    enforcement is on, and keep the reservation on ``rec`` (its ingest event settles it)."""
    if rec.proxied or not enforcement.enabled():
        return
    planned = planned_call(rec, bounds)
    if planned is not None:
        rec.reservation_id = _check(planned)


def planned_call(rec: CallRecord, bounds: Bounds) -> enforcement.PlannedCall | None:
    """What enforcement needs to know of the call; None when it names no limits or has no resource."""
    ctx = call_context(rec.business_layer)
    limit_ids = ctx.limit_ids if ctx is not None else None
    resource = rec.resource or rec.request_model
    if not limit_ids or not resource or ctx is None:
        return None
    input_bound, output_bound = bounds()
    return enforcement.PlannedCall(
        tuple(limit_ids),
        rec.category,
        resource,
        input_bound,
        output_bound,
        ctx.price_as_category,
        ctx.price_as_resource,
        ctx.resource_scope,
    )


# --- async calls: the reservation's round trip is awaited -------------------------------------------
# While an async call's begin step runs, a check that needs a round trip raises ReserveFirst instead of
# blocking the event loop; the async wrapper awaits the reservation and runs the begin step again,
# which then takes the reservation made for the same planned call.
_DEFERRING: ContextVar[bool] = ContextVar("payi_otel_enforce_deferring", default=False)
_RESERVED: ContextVar[tuple[enforcement.PlannedCall, str | None] | None] = ContextVar(
    "payi_otel_enforce_reserved", default=None
)


class ReserveFirst(enforcement.LimitError):
    """Internal: the call must be reserved (awaited) before its begin step can finish. Never reaches callers."""

    def __init__(self, planned: enforcement.PlannedCall) -> None:
        super().__init__("the call's block limits are reserved first")
        self.planned = planned


def _check(planned: enforcement.PlannedCall) -> str | None:
    done = _RESERVED.get()
    if done is not None and done[0] == planned:
        return done[1]
    if _DEFERRING.get() and enforcement.needs_round_trip():
        raise ReserveFirst(planned)
    return enforcement.before_call(planned)


def deferring(begin: Callable[[], T]) -> T:
    """Run an async call's begin step: raises :class:`ReserveFirst` when a reservation must be awaited."""
    token = _DEFERRING.set(True)
    try:
        return begin()
    finally:
        _DEFERRING.reset(token)


async def reserve_then(planned: enforcement.PlannedCall, begin: Callable[[], T]) -> T:
    """Await the reservation of ``planned`` (raising a refusal), then run the begin step again with it."""
    reservation = await enforcement.abefore_call(planned)
    token = _RESERVED.set((planned, reservation))
    try:
        return begin()
    finally:
        _RESERVED.reset(token)
