"""``/api/v1/reports``: cost reports, the request list, one request's detail and the use cases overview.

An application key reads its own application's data only; the admin token (or no credentials on a loopback
service) reads every application's. A window whose ``since`` is not before its
``until`` holds no requests (an empty report, not an error).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from payi_otel.service import models_admin as MA
from payi_otel.service import models_reports as M
from payi_otel.service.errors import PayiApiError
from payi_otel.service.reports import ReportError, build_report, parse_time
from payi_otel.service.routes.common import (
    MAX_PAGE,
    Cursor,
    PageSize,
    Service,
    decode_cursor,
    errors,
    iso,
    json_response,
    page,
)
from payi_otel.service.routes.common import request_id as new_request_id
from payi_otel.service.store import Application, ReportQuery

PREFIX = "/api/v1/reports"
Window = Annotated[M.ReportWindow, Query()]


def _bound(value: str | datetime | None, name: str, now: datetime) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    return parse_time(value, name, now)


def report_query(svc: Service, app: Application | None, window: M.ReportWindow) -> ReportQuery:
    """The query of a window, for one application (an application key) or every one (an administrator)."""
    now = datetime.fromtimestamp(svc.clock(), UTC)
    try:
        query = ReportQuery(
            since_ms=_bound(window.since, "since", now),
            until_ms=_bound(window.until, "until", now),
            application=None if app is None else app.name,
            filters=window.filters(),
            status=window.status,
        )
    except (ReportError, OverflowError, OSError, ValueError) as exc:
        raise PayiApiError(400, "invalid_report_query", str(exc)) from None
    return query


def _item(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row.pop("_key")
    row["event_timestamp"] = iso(row.pop("event_ms"))
    return row


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["reports"])
    store = svc.store

    @api.get(
        "",
        response_model=M.Report,
        responses=errors(400),
        summary="Cost, requests, tokens by kind, failures and latency, grouped and filtered",
    )
    async def report(
        request: Request,
        window: Window,
        group_by: list[M.Dimension] = Query(  # type: ignore[valid-type]  # noqa: B008
            [], description="Dimensions to group by, in order (repeat the parameter)"
        ),
    ) -> Response:
        query = report_query(svc, svc.reader(request), window)
        dims = list(dict.fromkeys(group_by))
        body = (await run_in_threadpool(build_report, store, dims, query)).as_dict()
        return json_response({"request_id": new_request_id(), **body})

    @api.get(
        "/requests",
        response_model=M.RequestPage,
        responses=errors(400),
        summary="The requests of the window and filters, newest first, in cursor pages",
    )
    async def list_requests(
        request: Request,
        window: Window,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = Query(False, description="Oldest first (true) or newest first (false, the default)"),
    ) -> Response:
        query = report_query(svc, svc.reader(request), window)
        after = decode_cursor(cursor, 2)
        if after is not None and not all(type(v) is int for v in after):
            raise PayiApiError(400, "invalid_cursor", "cursor: not a cursor returned by this list (pass it unchanged)")
        rows = await run_in_threadpool(
            store.request_page, query, (after[0], after[1]) if after else None, limit + 1, not sort_ascending
        )
        return json_response(page([_item(r) for r in rows], [r["_key"] for r in rows], limit))

    @api.get(
        "/requests/{request_id}",
        response_model=M.RequestDetail,
        responses=errors(404),
        summary="Everything stored about one request: units, cost, context, status, ids, captured content",
    )
    async def request_detail(request_id: str, request: Request) -> Response:
        app = svc.reader(request)
        detail = await run_in_threadpool(store.request_detail, request_id, None if app is None else app.name)
        if detail is None:
            raise PayiApiError(404, "request_not_found", "no request with that id in this application")
        detail["event_timestamp"] = iso(detail.pop("event_ms"))
        detail["ingest_timestamp"] = iso(detail.pop("ingest_ms"))
        return json_response(detail)

    @api.get(
        "/use_cases",
        response_model=MA.UseCasesOverview,
        responses=errors(400),
        summary="Use cases with their instances and KPI scores, and the newest instances",
    )
    async def use_cases(
        request: Request,
        application: str | None = Query(None, max_length=64, description="Only this application's use cases"),
        recent: int = Query(20, ge=0, le=MAX_PAGE, description=f"How many of the newest instances (0-{MAX_PAGE})"),
    ) -> Response:
        app = svc.reader(request)
        name = application if app is None else app.name
        foreign = app is not None and application not in (None, app.name)  # a key reads its own application only

        def read() -> dict[str, Any]:
            if foreign:
                return {"use_cases": [], "recent_instances": []}
            instances = store.recent_use_case_instances(name, recent) if recent else []
            for item in instances:
                item["created"] = iso(item.pop("created_ms"))
            return {"use_cases": store.use_case_summaries(name), "recent_instances": instances}

        return json_response({"request_id": new_request_id(), **await run_in_threadpool(read)})

    return api
