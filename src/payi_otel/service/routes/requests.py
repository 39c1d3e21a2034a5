"""``/api/v1/requests``: a stored request's ``xproxy_result`` and its properties, by request or provider id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from payi_otel.service import models
from payi_otel.service.errors import PayiApiError
from payi_otel.service.ingest_results import xproxy_result
from payi_otel.service.routes.common import Service, errors, json_response
from payi_otel.service.store import Application


def _not_found() -> PayiApiError:
    return PayiApiError(404, "request_not_found", "no request with that id in this application")


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix="/api/v1/requests", tags=["requests"])
    store, committer = svc.store, svc.committer

    def _result(stored: Any) -> Response:
        if stored is None:
            raise _not_found()
        return json_response({"xproxy_result": xproxy_result(stored)})

    @api.get("/{request_id}/result", response_model=models.RequestResult, responses=errors(404))
    async def request_result(request_id: str, request: Request) -> Response:
        application = svc.authenticate(request)
        return _result(store.request_result(application.id, request_id=request_id))

    @api.get(
        "/provider/{category}/{provider_response_id:path}/result",
        response_model=models.RequestResult,
        responses=errors(404),
    )
    async def provider_result(category: str, provider_response_id: str, request: Request) -> Response:
        application = svc.authenticate(request)
        return _result(
            store.request_result(application.id, category=category, provider_response_id=provider_response_id)
        )

    async def _update(application: Application, request_id: str | None, body: models.PropertiesUpdate) -> Response:
        found = request_id is not None and await committer.run(
            lambda: store.update_request_properties(application.id, request_id, body.properties)
        )
        if not found:
            raise _not_found()
        return json_response({"request_id": request_id})

    @api.put(
        "/{request_id}/properties",
        response_model=models.PropertiesResponse,
        responses=errors(400, 404),
        summary="Merge request properties (a null value deletes the key)",
    )
    async def update_properties(request_id: str, body: models.PropertiesUpdate, request: Request) -> Response:
        return await _update(svc.authenticate(request), request_id, body)

    @api.put(
        "/provider/{category}/{provider_response_id:path}/properties",
        response_model=models.PropertiesResponse,
        responses=errors(400, 404),
        summary="Merge request properties, addressing the request by provider response id",
    )
    async def update_provider_properties(
        category: str, provider_response_id: str, body: models.PropertiesUpdate, request: Request
    ) -> Response:
        application = svc.authenticate(request)
        stored = store.request_result(application.id, category=category, provider_response_id=provider_response_id)
        return await _update(application, stored.request_id if stored else None, body)

    return api
