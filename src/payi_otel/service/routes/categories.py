"""``/api/v1/categories``: system categories (read-only, priced by genai-prices) and custom resources with versions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from payi_otel.service import models_catalog as M
from payi_otel.service.errors import PayiApiError
from payi_otel.service.pricing import CATEGORY_PROVIDERS
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
)
from payi_otel.service.store import ResourceVersion, StoreError, new_id

PREFIX = "/api/v1/categories"
SYSTEM_PREFIX = "system."
T = TypeVar("T")
Active = Annotated[bool | None, Query(alias="Active", description="Only what is in force now")]


def _read_only(category: str) -> PayiApiError:
    return PayiApiError(403, "category_read_only", f"category {category!r} is a system category and cannot be changed")


def _paged(
    items: list[dict[str, Any]],
    key: Callable[[dict[str, Any]], list[Any]],
    cursor: str | None,
    size: int,
    ascending: bool,
) -> dict[str, Any]:
    """A cursor page over a list computed in full (catalog lists are small)."""
    items = sorted(items, key=key, reverse=not ascending)
    after = decode_cursor(cursor, len(key(items[0])) if items else 0, key(items[0]) if items else None)
    if after is not None:
        items = [i for i in items if (key(i) > after if ascending else key(i) < after)]
    return page(items[: size + 1], [key(i) for i in items[: size + 1]], size)


def version_bodies(versions: list[ResourceVersion], now_ms: int) -> list[dict[str, Any]]:
    """Pay-i's CategoryResourceResponse for each version; ``active`` = in force now for its scope."""
    out = []
    for v in versions:
        later = [w.start_ms for w in versions if w.scope == v.scope and w.start_ms > v.start_ms]
        end = min(later) if later else None
        out.append(
            {
                "resource_id": v.resource_id,
                "category": v.category,
                "resource": v.resource,
                "units": v.units,
                "start_timestamp": iso(v.start_ms),
                "end_timestamp": iso(end),
                "active": v.start_ms <= now_ms and (end is None or now_ms < end),
                "proxy_allowed": False,
                "max_input_units": v.max_input_units,
                "max_output_units": v.max_output_units,
                "max_total_units": v.max_total_units,
                "scope": v.scope,
            }
        )
    return out


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["categories and resources"])
    store, pricer = svc.store, svc.ingestor.pricer

    async def write(work: Callable[[], T]) -> T:
        try:
            return await svc.committer.run(work)
        except StoreError as exc:
            raise api_error(exc) from None

    def system_version(category: str, resource: str) -> dict[str, Any] | None:
        described = pricer.describe(category, resource, datetime.now(UTC))
        if described is None:
            return None
        resource_id, units = described
        return {
            "resource_id": resource_id,
            "category": category,
            "resource": resource,
            "units": units,
            "start_timestamp": iso(0),
            "end_timestamp": None,
            "active": True,
            "proxy_allowed": True,
        }

    def versions_of(category: str, resource: str) -> list[dict[str, Any]]:
        if category in CATEGORY_PROVIDERS:
            found = system_version(category, resource)
            if found is None:
                raise PayiApiError(404, "category_resource_not_found", f"no resource {resource!r} in {category!r}")
            return [found]
        versions = store.resource_versions(category, resource)
        if not versions:
            raise PayiApiError(404, "category_resource_not_found", f"no resource {resource!r} in {category!r}")
        return version_bodies(versions, svc.now_ms())

    def resources_of(category: str) -> list[dict[str, Any]]:
        if category in CATEGORY_PROVIDERS:
            return [v for r in pricer.system_resources(category) if (v := system_version(category, r))]
        names = store.custom_resource_names(category)
        if not names:
            raise PayiApiError(404, "category_not_found", f"no category {category!r}")
        out: list[dict[str, Any]] = []
        for name in names:
            bodies = version_bodies(store.resource_versions(category, name), svc.now_ms())
            active = [b for b in bodies if b["active"]]
            out.extend(active or bodies[:1])  # none in force yet: the first one to come
        return out

    @api.get("", response_model=M.CategoryPage, responses=errors(400), summary="List system and custom categories")
    async def list_categories(
        request: Request,
        active: Active = None,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
    ) -> Response:
        svc.authenticate(request)
        items = [{"category": c, "category_type": "system"} for c in CATEGORY_PROVIDERS]
        items += [
            {"category": c, "category_type": "custom"} for c in store.custom_categories() if c not in CATEGORY_PROVIDERS
        ]
        return json_response(_paged(items, lambda i: [i["category"]], cursor, limit, sort_ascending))

    @api.delete(
        "/{category}",
        response_model=list[M.Resource],
        responses=errors(403, 404),
        summary="Delete a custom category and all its resources (system categories are read-only)",
    )
    async def delete_category(category: str, request: Request) -> Response:
        svc.authenticate(request)
        if category.startswith(SYSTEM_PREFIX):
            raise _read_only(category)
        deleted = await write(lambda: store.delete_resource_versions(category))
        return json_response(version_bodies(deleted, svc.now_ms()))

    @api.get(
        "/{category}/resources",
        response_model=M.ResourcePage,
        responses=errors(400, 404),
        summary="The resources of a category (for custom ones, the version in force now)",
    )
    async def list_resources(
        category: str,
        request: Request,
        active: Active = None,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
    ) -> Response:
        svc.authenticate(request)
        items = [i for i in resources_of(category) if not active or i["active"]]
        return json_response(_paged(items, lambda i: [i["resource"], i["resource_id"]], cursor, limit, sort_ascending))

    @api.post(
        "/{category}/resources/{resource}",
        status_code=201,
        response_model=M.Resource,
        responses=errors(400, 403),
        summary="Create a custom resource, or a new version of it",
    )
    async def create_resource(category: str, resource: str, body: M.ResourceCreate, request: Request) -> Response:
        svc.authenticate(request)
        if category.startswith(SYSTEM_PREFIX):
            raise _read_only(category)
        start = body.start_timestamp
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        version = ResourceVersion(
            new_id(),
            category,
            resource,
            body.scope,
            {k: u.model_dump() for k, u in body.units.items()},
            body.max_input_units,
            body.max_output_units,
            body.max_total_units,
            svc.now_ms() if start is None else int(start.timestamp() * 1000),
        )
        await write(lambda: store.create_resource_version(version, svc.now_ms()))
        bodies = version_bodies(store.resource_versions(category, resource), svc.now_ms())
        return json_response(next(b for b in bodies if b["resource_id"] == version.resource_id), 201)

    @api.get(
        "/{category}/resources/{resource}",
        response_model=M.ResourcePage,
        responses=errors(400, 404),
        summary="The versions of a resource, oldest first",
    )
    async def list_versions(
        category: str,
        resource: str,
        request: Request,
        active: Active = None,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
    ) -> Response:
        svc.authenticate(request)
        items = [i for i in versions_of(category, resource) if not active or i["active"]]
        key = lambda i: [i["start_timestamp"], i["resource_id"]]  # noqa: E731
        return json_response(_paged(items, key, cursor, limit, sort_ascending))

    @api.delete(
        "/{category}/resources/{resource}",
        response_model=list[M.Resource],
        responses=errors(403, 404),
        summary="Delete a custom resource with all its versions",
    )
    async def delete_resource(category: str, resource: str, request: Request) -> Response:
        svc.authenticate(request)
        if category.startswith(SYSTEM_PREFIX):
            raise _read_only(category)
        deleted = await write(lambda: store.delete_resource_versions(category, resource))
        return json_response(version_bodies(deleted, svc.now_ms()))

    @api.get(
        "/{category}/resources/{resource}/{resource_id}",
        response_model=M.Resource,
        responses=errors(404),
        summary="One version of a resource",
    )
    async def retrieve_version(category: str, resource: str, resource_id: str, request: Request) -> Response:
        svc.authenticate(request)
        for body in versions_of(category, resource):
            if body["resource_id"] == resource_id:
                return json_response(body)
        raise PayiApiError(404, "category_resource_not_found", f"{resource!r} has no version {resource_id!r}")

    @api.delete(
        "/{category}/resources/{resource}/{resource_id}",
        response_model=M.Resource,
        responses=errors(403, 404),
        summary="Delete one version of a custom resource",
    )
    async def delete_version(category: str, resource: str, resource_id: str, request: Request) -> Response:
        svc.authenticate(request)
        if category.startswith(SYSTEM_PREFIX):
            raise _read_only(category)
        deleted = await write(lambda: store.delete_resource_versions(category, resource, resource_id))
        return json_response(version_bodies(deleted, svc.now_ms())[0])

    return api
