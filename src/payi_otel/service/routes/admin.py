"""``/api/v1/admin``: the organization (groups, applications and their usage, key slots), creating
applications and rotating their keys. Admin only: the admin token, or no credentials on a loopback service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from payi_otel.service import keys, models
from payi_otel.service import models_admin as M
from payi_otel.service.errors import PayiApiError
from payi_otel.service.firstrun import remember_rotated_key
from payi_otel.service.reports import build_report
from payi_otel.service.routes.common import Service, errors, iso, json_response, request_id
from payi_otel.service.routes.reports import Window, report_query
from payi_otel.service.store import StoreError

PREFIX = "/api/v1/admin"
VALIDATION_CODES = {("POST", f"{PREFIX}/applications"): {"*": "invalid_application"}}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": models.ApiError, "description": "No admin token (the service is not on loopback) or a wrong one"},
    403: {"model": models.ApiError, "description": "An application key was sent: admin actions need the admin token"},
}
AppName = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="The application's name")]
Slot = Annotated[int, Path(ge=1, le=2, description="Key slot, 1 or 2")]


def _usage(app: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any]:
    row = row or {}
    return {
        "name": app["name"],
        "group": app["group"],
        "created": iso(app["created_ms"]),
        "keys": [{"slot": k["slot"], "prefix": k["prefix"], "created": iso(k["created_ms"])} for k in app["keys"]],
        "requests": row.get("requests", 0),
        "cost_usd": row.get("cost_usd"),
        "unpriced_requests": row.get("unpriced_requests", 0),
        "failures": row.get("failures", 0),
        "input_tokens": row.get("input_tokens", 0),
        "output_tokens": row.get("output_tokens", 0),
        "latency_p50_ms": row.get("latency_p50_ms"),
        "latency_p95_ms": row.get("latency_p95_ms"),
    }


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["admin"])
    store = svc.store
    error_docs = {**errors(400), **_ADMIN_ERRORS}

    @api.get(
        "/organization",
        response_model=M.Organization,
        responses=error_docs,
        summary="Groups and their applications, with each application's usage in the window and its key slots",
    )
    async def organization(request: Request, window: Window) -> Response:
        svc.require_admin(request)
        query = report_query(svc, None, window)

        def read() -> dict[str, Any]:
            report = build_report(store, ["application"], query)
            usage = {row.group["application"]: row.as_dict() for row in report.rows}
            groups: dict[str, dict[str, Any]] = {}
            for app in store.applications():
                group = groups.setdefault(app["group"], {"name": app["group"], "applications": []})
                group["applications"].append(_usage(app, usage.get(app["name"])))
            for group in groups.values():
                apps = group["applications"]
                group["requests"] = sum(a["requests"] for a in apps)
                costs = [a["cost_usd"] for a in apps if a["cost_usd"] is not None]
                group["cost_usd"] = sum(costs) if costs else None
            return {
                "since": report.since,
                "until": report.until,
                "groups": sorted(groups.values(), key=lambda g: g["name"]),
            }

        return json_response({"request_id": request_id(), **await run_in_threadpool(read)})

    @api.post(
        "/applications",
        status_code=201,
        response_model=M.CreatedApplication,
        responses={**error_docs, 409: {"model": models.ApiError, "description": "An application of that name exists"}},
        summary="Create an application in a group (created if new); its two API keys are shown once",
    )
    async def create_application(body: M.CreateApplication, request: Request) -> Response:
        svc.require_admin(request)

        def create() -> list[dict[str, Any]]:
            _, first = store.create_application(body.name, body.group)
            second = store.rotate_key(body.name, 2)
            return [
                {"slot": slot, "key": key, "prefix": keys.display_prefix(key)}
                for slot, key in ((1, first), (2, second))
            ]

        try:
            issued = await svc.committer.run(create)
        except StoreError as exc:
            raise PayiApiError(409, "application_already_exists", f"name: {exc}") from None
        return json_response({"request_id": request_id(), "name": body.name, "group": body.group, "keys": issued}, 201)

    @api.post(
        "/applications/{name}/keys/{slot}",
        response_model=M.RotatedKey,
        responses={**error_docs, 404: {"model": models.ApiError, "description": "No application of that name"}},
        summary="Issue a new key in one of an application's two slots; the slot's old key stops working at once",
    )
    async def rotate_key(name: AppName, slot: Slot, request: Request) -> Response:
        svc.require_admin(request)
        try:
            key = await svc.committer.run(lambda: store.rotate_key(name, slot))
        except StoreError as exc:
            raise PayiApiError(404, "application_not_found", f"name: {exc}") from None
        remember_rotated_key(store.data_dir, name, slot, key)
        return json_response(
            {"request_id": request_id(), "name": name, "slot": slot, "key": key, "prefix": keys.display_prefix(key)}
        )

    return api
