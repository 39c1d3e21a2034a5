"""``/api/v1/limits``: create, list (cursor pages), retrieve, update, delete, properties, reset, history."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from payi_otel.service import models_limits as M
from payi_otel.service import schedules
from payi_otel.service.errors import PayiApiError
from payi_otel.service.routes.common import (
    Cursor,
    PageSize,
    Service,
    SortAscending,
    api_error,
    decode_cursor,
    errors,
    iso,
    json_response,
    page,
    request_id,
)
from payi_otel.service.store import HistoryRecord, LimitRecord, StoreError, new_id

PREFIX = "/api/v1/limits"


def _iso_only(value: object) -> object:
    """A reset date is ISO 8601; a bare number (which pydantic would read as epoch seconds) is refused."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an ISO 8601 date and time, not a number")
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
ResetDate = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    Query(alias="resetDate", description="Effective date of the reset (ISO 8601; default: now)"),
]
# Pay-i's codes for a limit body that fails validation: a bad max has its own.
VALIDATION_CODES = {
    ("POST", PREFIX): {"max": "invalid_max_limit", "*": "create_limit_validation_failed"},
    ("PUT", PREFIX + "/{limit_id}"): {"max": "invalid_max_limit", "*": "update_limit_validation_failed"},
}


def limit_body(limit: LimitRecord) -> dict[str, Any]:
    return {
        "limit_id": limit.limit_id,
        "limit_name": limit.limit_name,
        "limit_type": limit.limit_type,
        "max": limit.max,
        "threshold": limit.threshold,
        "limit_creation_timestamp": iso(limit.created_ms),
        "limit_update_timestamp": iso(limit.updated_ms),
        "totals": limit.totals(),
        "properties": limit.properties,
        "state": limit.state,
        "reset_schedule": limit.reset_schedule,
        "next_reset_timestamp": iso(limit.next_reset_ms),
    }


def history_body(record: HistoryRecord) -> dict[str, Any]:
    return {
        "limit_id": record.limit_id,
        "limit_name": record.limit_name,
        "limit_type": record.limit_type,
        "max": record.max,
        "limit_reset_timestamp": iso(record.reset_ms),
        "limit_tags": [],
        "totals": record.totals,
        "trigger": record.trigger,
    }


def _limit_response(limit: LimitRecord, status: int = 200, message: str | None = None) -> Response:
    return json_response({"request_id": request_id(), "message": message, "limit": limit_body(limit)}, status)


def _schedule(value: str | None, code: str) -> str | None:
    """The normalized reset schedule; a bad one is refused as a bad limit body (``code``)."""
    if value is None:
        return None
    try:
        return schedules.normalize(value)
    except schedules.ScheduleError as exc:
        raise PayiApiError(400, code, f"reset_schedule: {exc}") from None


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["limits"])
    store = svc.store

    async def write(work: Any) -> Any:
        try:
            return await svc.committer.run(work)
        except StoreError as exc:
            raise api_error(exc) from None

    @api.post(
        "",
        status_code=201,
        response_model=M.LimitResponse,
        responses=errors(400),
        summary="Create a limit (limit_name unique in the application; limit_id optional)",
    )
    async def create_limit(body: M.LimitCreate, request: Request) -> Response:
        app = svc.authenticate(request)
        schedule = _schedule(body.reset_schedule, "create_limit_validation_failed")
        limit = await write(
            lambda: store.create_limit(
                app.id,
                limit_id=body.limit_id or new_id(),
                limit_name=body.limit_name,
                max_=body.max,
                limit_type=body.limit_type,
                threshold=1.0 if body.threshold is None else body.threshold,
                properties=body.properties,
                reset_schedule=schedule,
                now_ms=svc.now_ms(),
            )
        )
        return _limit_response(limit, 201, "Limit created")

    @api.get(
        "", response_model=M.LimitPage, responses=errors(400), summary="List limits, oldest first, in cursor pages"
    )
    async def list_limits(
        request: Request,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
        limit_name: str | None = Query(None, description="Only the limit with this name"),
    ) -> Response:
        app = svc.authenticate(request)
        after = decode_cursor(cursor, 2)
        rows = store.list_limits(
            app.id,
            limit_name=limit_name,
            ascending=sort_ascending,
            after=(after[0], after[1]) if after else None,
            count=limit + 1,
        )
        return json_response(page([limit_body(r) for r in rows], [[r.created_ms, r.limit_id] for r in rows], limit))

    @api.get("/{limit_id}", response_model=M.LimitResponse, responses=errors(404), summary="Retrieve a limit")
    async def retrieve_limit(limit_id: str, request: Request) -> Response:
        app = svc.authenticate(request)
        limit = store.limit(app.id, limit_id)
        if limit is None:
            raise PayiApiError(404, "limit_not_found", f"no limit with limit_id {limit_id!r} in this application")
        return _limit_response(limit)

    @api.put(
        "/{limit_id}",
        response_model=M.LimitResponse,
        responses=errors(400, 404),
        summary="Update a limit's name and/or max (max never below the current spend)",
    )
    async def update_limit(limit_id: str, body: M.LimitUpdate, request: Request) -> Response:
        app = svc.authenticate(request)
        given = body.model_fields_set
        schedule = _schedule(body.reset_schedule, "update_limit_validation_failed")
        limit = await write(
            lambda: store.update_limit(
                app.id,
                limit_id,
                limit_name=body.limit_name,
                max_=body.max,
                reset_schedule=schedule,
                clear_schedule="reset_schedule" in given and schedule is None,
                now_ms=svc.now_ms(),
            )
        )
        return _limit_response(limit, message="Limit updated")

    @api.delete("/{limit_id}", response_model=M.DefaultResponse, responses=errors(404), summary="Delete a limit")
    async def delete_limit(limit_id: str, request: Request) -> Response:
        app = svc.authenticate(request)
        if not await write(lambda: store.delete_limit(app.id, limit_id)):
            raise PayiApiError(404, "limit_not_found", f"no limit with limit_id {limit_id!r} in this application")
        return json_response({"request_id": request_id(), "message": "Limit deleted"})

    @api.put(
        "/{limit_id}/properties",
        response_model=list[M.LimitResponse],
        responses=errors(400, 404),
        summary="Merge limit properties (a null value deletes the key)",
    )
    async def update_limit_properties(limit_id: str, body: M.LimitPropertiesUpdate, request: Request) -> Response:
        app = svc.authenticate(request)
        limit = await write(lambda: store.update_limit_properties(app.id, limit_id, body.properties, svc.now_ms()))
        return json_response([{"request_id": request_id(), "message": None, "limit": limit_body(limit)}])

    @api.post(
        "/{limit_id}/reset",
        response_model=M.LimitHistoryResponse,
        responses=errors(400, 404),
        summary="Reset a limit's totals to zero, keeping them as a history snapshot (returned)",
    )
    async def reset_limit(
        limit_id: str,
        request: Request,
        reset_date: ResetDate = None,
    ) -> Response:
        app = svc.authenticate(request)
        if reset_date is not None and reset_date.tzinfo is None:
            reset_date = reset_date.replace(tzinfo=UTC)
        when = svc.now_ms() if reset_date is None else int(reset_date.timestamp() * 1000)
        record = await write(lambda: store.reset_limit(app.id, limit_id, reset_ms=when))
        body = {"request_id": request_id(), "message": "Limit reset", "limit_history": history_body(record)}
        return json_response(body)

    @api.get(
        "/{limit_id}/history",
        response_model=M.LimitHistoryList,
        responses=errors(404),
        summary="Beyond Pay-i: the snapshots kept by the limit's resets, oldest first",
    )
    async def limit_history(limit_id: str, request: Request) -> Response:
        app = svc.authenticate(request)
        if store.limit(app.id, limit_id) is None:
            raise PayiApiError(404, "limit_not_found", f"no limit with limit_id {limit_id!r} in this application")
        items = [history_body(r) for r in store.limit_history(app.id, limit_id)]
        return json_response({"request_id": request_id(), "items": items})

    return api
