"""The ASGI app of the local Pay-i-compatible service: routes, authentication, error bodies."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
import orjson

from payi_otel import protocol as P
from payi_otel.service import models
from payi_otel.service.commit import GroupCommitter
from payi_otel.service.firstrun import ensure_default_application
from payi_otel.service.ingest import (
    Ingestor,
    PayiApiError,
    attribution_from_headers,
    error_from_details,
    parse_bulk,
    parse_single,
    xproxy_result,
)
from payi_otel.service.pricing import Pricer
from payi_otel.service.store import Application, Store

log = logging.getLogger("payi_otel.service")

API_KEY_HEADER = P.API_KEY
_HEADER_PREFIX = P.HEADER_PREFIX.lower()  # header names arrive lower-cased
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": models.ApiError, "description": "Invalid event; xproxy_error.code says which rule"},
    401: {"model": models.ApiError, "description": "Missing or unknown xProxy-api-key (invalid_api_key)"},
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _body_schema(model: type, *, array: bool = False) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    schema = {"type": "array", "items": ref} if array else ref
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def create_app(data_dir: str | os.PathLike[str]) -> FastAPI:
    """The service over the SQLite store in ``data_dir`` (created, with a default application, if new)."""
    store = Store(data_dir)
    ensure_default_application(store)
    store.start_background_checkpoints()
    ingestor = Ingestor(store, Pricer())
    committer = GroupCommitter(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        store.close()

    app = FastAPI(
        title="payi-otel local service",
        version="1",
        description="A local, Pay-i-compatible ingest and requests API over SQLite. "
        f"Every /api/v1 call is authenticated with the `{API_KEY_HEADER}` header (an application key).",
        lifespan=lifespan,
    )
    app.state.store = store

    @app.exception_handler(PayiApiError)
    async def _payi_error(request: Request, exc: PayiApiError) -> Response:
        return _json(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = dict(exc.errors()[0])
        first["loc"] = tuple(p for p in first.get("loc", ()) if p != "body")
        return _json(error_from_details(first).body(), 400)

    def authenticate(request: Request) -> Application:
        key = request.headers.get(API_KEY_HEADER)
        if not key:
            raise PayiApiError(401, "invalid_api_key", f"the {API_KEY_HEADER} header is missing")
        app_ = store.authenticate(key)
        if app_ is None:
            raise PayiApiError(401, "invalid_api_key", f"the {API_KEY_HEADER} header does not hold a valid key")
        return app_

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/api/v1/ingest",
        response_model=models.IngestResponse,
        responses=_ERROR_RESPONSES,
        openapi_extra={
            **_body_schema(models.IngestRequest),
            "parameters": [
                {
                    "name": "id",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Deduplication id (the SDK sends the provider response id): a repeat is not stored "
                    "again and answers with the first request_id and duplicate_request=true",
                },
                *(
                    {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                    for h in P.SINGLE_INGEST_HEADERS
                ),
            ],
        },
        summary="Ingest one event (attribution in xProxy-* headers; ?id= deduplicates)",
    )
    async def ingest(request: Request) -> Response:
        application = authenticate(request)
        event = parse_single(await request.body())
        # one pass over the headers (names arrive lower-cased) instead of one scan per header
        headers = {k: v for k, v in request.headers.items() if k.startswith(_HEADER_PREFIX)}
        attr = attribution_from_headers(headers, request.query_params.get("id"))
        return _json(await committer.run(lambda: ingestor.ingest(application, event, attr)))

    @app.post(
        "/api/v1/ingest/bulk",
        response_model=models.BulkIngestResponse,
        responses=_ERROR_RESPONSES,
        openapi_extra=_body_schema(models.BulkIngestRequest, array=True),
        summary="Ingest a bare JSON array of events (attribution in each item); bad items are reported, good ones stored",
    )
    async def ingest_bulk(request: Request) -> Response:
        application = authenticate(request)
        items = parse_bulk(await request.body())
        return _json(await committer.run(lambda: ingestor.ingest_bulk(application, items)))

    def _result(stored: Any) -> Response:
        if stored is None:
            raise PayiApiError(404, "request_not_found", "no request with that id in this application")
        return _json({"xproxy_result": xproxy_result(stored)})

    @app.get(
        "/api/v1/requests/{request_id}/result",
        response_model=models.RequestResult,
        responses={404: {"model": models.ApiError}, 401: {"model": models.ApiError}},
    )
    async def request_result(request_id: str, request: Request) -> Response:
        application = authenticate(request)
        return _result(store.request_result(application.id, request_id=request_id))

    @app.get(
        "/api/v1/requests/provider/{category}/{provider_response_id:path}/result",
        response_model=models.RequestResult,
        responses={404: {"model": models.ApiError}, 401: {"model": models.ApiError}},
    )
    async def provider_result(category: str, provider_response_id: str, request: Request) -> Response:
        application = authenticate(request)
        return _result(
            store.request_result(application.id, category=category, provider_response_id=provider_response_id)
        )

    async def _update(application: Application, request_id: str | None, body: models.PropertiesUpdate) -> Response:
        found = request_id is not None and await committer.run(
            lambda: store.update_request_properties(application.id, request_id, body.properties)
        )
        if not found:
            raise PayiApiError(404, "request_not_found", "no request with that id in this application")
        return _json({"request_id": request_id})

    @app.put(
        "/api/v1/requests/{request_id}/properties",
        response_model=models.PropertiesResponse,
        responses={404: {"model": models.ApiError}, 400: {"model": models.ApiError}},
        summary="Merge request properties (a null value deletes the key)",
    )
    async def update_properties(request_id: str, body: models.PropertiesUpdate, request: Request) -> Response:
        return await _update(authenticate(request), request_id, body)

    @app.put(
        "/api/v1/requests/provider/{category}/{provider_response_id:path}/properties",
        response_model=models.PropertiesResponse,
        responses={404: {"model": models.ApiError}, 400: {"model": models.ApiError}},
        summary="Merge request properties, addressing the request by provider response id",
    )
    async def update_provider_properties(
        category: str, provider_response_id: str, body: models.PropertiesUpdate, request: Request
    ) -> Response:
        application = authenticate(request)
        stored = store.request_result(application.id, category=category, provider_response_id=provider_response_id)
        return await _update(application, stored.request_id if stored else None, body)

    _default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = _default_openapi()
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in (models.IngestRequest, models.BulkIngestRequest):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(js.pop("$defs", {}))
            schemas[model.__name__] = js
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
        }
        for path, ops in schema["paths"].items():
            if path.startswith("/api/"):
                for op in ops.values():
                    op["security"] = [{"ApiKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
