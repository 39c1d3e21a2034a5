"""What an ingest answers: the ``xproxy_result`` of a stored request and the IngestResponse body.

Built from the stored columns, so the answer is the same at ingest, on a duplicate and on a later read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from payi_otel.service.store import StoredRequest


def iso_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Stored:
    """Where an ingested item went: a new request, or the one it duplicates."""

    request_id: str
    duplicate: bool


def xproxy_result(stored: StoredRequest, *, duplicate: bool = False) -> dict[str, Any]:
    """The ``xproxy_result`` of a stored request (the same at ingest, on a duplicate and on read)."""
    result: dict[str, Any] = {
        "request_id": stored.request_id,
        "use_case_name": stored.use_case_name,
        "use_case_id": stored.use_case_id,
        "use_case_version": stored.use_case_version,
        "use_case_step": stored.use_case_step,
        "user_id": stored.user_id,
        "account_name": stored.account_name,
        "resource_id": stored.resource_id,
        "cost": None,
        "unknown_units": stored.unknown_units,
        "limits": {lid: {"state": state} for lid, state in stored.limits.items()},
        "duplicate_request": duplicate,
    }
    if stored.request_tags:
        result["request_tags"] = stored.request_tags
    if stored.cost_total is not None:
        result["cost"] = {
            "currency": "usd",
            "input": {"base": stored.cost_input},
            "output": {"base": stored.cost_output},
            "total": {"base": stored.cost_total, "overrun_base": 0.0},
        }
    else:
        result["warnings"] = [f"unpriced: {stored.unpriced_reason}"]
    if stored.unknown_units and stored.cost_total is not None:
        result["warnings"] = [f"units without a price, not in the cost: {', '.join(sorted(stored.unknown_units))}"]
    return result


def response_body(stored: StoredRequest, *, duplicate: bool) -> dict[str, Any]:
    """The IngestResponse body for a stored request."""
    return {
        "request_id": stored.request_id,
        "event_timestamp": iso_timestamp(stored.event_ms),
        "ingest_timestamp": iso_timestamp(stored.ingest_ms),
        "xproxy_result": xproxy_result(stored, duplicate=duplicate),
    }
