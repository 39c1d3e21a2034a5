"""``/api/v1/use_cases``: definitions (versions, limit_config, KPIs) and instances (properties, KPI scores)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from payi_otel.service import models_limits as ML
from payi_otel.service import models_use_cases as M
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
from payi_otel.service.store import DefinitionRecord, InstanceRecord, KpiRecord, StoreError

PREFIX = "/api/v1/use_cases"
# Pay-i's codes for a definition body whose name or description fails validation.
_DEFINITION_CODES = {"name": "invalid_use_case_name", "description": "invalid_use_case_description"}
VALIDATION_CODES = {
    ("POST", PREFIX + "/definitions"): _DEFINITION_CODES,
    ("PUT", PREFIX + "/definitions/{use_case_name}"): _DEFINITION_CODES,
}
T = TypeVar("T")
_LIKERT = {"likert5": 5, "likert7": 7, "likert10": 10}


def definition_body(d: DefinitionRecord) -> dict[str, Any]:
    return {
        "request_id": request_id(),
        "name": d.name,
        "description": d.description or "",  # the client's model requires a string: "" until one is set
        "type_version": d.version,
        "limit_config": d.limit_config,
        "logging_enabled": d.logging_enabled,
        "created_timestamp": iso(d.created_ms),
        "updated_timestamp": iso(d.updated_ms),
    }


def kpi_body(k: KpiRecord) -> dict[str, Any]:
    return {
        "request_id": request_id(),
        "name": k.name,
        "description": k.description,
        "kpi_type": k.kpi_type,
        "goal": k.goal,
        "created_timestamp": iso(k.created_ms),
        "updated_timestamp": iso(k.updated_ms),
    }


def instance_body(i: InstanceRecord) -> dict[str, Any]:
    return {
        "request_id": request_id(),
        "use_case_id": i.use_case_id,
        "use_case_name": i.use_case_name,
        "type_version": i.version,
        "limit_id": i.limit_id,
        "properties": i.properties,
    }


def check_score(kpi: KpiRecord, score: bool | float | None) -> float | None:
    """The score as stored, or a 400 naming the KPI type's rule."""
    if score is None:
        return None
    rule = None
    if kpi.kpi_type == "boolean":
        if not isinstance(score, bool):
            rule = "true or false"
    elif isinstance(score, bool):
        rule = "a number"
    elif kpi.kpi_type == "percentage" and not 0 <= score <= 100:
        rule = "a number from 0 to 100"
    elif kpi.kpi_type in _LIKERT and (score != int(score) or not 1 <= score <= _LIKERT[kpi.kpi_type]):
        rule = f"an integer from 1 to {_LIKERT[kpi.kpi_type]}"
    if rule is not None:
        raise PayiApiError(400, "invalid_kpi_score", f"score of {kpi.kpi_type} KPI {kpi.name!r} must be {rule}")
    return float(score)


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["use cases"])
    store = svc.store

    def read(work: Callable[[], T]) -> T:
        try:
            return work()
        except StoreError as exc:
            raise api_error(exc) from None

    async def write(work: Callable[[], T]) -> T:
        try:
            return await svc.committer.run(work)
        except StoreError as exc:
            raise api_error(exc) from None

    # --- definitions -------------------------------------------------------------------------
    @api.post(
        "/definitions",
        status_code=201,
        response_model=M.Definition,
        responses=errors(400),
        summary="Create a use case definition (version 1)",
    )
    async def create_definition(body: M.DefinitionCreate, request: Request) -> Response:
        app = svc.authenticate(request)
        config = body.limit_config.model_dump(exclude_none=True) if body.limit_config else None
        d = await write(
            lambda: store.create_definition(
                app.id, body.name, body.description, config, body.logging_enabled, svc.now_ms()
            )
        )
        return json_response(definition_body(d), 201)

    @api.get(
        "/definitions",
        response_model=M.DefinitionPage,
        responses=errors(400),
        summary="List use case definitions in cursor pages",
    )
    async def list_definitions(
        request: Request,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
        use_case_name: str | None = Query(None, description="Only the definition with this name"),
    ) -> Response:
        app = svc.authenticate(request)
        after = decode_cursor(cursor, 2)
        rows = store.list_definitions(
            app.id,
            name=use_case_name,
            ascending=sort_ascending,
            after=(after[0], after[1]) if after else None,
            count=limit + 1,
        )
        return json_response(page([definition_body(d) for d in rows], [[d.created_ms, d.name] for d in rows], limit))

    @api.get("/definitions/{use_case_name}", response_model=M.Definition, responses=errors(404))
    async def retrieve_definition(use_case_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        return json_response(definition_body(read(lambda: store.definition_or_raise(app.id, use_case_name))))

    @api.put(
        "/definitions/{use_case_name}",
        response_model=M.Definition,
        responses=errors(400, 404),
        summary="Update description and/or logging_enabled (the version stays)",
    )
    async def update_definition(use_case_name: str, body: M.DefinitionUpdate, request: Request) -> Response:
        app = svc.authenticate(request)
        changes = {k: getattr(body, k) for k in body.model_fields_set}
        d = await write(lambda: store.update_definition(app.id, use_case_name, changes, svc.now_ms()))
        return json_response(definition_body(d))

    @api.delete(
        "/definitions/{use_case_name}",
        response_model=M.Definition,
        responses=errors(404),
        summary="Delete a definition with its KPIs and instances (stored requests stay)",
    )
    async def delete_definition(use_case_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        return json_response(definition_body(await write(lambda: store.delete_definition(app.id, use_case_name))))

    @api.post(
        "/definitions/{use_case_name}/increment_version",
        response_model=M.Definition,
        responses=errors(404),
        summary="Start the next version; new instances get it unless they pin one",
    )
    async def increment_version(use_case_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        return json_response(
            definition_body(await write(lambda: store.increment_version(app.id, use_case_name, svc.now_ms())))
        )

    @api.post(
        "/definitions/{use_case_name}/limit_config",
        response_model=M.Definition,
        responses=errors(400, 404),
        summary="Set the limit every new instance gets",
    )
    async def set_limit_config(use_case_name: str, body: M.LimitConfig, request: Request) -> Response:
        app = svc.authenticate(request)
        config = body.model_dump(exclude_none=True)
        d = await write(lambda: store.update_definition(app.id, use_case_name, {"limit_config": config}, svc.now_ms()))
        return json_response(definition_body(d))

    @api.delete(
        "/definitions/{use_case_name}/limit_config",
        response_model=M.Definition,
        responses=errors(404),
        summary="Stop giving new instances a limit (existing instance limits stay)",
    )
    async def delete_limit_config(use_case_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        d = await write(lambda: store.update_definition(app.id, use_case_name, {"limit_config": None}, svc.now_ms()))
        return json_response(definition_body(d))

    # --- KPI definitions -----------------------------------------------------------------------
    @api.post(
        "/definitions/{use_case_name}/kpis",
        status_code=201,
        response_model=M.Kpi,
        responses=errors(400, 404),
        summary="Define a KPI of the use case",
    )
    async def create_kpi(use_case_name: str, body: M.KpiCreate, request: Request) -> Response:
        app = svc.authenticate(request)
        k = await write(
            lambda: store.create_kpi(
                app.id, use_case_name, body.name, body.description, body.kpi_type, body.goal, svc.now_ms()
            )
        )
        return json_response(kpi_body(k), 201)

    @api.get("/definitions/{use_case_name}/kpis", response_model=M.KpiPage, responses=errors(400, 404))
    async def list_kpis(
        use_case_name: str,
        request: Request,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
        kpi_name: str | None = Query(None, description="Only this KPI"),
    ) -> Response:
        app = svc.authenticate(request)
        after = decode_cursor(cursor, 2)
        rows = read(
            lambda: store.list_kpis(
                app.id,
                use_case_name,
                name=kpi_name,
                ascending=sort_ascending,
                after=(after[0], after[1]) if after else None,
                count=limit + 1,
            )
        )
        return json_response(page([kpi_body(k) for k in rows], [[k.created_ms, k.name] for k in rows], limit))

    @api.get("/definitions/{use_case_name}/kpis/{kpi_name}", response_model=M.Kpi, responses=errors(404))
    async def retrieve_kpi(use_case_name: str, kpi_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        return json_response(kpi_body(read(lambda: store.kpi(app.id, use_case_name, kpi_name))))

    @api.put(
        "/definitions/{use_case_name}/kpis/{kpi_name}",
        response_model=M.Kpi,
        responses=errors(400, 404),
        summary="Update a KPI's description and/or goal",
    )
    async def update_kpi(use_case_name: str, kpi_name: str, body: M.KpiUpdate, request: Request) -> Response:
        app = svc.authenticate(request)
        changes = {k: getattr(body, k) for k in body.model_fields_set if getattr(body, k) is not None}
        k = await write(lambda: store.update_kpi(app.id, use_case_name, kpi_name, changes, svc.now_ms()))
        return json_response(kpi_body(k))

    @api.delete("/definitions/{use_case_name}/kpis/{kpi_name}", response_model=M.Kpi, responses=errors(404))
    async def delete_kpi(use_case_name: str, kpi_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        return json_response(kpi_body(await write(lambda: store.delete_kpi(app.id, use_case_name, kpi_name))))

    # --- instances -----------------------------------------------------------------------------
    @api.post(
        "/instances/{use_case_name}",
        status_code=201,
        response_model=M.Instance,
        responses=errors(404),
        summary="Create an instance (newest version; its own limit when the use case has a limit_config)",
    )
    async def create_instance(use_case_name: str, request: Request) -> Response:
        app = svc.authenticate(request)
        i = await write(lambda: store.create_instance(app.id, use_case_name, svc.now_ms()))
        return json_response(instance_body(i), 201)

    @api.get("/instances/{use_case_name}/{use_case_id}", response_model=M.Instance, responses=errors(404))
    async def retrieve_instance(use_case_name: str, use_case_id: str, request: Request) -> Response:
        app = svc.authenticate(request)
        return json_response(instance_body(read(lambda: store.instance(app.id, use_case_name, use_case_id))))

    @api.delete("/instances/{use_case_name}/{use_case_id}", response_model=M.Instance, responses=errors(404))
    async def delete_instance(use_case_name: str, use_case_id: str, request: Request) -> Response:
        app = svc.authenticate(request)
        i = await write(lambda: store.delete_instance(app.id, use_case_name, use_case_id))
        return json_response(instance_body(i))

    @api.put(
        "/instances/{use_case_name}/{use_case_id}/properties",
        response_model=M.Instance,
        responses=errors(400, 404),
        summary="Merge instance properties (a null value deletes the key)",
    )
    async def update_instance_properties(
        use_case_name: str, use_case_id: str, body: M.InstancePropertiesUpdate, request: Request
    ) -> Response:
        app = svc.authenticate(request)
        i = await write(lambda: store.update_instance_properties(app.id, use_case_name, use_case_id, body.properties))
        return json_response(instance_body(i))

    @api.get(
        "/instances/{use_case_name}/{use_case_id}/kpis",
        response_model=M.InstanceKpiPage,
        responses=errors(400, 404),
        summary="The instance's KPI scores in cursor pages",
    )
    async def list_instance_kpis(
        use_case_name: str,
        use_case_id: str,
        request: Request,
        limit: int = PageSize,
        cursor: str | None = Cursor,
        sort_ascending: bool = SortAscending,
        kpi_name: str | None = Query(None, description="Only this KPI"),
    ) -> Response:
        app = svc.authenticate(request)
        after = decode_cursor(cursor, 2)
        rows = read(
            lambda: store.kpi_scores(
                app.id,
                use_case_name,
                use_case_id,
                name=kpi_name,
                ascending=sort_ascending,
                after=(after[0], after[1]) if after else None,
                count=limit + 1,
            )
        )
        items = [
            {
                "kpi_name": k.name,
                "kpi_type": k.kpi_type,
                "score": score,
                "create_timestamp": iso(created),
                "update_timestamp": iso(updated),
            }
            for k, score, created, updated in rows
        ]
        return json_response(page(items, [[created, k.name] for k, _, created, _ in rows], limit))

    @api.put(
        "/instances/{use_case_name}/{use_case_id}/kpis/{kpi_name}",
        response_model=ML.DefaultResponse,
        responses=errors(400, 404),
        summary="Score a KPI for an instance (the score must fit the KPI type)",
    )
    async def score_kpi(
        use_case_name: str, use_case_id: str, kpi_name: str, body: M.ScoreUpdate, request: Request
    ) -> Response:
        app = svc.authenticate(request)
        kpi = read(lambda: store.kpi(app.id, use_case_name, kpi_name))
        read(lambda: store.instance(app.id, use_case_name, use_case_id))
        score = check_score(kpi, body.score)
        await write(lambda: store.set_kpi_score(app.id, use_case_id, kpi_name, score, svc.now_ms()))
        return json_response({"request_id": request_id(), "message": "KPI score set"})

    return api
